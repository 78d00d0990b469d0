"""`ric compare` on hand-made evaluation reports: one reference point, the table, refusals."""

import json
from pathlib import Path

import pytest

from ric.cli import main


def _fake_run(
    folder: Path,
    method: str,
    points,
    rewards=("positivity", "conciseness"),
    fingerprint="abc",
    compute=None,
    base=None,
    per_prompt=None,
    num_prompts=4,
    start=None,
):
    folder.mkdir(parents=True)
    pareto = {
        "method": method,
        "rewards": list(rewards),
        "num_prompts": num_prompts,
        "prompts_fingerprint": fingerprint,
        "hypervolume_reference": [0.0, 0.0],
        "points": [{"preference": w, "mean": dict(zip(rewards, m))} for w, m in points],
        "preference_following": {r: 1.0 for r in rewards},
        "base": base,
    }
    (folder / "eval").mkdir()
    if per_prompt is not None:  # (points, prompts, objectives): the evaluation's CSVs, one row per prompt
        (folder / "eval" / "points").mkdir()
        pareto["num_prompts"] = len(per_prompt[0])
        for k, (point, scores) in enumerate(zip(pareto["points"], per_prompt)):
            point["csv"] = f"points/point_{k:02d}.csv"
            lines = ["prompt,response," + ",".join(f"obtained_{r}" for r in rewards)]
            lines += [f"q{j},a," + ",".join(map(str, row)) for j, row in enumerate(scores)]
            (folder / "eval" / point["csv"]).write_text("\n".join(lines) + "\n")
    (folder / "eval" / "pareto.json").write_text(json.dumps(pareto))
    if compute:
        stages = {"reused:start": {**compute, "charged_from": start}} if start else {}
        (folder / "compute.json").write_text(json.dumps({"total": compute, "stages": stages}))
    return folder


def test_compare_on_hand_made_runs(tmp_path, capsys):
    ric_run = _fake_run(
        tmp_path / "ric",
        "ric",
        [([0, 1], [1, 3]), ([0.5, 0.5], [2, 2]), ([1, 0], [3, 1])],
        compute={"wall_seconds": 100, "cpu_seconds": 190, "optimizer_steps": 60, "generated_tokens": 5000},
        base={"mean": {"positivity": 1, "conciseness": 1}},
    )
    morlhf = _fake_run(
        tmp_path / "morlhf",
        "morlhf",
        [([0, 1], [1, 2]), ([1, 0], [2, 1])],
        compute={"wall_seconds": 900, "cpu_seconds": 1700, "optimizer_steps": 100, "generated_tokens": 90000},
        start="runs/demo-sft",
    )
    out = tmp_path / "cmp"
    assert main(["compare", str(ric_run), str(morlhf), "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert [r["start"] for r in result["runs"]] == ["base", "runs/demo-sft"]
    hv = {r["method"]: r["hypervolume"] for r in result["runs"]}
    # ric front (1,3),(2,2),(3,1) from (0,0): 3 + 2*1 + ... = 1*3 + 1*2 + 1*1 = 6; morlhf (1,2),(2,1): 3
    assert hv == {"ric": pytest.approx(6.0), "morlhf": pytest.approx(3.0)}
    assert result["base"]["hypervolume"] == pytest.approx(1.0)
    md = (out / "compare.md").read_text()
    assert "| ric (ric) | 3 | 6 |" in md and "90000" in md
    assert (out / "compare.png").exists()
    assert main(["compare", str(ric_run), str(morlhf), "--out", str(out), "--reference", "1,1"]) == 0
    # from (1, 1) only (2, 2) strictly exceeds the reference: a unit square
    assert json.loads((out / "compare.json").read_text())["runs"][0]["hypervolume"] == pytest.approx(1.0)


def test_compare_refuses_mismatched_runs(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", "ric", [([1, 0], [1, 1])])
    b = _fake_run(tmp_path / "b", "morlhf", [([1, 0], [1, 1])], fingerprint="other")
    c = _fake_run(tmp_path / "c", "morlhf", [([1, 0], [1, 1])], rewards=("relevance", "conciseness"))
    assert main(["compare", str(a), str(b)]) == 2
    assert "other prompts" in capsys.readouterr().err
    assert main(["compare", str(a), str(c)]) == 2
    assert "rewards" in capsys.readouterr().err
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "pareto.json" in capsys.readouterr().err


def test_compare_gives_paired_bootstrap_intervals_from_the_per_prompt_scores(tmp_path):
    import numpy as np

    from ric.compare import compare

    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    hard = rng.normal(0, 0.4, size=(1, 30, 1))  # a prompt is hard for every method alike
    ric_scores = centres[:, None, :] + hard + rng.normal(0, 0.2, size=(3, 30, 2))
    weights = [[0, 1], [0.5, 0.5], [1, 0]]
    ric_run = _fake_run(
        tmp_path / "ric", "ric", list(zip(weights, ric_scores.mean(1).tolist())), per_prompt=ric_scores.tolist()
    )
    other = _fake_run(tmp_path / "other", "morlhf", [([0, 1], [1, 2]), ([1, 0], [2, 1])], num_prompts=30)  # no CSVs
    result = compare([ric_run, other], out=tmp_path / "cmp")
    row, bare = result["runs"]
    low, high = row["hypervolume_ci"]
    assert low < row["hypervolume"] < high and high - low > 0.1
    assert set(row["following_ci"]) == {"positivity", "conciseness"}
    assert bare["hypervolume_ci"] is None and bare["following_ci"] is None
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert f"{row['hypervolume']:.4g} [{low:.4g}, {high:.4g}]" in md and "bootstrap" in md
    # the reference point of the comparison is the one the intervals are taken at
    shifted = compare([ric_run, other], out=tmp_path / "cmp2", reference=[0.5, 0.5])["runs"][0]
    assert shifted["hypervolume_ci"][1] < high
