"""Held load without growth: `ric serve` under a bounded soak, its resident memory sampled throughout.

    python bench/soak_serve.py [--run runs/demo] [--engines builtin,llama.cpp] [--minutes 30] [--clients 16]

Per engine, one `ric serve RUN --engine E` on a loopback port and `--clients` closed-loop clients for
`--minutes` (then they stop by themselves): mixed preferences (w1 = 0, 0.1, ..., 1), a third of the answers
streamed, one streamed request in eight abandoned after its first two chunks (the connection closed), one
request in twelve malformed (a 400 expected). The resident memory (RSS) of the server and of its children (the
llama.cpp server) is read from /proc every 10 s. Flat means: the RSS after warm-up (the first fifth of the
soak) grows by less than 2 % + 8 MB to the end, and the last fifth's mean is within that of the second
fifth's. Engines run one after another (`--parallel` runs them side by side: each is slower, the memory
reading the same). Writes bench/results/soak.json.
"""

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server.support import Server  # noqa: E402

PROMPTS = [
    json.loads(line)["prompt"] for line in (ROOT / "recipes/demo/data/eval_prompts.jsonl").read_text().splitlines()
]
BAD = [
    {"messages": [{"role": "user", "content": "hi"}], "temperature": 7},
    {"messages": [], "max_tokens": 4},
    {"messages": [{"role": "user", "content": "hi"}], "preference": [1, -1]},
    {"messages": [{"role": "user", "content": "hi"}], "stop": ["x"]},
]


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, in MB (parents read from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return round(total / 1024, 1)


def soak(run: Path, engine: str, minutes: float, clients: int) -> dict:
    import httpx

    options = ["--max_batch_size", "16", "--max_queue", "64"]
    if engine != "builtin":
        options += ["--engine", engine]
    server = Server(run, *options)
    model = run.resolve().name
    deadline = time.monotonic() + minutes * 60
    counts = {"answers": 0, "streams_done": 0, "streams_abandoned": 0, "bad_requests_400": 0, "errors": 0}
    other: dict[str, int] = {}
    lock, number = threading.Lock(), [0]

    def count(key: str) -> None:
        with lock:
            counts[key] += 1

    def client():
        with httpx.Client(base_url=server.url, timeout=120) as http:
            while time.monotonic() < deadline:
                with lock:
                    k = number[0]
                    number[0] += 1
                w1 = (k % 11) / 10
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
                    "max_tokens": 40,
                    "preference": [w1, round(1 - w1, 1)],
                }
                try:
                    if k % 12 == 5:
                        response = http.post("/v1/chat/completions", json={"model": model, **BAD[k % len(BAD)]})
                        count("bad_requests_400" if response.status_code == 400 else "errors")
                    elif k % 3 == 0:
                        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                            for i, _ in enumerate(response.iter_lines()):
                                if k % 8 == 0 and i >= 2:
                                    break  # abandoned mid-stream: the connection closes here
                        count("streams_abandoned" if k % 8 == 0 else "streams_done")
                    else:
                        response = http.post("/v1/chat/completions", json=body)
                        if response.status_code == 200:
                            count("answers")
                        else:
                            with lock:
                                other[str(response.status_code)] = other.get(str(response.status_code), 0) + 1
                except httpx.HTTPError as err:
                    with lock:
                        other[type(err).__name__] = other.get(type(err).__name__, 0) + 1

    samples = []
    workers = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    start = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        while time.monotonic() < deadline:
            samples.append((round(time.monotonic() - start, 1), rss_mb(server.process.pid)))
            print(engine, samples[-1], counts, flush=True)
            time.sleep(10)
        for worker in workers:
            worker.join(timeout=180)
        samples.append((round(time.monotonic() - start, 1), rss_mb(server.process.pid)))
        stats = server.stats()
    finally:
        server.stop()
    fifth = max(1, len(samples) // 5)
    warm, second, last = samples[fifth][1], samples[fifth : 2 * fifth], samples[-fifth:]
    mean = lambda rows: round(sum(r[1] for r in rows) / len(rows), 1)  # noqa: E731
    end = samples[-1][1]
    allowance = warm * 0.02 + 8
    return {
        "engine": engine,
        "minutes": minutes,
        "clients": clients,
        "counts": counts,
        "other_outcomes": other,
        "server_stats": stats,
        "rss_mb": samples,
        "rss_after_warmup_mb": warm,
        "rss_end_mb": end,
        "rss_mean_second_fifth_mb": mean(second),
        "rss_mean_last_fifth_mb": mean(last),
        "growth_after_warmup_mb": round(end - warm, 1),
        "flat": end - warm < allowance and mean(last) - mean(second) < allowance,
        "flat_rule": "growth after warm-up (first fifth) under 2 % + 8 MB, and the last fifth's mean within that of "
        "the second fifth's",
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs/demo"))
    parser.add_argument("--engines", default="builtin,llama.cpp")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--parallel", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench/results/soak.json"))
    a = parser.parse_args()
    run, engines = Path(a.run), [e for e in a.engines.split(",") if e]
    results: dict[str, dict] = {}

    def one(engine: str) -> None:
        results[engine] = soak(run, engine, a.minutes, a.clients)

    if a.parallel:
        threads = [threading.Thread(target=one, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for engine in engines:
            one(engine)
    out = {
        "what": "ric serve under a bounded soak: resident memory (server and its children) every 10 s",
        "run": str(run),
        "parallel": a.parallel,
        "cpus": os.cpu_count(),
        "engines": results,
    }
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({e: {k: v for k, v in r.items() if k != "rss_mb"} for e, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
