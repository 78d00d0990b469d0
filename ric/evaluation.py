"""`ric evaluate`: the Pareto front of a trained run (PAPER.md stage 5).

For every point of the preference grid, the preference is mapped to targets, one response is
generated per held-out prompt, and the responses are scored with the raw (un-normalised) rewards.
The base model, unconditioned (adapter off, no tags), answers the same prompts as a reference point.

Writes under RUN_DIR/eval (or --eval_dir): points/point_XX.csv (prompt, response, desired and
obtained scores), base.csv, pareto.json (per-point means and std, the front, hypervolume with its
reference point, preference-following Spearman per objective, timings), pareto.png. Generation is
chunked and resumable (eval/gen/): a rerun after a crash generates only what is missing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .chunks import run_chunked
from .generation import format_prompts, generate_batched, load_policy, merge_for_inference, resolve_adapter
from .io import RunState, atomic_write_csv, write_json
from .pareto import hypervolume, pareto_front, pearson_matrix, preference_following
from .preference import preference_grid, preference_to_targets
from .run_info import RunInfo, load_run_info

logger = logging.getLogger(__name__)


def default_reference(info: RunInfo) -> list[float]:
    """Training mean - 3 std of each raw reward: fixed by the data, so runs on the same data compare."""
    return [round(info.reward_stats.mean[n] - 3 * info.reward_stats.std[n], 4) for n in info.rewards]


def grid_targets(info: RunInfo, method: str, divisions: int | None):
    grid = preference_grid(info.num_objectives, divisions)
    return grid, [preference_to_targets(w, info.score_low, info.score_high, method) for w in grid]


def _point_name(k: int) -> str:
    return f"point_{k:02d}"


def generate_grid(model, tokenizer, info: RunInfo, prompts, targets, gen_dir: Path, settings: dict, progress=True, stats=None):
    """Responses for every (grid point, prompt), batched across points, chunked and resumable."""
    items = [{"point": k, "prompt": p} for k in range(len(targets)) for p in prompts]

    def work(chunk):
        texts = format_prompts([c["prompt"] for c in chunk], info.template, tokenizer, [targets[c["point"]] for c in chunk],
                               info.system_prompt)
        out = generate_batched(model, tokenizer, texts, template=info.template, progress=False, stats=stats, **settings)
        return [{**c, "response": r} for c, r in zip(chunk, out)]

    chunk = max(settings.get("batch_size", 32) * 2, 1)
    return run_chunked(gen_dir, items, chunk, work, "evaluating grid", progress)


def generate_base(model, tokenizer, info: RunInfo, prompts, gen_dir: Path, settings: dict, progress=True, stats=None):
    items = [{"prompt": p} for p in prompts]

    def work(chunk):
        texts = format_prompts([c["prompt"] for c in chunk], info.template, tokenizer, system_prompt=info.system_prompt)
        with model.disable_adapter():
            out = generate_batched(model, tokenizer, texts, template=info.template, progress=False, stats=stats, **settings)
        return [{**c, "response": r} for c, r in zip(chunk, out)]

    return run_chunked(gen_dir, items, max(settings.get("batch_size", 32) * 2, 1), work, "evaluating base model", progress)


def summarize(raw: np.ndarray, names) -> dict:
    return {"mean": dict(zip(names, raw.mean(0).tolist())), "std": dict(zip(names, raw.std(0).tolist()))}


def plot_front(result: dict, path: Path, title: str | None = None, others: dict | None = None,
               label: str = "RiC, one adapter (grid of preferences)") -> None:
    """pareto.png: the grid's mean rewards (first two objectives), the front, the base model."""
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
    for label, series in (others or {}).items():
        ax.plot([p[0] for p in series], [p[1] for p in series], "-s", label=label)
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
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    import os

    os.replace(tmp, path)


def evaluate(run_dir, eval_args, args, adapter=None, eval_dir=None, device=None, progress: bool = True) -> dict:
    """Evaluate a run (its latest adapter unless `adapter` is given); returns pareto.json's content."""
    from reward_models import load_rewards

    from .prepare import load_prepared

    start = time.time()
    run_dir = Path(run_dir)
    info, folder = load_run_info(run_dir)
    adapter_dir = Path(adapter) if adapter else resolve_adapter(folder, info)
    info, _ = load_run_info(adapter_dir)
    _, eval_rows, _ = load_prepared(run_dir)
    prompts = list(eval_rows["prompt"])[: eval_args.eval_num_prompts]
    if not prompts:
        raise ValueError(f"{run_dir}/data/eval holds no prompts")
    eval_dir = Path(eval_dir) if eval_dir else run_dir / "eval"
    grid, targets = grid_targets(info, eval_args.eval_preference_method, eval_args.eval_grid_divisions)
    reference = list(eval_args.hypervolume_reference or default_reference(info))
    if len(reference) != info.num_objectives:
        raise ValueError(f"hypervolume_reference: need {info.num_objectives} values ({', '.join(info.rewards)})")
    settings = {**info.generation, "seed": args.seed}
    gen_stats: dict = {}
    model, tokenizer = load_policy(info, adapter_dir, device)
    # Generations are cached per adapter and settings: another evaluation of the same run never
    # reuses responses that were made under different settings.
    key = _fingerprint([str(adapter_dir.resolve()), settings, targets, prompts])
    t0 = time.time()
    base_rows = []
    if eval_args.eval_base_model:
        base_rows = generate_base(model, tokenizer, info, prompts, eval_dir / "gen" / f"base-{key}", settings, progress, gen_stats)
    # The base model first (adapter off), then the grid with the adapter merged in for speed.
    merge_for_inference(model)
    rows = generate_grid(model, tokenizer, info, prompts, targets, eval_dir / "gen" / f"grid-{key}", settings, progress, gen_stats)
    gen_seconds = time.time() - t0
    del model

    from accelerate import PartialState

    dist = PartialState()
    if not dist.is_main_process:
        # Every process generated its share; the main one scores and writes once.
        dist.wait_for_everyone()
        from .io import read_json

        return read_json(eval_dir / "pareto.json")

    t0 = time.time()
    scorers = load_rewards(info.rewards, info.reward_models, batch_size=args.reward_batch_size)
    all_rows = rows + base_rows
    from .prepare import score_responses

    raw = score_responses(scorers, [r["prompt"] for r in all_rows], [r["response"] for r in all_rows], progress)
    normalized = info.reward_stats.normalize(info.rewards, raw)
    score_seconds = time.time() - t0
    names = info.rewards

    points = []
    for k, (w, t) in enumerate(zip(grid, targets)):
        idx = [i for i, r in enumerate(rows) if r["point"] == k]
        desired_raw = info.reward_stats.denormalize(names, t)
        csv_rows = []
        for i in idx:
            entry = {"prompt": rows[i]["prompt"], "response": rows[i]["response"]}
            for j, n in enumerate(names):
                entry[f"desired_{n}"] = t[j]
                entry[f"desired_raw_{n}"] = round(float(desired_raw[j]), 4)
                entry[f"obtained_{n}"] = round(float(raw[i, j]), 4)
                entry[f"obtained_normalized_{n}"] = round(float(normalized[i, j]), 4)
            csv_rows.append(entry)
        atomic_write_csv(eval_dir / "points" / f"{_point_name(k)}.csv", csv_rows)
        points.append({"preference": [round(x, 4) for x in w], "targets": t, **summarize(raw[idx], names),
                       "mean_normalized": dict(zip(names, normalized[idx].mean(0).tolist())), "csv": f"points/{_point_name(k)}.csv"})

    base = None
    if base_rows:
        offset = len(rows)
        base_raw = raw[offset:]
        atomic_write_csv(eval_dir / "base.csv", [
            {"prompt": r["prompt"], "response": r["response"], **{f"obtained_{n}": round(float(base_raw[i, j]), 4) for j, n in enumerate(names)}}
            for i, r in enumerate(base_rows)
        ])
        base = {**summarize(base_raw, names), "mean_normalized": dict(zip(names, normalized[offset:].mean(0).tolist())), "csv": "base.csv",
                # how the rewards co-vary on the base model's own answers (the objectives' tension)
                "pearson": pearson_matrix(base_raw) if len(names) > 1 and len(base_raw) > 2 else None}

    means = np.array([[p["mean"][n] for n in names] for p in points])
    front = pareto_front(means)
    result = {
        "method": "ric",
        "run_dir": str(run_dir),
        "adapter": str(adapter_dir),
        "rewards": names,
        "template": info.template,
        "preference_method": eval_args.eval_preference_method,
        "num_prompts": len(prompts),
        "prompts_fingerprint": _fingerprint(prompts),
        "points": points,
        "front": front,
        "hypervolume_reference": reference,
        "hypervolume": hypervolume(means, reference),
        "base": base,
        "hypervolume_base": hypervolume([[base["mean"][n] for n in names]], reference) if base else None,
        "preference_following": dict(zip(names, preference_following(np.array(grid), means))),
        "generation": {**settings, **gen_stats},
        "timings": {"generate_seconds": round(gen_seconds, 1), "score_seconds": round(score_seconds, 1),
                    "total_seconds": round(time.time() - start, 1)},
    }
    write_json(eval_dir / "pareto.json", result)
    if len(names) >= 2:
        plot_front(result, eval_dir / "pareto.png", title=f"RiC on {Path(run_dir).name}: {names[0]} vs {names[1]}")
    RunState(run_dir).mark(f"evaluate:{eval_dir.name}", hypervolume=result["hypervolume"], seconds=result["timings"]["total_seconds"])
    dist.wait_for_everyone()
    return result


def _fingerprint(values) -> str:
    from .chunks import fingerprint

    return fingerprint([{"v": v} for v in values])
