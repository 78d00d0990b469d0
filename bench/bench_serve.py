"""`ric serve` under load: generated tokens/s and p50 / p99 latency at concurrency 1, 4, 16, 32 with
mixed preferences, on a trained run (default: the demo's), against the server on a loopback port.

    python bench/bench_serve.py [--run runs/demo-seed0] [--levels 1,4,16,32] [--requests 128] [--max-tokens 48]
        [--dtype bfloat16] [--llama_cpp] [--upstream URL --upstream-model NAME]

Each level runs closed-loop clients (each sends its next request when its answer is back) until
`--requests` answers have come back (at least 2 per client) or `--seconds` pass; every request
carries its own preference (w1 = 0, 0.1, ..., 1 in turn). Each level's tokens/s is also given as a
ratio to the lowest level run (`ratios_against_concurrency` names it; 1 with the default levels).

With `--llama_cpp`, the bundled GGUF under llama-cpp-python (if it is installed; if not, the reason
is recorded) answers the same prompts one at a time on every CPU core, as the ratio a CPU user would
compare against. It serves the base GGUF without the run's adapter: a speed reference for the same
architecture and size, not the same model (its answers are not conditioned on any preference).

With `--upstream URL --upstream-model NAME`, the same levels run against `ric serve RUN
--upstream URL --upstream-model NAME`: the preference mapping in front of an OpenAI-compatible
engine that serves the run's adapter, e.g. on a GPU

    vllm serve BASE_MODEL --port 8001 --enable-lora --max-lora-rank 64 --lora-modules ric=RUN/adapter
    python bench/bench_serve.py --run RUN --upstream http://127.0.0.1:8001/v1 --upstream-model ric

(see docs/serve.md). Writes bench/results/serve.json (serve_upstream.json with `--upstream`; `--out`
chooses). Run it alone on the machine.
"""

import argparse
import json
import os
import platform
import statistics
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


def level(url: str, model: str, concurrency: int, requests: int, seconds: float, max_tokens: int) -> dict:
    import openai

    latencies, tokens, lock, count, refused = [], [], threading.Lock(), [0], []
    deadline = time.monotonic() + seconds
    total = max(requests, 2 * concurrency)

    def client(worker: int):
        api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
        while time.monotonic() < deadline:
            with lock:
                if count[0] >= total:
                    return
                k = count[0]
                count[0] += 1
            w1 = (k % 11) / 10
            start = time.monotonic()
            try:
                answer = api.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
                    max_tokens=max_tokens,
                    extra_body={"preference": [w1, round(1 - w1, 1)]},
                )
            except openai.APIStatusError as err:  # counted (a 429 here means the server's limits bit), not fatal
                with lock:
                    refused.append(err.status_code)
                time.sleep(float(err.response.headers.get("retry-after", 1)))
                continue
            with lock:
                latencies.append(time.monotonic() - start)
                tokens.append(answer.usage.completion_tokens)

    start = time.monotonic()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.monotonic() - start
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "refused": {str(code): refused.count(code) for code in sorted(set(refused))},
        "wall_seconds": round(wall, 2),
        "generated_tokens": sum(tokens),
        "tokens_per_second": round(sum(tokens) / wall, 1),
        "p50_latency_seconds": round(statistics.median(latencies), 2),
        "p99_latency_seconds": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
    }


def llama_cpp_level(requests: int, max_tokens: int) -> dict:
    """The bundled base GGUF (no adapter) under llama-cpp-python, one request at a time: a speed reference."""
    try:
        from llama_cpp import Llama
    except ImportError as err:
        return {"error": f"llama-cpp-python not installed: {err}"}
    from ric.models import bundled_gguf_path

    threads = os.cpu_count()
    llm = Llama(model_path=str(bundled_gguf_path()), n_ctx=512, n_threads=threads, verbose=False)
    tokens, latencies = 0, []
    start = time.monotonic()
    for k in range(requests):
        t0 = time.monotonic()
        out = llm.create_chat_completion(
            messages=[{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
            max_tokens=max_tokens,
            temperature=0.3,
            top_p=0.9,
        )
        latencies.append(time.monotonic() - t0)
        tokens += out["usage"]["completion_tokens"]
    wall = time.monotonic() - start
    return {
        "engine": "llama-cpp-python (bundled Q4_1 GGUF, base model, no adapter)",
        "note": "a speed reference for the same architecture and size, not the same model",
        "n_threads": threads,
        "concurrency": 1,
        "requests": requests,
        "generated_tokens": tokens,
        "tokens_per_second": round(tokens / wall, 1),
        "p50_latency_seconds": round(statistics.median(latencies), 2),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs/demo-seed0"))
    parser.add_argument("--levels", default="1,4,16,32", help="comma-separated concurrency levels")
    parser.add_argument("--requests", type=int, default=128, help="answers per level (at least 2 per client)")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--llama_cpp", action="store_true")
    parser.add_argument("--upstream", help="an OpenAI-compatible engine serving the run's adapter (URL ending in /v1)")
    parser.add_argument("--upstream-model", help="the upstream's name for the adapter (ric serve --upstream-model)")
    parser.add_argument("--dtype", help="ric serve --dtype: the weights' dtype (default: the run's)")
    parser.add_argument("--out", help="the JSON to write (default: bench/results/serve.json, serve_upstream.json)")
    a = parser.parse_args()
    if a.upstream_model and not a.upstream:
        parser.error("--upstream-model: applies with --upstream only")
    levels = sorted({int(c) for c in a.levels.split(",")})
    if not levels or levels[0] < 1:
        parser.error(f"--levels: positive concurrency levels, got {a.levels!r}")
    run = Path(a.run)
    options = ["--max-batch-size", "32", "--batch-window-ms", "50", "--max-queue", "64"]
    options += ["--dtype", a.dtype] if a.dtype else []
    if a.upstream:
        options += ["--upstream", a.upstream] + (["--upstream-model", a.upstream_model] if a.upstream_model else [])
    server = Server(run, *options)
    try:
        model = json.loads(__import__("httpx").get(server.url + "/v1/models").text)["data"][0]["id"]
        level(server.url, model, 1, 2, 60, 8)  # warm-up
        results = [level(server.url, model, c, a.requests, a.seconds, a.max_tokens) for c in levels]
        stats = server.stats()
    finally:
        server.stop()
    lowest = results[0]  # the ratios are against the lowest level run (1 with the default levels)
    for r in results:
        r[f"tokens_per_second_vs_concurrency_{lowest['concurrency']}"] = round(
            r["tokens_per_second"] / lowest["tokens_per_second"], 2
        )
    if a.upstream:
        what = f"ric serve in front of the upstream engine {a.upstream} (model {a.upstream_model or 'the run name'})"
    else:
        what = "ric serve, in-process transformers engine"
    out = {
        "what": what + ", closed-loop clients with mixed preferences",
        "run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
        "machine": {"processor": platform.machine(), "cpus": os.cpu_count()},
        "upstream": {"url": a.upstream, "model": a.upstream_model} if a.upstream else None,
        "dtype": a.dtype or "the run's",
        "max_tokens": a.max_tokens,
        "ratios_against_concurrency": lowest["concurrency"],
        "levels": results,
        "server_stats": stats,
        "llama_cpp": llama_cpp_level(max(4, a.requests // 4), a.max_tokens) if a.llama_cpp else None,
    }
    if out["llama_cpp"] and "error" not in out["llama_cpp"]:
        if lowest["concurrency"] == 1:  # llama.cpp answers one request at a time: compared with ric at 1 only
            out["llama_cpp"]["ric_concurrency_1_over_llama_cpp"] = round(
                lowest["tokens_per_second"] / out["llama_cpp"]["tokens_per_second"], 2
            )
        else:
            out["llama_cpp"]["ric_concurrency_1_over_llama_cpp"] = None
            out["llama_cpp"]["ratio_note"] = "no ratio: --levels left out concurrency 1"
    path = Path(a.out) if a.out else ROOT / "bench/results" / ("serve_upstream.json" if a.upstream else "serve.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
