"""RiC with TextNorm: the demo's positivity / relevance task trained with relevance raw and with relevance
normalised by TextNorm, all else equal, each front scored in both units, plus an on-topic measure no reward
was trained on.

    ric run recipes/demo/ric_relevance.yaml; ric run recipes/demo/ric_relevance_textnorm.yaml
    python bench/bench_textnorm_ric.py

For each run's evaluated grid (11 preferences x the 40 held-out questions) and the base model's answers:
positivity (VADER), relevance raw (MiniLM cosine), relevance TextNorm (the recipe's: 8 nearest training
questions, c = 3), and on-topic: the share of answers whose own question a BM25 retriever over the 40
held-out questions ranks first. Following (Spearman of the weight on the reward against its mean) and
hypervolume in each unit, the reference point for a unit shared by both runs (the base model's mean minus
3 std per reward), with 95 % bootstrap intervals over questions. Writes bench/results/textnorm_ric.json.
"""

import csv
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = {"raw": ROOT / "runs/demo-relevance", "textnorm": ROOT / "runs/demo-relevance-textnorm"}
TOKEN = __import__("re").compile(r"[a-z0-9']+")


def read_rows(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def bm25_first(questions: list[str], prompts: list[str], answers: list[str], k1=1.5, b=0.75) -> list[bool]:
    """Whether each answer's own question is the BM25 top hit among `questions` (ties: not first)."""
    docs = [TOKEN.findall(q.lower()) for q in questions]
    avg = sum(map(len, docs)) / len(docs)
    df = Counter(t for d in docs for t in set(d))
    idf = {t: math.log(1 + (len(docs) - n + 0.5) / (n + 0.5)) for t, n in df.items()}
    counts = [Counter(d) for d in docs]
    out = []
    for prompt, answer in zip(prompts, answers):
        terms = TOKEN.findall(answer.lower())
        scores = [
            sum(idf.get(t, 0) * c[t] * (k1 + 1) / (c[t] + k1 * (1 - b + b * len(d) / avg)) for t in terms if t in c)
            for c, d in zip(counts, docs)
        ]
        own = questions.index(prompt)
        out.append(scores[own] > 0 and all(scores[own] > s for j, s in enumerate(scores) if j != own))
    return out


def main():
    from reward_models import get_reward
    from ric.pareto import hypervolume, preference_following

    positivity = get_reward("positivity")
    relevance = get_reward("relevance")
    declared = {
        "relevance": {
            "type": "textnorm",
            "scale": 3,
            "contrasts": 8,
            "source": "dataset",
            "path": str(ROOT / "recipes/demo/data/train_prompts.jsonl"),
        }
    }
    textnorm = get_reward("relevance", declared)
    questions = [
        json.loads(x)["prompt"] for x in (ROOT / "recipes/demo/data/eval_prompts.jsonl").read_text().splitlines()
    ]

    def score(rows):
        prompts, answers = [r["prompt"] for r in rows], [r["response"] for r in rows]
        return {
            "positivity": np.array(positivity(prompts, answers)),
            "relevance_raw": np.array(relevance(prompts, answers)),
            "relevance_textnorm": np.array(textnorm(prompts, answers)),
            "on_topic": np.array(bm25_first(questions, prompts, answers), dtype=float),
            "prompts": prompts,
        }

    base = score(read_rows(RUNS["raw"] / "eval" / "base.csv"))
    units = ("relevance_raw", "relevance_textnorm")
    reference = {
        u: [float(base["positivity"].mean() - 3 * base["positivity"].std()), float(base[u].mean() - 3 * base[u].std())]
        for u in units
    }
    result = {"runs": {k: str(v.relative_to(ROOT)) for k, v in RUNS.items()}, "reference": reference, "base": {}}
    result["base"] = {k: round(float(v.mean()), 4) for k, v in base.items() if k != "prompts"}
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, len(questions), len(questions)) for _ in range(1000)]
    for name, run in RUNS.items():
        pareto = json.loads((run / "eval" / "pareto.json").read_text())
        weights = [p["preference"] for p in pareto["points"]]
        points = [score(read_rows(run / "eval" / "points" / f"point_{k:02d}.csv")) for k in range(len(weights))]
        order = [[p["prompts"].index(q) for q in questions] for p in points]  # rows by question, per point
        table = {
            key: np.array([p[key][o] for p, o in zip(points, order)])  # points x questions
            for key in ("positivity", "relevance_raw", "relevance_textnorm", "on_topic")
        }
        entry = {}
        for unit in units:
            pair = np.stack([table["positivity"], table[unit]], axis=-1)  # points x questions x 2

            def summary(index, pair=pair, ref=reference[unit], weights=weights):
                means = pair[:, index].mean(axis=1)
                return hypervolume(means, ref), preference_following(weights, means)

            hv, follow = summary(np.arange(len(questions)))
            boot = [summary(i) for i in draws]
            hvs = np.array([x[0] for x in boot])
            fol = np.array([x[1] for x in boot], dtype=float)
            entry[unit] = {
                "hypervolume": round(float(hv), 4),
                "hypervolume_ci": [round(float(x), 4) for x in np.percentile(hvs, [2.5, 97.5])],
                "following": [round(float(x), 3) for x in follow],
                "following_ci": [
                    [round(float(x), 3) for x in np.nanpercentile(fol[:, j], [2.5, 97.5])] for j in range(2)
                ],
                "means_w1_0_to_1": [round(float(x), 3) for x in pair.mean(axis=1)[:, 1]],
            }
        entry["on_topic_share_w1_0_to_1"] = [round(float(x), 3) for x in table["on_topic"].mean(axis=1)]
        entry["on_topic_share"] = round(float(table["on_topic"].mean()), 3)
        entry["positivity_w1_0_to_1"] = [round(float(x), 3) for x in table["positivity"].mean(axis=1)]
        entry["trained_with"] = name
        result[name] = entry
    out = ROOT / "bench/results/textnorm_ric.json"
    kept = {k: v for k, v in json.loads(out.read_text()).items() if k == "images"} if out.exists() else {}
    out.write_text(json.dumps({**result, **kept}, indent=2) + "\n")  # the text-to-image half is its own script
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
