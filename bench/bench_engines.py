"""Which engine should serve a RiC run on this CPU: `ric serve --engine builtin` (fp32, bf16) against
`--engine llama.cpp` (the run exported to GGUF f16 and q8_0, llama-cpp-python's server behind ric), and
llama.cpp alone on the same GGUF (its own server, no ric in front), at concurrency 1, 4 and 16, with the
same prompts, preferences and sampling on every side (temperature 0.3, top-p 0.9; llama.cpp told top_k 0,
min_p 0, no repeat penalty). Then the quality each GGUF keeps: the run's 11-point grid evaluated through
it (`ric evaluate --engine llama.cpp`) against fp32 in-process, with 95 % bootstrap intervals over prompts.

    python bench/bench_engines.py [--run runs/demo] [--levels 1,4,16] [--requests 48] [--max_tokens 48]

Closed-loop clients (each sends its next request when its answer is back), every request with its own
preference (w1 = 0, 0.1, ..., 1 in turn), through the official openai client; llama.cpp alone gets the
prompt ric would have written for that preference (score tags in, chat template rendered). Writes
bench/results/serve_engines.json. Run it alone on the machine.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server.support import Server  # noqa: E402  (the same loopback server the tests start)

PROMPTS = [
    json.loads(line)["prompt"] for line in (ROOT / "recipes/demo/data/eval_prompts.jsonl").read_text().splitlines()
]
SAMPLING = {"temperature": 0.3, "top_p": 0.9}
CONFIGS = (
    "builtin-float32",
    "builtin-bfloat16",
    "llama.cpp-f16",
    "llama.cpp-q8_0",
    "llama.cpp-q4_k_m",
    "alone-f16",
    "alone-q8_0",
    "alone-q4_k_m",
)


def preference(k: int) -> list[float]:
    w1 = (k % 11) / 10
    return [w1, round(1 - w1, 1)]


def level(ask, concurrency: int, requests: int, seconds: float) -> dict:
    """Closed-loop clients until `requests` answers are back (at least 2 per client) or `seconds` pass."""
    latencies, tokens, errors, lock, count = [], [], [], threading.Lock(), [0]
    deadline = time.monotonic() + seconds
    total = max(requests, 2 * concurrency)

    def client():
        while time.monotonic() < deadline:
            with lock:
                if count[0] >= total:
                    return
                k = count[0]
                count[0] += 1
            start = time.monotonic()
            try:
                used = ask(k)
            except Exception as err:  # counted, not fatal
                with lock:
                    errors.append(f"{type(err).__name__}: {err}"[:200])
                continue
            with lock:
                latencies.append(time.monotonic() - start)
                tokens.append(used)

    start = time.monotonic()
    workers = [threading.Thread(target=client) for _ in range(concurrency)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.monotonic() - start
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors[:5],
        "error_count": len(errors),
        "wall_s": round(wall, 2),
        "generated_tokens": sum(tokens),
        "tokens_per_s": round(sum(tokens) / wall, 1),
        "p50_s": round(statistics.median(latencies), 3),
        "p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3),
    }


def through_ric(run: Path, options: list[str], max_tokens: int):
    """`ric serve RUN OPTIONS` and a function that asks it one chat completion (returns its token count)."""
    import openai

    server = Server(run, "--max-batch-size", "32", "--batch-window-ms", "50", "--max-queue", "64", *options)
    model = run.resolve().name
    local = threading.local()

    def ask(k: int) -> int:
        if not hasattr(local, "api"):
            local.api = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)
        answer = local.api.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
            max_tokens=max_tokens,
            extra_body={"preference": preference(k)},
            **SAMPLING,
        )
        return answer.usage.completion_tokens

    return server, ask


def llama_cpp_alone(run: Path, outtype: str, max_tokens: int):
    """llama-cpp-python's server on the run's cached GGUF, asked directly with the prompts ric would write."""
    import openai

    from ric.export import cached_export, exported_model
    from ric.run_info import load_run_info
    from ric.server import _generator_without_model
    from ric.server.engines import LLAMA_CPP_SAMPLING, llama_cpp_server

    info, _ = load_run_info(run)
    formatter = _generator_without_model(run, info)
    texts = [
        formatter.format(PROMPTS[k % len(PROMPTS)], formatter.condition(preference=preference(k)))
        for k in range(len(PROMPTS) * 11)
    ]
    gguf = exported_model(cached_export(run, "gguf", outtype))
    child = llama_cpp_server(gguf, "alone", run / "export" / "llama.cpp-alone.log").start()
    local = threading.local()

    def ask(k: int) -> int:
        if not hasattr(local, "api"):
            local.api = openai.OpenAI(base_url=child.url, api_key="unused", max_retries=0, timeout=600)
        answer = local.api.completions.create(
            model="alone",
            prompt=texts[k % len(texts)],
            max_tokens=max_tokens,
            extra_body={**LLAMA_CPP_SAMPLING, "stop": ["<|im_start|>", "<|im_end|>", "\nuser\n", "\nUser:"]},
            **SAMPLING,
        )
        return answer.usage.completion_tokens

    return child, ask


def speed(run: Path, name: str, levels: list[int], requests: int, max_tokens: int, seconds: float) -> list[dict]:
    kind, variant = name.split("-", 1)
    if kind == "builtin":
        server, ask = through_ric(run, ["--dtype", variant], max_tokens)
        stop, engine, dtype, via_ric = server.stop, "builtin", variant, True
    elif kind == "llama.cpp":
        server, ask = through_ric(run, ["--engine", "llama.cpp", "--outtype", variant], max_tokens)
        stop, engine, dtype, via_ric = server.stop, "llama.cpp", variant, True
    else:
        child, ask = llama_cpp_alone(run, variant, max_tokens)
        stop, engine, dtype, via_ric = child.stop, "llama.cpp", variant, False
    try:
        level(ask, 1, 2, 120)  # warm-up
        rows = [level(ask, c, requests, seconds) for c in levels]
    finally:
        stop()
    out = [{"config": name, "engine": engine, "through_ric": via_ric, "dtype": dtype, **r} for r in rows]
    for r in out:
        print(json.dumps(r), flush=True)
    return out


def grid_quality(run: Path, eval_dir: str) -> dict:
    """Following and hypervolume of an evaluation, each with a 95 % bootstrap interval over prompts."""
    import csv

    import numpy as np

    from ric.pareto import hypervolume, preference_following

    folder = run / eval_dir
    pareto = json.loads((folder / "pareto.json").read_text())
    names = pareto["rewards"]
    table = []
    for p in pareto["points"]:
        with open(folder / "points" / f"point_{pareto['points'].index(p):02d}.csv") as handle:
            table.append([[float(r[f"obtained_{n}"]) for n in names] for r in csv.DictReader(handle)])
    scores = np.array(table)
    weights = [p["preference"] for p in pareto["points"]]
    rng = np.random.default_rng(0)
    n = scores.shape[1]
    hv, follow = [], []
    for _ in range(1000):
        means = scores[:, rng.integers(0, n, n)].mean(axis=1)
        hv.append(hypervolume(means, pareto["hypervolume_reference"]))
        follow.append(preference_following(weights, means))
    follow = np.array(follow, dtype=float)

    def ci(values):
        return [round(float(x), 4) for x in np.nanpercentile(values, [2.5, 97.5])]

    return {
        "eval_dir": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder),
        "hypervolume": round(pareto["hypervolume"], 4),
        "hypervolume_ci": ci(hv),
        "hypervolume_reference": pareto["hypervolume_reference"],
        "following": {k: round(v, 3) for k, v in pareto["preference_following"].items()},
        "following_ci": {k: ci(follow[:, j]) for j, k in enumerate(names)},
        "num_prompts": pareto["num_prompts"],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs/demo"))
    parser.add_argument("--levels", default="1,4,16")
    parser.add_argument("--requests", type=int, default=48, help="answers per level (at least 2 per client)")
    parser.add_argument("--seconds", type=float, default=240, help="the most a level runs")
    parser.add_argument("--max_tokens", type=int, default=48)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument(
        "--quality_types", default="f16,q8_0,q4_k_m", help="GGUF types whose grid is evaluated (empty: none)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench/results/serve_engines.json"))
    a = parser.parse_args()
    run, levels = Path(a.run), [int(c) for c in a.levels.split(",")]
    path = Path(a.out)
    out = json.loads(path.read_text()) if path.exists() else {}
    out.update(
        what="ric serve per engine on one CPU: closed-loop clients, mixed preferences, the same sampling everywhere",
        run=str(run.relative_to(ROOT)) if run.resolve().is_relative_to(ROOT) else str(run),
        machine={"processor": platform.machine(), "cpus": os.cpu_count()},
        max_tokens=a.max_tokens,
        sampling={**SAMPLING, "llama.cpp": "top_k 0, min_p 0, repeat_penalty 1"},
    )
    rows = [r for r in out.get("rows", []) if r["config"] not in a.configs.split(",")]
    for name in a.configs.split(","):
        if name:
            rows += speed(run, name, levels, a.requests, a.max_tokens, a.seconds)
            out["rows"] = rows
            path.write_text(json.dumps(out, indent=2) + "\n")  # what is measured is kept if a later arm fails
    if a.quality_types:
        quality = {**out.get("quality", {}), "builtin-float32": grid_quality(run, "eval")}
        for outtype in a.quality_types.split(","):
            eval_dir = f"eval-llama.cpp-{outtype}"
            command = [sys.executable, "-m", "ric", "evaluate", str(run), "--engine", "llama.cpp"]
            subprocess.run(command + ["--outtype", outtype], check=True)
            quality[f"llama.cpp-{outtype}"] = grid_quality(run, eval_dir)
        out["quality"] = quality
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out.get("quality"), indent=2))


if __name__ == "__main__":
    main()
