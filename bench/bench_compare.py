"""RiC against MORLHF and Rewarded Soups on the demo task: the baselines from SFT on RiC's rows, trained
until they stop improving, every figure with a 95 % bootstrap interval. Resumable: stopped anywhere, the
same command continues where it stopped (every piece is a `ric` run directory or evaluation that skips
what is finished).

    python bench/bench_compare.py [--out bench/results] [--hours 8] [--ric_seeds 0,1] [--morlhf_seeds 0,1]
    python bench/bench_compare.py --summarize      (the report from what is finished, nothing run)

The plan, in order (each step runs under runs/compare/):

1. RiC, seed 0: `recipes/demo/ric.yaml` (prepare, 150 offline steps kept every --ric_save_steps,
   the recipe's online iterations); every offline checkpoint, the offline adapter and each online one
   evaluated.
2. SFT on that run's sampled rows (`recipes/demo/sft.yaml --rows_from_run`): where both baselines start.
3. Learning-rate sweep (reported, not charged): MORLHF's middle point (0.5, 0.5) for --sweep_steps steps
   at each of --sweep_lrs, and one step further (1-3-10 ladder, up to --sweep_extend rates) while the best rate
   sits at an edge; the rate with the highest held-out hypervolume trains both baselines.
4. MORLHF (5 points) and Rewarded Soups (one policy per reward) from the SFT model at that rate, constant
   schedule (the paper's PPO has none), evaluated at --curve_steps (every policy's checkpoint of the step:
   `ric evaluate --step`). When any policy's hypervolume still moved by >= --plateau over the last doubling
   of steps, its run is trained on to twice the steps (the trainer resumes from its last checkpoint; the
   earlier training's compute is kept), up to --max_steps. Soups' final grid (11 points) at the last step, and
   at the step whose two policies gave the highest hypervolume where that is an earlier one (picked on the
   comparison questions, so optimistic for Soups: the early stop its authors would make with a validation set).
5. RiC, the other seeds; MORLHF, the other seeds at the final budget, evaluated there and at seed 0's best
   step (cut first when --hours runs out).

Every evaluation answers the 111 questions of recipes/demo/data/compare_prompts.jsonl (in no training
data) with the demo's generation settings. One reference point for every front, seed and resample: the
bundled base model's mean - 3 std on those questions (from RiC's evaluation). Intervals: 1,000 resamples
of the questions, the same resamples for every front (paired). Compute is training compute (sampling,
scoring, training; the SFT and RiC's sampling charged to the baselines), evaluations left out: CPU and
wall seconds from the runs' compute.json, a checkpoint charged its share of its stage by steps.

Writes compare.json, compare.md and compare.png into --out: rows (each with `start`, `hypervolume_ci`,
`following_ci`), `num_prompts`, `seeds`, `curves`, `lr_sweep`, and for each baseline's final front the
compute at which each RiC seed first reaches its hypervolume, with the range of that crossing over the
resamples. Run it alone on the machine.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ric.rundir import checkpoint_steps

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "compare"
PROMPTS = "recipes/demo/data/compare_prompts.jsonl"
STATE = RUNS / "bench_state.json"


def ric(*args: str) -> None:
    print("$ ric " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "ric", *args], check=True, cwd=ROOT)


def read(path: Path):
    return json.loads(path.read_text())


def state() -> dict:
    return read(STATE) if STATE.exists() else {"wall_seconds": 0.0, "steps": {}}


def save_state(data: dict) -> None:
    STATE.parent.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(STATE)


class OutOfTime(Exception):
    pass


def once(name: str, hours: float, fn, *args):
    """Run one plan step, once: its result and wall seconds are recorded in bench_state.json, and a finished
    step returns its recorded result. No step starts once the comparison's wall time has reached --hours (this
    bench's clock, or the runs' own records where they hold more: time spent before a restart counts too)."""
    data = state()
    if name in data["steps"]:
        return data["steps"][name].get("result")
    if max(data["wall_seconds"], machine_time()["wall_seconds"]) >= hours * 3600:
        raise OutOfTime(name)
    start = time.time()
    try:
        result = fn(*args)
    finally:
        # every run of the step counts against --hours, a stopped one too (kept under `stopped` until it finishes)
        data = state()
        spent = round(time.time() - start, 1)
        data["wall_seconds"] = round(data["wall_seconds"] + spent, 1)
        stopped = data.setdefault("stopped", {})
        stopped[name] = round(stopped.get(name, 0.0) + spent, 1)
        save_state(data)
    data["steps"][name] = {"wall_seconds": data["stopped"].pop(name), "result": result}
    save_state(data)
    return result


def evaluate(run_dir: Path, name: str, *flags: str) -> Path:
    """`ric evaluate` on the comparison questions into RUN_DIR/name (skipped when finished). The base model
    answers once, in the first RiC evaluation (it fixes the reference); the others reuse its reference."""
    if not (run_dir / name / "pareto.json").exists():
        fixed = RUNS / "ric-s0" / "cmp_offline" / "pareto.json"
        if fixed.exists() and run_dir / name != fixed.parent:
            reference = [str(v) for v in read(fixed)["hypervolume_reference"]]
            flags = (*flags, "--eval_base_model", "false", "--hypervolume_reference", *reference)
        ric("evaluate", str(run_dir), "--eval_dir", str(run_dir / name), "--eval_prompts_file", PROMPTS, *flags)
    return run_dir / name


def train(recipe: str, run_dir: Path, *flags: str) -> None:
    """`ric prepare` and `ric train` (the run's own evaluation on the demo's 40 questions is not needed)."""
    for command in ("prepare", "train"):
        ric(command, recipe, "--output_dir", str(run_dir), *flags)


def extend(run_dir: Path, max_steps: int) -> None:
    """Train a finished baseline run's policies on to `max_steps`: each policy stage is opened again (the
    trainer resumes from its last checkpoint) and its compute so far is kept as an earlier part of the stage."""
    from ric.rundir import COMPUTE, read_compute, write_json
    from ric.rundir import STATE as RUN_STATE

    run_state = read(run_dir / RUN_STATE)
    compute = read_compute(run_dir)
    for name, entry in run_state["stages"].items():
        finished = compute["stages"].get(name, {}).get("optimizer_steps", 0) >= max_steps
        if name.startswith("policy:") and entry.get("status") == "done" and not finished:
            spent = compute["stages"].pop(name)
            earlier = compute.setdefault("interrupted", {}).setdefault(
                name, {"wall_seconds": 0.0, "cpu_seconds": 0.0, "runs": 0}
            )
            earlier["wall_seconds"] = round(earlier["wall_seconds"] + spent["wall_seconds"], 1)
            earlier["cpu_seconds"] = round(earlier["cpu_seconds"] + spent["cpu_seconds"], 1)
            earlier["runs"] += 1
            entry["status"] = "extending"
    write_json(run_dir / COMPUTE, compute)
    write_json(run_dir / RUN_STATE, run_state)
    ric("train", str(run_dir / "recipe.yaml"), "--output_dir", str(run_dir), "--max_steps", str(max_steps))


# --- the plan --------------------------------------------------------------------------------------


def ric_seed(a, seed: int) -> None:
    run = RUNS / f"ric-s{seed}"

    def go():
        flags = ("--seed", str(seed), "--save_steps", str(a.ric_save_steps), "--save_total_limit", "1000")
        train("recipes/demo/ric.yaml", run, *flags)
        last = read(run / "train_stats.json")["global_step"]
        evaluate(run, "cmp_offline", "--adapter", str(run / "adapter"))
        for k in checkpoint_steps(run / "checkpoints/offline"):
            if k < last:
                evaluate(run, f"cmp_step_{k}", "--adapter", str(run / f"checkpoints/offline/checkpoint-{k}"))
        for i in online_iterations(run):
            evaluate(run, f"cmp_online_{i}", "--adapter", str(run / f"adapter_online_{i}"))
        return {"offline_steps": last}

    once(f"ric-s{seed}", a.hours, go)


def sft(a) -> Path:
    run = RUNS / "sft"

    def go():
        train("recipes/demo/sft.yaml", run, "--rows_from_run", str(RUNS / "ric-s0"))
        evaluate(run, "cmp")

    once("sft", a.hours, go)
    return run / "merged"


def baseline_flags(a, lr: float, seed: int, max_steps: int, save_steps: int) -> list[str]:
    return [
        "--model_name_or_path",
        str(RUNS / "sft/merged"),
        "--learning_rate",
        str(lr),
        "--lr_scheduler_type",
        "constant",
        "--max_steps",
        str(max_steps),
        "--save_steps",
        str(save_steps),
        "--save_total_limit",
        "1000",
        "--seed",
        str(seed),
    ]


def lr_sweep(a) -> float:
    def one(lr):
        run = RUNS / f"sweep-lr{lr:g}"
        flags = baseline_flags(a, lr, 0, a.sweep_steps, a.sweep_steps)
        train("recipes/demo/morlhf.yaml", run, *flags, "--preferences", "0.5,0.5")
        evaluate(run, "cmp")
        return [{"learning_rate": lr, "run": str(run.relative_to(ROOT))}]

    def go():
        return [row for lr in a.sweep_lrs for row in one(lr)]

    once("lr_sweep", a.hours, go)
    reference = fixed_reference(a)
    while True:
        rows = sweep_rows()
        scored = {r["learning_rate"]: front_stats(ROOT / r["run"] / "cmp", reference)["hypervolume"] for r in rows}
        best, rates = max(scored, key=scored.get), sorted(scored)
        # a best rate at an edge of the sweep is not a tuned rate: the sweep goes one step past that edge
        if len(rates) >= len(a.sweep_lrs) + a.sweep_extend or best not in (rates[0], rates[-1]):
            return best
        lr = beyond(best, up=best == rates[-1])
        once(f"lr_sweep_{lr:g}", a.hours, one, lr)


def beyond(lr: float, up: bool) -> float:
    """The next rate past the sweep's edge on its 1-3-10 ladder: 3e-4 -> 1e-3 up, 3e-5 -> 1e-5 down."""
    mantissa = float(f"{lr:.0e}".split("e")[0])
    factor = (10 / 3 if mantissa >= 3 else 3) if up else (3 if mantissa >= 3 else 10 / 3)
    return float(f"{(lr * factor if up else lr / factor):.0e}")


def sweep_rows() -> list[dict]:
    """The sweep's runs: the listed rates, then any rate added past an edge."""
    steps = state()["steps"]
    rows = list((steps.get("lr_sweep") or {}).get("result") or [])
    for name, entry in steps.items():
        if name.startswith("lr_sweep_"):
            rows += entry.get("result") or []
    return rows


def curve(a, method: str, lr: float) -> int:
    """Train `method` (seed 0) with checkpoints, evaluate each curve step, double the steps until every
    policy's hypervolume moved by < --plateau over the last doubling (or --max_steps). Returns the final step."""
    run = RUNS / f"{method}-s0"
    budget = a.curve_steps[-1]
    save = a.curve_steps[0]
    grid = ["--eval_grid_divisions", "1"] if method == "soups" else []  # each policy alone

    def train_to(steps: int, evaluated) -> None:
        if steps == budget:
            train(f"recipes/demo/{method}.yaml", run, *baseline_flags(a, lr, 0, budget, save))
        else:
            extend(run, steps)
        for k in evaluated:
            evaluate(run, f"cmp_step_{k}", "--step", str(k), *grid)

    once(f"{method}-s0:{budget}", a.hours, train_to, budget, a.curve_steps)
    reference = fixed_reference(a)
    while True:
        kept = [k for k in checkpoint_steps_of(run) if (run / f"cmp_step_{k}/pareto.json").exists()]
        last = kept[-1]
        half = last // 2
        if half not in kept or plateaued(run, half, last, reference, a.plateau) or last * 2 > a.max_steps:
            return last
        once(f"{method}-s0:{last * 2}", a.hours, train_to, last * 2, [last + last // 2, last * 2])


def best_step(run: Path) -> int:
    """The evaluated checkpoint of a seed-0 baseline run with the highest hypervolume on the comparison questions."""
    kept = [k for k in checkpoint_steps_of(run) if (run / f"cmp_step_{k}/pareto.json").exists()]
    return max(kept, key=lambda k: read(run / f"cmp_step_{k}/pareto.json")["hypervolume"])


def checkpoint_steps_of(run: Path) -> list[int]:
    folders = sorted((run / "policies").iterdir())
    return checkpoint_steps(folders[0] / "checkpoints")


def plateaued(run: Path, half: int, last: int, reference, tolerance: float) -> bool:
    a_, b_ = per_point(run / f"cmp_step_{half}", reference), per_point(run / f"cmp_step_{last}", reference)
    return all(abs(b_[k] - a_[k]) < tolerance for k in a_)


def final_fronts(a, lr: float, morlhf_steps: int, soups_steps: int) -> None:
    def soups_grid() -> None:
        evaluate(RUNS / "soups-s0", "cmp_final", "--step", str(soups_steps), "--eval_grid_divisions", "10")

    once(f"soups-s0:grid@{soups_steps}", a.hours, soups_grid)

    def soups_best_grid() -> int:
        best = best_step(RUNS / "soups-s0")
        if best != soups_steps:
            evaluate(RUNS / "soups-s0", "cmp_best", "--step", str(best), "--eval_grid_divisions", "10")
        return best

    once("soups-s0:grid@best", a.hours, soups_best_grid)
    for seed in a.ric_seeds[1:]:
        ric_seed(a, seed)

    def morlhf_seed(seed: int) -> None:
        run = RUNS / f"morlhf-s{seed}"
        train("recipes/demo/morlhf.yaml", run, *baseline_flags(a, lr, seed, morlhf_steps, a.curve_steps[0]))
        evaluate(run, "cmp_final")
        best = best_step(RUNS / "morlhf-s0")
        if best != morlhf_steps:  # seed 0's best step, replicated
            evaluate(run, f"cmp_step_{best}", "--step", str(best))

    for seed in a.morlhf_seeds[1:]:
        once(f"morlhf-s{seed}", a.hours, morlhf_seed, seed)


# --- the report ------------------------------------------------------------------------------------


def fixed_reference(a) -> list[float]:
    """The bundled base model's mean - 3 std on the comparison questions, from RiC's first evaluation."""
    return read(RUNS / "ric-s0" / "cmp_offline" / "pareto.json")["hypervolume_reference"]


DRAWS = {}


def draws_for(num_prompts: int):
    from ric.pareto import bootstrap_draws

    if num_prompts not in DRAWS:
        DRAWS[num_prompts] = bootstrap_draws(num_prompts)
    return DRAWS[num_prompts]


def front_stats(eval_dir: Path, reference) -> dict:
    """Hypervolume (fixed reference), following and their bootstrap values from an evaluation's CSVs."""
    from ric.compare import load_run, prompt_scores
    from ric.pareto import bootstrap_front, hypervolume, interval

    run = load_run(eval_dir)
    p = run["pareto"]
    names = p["rewards"]
    scores = prompt_scores(run)
    weights = [pt["preference"] for pt in p["points"]]
    boot = bootstrap_front(scores, weights, reference, draws_for(p["num_prompts"]))
    following = boot["preference_following"]
    return {
        "points": len(p["points"]),
        "hypervolume": hypervolume(scores.mean(axis=1), reference),
        "hypervolume_ci": interval(boot["hypervolume"]),
        "boot": boot["hypervolume"],
        "preference_following": p.get("preference_following"),
        "following_ci": {n: interval(following[:, j]) for j, n in enumerate(names)} if following is not None else None,
        "means": {
            f"{pt['preference'][0]:.2f}": {n: round(float(scores[i, :, j].mean()), 4) for j, n in enumerate(names)}
            for i, pt in enumerate(p["points"])
        },
        "front": [[float(v) for v in scores[i].mean(axis=0)] for i in range(len(p["points"]))],
        "wordless_share": round(wordless_share(eval_dir / pt["csv"] for pt in p["points"]), 4),
        "preferences": weights,
        "num_prompts": p["num_prompts"],
        "rewards": names,
        "base_mean": (p.get("base") or {}).get("mean"),
    }


def wordless_share(csvs) -> float:
    """The share of answers in an evaluation's CSVs (every point, every question) with no letter in them: an
    empty or dash-only answer scores conciseness 1 and positivity 0 on this task, so a front can buy
    hypervolume with it."""
    import csv

    total = wordless = 0
    for path in csvs:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                total += 1
                wordless += not any(ch.isalpha() for ch in row["response"])
    return wordless / total if total else 0.0


def point_labels(pareto: dict) -> list[str]:
    """A point's policy (MORLHF), or the reward whose policy answers alone (Soups at a one-hot preference)."""
    labels = []
    for pt in pareto["points"]:
        hot = [n for n, w in zip(pareto["rewards"], pt["preference"]) if w == 1.0]
        labels.append(pt.get("policy") or (hot[0] if hot else "w_" + "_".join(f"{w:.2f}" for w in pt["preference"])))
    return labels


def base_stats(eval_dir: Path, reference) -> dict | None:
    """The bundled base model's point (its answers in RiC's first evaluation) with its interval."""
    import csv

    from ric.pareto import bootstrap_front, hypervolume, interval

    pareto = read(eval_dir / "pareto.json")
    if not (pareto.get("base") or {}).get("csv"):
        return None
    with open(eval_dir / pareto["base"]["csv"], newline="", encoding="utf-8") as f:
        scores = np.array([[[float(row[f"obtained_{n}"]) for n in pareto["rewards"]] for row in csv.DictReader(f)]])
    boot = bootstrap_front(scores, [[1.0, 0.0]], reference, draws_for(scores.shape[1]))
    return {
        "points": 1,
        "hypervolume": hypervolume(scores.mean(axis=1), reference),
        "hypervolume_ci": interval(boot["hypervolume"]),
        "boot": boot["hypervolume"],
        "preference_following": None,
        "following_ci": None,
        "means": {"base": {n: round(float(scores[0, :, j].mean()), 4) for j, n in enumerate(pareto["rewards"])}},
        "front": [[float(v) for v in scores[0].mean(axis=0)]],
        "wordless_share": round(wordless_share([eval_dir / pareto["base"]["csv"]]), 4),
        "preferences": [None],
        "num_prompts": pareto["num_prompts"],
        "rewards": pareto["rewards"],
        "base_mean": pareto["base"]["mean"],
        "cpu_seconds": 0.0,
        "wall_seconds": 0.0,
    }


def point_means(eval_dir: Path) -> dict:
    """Each point's mean rewards over the questions, by point label and reward name."""
    from ric.compare import load_run, prompt_scores

    run = load_run(eval_dir)
    scores = prompt_scores(run)
    names = run["pareto"]["rewards"]
    return {
        label: dict(zip(names, (float(v) for v in scores[i].mean(axis=0))))
        for i, label in enumerate(point_labels(run["pareto"]))
    }


def per_point(eval_dir: Path, reference, means: dict | None = None) -> dict:
    """Each point's own hypervolume (one policy alone) against the reference (from `means`, when read already)."""
    from ric.pareto import hypervolume

    means = means or point_means(eval_dir)
    return {label: hypervolume([list(m.values())], reference) for label, m in means.items()}


def training_cost(run: Path, share: dict | None = None) -> dict:
    """Training compute of a run (every stage but evaluations, charged stages included); `share` scales
    named stages (a checkpoint's share of its stage)."""
    stages = read(run / "compute.json")["stages"]
    out = {"cpu_seconds": 0.0, "wall_seconds": 0.0}
    for name, entry in stages.items():
        if name.startswith("evaluate"):
            continue
        factor = (share or {}).get(name, 1.0)
        for k in out:
            out[k] += entry[k] * factor
    return {k: round(v, 1) for k, v in out.items()}


def online_iterations(run: Path) -> list[int]:
    """The online iterations a RiC run has finished (adapter_online_1, _2, ...), in order."""
    return sorted(int(p.name.rsplit("_", 1)[1]) for p in run.glob("adapter_online_*") if p.name[-1].isdigit())


def stage_steps(run: Path) -> dict:
    return {n: e["optimizer_steps"] for n, e in read(run / "compute.json")["stages"].items()}


def checkpoint_cost(run: Path, step: int) -> dict:
    """Training compute of a baseline run up to checkpoint `step`: each policy stage charged step / its steps."""
    steps = stage_steps(run)
    return training_cost(run, {n: step / steps[n] for n in steps if n.startswith("policy:")})


def machine_time() -> dict:
    """What the comparison has cost this machine so far, from the runs' own records (compute.json of every run
    under runs/compare: training, evaluations and the sweep, stopped segments included, charged copies not)."""
    out = {"cpu_seconds": 0.0, "wall_seconds": 0.0}
    for path in sorted(RUNS.glob("*/compute.json")):
        data = read(path)
        entries = [e for e in data["stages"].values() if "charged_from" not in e]
        entries += list(data.get("interrupted", {}).values())
        for k in out:
            out[k] += sum(e[k] for e in entries)
    return {k: round(v, 1) for k, v in out.items()}


def summarize(a, out: Path) -> dict:
    from ric.pareto import interval

    reference = fixed_reference(a)
    rows, curves, boots = [], {}, {}

    def row(label, method, seed, start, eval_dir, cost, step=None):
        stats = front_stats(eval_dir, reference)
        boots[label] = (stats.pop("boot"), cost)
        rows.append({"label": label, "method": method, "seed": seed, "start": start, "step": step, **cost, **stats})

    base_row = base_stats(RUNS / "ric-s0" / "cmp_offline", reference)
    if base_row:
        rows.append({"label": "base model", "method": "base", "seed": 0, "start": "base", "step": None, **base_row})
        boots["base model"] = (rows[-1].pop("boot"), None)
    ric_runs = {s: RUNS / f"ric-s{s}" for s in a.ric_seeds if (RUNS / f"ric-s{s}/cmp_online_1/pareto.json").exists()}
    for seed, run in ric_runs.items():
        steps = stage_steps(run)
        total = steps["train"]
        for k in checkpoint_steps(run / "checkpoints/offline"):
            if k < total and (run / f"cmp_step_{k}/pareto.json").exists():
                cost = training_cost(run, {"train": k / total, **{n: 0.0 for n in steps if n.startswith("online")}})
                row(f"RiC s{seed} offline step {k}", "ric", seed, "base", run / f"cmp_step_{k}", cost, k)
        cost = training_cost(run, {n: 0.0 for n in steps if n.startswith("online")})
        row(f"RiC s{seed} offline", "ric", seed, "base", run / "cmp_offline", cost, total)
        iterations = online_iterations(run)
        for i in iterations:
            if (run / f"cmp_online_{i}/pareto.json").exists():
                cost = training_cost(run, {f"online_{j}": 0.0 for j in iterations if j > i})
                row(f"RiC s{seed} online {i}", "ric", seed, "base", run / f"cmp_online_{i}", cost, total)
    if (RUNS / "sft/cmp/pareto.json").exists():
        row("SFT (the baselines' start)", "sft", 0, "base", RUNS / "sft/cmp", training_cost(RUNS / "sft"))

    for method in ("morlhf", "soups"):
        run = RUNS / f"{method}-s0"
        if not (run / "compute.json").exists():
            continue
        if read(run / "compute.json").get("interrupted"):
            # a stage stopped or being trained on: its compute so far is not split by steps, so no row is costed
            print(f"{run.name}: training in progress (compute.json `interrupted`); its rows wait until it finishes")
            continue
        steps = stage_steps(run)
        for k in checkpoint_steps_of(run) if (run / "policies").exists() else []:
            eval_dir = run / f"cmp_step_{k}"
            if not (eval_dir / "pareto.json").exists():
                continue
            label = f"{'MORLHF' if method == 'morlhf' else 'Soups (each policy alone)'} s0 step {k}"
            row(label, method, 0, "sft", eval_dir, checkpoint_cost(run, k), k)
            means = point_means(eval_dir)
            alone = per_point(eval_dir, reference, means)
            for name, hv in alone.items():
                own = training_cost(run, {n: (k / steps[n] if n == f"policy:{name}" else 0.0) for n in steps})
                curves.setdefault(f"{method} s0 {name}", []).append(
                    {
                        "step": k,
                        "cpu_seconds": own["cpu_seconds"],
                        "wall_seconds": own["wall_seconds"],
                        "hypervolume": hv,
                        "means": {n: round(v, 4) for n, v in means[name].items()},
                    }
                )
        for grid, label in (("cmp_final", "Soups s0 final grid"), ("cmp_best", "Soups s0 grid at step {} (its best)")):
            if method == "soups" and (run / grid / "pareto.json").exists():
                k = read(run / grid / "pareto.json")["step"]
                row(label.format(k), "soups", 0, "sft", run / grid, checkpoint_cost(run, k), k)
    for seed in a.morlhf_seeds[1:]:
        run = RUNS / f"morlhf-s{seed}"
        if (run / "cmp_final/pareto.json").exists():
            row(f"MORLHF s{seed} final", "morlhf", seed, "sft", run / "cmp_final", training_cost(run))
            for k in checkpoint_steps_of(run):
                if (run / f"cmp_step_{k}/pareto.json").exists():
                    row(
                        f"MORLHF s{seed} step {k}",
                        "morlhf",
                        seed,
                        "sft",
                        run / f"cmp_step_{k}",
                        checkpoint_cost(run, k),
                        k,
                    )
    # each policy's own curve with its interval (one point's hypervolume, resampled)
    for name, points in curves.items():
        method = name.split()[0]
        for point in points:
            eval_dir = RUNS / f"{method}-s0" / f"cmp_step_{point['step']}"
            point["hypervolume_ci"] = point_interval(eval_dir, name.split()[-1], reference)

    sweep = []
    for entry in sweep_rows():
        run = ROOT / entry["run"]
        stats = front_stats(run / "cmp", reference)
        sweep.append(
            {
                "learning_rate": entry["learning_rate"],
                "steps": a.sweep_steps,
                "hypervolume": stats["hypervolume"],
                "hypervolume_ci": stats["hypervolume_ci"],
                "means": stats["means"],
                **training_cost(run),
            }
        )

    crossings = []
    morlhf_last = [r for r in rows if r["method"] == "morlhf" and r["seed"] == 0]
    finals = [max(morlhf_last, key=lambda r: r["step"])] if morlhf_last else []
    # its best checkpoint too, where that is an earlier one (picked on these questions: optimistic for MORLHF)
    best = max(morlhf_last, key=lambda r: r["hypervolume"]) if morlhf_last else None
    finals += [best] if best and best is not finals[0] else []
    finals += [r for r in rows if is_grid(r) or r["label"].startswith("MORLHF") and r["label"].endswith("final")]
    for target in finals:
        t_boot = boots[target["label"]][0]
        for seed in ric_runs:
            path = sorted(
                (r for r in rows if r["method"] == "ric" and r["seed"] == seed), key=lambda r: r["cpu_seconds"]
            )
            hit = next((r for r in path if r["hypervolume"] >= target["hypervolume"]), None)
            per_draw = []
            for b in range(len(t_boot)):
                first = next((r for r in path if boots[r["label"]][0][b] >= t_boot[b]), None)
                per_draw.append(first["cpu_seconds"] if first else np.inf)
            per_draw = np.array(per_draw)
            reached = np.isfinite(per_draw)
            crossings.append(
                {
                    "baseline": target["label"],
                    "picked": "best" if target["label"].endswith("(its best)") or target is best else "last",
                    "baseline_hypervolume": target["hypervolume"],
                    "baseline_cpu_seconds": target["cpu_seconds"],
                    "baseline_wall_seconds": target["wall_seconds"],
                    "ric_seed": seed,
                    "first_reaching": hit["label"] if hit else None,
                    "cpu_seconds": hit["cpu_seconds"] if hit else None,
                    "wall_seconds": hit["wall_seconds"] if hit else None,
                    "cpu_seconds_range": interval(per_draw[reached]) if reached.any() else None,
                    "resamples_reaching": round(float(reached.mean()), 3),
                }
            )

    remaining = [f"RiC seed {s}" for s in a.ric_seeds if s not in ric_runs]
    remaining += [f"RiC seed {s}'s other evaluations" for s in ric_runs if f"ric-s{s}" not in state()["steps"]]
    remaining += [f"{m} seed 0 curve" for m in ("MORLHF", "Soups") if not any(r["method"] == m.lower() for r in rows)]
    remaining += ["Soups' final grid"] * (not (RUNS / "soups-s0/cmp_final/pareto.json").exists())
    remaining += [
        f"MORLHF seed {s} at the final budget"
        for s in a.morlhf_seeds[1:]
        if not (RUNS / f"morlhf-s{s}/cmp_final/pareto.json").exists()
    ]
    base = next((r["base_mean"] for r in rows if r["method"] == "base"), None)
    names = rows[0]["rewards"] if rows else []
    result = {
        "what": "RiC vs MORLHF vs Rewarded Soups on the demo task; baselines from SFT on RiC's rows, to a plateau",
        "complete": not remaining,
        "remaining": remaining,
        "rewards": names,
        "reference": reference,
        "num_prompts": rows[0]["num_prompts"] if rows else None,
        "prompts_file": PROMPTS,
        "intervals": "95 % percentile bootstrap over the questions, 1,000 resamples, the same for every front "
        "(near 1 a following interval can lie below its point estimate: resampling noise lowers a rank "
        "correlation)",
        "compute": "training only (sampling, scoring, training; the SFT and RiC's sampling charged to the "
        "baselines), evaluations left out",
        "seeds": {
            "ric": sorted(ric_runs),
            "morlhf": [0] * bool(morlhf_last)
            + [s for s in a.morlhf_seeds[1:] if (RUNS / f"morlhf-s{s}/cmp_final").exists()],
            "soups": [0] if (RUNS / "soups-s0/compute.json").exists() else [],
        },
        "base": {"mean": base} if base else None,
        "rows": [
            {k: v for k, v in r.items() if k not in ("rewards", "num_prompts", "base_mean", "front", "preferences")}
            for r in rows
        ],
        "fronts": {r["label"]: {"preferences": r["preferences"], "means": r["front"]} for r in rows},
        "curves": curves,
        "lr_sweep": {
            "runs": sweep,
            "picked": max(sweep, key=lambda s: s["hypervolume"])["learning_rate"] if sweep else None,
            "charged": False,
        },
        "crossings": crossings,
        "machine_time": machine_time(),
        "bench": state(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "compare.md").write_text(markdown(result))
    if rows:
        plot(result, out / "compare.png")
    return result


def is_grid(row: dict) -> bool:
    """A Soups row of the interpolated grid (its final one, or the one at its best step)."""
    return row["label"].startswith("Soups s0") and "grid" in row["label"]


def point_interval(eval_dir: Path, label: str, reference):
    from ric.compare import load_run, prompt_scores
    from ric.pareto import bootstrap_front, interval

    run = load_run(eval_dir)
    scores = prompt_scores(run)[[point_labels(run["pareto"]).index(label)]]
    boot = bootstrap_front(scores, [[1.0, 0.0]], reference, draws_for(scores.shape[1]))
    return interval(boot["hypervolume"])


def markdown(result: dict) -> str:
    names = result["rewards"]
    head = ["model", "start", "points", "hypervolume [95 %]"] + [f"following {n} [95 %]" for n in names]
    head += ["answers without a word", "training CPU s", "training wall s"]
    lines = []
    if result.get("remaining"):
        lines.append(
            f"Partial: still to run: {', '.join(result['remaining'])} (`python bench/bench_compare.py` goes on).\n"
        )
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ci(pair):
        return f" [{pair[0]:.3f}, {pair[1]:.3f}]" if pair else ""

    for r in result["rows"]:
        following = r["preference_following"] or {}
        cells = [r["label"], r["start"], str(r["points"]), f"{r['hypervolume']:.3f}{ci(r['hypervolume_ci'])}"]
        for n in names:
            value = following.get(n)
            cells.append(f"{value:.3f}{ci((r['following_ci'] or {}).get(n))}" if value is not None else "-")
        share = r.get("wordless_share")
        cells += [
            "-" if share is None else f"{100 * share:.0f} %",
            f"{r['cpu_seconds']:.0f}",
            f"{r['wall_seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"\n{result['num_prompts']} questions ({result['prompts_file']}); reference {result['reference']}; "
        f"{result['intervals']}; compute: {result['compute']}."
    )
    spent = result.get("machine_time")
    if spent:
        lines.append(
            f"\nThe comparison so far has used {spent['wall_seconds'] / 3600:.2f} h wall / "
            f"{spent['cpu_seconds'] / 3600:.2f} CPU h of this machine (every run's compute.json: training, "
            "evaluations and the sweep, stopped segments included)."
        )
    sweep = result["lr_sweep"]
    if sweep["runs"]:
        lines.append(
            "\nLearning-rate sweep (MORLHF at (0.5, 0.5), not charged): "
            + "; ".join(
                f"{s['learning_rate']:g}: {s['hypervolume']:.3f}{ci(s['hypervolume_ci'])} "
                f"({s['cpu_seconds']:.0f} CPU s)"
                for s in sweep["runs"]
            )
            + f". Picked: {sweep['picked']:g}."
        )
    for c in result["crossings"]:
        where = (
            f"first reaches it with {c['first_reaching']} at {c['cpu_seconds']:.0f} CPU s / "
            f"{c['wall_seconds']:.0f} wall s"
            if c["first_reaching"]
            else "does not reach it at any checkpoint"
        )
        spread = c["cpu_seconds_range"]
        flag = " (its best checkpoint)" if c["picked"] == "best" and "best" not in c["baseline"] else ""
        lines.append(
            f"- {c['baseline']}{flag}"
            f" ({c['baseline_hypervolume']:.3f}, {c['baseline_cpu_seconds']:.0f} CPU s): RiC seed "
            f"{c['ric_seed']} {where}; over the resamples "
            + (f"{spread[0]:.0f}-{spread[1]:.0f} CPU s, " if spread else "")
            + f"reached in {c['resamples_reaching']:.0%} of them."
        )
    return "\n".join(lines) + "\n"


COLORS = {"ric": "tab:blue", "morlhf": "tab:orange", "soups": "tab:green", "sft": "tab:purple", "base": "tab:red"}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result["rewards"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=120)
    finals = [r for r in result["rows"] if is_grid(r) or r["label"].endswith("final") or r["method"] == "sft"]
    for seed in result["seeds"]["ric"]:
        online = [r for r in result["rows"] if r["label"].startswith(f"RiC s{seed} online ")]
        finals += [max(online, key=lambda r: r["cpu_seconds"])] if online else []
    morlhf = [r for r in result["rows"] if r["method"] == "morlhf" and r["seed"] == 0]
    if morlhf:
        finals.append(max(morlhf, key=lambda r: r["step"]))
        best = max(morlhf, key=lambda r: r["hypervolume"])
        finals += [dict(best, best=True)] if best is not finals[-1] else []
    styles = {}
    for r in finals:
        front = result["fronts"][r["label"]]["means"]
        style = ("-", "--", ":", "-.")[styles.setdefault(r["method"], -1) + 1]
        styles[r["method"]] += 1
        label = r["label"] + (" (its best)" if r.get("best") else "")
        left.plot(
            [m[0] for m in front], [m[1] for m in front], "o", ls=style, ms=4, color=COLORS[r["method"]], label=label
        )
    if result["base"]:
        base = result["base"]["mean"]
        left.plot([base[names[0]]], [base[names[1]]], "*", ms=14, color="tab:red", label="base model")
    left.set_xlabel(f"{names[0]} (mean)")
    left.set_ylabel(f"{names[1]} (mean)")
    left.set_title(f"Final fronts, {result['num_prompts']} held-out questions", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=6)
    groups = {}
    for r in result["rows"]:
        if r["method"] in ("sft", "base") or is_grid(r):
            continue
        groups.setdefault(f"{r['method']} s{r['seed']}", []).append(r)
    for label, rows in groups.items():
        rows = sorted(rows, key=lambda r: r["cpu_seconds"])
        x = [r["cpu_seconds"] for r in rows]
        style = "-" if label.endswith("s0") else "--"
        color = COLORS[rows[0]["method"]]
        (line,) = right.plot(x, [r["hypervolume"] for r in rows], "o", ls=style, color=color, ms=4, label=label)
        right.fill_between(
            x,
            [r["hypervolume_ci"][0] for r in rows],
            [r["hypervolume_ci"][1] for r in rows],
            color=line.get_color(),
            alpha=0.15,
        )
    for r in result["rows"]:
        if is_grid(r) or r["method"] == "sft":
            right.errorbar(
                [r["cpu_seconds"]],
                [r["hypervolume"]],
                yerr=[[r["hypervolume"] - r["hypervolume_ci"][0]], [r["hypervolume_ci"][1] - r["hypervolume"]]],
                fmt="D",
                color=COLORS[r["method"]],
                label=r["label"],
            )
    for r in result["rows"]:
        if r["method"] == "base":
            right.axhline(r["hypervolume"], color="tab:red", ls=":", lw=1, label="base model")
            right.axhspan(*r["hypervolume_ci"], color="tab:red", alpha=0.08)
    right.set_xlabel("training CPU seconds (sampling, scoring, training; evaluations left out)")
    right.set_ylabel("hypervolume (95 % bootstrap band)")
    right.set_title("Hypervolume against compute", fontsize=10)
    right.grid(alpha=0.3)
    right.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench/results"))
    parser.add_argument("--hours", type=float, default=8.0, help="no plan step starts past this much wall time")
    parser.add_argument("--ric_seeds", default="0,1")
    parser.add_argument("--morlhf_seeds", default="0,1")
    parser.add_argument("--ric_save_steps", type=int, default=25)
    parser.add_argument("--sweep_lrs", default="3e-5,1e-4,3e-4")
    parser.add_argument("--sweep_steps", type=int, default=30)
    parser.add_argument(
        "--sweep_extend", type=int, default=2, help="rates the sweep may add past its edge while the best sits there"
    )
    parser.add_argument("--curve_steps", default="15,30,60,90,120")
    parser.add_argument("--max_steps", type=int, default=240)
    parser.add_argument("--plateau", type=float, default=0.005)
    parser.add_argument("--summarize", action="store_true", help="write the report from what is finished")
    a = parser.parse_args()
    a.ric_seeds = [int(s) for s in a.ric_seeds.split(",")]
    a.morlhf_seeds = [int(s) for s in a.morlhf_seeds.split(",")]
    a.sweep_lrs = [float(s) for s in a.sweep_lrs.split(",")]
    a.curve_steps = [int(s) for s in a.curve_steps.split(",")]
    if a.ric_seeds[0] != 0:
        parser.error(
            "--ric_seeds: start with 0 (seed 0's rows train the SFT start and its base answers fix the reference)"
        )
    if any(k % a.curve_steps[0] for k in a.curve_steps):
        parser.error("--curve_steps: every step must be a multiple of the first (checkpoints are kept every first)")
    RUNS.mkdir(parents=True, exist_ok=True)
    if not a.summarize:
        try:
            ric_seed(a, a.ric_seeds[0])
            sft(a)
            lr = lr_sweep(a)
            morlhf_steps = curve(a, "morlhf", lr)
            soups_steps = curve(a, "soups", lr)
            final_fronts(a, lr, morlhf_steps, soups_steps)
        except OutOfTime as stopped:
            print(f"--hours {a.hours}: stopped before {stopped}; what is finished is reported", flush=True)
    print(markdown(summarize(a, Path(a.out))))


if __name__ == "__main__":
    main()
