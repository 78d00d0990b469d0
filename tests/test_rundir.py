import json
import time

import pytest

from ric.chunks import ChunkStore, run_chunked
from ric.rundir import RunFileError, RunState, atomic_write_text, read_json, write_json


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "x.json"
    write_json(path, {"a": float("nan"), "b": [1, 2]})
    assert read_json(path) == {"a": None, "b": [1, 2]}
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["x.json"], "no temporary file left behind"


def test_run_state(tmp_path):
    state = RunState(tmp_path)
    assert not state.done("prepare")
    state.mark("prepare", rows=3)
    again = RunState(tmp_path)
    assert again.done("prepare") and again.get("prepare")["rows"] == 3


def test_chunked_work_resumes_without_redoing_chunks(tmp_path):
    items = [{"i": i} for i in range(10)]
    calls = []

    def flaky(chunk):
        calls.append([c["i"] for c in chunk])
        if len(calls) == 3:
            raise KeyboardInterrupt("killed mid-run")
        return [{**c, "out": c["i"] * 2} for c in chunk]

    with pytest.raises(KeyboardInterrupt):
        run_chunked(tmp_path / "gen", items, 3, flaky, progress=False)
    assert ChunkStore(tmp_path / "gen", items, 3).num_done() == 2

    seen = []

    def work(chunk):
        seen.append([c["i"] for c in chunk])
        return [{**c, "out": c["i"] * 2} for c in chunk]

    rows = run_chunked(tmp_path / "gen", items, 3, work, progress=False)
    assert seen == [[6, 7, 8], [9]], "only the missing chunks run again"
    assert [r["i"] for r in rows] == list(range(10)) and [r["out"] for r in rows] == [2 * i for i in range(10)]


def test_chunks_of_another_work_list_are_refused(tmp_path):
    run_chunked(tmp_path, [{"i": 1}], 2, lambda c: c, progress=False)
    with pytest.raises(RunFileError, match="different work list"):
        run_chunked(tmp_path, [{"i": 2}], 2, lambda c: c, progress=False)


def test_a_stage_stopped_by_sigterm_keeps_its_compute(tmp_path):
    """`kill` (SIGTERM) on a ric process: the running stage unwinds and its time is kept under `interrupted`."""
    import signal
    import subprocess
    import sys

    child = (
        "import sys, time\n"
        "from ric.cli import exit_on_sigterm\n"
        "from ric.rundir import ComputeMeter\n"
        "exit_on_sigterm()\n"
        "with ComputeMeter(sys.argv[1], 'train'):\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", child, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    spent = json.loads((tmp_path / "compute.json").read_text())["interrupted"]["train"]
    assert spent["runs"] == 1 and spent["wall_seconds"] >= 0.3


def test_compute_of_an_interrupted_stage_is_added_to_its_resumed_run(tmp_path):
    from ric.rundir import ComputeMeter

    with pytest.raises(KeyboardInterrupt):
        with ComputeMeter(tmp_path, "train"):
            time.sleep(0.2)
            raise KeyboardInterrupt
    first = json.loads((tmp_path / "compute.json").read_text())
    assert first["interrupted"]["train"]["runs"] == 1 and first["interrupted"]["train"]["wall_seconds"] >= 0.2
    assert "train" not in first["stages"]

    with ComputeMeter(tmp_path, "train") as meter:
        time.sleep(0.1)
        meter.steps, meter.generated_tokens = 7, 0
    done = json.loads((tmp_path / "compute.json").read_text())
    assert "interrupted" not in done
    train = done["stages"]["train"]
    assert train["interrupted_runs"] == 1 and train["optimizer_steps"] == 7
    assert train["wall_seconds"] >= 0.3 and done["total"]["wall_seconds"] == train["wall_seconds"]
