"""`method: morlhf`: one RL policy (a LoRA adapter) per preference point on the weighted sum of rewards;
a preference is answered by the trained policy nearest to it."""

from __future__ import annotations

from ..pipeline import Stage
from .base import POLICY_EVALUATION_KEYS, TEXT_GENERATION_KEYS, Method, Run


def rl_config_classes(config_name: str):
    def classes():
        from ..baselines import config
        from ..config import DataConfig, EvaluationConfig, MethodConfig, ModelConfig

        return (MethodConfig, ModelConfig, DataConfig, getattr(config, config_name), EvaluationConfig)

    return classes


def rl_stages(run: Run) -> list[Stage]:
    """The RL baselines' stages: the prompts, one policy stage per weight vector, the evaluation."""
    from reward_models import reward_display_name

    from ..baselines.rl import policy_table, prepare_prompts, train_policy
    from . import METHODS

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


def evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True, step: int | None = None) -> dict:
    from ..baselines.morlhf import evaluate

    return evaluate(run, eval_dir, overrides, progress, step=step)


def generator_class():
    from ..baselines.morlhf import MORLHFGenerator

    return MORLHFGenerator


METHOD = Method(
    "morlhf",
    "MORLHF: one RL policy per preference point on the weighted sum of rewards",
    rl_config_classes("MORLHFConfig"),
    rl_stages,
    evaluate,
    generator_class,
    TEXT_GENERATION_KEYS,
    evaluation_keys=POLICY_EVALUATION_KEYS,
    points="its points are the trained policies, one per preference of the recipe, not a grid (change "
    "`preferences` or `num_preference_points` in the recipe and train again)",
    takes_targets=False,
    options=("step",),
    upstream="policy",
    export="policy",
)
