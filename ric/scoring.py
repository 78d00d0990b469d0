"""Scoring (prompt, response) rows with every reward of a run, batched, optionally in resumable chunks.

`score_responses` returns the raw scores as a (rows, rewards) array. `score_chunked` does the same
through `run_chunked`: the scores are written chunk by chunk, so a crash loses at most one chunk,
and under `accelerate launch` each process scores its own share of the chunks (the reward models
of the paper are GPT-2-large and DeBERTa-large: scoring 300k rows on one process would outlast a
process group's timeout while the others wait).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .chunks import run_chunked

logger = logging.getLogger(__name__)


def score_responses(scorers, prompts, responses, progress: bool = True) -> np.ndarray:
    """Raw scores, shape (rows, rewards), every reward batched."""
    columns = []
    for scorer in scorers:
        start = time.time()
        columns.append(scorer(list(prompts), list(responses), progress=progress))
        logger.info("scored %d rows with %s in %.1fs", len(prompts), scorer.name, time.time() - start)
    return np.asarray(columns, dtype=np.float64).T.reshape(len(prompts), len(scorers))


def score_chunked(
    folder: str | Path,
    prompts,
    responses,
    names,
    load_scorers,
    chunk_size: int,
    progress: bool = True,
    desc: str = "scoring",
) -> np.ndarray:
    """`score_responses` in resumable chunks written under `folder` (sharded across processes).

    `load_scorers()` builds the scorers of `names`; it is called only if some chunk is left to score."""
    items = [{"prompt": p, "response": r} for p, r in zip(prompts, responses)]
    loaded = []

    def work(chunk):
        if not loaded:
            loaded.extend(load_scorers())
        raw = score_responses(loaded, [c["prompt"] for c in chunk], [c["response"] for c in chunk], progress=False)
        return [{"scores": row} for row in raw.tolist()]

    rows = run_chunked(folder, items, chunk_size, work, desc, progress, tag={"rewards": list(names)})
    return np.asarray([r["scores"] for r in rows], dtype=np.float64).reshape(len(items), len(names))
