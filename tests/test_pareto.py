import itertools

import numpy as np
import pytest

from ric import hypervolume, pareto_front, preference_following


def test_pareto_front_maximisation():
    points = [[1, 5], [2, 4], [2, 2], [3, 1], [1, 5], [0, 0]]
    assert pareto_front(points) == [[1, 5], [2, 4], [3, 1]]


def test_hypervolume_2d_known():
    assert hypervolume([[1, 2], [2, 1]], [0, 0]) == pytest.approx(3.0)
    assert hypervolume([[3, 1], [1, 3], [2, 2]], [0, 0]) == pytest.approx(6.0)
    # a dominated point adds nothing; a point under the reference adds nothing
    assert hypervolume([[1, 2], [2, 1], [0.5, 0.5], [-1, 5]], [0, 0]) == pytest.approx(3.0)


def test_hypervolume_3d_and_4d_known():
    assert hypervolume([[1, 1, 1]], [0, 0, 0]) == pytest.approx(1.0)
    assert hypervolume([[2, 1, 1], [1, 2, 1], [1, 1, 2]], [0, 0, 0]) == pytest.approx(4.0)
    assert hypervolume([[1, 1, 1, 1]], [-1, -1, -1, -1]) == pytest.approx(16.0)


def _monte_carlo(points, ref, n=200_000, seed=0):
    points, ref = np.asarray(points), np.asarray(ref)
    upper = points.max(0)
    rng = np.random.default_rng(seed)
    samples = rng.uniform(ref, upper, size=(n, len(ref)))
    dominated = np.zeros(n, bool)
    for p in points:
        dominated |= np.all(samples <= p, axis=1)
    return dominated.mean() * np.prod(upper - ref)


def test_hypervolume_matches_inclusion_exclusion_on_random_fronts():
    rng = np.random.default_rng(1)
    for dim in (2, 3, 4):
        points = rng.uniform(0, 1, size=(6, dim))
        exact = 0.0
        for r in range(1, len(points) + 1):
            for subset in itertools.combinations(points, r):
                exact += (-1) ** (r + 1) * np.prod(np.min(subset, axis=0))
        assert hypervolume(points, [0] * dim) == pytest.approx(exact, rel=1e-9)
        assert hypervolume(points, [0] * dim) == pytest.approx(_monte_carlo(points, [0] * dim), rel=0.02)


def test_hypervolume_input_errors():
    with pytest.raises(ValueError, match="reference"):
        hypervolume([[1, 2]], [0, 0, 0])
    with pytest.raises(ValueError, match="at least 2"):
        hypervolume([[1]], [0])


def test_preference_following():
    w = np.array([[i / 10, 1 - i / 10] for i in range(11)])
    obtained = np.stack([np.arange(11.0), -np.arange(11.0) + np.array([0, 0.5] * 5 + [0])], axis=1)
    rho = preference_following(w, obtained)
    assert rho[0] == pytest.approx(1.0)
    assert rho[1] > 0.9


def test_bootstrap_resamples_prompts_jointly_and_its_interval_narrows_with_more_prompts():
    from ric.pareto import bootstrap_draws, bootstrap_front, interval

    weights = [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    centres = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    ref = [0.0, 0.0]

    # every prompt scores each point at its centre: every resample gives the same front
    flat = np.repeat(centres[:, None, :], 10, axis=1)
    boot = bootstrap_front(flat, weights, ref, bootstrap_draws(10, resamples=50))
    assert interval(boot["hypervolume"]) == [6.0, 6.0]
    assert boot["preference_following"].shape == (50, 2)

    def widths(prompts):
        rng = np.random.default_rng(1)
        scores = centres[:, None, :] + rng.normal(0, 0.5, size=(3, prompts, 2))
        draws = bootstrap_draws(prompts, resamples=400, seed=3)
        boot = bootstrap_front(scores, weights, ref, draws)
        # a resample is the means over the drawn prompts, the same ones for every point
        first = scores[:, draws[0], :].mean(axis=1)
        assert boot["hypervolume"][0] == pytest.approx(hypervolume(first, ref))
        low, high = interval(boot["hypervolume"])
        assert low < hypervolume(scores.mean(axis=1), ref) < high
        return high - low

    narrow, wide = widths(400), widths(25)
    assert 2.5 < wide / narrow < 6.5  # about sqrt(16) = 4
    assert interval([float("nan")]) is None
    with pytest.raises(ValueError, match="prompts"):
        bootstrap_front(flat, weights, ref, bootstrap_draws(9))
