"""Pareto fronts, hypervolume and preference-following (all objectives maximised).

`hypervolume` is exact in any dimension >= 2: a sweep in 2-D and, above that, slicing along the
last objective (the HSO recursion), which is fast for the few dozen points of an evaluation grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_points(points, name: str = "points") -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a list of points (a 2-D array), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: every coordinate must be finite")
    return array


def pareto_front(points) -> list[list[float]]:
    """The non-dominated points (maximisation), in input order, duplicates kept once.

    A point is dominated when another is >= on every objective and > on at least one.
    """
    array = _as_points(points)
    keep: list[int] = []
    for i, p in enumerate(array):
        dominated = np.any(np.all(array >= p, axis=1) & np.any(array > p, axis=1))
        duplicate = any(np.array_equal(array[j], p) for j in keep)
        if not dominated and not duplicate:
            keep.append(i)
    return array[keep].tolist()


def _hv_2d(points: np.ndarray, reference: np.ndarray) -> float:
    order = np.argsort(-points[:, 0])
    volume, best_y = 0.0, reference[1]
    for x, y in points[order]:
        if y > best_y:
            volume += (x - reference[0]) * (y - best_y)
            best_y = y
    return volume


def _hv(points: np.ndarray, reference: np.ndarray) -> float:
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 2:
        return _hv_2d(points, reference)
    # Slice along the last objective: between consecutive levels, the cross-section is the
    # (d-1)-dimensional hypervolume of the points that reach at least that level.
    levels = np.unique(points[:, -1])[::-1]
    volume = 0.0
    for k, level in enumerate(levels):
        below = levels[k + 1] if k + 1 < len(levels) else reference[-1]
        section = points[points[:, -1] >= level][:, :-1]
        volume += _hv(np.asarray(pareto_front(section)), reference[:-1]) * (level - below)
    return volume


def hypervolume(points, reference: Sequence[float]) -> float:
    """Volume dominated by `points` and bounded below by `reference` (maximisation, dimension >= 2).

    Points that do not strictly exceed the reference on every objective add nothing.
    """
    array = _as_points(points)
    ref = np.asarray(reference, dtype=np.float64)
    if array.size == 0:
        return 0.0
    if ref.shape != (array.shape[1],):
        raise ValueError(f"reference: need {array.shape[1]} coordinates, got {list(np.atleast_1d(ref))}")
    if array.shape[1] < 2:
        raise ValueError("hypervolume needs at least 2 objectives")
    array = array[np.all(array > ref, axis=1)]
    if len(array) == 0:
        return 0.0
    return float(_hv(np.asarray(pareto_front(array)), ref))


def preference_following(weights, obtained) -> list[float]:
    """Per objective, Spearman's rank correlation between w_i and the mean obtained reward i over the
    grid: 1 when raising an objective's weight always raises its reward."""
    from scipy.stats import spearmanr

    w, r = np.asarray(weights, dtype=np.float64), np.asarray(obtained, dtype=np.float64)
    result = []
    for i in range(w.shape[1]):
        if np.ptp(w[:, i]) == 0 or np.ptp(r[:, i]) == 0:
            result.append(float("nan"))
            continue
        result.append(float(spearmanr(w[:, i], r[:, i]).statistic))
    return result


def pearson_matrix(raw: np.ndarray) -> list[list[float | None]]:
    """Pearson correlations between the columns of `raw`; None where a column is constant."""
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = np.corrcoef(raw.T)
    return [[float(v) if np.isfinite(v) else None for v in row] for row in matrix]


BOOTSTRAP_RESAMPLES = 1000


def bootstrap_draws(num_prompts: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, num_prompts) prompt indices drawn with replacement: one row per bootstrap resample. Pass
    the same draws to every front that answered the same prompts and their differences are paired."""
    return np.random.default_rng(seed).integers(0, num_prompts, size=(resamples, num_prompts))


def bootstrap_front(scores, weights, reference: Sequence[float], draws: np.ndarray) -> dict:
    """The front's statistics recomputed on each resample of prompts.

    `scores`: (points, prompts, objectives) raw rewards, every point answering the same prompts in the same
    order; `weights`: (points, objectives) preferences; `draws`: `bootstrap_draws`. Each resample takes
    the same prompts for every point, so the points' means move together as they would on another set of
    questions. Returns {"hypervolume": (resamples,), "preference_following": (resamples, objectives) or
    None (fewer than 3 points)}; `interval` turns either into a percentile interval."""
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if scores.ndim != 3 or scores.shape[1] != draws.shape[1]:
        raise ValueError(f"scores: expected (points, {draws.shape[1]} prompts, objectives), got {scores.shape}")
    means = scores[:, draws, :].mean(axis=2)  # (points, resamples, objectives)
    hv = np.array([hypervolume(means[:, b], reference) for b in range(len(draws))])
    following = None
    if len(weights) > 2:
        following = np.array([preference_following(weights, means[:, b]) for b in range(len(draws))])
    return {"hypervolume": hv, "preference_following": following}


def interval(values, level: float = 0.95) -> list[float] | None:
    """The central `level` percentile interval of bootstrap values (NaN resamples left out), rounded to 4
    decimals; None when no resample gave a value."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1 - level) / 2 * 100
    return [round(float(v), 4) for v in np.percentile(values, [tail, 100 - tail])]
