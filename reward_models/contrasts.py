"""Contrastive prompts for TextNorm: the prompt with its content changed, K per prompt.

- `rules`: swap one word of the prompt for another of its kind, from the vocabulary below (colours, shapes
  and objects, attributes, numbers as words or digits): "a red circle" -> "a blue circle", "a red square";
  "two cats" -> "three cats". A prompt with no such word has no contrast.
- `dataset`: the K nearest other prompts of a pool (a JSONL file of {"prompt": ...} rows, e.g. the training
  data) by the cosine of their all-MiniLM-L6-v2 embeddings (the `relevance` reward's model).
- `file`: a JSONL file of {"prompt": ..., "contrasts": [...]} rows, written by hand or by a model.

Every source is deterministic under its seed (rules: which K of the possible swaps; the others have no
randomness). `check_contrast_file` refuses an empty or malformed file, or a contrast equal to its own
prompt, naming the line.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

SOURCES = ("rules", "dataset", "file")

# One word is swapped for another of its kind; multi-word kinds are not attempted.
VOCABULARY = {
    "colour": [
        "red",
        "blue",
        "green",
        "yellow",
        "orange",
        "purple",
        "pink",
        "brown",
        "black",
        "white",
        "grey",
        "gray",
        "cyan",
        "magenta",
    ],
    "shape": [
        "circle",
        "square",
        "triangle",
        "rectangle",
        "star",
        "hexagon",
        "pentagon",
        "diamond",
        "oval",
        "heart",
        "cross",
        "ring",
    ],
    "object": [
        "cat",
        "dog",
        "bird",
        "horse",
        "cow",
        "sheep",
        "car",
        "bus",
        "bicycle",
        "boat",
        "apple",
        "banana",
        "orange",
        "chair",
        "table",
        "cup",
        "book",
        "clock",
        "tree",
        "flower",
        "house",
        "phone",
        "ball",
        "hat",
    ],
    "plural": [
        "cats",
        "dogs",
        "birds",
        "horses",
        "cows",
        "sheep",
        "cars",
        "buses",
        "bicycles",
        "boats",
        "apples",
        "bananas",
        "chairs",
        "tables",
        "cups",
        "books",
        "clocks",
        "trees",
        "flowers",
        "houses",
        "phones",
        "balls",
        "hats",
        "circles",
        "squares",
        "triangles",
        "stars",
    ],
    "attribute": [
        "big",
        "small",
        "large",
        "tiny",
        "tall",
        "short",
        "wooden",
        "metal",
        "glass",
        "plastic",
        "old",
        "new",
        "round",
        "striped",
        "dotted",
        "shiny",
    ],
    "number": ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
    "digit": ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
}
_KIND = {}
for _kind, _words in VOCABULARY.items():
    for _word in _words:
        _KIND.setdefault(_word, _kind)  # "orange" is a colour first
_TOKEN = re.compile(r"[A-Za-z]+|\d+")


def _stable_seed(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{text}".encode()).digest()[:8], "big")


def _cased(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[:1].isupper() else word


def rule_contrasts(prompt: str, k: int, seed: int = 0) -> list[str]:
    """Up to `k` prompts that differ from `prompt` in one vocabulary word each (the same kind swapped in),
    chosen under `seed` (and the prompt itself), never the prompt itself, without repeats."""
    options = []
    for match in _TOKEN.finditer(prompt):
        word = match.group(0)
        kind = _KIND.get(word.lower())
        if kind is None:
            continue
        for other in VOCABULARY[kind]:
            if other != word.lower() and not (kind == "colour" and {other, word.lower()} == {"grey", "gray"}):
                options.append(prompt[: match.start()] + _cased(other, word) + prompt[match.end() :])
    options = list(dict.fromkeys(o for o in options if o != prompt))
    random.Random(_stable_seed(seed, prompt)).shuffle(options)
    return options[:k]


def _jsonl(path: Path, what: str):
    """(line number, row) of each non-empty line of a JSONL file; a line that is not JSON is refused by number."""
    if not path.exists():
        raise ValueError(f"{what}: {path} does not exist")
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{what} {path}, line {n}: not JSON ({err})") from None


def read_prompts(path) -> list[str]:
    """The distinct prompts of a JSONL file of {"prompt": ...} rows, in order."""
    path = Path(path)
    prompts = []
    for n, row in _jsonl(path, "contrasts pool"):
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f'contrasts pool {path}, line {n}: expected {{"prompt": <text>}}')
        prompts.append(row["prompt"])
    prompts = list(dict.fromkeys(prompts))
    if len(prompts) < 2:
        raise ValueError(f"contrasts pool {path}: {len(prompts)} distinct prompts; it needs at least 2")
    return prompts


def check_contrast_file(path) -> dict[str, list[str]]:
    """prompt -> its contrasts, from a JSONL file of {"prompt": ..., "contrasts": [...]} rows; refuses an empty
    or malformed file and a contrast equal to its own prompt, naming the line."""
    path = Path(path)
    table: dict[str, list[str]] = {}
    for n, row in _jsonl(path, "contrasts file"):
        contrasts = row.get("contrasts") if isinstance(row, dict) else None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("prompt"), str)
            or not isinstance(contrasts, list)
            or not contrasts
            or not all(isinstance(c, str) and c.strip() for c in contrasts)
        ):
            raise ValueError(
                f'contrasts file {path}, line {n}: expected {{"prompt": <text>, "contrasts": [<text>, ...]}} '
                "with at least one non-empty contrast"
            )
        if row["prompt"] in contrasts:
            raise ValueError(f"contrasts file {path}, line {n}: a contrast equals its own prompt {row['prompt']!r}")
        table.setdefault(row["prompt"], [])
        table[row["prompt"]] += [c for c in contrasts if c not in table[row["prompt"]]]
    if not table:
        raise ValueError(f'contrasts file {path}: empty; give one {{"prompt", "contrasts"}} row per prompt')
    return table


class NearestPrompts:
    """The K nearest other prompts of a pool by embedding cosine (all-MiniLM-L6-v2, as `relevance` embeds)."""

    def __init__(self, pool: list[str], device: str | None = None):
        from .text_scorers import RelevanceScorer

        self.pool = pool
        self.embedder = RelevanceScorer(device=device)
        self.vectors = self._embed(pool)

    def _embed(self, texts: list[str]):
        import torch

        return torch.cat([self.embedder.embed(texts[i : i + 128]) for i in range(0, len(texts), 128)])

    def __call__(self, prompts: list[str], k: int) -> list[list[str]]:
        vectors = self._embed(prompts)
        similarity = vectors @ self.vectors.T
        out = []
        for row, prompt in zip(similarity.tolist(), prompts):
            order = sorted(range(len(self.pool)), key=lambda j: (-row[j], j))  # ties: the pool's order
            out.append([self.pool[j] for j in order if self.pool[j] != prompt][:k])
        return out
