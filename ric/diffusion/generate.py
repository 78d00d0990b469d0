"""Text-to-image RiC, generation and evaluation: preference -> targets (the text side's mapping) ->
tags in the caption -> images with the run's LoRA and classifier-free guidance.

`ImageGenerator` answers `ric generate RUN_DIR --preference 0.8,0.2 "a red circle"`; `evaluate`
draws every caption at every point of the preference grid (and with the base pipeline: LoRA off,
untagged captions), scores the images through the shared report (eval/pareto.json, pareto.png,
per-point CSVs whose `response` is the image file) and writes eval/image_grid.png: one row per
caption, one column per preference.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..chunks import fingerprint
from ..generation import Condition
from ..preference import check_targets, parse_preference, preference_to_targets
from ..report import FrontGenerator, FrontPoint, evaluate_run, grid_points
from ..run_info import RunInfo, load_run_info
from ..rundir import is_main_process
from .tiny import resolve_pipeline
from .train import tag_caption


def load_image_pipeline(run_dir, device: str | None = None):
    """(pipeline with the run's LoRA, run info)."""
    import torch
    from diffusers import StableDiffusionPipeline

    info, folder = load_run_info(run_dir)
    if info.template != "image":
        raise ValueError(f"{run_dir} is a text run; use the text generation path")
    adapter = (
        folder if (folder / "pytorch_lora_weights.safetensors").exists() else folder / (info.adapter or "adapter")
    )
    if not (adapter / "pytorch_lora_weights.safetensors").exists():
        raise FileNotFoundError(f"{adapter} holds no trained LoRA yet: run `ric train` first")
    pipe = StableDiffusionPipeline.from_pretrained(
        resolve_pipeline(info.base_model), safety_checker=None, requires_safety_checker=False
    )
    pipe.load_lora_weights(str(adapter))
    pipe.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe.set_progress_bar_config(disable=True)
    return pipe, info


def generate_images(pipe, info: RunInfo, captions, targets, seeds, output_type: str = "pil", **overrides):
    """One image per caption, conditioned on `targets` (normalised scores; None: the caption untagged),
    each drawn with its own seed."""
    import torch

    settings = {**info.generation, **overrides}
    size = settings.get("resolution")
    prompts = [tag_caption(c, targets) if targets is not None else c for c in captions]
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    out = pipe(
        prompts,
        num_inference_steps=settings["num_inference_steps"],
        guidance_scale=settings["guidance_scale"],
        generator=generators,
        height=size,
        width=size,
        output_type=output_type,
    )
    return out.images


class ImageGenerator:
    """Captions in, images out, at a chosen preference (the text side's `PolicyGenerator`, for images)."""

    options = frozenset({"seed", "num_inference_steps", "guidance_scale"})
    takes_targets = True

    def __init__(self, pipe, info: RunInfo):
        self.pipe, self.info = pipe, info

    @classmethod
    def from_run(cls, run_dir, device: str | None = None):
        return cls(*load_image_pipeline(run_dir, device))

    @property
    def rewards(self) -> list[str]:
        return list(self.info.rewards)

    def condition(self, preference=None, targets=None, method: str | None = None) -> Condition:
        if (preference is None) == (targets is None):
            raise ValueError("give either preference (weights) or targets (normalised scores), not both")
        if preference is None:
            info = self.info
            return Condition(
                key="lora", targets=tuple(check_targets(targets, info.score_low, info.score_high, info.rewards))
            )
        weights = parse_preference(preference, self.info.num_objectives)
        targets = preference_to_targets(
            weights, self.info.score_low, self.info.score_high, method or self.info.preference_method
        )
        return Condition(key="lora", preference=tuple(weights), targets=tuple(targets))

    def generate(
        self, captions, preference=None, targets=None, method: str | None = None, seed: int = 0, **overrides
    ) -> list[dict]:
        """One image per caption: [{"prompt", "image" (PIL), "preference", "targets"}]."""
        captions = [captions] if isinstance(captions, str) else list(captions)
        condition = self.condition(preference, targets, method)
        images = generate_images(
            self.pipe,
            self.info,
            captions,
            list(condition.targets),
            [seed + i for i in range(len(captions))],
            **overrides,
        )
        return [{"prompt": c, "image": im, **condition.describe()} for c, im in zip(captions, images)]

    def generate_base(self, captions, seeds, **overrides):
        """The base pipeline's images (LoRA off, untagged captions)."""
        self.pipe.disable_lora()
        try:
            return generate_images(self.pipe, self.info, captions, None, seeds, **overrides)
        finally:
            self.pipe.enable_lora()


class ImageFront(FrontGenerator):
    """Images for the evaluation grid, saved as PNG files whose paths are the "responses"."""

    def __init__(self, run_dir: Path, image_dir: Path, points: list[FrontPoint], captions: list[str], settings: dict):
        self.run_dir, self.image_dir, self.points_, self.settings = run_dir, image_dir, points, settings
        self.index = {c: i for i, c in enumerate(captions)}
        self.identity = {"adapter": str((run_dir / "adapter").resolve())}
        self.generator = None

    def path(self, point: int | None, caption: str) -> Path:
        folder = "base" if point is None else f"point_{point:02d}"
        return self.image_dir / folder / f"caption_{self.index[caption]:03d}.png"

    def _draw(self, point: int | None, captions: list[str]) -> list[str]:
        if self.generator is None:
            self.generator = ImageGenerator.from_run(self.run_dir)
        settings = {k: v for k, v in self.settings.items() if k != "seed"}
        seeds = [self.settings["seed"] + self.index[c] for c in captions]
        if point is None:
            images = self.generator.generate_base(captions, seeds, **settings)
        else:
            images = generate_images(
                self.generator.pipe, self.generator.info, captions, self.points_[point].targets, seeds, **settings
            )
        paths = [self.path(point, c) for c in captions]
        for image, path in zip(images, paths):  # each process saves the chunks it drew
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp.png")
            image.save(tmp)
            os.replace(tmp, path)
        return [str(p) for p in paths]

    def base(self, items):
        return self._draw(None, [c["prompt"] for c in items])

    def points(self, items):
        out = []
        for k in dict.fromkeys(c["point"] for c in items):
            out += self._draw(k, [c["prompt"] for c in items if c["point"] == k])
        return out


def image_grid(front: ImageFront, captions, points, path: Path) -> None:
    """One row per caption, one column per preference (labelled with w1), from the saved images."""
    from PIL import Image, ImageDraw

    with Image.open(front.path(0, captions[0])) as first:
        size = first.size
    # small images (a CPU demo's 32x32) are drawn larger, pixel for pixel, so that each column's label fits
    scale = max(1, -(-64 // min(size)))
    w, h = size[0] * scale, size[1] * scale
    label_w, head_h = 150, 16
    grid = Image.new("RGB", (label_w + w * len(points), head_h + h * len(captions)), "white")
    draw = ImageDraw.Draw(grid)
    for c, point in enumerate(points):
        draw.text((label_w + c * w + 2, 2), f"w1={point.preference[0]:.1f}", fill="black")
    for r, caption in enumerate(captions):
        draw.text((4, head_h + r * h + h // 2 - 6), caption[:24], fill="black")
        for c in range(len(points)):
            with Image.open(front.path(c, caption)) as image:
                cell = image.convert("RGB").resize((w, h), Image.NEAREST)
                grid.paste(cell, (label_w + c * w, head_h + r * h))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    grid.save(tmp)
    os.replace(tmp, path)


def evaluation_captions(run_dir: Path, cfg, eval_args) -> list[str]:
    import datasets

    if cfg.eval_captions:
        return list(cfg.eval_captions)[: eval_args.eval_num_prompts]
    captions = datasets.load_from_disk(str(run_dir / "data" / "train"))["caption"]
    return list(dict.fromkeys(captions))[: eval_args.eval_num_prompts or 4]


def evaluate(run, eval_dir=None, overrides: dict | None = None, progress: bool = True) -> dict:
    """The image grid and the front of the image rewards (with the base pipeline's point)."""
    cfg, eval_args = run.configs
    info, _ = load_run_info(run.run_dir)
    eval_dir = Path(eval_dir) if eval_dir else run.run_dir / "eval"
    captions = evaluation_captions(run.run_dir, cfg, eval_args)
    points = grid_points(info, eval_args.eval_preference_method, eval_args.eval_grid_divisions)
    fronts = []

    def front(settings):
        key = fingerprint([{"v": v} for v in (settings, [vars(p) for p in points], captions)])
        fronts.append(ImageFront(run.run_dir, eval_dir / f"images-{key}", points, captions, settings))
        return fronts[-1]

    result = evaluate_run(
        run,
        info,
        points,
        front,
        flags={k: k for k in ("guidance_scale", "num_inference_steps", "seed")},
        prompts=captions,
        eval_dir=eval_dir,
        overrides=overrides,
        progress=progress,
        chunk_size=eval_args.eval_batch_size or len(captions),
        extra={"image_grid": "image_grid.png", "preference_method": eval_args.eval_preference_method},
        title="RiC text-to-image",
        label="RiC, one LoRA (grid of preferences)",
    )
    if is_main_process():
        image_grid(fronts[0], captions, points, eval_dir / "image_grid.png")
    return result
