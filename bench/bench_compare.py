"""RiC against MORLHF and Rewarded Soups on the demo task, from scratch, in one run on one machine.

    python bench/bench_compare.py [--out bench/results] [--online 2]

Trains and evaluates, each from an empty run directory, on the same training prompts, the same 40
held-out prompts, the same rewards (positivity, conciseness) and generation settings:

- RiC (`recipes/demo/ric.yaml`): offline, then 1 and 2 online iterations (each adapter evaluated);
- MORLHF (`recipes/demo/morlhf.yaml`): one GRPO policy per preference point (5 points);
- Rewarded Soups (`recipes/demo/soups.yaml`): one GRPO policy per reward, mixed per grid point.

Every stage's wall-clock and CPU seconds come from the runs' compute.json (sampling, scoring,
training, evaluation). All hypervolumes use one reference point (RiC's evaluation: the base model's
mean - 3 std on the held-out prompts, the same answers for every method). Writes compare.json,
compare.md and compare.png (the fronts; hypervolume against CPU seconds, MORLHF after 1, 2, ..., k
points) into --out, with the compute at which each method first reaches MORLHF's final
hypervolume. Run it alone on the machine.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"


def ric(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ric", *args], check=True, cwd=ROOT)


def compute(run_dir: Path) -> dict:
    return json.loads((run_dir / "compute.json").read_text())["stages"]


def cost(stages: dict, names) -> dict:
    """Wall and CPU seconds, optimizer steps and generated tokens of the named stages, summed."""
    keys = ("wall_seconds", "cpu_seconds", "optimizer_steps", "generated_tokens")
    return {k: round(sum(stages[n][k] for n in names), 1) for k in keys}


def scaled(entry: dict, factor: float) -> dict:
    return {k: round(v * factor, 1) for k, v in entry.items()}


def add(*entries: dict) -> dict:
    return {k: round(sum(e[k] for e in entries), 1) for k in entries[0]}


def offline_checkpoints(run_dir: Path) -> list[int]:
    """The steps of the offline trainer checkpoints kept before its last step."""
    last = json.loads((run_dir / "train_stats.json").read_text())["global_step"]
    found = [int(p.name.split("-")[1]) for p in (run_dir / "checkpoints/offline").glob("checkpoint-*")]
    return sorted(s for s in found if s < last)


def evaluate_once(keep: bool, run_dir: Path, adapter: Path, name: str) -> None:
    """`ric evaluate` of one adapter into RUN_DIR/name; with --keep a finished one is not evaluated again
    (the command would load the model again and meter that too)."""
    if keep and (run_dir / name / "pareto.json").exists():
        return
    ric("evaluate", str(run_dir), "--adapter", str(adapter), "--eval_dir", str(run_dir / name))


def following(points, names) -> dict | None:
    """Preference-following of a front of at least 3 points (Spearman of w_i against mean reward i)."""
    from ric.pareto import preference_following

    if len(points) < 3:
        return None
    values = preference_following([p["preference"] for p in points], [[p["mean"][n] for n in names] for p in points])
    return dict(zip(names, values))


def hypervolume_of(points, names, reference) -> float:
    from ric.pareto import hypervolume

    return hypervolume([[p["mean"][n] for n in names] for p in points], reference)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench/results"))
    parser.add_argument("--online", type=int, default=2, help="online iterations after the offline stage")
    parser.add_argument("--keep", action="store_true", help="reuse finished runs under runs/compare-*")
    a, extra = parser.parse_known_args()
    dirs = {m: RUNS / f"compare-{m}" for m in ("ric", "morlhf", "soups")}
    if not a.keep:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
    started = time.time()
    ric("run", "recipes/demo/ric.yaml", "--output_dir", str(dirs["ric"]), *extra)
    steps = offline_checkpoints(dirs["ric"])
    for step in steps:  # RiC before the end of its offline training, as MORLHF after fewer points
        evaluate_once(
            a.keep, dirs["ric"], dirs["ric"] / "checkpoints/offline" / f"checkpoint-{step}", f"eval_step_{step}"
        )
    for k in range(1, a.online + 1):
        ric(
            "train",
            str(dirs["ric"] / "recipe.yaml"),
            "--output_dir",
            str(dirs["ric"]),
            "--num_online_iterations",
            str(k),
        )
        evaluate_once(a.keep, dirs["ric"], dirs["ric"] / f"adapter_online_{k}", f"eval_online_{k}")
    for method in ("morlhf", "soups"):
        ric("run", f"recipes/demo/{method}.yaml", "--output_dir", str(dirs[method]), *extra)
    wall = round(time.time() - started, 1)

    pareto = {
        name: json.loads((path / "pareto.json").read_text())
        for name, path in [
            ("ric offline", dirs["ric"] / "eval"),
            *[(f"ric online {k}", dirs["ric"] / f"eval_online_{k}") for k in range(1, a.online + 1)],
            ("morlhf", dirs["morlhf"] / "eval"),
            ("soups", dirs["soups"] / "eval"),
        ]
    }
    names = pareto["ric offline"]["rewards"]
    reference = pareto["ric offline"]["hypervolume_reference"]
    stages = {m: compute(d) for m, d in dirs.items()}

    curve = []  # (label, method, compute, front): what each model cost, everything counted
    last = json.loads((dirs["ric"] / "train_stats.json").read_text())["global_step"]
    for step in steps:  # the offline training up to that step: its share of the training stage
        spent = add(
            cost(stages["ric"], ["prepare"]),
            scaled(cost(stages["ric"], ["train"]), step / last),
            cost(stages["ric"], [f"evaluate:eval_step_{step}"]),
        )
        front = json.loads((dirs["ric"] / f"eval_step_{step}" / "pareto.json").read_text())
        curve.append((f"RiC offline, step {step}", "ric", spent, front))
    ric_base = cost(stages["ric"], ["prepare", "train"])
    curve.append(("RiC offline", "ric", add(ric_base, cost(stages["ric"], ["evaluate"])), pareto["ric offline"]))
    for k in range(1, a.online + 1):
        spent = add(
            ric_base,
            cost(stages["ric"], [f"online_{j}" for j in range(1, k + 1)]),
            cost(stages["ric"], [f"evaluate:eval_online_{k}"]),
        )
        curve.append((f"RiC online {k}", "ric", spent, pareto[f"ric online {k}"]))
    policies = [n for n in stages["morlhf"] if n.startswith("policy:")]
    evaluation = cost(stages["morlhf"], ["evaluate"])
    for j in range(1, len(policies) + 1):  # MORLHF after j points: j policies, j/k of the evaluation
        spent = add(cost(stages["morlhf"], ["prepare", *policies[:j]]), scaled(evaluation, j / len(policies)))
        front = {**pareto["morlhf"], "points": pareto["morlhf"]["points"][:j]}
        curve.append((f"MORLHF {j} point{'s' if j > 1 else ''}", "morlhf", spent, front))
    soups_spent = cost(stages["soups"], list(stages["soups"]))
    curve.append(("Rewarded Soups", "soups", soups_spent, pareto["soups"]))

    rows = []
    for label, method, spent, front in curve:
        rows.append(
            {
                "label": label,
                "method": method,
                "points": len(front["points"]),
                "hypervolume": hypervolume_of(front["points"], names, reference),
                "preference_following": following(front["points"], names),
                **spent,
            }
        )
    target = rows[[r["label"] for r in rows].index(f"MORLHF {len(policies)} points")]["hypervolume"]
    reach = {}
    for method in ("ric", "morlhf", "soups"):
        hit = next((r for r in rows if r["method"] == method and r["hypervolume"] >= target - 1e-12), None)
        reach[method] = (
            {"label": hit["label"], "cpu_seconds": hit["cpu_seconds"], "wall_seconds": hit["wall_seconds"]}
            if hit
            else None
        )
    morlhf_final = rows[[r["label"] for r in rows].index(f"MORLHF {len(policies)} points")]
    ratio = (
        {k: round(reach["ric"][k] / morlhf_final[k], 3) for k in ("cpu_seconds", "wall_seconds")}
        if reach["ric"]
        else None
    )
    base = pareto["ric offline"]["base"]["mean"]
    result = {
        "what": "RiC vs MORLHF vs Rewarded Soups on the demo task, from scratch, one machine",
        "rewards": names,
        "reference": reference,
        "num_prompts": pareto["ric offline"]["num_prompts"],
        "base": {"mean": base, "hypervolume": hypervolume_of([{"mean": base}], names, reference)},
        "rows": rows,
        "morlhf_final_hypervolume": target,
        "first_reaching_morlhf_final": reach,
        "ric_over_morlhf_compute": ratio,
        "bench_wall_seconds": wall,
        "fronts": {
            k: [{"preference": p["preference"], "mean": p["mean"]} for p in v["points"]] for k, v in pareto.items()
        },
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "compare.md").write_text(markdown(result))
    plot(result, names, out / "compare.png")
    print(markdown(result))


def markdown(result: dict) -> str:
    names = result["rewards"]
    head = (
        ["model", "points", "hypervolume"]
        + [f"following {n}" for n in names]
        + ["CPU s", "wall s", "optimizer steps", "tokens"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        following = r["preference_following"] or {}
        cells = [r["label"], str(r["points"]), f"{r['hypervolume']:.4f}"]
        cells += [f"{following[n]:.2f}" if following.get(n) is not None else "-" for n in names]
        cells += [
            f"{r['cpu_seconds']:.0f}",
            f"{r['wall_seconds']:.0f}",
            f"{r['optimizer_steps']:.0f}",
            f"{r['generated_tokens']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    reach = result["first_reaching_morlhf_final"]
    lines.append(
        f"\nBase model: hypervolume {result['base']['hypervolume']:.4f}. Reference point "
        f"{result['reference']} ({', '.join(names)}); {result['num_prompts']} held-out prompts."
    )
    lines.append(
        f"MORLHF's final hypervolume: {result['morlhf_final_hypervolume']:.4f}. First reached by: "
        + "; ".join(
            f"{m}: {v['label']} at {v['cpu_seconds']:.0f} CPU s" if v else f"{m}: not reached"
            for m, v in reach.items()
        )
        + "."
    )
    if result["ric_over_morlhf_compute"]:
        lines.append(
            f"RiC / MORLHF compute to reach it: {result['ric_over_morlhf_compute']['cpu_seconds']:.2f} "
            f"(CPU s), {result['ric_over_morlhf_compute']['wall_seconds']:.2f} (wall s)."
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, names, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), dpi=120)
    styles = {"ric offline": "-o", "morlhf": "-s", "soups": "-D"}
    for label, points in result["fronts"].items():
        left.plot(
            [p["mean"][names[0]] for p in points],
            [p["mean"][names[1]] for p in points],
            styles.get(label, "-^"),
            label=label,
            ms=5,
        )
    base = result["base"]["mean"]
    left.plot([base[names[0]]], [base[names[1]]], "*", ms=14, color="tab:red", label="base model")
    left.set_xlabel(f"{names[0]} (mean)")
    left.set_ylabel(f"{names[1]} (mean)")
    left.set_title("Fronts on 40 held-out prompts", fontsize=10)
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    for method, marker in (("ric", "o"), ("morlhf", "s"), ("soups", "D")):
        rows = [r for r in result["rows"] if r["method"] == method]
        right.plot([r["cpu_seconds"] for r in rows], [r["hypervolume"] for r in rows], "-" + marker, label=method)
        for r in rows:
            right.annotate(
                r["label"].replace("MORLHF ", ""),
                (r["cpu_seconds"], r["hypervolume"]),
                fontsize=6,
                textcoords="offset points",
                xytext=(3, 3),
            )
    right.axhline(result["morlhf_final_hypervolume"], color="gray", ls=":", lw=1, label="MORLHF final")
    right.set_xlabel("CPU seconds (every stage: sampling, scoring, training, evaluation)")
    right.set_ylabel("hypervolume")
    right.set_title("Hypervolume against compute", fontsize=10)
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
