"""TextNorm's arithmetic against a hand computation of its definition."""

import math

import numpy as np
import pytest

from reward_models import combine_probabilities, textnorm_probabilities


def by_hand(row, scale):
    low, high = min(row), max(row)
    scaled = [scale * (x - low) / (high - low) for x in row]
    total = sum(math.exp(x) for x in scaled)
    return math.exp(scaled[0]) / total


def test_own_prompt_probability_matches_the_definition():
    scores = [[0.31, 0.12, 0.25, 0.05], [0.10, 0.40, 0.20, 0.30], [-2.0, -3.0, -2.5, -1.0]]
    got = textnorm_probabilities(scores, scale=3.0)
    assert got == pytest.approx([by_hand(r, 3.0) for r in scores], rel=1e-12)
    # the own prompt scoring highest gets the most mass; a higher scale makes the reward more decisive
    assert got[0] > 0.25 > got[1]
    assert textnorm_probabilities(scores, scale=10.0)[0] > got[0]


def test_the_normalisation_ignores_each_rows_offset_and_units():
    row = np.array([[0.3, 0.1, 0.2]])
    assert textnorm_probabilities(row, 5) == pytest.approx(textnorm_probabilities(100 * row - 7, 5))


def test_a_row_of_equal_scores_is_uniform_not_one():
    assert textnorm_probabilities([[0.5, 0.5, 0.5, 0.5]], 3.0) == pytest.approx([0.25])


def test_ensembles():
    p = np.array([[0.6, 0.2], [0.4, 0.2]])
    assert combine_probabilities(p) == pytest.approx([0.5, 0.2])
    assert combine_probabilities(p, "uncertainty", lam=1.0) == pytest.approx([0.5 - 0.01, 0.2])


@pytest.mark.parametrize(
    "scores, scale, fragment",
    [
        ([[0.1, 0.2]], 0.0, "scale must be > 0"),
        ([[0.1]], 1.0, "K >= 1 contrastive prompts"),
        ([0.1, 0.2], 1.0, r"shape \(n, 1 \+ K\)"),
        ([[0.1, float("nan")]], 1.0, "NaN or infinite"),
    ],
)
def test_bad_input_names_the_argument(scores, scale, fragment):
    with pytest.raises(ValueError, match=fragment):
        textnorm_probabilities(scores, scale)
    with pytest.raises(ValueError, match="is not one of"):
        combine_probabilities([[0.5]], "median")
