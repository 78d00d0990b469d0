"""Top-p sampling: transformers' warpers (sort the whole vocabulary every step) against
ric.sampling.NucleusSampler (top-k candidates that hold the nucleus, full sort only as a fallback).

Same model (the bundled SmolLM2-135M-Instruct), same prompts, one batch, same settings; the two draw
from the same distribution with different random streams. Writes bench/results/sampling.json.

    python bench/bench_sampling.py [--num_prompts 128] [--max_new_tokens 48] [--temperature 0.3] [--top_p 0.9]
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from transformers import LogitsProcessorList

from ric.generation import format_prompts
from ric.models import BUNDLED_MODEL, load_causal_lm, load_tokenizer
from ric.rundir import write_json
from ric.sampling import NucleusSampler

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_prompts", type=int, default=128)
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--top_p", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sampling.json"))
    a = parser.parse_args()

    lines = (ROOT / "recipes/demo/data/train_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines][: a.num_prompts]
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = load_causal_lm(BUNDLED_MODEL, dtype="float32", device="cpu").eval()
    enc = tokenizer(format_prompts(prompts, "chat", tokenizer, system_prompt=""), return_tensors="pt", padding=True)
    # Fixed length (no early stop) so both sides do the same number of steps.
    common = dict(
        max_new_tokens=a.max_new_tokens, min_new_tokens=a.max_new_tokens, pad_token_id=tokenizer.pad_token_id
    )
    ways = {
        "transformers_warpers": dict(do_sample=True, temperature=a.temperature, top_p=a.top_p, top_k=0),
        "nucleus_sampler": dict(
            do_sample=False, logits_processor=LogitsProcessorList([NucleusSampler(a.temperature, a.top_p)])
        ),
    }
    seconds = {}
    with torch.inference_mode():
        model.generate(**enc, **{**common, "max_new_tokens": 2, "min_new_tokens": 2}, do_sample=False)  # warm-up
        for name, kw in ways.items():
            runs = []
            for r in range(a.repeats):
                torch.manual_seed(r)
                start = time.time()
                model.generate(**enc, **common, **kw)
                runs.append(time.time() - start)
            seconds[name] = round(min(runs), 2)
    result = {
        "what": "one batch of generate() with temperature + top-p sampling, two ways",
        "model": BUNDLED_MODEL,
        "machine": {"processor": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "batch": len(prompts),
        "new_tokens": a.max_new_tokens,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "seconds_best_of": a.repeats,
        "seconds": seconds,
        "speedup": round(seconds["transformers_warpers"] / seconds["nucleus_sampler"], 2),
    }
    write_json(Path(a.out), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
