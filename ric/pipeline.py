"""Running a method's stages: finished stages are skipped, each stage is metered, and a stopped run
resumes where it stopped.

A method (see `ric.methods`) turns a parsed recipe into a list of `Stage`s. `run_stages` runs
those of the requested groups in order: a stage already marked done in `run_state.json` is
skipped; any other runs inside a `ComputeMeter` (its wall-clock and CPU seconds, optimizer steps
and generated tokens go to `compute.json`) and is marked done when it returns. A stage resumes its
own partial work (chunks on disk, trainer checkpoints), so running the same command again after a
crash or Ctrl-C continues with nothing done twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .rundir import ComputeMeter, RunState, wait_for_everyone

GROUPS = ("prepare", "train", "evaluate")


@dataclass(frozen=True)
class Stage:
    """One stage of a method.

    name: its key in run_state.json and compute.json ("prepare", "train", "online_1", "policy:w_0.25_0.75").
    group: "prepare", "train" or "evaluate" (`ric prepare` / `ric train` run one group, `ric run` all).
    run: does the work, given the stage's ComputeMeter; returns a summary dict. It may set
        `meter.steps` and `meter.generated_tokens` and time parts with `meter.part(name)`.
    describe: one line for the terminal from the summary.
    """

    name: str
    group: str
    run: Callable[[ComputeMeter], dict]
    describe: Callable[[dict], str] = field(default=lambda summary: "done")


@dataclass
class StageOutcome:
    stage: Stage
    skipped: bool
    summary: dict | None = None

    @property
    def line(self) -> str:
        if self.skipped:
            return f"{self.stage.name}: done already"
        return f"{self.stage.name}: {self.stage.describe(self.summary or {})}"


def run_stages(
    run_dir: str | Path,
    stages: Sequence[Stage],
    groups: Sequence[str] = GROUPS,
    on_outcome: Callable[[StageOutcome], None] | None = None,
) -> list[StageOutcome]:
    """Run the stages of `groups` in order, skipping finished ones; `on_outcome` sees each as it ends."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown stage group(s) {unknown}; choose from {GROUPS}")
    run_dir = Path(run_dir)
    outcomes = []
    for stage in stages:
        if stage.group not in groups:
            continue
        if RunState(run_dir).done(stage.name):
            outcome = StageOutcome(stage, skipped=True)
        else:
            outcome = run_stage(run_dir, stage)
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def run_stage(run_dir: str | Path, stage: Stage) -> StageOutcome:
    """Run one stage now (finished or not), metered, and mark it done."""
    with ComputeMeter(run_dir, stage.name) as meter:
        summary = stage.run(meter) or {}
    RunState(run_dir).mark(stage.name, **_brief(summary))
    wait_for_everyone()
    return StageOutcome(stage, skipped=False, summary=summary)


def _brief(summary: dict) -> dict:
    """The scalar facts of a stage's summary that run_state.json keeps (`ric status` prints them)."""
    keep = ("rows", "steps", "kept", "dropped", "hypervolume", "num_points", "skipped")
    return {k: summary[k] for k in keep if isinstance(summary.get(k), (int, float))}
