"""The text-to-image demo recipe on this machine: the bundled shapes pipeline, one LoRA, the 11-point grid.

    python bench/bench_diffusion_demo.py [--recipe recipes/diffusion/demo.yaml] [--name diffusion_demo] [flags...]

Runs `ric run RECIPE` in an empty run directory (runs/<name>) and writes bench/results/<name>.json: the
wall-clock and stage seconds, the pre-training record of the cached base (`pretrain_stats.json`: its
seconds are the one-time cost of the first run), the rewards' Pearson on the training images,
preference-following, hypervolume against the base pipeline's point, the grid means; the image grid
and the front are copied to bench/results/<name>_grid.png and <name>_pareto.png. Extra flags go to
`ric run`. Run it alone on the machine.
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
RESULTS = ROOT / "bench/results"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/diffusion/demo.yaml")
    parser.add_argument("--name", default="diffusion_demo")
    a, extra = parser.parse_known_args()
    out = ROOT / "runs" / a.name
    shutil.rmtree(out, ignore_errors=True)
    start = time.time()
    cmd = [sys.executable, "-m", "ric", "run", a.recipe, "--output_dir", str(out), *extra]
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.time() - start

    from ric.diffusion.tiny import resolve_pipeline
    from ric.recipe import load_yaml

    recipe = load_yaml(out / "recipe.yaml")
    base = Path(resolve_pipeline(recipe["model_name_or_path"]))
    pretrain = base / "pretrain_stats.json"
    pareto = json.loads((out / "eval/pareto.json").read_text())
    prepare = json.loads((out / "data/prepare_stats.json").read_text())
    train = json.loads((out / "train_stats.json").read_text())
    compute = json.loads((out / "compute.json").read_text())
    result = {
        "command": " ".join(["ric", "run", a.recipe, *extra]),
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": __import__("os").cpu_count()},
        "wall_clock_seconds": round(wall, 1),
        "stage_seconds": {k: v["wall_seconds"] for k, v in compute["stages"].items()},
        "base_pretraining": (
            {k: v for k, v in json.loads(pretrain.read_text()).items() if not k.endswith("_loss")}
            if pretrain.exists()
            else None
        ),
        "rows": prepare["rows"],
        "pearson_on_training_images": prepare["pearson"][0][1],
        "train": {k: train.get(k) for k in ("global_step", "train_seconds", "lora_on", "example_caption")},
        "hypervolume": pareto["hypervolume"],
        "hypervolume_base": pareto["hypervolume_base"],
        "hypervolume_reference": pareto["hypervolume_reference"],
        "preference_following": pareto["preference_following"],
        "base": pareto["base"]["mean"] if pareto["base"] else None,
        "points": [
            {"preference": p["preference"], "targets": p.get("targets"), "mean": p["mean"]} for p in pareto["points"]
        ],
        "rewards": pareto["rewards"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.copy(out / "eval/image_grid.png", RESULTS / f"{a.name}_grid.png")
    shutil.copy(out / "eval/pareto.png", RESULTS / f"{a.name}_pareto.png")
    print(json.dumps({k: result[k] for k in ("wall_clock_seconds", "hypervolume", "hypervolume_base")}))
    print("preference-following:", result["preference_following"])


if __name__ == "__main__":
    main()
