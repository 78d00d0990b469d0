"""The evaluation report every method writes: `eval/pareto.json`, `eval/pareto.png` and one CSV per point.

A method describes its front as points (a preference, plus the targets written into the prompt for
RiC or the adapter that answers for the baselines) and gives a `FrontGenerator` that answers
chunks of (point, prompt) items and, for the reference point, the base model's answers.
`evaluate_front` does the rest the same way for every method:

1. generation in resumable chunks (`gen/base-<key>/`, `gen/points-<key>/`; the key fingerprints
   the method's set-up, the settings, the points and the prompts, so a rerun with other settings
   never reuses responses), sharded across processes under `accelerate launch`;
2. scoring with the raw (un-normalised) rewards, in resumable chunks (`scores-<key>/`);
3. per point the mean and std of every reward, the Pareto front of the means, the hypervolume
   against one reference point, preference-following, the base model's point and the Pearson
   correlation of the rewards on its answers.

The default reference point is one rule for every method: the base model's mean - 3 std of each
raw reward on the evaluation prompts (`hypervolume_reference` in a recipe overrides it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chunks import fingerprint, run_chunked
from .pareto import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_draws,
    bootstrap_front,
    hypervolume,
    interval,
    pareto_front,
    pearson_matrix,
    preference_following,
)
from .rundir import atomic_write_csv, is_main_process, read_json, save_figure, wait_for_everyone, write_json
from .scoring import score_chunked

logger = logging.getLogger(__name__)

REFERENCE_RULE = "base model mean - 3 std per reward on the evaluation prompts"


@dataclass
class FrontPoint:
    """One point of an evaluated front."""

    preference: list[float]
    targets: list[float] | None = None  # normalised targets written into the prompt (RiC)
    policy: str | None = None  # the adapter (or mix) that answers (RL baselines)


class FrontGenerator:
    """What a method supplies: answers for chunks of items. Responses are texts (or image file paths).

    `points(items)` answers items {"i", "point": k, "prompt": p}; `base(items)` answers items
    {"i", "prompt": p} with the base model, unconditioned. `i` numbers the items of a list; a chunk
    samples with the evaluation seed + its first item's `i`, so no two chunks share a random stream.
    Base chunks are generated before point chunks."""

    identity: dict = {}  # what the answers depend on besides settings, points and prompts (adapter paths...)

    def base(self, items: list[dict]) -> list[str]:
        raise NotImplementedError

    def points(self, items: list[dict]) -> list[str]:
        raise NotImplementedError

    def generation_stats(self) -> dict:
        return {}


@dataclass
class FrontSpec:
    method: str
    run_dir: Path
    eval_dir: Path
    rewards: list[str]
    prompts: list[str]
    points: list[FrontPoint]
    settings: dict  # generation settings, recorded in pareto.json
    chunk_size: int
    reference: list[float] | None = None  # None: the base-model rule
    eval_base: bool = True
    reward_stats: object | None = None  # RewardStats: adds normalised columns
    extra: dict = field(default_factory=dict)  # method-specific fields of pareto.json
    title: str = "Pareto front"
    label: str = "preference grid"


def grid_points(info, method: str, divisions: int | None) -> list[FrontPoint]:
    """The preference grid of a run that writes score tags, each point with its targets (`info`: RunInfo)."""
    from .preference import preference_grid, preference_to_targets

    return [
        FrontPoint(preference=list(w), targets=preference_to_targets(w, info.score_low, info.score_high, method))
        for w in preference_grid(info.num_objectives, divisions)
    ]


def evaluate_run(
    run,
    info,
    points: list[FrontPoint],
    make_front: Callable[[dict], FrontGenerator],
    *,
    label: str,
    flags: dict,
    title: str | None = None,
    prompts: list[str] | None = None,
    eval_dir=None,
    overrides: dict | None = None,
    progress: bool = True,
    extra: dict | None = None,
    chunk_size: int | None = None,
) -> dict:
    """Every method's evaluation: its points answered by `make_front(settings)` on the run's held-out
    prompts, scored with the run's rewards, through `evaluate_front`.

    `run`: the parsed recipe (`ric.methods.Run`); `info`: its RunInfo. The settings are the run's
    generation settings (`info.generation`) with the recipe's seed, the evaluation's flags (`overrides`,
    recipe keys renamed by `flags` to the generator's settings) and `eval_batch_size`; `prompts` default
    to the run's data/eval, cut to `eval_num_prompts`; chunks hold two batches unless `chunk_size` is given.
    `label` names the points in the plot's legend, `title` the method in its title."""
    from reward_models import load_rewards

    objectives, eval_args = run.objectives, run.evaluation
    settings = {**info.generation, "seed": objectives.seed}
    settings.update({flags[k]: v for k, v in (overrides or {}).items() if k in flags})
    if eval_args.eval_batch_size and "batch_size" in settings:
        settings["batch_size"] = eval_args.eval_batch_size
    if prompts is None and eval_args.eval_prompts_file:
        from .data import load_table, require_columns

        table = load_table(eval_args.eval_prompts_file)
        require_columns(table, ["prompt"], f"eval_prompts_file {eval_args.eval_prompts_file}")
        prompts = list(dict.fromkeys(p for p in table["prompt"] if str(p).strip()))
    if prompts is None:
        import datasets

        prompts = list(datasets.load_from_disk(str(Path(run.run_dir) / "data" / "eval"))["prompt"])
    spec = FrontSpec(
        method=run.method,
        run_dir=Path(run.run_dir),
        eval_dir=Path(eval_dir) if eval_dir else Path(run.run_dir) / "eval",
        rewards=list(info.rewards),
        prompts=list(prompts)[: eval_args.eval_num_prompts],
        points=points,
        settings=settings,
        chunk_size=chunk_size or max(2 * settings.get("batch_size", 32), 1),
        reference=eval_args.hypervolume_reference,
        eval_base=eval_args.eval_base_model,
        reward_stats=info.reward_stats,
        extra={"template": info.template, **(extra or {})},
        title=f"{title or run.method} on {Path(run.run_dir).name}: {info.rewards[0]} vs {info.rewards[-1]}",
        label=label,
    )
    batch = objectives.reward_batch_size
    return evaluate_front(
        spec, make_front(settings), lambda: load_rewards(info.rewards, info.reward_models, batch_size=batch), progress
    )


def summarize(raw: np.ndarray, names) -> dict:
    return {"mean": dict(zip(names, raw.mean(0).tolist())), "std": dict(zip(names, raw.std(0).tolist()))}


def default_reference(base_raw: np.ndarray) -> list[float]:
    """The base model's mean - 3 std of each raw reward."""
    return [round(float(m), 4) for m in base_raw.mean(0) - 3 * base_raw.std(0)]


def check_reference(spec: FrontSpec) -> None:
    if spec.reference is not None and len(spec.reference) != len(spec.rewards):
        raise ValueError(f"hypervolume_reference: need {len(spec.rewards)} values ({', '.join(spec.rewards)})")
    if spec.reference is None and not spec.eval_base:
        raise ValueError(
            "hypervolume_reference: give it when eval_base_model is false (the default uses the base model)"
        )
    if not spec.prompts:
        raise ValueError(f"{spec.run_dir}: no evaluation prompts")


def evaluate_front(
    spec: FrontSpec, generator: FrontGenerator, load_scorers: Callable[[], list], progress: bool = True
) -> dict:
    """Generate, score and summarise the front of `spec`; writes pareto.json, pareto.png and the CSVs."""
    check_reference(spec)
    key = fingerprint(
        [
            {"v": v}
            for v in (spec.method, generator.identity, spec.settings, [vars(p) for p in spec.points], spec.prompts)
        ]
    )
    gen_dir = spec.eval_dir / "gen"
    base_rows = []
    if spec.eval_base:
        items = [{"i": i, "prompt": p} for i, p in enumerate(spec.prompts)]
        base_rows = _answer(
            gen_dir / f"base-{key}", items, spec.chunk_size, generator.base, "evaluating base model", progress
        )
    items = [{"point": k, "prompt": p} for k in range(len(spec.points)) for p in spec.prompts]
    items = [{"i": i, **item} for i, item in enumerate(items)]  # the index seeds a chunk's own random stream
    rows = _answer(
        gen_dir / f"points-{key}", items, spec.chunk_size, generator.points, f"evaluating {spec.method}", progress
    )
    all_rows = rows + base_rows
    raw = score_chunked(
        spec.eval_dir / f"scores-{key}",
        [r["prompt"] for r in all_rows],
        [r["response"] for r in all_rows],
        spec.rewards,
        load_scorers,
        spec.chunk_size,
        progress,
        "scoring evaluation",
    )
    if not is_main_process():
        wait_for_everyone()
        return read_json(spec.eval_dir / "pareto.json")
    result = _summarise(spec, rows, raw[: len(rows)], base_rows, raw[len(rows) :], generator.generation_stats())
    write_json(spec.eval_dir / "pareto.json", result)
    if len(spec.rewards) >= 2:
        plot_front(result, spec.eval_dir / "pareto.png", title=spec.title, label=spec.label)
    wait_for_everyone()
    return result


def _answer(folder: Path, items: list[dict], chunk_size: int, answer, desc: str, progress: bool) -> list[dict]:
    def work(chunk):
        return [{**c, "response": r} for c, r in zip(chunk, answer(chunk))]

    return run_chunked(folder, items, chunk_size, work, desc, progress)


def _summarise(spec: FrontSpec, rows, raw, base_rows, base_raw, generation: dict) -> dict:
    names, stats = spec.rewards, spec.reward_stats
    normalized = stats.normalize(names, raw) if stats is not None else None
    points = []
    for k, point in enumerate(spec.points):
        idx = [i for i, r in enumerate(rows) if r["point"] == k]
        csv = f"points/point_{k:02d}.csv"
        atomic_write_csv(spec.eval_dir / csv, [_csv_row(rows[i], raw[i], point, normalized, i, spec) for i in idx])
        entry = {"preference": [round(float(x), 4) for x in point.preference]}
        entry.update({"targets": point.targets} if point.targets is not None else {})
        entry.update({"policy": point.policy} if point.policy is not None else {})
        entry.update(summarize(raw[idx], names))
        if normalized is not None:
            entry["mean_normalized"] = dict(zip(names, normalized[idx].mean(0).tolist()))
        points.append({**entry, "csv": csv})
    base = _base_summary(spec, base_rows, base_raw) if base_rows else None
    reference = list(spec.reference) if spec.reference is not None else default_reference(base_raw)
    means = np.array([[p["mean"][n] for n in names] for p in points])
    weights = np.array([p["preference"] for p in points])
    following = preference_following(weights, means) if len(points) > 2 else None
    intervals = _intervals(spec, rows, raw, base_rows, base_raw, weights, reference)
    return {
        "method": spec.method,
        "run_dir": str(spec.run_dir),
        **spec.extra,
        "rewards": names,
        "num_prompts": len(spec.prompts),
        "prompts_fingerprint": fingerprint([{"v": p} for p in spec.prompts]),
        "points": points,
        "front": pareto_front(means),
        "hypervolume_reference": reference,
        "hypervolume_reference_rule": "given" if spec.reference is not None else REFERENCE_RULE,
        "hypervolume": hypervolume(means, reference),
        "base": base,
        "hypervolume_base": hypervolume([[base["mean"][n] for n in names]], reference) if base else None,
        "preference_following": dict(zip(names, following)) if following is not None else None,
        **intervals,
        "generation": {**spec.settings, **generation},
    }


def _intervals(spec: FrontSpec, rows, raw, base_rows, base_raw, weights, reference) -> dict:
    """95 % bootstrap intervals over the evaluation prompts for the hypervolume, preference-following and the
    base model's hypervolume (the reference point fixed, the same resampled prompts for every point)."""
    num_prompts, names = len(spec.prompts), spec.rewards
    scores = np.zeros((len(spec.points), num_prompts, len(names)))
    for row, values in zip(rows, raw):
        scores[row["point"], row["i"] % num_prompts] = values  # items run point-major over the prompts
    draws = bootstrap_draws(num_prompts)
    boot = bootstrap_front(scores, weights, reference, draws)
    following = boot["preference_following"]
    result = {
        "hypervolume_ci": interval(boot["hypervolume"]),
        "preference_following_ci": dict(zip(names, (interval(following[:, j]) for j in range(len(names)))))
        if following is not None
        else None,
    }
    if base_rows:
        base = np.zeros((1, num_prompts, len(names)))
        for row, values in zip(base_rows, base_raw):
            base[0, row["i"]] = values
        result["hypervolume_base_ci"] = interval(
            bootstrap_front(base, [[1.0] * len(names)], reference, draws)["hypervolume"]
        )
    result["bootstrap"] = {"resamples": BOOTSTRAP_RESAMPLES, "over": "evaluation prompts", "level": 0.95, "seed": 0}
    return result


def _csv_row(row: dict, raw_row, point: FrontPoint, normalized, i: int, spec: FrontSpec) -> dict:
    entry = {"prompt": row["prompt"], "response": row["response"]}
    desired_raw = (
        spec.reward_stats.denormalize(spec.rewards, point.targets)
        if point.targets is not None and spec.reward_stats is not None
        else None
    )
    for j, n in enumerate(spec.rewards):
        if desired_raw is not None:
            entry[f"desired_{n}"] = point.targets[j]
            entry[f"desired_raw_{n}"] = round(float(desired_raw[j]), 4)
        entry[f"obtained_{n}"] = round(float(raw_row[j]), 4)
        if normalized is not None:
            entry[f"obtained_normalized_{n}"] = round(float(normalized[i, j]), 4)
    return entry


def _base_summary(spec: FrontSpec, base_rows, base_raw) -> dict:
    names = spec.rewards
    atomic_write_csv(
        spec.eval_dir / "base.csv",
        [
            {
                "prompt": r["prompt"],
                "response": r["response"],
                **{f"obtained_{n}": round(float(base_raw[i, j]), 4) for j, n in enumerate(names)},
            }
            for i, r in enumerate(base_rows)
        ],
    )
    base = {**summarize(base_raw, names), "csv": "base.csv"}
    if spec.reward_stats is not None:
        base["mean_normalized"] = dict(zip(names, spec.reward_stats.normalize(names, base_raw).mean(0).tolist()))
    # how the rewards co-vary on the base model's own answers (the objectives' tension)
    base["pearson"] = pearson_matrix(base_raw) if len(names) > 1 and len(base_raw) > 2 else None
    return base


def plot_front(
    result: dict, path: Path, title: str | None = None, others: dict | None = None, label: str = "preference grid"
) -> None:
    """pareto.png: the points' mean rewards (first two objectives), the base model's point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result["rewards"]
    fig, ax = plt.subplots(figsize=(6, 4.6), dpi=120)
    xs = [p["mean"][names[0]] for p in result["points"]]
    ys = [p["mean"][names[1]] for p in result["points"]]
    ax.plot(xs, ys, "-o", color="tab:blue", label=label)
    for p, x, y in zip(result["points"], xs, ys):
        ax.annotate(f"w1={p['preference'][0]:.2g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for name, series in (others or {}).items():
        ax.plot([p[0] for p in series], [p[1] for p in series], "-s", label=name)
    if result.get("base"):
        b = result["base"]["mean"]
        ax.plot([b[names[0]]], [b[names[1]]], "*", ms=14, color="tab:red", label="base model (no tags)")
    ax.set_xlabel(f"{names[0]} (mean raw reward)")
    ax.set_ylabel(f"{names[1]} (mean raw reward)")
    hv = result.get("hypervolume")
    subtitle = f"hypervolume {hv:.4g}" if hv is not None else ""
    if result.get("base") and result.get("hypervolume_base") is not None:
        subtitle += f" (base {result['hypervolume_base']:.4g})"
    ax.set_title((title or "Pareto front") + ("\n" + subtitle if subtitle else ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    save_figure(fig, path)


def plot_loss(log_history: Sequence[dict], path: Path, title: str) -> None:
    """The training loss over steps (train_loss.png beside every trained adapter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    if not points:
        return
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot(*zip(*points), marker="o", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
