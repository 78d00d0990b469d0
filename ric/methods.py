"""The method table: every command (`ric run | prepare | train | evaluate | generate | status`, and
`ric serve`) finds what to do with a recipe or a run directory here, and only here.

Each entry names the config classes a recipe of the method parses into, builds the method's
stages (run by `ric.pipeline.run_stages`), evaluates a run (through `ric.report`), and loads the
generator that answers prompts at a preference. Adding a method is one entry plus its own modules.

| method    | stages                                          | answers a preference with                    |
|-----------|-------------------------------------------------|----------------------------------------------|
| ric       | prepare, train, online_1..k, evaluate           | the one adapter, targets in the prompt       |
| morlhf    | prepare, policy:<w> per preference, evaluate    | the trained policy nearest to the preference |
| soups     | prepare, policy:<reward> per reward, evaluate   | the per-reward adapters mixed at the weights |
| diffusion | prepare, train, evaluate                        | the one UNet LoRA, targets in the caption    |
| sft       | prepare, train (+ merged model), evaluate       | no preference: the baselines' starting point |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .pipeline import Stage
from .recipe import RecipeError

# Recipe keys `ric evaluate RUN_DIR --key value` may change, besides the evaluation keys.
TEXT_GENERATION_KEYS = ("temperature", "top_p", "max_completion_length", "seed", "reward_batch_size")
IMAGE_GENERATION_KEYS = ("guidance_scale", "num_inference_steps", "seed", "reward_batch_size")


@dataclass
class Run:
    """A parsed recipe: its method, run directory, config instances (in the method's order) and the
    effective mapping (recipe + command-line overrides) that the run directory records."""

    method: str
    run_dir: Path
    configs: tuple
    effective: dict


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    config_classes: Callable[[], tuple]  # lazily: importing TRL takes seconds
    stages: Callable[[Run], list[Stage]]
    evaluate: Callable[..., dict]  # (run, eval_dir=None, overrides=None, progress=True, **options) -> pareto.json
    generator_class: Callable[[], type]  # lazily: the class whose from_run(run_dir, **options) answers prompts
    generation_keys: tuple[str, ...]
    evaluate_options: tuple[str, ...] = ()  # extra `ric evaluate` options (RiC: --adapter)
    takes_preference: bool = True  # whether `ric generate` needs --preference (an SFT model answers without)

    def load_generator(self, path, **options):
        """The generator of a run directory (or, for RiC, an adapter folder), its model loaded."""
        return self.generator_class().from_run(path, **options)

    def evaluation_stage(self, run: Run, name: str = "evaluate", eval_dir=None, overrides=None, **options) -> Stage:
        """The evaluation as a stage: metered (its generated tokens too) and marked in run_state.json."""

        def evaluate(meter):
            result = self.evaluate(run, eval_dir=eval_dir, overrides=overrides, **options)
            meter.generated_tokens = (result.get("generation") or {}).get("generated_tokens", 0) or 0
            return {**result, "num_points": len(result["points"])}

        return Stage(name, "evaluate", evaluate, _describe_eval)


# --- ric -----------------------------------------------------------------------------------------


def _ric_configs():
    from .config import EvaluationConfig, MethodConfig, ModelConfig
    from .ric_config import RiCConfig, RiCDataConfig

    return (MethodConfig, ModelConfig, RiCDataConfig, RiCConfig, EvaluationConfig)


def _ric_stages(run: Run) -> list[Stage]:
    from .online import online_iteration
    from .prepare import prepare
    from .ric_trainer import train

    model_args, data_args, args, eval_args = run.configs
    d = run.run_dir
    stages = [
        Stage("prepare", "prepare", lambda m: prepare(d, model_args, data_args, args, meter=m), _describe_prepare),
        Stage("train", "train", lambda m: train(d, model_args, data_args, args, meter=m), _describe_train),
    ]
    for k in range(1, args.num_online_iterations + 1):
        stages.append(
            Stage(
                f"online_{k}",
                "train",
                lambda m, k=k: online_iteration(d, k, model_args, data_args, args, meter=m),
                _describe_online,
            )
        )
    stages.append(METHODS["ric"].evaluation_stage(run, _ric_evaluate_name(run)))
    return stages


def _ric_evaluate_name(run: Run) -> str:
    n = run.configs[2].num_online_iterations
    return "evaluate" if n == 0 else f"evaluate:adapter_online_{n}"


def _ric_evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True, adapter=None) -> dict:
    from .evaluate import evaluate

    _, _, args, eval_args = run.configs
    return evaluate(
        run.run_dir, eval_args, args, adapter=adapter, eval_dir=eval_dir, overrides=overrides, progress=progress
    )


def _ric_generator():
    from .inference import RiCGenerator

    return RiCGenerator


# --- the RL baselines ----------------------------------------------------------------------------


def _rl_configs(config_name: str):
    def classes():
        from .baselines import config
        from .config import DataConfig, EvaluationConfig, MethodConfig, ModelConfig

        return (MethodConfig, ModelConfig, DataConfig, getattr(config, config_name), EvaluationConfig)

    return classes


def _rl_stages(run: Run) -> list[Stage]:
    from reward_models import reward_display_name

    from .baselines.rl import policy_table, prepare_prompts, train_policy

    model_args, data_args, args, _ = run.configs
    d = run.run_dir
    names = [reward_display_name(r) for r in args.rewards]
    stages = [
        Stage(
            "prepare",
            "prepare",
            lambda m: prepare_prompts(d, model_args, data_args, args, run.method, m),
            lambda s: f"{s['rows']} training prompts, {s['eval_prompts']} evaluation prompts in {d}/data",
        )
    ]
    for policy in policy_table(run.method, args, names):
        stages.append(
            Stage(
                f"policy:{policy['label']}",
                "train",
                lambda m, p=policy: train_policy(d, model_args, data_args, args, p, m),
                lambda s: f"{s['global_step']} RL steps in {s['train_seconds']:.0f}s",
            )
        )
    stages.append(METHODS[run.method].evaluation_stage(run))
    return stages


def _morlhf_evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True) -> dict:
    from .baselines.morlhf import evaluate

    return evaluate(run, eval_dir, overrides, progress)


def _soups_evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True) -> dict:
    from .baselines.soups import evaluate

    return evaluate(run, eval_dir, overrides, progress)


def _morlhf_generator():
    from .baselines.morlhf import MORLHFGenerator

    return MORLHFGenerator


def _soups_generator():
    from .baselines.soups import SoupsGenerator

    return SoupsGenerator


def _sft_configs():
    from .baselines.config import SFTDataConfig, SFTRunConfig
    from .config import EvaluationConfig, MethodConfig, ModelConfig

    return (MethodConfig, ModelConfig, SFTDataConfig, SFTRunConfig, EvaluationConfig)


def _sft_stages(run: Run) -> list[Stage]:
    from .baselines.sft import prepare_sft, train_sft

    model_args, data_args, args, _ = run.configs
    d = run.run_dir
    return [
        Stage(
            "prepare",
            "prepare",
            lambda m: prepare_sft(d, model_args, data_args, args, m),
            lambda s: f"{s['rows']} SFT rows, {s['eval_prompts']} evaluation prompts in {d}/data",
        ),
        Stage(
            "train",
            "train",
            lambda m: train_sft(d, model_args, data_args, args, m),
            lambda s: _describe_train(s) + f"; merged model in {d}/merged",
        ),
        METHODS["sft"].evaluation_stage(run),
    ]


def _sft_evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True) -> dict:
    from .baselines.sft import evaluate

    return evaluate(run, eval_dir, overrides, progress)


def _sft_generator():
    from .baselines.sft import SFTGenerator

    return SFTGenerator


# --- text-to-image -------------------------------------------------------------------------------


def _diffusion_configs():
    from .config import EvaluationConfig, MethodConfig
    from .diffusion.config import DiffusionConfig

    return (MethodConfig, DiffusionConfig, EvaluationConfig)


def _diffusion_stages(run: Run) -> list[Stage]:
    from .diffusion.prepare import prepare_images
    from .diffusion.train import train_diffusion

    cfg, _ = run.configs
    d = run.run_dir
    return [
        Stage(
            "prepare",
            "prepare",
            lambda m: prepare_images(d, cfg, meter=m),
            lambda s: f"scored {s['rows']} images (skipped {s['skipped']} that failed to decode) in {d}/data",
        ),
        Stage("train", "train", lambda m: train_diffusion(d, cfg, meter=m), _describe_train),
        METHODS["diffusion"].evaluation_stage(run),
    ]


def _diffusion_evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True) -> dict:
    from .diffusion.generate import evaluate

    return evaluate(run, eval_dir, overrides, progress)


def _diffusion_generator():
    from .diffusion.generate import ImageGenerator

    return ImageGenerator


METHODS: dict[str, Method] = {
    "ric": Method(
        "ric",
        "Rewards-in-Context: one reward-conditioned LoRA, the preference mapped to score tags",
        _ric_configs,
        _ric_stages,
        _ric_evaluate,
        _ric_generator,
        TEXT_GENERATION_KEYS,
        ("adapter",),
    ),
    "morlhf": Method(
        "morlhf",
        "MORLHF: one RL policy per preference point on the weighted sum of rewards",
        _rl_configs("MORLHFConfig"),
        _rl_stages,
        _morlhf_evaluate,
        _morlhf_generator,
        TEXT_GENERATION_KEYS,
    ),
    "soups": Method(
        "soups",
        "Rewarded Soups: one RL policy per reward, adapters mixed at the preference",
        _rl_configs("SoupsConfig"),
        _rl_stages,
        _soups_evaluate,
        _soups_generator,
        TEXT_GENERATION_KEYS,
    ),
    "sft": Method(
        "sft",
        "SFT on the chosen responses: the paper's starting point for MORLHF and Rewarded Soups (no preference)",
        _sft_configs,
        _sft_stages,
        _sft_evaluate,
        _sft_generator,
        TEXT_GENERATION_KEYS,
        takes_preference=False,
    ),
    "diffusion": Method(
        "diffusion",
        "RiC for text-to-image: one UNet LoRA, targets in the caption",
        _diffusion_configs,
        _diffusion_stages,
        _diffusion_evaluate,
        _diffusion_generator,
        IMAGE_GENERATION_KEYS,
    ),
}


def get_method(name, source: str = "recipe") -> Method:
    name = "ric" if name is None else name
    if name not in METHODS:
        raise RecipeError(f"{source}: method = {name!r} is not one of {list(METHODS)}")
    return METHODS[name]


# --- loading a recipe or a run directory ---------------------------------------------------------


def recipe_method(recipe: str | Path | None) -> Method:
    from .recipe import load_yaml

    return get_method(load_yaml(recipe).get("method") if recipe else None, str(recipe or "recipe"))


def parse_run(argv, recipe: str | Path | None) -> Run:
    """A recipe (+ command-line overrides) parsed into its method's configs; nothing heavy is loaded."""
    from .recipe import parse_recipe

    method = recipe_method(recipe)
    instances, effective = parse_recipe(method.config_classes(), argv, recipe)
    configs = instances[1:]  # without MethodConfig
    output_dir = next((getattr(c, "output_dir", None) for c in configs if getattr(c, "output_dir", None)), None)
    return Run(method.name, Path(output_dir), configs, effective)


def open_run(argv, recipe: str | Path | None) -> Run:
    """`parse_run`, then the checks that need no model (reward names, the run directory's own recipe),
    and the effective recipe written to RUN_DIR/recipe.yaml."""
    from reward_models import check_reward_names

    from .recipe import RECIPE_FILE, check_run_dir
    from .rundir import is_main_process, write_yaml

    run = parse_run(argv, recipe)
    objectives = next(c for c in run.configs if hasattr(c, "rewards"))
    check_reward_names(objectives.rewards or [], objectives.reward_models)
    check_run_dir(run.run_dir, run.effective)
    if is_main_process():
        write_yaml(run.run_dir / RECIPE_FILE, run.effective)
    return run


# --- one line per finished stage (what `ric run` prints) -----------------------------------------


def _describe_prepare(s: dict) -> str:
    line = f"{s['rows']} training rows ({s['source']}), {s['eval_prompts']} evaluation prompts"
    if any((s.get("dropped") or {}).values()):
        line += f"; dropped { ({k: v for k, v in s['dropped'].items() if v}) }"
    if s.get("pearson"):
        names = s["rewards"]
        pairs = [
            f"{names[i]}/{names[j]} " + ("undefined" if s["pearson"][i][j] is None else f"{s['pearson'][i][j]:+.3f}")
            for i in range(len(names))
            for j in range(i + 1, len(names))
        ]
        line += "; Pearson of raw rewards: " + ", ".join(pairs)
    return line


def _describe_train(s: dict) -> str:
    return f"trained {s['global_step']} steps in {s['train_seconds']:.0f}s"


def _describe_online(s: dict) -> str:
    return (
        f"iteration {s['iteration']}: generated {s['generated']}, kept {s['kept']}, dropped {s['dropped']}; "
        f"trained {s['train']['global_step']} steps on {s['training_rows']} rows"
    )


def _describe_eval(s: dict) -> str:
    return f"{s['num_points']} points, hypervolume {s['hypervolume']:.4g}"
