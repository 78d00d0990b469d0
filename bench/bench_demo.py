"""The demo recipe from scratch on this machine: wall-clock, stages, front, preference-following.

    python bench/bench_demo.py [--seeds 0,1,2] [--recipe recipes/demo/ric.yaml] [--name demo] [extra ric run flags...]
    python bench/bench_demo.py --seeds 0,1,2 --name demo --summarize   (the summary of runs already made)
    python bench/bench_demo.py --seeds 0,1,2 --eval_seeds 101,102   (each seed's run evaluated again, sampling with
        other seeds: how much the figures move from the evaluation's sampling alone; demo_eval_seeds.json)
    python bench/bench_demo.py --seeds 0,1,2 --summarize --reference demo_reference_old_seed0
        (and the wall-clock of each seed against a reference run timed in the same session, e.g. the earlier
        offline-only demo run from a worktree of its commit with --name demo_reference_old)

Each seed runs `ric run RECIPE --seed S` in its own empty run directory (runs/<name>-seed<S>) and
writes bench/results/<name>_seed<S>.json; with several seeds, bench/results/<name>_seeds.json holds
the per-seed figures with their min / median, and the plot of the first seed is copied to
bench/results/<name>_pareto.png. The bundled model's safetensors cache is converted first if it is
missing, and that conversion is timed separately. Run it alone on the machine: the wall-clock
figures are only worth something then.
"""

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results"
APART = ROOT / "recipes/demo/data/apart_prompts.jsonl"


def apart(out: Path, seed: int) -> dict:
    """The run's adapter on questions written apart from the demo's data (other topics and phrasings): mean
    positivity and word count at w = (1, 0) and (0, 1) and of the base model, the gap with a 95 % bootstrap
    interval over questions."""
    import numpy as np

    from reward_models import get_reward
    from ric.inference import RiCGenerator

    questions = [json.loads(line)["prompt"] for line in APART.read_text().splitlines() if line.strip()]
    generator = RiCGenerator.from_run(out)
    answers = {"base": generator.generate_base(questions, seed=seed)}
    generator.prepare_points()
    for name, weights in (("w1_1", [1.0, 0.0]), ("w1_0", [0.0, 1.0])):
        answers[name] = [r["response"] for r in generator.generate(questions, preference=weights, seed=seed)]
    positivity = get_reward("positivity")
    scores = {k: np.array(positivity(questions, v)) for k, v in answers.items()}
    words = {k: np.array([len(a.split()) for a in v]) for k, v in answers.items()}
    gap = scores["w1_1"] - scores["w1_0"]
    rng = np.random.default_rng(seed)
    draws = [gap[rng.integers(0, len(gap), len(gap))].mean() for _ in range(1000)]
    return {
        "questions": len(questions),
        **{
            k: {"positivity": round(float(scores[k].mean()), 4), "words": round(float(words[k].mean()), 2)}
            for k in answers
        },
        "positivity_gap": round(float(gap.mean()), 4),
        "positivity_gap_ci": [round(float(x), 4) for x in np.percentile(draws, [2.5, 97.5])],
        "examples": {k: v[:3] for k, v in answers.items()},
    }


def upbeat_end(out: Path, seed: int, eval_dir: str = "eval") -> dict:
    """The grid's w1 = 1 point against the base model on the same held-out questions: mean positivity of each,
    their difference and its 95 % bootstrap interval over the questions (paired: the same questions); from the
    evaluation in `out / eval_dir`."""
    import csv

    import numpy as np

    pareto = json.loads((out / eval_dir / "pareto.json").read_text())
    reward = pareto["rewards"][0]

    def column(name):
        with open(out / eval_dir / name, newline="", encoding="utf-8") as f:
            return np.array([float(row[f"obtained_{reward}"]) for row in csv.DictReader(f)])

    end, base = column(pareto["points"][-1]["csv"]), column("base.csv")
    gap = end - base
    rng = np.random.default_rng(seed)
    draws = [gap[rng.integers(0, len(gap), len(gap))].mean() for _ in range(1000)]
    return {
        "preference": pareto["points"][-1]["preference"],
        reward: round(float(end.mean()), 4),
        f"base_{reward}": round(float(base.mean()), 4),
        "difference": round(float(gap.mean()), 4),
        "difference_ci": [round(float(x), 4) for x in np.percentile(draws, [2.5, 97.5])],
        "hypervolume_ci": pareto.get("hypervolume_ci"),
        "hypervolume_base_ci": pareto.get("hypervolume_base_ci"),
        "preference_following_ci": pareto.get("preference_following_ci"),
    }


def run_seed(recipe: str, seed: int, out: Path, extra: list[str]) -> dict:
    if out.exists():
        shutil.rmtree(out)
    t0 = time.time()
    cmd = [sys.executable, "-m", "ric", "run", recipe, "--output_dir", str(out), "--seed", str(seed), *extra]
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.time() - t0
    pareto = json.loads((out / "eval/pareto.json").read_text())
    prepare = json.loads((out / "data/prepare_stats.json").read_text())
    train = json.loads((out / "train_stats.json").read_text())
    compute = json.loads((out / "compute.json").read_text())
    return {
        "command": " ".join(["ric", "run", str(Path(recipe).relative_to(ROOT)), "--seed", str(seed), *extra]),
        "seed": seed,
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": __import__("os").cpu_count()},
        "wall_clock_seconds": round(wall, 1),
        "stage_seconds": {k: v["wall_seconds"] for k, v in compute["stages"].items()},
        "compute": compute,
        "prepare": {k: prepare[k] for k in ("rows", "source", "dropped", "pearson", "raw_mean", "raw_std")},
        "train": {k: train[k] for k in ("global_step", "train_seconds", "train_loss", "rows")},
        "hypervolume": pareto["hypervolume"],
        "hypervolume_base": pareto["hypervolume_base"],
        "hypervolume_reference": pareto["hypervolume_reference"],
        "preference_following": pareto["preference_following"],
        "points": [
            {"preference": p["preference"], "targets": p["targets"], "mean": p["mean"]} for p in pareto["points"]
        ],
        "base": pareto["base"]["mean"] if pareto["base"] else None,
        "base_pearson": pareto["base"]["pearson"] if pareto["base"] else None,
        "num_prompts": pareto["num_prompts"],
        "rewards": pareto["rewards"],
    }


def eval_seeds(name: str, seeds: list[int], eval_seeds: list[int]) -> dict:
    """Each seed's finished run (`runs/<name>-seed<S>`) evaluated again with the recipe's grid and questions, only the
    sampling seed changed (`ric evaluate RUN --seed E`, written to RUN/eval-seed<E>): the adapter is the same, so
    the spread over these evaluations is what the evaluation's sampling alone moves."""
    rows = []
    for seed in seeds:
        run = ROOT / f"runs/{name}-seed{seed}"
        for e in [None, *eval_seeds]:
            out = run / ("eval" if e is None else f"eval-seed{e}")
            if e is not None and not (out / "pareto.json").exists():
                cmd = [sys.executable, "-m", "ric", "evaluate", str(run), "--seed", str(e), "--eval_dir", str(out)]
                subprocess.run(cmd, check=True, cwd=ROOT)
            pareto = json.loads((out / "pareto.json").read_text())
            end = upbeat_end(run, seed, out.name)
            rows.append(
                {
                    "seed": seed,
                    "eval_seed": seed if e is None else e,
                    "preference_following": pareto["preference_following"],
                    "hypervolume_over_base": round(pareto["hypervolume"] / pareto["hypervolume_base"], 3),
                    f"{pareto['rewards'][0]}_at_w1_1_minus_base": end["difference"],
                    "difference_ci": end["difference_ci"],
                }
            )
    following = [min(r["preference_following"].values()) for r in rows]
    return {
        "what": "each training seed's adapter evaluated with its own sampling seed and with others; nothing retrained",
        "evaluations": rows,
        "following_at_least_0.85": f"{sum(f >= 0.85 for f in following)} of {len(rows)}",
    }


def summary(per_seed: list[dict], reference: dict | None = None) -> dict:
    names = per_seed[0]["rewards"]
    timing = {}
    if reference is not None:
        ref = reference["wall_clock_seconds"]
        timing = {
            "reference": {"command": reference["command"], "wall_clock_seconds": ref},
            "wall_clock_over_reference": {str(r["seed"]): round(r["wall_clock_seconds"] / ref, 3) for r in per_seed},
        }

    def stats(values):
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    return {
        "seeds": [r["seed"] for r in per_seed],
        "preference_following": {n: stats([r["preference_following"][n] for r in per_seed]) for n in names},
        "hypervolume": stats([r["hypervolume"] for r in per_seed]),
        "hypervolume_over_base": stats([r["hypervolume"] / r["hypervolume_base"] for r in per_seed]),
        "wall_clock_seconds": stats([r["wall_clock_seconds"] for r in per_seed]),
        **timing,
        "all_following_at_least_0.8": sum(all(v >= 0.8 for v in r["preference_following"].values()) for r in per_seed),
        "per_seed": [
            {
                k: r[k]
                for k in (
                    "seed",
                    "wall_clock_seconds",
                    "stage_seconds",
                    "hypervolume",
                    "hypervolume_base",
                    "preference_following",
                    "checks",
                    "upbeat_end",
                )
                if k in r
            }
            | ({"apart": {k: v for k, v in r["apart"].items() if k != "examples"}} if "apart" in r else {})
            for r in per_seed
        ],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default=str(ROOT / "recipes/demo/ric.yaml"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--name", default="demo")
    parser.add_argument(
        "--summarize", action="store_true", help="run nothing: summarise the per-seed files already written"
    )
    parser.add_argument(
        "--reference",
        help="with --summarize: a result file in bench/results (name without .json) of a reference run timed in "
        "the same session; the summary gives each seed's wall-clock over it",
    )
    parser.add_argument(
        "--eval_seeds",
        help="run no training: evaluate each seed's finished run again with these sampling seeds (comma-separated)",
    )
    a, extra = parser.parse_known_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.eval_seeds:
        result = eval_seeds(a.name, seeds, [int(s) for s in a.eval_seeds.split(",")])
        (RESULTS / f"{a.name}_eval_seeds.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return
    if a.summarize:
        per_seed = [json.loads((RESULTS / f"{a.name}_seed{s}.json").read_text()) for s in seeds]
        for s, result in zip(seeds, per_seed):  # intervals read back from the run directories, where they are kept
            if (ROOT / f"runs/{a.name}-seed{s}/eval/base.csv").exists():
                result["upbeat_end"] = upbeat_end(ROOT / f"runs/{a.name}-seed{s}", s)
                (RESULTS / f"{a.name}_seed{s}.json").write_text(json.dumps(result, indent=2) + "\n")
        reference = json.loads((RESULTS / f"{a.reference}.json").read_text()) if a.reference else None
        summed = summary(per_seed, reference)
        (RESULTS / f"{a.name}_seeds.json").write_text(json.dumps(summed, indent=2) + "\n")
        print(json.dumps(summed, indent=2))
        return
    t0 = time.time()
    from ric.models import bundled_model_path

    bundled_model_path()
    convert_seconds = round(time.time() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    per_seed = []
    for seed in seeds:
        out = ROOT / f"runs/{a.name}-seed{seed}"
        result = {**run_seed(a.recipe, seed, out, extra), "bundled_model_conversion_seconds": convert_seconds}
        result["apart"] = apart(out, seed)
        result["upbeat_end"] = upbeat_end(out, seed)
        first, base = result["points"][-1]["mean"], result["base"]
        result["checks"] = {
            "following_at_least_0.85": all(v >= 0.85 for v in result["preference_following"].values()),
            "hypervolume_over_base": round(result["hypervolume"] / result["hypervolume_base"], 3),
            "positivity_at_w1_1_above_base": bool(base and first[result["rewards"][0]] > base[result["rewards"][0]]),
            "apart_gap_at_least_0.3": result["apart"]["positivity_gap"] >= 0.3,
        }
        (RESULTS / f"{a.name}_seed{seed}.json").write_text(json.dumps(result, indent=2) + "\n")
        if not per_seed:
            shutil.copy(out / "eval/pareto.png", RESULTS / f"{a.name}_pareto.png")
        per_seed.append(result)
        print(
            json.dumps(
                {
                    k: result[k]
                    for k in ("seed", "wall_clock_seconds", "hypervolume", "hypervolume_base", "preference_following")
                }
            ),
            flush=True,
        )
    if len(per_seed) > 1:
        (RESULTS / f"{a.name}_seeds.json").write_text(json.dumps(summary(per_seed), indent=2) + "\n")
        print(json.dumps(summary(per_seed), indent=2))


if __name__ == "__main__":
    main()
