"""Online augmentation on the positivity/relevance demo task: the front after 0, 1 and 2 online iterations.

Starts from a finished run (offline stage done; default runs/demo-relevance-bench, written by
`python bench/bench_demo.py --recipe recipes/demo/ric_relevance.yaml --output_dir runs/demo-relevance-bench`),
copies it, runs the online iterations with CPU-sized settings, and evaluates the adapter of each
iteration on the same held-out prompts. Writes bench/results/online.json.

    python bench/bench_online.py [--from_run runs/demo-relevance-bench] [extra ric run flags...]
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = [
    "--online_num_generations",
    "256",
    "--generation_chunk_size",
    "64",
    "--online_max_steps",
    "30",
    "--online_learning_rate",
    "0.0005",
    "--online_num_origin_samples",
    "200",
    "--online_target_range",
    "data",
]


def ric(*args):
    subprocess.run([sys.executable, "-m", "ric", *args], check=True, cwd=ROOT)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--from_run", default=str(ROOT / "runs/demo-relevance-bench"))
    parser.add_argument("--output_dir", default=str(ROOT / "runs/demo-online"))
    a, extra = parser.parse_known_args()
    src, out = Path(a.from_run), Path(a.output_dir)
    if not (src / "eval/pareto.json").exists():
        raise SystemExit(f"{src} has no evaluated offline run: run bench/bench_demo.py first")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    flags = [*DEFAULTS, *extra]
    results = {"iterations": []}
    offline = json.loads((out / "eval/pareto.json").read_text())
    results["iterations"].append(
        {
            "iteration": 0,
            "hypervolume": offline["hypervolume"],
            "preference_following": offline["preference_following"],
            "means": [p["mean"] for p in offline["points"]],
        }
    )
    for k in (1, 2):
        t0 = time.time()
        ric("run", str(out / "recipe.yaml"), "--output_dir", str(out), "--num_online_iterations", str(k), *flags)
        wall = time.time() - t0
        ric(
            "evaluate",
            str(out),
            "--adapter",
            str(out / f"adapter_online_{k}"),
            "--eval_dir",
            str(out / f"eval_online_{k}"),
        )
        pareto = json.loads((out / f"eval_online_{k}/pareto.json").read_text())
        stats = json.loads((out / f"online/iter_{k}/stats.json").read_text())
        results["iterations"].append(
            {
                "iteration": k,
                "hypervolume": pareto["hypervolume"],
                "preference_following": pareto["preference_following"],
                "means": [p["mean"] for p in pareto["points"]],
                "generated": stats["generated"],
                "kept": stats["kept"],
                "dropped": stats["dropped"],
                "origin_kept": stats["origin_kept"],
                "training_rows": stats["training_rows"],
                "stage_seconds": json.loads((out / "compute.json").read_text())["stages"][f"online_{k}"],
                "wall_seconds_including_final_evaluation": round(wall, 1),
            }
        )
    results["reference"] = offline["hypervolume_reference"]
    results["flags"] = flags
    (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/results/online.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
