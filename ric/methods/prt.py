"""`method: prt`: Portable Reward Tuning on RiC's data. RiC's prepare stage (the same scored rows),
then r trained against the frozen base; a preference is answered with targets in the prompt's score
tags, the base (or any base with the same vocabulary: `--base`) steered by r."""

from __future__ import annotations

from ..pipeline import Stage
from .base import TEXT_GENERATION_KEYS, Method, Run, describe_train
from .ric import prepare_stage


def config_classes():
    from ..config import EvaluationConfig, MethodConfig
    from ..prt_config import PRTConfig, PRTModelConfig
    from ..ric_config import RiCDataConfig

    return (MethodConfig, PRTModelConfig, RiCDataConfig, PRTConfig, EvaluationConfig)


def stages(run: Run) -> list[Stage]:
    from ..prt_trainer import train_prt

    model_args, data_args, args, _ = run.configs
    return [
        prepare_stage(run),
        Stage(
            "train", "train", lambda m: train_prt(run.run_dir, model_args, data_args, args, meter=m), describe_train
        ),
        METHOD.evaluation_stage(run),
    ]


def evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True, dtype=None, base=None) -> dict:
    from ..steering import evaluate

    return evaluate(run, eval_dir=eval_dir, overrides=overrides, progress=progress, dtype=dtype, base=base)


def generator_class():
    from ..steering import PRTGenerator

    return PRTGenerator


METHOD = Method(
    "prt",
    "Portable Reward Tuning: a reward-conditioned r steering the base (or any base of the same vocabulary)",
    config_classes,
    stages,
    evaluate,
    generator_class,
    TEXT_GENERATION_KEYS,
    options=("dtype", "base"),
    upstream=None,
    upstream_refusal="a PRT run decodes two models together (the base and r), which an upstream server of one "
    "model cannot do",
    export=None,
    export_refusal="a PRT run is two models combined at every decoding step (the base and r); no single merged "
    "model answers as they do, so it cannot be exported (serve it with `ric serve`)",
)
