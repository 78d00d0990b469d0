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
):
    folder.mkdir(parents=True)
    pareto = {
        "method": method,
        "rewards": list(rewards),
        "num_prompts": 4,
        "prompts_fingerprint": fingerprint,
        "hypervolume_reference": [0.0, 0.0],
        "points": [{"preference": w, "mean": dict(zip(rewards, m))} for w, m in points],
        "preference_following": {r: 1.0 for r in rewards},
        "base": base,
    }
    (folder / "eval").mkdir()
    (folder / "eval" / "pareto.json").write_text(json.dumps(pareto))
    if compute:
        (folder / "compute.json").write_text(json.dumps({"total": compute}))
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
    )
    out = tmp_path / "cmp"
    assert main(["compare", str(ric_run), str(morlhf), "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
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
