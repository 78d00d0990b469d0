"""`shapes_clip`: a small CLIP-style caption-image scorer for the procedural shapes, trained here; registered
in the reward registry when `ric.diffusion` is imported (the text-to-image method, `ric rewards`).

The reward model of the CPU text-to-image demo, as CLIP is Stable Diffusion's: a convolutional image encoder
and a bag-of-words text encoder trained contrastively (each image against the captions of its batch) on the
procedural renders of `ric.diffusion.shapes` only, never on generated images; so it meets the pipeline's
generated images as a real reward model meets a fine-tuned generator's. The score of (caption, image) is the
learned logit scale times the cosine of their embeddings. It reads the caption, so its score for an image
changes with the caption: the prompt-dependent kind of reward TextNorm normalises.

Trained on first use (about a minute on a CPU) and cached under the ric cache folder, one model per `seed` and
training budget (`steps`, `num_images`: a smaller budget gives a weaker scorer); `path` names a folder of one
trained elsewhere (`model.safetensors` + `config.json`). A word outside the
training vocabulary reads as one unknown token.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from reward_models import ImageScorer, register_reward, to_image

logger = logging.getLogger(__name__)

CACHE_NAME = "shapes-clip-v1"
TRAINING = {"num_images": 4000, "steps": 500, "batch_size": 128, "lr": 2e-3, "dim": 64}


def _vocabulary() -> list[str]:
    from .shapes import COLOURS, DETAIL_WORDS, SATURATION_WORDS, SHAPES

    return ["<pad>", "<unk>", "a", "at", *COLOURS, *SHAPES, *(w for _, w in SATURATION_WORDS + DETAIL_WORDS)]


def _build(config: dict):
    import torch
    from torch import nn

    class ShapesClip(nn.Module):
        def __init__(self, vocab_size: int, dim: int):
            super().__init__()
            self.image = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1),
                nn.GELU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(64, 32, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Flatten(),  # 32 x 8 x 8: where the edges and corners lie is the shape
                nn.Linear(32 * 8 * 8, dim),
            )
            self.words = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=0)
            self.text = nn.Sequential(nn.GELU(), nn.Linear(dim, dim))
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(10.0))))

        def embed_images(self, pixels):
            return nn.functional.normalize(self.image(pixels), dim=-1)

        def embed_texts(self, ids):
            return nn.functional.normalize(self.text(self.words(ids)), dim=-1)

    return ShapesClip(len(config["vocabulary"]), config["dim"])


def _token_ids(captions: list[str], vocabulary: list[str]):
    import torch

    index = {w: i for i, w in enumerate(vocabulary)}
    rows = [[index.get(w, 1) for w in re.findall(r"[a-z]+", c.lower())] or [1] for c in captions]
    width = max(len(r) for r in rows)
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


def _pixels(images):
    import torch

    array = np.stack([np.asarray(to_image(im).resize((32, 32)), dtype=np.float32) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def train_shapes_clip(out: str | Path, seed: int = 0, progress: bool = True, **overrides) -> dict:
    """Train one scorer on procedural renders (captions as the pipeline's pre-training writes them: the colour
    and shape, sometimes look words) and save it into `out` (model.safetensors, config.json, train_stats.json).
    The loss is CLIP's symmetric cross-entropy, every caption of the batch naming the same colour and shape
    counted as a positive."""
    import time

    import torch
    from safetensors.torch import save_file

    from ..rundir import write_json
    from .shapes import describe, draw_shape, sample_rows

    settings = {**TRAINING, **overrides}
    start = time.time()
    torch.manual_seed(seed)
    rows = sample_rows(settings["num_images"], seed=30_000 + seed)  # neither the pipeline's nor the demo's images
    words = np.random.default_rng(seed)
    captions = [describe(r, words) for r in rows]
    config = {"vocabulary": _vocabulary(), "dim": settings["dim"], "seed": seed}
    pixels = _pixels(draw_shape(r["colour"], r["shape"], r["saturation"], r["detail"], r["seed"]) for r in rows)
    ids = _token_ids(captions, config["vocabulary"])
    kinds = {}
    classes = torch.tensor([kinds.setdefault((r["colour"], r["shape"]), len(kinds)) for r in rows])
    model = _build(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings["lr"], total_steps=settings["steps"])
    generator = torch.Generator().manual_seed(seed)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings["steps"], desc=f"training the shapes_clip scorer (seed {seed})", unit="step")
    history = []
    for step in range(settings["steps"]):
        batch = torch.randint(0, len(rows), (settings["batch_size"],), generator=generator)
        logits = model.logit_scale.exp() * model.embed_images(pixels[batch]) @ model.embed_texts(ids[batch]).T
        positive = (classes[batch][:, None] == classes[batch][None, :]).float()
        target = positive / positive.sum(dim=1, keepdim=True)
        loss = 0.5 * (
            torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, float(np.log(100.0)))
        if step % 50 == 0 or step == settings["steps"] - 1:
            history.append([step, round(loss.item(), 4)])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=1))
    stats = {**settings, "seed": seed, "seconds": round(time.time() - start, 1), "loss": history}
    write_json(out / "train_stats.json", stats)
    return stats


def shapes_clip_path(seed: int = 0, progress: bool = True, steps: int | None = None, num_images: int | None = None):
    """The cached scorer of `seed` (and of a smaller training budget, when given), trained on first use."""
    from ..models import cache_dir
    from ..rundir import atomic_dir

    budget = {k: v for k, v in (("steps", steps), ("num_images", num_images)) if v not in (None, TRAINING[k])}
    name = f"{CACHE_NAME}-seed{seed}" + "".join(f"-{k}{v}" for k, v in budget.items())
    target = cache_dir() / "models" / name
    if (target / "model.safetensors").exists():
        return target
    logger.warning("Training the shapes_clip scorer (seed %d) once under %s (about a minute on a CPU)", seed, target)
    with atomic_dir(target) as tmp:
        train_shapes_clip(tmp, seed=seed, progress=progress, **budget)
    return target


@register_reward("shapes_clip")
class ShapesClipScorer(ImageScorer):
    """caption-image alignment of a small CLIP-style model trained on the procedural shapes (reads the caption)."""

    name = "shapes_clip"
    input_format = "caption_image"

    def __init__(
        self,
        seed: int = 0,
        path: str | None = None,
        steps: int | None = None,
        num_images: int | None = None,
        batch_size: int = 256,
        device: str | None = None,
    ):
        from safetensors.torch import load_file

        for field, value in (("steps", steps), ("num_images", num_images)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"shapes_clip.{field}: the training budget, a positive integer, got {value!r}")
        folder = Path(path) if path else shapes_clip_path(seed, steps=steps, num_images=num_images)
        if not (folder / "model.safetensors").exists() or not (folder / "config.json").exists():
            raise FileNotFoundError(f"shapes_clip.path: {folder} holds no model.safetensors + config.json")
        self.config = json.loads((folder / "config.json").read_text())
        self.model = _build(self.config)
        self.model.load_state_dict(load_file(str(folder / "model.safetensors")))
        self.device = device or "cpu"
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self._text_cache: dict[str, object] = {}

    def _score_batch(self, prompts, images):
        import torch

        with torch.inference_mode():
            new = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
            if new:
                embedded = self.model.embed_texts(_token_ids(new, self.config["vocabulary"]).to(self.device))
                self._text_cache.update(zip(new, embedded))
            texts = torch.stack([self._text_cache[p] for p in prompts])
            pictures = self.model.embed_images(_pixels(images).to(self.device))
            return (self.model.logit_scale.exp() * (pictures * texts).sum(-1)).cpu().tolist()
