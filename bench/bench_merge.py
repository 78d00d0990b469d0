"""Generation with the LoRA adapter merged into the base weights against the unmerged PeftModel.

Same run, same prompts and targets, same seed, greedy decoding (so the two can be compared answer by
answer). Writes bench/results/merge.json.

    python bench/bench_merge.py [--run runs/demo-bench] [--num_prompts 40] [--max_new_tokens 32]
"""

import argparse
import json
import platform
import time
from pathlib import Path

from ric.generation import format_prompts, generate_batched, load_policy, merge_for_inference, resolve_adapter
from ric.run_info import load_run_info
from ric.rundir import write_json

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs/demo-bench"))
    parser.add_argument("--num_prompts", type=int, default=40)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "merge.json"))
    a = parser.parse_args()

    info, folder = load_run_info(a.run)
    adapter = resolve_adapter(folder, info)
    info, _ = load_run_info(adapter)
    lines = (ROOT / "recipes/demo/data/eval_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines][: a.num_prompts]
    targets = [[lo + (hi - lo) * k / 3 for lo, hi in zip(info.score_low, info.score_high)] for k in range(4)]
    model, tokenizer = load_policy(info, adapter, "cpu")
    texts = [
        t
        for tg in targets
        for t in format_prompts(prompts, info.template, tokenizer, [tg] * len(prompts), info.system_prompt)
    ]
    settings = dict(
        max_new_tokens=a.max_new_tokens,
        do_sample=False,
        template=info.template,
        batch_size=a.batch_size,
        progress=False,
    )

    def timed():
        start = time.time()
        out = generate_batched(model, tokenizer, texts, **settings)
        return out.texts, time.time() - start, {"generated_tokens": out.generated_tokens}

    unmerged, t_unmerged, s_unmerged = timed()
    merged_ok = merge_for_inference(model)
    merged, t_merged, s_merged = timed()
    same = sum(x == y for x, y in zip(unmerged, merged))
    result = {
        "what": "generation with the run's LoRA adapter unmerged (PeftModel) vs merged into the base weights",
        "run": str(Path(a.run).relative_to(ROOT)) if Path(a.run).is_relative_to(ROOT) else a.run,
        "lora_r": json.loads((adapter / "adapter_config.json").read_text())["r"],
        "machine": {"processor": platform.machine(), "cpus": __import__("os").cpu_count()},
        "sequences": len(texts),
        "max_new_tokens": a.max_new_tokens,
        "batch_size": a.batch_size,
        "decoding": "greedy",
        "merged": merged_ok,
        "seconds_unmerged": round(t_unmerged, 1),
        "seconds_merged": round(t_merged, 1),
        "speedup": round(t_unmerged / t_merged, 2),
        "generated_tokens": {
            "unmerged": s_unmerged.get("generated_tokens"),
            "merged": s_merged.get("generated_tokens"),
        },
        "identical_answers": same,
    }
    write_json(Path(a.out), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
