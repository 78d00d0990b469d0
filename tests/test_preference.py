import math
import warnings

import numpy as np
import pytest

from ric import parse_preference, preference_grid, preference_to_targets
from ric.preference import simplex_lattice

LOW, HIGH = [-2, -1], [3, 1]


@pytest.mark.parametrize(
    "w, method, expected",
    [
        ((0.3, 0.7), "linear", [-0.5, 0.4]),
        ((0.3, 0.7), "l2", [0.0, 0.8]),
        ((0.3, 0.7), "linf", [1.0, 1.0]),
        ((0.8, 0.2), "linear", [2.0, -0.6]),
        ((0.8, 0.2), "l2", [2.9, -0.5]),
        ((0.8, 0.2), "linf", [3.0, -0.2]),
    ],
)
def test_paper_worked_figures(w, method, expected):
    assert preference_to_targets(w, LOW, HIGH, method) == expected


def test_default_method_is_l2():
    assert preference_to_targets([0.3, 0.7], LOW, HIGH) == [0.0, 0.8]


def test_linf_ties_pick_first_index():
    # equal weights: objective 0 gets high, objective 1 gets min(2 * 0.5, 1) = 1 -> high too
    assert preference_to_targets([0.5, 0.5], [0, 0], [1, 2], "linf") == [1.0, 2.0]
    # three objectives tie at 1/3: first gets high; others min(3 * 1/3, 1) = 1 -> high
    assert preference_to_targets([1 / 3] * 3, [0, 0, 0], [1, 1, 1], "linf") == [1.0, 1.0, 1.0]
    assert preference_to_targets([0.4, 0.4, 0.2], [0, 0, 0], [1, 1, 1], "linf") == [1.0, 1.0, 0.6]


def test_any_number_of_objectives_and_rounding():
    targets = preference_to_targets([0.1, 0.2, 0.3, 0.4], [-4.3] * 4, [4.3] * 4, "linear")
    assert targets == [-3.4, -2.6, -1.7, -0.9]
    assert all(round(t, 1) == t for t in targets)


def test_extremes_hit_range_ends():
    assert preference_to_targets([1, 0], LOW, HIGH, "l2") == [3.0, -1.0]
    assert preference_to_targets([0, 1], LOW, HIGH, "linear") == [-2.0, 1.0]


def test_no_negative_zero():
    t = preference_to_targets([0.5, 0.5], [-0.5, -0.5], [0.5, 0.5], "linear")
    assert t == [0.0, 0.0] and all(math.copysign(1, x) == 1 for x in t)


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("0.2", "2 comma-separated"),
        ("0.2,0.3,0.5", "2 comma-separated"),
        ("-0.2,1.2", "negative"),
        ("nan,1", "NaN"),
        ("0,0", "all weights are zero"),
        ("a,b", "cannot parse"),
        ("", "empty"),
        ("inf,1", "NaN or infinity"),
        ("1e308,1e308", "too large to add up"),
    ],
)
def test_bad_preferences_name_the_field(bad, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        parse_preference(bad, 2, field="--preference")
    assert "--preference" in str(info.value)


def test_unnormalised_preference_warns_and_normalises():
    with pytest.warns(UserWarning, match="normalising"):
        w = parse_preference("1,3", 2)
    assert w == [0.25, 0.75]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_preference([0.2, 0.8], 2) == [0.2, 0.8]


def test_unknown_method():
    with pytest.raises(ValueError, match="method"):
        preference_to_targets([0.5, 0.5], LOW, HIGH, "l3")


def test_grids():
    two = preference_grid(2)
    assert len(two) == 11 and two[0] == (0.0, 1.0) and two[-1] == (1.0, 0.0)
    three = preference_grid(3)
    assert len(three) == 13 and (0.0, 0.0, 1.0) in three and (1.0, 0.0, 0.0) in three
    assert any(abs(p[0] - 0.33) < 0.01 and abs(p[1] - 0.33) < 0.01 for p in three)
    four = preference_grid(4)
    assert len(four) == 35 and all(abs(sum(p) - 1) < 1e-9 for p in four)
    assert len(set(four)) == len(four)
    assert len(simplex_lattice(3, 10)) == 66
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # grid points sum to 1: no normalisation warning
        for p in three + four:
            preference_to_targets(p, [-1] * len(p), [1] * len(p))


def test_the_gaussian_score_range_reproduces_the_paper_codes_evaluation_targets():
    """The paper's code maps preferences onto the min/max of 50,000 standard-normal draws per objective
    (seed 8888); its l2 targets for two objectives are these."""
    from ric.run_info import gaussian_range, score_range

    low, high = gaussian_range(2)
    assert -4.2 < low[0] < -3.8 and 4.0 < high[1] < 4.3
    expected = {(0.0, 1.0): [-3.9, 4.2], (0.5, 0.5): [1.7, 1.8], (1.0, 0.0): [4.1, -4.0]}
    for w, targets in expected.items():
        assert preference_to_targets(w, low, high, "l2") == targets
    # the same for any data: it does not depend on the training scores
    data = np.random.default_rng(0).standard_exponential((500, 2))
    assert score_range(data, "gaussian") == (low, high)
    assert score_range(data, "data") != (low, high)
    q_low, q_high = score_range(data, "quantiles", 0.05)
    assert q_low == pytest.approx(np.quantile(data, 0.05, axis=0), abs=1e-4)
