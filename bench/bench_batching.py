"""Batched generation and scoring against the original code's one-sample-at-a-time loop.

Same model (the bundled SmolLM2-135M-Instruct), same prompts, same number of outputs and the same
sampling settings; only the batching differs. Writes bench/results/batching.json.

    python bench/bench_batching.py [--num_prompts 64] [--max_new_tokens 48] [--batch_size 64]
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from reward_models import load_rewards
from ric.generation import GenerationTally, format_prompts, generate_batched
from ric.models import BUNDLED_MODEL, load_causal_lm, load_tokenizer
from ric.rundir import write_json

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_prompts", type=int, default=64)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rewards", default="positivity,relevance")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "batching.json"))
    a = parser.parse_args()

    lines = (ROOT / "recipes/demo/data/train_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines][: a.num_prompts]
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    model = load_causal_lm(BUNDLED_MODEL, dtype="float32", device="cpu")
    texts = format_prompts(prompts, "chat", tokenizer)
    settings = dict(max_new_tokens=a.max_new_tokens, temperature=0.7, top_p=0.9, template="chat", progress=False)

    generate_batched(model, tokenizer, texts[:2], batch_size=2, seed=0, **settings)  # warm-up
    t0 = time.perf_counter()
    loop_tally = GenerationTally()
    loop_out = [
        loop_tally.add(generate_batched(model, tokenizer, [t], batch_size=1, seed=i, **settings)).texts[0]
        for i, t in enumerate(texts)
    ]
    loop_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    batch_generations = generate_batched(model, tokenizer, texts, batch_size=a.batch_size, seed=0, **settings)
    batch_out = batch_generations.texts
    batch_gen = time.perf_counter() - t0
    assert len(loop_out) == len(batch_out) == len(prompts)

    scorers = load_rewards(a.rewards.split(","), batch_size=a.batch_size)
    for s in scorers:
        s(prompts[:2], batch_out[:2])  # warm-up
    t0 = time.perf_counter()
    loop_scores = [[s([p], [r])[0] for s in scorers] for p, r in zip(prompts, batch_out)]
    loop_score = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch_scores = [s(prompts, batch_out) for s in scorers]
    batch_score = time.perf_counter() - t0
    max_diff = max(
        abs(loop_scores[i][j] - batch_scores[j][i]) for i in range(len(prompts)) for j in range(len(scorers))
    )

    result = {
        "what": "one-at-a-time loop (original RiC code) vs batched, same prompts and outputs count",
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        },
        "model": BUNDLED_MODEL,
        "num_prompts": len(prompts),
        "max_new_tokens": a.max_new_tokens,
        "batch_size": a.batch_size,
        "generation": {
            "loop_seconds": round(loop_gen, 2),
            "batched_seconds": round(batch_gen, 2),
            "loop_generated_tokens": loop_tally.generated_tokens,
            "batched_generated_tokens": batch_generations.generated_tokens,
            "loop_tokens_per_second": round(loop_tally.generated_tokens / loop_gen, 1),
            "batched_tokens_per_second": round(batch_generations.generated_tokens / batch_gen, 1),
            "speedup_seconds": round(loop_gen / batch_gen, 2),
        },
        "scoring": {
            "rewards": [s.name for s in scorers],
            "loop_seconds": round(loop_score, 3),
            "batched_seconds": round(batch_score, 3),
            "speedup": round(loop_score / batch_score, 2),
            "max_abs_score_difference": max_diff,
        },
        "generation_plus_scoring_speedup": round((loop_gen + loop_score) / (batch_gen + batch_score), 2),
    }
    write_json(a.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
