"""RiC with TextNorm for text-to-image: the shapes pipeline fine-tuned on its own generations with caption
alignment raw (`shapes_clip`) and with alignment normalised by TextNorm, against colorfulness, all else equal.

    ric run recipes/diffusion/demo_alignment.yaml; ric run recipes/diffusion/demo_alignment_textnorm.yaml
    python bench/bench_textnorm_t2i.py [--seeds 4]

Each run draws the 24 captions "a <colour> <shape>" x --seeds images at the 11 preferences w = (w1, 1 - w1),
w1 the weight on alignment, and the base pipeline (LoRA off, untagged) the same captions and seeds. Every image
is scored in both alignment units (raw shapes_clip, TextNorm over the caption's 8 contrasts), by colorfulness,
and judged by the fixed colour-and-shape check (`ric.diffusion.shapes.judge_image`): the ground-truth match
rate is the share of matches among the images the check decides. Following: Spearman of the weight against the
mean (alignment in each unit, colorfulness, and the match rate against w1). Intervals: 95 % bootstrap over
captions. Writes the `images` key of bench/results/textnorm_ric.json.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = {"raw": ROOT / "runs/diffusion-alignment", "textnorm": ROOT / "runs/diffusion-alignment-textnorm"}
CONTRASTS = ROOT / "recipes/diffusion/shapes_contrasts.jsonl"


def summarise(points: list[dict], base: dict, weights, n_captions: int, seeds: int) -> dict:
    """Following and match rates of one run's grid (`points`, w1 from 0 to 1), with 95 % bootstrap intervals
    over captions."""
    from ric.pareto import preference_following

    def by_caption(values):  # images -> captions x seeds
        return values.reshape(n_captions, seeds)

    rng = np.random.default_rng(0)
    draws = [rng.integers(0, n_captions, n_captions) for _ in range(1000)]

    def interval(statistic):
        values = [statistic(np.arange(n_captions))] + [statistic(d) for d in draws]
        return round(float(values[0]), 4), [round(float(x), 4) for x in np.nanpercentile(values[1:], [2.5, 97.5])]

    def follow(idx, key, column):
        means = [np.nanmean(by_caption(p[key])[idx]) for p in points]
        return preference_following(np.array(weights)[:, [column]], np.array(means)[:, None])[0]

    def match_rate(values):
        return lambda idx: np.nanmean(by_caption(values)[idx])

    entry = {"weights": weights}
    for key, column in (("alignment_raw", 0), ("alignment_textnorm", 0), ("colorfulness", 1), ("match", 0)):
        if len(points) > 1:
            value, ci = interval(lambda idx, key=key, column=column: follow(idx, key, column))
            entry[f"following_{key}"], entry[f"following_{key}_ci"] = value, ci
        entry[f"{key}_w1_0_to_1"] = [round(float(np.nanmean(p[key])), 4) for p in points]
    for end, index in (("w1_1", -1), ("w1_0", 0)):
        entry[f"match_rate_{end}"], entry[f"match_rate_{end}_ci"] = interval(match_rate(points[index]["match"]))
    top, bottom = match_rate(points[-1]["match"]), match_rate(base["match"])
    entry["match_rate_w1_1_minus_base"], entry["match_rate_w1_1_minus_base_ci"] = interval(
        lambda idx: top(idx) - bottom(idx)
    )
    entry["decided_share"] = round(float(np.mean([np.isfinite(p["match"]).mean() for p in points])), 4)
    entry["base"] = {
        **{k: round(float(np.nanmean(v)), 4) for k, v in base.items() if k != "match"},
        "match_rate": interval(match_rate(base["match"]))[0],
        "match_rate_ci": interval(match_rate(base["match"]))[1],
        "decided_share": round(float(np.isfinite(base["match"]).mean()), 4),
    }
    return entry


def main():
    from tqdm.auto import tqdm

    from reward_models import get_reward
    from ric.diffusion.generate import ImageGenerator, generate_images
    from ric.diffusion.shapes import COLOURS, SHAPES, judge_image

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    a = parser.parse_args()
    captions = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    declared = {
        "clip": {"type": "shapes_clip", "seed": 0},
        "alignment": {"type": "textnorm", "of": "clip", "source": "file", "path": str(CONTRASTS), "contrasts": 8},
    }
    raw_scorer, textnorm_scorer = get_reward("clip", declared), get_reward("alignment", declared)
    colorfulness = get_reward("colorfulness")
    weights = [[round(w / 10, 1), round(1 - w / 10, 1)] for w in range(11)]
    prompts = [c for c in captions for _ in range(a.seeds)]
    seeds = [700 + 100 * i + k for i in range(len(captions)) for k in range(a.seeds)]

    def measure(images):
        labels = [judge_image(im, *p.split()[1:]) for p, im in zip(prompts, images)]
        return {
            "alignment_raw": np.array(raw_scorer(prompts, images)),
            "alignment_textnorm": np.array(textnorm_scorer(prompts, images)),
            "colorfulness": np.array(colorfulness(prompts, images)),
            "match": np.array([{"match": 1.0, "mismatch": 0.0}.get(x, np.nan) for x in labels]),
        }

    result = {"runs": {k: str(v.relative_to(ROOT)) for k, v in RUNS.items()}, "captions": len(captions)}
    result["seeds_per_caption"] = a.seeds
    base = None
    for name, run in RUNS.items():
        generator = ImageGenerator.from_run(run)
        if base is None:
            base = measure(generator.generate_base(prompts, seeds))
        points = []
        for w in tqdm(weights, desc=f"{name}: the 11-point grid", unit="point"):
            targets = list(generator.condition(preference=w).targets)
            images = []
            for start in range(0, len(prompts), 48):
                chunk = slice(start, start + 48)
                images += generate_images(generator.pipe, generator.info, prompts[chunk], targets, seeds[chunk])
            points.append(measure(images))
        entry = summarise(points, base, weights, len(captions), a.seeds)
        entry.pop("base")
        result[name] = {**entry, "trained_with": name}
        del generator
    result["base"] = summarise([base], base, [[1.0, 0.0]], len(captions), a.seeds)["base"]
    out = ROOT / "bench/results/textnorm_ric.json"
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing["images"] = result
    out.write_text(json.dumps(existing, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
