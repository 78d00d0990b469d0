"""Wall-clock and results of the demo recipe on this machine; writes bench/results/demo.json and
copies the Pareto plot to bench/results/demo_pareto.png (the figure README shows).

    python bench/bench_demo.py [--output_dir runs/demo-bench] [extra ric run flags...]

The run starts from an empty run directory; the bundled model's safetensors cache is converted
first if it is missing, and that conversion is timed separately.
"""

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default=str(ROOT / "recipes/demo/ric.yaml"))
    parser.add_argument("--output_dir", default=str(ROOT / "runs/demo-bench"))
    parser.add_argument("--name", default="demo")
    a, extra = parser.parse_known_args()
    out = Path(a.output_dir)
    if out.exists():
        shutil.rmtree(out)

    t0 = time.time()
    from ric.models import bundled_model_path

    bundled_model_path()
    convert_seconds = time.time() - t0

    t0 = time.time()
    cmd = [sys.executable, "-m", "ric", "run", a.recipe, "--output_dir", str(out), *extra]
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.time() - t0

    pareto = json.loads((out / "eval/pareto.json").read_text())
    prepare = json.loads((out / "data/prepare_stats.json").read_text())
    train = json.loads((out / "train_stats.json").read_text())
    compute = json.loads((out / "compute.json").read_text())
    names = pareto["rewards"]
    result = {
        "command": " ".join(["ric", "run", str(Path(a.recipe).relative_to(ROOT)), *extra]),
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": __import__("os").cpu_count()},
        "wall_clock_seconds": round(wall, 1),
        "bundled_model_conversion_seconds": round(convert_seconds, 1),
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
        "num_prompts": pareto["num_prompts"],
        "rewards": names,
    }
    results = ROOT / "bench/results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{a.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.copy(out / "eval/pareto.png", results / f"{a.name}_pareto.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
