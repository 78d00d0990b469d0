"""Does a trained adapter read the conciseness tag where it matters: at the end of a first sentence?

For training rows whose short answer (one sentence) is the beginning of a longer answer to the same
question (one draw cut at two budgets), this measures log P(end-of-sequence | prompt with tags,
short answer) with the positivity tag kept at the row's own value and the conciseness tag set to
its low or its high end. A tag that is read moves the probability of stopping there.
Writes bench/results/end_probe.json (appends one entry per run directory).

    python bench/probe_end.py RUN_DIR [--adapter DIR] [--pairs 120]
"""

import argparse
import collections
import json
import statistics
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def probe(run_dir: Path, adapter: Path | None, pairs: int) -> dict:
    import datasets

    from ric.generation import format_prompts, load_policy, resolve_adapter
    from ric.ric_trainer import completion_text
    from ric.run_info import load_run_info

    info, folder = load_run_info(run_dir)
    adapter = adapter or resolve_adapter(folder, info)
    conc = info.rewards.index("conciseness")
    rows = datasets.load_from_disk(str(run_dir / "data/train")).to_list()
    by_prompt = collections.defaultdict(list)
    for r in rows:
        by_prompt[r["prompt"]].append(r)
    found = []
    for _prompt, group in by_prompt.items():
        for short in group:
            longer = [
                r
                for r in group
                if r is not short
                and r["response"] != short["response"]
                and r["response"].startswith(short["response"])
            ]
            if longer:
                found.append(short)
    found = found[:pairs]
    model, tok = load_policy(info, adapter, "cpu", merge=True)
    tok.padding_side = "right"
    eos = tok.eos_token_id
    logp = {}
    for end, value in (("low", info.score_low[conc]), ("high", info.score_high[conc])):
        out = []
        for i in range(0, len(found), 32):
            chunk = found[i : i + 32]
            targets = [[value if j == conc else s for j, s in enumerate(r["normalized_scores"])] for r in chunk]
            texts = format_prompts([r["prompt"] for r in chunk], info.template, tok, targets, info.system_prompt)
            full = [t + completion_text(r["response"], info.template) for t, r in zip(texts, chunk)]
            enc = tok(full, return_tensors="pt", padding=True)
            with torch.no_grad():
                logits = model(**enc).logits
            last = enc["attention_mask"].sum(1) - 1
            out += torch.log_softmax(logits[torch.arange(len(chunk)), last].float(), -1)[:, eos].tolist()
        logp[end] = out
    diff = [h - low for h, low in zip(logp["high"], logp["low"])]
    return {
        "run": str(run_dir),
        "adapter": str(adapter),
        "pairs": len(found),
        "p_end_low_conciseness_tag": round(statistics.mean(torch.tensor(logp["low"]).exp().tolist()), 3),
        "p_end_high_conciseness_tag": round(statistics.mean(torch.tensor(logp["high"]).exp().tolist()), 3),
        "mean_logp_gap_nats": round(statistics.mean(diff), 3),
        "share_of_pairs_more_likely_to_end_with_high_tag": round(sum(d > 0 for d in diff) / len(diff), 3),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--pairs", type=int, default=120)
    parser.add_argument("--out", default=str(ROOT / "bench/results/end_probe.json"))
    a = parser.parse_args()
    result = probe(Path(a.run_dir), Path(a.adapter) if a.adapter else None, a.pairs)
    out = Path(a.out)
    entries = json.loads(out.read_text()) if out.exists() else []
    entries = [e for e in entries if e["adapter"] != result["adapter"]] + [result]
    from ric.rundir import write_json

    write_json(out, entries)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
