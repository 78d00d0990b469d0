"""A procedural image set and a small Stable-Diffusion-style pipeline trained on it, for a CPU demo.

Images (`draw_shape`): a coloured shape (circle, square, triangle, diamond) on a light background,
32x32. The caption names the colour and the shape ("a red circle"); two things it does not name vary
independently: the saturation of the colours (grey to vivid: what `colorfulness` sees) and the
detail, stripes and grain over shape and background (flat to busy: what `compressibility`, minus the
JPEG size, sees). `write_image_folder` writes such a set as `metadata.jsonl` + PNG files.

`bundled:shapes-sd` (`shapes_pipeline_path`) is a StableDiffusionPipeline built from stock diffusers
components (AutoencoderKL, UNet2DConditionModel, CLIP text encoder with a byte-level tokenizer, DDPM
scheduler) and trained once on this machine on the procedural set: first the VAE, then the UNet and
the text encoder on its latents, with captions that name the colour and the shape and, as often as
not, the look ("a vivid red circle, busy"; `describe`), as the web captions behind Stable Diffusion
sometimes do; no caption ever holds a score tag. It is cached under the ric cache folder like the
bundled text model (a first use prints its progress). Recipes name it as they would
`stable-diffusion-v1-5/stable-diffusion-v1-5`: the same code paths load and fine-tune it.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SHAPES_PIPELINE = "bundled:shapes-sd"
COLOURS = {"red": 0.0, "orange": 30.0, "yellow": 55.0, "green": 120.0, "blue": 220.0, "purple": 280.0}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZE = 32
# words the pre-training captions may add for the hidden factors (the RiC data's captions never do)
SATURATION_WORDS = ((0.2, "grey"), (0.5, "pale"), (0.8, "bright"), (1.01, "vivid"))
DETAIL_WORDS = ((0.25, "plain"), (0.5, "smooth"), (0.75, "textured"), (1.01, "busy"))


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(hue / 360.0, saturation, value)) * 255.0


def layout(seed: int, size: int = SIZE) -> tuple[float, float, float]:
    """Where an image's shape sits: centre x, centre y, radius (the first draws of the image's seed)."""
    rng = np.random.default_rng(seed)
    return size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3), size * rng.uniform(0.26, 0.36)


def _mask(shape: str, size: int, rng) -> np.ndarray:
    cx, cy = size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3)  # as `layout`
    return shape_mask(shape, size, cx, cy, size * rng.uniform(0.26, 0.36))


def shape_mask(shape: str, size: int, cx, cy, r) -> np.ndarray:
    """Where `shape` centred at (cx, cy) with radius r covers a size x size grid (cx, cy, r may be arrays of
    the same shape, broadcast in front: one mask per placement)."""
    cx, cy, r = (np.asarray(v, dtype=np.float64)[..., None, None] for v in (cx, cy, r))
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    if shape == "square":
        return (abs(x - cx) <= r * 0.85) & (abs(y - cy) <= r * 0.85)
    if shape == "diamond":
        return abs(x - cx) + abs(y - cy) <= r * 1.15
    # triangle, pointing up
    return (y >= cy - r) & (y <= cy + r * 0.8) & (abs(x - cx) <= (y - (cy - r)) * 0.6)


# --- reading an image back: which colour and which shape it shows (ground truth for generated images) ----------

MIN_SATURATION = 0.25  # below it the drawn colour is too grey to name
HUE_MARGIN = 8.0  # degrees: nearer than this to halfway between two named hues is unsure
MIN_IOU, IOU_MARGIN = 0.6, 0.06  # the best shape's overlap, and its lead over the second best


def read_image(image) -> dict:
    """What a 32x32 image shows, by a fixed procedure (no model): the shape's colour and kind, or None where
    the procedure is unsure, and why. The background is the border's median colour; the shape is the largest
    connected region that differs from it; its kind is the template (circle, square, triangle, diamond, placed
    and sized as the drawings are) that overlaps it best; its colour the named hue nearest its median hue."""
    import colorsys

    from PIL import Image
    from scipy import ndimage

    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    rgb = ndimage.uniform_filter(np.asarray(image, dtype=np.float64), size=(3, 3, 1))  # grain averaged out
    size = rgb.shape[0]
    border = np.concatenate([rgb[:2].reshape(-1, 3), rgb[-2:].reshape(-1, 3), rgb[:, :2].reshape(-1, 3)])
    border = np.concatenate([border, rgb[:, -2:].reshape(-1, 3)])
    distance = np.linalg.norm(rgb - np.median(border, axis=0), axis=-1)
    threshold = max(25.0, 0.5 * float(np.percentile(distance, 95)))
    labels, count = ndimage.label(distance > threshold)
    out = {"colour": None, "shape": None, "why": []}
    if count == 0:
        out["why"].append("no shape found")
        return out
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=range(1, count + 1))
    mask = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    area = float(mask.mean())
    if not 0.04 <= area <= 0.6:
        out["why"].append(f"shape covers {area:.0%} of the image")
        return out
    # shape: the best-overlapping template near the region's centroid
    ys, xs = np.nonzero(mask)
    grid = np.stack(
        np.meshgrid(
            xs.mean() + 0.5 + np.arange(-3, 3.5, 1.0),
            ys.mean() + 0.5 + np.arange(-4, 4.5, 1.0),
            size * np.linspace(0.2, 0.42, 12),
            indexing="ij",
        ),
        axis=-1,
    ).reshape(-1, 3)
    best = {}
    for shape in SHAPES:
        templates = shape_mask(shape, size, grid[:, 0], grid[:, 1], grid[:, 2])
        overlap = (templates & mask).sum(axis=(1, 2)) / (templates | mask).sum(axis=(1, 2))
        best[shape] = float(overlap.max())
    ranked = sorted(best, key=best.get, reverse=True)
    out["iou"] = {k: round(v, 3) for k, v in best.items()}
    if best[ranked[0]] < MIN_IOU:
        out["why"].append(f"no template overlaps well (best {ranked[0]} {best[ranked[0]]:.2f})")
    elif best[ranked[0]] - best[ranked[1]] < IOU_MARGIN:
        out["why"].append(f"{ranked[0]} or {ranked[1]}")
    else:
        out["shape"] = ranked[0]
    # colour: the median of the region's inner pixels, named by the nearest hue
    eroded = ndimage.binary_erosion(mask)
    inner = eroded if eroded.sum() >= 8 else mask
    hue, saturation, _ = colorsys.rgb_to_hsv(*(np.median(rgb[inner], axis=0) / 255.0))
    out["saturation"] = round(float(saturation), 3)
    if saturation < MIN_SATURATION:
        out["why"].append(f"too grey to name (saturation {saturation:.2f})")
        return out
    gaps = {name: abs((hue * 360 - h + 180) % 360 - 180) for name, h in COLOURS.items()}
    nearest = sorted(gaps, key=gaps.get)
    out["hue"] = round(float(hue * 360), 1)
    if gaps[nearest[1]] - gaps[nearest[0]] < 2 * HUE_MARGIN:
        out["why"].append(f"{nearest[0]} or {nearest[1]} (hue {hue * 360:.0f})")
    else:
        out["colour"] = nearest[0]
    return out


def judge_image(image, colour: str, shape: str) -> str:
    """'match' when the image shows `colour` `shape`, 'mismatch' when it shows another colour or another shape,
    'unsure' when `read_image` cannot tell either way."""
    return judge(read_image(image), colour, shape)


def judge(seen: dict, colour: str, shape: str) -> str:
    """`judge_image`'s verdict from a `read_image` reading already made."""
    if seen["colour"] not in (None, colour) or seen["shape"] not in (None, shape):
        return "mismatch"
    if seen["colour"] == colour and seen["shape"] == shape:
        return "match"
    return "unsure"


def draw_shape(colour: str, shape: str, saturation: float, detail: float, seed: int, size: int = SIZE):
    """One image: `colour` `shape` on a light background, colours at `saturation` (0 grey .. 1 vivid),
    `detail` (0 flat .. 1 busy) of stripes and grain over shape and background."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    mask = _mask(shape, size, rng)
    hue = COLOURS[colour] + rng.uniform(-8, 8)
    fg = _hsv_to_rgb(hue, saturation, rng.uniform(0.75, 0.95))
    bg = _hsv_to_rgb((hue + 180) % 360, saturation * 0.35, rng.uniform(0.88, 0.97))
    image = np.where(mask[..., None], fg, bg).astype(np.float64)
    y, x = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, math.pi)
    period = 6 - 3 * detail  # finer stripes when busier
    stripes = np.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
    image += (40 * detail * stripes)[..., None] * np.where(mask[..., None], 1.0, 0.6)
    image += rng.normal(0, 28 * detail**1.5, size=(size, size, 1))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def sample_rows(n: int, seed: int = 0) -> list[dict]:
    """n (caption, colour, shape, saturation, detail, seed) rows, the hidden factors drawn independently."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        rows.append(
            {
                "text": f"a {colour} {shape}",
                "colour": str(colour),
                "shape": str(shape),
                "saturation": round(float(rng.uniform(0, 1)), 3),
                "detail": round(float(rng.uniform(0, 1)), 3),
                "seed": seed * 1_000_003 + i,
            }
        )
    return rows


def describe(row: dict, rng) -> str:
    """A pre-training caption: the colour and shape, and as often as not words for the saturation and the
    detail ("a vivid red circle, busy") and numbers for where the shape sits ("at 14 17"), as web
    captions sometimes name how a picture looks and put numbers in."""
    words = ["a"]
    if rng.random() < 0.5:
        words.append(next(w for limit, w in SATURATION_WORDS if row["saturation"] < limit))
    words += [row["colour"], row["shape"]]
    text = " ".join(words)
    if rng.random() < 0.5:
        text += ", " + next(w for limit, w in DETAIL_WORDS if row["detail"] < limit)
    if rng.random() < 0.5:
        cx, cy, _ = layout(row["seed"])
        text += f" at {cx:.0f} {cy:.0f}"
    return text


def write_image_folder(folder: str | Path, n: int, seed: int = 0) -> Path:
    """A folder of n procedural images with metadata.jsonl ({file_name, text, saturation, detail})."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, row in enumerate(sample_rows(n, seed)):
        name = f"{i:05d}.png"
        draw_shape(row["colour"], row["shape"], row["saturation"], row["detail"], row["seed"]).save(folder / name)
        lines.append(
            json.dumps(
                {"file_name": name, "text": row["text"], "saturation": row["saturation"], "detail": row["detail"]}
            )
        )
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def shapes_tokenizer(model_max_length: int = 48):
    """A CLIP tokenizer built in memory: the captions' words (colours, shapes, "a", the tags' "rm") as whole
    tokens by BPE merges, every other character a token of its own (numbers read digit by digit)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges: list[tuple[str, str]] = []
    extra = [w for _, w in SATURATION_WORDS + DETAIL_WORDS]
    for word in ["a", "at", "rm", *COLOURS, *SHAPES, *extra]:
        parts = _bpe([*word[:-1], word[-1] + "</w>"], merges)
        while len(parts) > 1:  # as BPE would apply them: each new merge joins the leftmost pair left
            merges.append((parts[0], parts[1]))
            vocab.setdefault(parts[0] + parts[1], len(vocab))
            parts = _bpe(parts, merges)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def _bpe(parts: list[str], merges: list[tuple[str, str]]) -> list[str]:
    """Byte-pair merging as the tokenizer does it: the lowest-ranked adjacent pair first, everywhere."""
    rank = {pair: i for i, pair in enumerate(merges)}
    while len(parts) > 1:
        pairs = [(rank.get((a, b), len(rank)), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best, _ = min(pairs)
        if best == len(rank):
            break
        merged, i = [], 0
        while i < len(parts):
            if i + 1 < len(parts) and rank.get((parts[i], parts[i + 1])) == best:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts
