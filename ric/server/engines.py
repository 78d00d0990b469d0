"""What answers a request for `ric serve`: the in-process batching engine, or an upstream server.

Both yield the same events for one formatted prompt: ("delta", text) while the answer grows, then
("done", finish_reason, text, completion_tokens), or ("error", message).

- `InProcessEngine`: the run's model in this process (transformers, CPU or GPU), batched
  (`ric/server/batching.py`).
- `UpstreamEngine`: an OpenAI-compatible server that serves the run's base model with its LoRA
  adapter, typically `vllm serve BASE --enable-lora --lora-modules ric=RUN_DIR/adapter`; `ric`
  maps the preference to score tags in front and sends the formatted prompt to the upstream's
  `/v1/completions` (streamed), as model `--upstream-model` (MORLHF: the nearest policy's label,
  one LoRA module per policy). Rewarded Soups mixes adapters per preference, which vLLM's LoRA
  serving cannot do: a Soups run is served in-process only.
"""

from __future__ import annotations

import asyncio
import json

from .batching import BatchingEngine, EngineBusy, GenRequest

__all__ = ["EngineBusy", "InProcessEngine", "UpstreamEngine"]


class InProcessEngine:
    def __init__(
        self, generator=None, max_batch_size: int = 16, batch_window: float = 0.02, max_queue: int = 64, loader=None
    ):
        self.batching = BatchingEngine(generator, max_batch_size, batch_window, max_queue, loader=loader)

    @property
    def generator(self):
        return self.batching.generator

    async def run(self, text: str, condition, max_tokens: int, temperature: float, top_p: float, seed):
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
                if event[0] in ("done", "error"):
                    return
        finally:  # the client went away (or the answer is complete): its row stops at the next token
            request.cancelled.set()

    def stats(self) -> dict:
        return self.batching.snapshot()

    def close(self) -> None:
        self.batching.close()


class UpstreamEngine:
    def __init__(self, url: str, model_for, api_key: str | None = None, max_queue: int = 64, timeout: float = 600):
        import httpx

        self.url, self.model_for = url.rstrip("/"), model_for
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(headers=headers, timeout=timeout)
        self.max_queue, self.running = max_queue, 0
        self.counters = {"requests": 0, "upstream_errors": 0, "generated_tokens": 0}

    async def run(self, text: str, condition, max_tokens: int, temperature: float, top_p: float, seed):
        if self.running >= self.max_queue:
            raise EngineBusy(f"{self.running} requests are running (max_queue {self.max_queue})")
        self.running += 1
        self.counters["requests"] += 1
        body = {
            "model": self.model_for(condition),
            "prompt": text,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if seed is not None:
            body["seed"] = seed
        answer, reason, tokens = "", "stop", 0
        try:
            async with self.client.stream("POST", f"{self.url}/completions", json=body) as response:
                if response.status_code != 200:
                    self.counters["upstream_errors"] += 1
                    detail = (await response.aread()).decode(errors="replace")[:300]
                    yield ("error", f"upstream {self.url} answered {response.status_code}: {detail}")
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
                            yield ("delta", choice["text"])
                        reason = choice.get("finish_reason") or reason
            self.counters["generated_tokens"] += tokens
            yield ("done", reason, answer, tokens)
        finally:
            self.running -= 1

    def stats(self) -> dict:
        return {**self.counters, "running": self.running, "upstream": self.url}

    def close(self) -> None:
        pass
