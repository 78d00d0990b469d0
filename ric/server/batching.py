"""The in-process engine of `ric serve`: requests that arrive within a short window share forward passes.

A RiC request differs from another only in its prompt text (the preference is in the score tags), so
one batched decode answers every preference at once. A worker thread takes the first waiting request,
gathers the others that arrive less than `batch_window` seconds apart (up to `max_batch_size`, for at
most 5 windows), groups them by model set-up (one group for RiC; one per mix or policy for Soups and
MORLHF), and decodes each group with the KV cache: `StreamTap` draws each row's next token with the
row's own temperature, top-p and seed and streams the row's text as it grows; a row ends at its end
token, a turn marker, its `max_tokens`, or when its client has gone, and leaves the batch (its cache
rows are dropped), so the forward passes shrink as answers finish. Requests that arrive while a batch
runs wait for the next one."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


class EngineBusy(Exception):
    """The engine's queue is full: the caller answers 429 with Retry-After."""


@dataclass
class GenRequest:
    """One completion to produce. Events go to `events` on the server's event loop:
    ("delta", text), then ("done", finish_reason, full_text, completion_tokens) or ("error", message)."""

    text: str  # the formatted prompt (score tags in for RiC)
    condition: object  # ric.generation.Condition
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    prompt_tokens: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, *event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class StreamTap:
    """A logits processor that draws every row's next token (its own temperature, top-p and seed) and
    streams the row's text as it grows; `finished[i]` tells the decode loop which rows are done."""

    def __init__(self, requests: list[GenRequest], tokenizer, eos_ids: set[int], stop_markers=()):
        import torch

        self.requests, self.tokenizer, self.eos_ids, self.stop_markers = requests, tokenizer, eos_ids, stop_markers
        self.temperature = torch.tensor([max(r.temperature, 1e-6) for r in requests])
        self.greedy = torch.tensor([r.temperature == 0 for r in requests])
        self.top_p = torch.tensor([r.top_p for r in requests], dtype=torch.float32)
        self.generators = [torch.Generator().manual_seed(r.seed) if r.seed is not None else None for r in requests]
        self.ids: list[list[int]] = [[] for _ in requests]
        self.sent = [""] * len(requests)
        self.finished = [False] * len(requests)
        self.reason = ["length"] * len(requests)

    def draw(self, scores, rows):
        """The next token of each of `rows` (tap row indices), from their logits `scores` (one row each)."""
        import torch

        from ..sampling import nucleus

        logits = scores.float() / self.temperature[rows, None]
        ids, probs, fallback = nucleus(logits, self.top_p[rows])
        tokens = torch.empty(len(rows), dtype=torch.long)
        for i, row in enumerate(rows.tolist()):  # each row's own random stream when it has a seed
            tokens[i] = ids[i, torch.multinomial(probs[i], 1, generator=self.generators[row])]
        if fallback is not None:
            where, full_ids, full_probs = fallback
            for j, i in enumerate(where.tolist()):
                row = int(rows[i])
                tokens[i] = full_ids[j, torch.multinomial(full_probs[j], 1, generator=self.generators[row])]
        return torch.where(self.greedy[rows], scores.argmax(dim=-1), tokens)

    def step(self, scores, rows):
        """Draw and advance `rows`; returns their tokens."""
        tokens = self.draw(scores, rows)
        for row, token in zip(rows.tolist(), tokens.tolist()):
            self.advance(row, token)
        return tokens

    def advance(self, row: int, token: int) -> None:
        request = self.requests[row]
        if request.cancelled.is_set():
            self.finish(row, "cancelled")
            return
        if token in self.eos_ids:
            self.finish(row, "stop")
            return
        self.ids[row].append(token)
        text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
        cut = min((i for i in (text.find(m) for m in self.stop_markers) if i >= 0), default=-1)
        if cut >= 0:  # the model started a new turn on its own: the answer ends before it
            text = text[:cut]
        if not text.endswith("\ufffd") and text.startswith(self.sent[row]) and len(text) > len(self.sent[row]):
            request.emit("delta", text[len(self.sent[row]) :])
            self.sent[row] = text
        if cut >= 0:
            self.finish(row, "stop")
        elif len(self.ids[row]) >= request.max_tokens:
            self.finish(row, "length")

    def finish(self, row: int, reason: str) -> None:
        self.finished[row], self.reason[row] = True, reason

    def close(self) -> None:
        """Every row's final event, once generation has returned."""
        for row, request in enumerate(self.requests):
            request.emit("done", self.reason[row], self.sent[row], len(self.ids[row]))


class BatchingEngine:
    """Runs `GenRequest`s on a `PolicyGenerator`'s model in a worker thread, batched."""

    def __init__(self, generator, max_batch_size: int = 16, batch_window: float = 0.02, max_queue: int = 64):
        from ..generation import STOP_MARKERS, eos_ids

        self.generator = generator
        self.max_batch_size, self.batch_window, self.max_queue = max_batch_size, batch_window, max_queue
        self.stop_markers = STOP_MARKERS.get(generator.info.template, ())
        self.eos_ids = eos_ids(generator.model, generator.tokenizer)
        self.waiting: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.stats = {
            "requests": 0,
            "batches": 0,
            "rows": 0,
            "largest_batch": 0,
            "cancelled": 0,
            "queued": 0,
            "running": 0,
            "generated_tokens": 0,
        }
        self.batch_sizes: dict[int, int] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._work, name="ric-batching", daemon=True)
        self.thread.start()

    def load(self) -> int:
        return self.stats["queued"] + self.stats["running"]

    def submit(self, request: GenRequest) -> None:
        with self.lock:
            if self.load() >= self.max_queue:
                raise EngineBusy(f"{self.load()} requests are waiting or running (max_queue {self.max_queue})")
            self.stats["queued"] += 1
            self.stats["requests"] += 1
        self.waiting.put(request)

    def snapshot(self) -> dict:
        with self.lock:
            return {**self.stats, "batch_sizes": dict(sorted(self.batch_sizes.items()))}

    def close(self) -> None:
        self.stopping.set()
        self.waiting.put(None)
        self.thread.join(timeout=60)

    def _gather(self) -> list[GenRequest]:
        first = self.waiting.get()
        if first is None:
            return []
        # the window slides: it closes `batch_window` after the latest arrival (at most 5 windows in all),
        # so clients that answer a finished batch one after another still share the next one
        batch = [first]
        start = last = time.monotonic()
        while len(batch) < self.max_batch_size:
            remaining = min(last + self.batch_window, start + 5 * self.batch_window) - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self.waiting.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                self.waiting.put(None)
                break
            batch.append(item)
            last = time.monotonic()
        return batch

    def _work(self) -> None:
        while not self.stopping.is_set():
            batch = self._gather()
            if not batch:
                continue
            with self.lock:
                self.stats["queued"] -= len(batch)
                self.stats["running"] += len(batch)
            try:
                for key in dict.fromkeys(r.condition.key for r in batch):
                    self._run([r for r in batch if r.condition.key == key])
            finally:
                with self.lock:
                    self.stats["running"] -= len(batch)

    def _run(self, group: list[GenRequest]) -> None:
        live = [r for r in group if not r.cancelled.is_set()]
        for request in group:
            if request.cancelled.is_set():
                request.emit("done", "cancelled", "", 0)
        with self.lock:
            self.stats["cancelled"] += len(group) - len(live)
        if not live:
            return
        try:
            tap = self._generate(live)
        except Exception as err:  # a failed batch answers each of its requests, and the engine goes on
            logger.exception("generation failed")
            for request in live:
                request.emit("error", f"{type(err).__name__}: {err}")
            return
        tap.close()
        with self.lock:
            self.stats["batches"] += 1
            self.stats["rows"] += len(live)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(live))
            self.batch_sizes[len(live)] = self.batch_sizes.get(len(live), 0) + 1
            self.stats["generated_tokens"] += sum(len(ids) for ids in tap.ids)
            self.stats["cancelled"] += sum(reason == "cancelled" for reason in tap.reason)

    def _generate(self, group: list[GenRequest]) -> StreamTap:
        import torch
        from transformers import DynamicCache

        generator = self.generator
        generator.activate(group[0].condition.key)
        tokenizer, model = generator.tokenizer, generator.model
        tokenizer.padding_side = "left"
        device = next(model.parameters()).device
        enc = tokenizer([r.text for r in group], return_tensors="pt", padding=True).to(device)
        tap = StreamTap(group, tokenizer, self.eos_ids, self.stop_markers)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = torch.arange(len(group))  # the tap row of each batch row still decoding
        cache = DynamicCache()
        with torch.inference_mode():
            out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, past_key_values=cache)
            for _ in range(max(r.max_tokens for r in group)):
                tokens = tap.step(out.logits[:, -1, :], rows)
                keep = torch.tensor([not tap.finished[row] for row in rows.tolist()])
                if not keep.any():
                    break
                if not keep.all():  # finished rows leave the batch and its cache
                    index = keep.nonzero().squeeze(1)
                    cache.batch_select_indices(index.to(device))
                    rows, tokens, mask, positions = rows[index], tokens[index], mask[index], positions[index]
                mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
                positions = positions[:, -1:] + 1
                out = model(
                    input_ids=tokens[:, None].to(device),
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=cache,
                )
        return tap
