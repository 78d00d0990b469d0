"""The run directory: its file names, atomic writes, the stage record and the compute record.

Everything a run writes goes through a temporary file (or folder) renamed into place, so a crash
never leaves a half-written JSON, CSV or dataset: a rerun sees either the old file or the new one.
Two records sit in the root of every run directory:

- `run_state.json`: which stages (and steps inside a stage) have finished; `ric status` reads it.
- `compute.json`: what each stage cost (wall-clock and CPU seconds, optimizer steps, generated
  tokens, and the parts of a stage such as sampling and scoring); `ric compare` reads it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

RUN_INFO = "ric_run.json"  # everything generation needs (beside every adapter and in the run root)
STATE = "run_state.json"  # which stage each part of the run reached
COMPUTE = "compute.json"  # what each stage cost
RECIPE = "recipe.yaml"  # the effective recipe (file + command-line overrides)
COMPUTE_FIELDS = ("wall_seconds", "cpu_seconds", "optimizer_steps", "generated_tokens")


class RunFileError(ValueError):
    """A file of a run directory that exists but cannot be read (corrupt or hand-edited)."""


def _clean(obj):
    """JSON-safe copy: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path):
    """Parse a JSON file; a corrupt one raises `RunFileError` naming the file and the fix."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RunFileError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); it was damaged or "
            "edited by hand: restore it, or remove it so that the stage that writes it runs again"
        ) from None


def write_yaml(path: str | Path, obj) -> None:
    import yaml

    atomic_write_text(path, yaml.safe_dump(_clean(obj), sort_keys=False))


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside `path`; on success it replaces `path` whole (a crash leaves
    the old folder, or nothing, never a half-written one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_save_dataset(dataset, path: str | Path) -> None:
    """`save_to_disk` into a temporary folder, then swap it into place."""
    with atomic_dir(path) as tmp:
        dataset.save_to_disk(str(tmp))


def atomic_write_csv(path: str | Path, rows: list[dict]) -> None:
    import csv
    import io

    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def save_figure(fig, path: str | Path) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def generated_image_paths(run_dir: str | Path, prompts, weights, out: str | Path | None = None) -> list[Path]:
    """Where `ric generate` writes each prompt's image: `out` (one prompt only), else
    RUN_DIR/generated/<prompt slug>_w<weights>.png."""
    import re

    if out is not None:
        if len(prompts) > 1:
            raise ValueError("--out: names one file; give one prompt, or leave --out out")
        return [Path(out)]
    w = "-".join(f"{x:.2f}" for x in weights)
    slugs = [re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-")[:60] or "image" for p in prompts]
    return [Path(run_dir) / "generated" / f"{slug}_w{w}.png" for slug in slugs]


def save_image(image, path: str | Path) -> None:
    """Save a PIL image atomically (its format from the file's suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        image.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def process_state():
    """accelerate's state of this process (rank, number of processes, device).

    Under `accelerate launch` or `torchrun` on GPUs it is the process group's. On CPUs, where
    `accelerate launch` starts one process unless it is given an MPI host file, several processes
    come from `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m ric ...`: accelerate's Trainer
    reads that flag, and so does this state (a plain `PartialState()` would not, and every process
    would take itself for the only one)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def is_main_process() -> bool:
    return process_state().is_main_process


def wait_for_everyone() -> None:
    process_state().wait_for_everyone()


class RunState:
    """`run_state.json`: the stages (and steps inside stages) a run directory has finished."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / STATE
        self.data = read_json(self.path) if self.path.exists() else {"stages": {}}
        if not isinstance(self.data, dict) or not isinstance(self.data.get("stages"), dict):
            raise RunFileError(
                f'{self.path}: expected {{"stages": {{...}}}}; remove the file to start the run\'s record over'
            )

    def done(self, stage: str) -> bool:
        return self.data["stages"].get(stage, {}).get("status") == "done"

    def get(self, stage: str) -> dict:
        return self.data["stages"].get(stage, {})

    def mark(self, stage: str, status: str = "done", **info) -> None:
        """Record a stage's status (main process only: the other processes of a launch read it)."""
        if not is_main_process():
            return
        entry = self.data["stages"].setdefault(stage, {})
        entry.update(status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S"), **info)
        write_json(self.path, self.data)


class ComputeMeter:
    """Measures one stage (wall-clock and this process's CPU seconds) and records it in compute.json.

        with ComputeMeter(run_dir, "train") as meter:
            with meter.part("sample"):
                ...
            meter.steps, meter.generated_tokens = 60, 0

    A stage that fails or is interrupted (Ctrl-C) keeps its time under `interrupted`; the resumed
    run adds it in. Only the main process of a launch writes.
    """

    def __init__(self, run_dir: str | Path, stage: str):
        self.path = Path(run_dir) / COMPUTE
        self.stage = stage
        self.steps = 0
        self.generated_tokens = 0
        self.parts: dict[str, float] = {}

    def __enter__(self):
        self._wall, self._cpu = time.time(), time.process_time()
        return self

    @contextlib.contextmanager
    def part(self, name: str):
        """Time one part of the stage (wall-clock seconds, added to `parts` in compute.json)."""
        start = time.time()
        try:
            yield
        finally:
            self.parts[name] = round(self.parts.get(name, 0.0) + time.time() - start, 1)

    def __exit__(self, exc_type, exc, tb):
        if not is_main_process():
            return False
        data = read_compute(self.path.parent)
        wall, cpu = round(time.time() - self._wall, 1), round(time.process_time() - self._cpu, 1)
        if exc_type is not None:
            spent = data.setdefault("interrupted", {}).setdefault(
                self.stage, {"wall_seconds": 0.0, "cpu_seconds": 0.0, "runs": 0}
            )
            spent["wall_seconds"] = round(spent["wall_seconds"] + wall, 1)
            spent["cpu_seconds"] = round(spent["cpu_seconds"] + cpu, 1)
            spent["runs"] += 1
            write_json(self.path, data)
            return False
        earlier = data.get("interrupted", {}).pop(self.stage, None)
        entry = {
            "wall_seconds": round(wall + (earlier["wall_seconds"] if earlier else 0), 1),
            "cpu_seconds": round(cpu + (earlier["cpu_seconds"] if earlier else 0), 1),
            "optimizer_steps": int(self.steps),
            "generated_tokens": int(self.generated_tokens),
        }
        if self.parts:
            entry["parts"] = dict(self.parts)
        if earlier:
            entry["interrupted_runs"] = earlier["runs"]
        if not data.get("interrupted"):
            data.pop("interrupted", None)
        record_stage(self.path.parent, data, self.stage, entry)
        return False


def record_stage(run_dir: str | Path, data: dict, name: str, entry: dict) -> None:
    """compute.json `data` with stage `name` set to `entry` and the total summed again, written to `run_dir`."""
    data["stages"][name] = entry
    data["total"] = {k: round(sum(s[k] for s in data["stages"].values()), 1) for k in COMPUTE_FIELDS}
    write_json(Path(run_dir) / COMPUTE, data)


def charge_compute(run_dir: str | Path, name: str, source_dir: str | Path, stages=None) -> dict:
    """Charge work another run did to this one, which starts from its output: compute.json gets a stage `name`
    holding the source run's cost (of its stages named in `stages`, or of all but its evaluations) and
    `charged_from`, and the total counts it. Rerunning replaces the entry. Returns the entry."""
    source = read_compute(source_dir)
    picked = {
        k: v
        for k, v in source["stages"].items()
        if (k in stages if stages is not None else not k.startswith("evaluate"))
    }
    if stages is not None and set(stages) - set(picked):
        raise RunFileError(
            f"{Path(source_dir) / COMPUTE}: no stage {sorted(set(stages) - set(picked))} to charge; "
            "finish that run first"
        )
    entry = {k: round(sum(s.get(k, 0) for s in picked.values()), 1) for k in COMPUTE_FIELDS}
    entry.update(optimizer_steps=int(entry["optimizer_steps"]), generated_tokens=int(entry["generated_tokens"]))
    entry.update(charged_from=str(source_dir), charged_stages=sorted(picked))
    if is_main_process():
        record_stage(run_dir, read_compute(run_dir), name, entry)
    return entry


def checkpoint_steps(folder: str | Path) -> list[int]:
    """The steps of the trainer checkpoints (checkpoint-<step> folders) kept in `folder`, in order."""
    found = (p.name.split("-", 1)[1] for p in Path(folder).glob("checkpoint-*") if p.is_dir())
    return sorted(int(step) for step in found if step.isdigit())


def read_compute(run_dir: str | Path) -> dict:
    """compute.json of a run directory ({"stages": {}} when nothing was metered yet)."""
    path = Path(run_dir) / COMPUTE
    data = read_json(path) if path.exists() else {"stages": {}}
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise RunFileError(f'{path}: expected {{"stages": {{...}}}}; remove the file to start the compute record over')
    return data
