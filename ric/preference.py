"""Preference weights -> target scores (RiC's dynamic preference adjustment, paper stage 4).

The user picks weights w = (w_1..w_N); each objective's target is placed inside the normalised
score range [low_i, high_i] according to one of three mappings:

- `linear`: t_i = w_i (high_i - low_i) + low_i
- `l2`:     t_i = w_i / ||w||_2 (high_i - low_i) + low_i          (the paper's evaluation)
- `linf`:   the objective with the largest weight gets high_i (first index on ties); every other
            gets min(N w_i, 1) (high_i - low_i) + low_i

Targets are rounded to 1 decimal, as in the prompts. Also here: parsing and validating a
preference given by a user, and the evaluation grids (11 points for 2 objectives, the paper's 13
for 3, a simplex lattice beyond).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import numpy as np

PREFERENCE_METHODS = ("linear", "l2", "linf")

# The paper's 13 evaluation points for three objectives; its (0.33, 0.33, 0.33) is kept as exact
# thirds so that the weights sum to 1.
PAPER_GRID_3 = (
    (0.0, 0.0, 1.0),
    (0.0, 1.0, 0.0),
    (0.1, 0.1, 0.8),
    (0.1, 0.8, 0.1),
    (0.2, 0.2, 0.6),
    (0.2, 0.4, 0.4),
    (0.2, 0.6, 0.2),
    (1 / 3, 1 / 3, 1 / 3),
    (0.4, 0.4, 0.2),
    (0.4, 0.2, 0.4),
    (0.6, 0.2, 0.2),
    (0.8, 0.1, 0.1),
    (1.0, 0.0, 0.0),
)


def round1(x: float) -> float:
    """Round to 1 decimal, never returning -0.0."""
    value = round(float(x), 1)
    return 0.0 if value == 0 else value


def parse_preference(preference, num_objectives: int | None = None, field: str = "preference") -> list[float]:
    """Validate user-given weights ("0.2,0.8", [0.2, 0.8], ...) and return them summing to 1.

    Raises ValueError naming `field` for a wrong length, a negative, NaN or infinite weight, all
    zeros, or text that does not parse. Weights that do not sum to 1 are normalised with a warning.
    """
    if isinstance(preference, str):
        parts = [p for p in preference.replace(" ", ",").split(",") if p]
        try:
            weights = [float(p) for p in parts]
        except ValueError:
            raise ValueError(
                f"{field}: cannot parse {preference!r}; give comma-separated numbers, e.g. 0.2,0.8"
            ) from None
    else:
        try:
            weights = [float(p) for p in preference]
        except (TypeError, ValueError):
            raise ValueError(
                f"{field}: cannot parse {preference!r}; give a list of numbers, e.g. [0.2, 0.8]"
            ) from None
    if not weights:
        raise ValueError(f"{field}: empty; give one weight per objective, e.g. 0.2,0.8")
    if num_objectives is not None and len(weights) != num_objectives:
        raise ValueError(
            f"{field}: got {len(weights)} weight(s) but the model was trained on {num_objectives} objectives; "
            f"give {num_objectives} comma-separated weights"
        )
    if any(math.isnan(w) or math.isinf(w) for w in weights):
        raise ValueError(f"{field}: {weights} contains NaN or infinity; give finite weights >= 0")
    if any(w < 0 for w in weights):
        raise ValueError(f"{field}: {weights} contains a negative weight; weights must be >= 0")
    total = sum(weights)
    if math.isinf(total):
        raise ValueError(
            f"{field}: {weights} are too large to add up (their sum overflows); give weights that sum to 1"
        )
    if total == 0:
        raise ValueError(f"{field}: all weights are zero; at least one must be positive")
    if abs(total - 1.0) > 1e-6:
        warnings.warn(f"{field}: weights {weights} sum to {total:g}, not 1; normalising them", stacklevel=2)
        weights = [w / total for w in weights]
    return weights


def preference_to_targets(
    preference: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    method: str = "l2",
) -> list[float]:
    """Map preference weights to target scores, one per objective, rounded to 1 decimal.

    Args:
        preference: weights w_i >= 0 (normalised to sum 1 with a warning when they do not).
        low, high: per objective, the min and max of the normalised score range.
        method: "linear", "l2" (the paper's evaluation) or "linf".

    >>> preference_to_targets([0.3, 0.7], low=[-2, -1], high=[3, 1], method="l2")
    [0.0, 0.8]
    """
    if method not in PREFERENCE_METHODS:
        raise ValueError(f"method: unknown {method!r}; choose one of {', '.join(PREFERENCE_METHODS)}")
    w = np.asarray(parse_preference(preference, len(low)), dtype=np.float64)
    low_a, high_a = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if low_a.shape != high_a.shape or low_a.shape != w.shape:
        raise ValueError(f"low/high: need one value per objective ({len(w)}), got {len(low)} and {len(high)}")
    span = high_a - low_a
    if method == "linear":
        targets = w * span + low_a
    elif method == "l2":
        targets = w / np.linalg.norm(w) * span + low_a
    else:  # linf
        factor = np.minimum(len(w) * w, 1.0)
        factor[int(np.argmax(w))] = 1.0
        targets = factor * span + low_a
    return [round1(t) for t in targets]


def check_targets(
    targets, low: Sequence[float], high: Sequence[float], names: Sequence[str], field: str = "targets"
) -> list[float]:
    """Explicit normalised targets given by a user: one finite number per objective, inside the score
    range [low, high] widened by 1 on each side (a little extrapolation is allowed, not more)."""
    names_text = ", ".join(names)
    if isinstance(targets, (str, bytes)) or not hasattr(targets, "__iter__"):
        raise ValueError(f"{field}: give {len(names)} numbers ({names_text}), got {targets!r}")
    try:
        values = [float(t) for t in targets]
    except (TypeError, ValueError):
        raise ValueError(f"{field}: give {len(names)} numbers ({names_text}), got {targets!r}") from None
    if len(values) != len(names):
        raise ValueError(f"{field}: need {len(names)} values ({names_text}), got {len(values)}")
    for name, value, lo, hi in zip(names, values, low, high):
        if not math.isfinite(value):
            raise ValueError(f"{field}: {name} = {value} is not a finite number")
        if not lo - 1 <= value <= hi + 1:
            raise ValueError(f"{field}: {name} = {value} is outside the run's score range [{lo}, {hi}] (widened by 1)")
    return values


def simplex_lattice(num_objectives: int, divisions: int) -> list[tuple[float, ...]]:
    """Every weight vector whose entries are multiples of 1/divisions and sum to 1."""
    points = []
    for combo in itertools.combinations(range(divisions + num_objectives - 1), num_objectives - 1):
        bounds = (-1, *combo, divisions + num_objectives - 1)
        parts = [bounds[i + 1] - bounds[i] - 1 for i in range(num_objectives)]
        points.append(tuple(round(p / divisions, 6) for p in parts))
    return sorted(points, reverse=True)


def preference_grid(num_objectives: int, divisions: int | None = None) -> list[tuple[float, ...]]:
    """The evaluation grid: w_1 = 0, 0.1, ..., 1 for two objectives; the paper's 13 points for three;
    a simplex lattice (default 4 divisions: 35 points for 4 objectives) beyond."""
    if num_objectives < 1:
        raise ValueError("num_objectives must be >= 1")
    if num_objectives == 1:
        return [(1.0,)]
    if divisions is None:
        if num_objectives == 2:
            return [(round(i / 10, 1), round(1 - i / 10, 1)) for i in range(11)]
        if num_objectives == 3:
            return list(PAPER_GRID_3)
        divisions = 4
    return simplex_lattice(num_objectives, divisions)


def standard_normal_range(num_samples: int = 100_000) -> tuple[float, float]:
    """The paper's online goal range: min/max of a standard normal sample (about -4.3..+4.3).

    Taken as the expected extremes of `num_samples` draws (the 1/(n+1) and n/(n+1) quantiles), so
    that it is symmetric and the same on every machine: +-4.3 for 100,000 draws.
    """
    from statistics import NormalDist

    extreme = NormalDist().inv_cdf(1 - 1 / (num_samples + 1))
    return round1(-extreme), round1(extreme)
