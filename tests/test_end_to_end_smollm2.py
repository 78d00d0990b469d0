"""End to end on the real bundled SmolLM2-135M-Instruct at tiny sizes: prompts only -> sampled
responses -> scores -> LoRA SFT -> Pareto evaluation -> generation with a preference."""

import csv
import json

import numpy as np
import yaml

from ric.cli import main
from ric.models import BUNDLED_MODEL


def test_bundled_smollm2_prepare_train_evaluate_generate(tmp_path, capsys):
    prompts = ["How do I brew green tea?", "Give me a tip for sleeping well.", "What is a good name for a cat?"]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    held_out = ["How can I stay focused while studying?", "Do you like rainy days?", "What should I cook tonight?"]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in held_out))
    recipe = {
        "model_name_or_path": BUNDLED_MODEL,
        "dataset_name": str(tmp_path / "train.jsonl"),
        "eval_dataset_name": str(tmp_path / "eval.jsonl"),
        "num_responses_per_prompt": 2,
        "rewards": ["positivity", "relevance"],
        "template": "chat",
        "output_dir": str(tmp_path / "run"),
        "max_completion_length": 8,
        "sampling_batch_size": 6,
        "max_steps": 2,
        "per_device_train_batch_size": 3,
        "learning_rate": 0.001,
        "lora_r": 8,
        "lora_alpha": 16,
        "logging_steps": 1,
        "max_length": 128,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--eval_grid_divisions", "2"]) == 0
    run = tmp_path / "run"
    prepared = json.loads((run / "data/prepare_stats.json").read_text())
    assert prepared["rows"] == 6 and prepared["source"].startswith("sampled from")
    assert prepared["pearson"] is not None
    stats = json.loads((run / "train_stats.json").read_text())
    assert stats["global_step"] == 2 and all(e["loss"] > 0 for e in stats["log_history"] if "loss" in e)
    pareto = json.loads((run / "eval/pareto.json").read_text())
    assert [p["preference"] for p in pareto["points"]] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    for p in pareto["points"]:
        assert -1 <= p["mean"]["positivity"] <= 1 and -1 <= p["mean"]["relevance"] <= 1
    # the objectives' correlation on the base model's own answers, from the rows in base.csv
    with open(run / "eval/base.csv", newline="") as handle:
        base = list(csv.DictReader(handle))
    assert len(base) == 3
    expected = np.corrcoef(
        [float(r["obtained_positivity"]) for r in base], [float(r["obtained_relevance"]) for r in base]
    )
    got = np.array(pareto["base"]["pearson"], dtype=float)  # null (constant scores) reads as nan
    assert np.allclose(got, expected, atol=1e-3, equal_nan=True)
    capsys.readouterr()
    assert (
        main(["generate", str(run), "--preference", "0.2,0.8", "How do I brew green tea?", "--max_new_tokens", "8"])
        == 0
    )
    out = capsys.readouterr()
    assert out.out.strip(), "a response is printed"
    assert "targets: positivity=" in out.err
