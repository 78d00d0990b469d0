"""What answers a request for `ric serve` (`--engine`): the in-process batching engine, or an
OpenAI-compatible server that ric fronts. Each yields the same events (`ric.server.events`) for one
formatted prompt: `Delta`s while the answer grows, then `Done` or `Failed`.

- `InProcessEngine` (`builtin`): the run's model in this process (transformers, CPU or GPU), batched
  (`ric/server/batching.py`).
- `UpstreamEngine`: an OpenAI-compatible server. ric maps the preference to score tags in front and sends
  the formatted prompt to its `/v1/completions` (streamed). Either one the user started (`--upstream URL`,
  typically `vllm serve BASE --enable-lora --lora-modules ric=RUN_DIR/adapter`, asked for model
  `--upstream_model`; MORLHF: the nearest policy's label, one LoRA module per policy), or a `ChildServer`
  ric starts on a free loopback port and stops on exit: `llama.cpp` (llama-cpp-python's server on the
  run's GGUF export) and `vllm` (`vllm serve` on its merged Hugging Face export). Rewarded Soups mixes
  adapters per preference, which no such server can do: a Soups run is served in-process only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from .batching import BatchingEngine, EngineBusy, GenRequest
from .events import FINAL, Delta, Done, Failed

__all__ = ["ENGINES", "ChildServer", "EngineBusy", "InProcessEngine", "UpstreamEngine"]
logger = logging.getLogger("ric.serve")
ENGINES = ("builtin", "llama.cpp", "vllm")


class InProcessEngine:
    def __init__(
        self, generator=None, max_batch_size: int = 16, batch_window: float = 0.02, max_queue: int = 64, loader=None
    ):
        self.batching = BatchingEngine(generator, max_batch_size, batch_window, max_queue, loader=loader)

    @property
    def generator(self):
        return self.batching.generator

    async def run(self, text: str, condition, max_tokens: int, temperature: float, top_p: float, seed, stream=True):
        loop = asyncio.get_running_loop()
        request = GenRequest(
            text=text,
            condition=condition,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            loop=loop,
            events=asyncio.Queue(),
        )
        self.batching.submit(request)  # EngineBusy when the queue is full
        try:
            while True:
                event = await request.events.get()
                yield event
                if isinstance(event, FINAL):
                    return
        finally:  # the client went away (or the answer is complete): its row stops at the next token
            request.cancelled.set()

    def health(self) -> str | None:
        """None when the engine can answer, else what is wrong."""
        return None if self.batching.thread.is_alive() else "the generation thread has stopped"

    def stats(self) -> dict:
        return {"engine": "builtin", **self.batching.snapshot()}

    def close(self) -> None:
        self.batching.close()


class ChildServer:
    """An inference engine's OpenAI-compatible server as a child process on a loopback port: started and
    waited for (`start`), watched (`problem`), stopped with ric (`stop`). Its output goes to `log`."""

    def __init__(self, name: str, command: list[str], port: int, log: Path, env: dict | None = None):
        self.name, self.command, self.port, self.log = name, command, port, Path(log)
        self.url = f"http://127.0.0.1:{port}/v1"
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> ChildServer:
        import httpx

        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.log, "w")
        logger.info("starting %s: %s (log: %s)", self.name, " ".join(self.command), self.log)
        self.process = subprocess.Popen(
            self.command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(self.env or {})}
        )
        handle.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.problem())
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    logger.info("%s is ready at %s (pid %d)", self.name, self.url, self.process.pid)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer at {self.url} within {timeout:.0f} s; its log: {self.log}")

    def problem(self) -> str | None:
        """None while the child runs, else why it is gone (its exit code and the end of its log)."""
        if self.process is None or self.process.poll() is None:
            return None
        tail = self.log.read_text(errors="replace").strip().splitlines()[-5:] if self.log.exists() else []
        return f"{self.name} exited with code {self.process.returncode}; its log ({self.log}) ends: " + " | ".join(
            tail
        )

    def stop(self, timeout: float = 20) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        logger.info("stopped %s", self.name)


class UpstreamEngine:
    """Requests forwarded to an OpenAI-compatible `/v1/completions`, streamed back. `child`: the server ric
    started for it (checked before each request, stopped on close). `sampling`: fields sent with every
    request so that the upstream samples as ric does (llama.cpp: top_k 0, min_p 0, no repeat penalty)."""

    def __init__(
        self,
        url: str,
        model_for,
        api_key: str | None = None,
        max_queue: int = 64,
        timeout: float = 600,
        child: ChildServer | None = None,
        sampling: dict | None = None,
        engine: str = "upstream",
        count_tokens=None,
        stop: tuple[str, ...] = (),
    ):
        import httpx

        self.url, self.model_for, self.child, self.engine = url.rstrip("/"), model_for, child, engine
        self.count_tokens = count_tokens  # for servers whose streams carry no usage (llama-cpp-python's)
        self.stop = list(stop)  # the template's turn markers: an answer ends before the model starts a new turn
        self.sampling = dict(sampling or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(headers=headers, timeout=timeout)
        self.max_queue, self.running = max_queue, 0
        self.counters = {"requests": 0, "upstream_errors": 0, "generated_tokens": 0}
        self.said_queue = False  # whether the one-at-a-time advice has been logged

    async def run(self, text: str, condition, max_tokens: int, temperature: float, top_p: float, seed, stream=True):
        """The upstream's answer as events. `stream`: whether the client streams; a whole answer is asked for
        whole, so that neither side handles an event per token (on a 2-core CPU that takes time from the
        engine)."""
        import httpx

        if self.running >= self.max_queue:
            raise EngineBusy(f"{self.running} requests are running (max_queue {self.max_queue})")
        self.running += 1
        self.counters["requests"] += 1
        if self.engine == "llama.cpp" and self.running >= 8 and not self.said_queue:
            logger.warning(ONE_AT_A_TIME, self.running)
            self.said_queue = True
        body = {
            **self.sampling,
            "model": self.model_for(condition),
            "prompt": text,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if self.stop:
            body["stop"] = self.stop
        if seed is not None:
            body["seed"] = seed
        try:
            gone = self.health()
            if gone:
                self.counters["upstream_errors"] += 1
                yield Failed(gone)
                return
            try:
                async for event in self._streamed(body) if stream else self._whole(body):
                    if isinstance(event, Failed):
                        self.counters["upstream_errors"] += 1
                    elif isinstance(event, Done):
                        tokens = event.tokens
                        if not tokens and event.text and self.count_tokens is not None:
                            tokens = self.count_tokens(event.text)
                        self.counters["generated_tokens"] += tokens
                        event = Done(event.reason, event.text, tokens)
                    yield event
            except httpx.HTTPError as err:
                self.counters["upstream_errors"] += 1
                yield Failed(self.health() or f"upstream {self.url} failed: {type(err).__name__}: {err}")
        finally:
            self.running -= 1

    async def _streamed(self, body: dict):
        answer, reason, tokens = "", "stop", 0
        async with self.client.stream("POST", f"{self.url}/completions", json=body) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:300]
                yield Failed(f"upstream {self.url} answered {response.status_code}: {detail}")
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    tokens = chunk["usage"].get("completion_tokens", tokens)
                for choice in chunk.get("choices", []):
                    if choice.get("text"):
                        answer += choice["text"]
                        yield Delta(choice["text"])
                    reason = choice.get("finish_reason") or reason
        yield Done(reason, answer, tokens)

    async def _whole(self, body: dict):
        response = await self.client.post(f"{self.url}/completions", json=body)
        if response.status_code != 200:
            yield Failed(f"upstream {self.url} answered {response.status_code}: {response.text[:300]}")
            return
        whole = response.json()
        choice = whole["choices"][0]
        answer = choice.get("text") or ""
        if answer:
            yield Delta(answer)
        tokens = (whole.get("usage") or {}).get("completion_tokens", 0)
        yield Done(choice.get("finish_reason") or "stop", answer, tokens)

    def health(self) -> str | None:
        return self.child.problem() if self.child is not None else None

    def stats(self) -> dict:
        return {"engine": self.engine, **self.counters, "running": self.running, "upstream": self.url}

    def close(self) -> None:
        if self.child is not None:
            self.child.stop()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# llama-cpp-python's server samples with top_k 40, min_p 0.05 and a repeat penalty unless told otherwise;
# ric samples with temperature and top-p alone
LLAMA_CPP_SAMPLING = {
    "top_k": 0,
    "min_p": 0.0,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


def llama_cpp_server(gguf: Path, name: str, log: Path, context: int = 2048, threads: int | None = None) -> ChildServer:
    """llama-cpp-python's OpenAI server on `gguf` (one request at a time), on a free loopback port."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", name]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(context)]
    command += ["--n_threads", str(threads or cpu_threads()), "--n_threads_batch", str(threads or cpu_threads())]
    # by default a new request interrupts the one streaming: with ric in front requests overlap, so they queue
    command += ["--interrupt_requests", "false"]
    return ChildServer("llama.cpp server", command, port, log)


def vllm_server(model_dir: Path, name: str, log: Path, dtype: str | None = None) -> ChildServer:
    """`vllm serve` on a merged Hugging Face export, on a free loopback port."""
    import shutil

    port = free_port()
    executable = shutil.which("vllm")
    command = [executable] if executable else [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    command += ["serve", str(model_dir), "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port)]
    if dtype:
        command += ["--dtype", dtype]
    return ChildServer("vllm serve", command, port, log)


# the GGUF type each external engine serves by default, and what each needs installed
# (llama.cpp: q4_k_m was the fastest GGUF type on the demo run whose grid still followed both rewards, >= 0.85,
# its hypervolume within fp32's interval: bench/results/serve_engines.json; check yours with `ric evaluate
# RUN --engine llama.cpp`, or take q8_0)
DEFAULT_OUTTYPE = {"llama.cpp": "q4_k_m", "vllm": "bf16"}
# said when requests queue in front of an engine that answers one at a time
ONE_AT_A_TIME = (
    "%d requests are waiting on llama.cpp, which answers one at a time: for many concurrent clients "
    "--engine builtin batches them and was the faster at 16 clients on the demo run (bench/results/serve_engines.json)"
)


def check_engine(engine: str, method, outtype: str | None = None) -> str:
    """Refuse, before any model loads, an engine that is unknown, not installed, or cannot serve the
    run's method; returns the export type it will serve."""
    import importlib.util
    import shutil

    from ..export import INSTALL_HINT, OUTTYPES
    from ..recipe import RecipeError

    if engine not in ENGINES:
        raise RecipeError(f"--engine: {engine!r} is not an engine; choose one of {', '.join(ENGINES)}")
    if engine == "builtin":
        if outtype:
            raise RecipeError("--outtype: applies with --engine llama.cpp or vllm (the export they serve)")
        return ""
    if method.export != "run":
        why = method.export_refusal or (
            "it is one model per policy"
            if method.export == "policy"
            else "it mixes its adapters per preference, a new model for each"
        )
        raise RecipeError(
            f"--engine {engine}: serves one exported model, and a {method.name} run cannot be one ({why}); "
            "use --engine builtin"
            + (", or `ric export --point` a policy and serve it" if method.export == "policy" else "")
        )
    fmt = "gguf" if engine == "llama.cpp" else "hf"
    outtype = outtype or DEFAULT_OUTTYPE[engine]
    if outtype not in OUTTYPES[fmt]:
        raise RecipeError(f"--outtype: {outtype!r} is not a {fmt} type; choose one of {', '.join(OUTTYPES[fmt])}")
    if engine == "llama.cpp":
        missing = [m for m in ("llama_cpp", "sentencepiece", "sse_starlette") if importlib.util.find_spec(m) is None]
        if missing:
            raise RecipeError(f"--engine llama.cpp: {', '.join(missing)} not installed; {INSTALL_HINT}")
    elif importlib.util.find_spec("vllm") is None and shutil.which("vllm") is None:
        raise RecipeError("--engine vllm: vllm is not installed; `pip install vllm` on a machine with CUDA")
    return outtype


def start_engine_server(run_dir, engine: str, outtype: str, name: str, tokenizer) -> ChildServer:
    """Export the run for `engine` (cached in RUN_DIR/export), check the export's tokenizer against the
    run's, and start the engine's server on a free loopback port; stopped when ric exits."""
    import atexit

    from ..export import cached_export, check_gguf_tokenizer, exported_model

    run_dir = Path(run_dir)
    folder = cached_export(run_dir, "gguf" if engine == "llama.cpp" else "hf", outtype)
    log = run_dir / "export" / f"{engine}-server.log"
    if engine == "llama.cpp":
        gguf = exported_model(folder)
        check_gguf_tokenizer(gguf, tokenizer)
        child = llama_cpp_server(gguf, name, log)
    else:
        child = vllm_server(folder, name, log)
    atexit.register(child.stop)
    return child.start()


def engine_sampling(engine: str) -> dict:
    return LLAMA_CPP_SAMPLING if engine == "llama.cpp" else {}


def served_loader(run, engine: str, outtype: str | None, adapter=None, dtype=None):
    """For `ric evaluate RUN --engine llama.cpp`: checks now (before any model loads), then returns
    `served(info, load_in_process)` for `ric.evaluate.evaluate`, which gives (a loader of the
    `ServedGenerator` that answers through the engine's server, started when the loader is called; the
    identity of those answers; the list the started server is appended to)."""
    from ..generation import resolve_adapter
    from ..inference import RiCGenerator, ServedGenerator
    from ..methods import get_method
    from ..models import load_tokenizer
    from ..recipe import RecipeError

    if adapter or dtype:
        flag = "--adapter" if adapter else "--dtype"
        raise RecipeError(
            f"{flag}: not with --engine {engine}, which answers from the run's export of its latest adapter"
        )
    outtype = check_engine(engine, get_method("ric"), outtype)

    def served(info, load_in_process):
        servers: list[ChildServer] = []

        def load():
            formatter = RiCGenerator(None, load_tokenizer(str(resolve_adapter(run.run_dir, info))), info)
            name = run.run_dir.resolve().name
            server = start_engine_server(run.run_dir, engine, outtype, name, formatter.tokenizer)
            servers.append(server)
            identity = {"engine": engine, "outtype": outtype}
            return ServedGenerator(formatter, server.url, name, engine_sampling(engine), load_in_process, identity)

        return load, {"engine": engine, "outtype": outtype}, servers

    return served
