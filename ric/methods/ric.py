"""`method: ric`: Rewards-in-Context. Prepare (score the data), offline reward-conditioned LoRA SFT,
optional online iterations, and the preference grid evaluated with the one adapter."""

from __future__ import annotations

from ..pipeline import Stage
from .base import TEXT_GENERATION_KEYS, Method, Run, describe_prepare, describe_train


def config_classes():
    from ..config import EvaluationConfig, MethodConfig, ModelConfig
    from ..ric_config import RiCConfig, RiCDataConfig

    return (MethodConfig, ModelConfig, RiCDataConfig, RiCConfig, EvaluationConfig)


def prepare_stage(run: Run) -> Stage:
    """RiC's prepare stage (scored, normalised rows in RUN_DIR/data): PRT trains on the same data."""
    from ..prepare import prepare

    model_args, data_args, args, _ = run.configs
    return Stage(
        "prepare", "prepare", lambda m: prepare(run.run_dir, model_args, data_args, args, meter=m), describe_prepare
    )


def stages(run: Run) -> list[Stage]:
    from ..online import online_iteration
    from ..ric_trainer import train

    model_args, data_args, args, _ = run.configs
    d = run.run_dir
    out = [
        prepare_stage(run),
        Stage("train", "train", lambda m: train(d, model_args, data_args, args, meter=m), describe_train),
    ]
    for k in range(1, args.num_online_iterations + 1):
        out.append(
            Stage(
                f"online_{k}",
                "train",
                lambda m, k=k: online_iteration(d, k, model_args, data_args, args, meter=m),
                describe_online,
            )
        )
    n = args.num_online_iterations
    out.append(METHOD.evaluation_stage(run, "evaluate" if n == 0 else f"evaluate:adapter_online_{n}"))
    return out


def describe_online(s: dict) -> str:
    return (
        f"iteration {s['iteration']}: generated {s['generated']}, kept {s['kept']}, dropped {s['dropped']}; "
        f"trained {s['train']['global_step']} steps on {s['training_rows']} rows"
    )


def evaluate(
    run: Run, eval_dir=None, overrides=None, progress: bool = True, adapter=None, dtype=None, engine=None, outtype=None
) -> dict:
    from ..evaluate import evaluate

    served = None
    if engine and engine != "builtin":
        from ..server.engines import served_loader

        served = served_loader(run, engine, outtype, adapter, dtype)
    return evaluate(
        run, eval_dir=eval_dir, overrides=overrides, progress=progress, adapter=adapter, dtype=dtype, served=served
    )


def generator_class():
    from ..inference import RiCGenerator

    return RiCGenerator


METHOD = Method(
    "ric",
    "Rewards-in-Context: one reward-conditioned LoRA, the preference mapped to score tags",
    config_classes,
    stages,
    evaluate,
    generator_class,
    TEXT_GENERATION_KEYS,
    options=("adapter", "dtype", "engine"),
)
