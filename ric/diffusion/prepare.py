"""Text-to-image RiC, stage 1: score every training image with each image reward and normalise.

Images come from a folder with `metadata.jsonl` rows `{"file_name", "text"}` or a datasets dataset
with image and caption columns. Images that fail to decode, and rows whose caption is blank, are
skipped and counted; a metadata line that is not JSON, or a caption that is not text, is refused
with the file and line before any model loads. Each reward is normalised (mean 0, std 1); the
statistics go to data/reward_stats.json beside the Arrow dataset data/train (image, caption,
scores, normalized_scores).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np

from ..pareto import pearson_matrix
from ..run_info import RewardStats, score_range
from ..rundir import atomic_save_dataset, write_json

logger = logging.getLogger(__name__)


def read_image_folder(folder: Path, caption_column: str):
    """(images, captions, skipped) from a folder with metadata.jsonl rows {file_name, <caption_column>}.

    A line that is not a JSON object, a missing field or a caption that is not text is refused with the
    file and line; rows with a blank caption are skipped (and counted), as blank text prompts are."""
    from PIL import Image

    from ..data import nonblank_prompts

    meta = folder / "metadata.jsonl"
    example = f'{{"file_name": ..., "{caption_column}": ...}}'
    if not meta.exists():
        raise FileNotFoundError(f"{folder} has no metadata.jsonl (rows {example})")
    rows = []
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{meta} line {n}: not valid JSON ({err.msg} at column {err.colno}); each line must be one JSON "
                f"object {example}: fix the line or remove it"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{meta} line {n}: a JSON {type(row).__name__}, not an object {example}")
        if caption_column not in row or "file_name" not in row:
            raise ValueError(
                f"{meta} line {n}: missing field(s) {[k for k in ('file_name', caption_column) if k not in row]}"
            )
        check_caption(row[caption_column], f"{meta} line {n}", caption_column)
        rows.append(row)
    if not rows:
        raise ValueError(f"{meta} holds no rows: give one JSON object {example} per line")
    nonblank_prompts([r[caption_column] for r in rows], str(meta), caption_column, "caption_column", "caption")
    images, captions, skipped = [], [], []
    for row in rows:
        if not row[caption_column].strip():
            skipped.append(f"{row['file_name']} (blank caption)")
            continue
        try:
            with Image.open(folder / row["file_name"]) as image:
                images.append(image.convert("RGB"))
            captions.append(row[caption_column])
        except Exception as err:  # undecodable or missing image: skip and count, never fatal
            skipped.append(f"{row['file_name']} ({type(err).__name__})")
    return images, captions, skipped


def check_caption(caption, where: str, field: str) -> None:
    """A caption must be text (a blank one is skipped later; anything else is a mistake in the data)."""
    if not isinstance(caption, str):
        raise ValueError(
            f"{where}: field {field!r} holds {type(caption).__name__} ({caption!r}); captions must be text"
        )


def load_images(cfg):
    if not cfg.dataset_name:
        raise ValueError(
            "dataset_name: give a folder with metadata.jsonl or a datasets dataset of images and captions"
        )
    path = Path(cfg.dataset_name)
    if path.is_dir() and (path / "metadata.jsonl").exists():
        return read_image_folder(path, cfg.caption_column)
    from ..data import load_table, nonblank_prompts, require_columns

    table = load_table(cfg.dataset_name, cfg.dataset_train_split)
    require_columns(table, [cfg.image_column, cfg.caption_column], cfg.dataset_name, "image_column / caption_column")
    all_captions = table[cfg.caption_column]
    nonblank_prompts(all_captions, cfg.dataset_name, cfg.caption_column, "caption_column", "caption")
    images, captions, skipped = [], [], []
    for i, caption in enumerate(all_captions):
        if not caption.strip():
            skipped.append(f"row {i} (blank caption)")
            continue
        try:
            images.append(table[i][cfg.image_column].convert("RGB"))
            captions.append(caption)
        except Exception as err:
            skipped.append(f"row {i} ({type(err).__name__})")
    return images, captions, skipped


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def prepare_images(run_dir, cfg, meter=None, progress: bool = True) -> dict:
    import datasets

    from reward_models import check_reward_names, load_rewards, reward_display_name, textnorm_records

    check_reward_names(cfg.rewards or [], cfg.reward_models)
    images, captions, skipped = load_images(cfg)
    if skipped:
        logger.warning(
            "prepare: skipped %d image(s) that failed to decode or have a blank caption: %s",
            len(skipped),
            ", ".join(skipped[:5]),
        )
    if not images:
        raise ValueError(f"dataset {cfg.dataset_name!r}: no decodable image (skipped {len(skipped)})")
    names = [reward_display_name(r) for r in cfg.rewards]
    scorers = load_rewards(cfg.rewards, cfg.reward_models, batch_size=cfg.reward_batch_size)
    raw = np.array([s(captions, images, progress=progress) for s in scorers], dtype=np.float64).T
    stats = RewardStats.fit(names, raw)
    normalized = stats.normalize(names, raw)
    low, high = score_range(
        normalized, cfg.score_range, cfg.score_range_quantile, cfg.score_range_seed, cfg.score_range_samples
    )
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            "scores": datasets.Sequence(datasets.Value("float64")),
            "normalized_scores": datasets.Sequence(datasets.Value("float64")),
        }
    )
    table = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": _png_bytes(im), "path": None} for im in images],
            "caption": captions,
            "scores": raw.tolist(),
            "normalized_scores": normalized.tolist(),
        },
        features=features,
    )
    out = Path(run_dir) / "data"
    atomic_save_dataset(table, out / "train")
    write_json(
        out / "reward_stats.json",
        {"rewards": names, **stats.to_dict(), "score_low": low, "score_high": high, "num_rows": len(images)},
    )
    summary = {
        "rows": len(images),
        "skipped": len(skipped),
        "skipped_files": skipped,
        "rewards": names,
        "raw_mean": dict(zip(names, raw.mean(0).tolist())),
        "raw_std": dict(zip(names, raw.std(0).tolist())),
        "pearson": pearson_matrix(raw) if len(names) > 1 and len(images) > 2 else None,
    }
    normalised = textnorm_records(scorers)
    if normalised:
        summary["textnorm"] = {name: record["counts"] for name, record in normalised.items()}
        write_json(out / "textnorm.json", normalised)
    write_json(out / "prepare_stats.json", summary)
    return summary
