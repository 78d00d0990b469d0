"""TextNorm's arithmetic (Kim et al., ICLR 2024, "Confidence-aware Reward Optimization for Fine-tuning
Text-to-Image Models"): a prompt-dependent reward made comparable across prompts.

An output is scored under its own prompt and under K contrastive prompts (the prompt with its content
changed); the K + 1 scores of a row are scaled min-max to [0, scale], passed through a softmax, and
the own prompt's probability is the reward. Several reward models combine by the mean of their
probabilities, or the mean minus lambda times their variance ("uncertainty"). These functions are the
arithmetic only, plain NumPy; the contrastive prompts and the scorers come from elsewhere.
"""

from __future__ import annotations

import numpy as np

ENSEMBLES = ("mean", "uncertainty")


def textnorm_probabilities(scores, scale: float) -> np.ndarray:
    """Each row's own-prompt probability: `scores` of shape (n, 1 + K), the own prompt in column 0 and the K
    contrastive prompts after it; per row min-max scaled to [0, scale], then softmax, column 0 returned.
    A row whose scores are all equal gives 1 / (1 + K) (no evidence either way)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"scores: expected shape (n, 1 + K) with K >= 1 contrastive prompts, got {scores.shape}; "
            "column 0 is the own prompt's score"
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores: NaN or infinite values; every score must be finite")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    low, high = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    scaled = scale * (scores - low) / span
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    weights = np.exp(scaled)
    return weights[:, 0] / weights.sum(axis=1)


def combine_probabilities(probabilities, method: str = "mean", lam: float = 0.0) -> np.ndarray:
    """An ensemble of TextNorm rewards: `probabilities` of shape (models, n) -> (n,), their mean, or with
    `uncertainty` the mean minus `lam` times their variance across models."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] < 1:
        raise ValueError(f"probabilities: expected shape (models, n), got {probabilities.shape}")
    if method not in ENSEMBLES:
        raise ValueError(f"method: {method!r} is not one of {list(ENSEMBLES)}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    mean = probabilities.mean(axis=0)
    if method == "mean":
        return mean
    return mean - lam * probabilities.var(axis=0)
