"""`method: diffusion`: RiC for text-to-image, one UNet LoRA, the targets in the caption."""

from __future__ import annotations

from ..pipeline import Stage
from .base import EVALUATION_KEYS, IMAGE_GENERATE_OPTIONS, IMAGE_GENERATION_KEYS, Method, Run, describe_train


def config_classes():
    from ..config import EvaluationConfig, MethodConfig
    from ..diffusion.config import DiffusionConfig

    return (MethodConfig, DiffusionConfig, EvaluationConfig)


def stages(run: Run) -> list[Stage]:
    from ..diffusion.prepare import prepare_images
    from ..diffusion.train import train_diffusion

    cfg, _ = run.configs
    d = run.run_dir
    return [
        Stage(
            "prepare",
            "prepare",
            lambda m: prepare_images(d, cfg, meter=m),
            lambda s: f"scored {s['rows']} images (skipped {s['skipped']}: undecodable or blank caption) in {d}/data",
        ),
        Stage("train", "train", lambda m: train_diffusion(d, cfg, meter=m), describe_train),
        METHOD.evaluation_stage(run),
    ]


def evaluate(run: Run, eval_dir=None, overrides=None, progress: bool = True) -> dict:
    from ..diffusion.generate import evaluate

    return evaluate(run, eval_dir, overrides, progress)


def generator_class():
    from ..diffusion.generate import ImageGenerator

    return ImageGenerator


METHOD = Method(
    "diffusion",
    "RiC for text-to-image: one UNet LoRA, targets in the caption",
    config_classes,
    stages,
    evaluate,
    generator_class,
    IMAGE_GENERATION_KEYS,
    # its captions are the recipe's caption set, not a prompts file
    evaluation_keys=tuple(k for k in EVALUATION_KEYS if k != "eval_prompts_file"),
    makes_images=True,
    generate_options=IMAGE_GENERATE_OPTIONS,
    export=None,
    export_refusal="a text-to-image run is a UNet LoRA, not a language model; `ric export` writes language "
    "models (`ric generate` answers captions)",
)
