"""A real multi-process launch on CPU: two processes (`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2`,
accelerate's gloo process group) run prepare, a few training steps and an evaluation whose gathered
rows are exactly the evaluation set, each process doing its share of the generation and scoring.

(`accelerate launch` with a multi-CPU config starts a single process unless it is given an MPI host
file, so it cannot stand in for two processes here.)"""

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
        sampling_batch_size=2,
        generation_chunk_size=3,
        num_responses_per_prompt=1,
    )
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
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
    assert (grid / "written_by_rank0.jsonl").exists() and (grid / "written_by_rank1.jsonl").exists()
    rows = [json.loads(line) for p in sorted(grid.glob("chunk_*.jsonl")) for line in p.read_text().splitlines()]
    assert len(rows) == 3 * 7 and len({(r["point"], r["prompt"]) for r in rows}) == 21
    assert (run / "adapter/adapter_model.safetensors").exists()
    # the training rows and the evaluation were scored in shards too, each row once
    for folder in (run / "data/scores", next((run / "eval").glob("scores-*"))):
        scored = [
            json.loads(line) for p in sorted(folder.glob("chunk_*.jsonl")) for line in p.read_text().splitlines()
        ]
        assert scored and all(len(r["scores"]) == 2 for r in scored)
        # both processes scored: chunk i was written by process i mod 2, every chunk once
        written = {
            rank: [
                json.loads(line)["chunk"]
                for line in (folder / f"written_by_rank{rank}.jsonl").read_text().splitlines()
            ]
            for rank in (0, 1)
        }
        assert written[0] and written[1], f"{folder.name}: one process scored alone ({written})"
        assert all(i % 2 == rank for rank, chunks in written.items() for i in chunks)
        assert sorted(written[0] + written[1]) == list(range(len(list(folder.glob("chunk_*.jsonl")))))
        if folder.name == "scores":
            prepared = json.loads((run / "data/prepare_stats.json").read_text())
            assert len(scored) >= prepared["rows"], "every training row was scored"
    assert len(scored) == 3 * 7 + 7
