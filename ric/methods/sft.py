"""`method: sft`: LoRA SFT on the chosen responses, merged into the base: where the paper's MORLHF and
Rewarded Soups start. One point, answered without a preference."""

from __future__ import annotations

from ..pipeline import Stage
from .base import POLICY_EVALUATION_KEYS, TEXT_GENERATION_KEYS, Method, Run, describe_train


def config_classes():
    from ..baselines.config import SFTDataConfig, SFTRunConfig
    from ..config import EvaluationConfig, MethodConfig, ModelConfig

    return (MethodConfig, ModelConfig, SFTDataConfig, SFTRunConfig, EvaluationConfig)


def stages(run: Run) -> list[Stage]:
    from ..baselines.sft import prepare_sft, train_sft

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
            lambda s: describe_train(s) + f"; merged model in {d}/merged",
        ),
        METHOD.evaluation_stage(run),
    ]


def evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True) -> dict:
    from ..baselines.sft import evaluate

    return evaluate(run, eval_dir, overrides, progress)


def generator_class():
    from ..baselines.sft import SFTGenerator

    return SFTGenerator


METHOD = Method(
    "sft",
    "SFT on the chosen responses: the paper's starting point for MORLHF and Rewarded Soups (no preference)",
    config_classes,
    stages,
    evaluate,
    generator_class,
    TEXT_GENERATION_KEYS,
    evaluation_keys=POLICY_EVALUATION_KEYS,
    points="it is one point, the SFT model, which answers without a preference",
    takes_preference=False,
    takes_targets=False,
)
