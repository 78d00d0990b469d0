"""Does a trained adapter read its score tags? Two checks, JSON to bench/results/tag_probe.json.

1. tag use: mean completion loss (nats/token) of training rows under their own score tags and
   under tags shuffled between rows; a model that conditions on the tags shows a gap.
2. synthetic control: 200 rows whose response is fixed by the sign of the first tag
   ("I love it! Wonderful!" vs "That is awful and sad."), 25 LoRA steps on the bundled SmolLM2,
   then generation on 16 unseen prompts with tag +1.5 and -1.5: can the pipeline learn a tag at all?

    python bench/probe_tags.py --run_dir runs/demo-bench
"""

import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def tag_use(run_dir: Path, rows: int = 48) -> dict:
    import datasets

    from ric.generation import load_policy, resolve_adapter
    from ric.run_info import load_run_info
    from ric.score_tags import add_score_tags

    info, folder = load_run_info(run_dir)
    adapter = resolve_adapter(folder, info)
    model, tok = load_policy(info, adapter, "cpu", merge=True)
    data = datasets.load_from_disk(str(run_dir / "data/train"))
    rng = np.random.default_rng(0)

    def nll(prompt, response):
        p = tok(prompt, return_tensors="pt").input_ids
        r = tok(response + tok.eos_token, return_tensors="pt", add_special_tokens=False).input_ids
        ids = torch.cat([p, r], 1)
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        target = ids[0, 1:]
        return -logp[torch.arange(len(target)), target][p.shape[1] - 1 :].mean().item()

    own, shuffled = [], []
    for i in rng.choice(len(data), rows, replace=False):
        row, other = data[int(i)], data[int(rng.integers(len(data)))]
        own.append(
            nll(
                add_score_tags(row["prompt"], row["normalized_scores"], info.template, tok, info.system_prompt),
                row["response"],
            )
        )
        shuffled.append(
            nll(
                add_score_tags(row["prompt"], other["normalized_scores"], info.template, tok, info.system_prompt),
                row["response"],
            )
        )
    return {
        "rows": rows,
        "loss_own_tags": float(np.mean(own)),
        "loss_shuffled_tags": float(np.mean(shuffled)),
        "gap_nats_per_token": float(np.mean(shuffled) - np.mean(own)),
    }


def synthetic(steps: int = 25) -> dict:
    import datasets

    from ric.generation import format_prompts, generate_batched
    from ric.methods import parse_run
    from ric.models import BUNDLED_MODEL, load_causal_lm, load_tokenizer
    from ric.ric_trainer import train_adapter

    random.seed(0)
    prompts = [
        json.loads(line)["prompt"]
        for line in (ROOT / "recipes/demo/data/train_prompts.jsonl").read_text().splitlines()
    ]
    rows = {"prompt": [], "response": [], "normalized_scores": []}
    for p in prompts[:200]:
        s = round(random.uniform(-2, 2), 1)
        rows["prompt"].append(p)
        rows["normalized_scores"].append([s, 0.0])
        rows["response"].append("I love it! Wonderful!" if s > 0 else "That is awful and sad.")
    tok = load_tokenizer(BUNDLED_MODEL, padding_side="right")
    with tempfile.TemporaryDirectory() as tmp:
        model_args, _, args, _ = parse_run(
            [
                "--config",
                str(ROOT / "recipes/demo/ric.yaml"),
                "--output_dir",
                tmp,
                "--max_steps",
                str(steps),
                "--logging_steps",
                "5",
            ],
            None,
        ).configs
        trainer, _ = train_adapter(
            load_causal_lm(BUNDLED_MODEL, device="cpu"),
            tok,
            datasets.Dataset.from_dict(rows),
            args,
            model_args,
            Path(tmp) / "ckpt",
        )
    heldout = prompts[200:216]
    result = {"steps": steps}
    for s in (-1.5, 1.5):
        out = generate_batched(
            trainer.model,
            tok,
            format_prompts(heldout, "chat", tok, [[s, 0.0]] * len(heldout)),
            max_new_tokens=10,
            batch_size=16,
            progress=False,
        ).texts
        result[f"tag_{s:+.1f}"] = {
            "love": sum("love" in o for o in out),
            "awful": sum("awful" in o for o in out),
            "n": len(out),
        }
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run_dir", default=str(ROOT / "runs/demo-bench"))
    a = parser.parse_args()
    result = {"run_dir": a.run_dir, "tag_use": tag_use(Path(a.run_dir)), "synthetic": synthetic()}
    from ric.rundir import write_json

    write_json(ROOT / "bench/results/tag_probe.json", result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
