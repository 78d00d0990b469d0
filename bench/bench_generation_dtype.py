"""Batched sampling in float32 against bfloat16 weights, and at several batch sizes: the online
iteration's generation on this CPU.

    python bench/bench_generation_dtype.py [--run runs/demo-seed0] [--prompts 256] [--repeats 2]
    python bench/bench_generation_dtype.py --dtypes float32 --batch_sizes 32,64,128,256 \
        --out bench/results/generation_batch.json

The run's adapter merged into the bundled base, loaded once per dtype, answers the same `--prompts`
training questions with score tags drawn as the online stage draws them (the recipe's temperature, top_p
and max_completion_length; its batch size unless `--batch_sizes` is given); the variants (dtype x batch
size) alternate `--repeats` times and each pass is timed. Reported: seconds per pass, tokens generated,
tokens/s. Run it alone on the machine. Writes --out (default bench/results/generation_dtype.json).
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs/demo-seed0"))
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batch_sizes", default="", help="comma-separated; default: the recipe's sampling_batch_size")
    parser.add_argument("--out", default=str(ROOT / "bench/results/generation_dtype.json"))
    a = parser.parse_args()

    import datasets

    from ric.config import cpu_flags
    from ric.generation import format_prompts, generate_batched, load_policy
    from ric.methods import parse_run
    from ric.online import sample_targets, target_range
    from ric.run_info import load_run_info

    run = Path(a.run)
    args = parse_run([], run / "recipe.yaml").configs[2]
    info, _ = load_run_info(run)
    questions = list(datasets.load_from_disk(str(run / "data/train"))["prompt"])
    questions = list(dict.fromkeys(questions))[: a.prompts]
    low, high = target_range(args, info)
    targets = sample_targets(len(questions), info.num_objectives, low, high, seed=0, method=args.online_goal_sampling)
    dtypes = a.dtypes.split(",")
    batch_sizes = [int(b) for b in a.batch_sizes.split(",") if b] or [args.sampling_batch_size]
    policies = {dtype: load_policy(info, run / "adapter", merge=True, dtype=dtype) for dtype in dtypes}
    variants = [(dtype, batch_size) for dtype in dtypes for batch_size in batch_sizes]
    passes = []
    for repeat in range(a.repeats):
        for dtype, batch_size in variants:
            model, tokenizer = policies[dtype]
            texts = format_prompts(questions, info.template, tokenizer, [list(t) for t in targets], info.system_prompt)
            start = time.perf_counter()
            out = generate_batched(
                model,
                tokenizer,
                texts,
                max_new_tokens=args.max_completion_length,
                temperature=args.temperature,
                top_p=args.top_p,
                batch_size=batch_size,
                seed=repeat,
                template=info.template,
                progress=False,
                trim_truncated=args.trim_truncated,
            )
            seconds = time.perf_counter() - start
            passes.append(
                {
                    "dtype": dtype,
                    "batch_size": batch_size,
                    "repeat": repeat,
                    "seconds": round(seconds, 2),
                    "generated_tokens": out.generated_tokens,
                    "tokens_per_second": round(out.generated_tokens / seconds, 1),
                }
            )
            print(passes[-1], flush=True)
    summary = {}
    for dtype, batch_size in variants:
        mine = [p for p in passes if (p["dtype"], p["batch_size"]) == (dtype, batch_size)]
        name = dtype if len(batch_sizes) == 1 else f"{dtype}@{batch_size}"
        summary[name] = {
            "seconds": [p["seconds"] for p in mine],
            "tokens_per_second": [p["tokens_per_second"] for p in mine],
        }
    result = {
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "cpu_bf16": sorted({"avx512_bf16", "amx_bf16"} & cpu_flags()),
        "run": a.run,
        "prompts": len(questions),
        "batch_sizes": batch_sizes,
        "max_new_tokens": args.max_completion_length,
        "passes": passes,
        "summary": summary,
    }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
