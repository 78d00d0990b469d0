"""`ric compare RUN_DIR...`: every method's front on one plot, and a table of hypervolume,
preference-following and compute (wall-clock and CPU seconds, optimizer steps, generated tokens).

Runs must have been evaluated on the same prompts with the same rewards (checked). The
hypervolume of every front is recomputed with one reference point: the one given, or the first
run's. Writes compare.json, compare.md and compare.png into --out (default: ./compare).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .pareto import bootstrap_draws, bootstrap_front, hypervolume, interval
from .rundir import COMPUTE, atomic_write_text, read_json, save_figure, write_json


def load_run(path: str | Path) -> dict:
    """A run directory (its eval/pareto.json) or an evaluation folder holding pareto.json (e.g.
    RUN_DIR/eval_online_2); compute comes from the run directory's compute.json."""
    path = Path(path)
    if (path / "pareto.json").exists():
        eval_dir, run_dir = path, path.parent
    else:
        eval_dir, run_dir = path / "eval", path
    if not (eval_dir / "pareto.json").exists():
        raise FileNotFoundError(
            f"{path} has no eval/pareto.json: evaluate it first (`ric evaluate {path}` or `ric run`)"
        )
    result = read_json(eval_dir / "pareto.json")
    missing = [k for k in ("rewards", "points", "num_prompts", "hypervolume_reference") if k not in result]
    if missing:
        raise ValueError(
            f"{eval_dir / 'pareto.json'}: missing {missing}; evaluate the run again (`ric evaluate {run_dir}`)"
        )
    compute = read_json(run_dir / COMPUTE) if (run_dir / COMPUTE).exists() else None
    label = f"{result.get('method', 'ric')} ({run_dir.name}" + (
        f"/{eval_dir.name})" if eval_dir.name != "eval" else ")"
    )
    return {"run_dir": str(run_dir), "eval_dir": str(eval_dir), "label": label, "pareto": result, "compute": compute}


def check_comparable(runs: list[dict]) -> None:
    first = runs[0]["pareto"]
    for run in runs[1:]:
        other = run["pareto"]
        if other["rewards"] != first["rewards"]:
            raise ValueError(
                f"{run['run_dir']} was scored with rewards {other['rewards']}, "
                f"{runs[0]['run_dir']} with {first['rewards']}: compare runs of the same objectives"
            )
        if (
            other.get("prompts_fingerprint") != first.get("prompts_fingerprint")
            or other["num_prompts"] != first["num_prompts"]
        ):
            raise ValueError(
                f"{run['run_dir']} was evaluated on other prompts than {runs[0]['run_dir']} "
                f"({other['num_prompts']} vs {first['num_prompts']} prompts, or different ones): "
                "evaluate both on the same held-out prompts (same eval data and eval_num_prompts)"
            )


def prompt_scores(run: dict) -> np.ndarray | None:
    """(points, prompts, objectives): every point's raw rewards per evaluation prompt, read back from the
    evaluation's CSVs (points/point_XX.csv, in prompt order); None when a CSV is missing (an evaluation
    written before they were kept)."""
    import csv

    p = run["pareto"]
    eval_dir = Path(run["eval_dir"])
    scores = []
    for point in p["points"]:
        path = eval_dir / point.get("csv", "")
        if not point.get("csv") or not path.exists():
            return None
        with open(path, newline="", encoding="utf-8") as f:
            scores.append([[float(row[f"obtained_{n}"]) for n in p["rewards"]] for row in csv.DictReader(f)])
    if any(len(s) != p["num_prompts"] for s in scores):
        return None
    return np.array(scores)


def started_from(run: dict) -> str:
    """The run a baseline started from (an SFT run, its compute charged as `reused:start`), else "base"."""
    stages = (run["compute"] or {}).get("stages", {})
    return (stages.get("reused:start") or {}).get("charged_from", "base")


def compare(run_dirs, out: str | Path = "compare", reference=None) -> dict:
    if len(run_dirs) < 1:
        raise ValueError("ric compare: give at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    check_comparable(runs)
    names = runs[0]["pareto"]["rewards"]
    ref = list(reference) if reference is not None else list(runs[0]["pareto"]["hypervolume_reference"])
    if len(ref) != len(names):
        raise ValueError(f"--reference: need {len(names)} values ({', '.join(names)})")
    rows = []
    draws = bootstrap_draws(runs[0]["pareto"]["num_prompts"])  # the same resamples for every run: paired
    for run in runs:
        p = run["pareto"]
        means = np.array([[pt["mean"][n] for n in names] for pt in p["points"]])
        scores = prompt_scores(run)
        boot = None
        if scores is not None:
            boot = bootstrap_front(scores, [pt["preference"] for pt in p["points"]], ref, draws)
        boot_following = boot["preference_following"] if boot is not None else None
        total = (run["compute"] or {}).get("total", {})
        following = p.get("preference_following") or {}
        valid = [v for v in following.values() if v is not None]
        rows.append(
            {
                "label": run["label"],
                "method": p.get("method", "ric"),
                "run_dir": run["run_dir"],
                "points": len(p["points"]),
                "start": started_from(run),
                "hypervolume": hypervolume(means, ref),
                "hypervolume_ci": interval(boot["hypervolume"]) if boot is not None else None,
                "preference_following": following,
                "following_ci": {n: interval(boot_following[:, j]) for j, n in enumerate(names)}
                if boot_following is not None
                else None,
                "preference_following_mean": float(np.mean(valid)) if valid else None,
                "wall_seconds": total.get("wall_seconds"),
                "cpu_seconds": total.get("cpu_seconds"),
                "optimizer_steps": total.get("optimizer_steps"),
                "generated_tokens": total.get("generated_tokens"),
            }
        )
    base = next((r["pareto"]["base"] for r in runs if r["pareto"].get("base")), None)
    result = {
        "rewards": names,
        "reference": ref,
        "num_prompts": runs[0]["pareto"]["num_prompts"],
        "intervals": "95 % bootstrap over the evaluation prompts (1,000 resamples, the same for every run)",
        "runs": rows,
        "base": {"mean": base["mean"], "hypervolume": hypervolume([[base["mean"][n] for n in names]], ref)}
        if base
        else None,
    }
    out = Path(out)
    write_json(out / "compare.json", result)
    atomic_write_text(out / "compare.md", to_markdown(result))
    if len(names) >= 2:
        plot_all(runs, names, base, out / "compare.png")
    return result


def _fmt(value, spec=".4g"):
    return "-" if value is None else format(value, spec)


def _fmt_ci(pair, spec=".4g") -> str:
    return "" if not pair else f" [{pair[0]:{spec}}, {pair[1]:{spec}}]"


def to_markdown(result: dict) -> str:
    names = result["rewards"]
    head = (
        ["method (run)", "points", "hypervolume"]
        + [f"following {n}" for n in names]
        + ["wall s", "CPU s", "optimizer steps", "generated tokens"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["runs"]:
        cells = [r["label"], str(r["points"]), _fmt(r["hypervolume"]) + _fmt_ci(r.get("hypervolume_ci"))]
        cells += [
            _fmt(r["preference_following"].get(n), ".2f") + _fmt_ci((r.get("following_ci") or {}).get(n), ".2f")
            for n in names
        ]
        cells += [
            _fmt(r["wall_seconds"], ".0f"),
            _fmt(r["cpu_seconds"], ".0f"),
            _fmt(r["optimizer_steps"], "d"),
            _fmt(r["generated_tokens"], "d"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if result.get("base"):
        lines.append(f"\nBase model (no tuning): hypervolume {result['base']['hypervolume']:.4g}.")
    lines.append(
        f"\nHypervolume reference point ({', '.join(names)}): {result['reference']}; {result['num_prompts']} "
        "evaluation prompts; in brackets, 95 % bootstrap intervals over those prompts."
    )
    return "\n".join(lines) + "\n"


def plot_all(runs, names, base, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    markers = "osD^vP*X"
    for k, run in enumerate(runs):
        pts = run["pareto"]["points"]
        xs, ys = [p["mean"][names[0]] for p in pts], [p["mean"][names[1]] for p in pts]
        style = "-" + markers[k % len(markers)] if len(pts) > 1 else markers[k % len(markers)]
        ax.plot(xs, ys, style, label=run["label"], ms=6)
    if base:
        ax.plot([base["mean"][names[0]]], [base["mean"][names[1]]], "*", ms=14, color="tab:red", label="base model")
    ax.set_xlabel(f"{names[0]} (mean raw reward)")
    ax.set_ylabel(f"{names[1]} (mean raw reward)")
    ax.set_title("Pareto fronts", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
