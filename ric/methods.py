"""The method table: every command (`ric run | prepare | train | evaluate | generate | status`, and
`ric serve`) finds what to do with a recipe or a run directory here, and only here.

Each entry names the config classes a recipe of the method parses into, builds the method's
stages (run by `ric.pipeline.run_stages`), evaluates a run (through `ric.report`), and loads the
generator that answers prompts at a preference; it also says what the commands may ask of a run
(the evaluation keys its evaluation reads, its `ric generate` settings, whether it takes score-tag
targets, makes images, or can be served by an upstream engine), so no command branches on a
method's name. Adding a method is one entry plus its own modules.

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

# Recipe keys `ric evaluate RUN_DIR --key value` may change: the evaluation keys (`EvaluationConfig`)
# a method's evaluation reads, and its generation keys.
EVALUATION_KEYS = (
    "eval_num_prompts",
    "eval_preference_method",
    "eval_grid_divisions",
    "eval_batch_size",
    "eval_base_model",
    "hypervolume_reference",
)
# MORLHF and SFT: the points are the trained policies, answered without score tags (no grid, no mapping).
NOT_FOR_POLICIES = ("eval_grid_divisions", "eval_preference_method")
POLICY_EVALUATION_KEYS = tuple(k for k in EVALUATION_KEYS if k not in NOT_FOR_POLICIES)
TEXT_GENERATION_KEYS = ("temperature", "top_p", "max_completion_length", "seed", "reward_batch_size")
IMAGE_GENERATION_KEYS = ("guidance_scale", "num_inference_steps", "seed", "reward_batch_size")
# `ric generate` settings: a text run's and a text-to-image run's (`--out` goes with images).
TEXT_GENERATE_OPTIONS = ("max_new_tokens", "temperature", "top_p")
IMAGE_GENERATE_OPTIONS = ("num_inference_steps", "guidance_scale")
GENERATE_FLAGS = TEXT_GENERATE_OPTIONS + IMAGE_GENERATE_OPTIONS
NO_SCORE_TAGS = "a {} run writes no score tags, so there is no preference -> target mapping"


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
    evaluation_keys: tuple[str, ...] = EVALUATION_KEYS  # the `ric evaluate` keys its evaluation reads
    points: str = "its points are a preference grid"  # what its front is made of (said when a key is refused)
    options: tuple[str, ...] = ()  # extra `ric evaluate` / `generate` / `serve` options (RiC: --adapter, --dtype)
    takes_preference: bool = True  # whether `ric generate` needs --preference (an SFT model answers without)
    takes_targets: bool = True  # score tags in the prompt: a preference -> target mapping (--method)
    makes_images: bool = False  # answers with images: `ric generate` writes files, `ric serve` refuses the run
    generate_options: tuple[str, ...] = TEXT_GENERATE_OPTIONS  # the `ric generate` settings it honours
    upstream: str | None = "run"  # `ric serve --upstream`: the model asked, the run's ("run") or the policy's
    upstream_refusal: str = ""  # why an upstream server cannot serve it (upstream None)

    def load_generator(self, path, **options):
        """The generator of a run directory (or, for RiC, an adapter folder), its model loaded."""
        return self.generator_class().from_run(path, **options)

    def check_evaluate_flags(self, given: set[str], adapter: bool = False, dtype: bool = False) -> None:
        """Refuse, by name, a `ric evaluate` flag this method's evaluation would not read."""
        if adapter and "adapter" not in self.options:
            raise RecipeError(f"--adapter: a {self.name} run has no single adapter to choose; remove --adapter")
        if dtype:
            self.check_dtype_option()
        allowed = set(self.evaluation_keys) | set(self.generation_keys)
        refused = sorted(set(given) - allowed)
        if not refused:
            return
        key, takes = refused[0], ", --".join(sorted(allowed))
        if key in EVALUATION_KEYS:
            if key == "eval_preference_method" and not self.takes_targets:
                why = NO_SCORE_TAGS.format(self.name)
            elif key == "eval_grid_divisions":
                why = self.points
            else:
                why = "its evaluation does not read it"
            raise RecipeError(
                f"--{key} does not change a {self.name} evaluation: {why}; a {self.name} run's "
                f"evaluation takes --{takes}"
            )
        raise RecipeError(
            f"--{key} does not change an evaluation (it is a training setting, or not a "
            f"setting of a {self.name} run); evaluation takes --{takes}. Change training "
            "settings in the recipe and run it again"
        )

    def check_dtype_option(self) -> None:
        """Refuse `--dtype` for a method whose answers do not load through it."""
        if "dtype" not in self.options:
            holders = " and ".join(m.name for m in METHODS.values() if "dtype" in m.options)
            raise RecipeError(f"--dtype: applies to {holders} runs only; this is a {self.name} run (remove --dtype)")

    def check_generate_flags(self, given: dict) -> None:
        """Refuse, by name, a `ric generate` flag this method would ignore, and a missing --preference.
        `given`: the flags given (name -> value, those left out absent)."""
        if self.takes_preference and given.get("preference") is None:
            raise RecipeError(
                f"--preference: required for a {self.name} run; give one weight per reward, e.g. 0.2,0.8"
            )
        if not self.takes_preference and given.get("preference") is not None:
            raise RecipeError(f"--preference: a {self.name} run answers without a preference; leave it out")
        own = set(self.generate_options) | ({"out"} if self.makes_images else set())
        for flag in (*GENERATE_FLAGS, "out"):
            if given.get(flag) is not None and flag not in own:
                kind = "text" if flag in TEXT_GENERATE_OPTIONS else "text-to-image"
                raise RecipeError(f"--{flag}: applies to {kind} runs only; this is a {self.name} run")
        if given.get("method") is not None and not self.takes_targets:
            raise RecipeError(f"--method: {NO_SCORE_TAGS.format(self.name)}")
        if given.get("dtype") is not None:
            self.check_dtype_option()
        if given.get("adapter") is not None and "adapter" not in self.options:
            holders = " and ".join(m.name for m in METHODS.values() if "adapter" in m.options)
            raise RecipeError(
                f"--adapter: only {holders} runs have adapter folders to choose; this is a {self.name} run"
            )

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


def _ric_evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True, adapter=None, dtype=None) -> dict:
    from .evaluate import evaluate

    _, _, args, eval_args = run.configs
    return evaluate(
        run.run_dir,
        eval_args,
        args,
        adapter=adapter,
        eval_dir=eval_dir,
        overrides=overrides,
        progress=progress,
        dtype=dtype,
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
            lambda s: f"scored {s['rows']} images (skipped {s['skipped']}: undecodable or blank caption) in {d}/data",
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
        options=("adapter", "dtype"),
    ),
    "morlhf": Method(
        "morlhf",
        "MORLHF: one RL policy per preference point on the weighted sum of rewards",
        _rl_configs("MORLHFConfig"),
        _rl_stages,
        _morlhf_evaluate,
        _morlhf_generator,
        TEXT_GENERATION_KEYS,
        evaluation_keys=POLICY_EVALUATION_KEYS,
        points="its points are the trained policies, one per preference of the recipe, not a grid (change "
        "`preferences` or `num_preference_points` in the recipe and train again)",
        takes_targets=False,
        upstream="policy",
    ),
    "soups": Method(
        "soups",
        "Rewarded Soups: one RL policy per reward, adapters mixed at the preference",
        _rl_configs("SoupsConfig"),
        _rl_stages,
        _soups_evaluate,
        _soups_generator,
        TEXT_GENERATION_KEYS,
        evaluation_keys=tuple(k for k in EVALUATION_KEYS if k != "eval_preference_method"),
        points="its points are a preference grid, the adapters mixed at each",
        takes_targets=False,
        upstream=None,
        upstream_refusal="a Rewarded Soups run mixes its adapters per preference, which an upstream LoRA server "
        "cannot do",
    ),
    "sft": Method(
        "sft",
        "SFT on the chosen responses: the paper's starting point for MORLHF and Rewarded Soups (no preference)",
        _sft_configs,
        _sft_stages,
        _sft_evaluate,
        _sft_generator,
        TEXT_GENERATION_KEYS,
        evaluation_keys=POLICY_EVALUATION_KEYS,
        points="it is one point, the SFT model, which answers without a preference",
        takes_preference=False,
        takes_targets=False,
    ),
    "diffusion": Method(
        "diffusion",
        "RiC for text-to-image: one UNet LoRA, targets in the caption",
        _diffusion_configs,
        _diffusion_stages,
        _diffusion_evaluate,
        _diffusion_generator,
        IMAGE_GENERATION_KEYS,
        makes_images=True,
        generate_options=IMAGE_GENERATE_OPTIONS,
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


def open_evaluation(run_dir, argv, adapter=None, eval_dir=None, dtype=None) -> tuple[Stage, Path]:
    """`ric evaluate RUN_DIR [--key value ...]`: the run's own recipe with the flags given, each checked
    against the run's method before any model loads. Returns (the evaluation stage, where it writes)."""
    from .recipe import RECIPE_FILE, parse_flags

    run_dir = Path(run_dir)
    recipe = run_dir / RECIPE_FILE
    if not recipe.exists():
        raise RecipeError(f"{run_dir} has no {RECIPE_FILE}: give a run directory written by `ric run` or `ric train`")
    method = recipe_method(recipe)
    given = parse_flags(argv)
    method.check_evaluate_flags(given, adapter=bool(adapter), dtype=bool(dtype))
    run = parse_run(list(argv) + ["--output_dir", str(run_dir)], recipe)
    values = {k: getattr(c, k) for c in run.configs for k in c.__dataclass_fields__}
    overrides = {k: v for k, v in values.items() if k in given and k in method.generation_keys}
    options = {k: v for k, v in (("adapter", adapter), ("dtype", dtype)) if v}
    eval_dir = Path(eval_dir) if eval_dir else run_dir / "eval"
    return method.evaluation_stage(run, f"evaluate:{eval_dir.name}", eval_dir, overrides, **options), eval_dir


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
