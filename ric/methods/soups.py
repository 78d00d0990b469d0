"""`method: soups`: Rewarded Soups, one RL policy per reward, the adapters mixed at the preference."""

from __future__ import annotations

from .base import EVALUATION_KEYS, TEXT_GENERATION_KEYS, Method, Run
from .morlhf import rl_config_classes, rl_stages


def evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True, step: int | None = None) -> dict:
    from ..baselines.soups import evaluate

    return evaluate(run, eval_dir, overrides, progress, step=step)


def generator_class():
    from ..baselines.soups import SoupsGenerator

    return SoupsGenerator


METHOD = Method(
    "soups",
    "Rewarded Soups: one RL policy per reward, adapters mixed at the preference",
    rl_config_classes("SoupsConfig"),
    rl_stages,
    evaluate,
    generator_class,
    TEXT_GENERATION_KEYS,
    evaluation_keys=tuple(k for k in EVALUATION_KEYS if k != "eval_preference_method"),
    points="its points are a preference grid, the adapters mixed at each",
    takes_targets=False,
    options=("step",),
    upstream=None,
    export="mix",
    upstream_refusal="a Rewarded Soups run mixes its adapters per preference, which an upstream LoRA server cannot do",
)
