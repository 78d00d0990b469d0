"""Image rewards for the text-to-image branch (the paper's text-to-image task). Same registry as text:
a scorer takes (prompts, images) where images are PIL images (or paths), batched.

- `compressibility`: minus the JPEG size in kilobytes at quality 95 (the paper's; flat images win).
- `aesthetic`: CLIP ViT-L/14 image embedding (L2-normalised) through a linear aesthetic head; the
  CLIP model and the head's weights (safetensors with `weight` [1, dim] and `bias` [1]) come from a
  user-given path or hub id.
- `colorfulness`: Hasler and Suesstrunk's colorfulness metric (opponent-colour statistics), plain
  NumPy, runs offline on real images; in tension with compressibility (colour costs bytes).
"""

from __future__ import annotations

import io

import numpy as np

from .registry import RewardScorer, register_reward


def to_image(item):
    from PIL import Image

    if isinstance(item, Image.Image):
        return item.convert("RGB")
    with Image.open(item) as image:
        return image.convert("RGB")


class ImageScorer(RewardScorer):
    input_format = "image"
    modality = "image"

    def __call__(self, prompts, images, progress: bool = False):
        images = list(images)
        if prompts is None:
            prompts = [""] * len(images)
        return super().__call__(list(prompts), images, progress)


@register_reward("compressibility")
class CompressibilityScorer(ImageScorer):
    """minus the JPEG size (kB) at quality 95."""

    name = "compressibility"

    def __init__(self, quality: int = 95, batch_size: int = 64):
        self.quality, self.batch_size = quality, batch_size

    def jpeg_kb(self, image) -> float:
        buffer = io.BytesIO()
        to_image(image).save(buffer, format="JPEG", quality=self.quality)
        return buffer.tell() / 1000.0

    def _score_batch(self, prompts, images):
        return [-self.jpeg_kb(im) for im in images]


@register_reward("colorfulness")
class ColorfulnessScorer(ImageScorer):
    """Hasler-Suesstrunk colorfulness (0 for grey images, ~100+ for vivid ones)."""

    name = "colorfulness"

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size

    @staticmethod
    def colorfulness(image) -> float:
        rgb = np.asarray(to_image(image), dtype=np.float64)
        rg = rgb[..., 0] - rgb[..., 1]
        yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
        return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))

    def _score_batch(self, prompts, images):
        return [self.colorfulness(im) for im in images]


@register_reward("aesthetic")
class AestheticScorer(ImageScorer):
    """CLIP ViT-L/14 image embedding + linear aesthetic head."""

    name = "aesthetic"

    def __init__(
        self,
        head: str | None = None,
        clip_model: str = "openai/clip-vit-large-patch14",
        batch_size: int = 16,
        device: str | None = None,
    ):
        import torch
        from safetensors.torch import load_file
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        from .loading import load_pretrained

        if head is None:
            raise ValueError(
                "aesthetic: give `head`, a safetensors file (or folder holding aesthetic_head.safetensors) "
                "with the linear head's `weight` [1, dim] and `bias` [1]"
            )
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = load_pretrained(CLIPImageProcessor, clip_model, what="CLIP image processor")
        self.model = (
            load_pretrained(CLIPVisionModelWithProjection, clip_model, what="CLIP vision model").to(self.device).eval()
        )
        path = _head_file(head)
        weights = load_file(path)
        if "weight" not in weights or "bias" not in weights:
            raise ValueError(f"aesthetic head {path}: expected tensors 'weight' and 'bias', found {sorted(weights)}")
        self.head = torch.nn.Linear(weights["weight"].shape[1], 1).to(self.device)
        self.head.load_state_dict({"weight": weights["weight"], "bias": weights["bias"]})
        if self.head.in_features != self.model.config.projection_dim:
            raise ValueError(
                f"aesthetic head takes {self.head.in_features} features, the CLIP model gives "
                f"{self.model.config.projection_dim}"
            )

    def _score_batch(self, prompts, images):
        import torch

        pixels = self.processor(images=[to_image(im) for im in images], return_tensors="pt")["pixel_values"].to(
            self.device
        )
        with torch.inference_mode():
            embeds = self.model(pixel_values=pixels).image_embeds
            embeds = torch.nn.functional.normalize(embeds, dim=-1)
            return self.head(embeds).squeeze(-1).float().cpu().tolist()


def _head_file(head: str) -> str:
    import os

    if os.path.isdir(head):
        return os.path.join(head, "aesthetic_head.safetensors")
    if os.path.isfile(head):
        return head
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(head, "aesthetic_head.safetensors")
    except Exception as err:  # the hub stack raises many types; give one message
        raise OSError(
            f"cannot load the aesthetic head {head!r}: not a local file and the hub could not provide it "
            f"({type(err).__name__}). Make it available locally."
        ) from None
