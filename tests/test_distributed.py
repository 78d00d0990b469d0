"""A real multi-process launch on CPU: `accelerate launch --num_processes 2` (gloo) runs prepare,
a few training steps and an evaluation whose gathered rows are exactly the evaluation set."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.multiprocess
def test_accelerate_launch_two_cpu_processes(tiny_recipe, tmp_path):
    recipe = yaml.safe_load(tiny_recipe.read_text())
    eval_prompts = [f"Held-out question number {i}?" for i in range(7)]  # odd: uneven shards
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in eval_prompts))
    recipe.update(
        eval_dataset_name=str(tmp_path / "eval.jsonl"),
        max_steps=2,
        per_device_train_batch_size=2,
        generation_batch_size=2,
        generation_chunk_size=3,
        num_responses_per_prompt=1,
    )
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "recipes/accelerate/cpu_2proc.yaml"),
        "-m",
        "ric",
        "run",
        str(tiny_recipe),
        "--eval_grid_divisions",
        "2",
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    run = Path(recipe["output_dir"])
    stats = json.loads((run / "train_stats.json").read_text())
    assert stats["global_step"] == 2
    pareto = json.loads((run / "eval/pareto.json").read_text())
    assert pareto["num_prompts"] == 7 and len(pareto["points"]) == 3
    for point in pareto["points"]:
        with open(run / "eval" / point["csv"]) as handle:
            prompts = [row["prompt"] for row in csv.DictReader(handle)]
        assert sorted(prompts) == sorted(eval_prompts), "every evaluation prompt exactly once per point"
    with open(run / "eval/base.csv") as handle:
        assert sorted(r["prompt"] for r in csv.DictReader(handle)) == sorted(eval_prompts)
    # the chunks were shared between the two processes and each written once
    grid = next((run / "eval/gen").glob("points-*"))
    rows = [json.loads(line) for p in sorted(grid.glob("chunk_*.jsonl")) for line in p.read_text().splitlines()]
    assert len(rows) == 3 * 7 and len({(r["point"], r["prompt"]) for r in rows}) == 21
    assert (run / "adapter/adapter_model.safetensors").exists()
    # the training rows and the evaluation were scored in shards too, each row once
    for folder in (run / "data/scores", next((run / "eval").glob("scores-*"))):
        scored = [
            json.loads(line) for p in sorted(folder.glob("chunk_*.jsonl")) for line in p.read_text().splitlines()
        ]
        assert scored and all(len(r["scores"]) == 2 for r in scored)
    assert len(scored) == 3 * 7 + 7
