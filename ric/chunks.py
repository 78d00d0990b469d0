"""Resumable, chunked work: generations are written chunk by chunk as they complete.

A rerun after a crash finds the chunks already on disk and does only the missing ones, so nothing
is lost and nothing is generated twice. The work list must be deterministic (seeded); a manifest
holding its fingerprint refuses to mix chunks of a different work list into the same folder.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from .rundir import RunFileError, atomic_write_text, process_state, read_json, write_json


def fingerprint(items: list[dict]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps(item, sort_keys=True).encode())
    return digest.hexdigest()[:16]


class ChunkStore:
    """The chunk files of one work list under `folder`, with a manifest of the list's fingerprint.

    `tag` (JSON-able) joins the fingerprint: settings that shape every row (e.g. the reward names)
    without being part of each item."""

    def __init__(self, folder: str | Path, items: list[dict], chunk_size: int, tag=None):
        self.folder = Path(folder)
        self.items, self.chunk_size = items, chunk_size
        self.num_chunks = (len(items) + chunk_size - 1) // chunk_size
        marked = items if tag is None else [{"tag": tag}, *items]
        manifest = {"num_items": len(items), "chunk_size": chunk_size, "fingerprint": fingerprint(marked)}
        path = self.folder / "manifest.json"
        if path.exists():
            existing = read_json(path)
            if existing != manifest:
                raise RunFileError(
                    f"{self.folder} holds chunks of a different work list ({existing} vs {manifest}); "
                    "it was written with other settings. Remove the folder to start this stage over."
                )
        else:
            write_json(path, manifest)

    def chunk_path(self, index: int) -> Path:
        return self.folder / f"chunk_{index:05d}.jsonl"

    def done(self, index: int) -> bool:
        return self.chunk_path(index).exists()

    def num_done(self) -> int:
        return sum(self.done(i) for i in range(self.num_chunks))

    def write(self, index: int, rows: list[dict]) -> None:
        atomic_write_text(self.chunk_path(index), "".join(json.dumps(r) + "\n" for r in rows))

    def read(self, index: int) -> list[dict]:
        path = self.chunk_path(index)
        with open(path, encoding="utf-8") as handle:
            lines = [line for line in handle if line.strip()]
        try:
            return [json.loads(line) for line in lines]
        except json.JSONDecodeError:
            raise RunFileError(
                f"{path} is damaged (not JSON lines); remove it and run again to redo that chunk"
            ) from None

    def read_all(self) -> list[dict]:
        return [row for i in range(self.num_chunks) for row in self.read(i)]


def distributed_rank() -> tuple[int, int]:
    """(process index, number of processes) under `accelerate launch` or `torchrun`; (0, 1) otherwise."""
    state = process_state()
    return state.process_index, state.num_processes


def barrier() -> None:
    process_state().wait_for_everyone()


def run_chunked(
    folder: str | Path,
    items: list[dict],
    chunk_size: int,
    work: Callable[[list[dict]], list[dict]],
    desc: str = "chunks",
    progress: bool = True,
    tag=None,
) -> list[dict]:
    """Apply `work` to `items` chunk by chunk, skipping chunks already written; return every row.

    Under `accelerate launch` with several processes, chunk i belongs to process i mod N: the work
    is sharded, each chunk is written once by its owner, and every process returns all rows after
    a barrier. Each process appends one line per chunk it wrote (index, rows, seconds) to its own
    `written_by_rank<r>.jsonl` in `folder`: who did which part of the work, and how long it took.
    """
    rank, world = distributed_rank()
    store = ChunkStore(folder, items, chunk_size, tag)
    todo = [i for i in range(store.num_chunks) if not store.done(i) and i % world == rank]
    progress = progress and rank == 0
    if progress and store.num_chunks:
        from tqdm.auto import tqdm

        bar = tqdm(total=store.num_chunks, initial=store.num_chunks - len(todo), desc=desc, unit="chunk")
    else:
        bar = None
    for index in todo:
        start = time.time()
        rows = work(items[index * chunk_size : (index + 1) * chunk_size])
        store.write(index, rows)
        record = {"chunk": index, "rows": len(rows), "world": world, "seconds": round(time.time() - start, 2)}
        with open(store.folder / f"written_by_rank{rank}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if world > 1:
        barrier()
    return store.read_all()
