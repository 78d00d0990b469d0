"""What a method is to the commands: `Method` (its configs, stages, evaluation, generator and what the
commands may ask of its runs) and `Run` (a parsed recipe). Every method module of this package
exports one `METHOD`; the registry (`ric.methods`) finds it by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..pipeline import Stage
from ..recipe import RecipeError

# Recipe keys `ric evaluate RUN_DIR --key value` may change: the evaluation keys (`EvaluationConfig`)
# a method's evaluation reads, and its generation keys.
EVALUATION_KEYS = (
    "eval_num_prompts",
    "eval_preference_method",
    "eval_grid_divisions",
    "eval_batch_size",
    "eval_base_model",
    "hypervolume_reference",
    "eval_prompts_file",
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
# options a method may take in `ric evaluate` / `generate` / `serve`: an adapter folder or trainer checkpoint
# of the run, a weight dtype to answer in, another base model with the same vocabulary (PRT), an inference
# engine that answers from the run's export (`ric evaluate --engine llama.cpp`), a trainer step whose
# checkpoints answer for every policy of a baseline run (`ric evaluate --step 60`)
OPTIONS = ("adapter", "dtype", "base", "engine", "step")
NO_SCORE_TAGS = "a {} run writes no score tags, so there is no preference -> target mapping"


@dataclass
class Run:
    """A parsed recipe: its method, run directory, config instances (in the method's order) and the
    effective mapping (recipe + command-line overrides) that the run directory records."""

    method: str
    run_dir: Path
    configs: tuple
    effective: dict

    @property
    def objectives(self):
        """The config that holds the rewards (and the seed, reward batch size, template)."""
        return next(c for c in self.configs if hasattr(c, "rewards"))

    @property
    def evaluation(self):
        """The run's `EvaluationConfig` (always the last config)."""
        return self.configs[-1]


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
    options: tuple[str, ...] = ()  # extra `ric evaluate` / `generate` / `serve` options (of OPTIONS)
    takes_preference: bool = True  # whether `ric generate` needs --preference (an SFT model answers without)
    takes_targets: bool = True  # score tags in the prompt: a preference -> target mapping (--method)
    makes_images: bool = False  # answers with images: `ric generate` writes files, `ric serve` refuses the run
    generate_options: tuple[str, ...] = TEXT_GENERATE_OPTIONS  # the `ric generate` settings it honours
    upstream: str | None = "run"  # `ric serve --upstream`: the model asked, the run's ("run") or the policy's
    upstream_refusal: str = ""  # why an upstream server cannot serve it (upstream None)
    # `ric export`: one model for the whole run ("run"), one trained policy ("policy"), one adapter mix per
    # preference ("mix"), or nothing (None, `export_refusal` says why)
    export: str | None = "run"
    export_refusal: str = ""

    def load_generator(self, path, **options):
        """The generator of a run directory (or, for RiC, an adapter folder), its model loaded."""
        return self.generator_class().from_run(path, **options)

    def check_options(self, given: dict) -> None:
        """Refuse, by name, an option (`--adapter`, `--dtype`, `--base`) this method does not take.
        `given`: option name -> value (None or absent: not given)."""
        from . import METHODS

        for option in OPTIONS:
            if given.get(option) is not None and option not in self.options:
                holders = " and ".join(m.name for m in METHODS.values() if option in m.options)
                raise RecipeError(
                    f"--{option}: applies to {holders} runs only; this is a {self.name} run (remove --{option})"
                )

    def check_evaluate_flags(self, given: set[str], **options) -> None:
        """Refuse, by name, a `ric evaluate` flag this method's evaluation would not read."""
        self.check_options(options)
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
        self.check_options(given)

    def evaluation_stage(self, run: Run, name: str = "evaluate", eval_dir=None, overrides=None, **options) -> Stage:
        """The evaluation as a stage: metered (its generated tokens too) and marked in run_state.json."""

        def evaluate(meter):
            result = self.evaluate(run, eval_dir=eval_dir, overrides=overrides, **options)
            meter.generated_tokens = (result.get("generation") or {}).get("generated_tokens", 0) or 0
            return {**result, "num_points": len(result["points"])}

        return Stage(name, "evaluate", evaluate, describe_eval)


# --- one line per finished stage (what `ric run` prints) -----------------------------------------


def describe_train(s: dict) -> str:
    return f"trained {s['global_step']} steps in {s['train_seconds']:.0f}s"


def describe_eval(s: dict) -> str:
    return f"{s['num_points']} points, hypervolume {s['hypervolume']:.4g}"


def describe_prepare(s: dict) -> str:
    """RiC's prepare stage (and the methods that reuse it)."""
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
