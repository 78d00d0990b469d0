"""TextNorm's calibration where the ground truth is known: does a (prompt, answer) score say whether the answer
belongs to the prompt? Text half (the image half, TIA2's form with generated shapes, is not built yet).

    python bench/bench_textnorm.py [--run runs/demo] [--contrasts 8] [--scale 3] [--seed 0]

The demo's prepared rows (questions and the bundled model's answers). The questions are split in two halves
under the seed: for each question of the first half, its own answers are positives and the answers of three
other first-half questions negatives; TextNorm's contrastive prompts are the K nearest questions of the second
half (MiniLM cosine), so they are never the negatives' questions. Scores: `relevance` (MiniLM cosine of
question and answer) raw, and TextNorm of it. AUROC and AP per question (averaged) and pooled over every
question (what a reward needs to be comparable across prompts), with 95 % bootstrap intervals over questions.
Writes bench/results/textnorm_calibration.json (the `text` key; `images` stays null until that half is built).
"""

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def auroc(labels, scores) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    labels, scores = np.asarray(labels, bool), np.asarray(scores, float)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def average_precision(labels, scores) -> float:
    labels = np.asarray(labels, bool)[np.argsort(-np.asarray(scores, float), kind="stable")]
    hits = np.cumsum(labels)
    return float((hits[labels] / (np.flatnonzero(labels) + 1)).mean()) if labels.any() else float("nan")


def measures(groups: list[tuple[list[int], list[float]]], resamples: int = 1000, seed: int = 0) -> dict:
    """Per-question mean AUROC / AP and pooled AUROC / AP, each with a bootstrap interval over questions."""

    def compute(chosen):
        per_auc = [auroc(*groups[i]) for i in chosen]
        per_ap = [average_precision(*groups[i]) for i in chosen]
        labels = [x for i in chosen for x in groups[i][0]]
        scores = [x for i in chosen for x in groups[i][1]]
        return np.nanmean(per_auc), np.nanmean(per_ap), auroc(labels, scores), average_precision(labels, scores)

    point = compute(range(len(groups)))
    rng = np.random.default_rng(seed)
    draws = np.array([compute(rng.integers(0, len(groups), len(groups))) for _ in range(resamples)])
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    names = ("auroc", "ap", "pooled_auroc", "pooled_ap")
    return {
        **{n: round(float(v), 4) for n, v in zip(names, point)},
        **{f"{n}_ci": [round(float(a), 4), round(float(b), 4)] for n, a, b in zip(names, low, high)},
    }


def paired_difference(raw, normalised, seed: int = 0, resamples: int = 1000) -> dict:
    """TextNorm minus raw, per-question mean AUROC and pooled AUROC, the same questions drawn for both."""

    def both(groups, chosen):
        labels = [x for i in chosen for x in groups[i][0]]
        scores = [x for i in chosen for x in groups[i][1]]
        return np.nanmean([auroc(*groups[i]) for i in chosen]), auroc(labels, scores)

    rng = np.random.default_rng(seed + 7)
    draws = []
    for _ in range(resamples):
        chosen = rng.integers(0, len(raw), len(raw))
        draws.append(np.subtract(both(normalised, chosen), both(raw, chosen)))
    low, high = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
    point = np.subtract(both(normalised, range(len(raw))), both(raw, range(len(raw))))
    return {
        "auroc": round(float(point[0]), 4),
        "auroc_ci": [round(float(low[0]), 4), round(float(high[0]), 4)],
        "pooled_auroc": round(float(point[1]), 4),
        "pooled_auroc_ci": [round(float(low[1]), 4), round(float(high[1]), 4)],
    }


def main():
    import datasets

    from reward_models import get_reward
    from reward_models.contrasts import NearestPrompts

    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs/demo"))
    parser.add_argument("--contrasts", type=int, default=8)
    parser.add_argument("--scale", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench/results/textnorm_calibration.json"))
    a = parser.parse_args()
    rows = datasets.load_from_disk(str(Path(a.run) / "data" / "train"))
    answers: dict[str, list[str]] = {}
    for prompt, response in zip(rows["prompt"], rows["response"]):
        if response.strip():
            answers.setdefault(prompt, []).append(response)
    questions = sorted(answers)
    random.Random(a.seed).shuffle(questions)
    half = len(questions) // 2
    evaluated, pool = questions[:half], questions[half:]
    nearest = NearestPrompts(pool)
    contrasts = nearest(evaluated, a.contrasts)
    near_misses = NearestPrompts(evaluated)(evaluated, 3)  # the 3 closest other first-half questions
    relevance = get_reward("relevance")
    out_text = {}
    for kind in ("random", "nearest"):
        rng = random.Random(a.seed + 1)
        items = []  # (question index, answer, label)
        for i, question in enumerate(evaluated):
            for answer in answers[question][:4]:
                items.append((i, answer, 1))
            others = rng.sample([q for q in evaluated if q != question], 3) if kind == "random" else near_misses[i]
            for other in others:
                items.append((i, rng.choice(answers[other]), 0))
        out_text[kind] = calibrate(items, evaluated, contrasts, relevance, a)
    path = Path(a.out)
    out = json.loads(path.read_text()) if path.exists() else {"images": None}
    out["text"] = out_text["random"]
    out["text_near_misses"] = out_text["nearest"]
    out.setdefault("images", None)
    if out["images"] is None:
        out["images_note"] = (
            "not measured yet: the shapes pipeline's generated images and a caption scorer trained on "
            "procedural renders are still to be built"
        )
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out_text, indent=2))


def calibrate(items, evaluated, contrasts, relevance, a) -> dict:
    from reward_models import textnorm_probabilities

    prompts, responses = [], []
    for i, answer, _ in items:
        prompts += [evaluated[i], *contrasts[i]]
        responses += [answer] * (1 + a.contrasts)
    scores = np.asarray(relevance(prompts, responses, progress=True)).reshape(len(items), 1 + a.contrasts)
    raw = scores[:, 0]
    normalised = textnorm_probabilities(scores, a.scale)
    groups_raw, groups_tn = {}, {}
    for (i, _, label), r, t in zip(items, raw, normalised):
        groups_raw.setdefault(i, ([], []))
        groups_tn.setdefault(i, ([], []))
        groups_raw[i][0].append(label)
        groups_raw[i][1].append(float(r))
        groups_tn[i][0].append(label)
        groups_tn[i][1].append(float(t))
    text = {
        "what": "answers to their own demo question (positives) against answers to other questions (negatives: "
        "3 random other questions, or in text_near_misses the 3 nearest); relevance raw and TextNorm of it; "
        "contrasts: the K nearest questions of a disjoint half",
        "questions": len(evaluated),
        "pairs": len(items),
        "positives": sum(label for *_, label in items),
        "contrasts": a.contrasts,
        "scale": a.scale,
        "seed": a.seed,
        "raw": measures(list(groups_raw.values()), seed=a.seed),
        "textnorm": measures(list(groups_tn.values()), seed=a.seed),
    }
    text["textnorm_minus_raw"] = paired_difference(list(groups_raw.values()), list(groups_tn.values()), a.seed)
    return text


if __name__ == "__main__":
    main()
