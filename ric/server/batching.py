"""The in-process engine of `ric serve`: requests that arrive within a short window share forward passes.

A RiC request differs from another only in its prompt text (the preference is in the score tags), so
one batched decode answers every preference at once. A worker thread takes the first waiting request,
gathers the others that arrive less than `batch_window` seconds apart (up to `max_batch_size`, for at
most 5 windows), groups them by model set-up (one group for RiC; one per mix or policy for Soups and
MORLHF), and decodes each group with the KV cache: `StreamTap` draws each row's next token with the
row's own temperature, top-p and seed and streams the row's text as it grows. A row ends at its end
token, a turn marker, its `max_tokens`, or when its client has gone: its answer is complete at once,
and it leaves the batch (its cache rows are dropped). Requests of the same set-up that arrive while a
batch decodes join it between two steps (continuous batching): they are prefilled on their own, their
cache is left-padded to the running batch's length (or the batch's to theirs) and joined to it, so a
finished row's place is taken instead of the batch running on with fewer rows. Requests of another
set-up wait until the running batch is done."""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from .events import Delta, Done, Event, Failed

logger = logging.getLogger(__name__)


class EngineBusy(Exception):
    """The engine's queue is full: the caller answers 429 with Retry-After."""


@dataclass
class GenRequest:
    """One completion to produce. Its events (`ric.server.events`) go to `events` on the server's event loop."""

    text: str  # the formatted prompt (score tags in for RiC)
    condition: object  # ric.generation.Condition
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class StreamTap:
    """Draws every row's next token (its own temperature, top-p and seed), streams the row's text as it
    grows, and answers a row as soon as it ends; `finished[i]` tells the decode loop which rows are done.
    Rows can be added while others decode (`add`)."""

    def __init__(self, requests: list[GenRequest], tokenizer, eos_ids: set[int], stop_markers=(), on_finish=None):
        import torch

        self.tokenizer, self.eos_ids, self.stop_markers = tokenizer, eos_ids, stop_markers
        self.on_finish = on_finish  # (row, reason) when a row's answer is complete: the engine's counters
        self.requests: list[GenRequest] = []
        self.temperature, self.top_p = torch.empty(0), torch.empty(0)
        self.greedy = torch.empty(0, dtype=torch.bool)
        self.generators: list = []
        self.ids: list[list[int]] = []
        self.sent: list[str] = []
        self.finished: list[bool] = []
        self.reason: list[str] = []
        self.add(requests)

    def add(self, requests: list[GenRequest]) -> list[int]:
        """Rows for `requests`; returns their row indices."""
        import torch

        first = len(self.requests)
        self.requests += requests
        self.temperature = torch.cat([self.temperature, torch.tensor([max(r.temperature, 1e-6) for r in requests])])
        self.greedy = torch.cat([self.greedy, torch.tensor([r.temperature == 0 for r in requests], dtype=torch.bool)])
        self.top_p = torch.cat([self.top_p, torch.tensor([r.top_p for r in requests], dtype=torch.float32)])
        self.generators += [torch.Generator().manual_seed(r.seed) if r.seed is not None else None for r in requests]
        self.ids += [[] for _ in requests]
        self.sent += [""] * len(requests)
        self.finished += [False] * len(requests)
        self.reason += ["length"] * len(requests)
        return list(range(first, len(self.requests)))

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
            request.emit(Delta(text[len(self.sent[row]) :]))
            self.sent[row] = text
        if cut >= 0:
            self.finish(row, "stop")
        elif len(self.ids[row]) >= request.max_tokens:
            self.finish(row, "length")

    def finish(self, row: int, reason: str) -> None:
        """The row's answer is complete: its client gets it now, not when the whole batch is done."""
        self._end(row, reason, Done(reason, self.sent[row], len(self.ids[row])))

    def fail(self, message: str) -> None:
        """An error event for every row still open (the decode failed)."""
        for row in range(len(self.requests)):
            if not self.finished[row]:
                self._end(row, "error", Failed(message))

    def _end(self, row: int, reason: str, event: Event) -> None:
        """Where every row ends: marked finished, its last event sent, the engine's counters told."""
        self.finished[row], self.reason[row] = True, reason
        self.requests[row].emit(event)
        if self.on_finish is not None:
            self.on_finish(row, reason)

    def close(self) -> None:
        """The final event of every row still open (after a stop mid-decode)."""
        for row in range(len(self.requests)):
            if not self.finished[row]:
                self.finish(row, self.reason[row])


class BatchingEngine:
    """Runs `GenRequest`s on a `PolicyGenerator`'s model in a worker thread, batched."""

    def __init__(
        self, generator=None, max_batch_size: int = 16, batch_window: float = 0.02, max_queue: int = 64, loader=None
    ):
        """`generator`: a loaded PolicyGenerator; or `loader`, a function that loads one, called in the worker
        thread that runs every forward pass. Prefer `loader`: on a CPU, a model loaded by one thread and run
        by another decoded 1.5-2x slower here (bf16: 40-56 ms a step at batch 1 against 22-27 ms when the
        same thread loads and runs it); the loading thread's OpenMP workers stay beside the running one's."""
        self.max_batch_size, self.batch_window, self.max_queue = max_batch_size, batch_window, max_queue
        self.waiting: queue.Queue = queue.Queue()
        self.deferred: collections.deque = collections.deque()  # another set-up's requests, for the next batch
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
            "joined_running_batch": 0,
        }
        self.batch_sizes: dict[int, int] = {}
        self.stopping = threading.Event()
        self.ready, self.load_error = threading.Event(), None
        load = loader if loader is not None else (lambda: generator)
        self.thread = threading.Thread(target=self._start, args=(load,), name="ric-batching", daemon=True)
        self.thread.start()
        self.ready.wait()
        if self.load_error is not None:
            raise self.load_error

    def _start(self, load) -> None:
        """The worker: load the generator (here, in the thread that runs the model), then serve."""
        from ..generation import STOP_MARKERS, eos_ids

        try:
            generator = self.generator = load()
            self.stop_markers = STOP_MARKERS.get(generator.info.template, ())
            self.eos_ids = eos_ids(generator.model, generator.tokenizer)
            # the prefill needs the last position's logits only: the output layer over every prompt token is a
            # fifth of a small model's prefill (models that take `logits_to_keep`, as transformers' LMs do)
            model = generator.model
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            takes = "logits_to_keep" in inspect.signature(base.forward).parameters
            self.last_logits_only = {"logits_to_keep": 1} if takes else {}
        except BaseException as err:  # the constructor raises it in the caller's thread
            self.load_error = err
            return
        finally:
            self.ready.set()
        self._work()

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

    def _take(self, timeout: float | None = None):
        """The next request (those set aside by a running batch first); None when closing. Raises
        queue.Empty when `timeout` passes."""
        if self.deferred:
            return self.deferred.popleft()
        return self.waiting.get() if timeout is None else self.waiting.get(timeout=timeout)

    def _gather(self) -> list[GenRequest]:
        first = self._take()
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
                item = self._take(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                self.waiting.put(None)
                break
            batch.append(item)
            last = time.monotonic()
        return batch

    def _admit(self, key: str, room: int) -> list[GenRequest]:
        """Waiting requests of set-up `key` that can join the running batch now (at most `room`); those of
        another set-up are set aside for the next batch, and while any is, nothing joins (no starvation)."""
        admitted: list[GenRequest] = []
        while len(admitted) < room and not self.deferred:
            try:
                item = self.waiting.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.waiting.put(None)
                break
            if item.condition.key == key and not item.cancelled.is_set():
                admitted.append(item)
            else:
                self.deferred.append(item)
        if admitted:
            with self.lock:
                self.stats["queued"] -= len(admitted)
                self.stats["running"] += len(admitted)
                self.stats["joined_running_batch"] += len(admitted)
        return admitted

    def _work(self) -> None:
        while not self.stopping.is_set():
            batch = self._gather()
            if not batch:
                continue
            for key in dict.fromkeys(r.condition.key for r in batch):
                self._run([r for r in batch if r.condition.key == key])

    def _run(self, group: list[GenRequest]) -> None:
        live = [r for r in group if not r.cancelled.is_set()]
        for request in group:
            if request.cancelled.is_set():
                request.emit(Done("cancelled", "", 0))
        with self.lock:
            self.stats["queued"] -= len(group)
            self.stats["running"] += len(live)
            self.stats["cancelled"] += len(group) - len(live)
        tap = None

        def finished(row: int, reason: str) -> None:
            # a row leaves the count when its answer is complete: with requests joining the running batch,
            # the batch itself may go on for as long as clients keep sending
            with self.lock:
                self.stats["running"] -= 1
                self.stats["generated_tokens"] += len(tap.ids[row])
                self.stats["cancelled"] += reason == "cancelled"

        tap = StreamTap(live, self.generator.tokenizer, self.eos_ids, self.stop_markers, on_finish=finished)
        largest = len(live)
        try:
            if live:
                largest = self._decode(tap)
        except Exception as err:  # a failed batch answers each of its open requests, and the engine goes on
            logger.exception("generation failed")
            tap.fail(f"{type(err).__name__}: {err}")
        finally:
            tap.close()
            with self.lock:
                if tap.requests:
                    self.stats["batches"] += 1
                    self.stats["rows"] += len(tap.requests)
                    self.stats["largest_batch"] = max(self.stats["largest_batch"], largest)
                    self.batch_sizes[len(live)] = self.batch_sizes.get(len(live), 0) + 1

    def _prefill(self, texts: list[str]):
        """(next-token logits, cache, attention mask, last positions) of new rows, left-padded."""
        from transformers import DynamicCache

        tokenizer, model = self.generator.tokenizer, self.generator.model
        tokenizer.padding_side = "left"
        device = next(model.parameters()).device
        enc = tokenizer(texts, return_tensors="pt", padding=True).to(device)
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # a model of two (PRT: the base steered by r) brings a cache of its own that holds both models' layers
        cache = model.new_cache() if hasattr(model, "new_cache") else DynamicCache()
        out = model(
            input_ids=enc["input_ids"],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            **self.last_logits_only,
        )
        return out.logits[:, -1, :], cache, mask, positions[:, -1:]

    def _decode(self, tap: StreamTap) -> int:
        """Decode the tap's rows with the KV cache until every row has ended, letting requests of the same
        set-up join between steps; returns the largest number of rows decoded together."""
        import torch

        key = tap.requests[0].condition.key
        self.generator.activate(key)
        model = self.generator.model
        device = next(model.parameters()).device
        largest = len(tap.requests)
        with torch.inference_mode():
            logits, cache, mask, last = self._prefill([r.text for r in tap.requests])
            rows = torch.arange(len(tap.requests))  # the tap row of each batch row still decoding
            while len(rows):
                tokens = tap.step(logits, rows)
                keep = torch.tensor([not tap.finished[row] for row in rows.tolist()], dtype=torch.bool)
                if not keep.all():  # finished rows leave the batch and its cache
                    index = keep.nonzero().squeeze(1)
                    rows, tokens, mask, last = rows[index], tokens[index], mask[index], last[index]
                    if len(rows):
                        cache.batch_select_indices(index.to(device))
                        cache, mask = trim_left_padding(cache, mask)
                if len(rows):
                    mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
                    last = last + 1
                    ids = tokens[:, None].to(device)
                    out = model(input_ids=ids, attention_mask=mask, position_ids=last, past_key_values=cache)
                    logits = out.logits[:, -1, :]
                joining = self._admit(key, self.max_batch_size - len(rows))
                if joining:
                    new_rows = torch.tensor(tap.add(joining))
                    new_logits, new_cache, new_mask, new_last = self._prefill([r.text for r in joining])
                    if len(rows):
                        cache, mask = join_caches(cache, mask, new_cache, new_mask)
                        logits, last = torch.cat([logits, new_logits]), torch.cat([last, new_last])
                        rows = torch.cat([rows, new_rows])
                    else:
                        cache, mask, logits, last, rows = new_cache, new_mask, new_logits, new_last, new_rows
                largest = max(largest, len(rows))
        return largest


def cache_tensors(cache) -> list[tuple]:
    """Each cache layer's (keys, values), read through the cache's `layers` (nothing is changed)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def rebuilt_cache(cache, tensors: list[tuple]):
    """A new cache of `cache`'s kind holding `tensors` (one (keys, values) per layer), made through
    transformers' public constructor (`DynamicCache(ddp_cache_data=...)`, which fills each layer with its
    `update`): the decode loop never edits a cache's internals. A cache of several models (PRT's
    `SteeringCache`) rebuilds each of its own."""
    if hasattr(cache, "rebuilt"):
        return cache.rebuilt(tensors)
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=tensors)


def trim_left_padding(cache, mask):
    """Drop the cache columns that are padding for every row left (those of rows that have gone): a batch
    that rows keep joining would otherwise grow by one column a step for as long as it runs, and every
    step copies the whole cache. Positions are per row, so no row's answer changes."""
    start = int(mask.any(dim=0).int().argmax())
    if start == 0:
        return cache, mask
    tensors = [(keys[:, :, start:], values[:, :, start:]) for keys, values in cache_tensors(cache)]
    return rebuilt_cache(cache, tensors), mask[:, start:]


def join_caches(cache, mask, other, other_mask):
    """One batch of two left-padded KV caches (and attention masks) of possibly different lengths: the
    shorter is padded on the left, where its mask is 0, so no row attends to the padding."""
    import torch

    def pad(tensor, width: int, dim: int):
        if width == 0:
            return tensor
        shape = list(tensor.shape)
        shape[dim] = width
        return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

    length, other_length = mask.shape[1], other_mask.shape[1]
    grow, other_grow = max(0, other_length - length), max(0, length - other_length)
    tensors = [
        (torch.cat([pad(k, grow, 2), pad(k2, other_grow, 2)]), torch.cat([pad(v, grow, 2), pad(v2, other_grow, 2)]))
        for (k, v), (k2, v2) in zip(cache_tensors(cache), cache_tensors(other))
    ]
    return rebuilt_cache(cache, tensors), torch.cat([pad(mask, grow, 1), pad(other_mask, other_grow, 1)])
