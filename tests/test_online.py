"""Online augmentation: goal sampling, the quantile filter, resume, one full iteration on a tiny model."""

import numpy as np
import pytest

from ric import sample_targets, select_by_quantile


@pytest.mark.parametrize("method", ["min_of_uniform", "uniform"])
def test_sample_targets_shape_range_and_one_free_objective(method):
    t = sample_targets(500, 3, low=-4.3, high=4.3, seed=7, method=method)
    assert t.shape == (500, 3)
    assert np.all(t >= -4.3) and np.all(t <= 4.3)
    at_max = (t == 4.3).sum(axis=1)
    assert np.all(at_max >= 2), "every objective but one sits at the maximum"
    assert np.allclose(t, np.round(t, 1))
    free = np.argmin(t, axis=1)[at_max == 2]
    assert set(free.tolist()) == {0, 1, 2}, "the free objective is picked among all"
    assert np.array_equal(t, sample_targets(500, 3, low=-4.3, high=4.3, seed=7, method=method)), "seeded"
    assert not np.array_equal(t, sample_targets(500, 3, low=-4.3, high=4.3, seed=8, method=method))


@pytest.mark.parametrize("n_objectives", [2, 3])
def test_the_free_value_is_the_smallest_of_n_uniform_draws_by_default(n_objectives):
    """The paper's code keeps the smallest of N uniform draws: mean low + (high - low) / (N + 1);
    the paper's text draws it uniformly: mean (low + high) / 2."""
    n = 20000
    default = sample_targets(n, n_objectives, low=-4.3, high=4.3, seed=0).min(axis=1)
    uniform = sample_targets(n, n_objectives, low=-4.3, high=4.3, seed=0, method="uniform").min(axis=1)
    assert default.mean() == pytest.approx(-4.3 + 8.6 / (n_objectives + 1), abs=0.06)
    assert uniform.mean() == pytest.approx(0.0, abs=0.06)
    # the minimum of N uniforms: P(free <= x) = 1 - (1 - F(x))^N, e.g. at the range's midpoint
    assert (default <= 0).mean() == pytest.approx(1 - 0.5**n_objectives, abs=0.02)
    with pytest.raises(ValueError, match="method"):
        sample_targets(3, 2, method="max")


def test_sample_targets_per_objective_range_and_default():
    t = sample_targets(200, 2, low=[-1, -3], high=[1, 2], seed=0)
    assert np.all(t[:, 0] <= 1) and np.all(t[:, 1] <= 2) and t[:, 1].min() < -1.5
    d = sample_targets(1000, 2, seed=0)
    assert 4.0 <= d.max() <= 4.6 and -4.6 <= d.min() <= -3.5  # the paper's standard-normal range
    with pytest.raises(ValueError):
        sample_targets(0, 2)


def test_select_by_quantile_hand_made():
    scores = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [0, 10], [0, 1], [0, 2], [0, 3], [0, 4], [9, 9]])
    # 0.7 quantiles (linear interpolation over 10 rows, position 6.3): column 0 sorted is
    # 0,0,0,0,0,0,1,2,3,9 -> 1.3; column 1 sorted is 0,0,0,0,1,2,3,4,9,10 -> 3.3
    assert np.quantile(scores, 0.7, axis=0).tolist() == pytest.approx([1.3, 3.3])
    # kept: rows 2, 3 (column 0 >= 1.3), rows 4, 8 (column 1 >= 3.3), row 9 (both)
    assert select_by_quantile(scores, 0.7).tolist() == [
        False,
        False,
        True,
        True,
        True,
        False,
        False,
        False,
        True,
        True,
    ]


def test_select_by_quantile_ties_are_kept():
    scores = np.array([[1.0, 5.0]] * 6 + [[0.0, 0.0]] * 4)
    # the 0.5 quantile equals the tied value: every tied row is "at or above" it
    mask = select_by_quantile(scores, 0.5)
    assert mask.tolist() == [True] * 6 + [False] * 4


def test_select_by_quantile_three_and_more_objectives():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(1000, 4))
    mask = select_by_quantile(scores, 0.9)
    # independent columns: P(keep) = 1 - 0.9^4
    assert abs(mask.mean() - (1 - 0.9**4)) < 0.03
    best_in_each = scores.argmax(axis=0)
    assert mask[best_in_each].all()


@pytest.mark.parametrize("q", [0, 1, -0.1, 1.5])
def test_select_by_quantile_refuses_bad_quantile(q):
    with pytest.raises(ValueError, match="quantile"):
        select_by_quantile(np.ones((3, 2)), q)


def _trained_run(tiny_recipe, **changes):
    """A run directory prepared and trained offline, whose recipe asks for one online iteration."""
    from ric.pipeline import run_stages
    from tests.helpers import stages_of, update_recipe

    defaults = dict(
        num_online_iterations=1,
        online_num_generations=10,
        generation_chunk_size=4,
        online_max_steps=2,
        online_num_origin_samples=3,
        online_target_range="data",
    )
    update_recipe(tiny_recipe, **{**defaults, **changes})
    run, stages = stages_of(tiny_recipe)
    run_stages(run.run_dir, [s for s in stages if s.name in ("prepare", "train")])
    return run


def run_online(recipe, argv=()):
    """The online stages of `recipe` through the pipeline; each iteration's statistics."""
    from ric.pipeline import run_stages
    from ric.rundir import read_json
    from tests.helpers import stages_of

    run, stages = stages_of(recipe, argv)
    run_stages(run.run_dir, [s for s in stages if s.name.startswith("online_")])
    return [read_json(p) for p in sorted(run.run_dir.glob("online/iter_*/stats.json"))]


def test_one_full_online_iteration_on_a_tiny_model(tiny_recipe):

    import datasets

    from ric.rundir import RunState, read_json

    run = _trained_run(tiny_recipe).run_dir
    [stats] = run_online(tiny_recipe)
    assert stats["generated"] == 10 and stats["kept"] + stats["dropped"] + stats["empty_responses_dropped"] == 10
    assert stats["origin_kept"] <= 3 and stats["training_rows"] == stats["origin_kept"] + stats["kept"]
    assert stats["train"]["global_step"] == 2
    scored = datasets.load_from_disk(str(run / "online/iter_1/scored"))
    kept = datasets.load_from_disk(str(run / "online/iter_1/kept"))
    assert len(kept) == stats["kept"]
    # relabelling: the tags used for training are the obtained scores, normalised with the saved stats
    info = read_json(run / "ric_run.json")
    row = scored[0]
    mean, std = info["reward_stats"]["mean"], info["reward_stats"]["std"]
    expected = [(row["scores"][j] - mean[n]) / std[n] for j, n in enumerate(info["rewards"])]
    assert row["normalized_scores"] == pytest.approx(expected)
    assert (run / "adapter_online_1/adapter_model.safetensors").exists()
    assert read_json(run / "adapter_online_1/ric_run.json")["adapter"] == "adapter_online_1"
    assert info["adapter"] == "adapter_online_1", "the run now points to the newest adapter"
    state = RunState(run)
    assert all(state.done(f"online_1:{s}") for s in ("generate", "score")) and state.done("online_1")
    # a rerun finds the iteration done
    again = run_online(tiny_recipe)
    assert again[0]["kept"] == stats["kept"]


def test_later_online_iterations_train_at_the_decayed_rate(tiny_recipe):
    """online_learning_rate_decay: iteration k trains at online_learning_rate x decay^(k-1), as its optimizer
    saw it (the checkpoint's own log), and each iteration's statistics say which rate it had."""
    import glob

    from ric.rundir import read_json

    run = _trained_run(
        tiny_recipe, num_online_iterations=2, online_learning_rate=4e-4, online_learning_rate_decay=0.5
    ).run_dir
    stats = run_online(tiny_recipe)
    assert [s["learning_rate"] for s in stats] == pytest.approx([4e-4, 2e-4])
    for k, rate in ((1, 4e-4), (2, 2e-4)):
        [trainer_state] = glob.glob(str(run / f"checkpoints/online_{k}/checkpoint-*/trainer_state.json"))
        logged = [e["learning_rate"] for e in read_json(trainer_state)["log_history"] if "learning_rate" in e]
        assert logged and logged == pytest.approx([rate] * len(logged))


def test_online_generation_in_another_dtype_than_the_runs(tiny_recipe, tmp_path):
    import torch
    import yaml

    from ric.generation import load_policy
    from ric.online import _load_online_policy
    from ric.run_info import load_run_info
    from tests.helpers import parse_run_args

    run = _trained_run(tiny_recipe, online_generation_dtype="bfloat16").run_dir
    (model_args, _, args, _), _ = parse_run_args([], str(tiny_recipe))
    info, _ = load_run_info(run)
    policy = _load_online_policy("transformers", info, run / "adapter", model_args, args, load_policy)
    weights = {p.dtype for n, p in policy["model"].named_parameters() if "lora_" not in n}  # LoRA merged in
    assert weights == {torch.bfloat16}
    assert info.model_kwargs.get("dtype") in (None, "auto", "float32"), "the run itself keeps its dtype"
    [stats] = run_online(tiny_recipe)
    assert stats["generated"] == 10 and stats["train"]["global_step"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(tiny_recipe.read_text()), "online_generation_dtype": "int4"}))
    with pytest.raises((ValueError, SystemExit)):
        parse_run_args([], str(bad))


def test_online_resume_after_a_crash_gives_the_same_rows(tiny_recipe, tmp_path, monkeypatch):
    import json
    from pathlib import Path

    import ric.generation

    run = _trained_run(tiny_recipe, online_num_generations=12).run_dir
    reference_dir = tmp_path / "reference"
    import shutil

    shutil.copytree(run, reference_dir)

    real = ric.generation.generate_batched
    calls = {"n": 0}

    def dies_on_third_chunk(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(ric.generation, "generate_batched", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_online(tiny_recipe)
    gen = run / "online/iter_1/gen"
    assert sorted(p.name for p in gen.glob("chunk_*.jsonl")) == ["chunk_00000.jsonl", "chunk_00001.jsonl"]
    first_two = [(gen / f"chunk_0000{i}.jsonl").read_text() for i in range(2)]

    counted = {"n": 0}

    def counting(*a, **k):
        counted["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(ric.generation, "generate_batched", counting)
    run_online(tiny_recipe)
    assert counted["n"] == 1, "only the missing chunk is generated again"
    assert [(gen / f"chunk_0000{i}.jsonl").read_text() for i in range(2)] == first_two

    def rows(folder):
        return [
            json.loads(line) for p in sorted(Path(folder).glob("chunk_*.jsonl")) for line in p.read_text().splitlines()
        ]

    resumed = rows(gen)
    assert len(resumed) == 12 and len({r["i"] for r in resumed}) == 12, "no row lost or doubled"

    monkeypatch.setattr(ric.generation, "generate_batched", real)
    run_online(tiny_recipe, ["--output_dir", str(reference_dir)])
    assert rows(reference_dir / "online/iter_1/gen") == resumed, "the resumed run equals an uninterrupted one"


def test_online_bad_inputs(tiny_recipe, tmp_path):
    import yaml

    from ric.online import check_online_run
    from tests.helpers import parse_run_args

    (_, _, args, _), _ = parse_run_args([], str(tiny_recipe))
    with pytest.raises(ValueError, match="no training statistics"):
        check_online_run(tmp_path, args)
    recipe = yaml.safe_load(tiny_recipe.read_text())
    for key, value, fragment in [
        ("online_quantile", 0.0, "online_quantile"),
        ("online_num_generations", 0, "online_num_generations"),
        ("online_max_steps", -1, "online_max_steps"),
        ("online_learning_rate_decay", 0.0, "online_learning_rate_decay"),
        ("online_learning_rate_decay", 1.5, "online_learning_rate_decay"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**recipe, key: value}))
        with pytest.raises(ValueError, match=fragment):
            parse_run_args([], str(bad))


def test_budget_cut_flags_travel_into_the_online_mixture(tmp_path):
    """The original rows keep their cut_by_budget flag and the online rows bring their own, so that with
    eos_after_budget_cut false neither teaches the adapter to stop where a token budget fell."""
    import datasets

    from ric.online import select_training_rows
    from tests.helpers import parse_run_args

    (_, _, args, _), _ = parse_run_args(["--output_dir", str(tmp_path), "--online_num_origin_samples", "100"])
    train_rows = datasets.Dataset.from_dict(
        {
            "prompt": [f"q{i}" for i in range(6)],
            "response": [f"original {i}" for i in range(6)],
            "normalized_scores": [[float(i), float(-i)] for i in range(6)],
            "cut_by_budget": [i % 2 == 0 for i in range(6)],
            "source": ["sample_0"] * 6,
        }
    )
    scored = datasets.Dataset.from_dict(
        {
            "prompt": ["a", "b", "c"],
            "response": ["online cut", "online ended", "online low"],
            "normalized_scores": [[5.0, 5.0], [5.0, 5.0], [-9.0, -9.0]],
            "cut_by_budget": [True, False, False],
        }
    )
    (tmp_path / "online/iter_1").mkdir(parents=True)
    mixture, kept, _ = select_training_rows(tmp_path, scored, train_rows, args, 1)
    assert kept.tolist() == [True, True, False]
    flags = dict(zip(mixture["response"], mixture["cut_by_budget"]))
    assert flags["online cut"] is True and flags["online ended"] is False and "online low" not in flags
    assert all(flags[f"original {i}"] == (i % 2 == 0) for i in range(6) if f"original {i}" in flags)
    assert any(r.startswith("original") for r in flags)
