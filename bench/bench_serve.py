"""`ric serve` under load: generated tokens/s and p50 / p99 latency at concurrency 1, 4, 16, 32 with
mixed preferences, on a trained run (default: the demo's), against the server on a loopback port.

    python bench/bench_serve.py [--run runs/demo-seed0] [--requests 32] [--max-tokens 48] [--llama_cpp]

Each level runs closed-loop clients (each sends its next request when its answer is back) until
`--requests` answers have come back (at least 2 per client) or `--seconds` pass; every request
carries its own preference (w1 = 0, 0.1, ..., 1 in turn). With `--llama_cpp`, the bundled GGUF
under llama-cpp-python (if it is installed) answers the same prompts one at a time, as the ratio
a CPU user would compare against. Writes bench/results/serve.json. Run it alone on the machine.
"""

import argparse
import json
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

    latencies, tokens, lock, count = [], [], threading.Lock(), [0]
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
            answer = api.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
                max_tokens=max_tokens,
                extra_body={"preference": [w1, round(1 - w1, 1)]},
            )
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
        "wall_seconds": round(wall, 2),
        "generated_tokens": sum(tokens),
        "tokens_per_second": round(sum(tokens) / wall, 1),
        "p50_latency_seconds": round(statistics.median(latencies), 2),
        "p99_latency_seconds": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
    }


def llama_cpp_level(requests: int, max_tokens: int) -> dict | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    from ric.models import bundled_gguf_path

    llm = Llama(model_path=str(bundled_gguf_path()), n_ctx=512, n_threads=2, verbose=False)
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
        "concurrency": 1,
        "requests": requests,
        "generated_tokens": tokens,
        "tokens_per_second": round(tokens / wall, 1),
        "p50_latency_seconds": round(statistics.median(latencies), 2),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs/demo-seed0"))
    parser.add_argument("--levels", default="1,4,16,32")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--llama_cpp", action="store_true")
    a = parser.parse_args()
    run = Path(a.run)
    server = Server(run, "--max-batch-size", "32", "--batch-window-ms", "50", "--max-queue", "64")
    try:
        model = json.loads(__import__("httpx").get(server.url + "/v1/models").text)["data"][0]["id"]
        level(server.url, model, 1, 2, 60, 8)  # warm-up
        results = [level(server.url, model, int(c), a.requests, a.seconds, a.max_tokens) for c in a.levels.split(",")]
        stats = server.stats()
    finally:
        server.stop()
    single = next(r for r in results if r["concurrency"] == 1)
    for r in results:
        r["tokens_per_second_vs_concurrency_1"] = round(r["tokens_per_second"] / single["tokens_per_second"], 2)
    out = {
        "what": "ric serve, in-process transformers engine, closed-loop clients with mixed preferences",
        "run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
        "machine": {"processor": platform.machine(), "cpus": __import__("os").cpu_count()},
        "max_tokens": a.max_tokens,
        "levels": results,
        "server_stats": stats,
        "llama_cpp": llama_cpp_level(max(4, a.requests // 4), a.max_tokens) if a.llama_cpp else None,
    }
    if out["llama_cpp"]:
        out["llama_cpp"]["ric_concurrency_1_over_llama_cpp"] = round(
            single["tokens_per_second"] / out["llama_cpp"]["tokens_per_second"], 2
        )
    (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/results/serve.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
