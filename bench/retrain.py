"""Train and evaluate again on a finished run's prepared rows, with other training settings.

    python bench/retrain.py runs/demo-seed1 runs/demo-seed1-constant --lr_scheduler_type constant [...]

Copies the source run's data/ (the sampled, scored rows) and recipe into a new run directory, marks
its prepare stage done, and runs `ric run` there with the given overrides: the training and the
evaluation run again, the rows stay the same. Prints the new front's figures.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    source, target, *overrides = sys.argv[1:]
    source, target = Path(source), Path(target)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copytree(source / "data", target / "data")
    shutil.copy(source / "recipe.yaml", target / "recipe.yaml")
    state = json.loads((source / "run_state.json").read_text())
    (target / "run_state.json").write_text(json.dumps({"stages": {"prepare": state["stages"]["prepare"]}}))
    cmd = [sys.executable, "-m", "ric", "run", str(target / "recipe.yaml"), "--output_dir", str(target), *overrides]
    subprocess.run(cmd, check=True, cwd=ROOT)
    pareto = json.loads((target / "eval/pareto.json").read_text())
    summary = {
        "run": str(target),
        "overrides": overrides,
        "hypervolume": pareto["hypervolume"],
        "hypervolume_base": pareto["hypervolume_base"],
        "preference_following": pareto["preference_following"],
        "means": [[round(p["mean"][n], 3) for n in pareto["rewards"]] for p in pareto["points"]],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
