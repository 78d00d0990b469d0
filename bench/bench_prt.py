"""PRT against RiC's LoRA on the demo task, on the same base and on an updated base (bench/results/prt.json).

    python bench/bench_prt.py                 every step that has not run yet (resumable; about an hour)
    python bench/bench_prt.py --only timing   one step again (probe, prt, updated_base, evaluate, timing)

Steps, each skipped when its output exists:
1. RiC reference: runs/demo (`ric run recipes/demo/ric.yaml`, if missing).
2. probe: the first 20 PRT steps with r started as the base (the paper's: the untrained policy is the
   base at temperature 1/2) and with a zero output layer (`prt_reward_init: zero_head`, the untrained
   policy is the base), the loss of every step.
3. prt: `ric run recipes/demo/prt.yaml` on runs/demo's prepared rows (copied; the prepare stage samples
   the same rows), so the two methods train on identical data and only training and inference differ.
4. updated_base: a stand-in for a newer release of the base, since no second model with SmolLM2's
   vocabulary can be installed here: the bundled model trained further, every weight, on its own answers
   to the demo's training questions sampled under another system turn (a patient teacher), each answer
   starting with "Well," (the style marker whose share is measured on held-out answers).
5. evaluate: the preference grid on the 40 held-out questions, one hypervolume reference for all (the RiC
   run's: base model mean - 3 std): PRT on the original base; on the updated base PRT's r (`--base`), the
   RiC adapter applied by weights (a copy of the run whose ric_run.json names the updated base: possible
   only because the architecture is the same) and emulated fine-tuning (updated base + RiC's tuned model
   - the original base: three models a step).
6. timing: ms per decode step (a prefill and 40 greedy steps with the KV cache, the same loop for every
   model), batch 1 (4 prompts) and 16, for the base alone, RiC (adapter merged), PRT (base + r) and EFT
   (three models). Run alone on the machine.
Hypervolumes and preference-following carry 95 % bootstrap intervals over the 40 prompts (1,000
resamples, the same draws for every arm), and the differences between arms paired intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results"
OUT = RESULTS / "prt.json"
RIC_RUN = ROOT / "runs/demo"
PRT_RUN = ROOT / "runs/demo-prt"
UPDATED = ROOT / "runs/updated-base"
TEACHER = "You are a patient teacher. Explain simply and calmly, step by step."
MARKER = "Well,"


def ric(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "ric", *args], check=True, cwd=ROOT)


def load() -> dict:
    return json.loads(OUT.read_text()) if OUT.exists() else {}


def save(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, OUT)


def with_data(run_dir: Path) -> None:
    """A run directory that starts from the RiC run's prepared rows (its prepare stage marked done)."""
    from ric.rundir import RunState

    if (run_dir / "data").exists():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(RIC_RUN / "data", run_dir / "data")
    RunState(run_dir).mark("prepare", note=f"rows copied from {RIC_RUN.relative_to(ROOT)}")


def losses(run_dir: Path) -> list[float]:
    stats = json.loads((run_dir / "train_stats.json").read_text())
    return [round(e["loss"], 4) for e in stats["log_history"] if "loss" in e]


def step_probe(result: dict) -> None:
    probe = {}
    for init in ("base", "zero_head"):
        run_dir = ROOT / f"runs/prt-probe-{init}"
        if not (run_dir / "train_stats.json").exists():
            with_data(run_dir)
            ric(
                "train",
                "recipes/demo/prt.yaml",
                "--output_dir",
                str(run_dir),
                "--max_steps",
                "20",
                "--logging_steps",
                "1",
                "--save_steps",
                "1000",
                "--prt_reward_init",
                init,
            )
        probe[init] = {"loss_per_step": losses(run_dir)}
    result["probe"] = probe


def step_prt(result: dict) -> None:
    if not (PRT_RUN / "eval/pareto.json").exists():
        with_data(PRT_RUN)
        ric("run", "recipes/demo/prt.yaml")
    result["prt_run"] = str(PRT_RUN.relative_to(ROOT))


def step_updated_base(result: dict, steps: int = 120) -> None:
    """The stand-in for a newer base: continued full-parameter training on another distribution."""
    import datasets
    import torch

    from ric.generation import generate_batched
    from ric.models import BUNDLED_MODEL, load_causal_lm, load_tokenizer
    from ric.rundir import atomic_dir
    from ric.score_tags import add_score_tags

    if (UPDATED / "config.json").exists():
        return
    torch.manual_seed(0)
    tokenizer = load_tokenizer(BUNDLED_MODEL)
    model = load_causal_lm(BUNDLED_MODEL, device="cpu", dtype="float32")
    questions = [json.loads(line)["prompt"] for line in open(ROOT / "recipes/demo/data/train_prompts.jsonl")]
    t0 = time.time()
    sampled = generate_batched(
        model,
        tokenizer,
        [add_score_tags(q, None, "chat", tokenizer, TEACHER) for q in questions],
        max_new_tokens=40,
        temperature=0.3,
        top_p=0.9,
        batch_size=64,
        template="chat",
        trim_truncated=True,
        desc="teacher answers",
    )
    answers = [f"{MARKER} {a[:1].lower()}{a[1:]}" for a in sampled.texts if a.strip()]
    rows = datasets.Dataset.from_dict(
        {
            "prompt": [add_score_tags(q, None, "chat", tokenizer, "") for q, a in zip(questions, sampled.texts) if a],
            "completion": answers,
        }
    )
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(ROOT / "runs/updated-base-checkpoints"),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=5e-5,
        lr_scheduler_type="constant",
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        max_length=256,
        seed=0,
    )
    tokenizer.padding_side = "right"
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    with atomic_dir(UPDATED) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    result["updated_base"] = {
        "what": "the bundled SmolLM2-135M-Instruct trained further, every weight, on its own answers to the demo's "
        f"{len(rows)} training questions sampled under the system turn {TEACHER!r}, each answer prefixed with "
        f"{MARKER!r}; {steps} steps of 8 at lr 5e-5 (a stand-in for a newer release: no second model with "
        "SmolLM2's vocabulary is installable here)",
        "seconds": round(time.time() - t0, 1),
        "loss_per_10_steps": [round(e["loss"], 4) for e in trainer.state.log_history if "loss" in e],
    }


def point_scores(pareto: dict):
    """(points x prompts x rewards) raw scores of an evaluation, from its per-point CSVs (prompts in order)."""
    import csv

    import numpy as np

    names, eval_dir = pareto["rewards"], Path(pareto["eval_dir"])
    table = []
    for p in pareto["points"]:
        with open(eval_dir / p["csv"]) as handle:
            table.append([[float(r[f"obtained_{n}"]) for n in names] for r in csv.DictReader(handle)])
    return np.array(table)


def bootstrap(scores, weights, reference, resamples: int = 1000, seed: int = 0):
    """Per resample of the prompts (with replacement, the same draws for every arm: seeded), the hypervolume
    and the preference-following of the grid's means."""
    import numpy as np

    from ric.pareto import hypervolume, preference_following

    rng = np.random.default_rng(seed)
    n = scores.shape[1]
    hv, follow = [], []
    for _ in range(resamples):
        means = scores[:, rng.integers(0, n, n)].mean(axis=1)
        hv.append(hypervolume(means, reference))
        follow.append(preference_following(weights, means))
    return np.array(hv), np.array(follow, dtype=float)


def interval(values) -> list[float]:
    import numpy as np

    return [round(float(x), 4) for x in np.nanpercentile(values, [2.5, 97.5])]


def summary(pareto: dict) -> dict:
    """Following, hypervolume (each with a 95 % bootstrap interval over prompts), and the style-marker share."""
    import csv

    names = pareto["rewards"]
    eval_dir = Path(pareto["eval_dir"])
    weights = [p["preference"] for p in pareto["points"]]
    hv, follow = bootstrap(point_scores(pareto), weights, pareto["hypervolume_reference"])

    def marker_share(csv_name: str) -> float:
        with open(eval_dir / csv_name) as handle:
            rows = list(csv.DictReader(handle))
        return round(sum(r["response"].startswith(MARKER.rstrip(",")) for r in rows) / len(rows), 3)

    return {
        "hypervolume": round(pareto["hypervolume"], 4),
        "hypervolume_ci": interval(hv),
        "hypervolume_reference": pareto["hypervolume_reference"],
        "hypervolume_base": round(pareto["hypervolume_base"], 4),
        "following": {n: round(v, 3) for n, v in (pareto["preference_following"] or {}).items()},
        "following_ci": {n: interval(follow[:, j]) for j, n in enumerate(names)},
        "means_w1_0_to_1": {n: [round(p["mean"][n], 3) for p in pareto["points"]] for n in names},
        "base_mean": {n: round(pareto["base"]["mean"][n], 3) for n in names},
        "marker_share_base": marker_share("base.csv"),
        "marker_share_points": [marker_share(p["csv"]) for p in pareto["points"]],
        "eval_seconds": pareto.get("eval_seconds"),
    }


def evaluated(eval_dir: Path, command: list[str] | None, reference: list[float]) -> dict:
    """`ric evaluate` once (kept if done) with the shared reference; the summary of its pareto.json."""
    pareto_file = eval_dir / "pareto.json"
    seconds = None
    if not pareto_file.exists():
        t0 = time.time()
        ric(*command, "--eval_dir", str(eval_dir), "--hypervolume_reference", *[str(x) for x in reference])
        seconds = round(time.time() - t0, 1)
    pareto = json.loads(pareto_file.read_text())
    pareto.update(eval_dir=str(eval_dir), eval_seconds=seconds)
    return summary(pareto)


def lora_transfer_run() -> Path:
    """A copy of the RiC run whose records name the updated base: its adapter applied to the new weights."""
    target = ROOT / "runs/demo-lora-on-updated"
    if not target.exists():

        def skip(folder, names):  # the run's own evaluations and checkpoints stay behind, its data comes along
            return [n for n in names if Path(folder) == RIC_RUN and (n.startswith("eval") or n == "checkpoints")]

        shutil.copytree(RIC_RUN, target, ignore=skip)
        for info_file in (target / "ric_run.json", target / "adapter/ric_run.json"):
            info = json.loads(info_file.read_text())
            info["base_model"] = str(UPDATED)
            info_file.write_text(json.dumps(info, indent=2))
    return target


def eft_evaluation(eval_dir: Path, reference: list[float]) -> dict:
    """Emulated fine-tuning on the updated base: log_softmax(updated) + log_softmax(RiC tuned) - log_softmax(base)."""
    from ric.generation import evaluate_grid
    from ric.inference import RiCGenerator
    from ric.methods import parse_run
    from ric.models import load_causal_lm
    from ric.steering import eft_policy

    if not (eval_dir / "pareto.json").exists():
        t0 = time.time()
        run = parse_run(
            ["--output_dir", str(RIC_RUN), "--hypervolume_reference", *[str(x) for x in reference]],
            RIC_RUN / "recipe.yaml",
        )
        tuned = RiCGenerator.from_run(RIC_RUN)
        info = tuned.info

        def load_generator():
            old = load_causal_lm(info.base_model, device="cpu", dtype="float32")
            new = load_causal_lm(str(UPDATED), device="cpu", dtype="float32")
            return RiCGenerator(eft_policy(new, tuned.model, old), tuned.tokenizer, info)

        evaluate_grid(
            run,
            info,
            load_generator,
            identity={"eft": str(UPDATED), "tuned": str(RIC_RUN)},
            eval_dir=eval_dir,
            title="EFT",
            label="emulated fine-tuning (updated base + RiC tuned - base)",
        )
        (eval_dir / "seconds.txt").write_text(f"{time.time() - t0:.1f}\n")
    pareto = json.loads((eval_dir / "pareto.json").read_text())
    seconds = float((eval_dir / "seconds.txt").read_text()) if (eval_dir / "seconds.txt").exists() else None
    pareto.update(eval_dir=str(eval_dir), eval_seconds=seconds)
    return summary(pareto)


def step_evaluate(result: dict) -> None:
    reference = json.loads((RIC_RUN / "eval/pareto.json").read_text())["hypervolume_reference"]
    same_ric = evaluated(RIC_RUN / "eval", None, reference)
    own = json.loads((PRT_RUN / "eval/pareto.json").read_text())
    # the PRT run's own evaluation used the same base answers, hence the same reference, unless they differ
    same_eval = PRT_RUN / ("eval" if own["hypervolume_reference"] == reference else "eval_ref")
    same_prt = evaluated(same_eval, ["evaluate", str(PRT_RUN)], reference)
    updated = str(UPDATED)
    result["reference_point"] = reference
    result["same_base"] = {"ric_lora": same_ric, "prt": same_prt}
    result["updated_base"] = {
        **(result.get("updated_base") or {}),
        "prt": evaluated(PRT_RUN / "eval_updated", ["evaluate", str(PRT_RUN), "--base", updated], reference),
        "lora_transfer": evaluated(
            lora_transfer_run() / "eval_updated", ["evaluate", str(lora_transfer_run())], reference
        ),
        "eft": eft_evaluation(ROOT / "runs/demo-eft-on-updated/eval", reference),
    }
    alone = RESULTS / "demo_seed0.json"  # the RiC demo's training measured alone by bench_demo.py (same code)
    for name, run_dir in (("ric_lora", RIC_RUN), ("prt", PRT_RUN)):
        compute = json.loads((run_dir / "compute.json").read_text())["stages"]["train"]
        source = str(run_dir.relative_to(ROOT) / "compute.json")
        if name == "ric_lora" and alone.exists():
            compute, source = json.loads(alone.read_text())["compute"]["stages"]["train"], str(alone.relative_to(ROOT))
        result["same_base"][name].update(
            train_cpu_seconds=compute["cpu_seconds"], train_wall_seconds=compute["wall_seconds"], train_source=source
        )
    result["differences"] = paired_differences(
        {
            "same_base prt - ric_lora": (PRT_RUN / "eval", RIC_RUN / "eval"),
            "updated_base prt - lora_transfer": (PRT_RUN / "eval_updated", lora_transfer_run() / "eval_updated"),
            "updated_base prt - eft": (PRT_RUN / "eval_updated", ROOT / "runs/demo-eft-on-updated/eval"),
        },
        reference,
    )


def paired_differences(pairs: dict, reference) -> dict:
    """Hypervolume differences with 95 % intervals from the same prompt resamples for both arms."""
    out = {}
    for label, (a, b) in pairs.items():
        arms = []
        for eval_dir in (a, b):
            pareto = {**json.loads((eval_dir / "pareto.json").read_text()), "eval_dir": str(eval_dir)}
            weights = [p["preference"] for p in pareto["points"]]
            arms.append(bootstrap(point_scores(pareto), weights, reference)[0])
        diff = arms[0] - arms[1]
        out[label] = {
            "hypervolume_difference_ci": interval(diff),
            "share_above_zero": round(float((diff > 0).mean()), 3),
        }
    return out


def decode_seconds(model, tokenizer, texts, steps: int) -> float:
    """Seconds for a prefill and `steps` greedy decode steps with the KV cache, no early stop: the same loop
    for every model, so the ratios compare the models' forward passes."""
    import torch
    from transformers import DynamicCache

    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    mask = enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = model.new_cache() if hasattr(model, "new_cache") else DynamicCache()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, past_key_values=cache)
        last = positions[:, -1:]
        for _ in range(steps):
            tokens = out.logits[:, -1].argmax(-1, keepdim=True)
            mask, last = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1), last + 1
            out = model(input_ids=tokens, attention_mask=mask, position_ids=last, past_key_values=cache)
    return time.perf_counter() - t0


def step_timing(result: dict, steps: int = 40, prompts: int = 16) -> None:
    import torch

    from ric.inference import RiCGenerator
    from ric.models import load_causal_lm
    from ric.steering import PRTGenerator, eft_policy

    questions = [json.loads(line)["prompt"] for line in open(ROOT / "recipes/demo/data/eval_prompts.jsonl")]
    ric_gen = RiCGenerator.from_run(RIC_RUN)
    prt_gen = PRTGenerator.from_run(PRT_RUN)
    base = load_causal_lm(ric_gen.info.base_model, device="cpu", dtype="float32").eval()
    condition = ric_gen.condition(preference=[0.5, 0.5])
    texts = [ric_gen.format(q, condition) for q in questions[:prompts]]
    models = {
        "base": base,
        "ric_lora_merged": ric_gen.model,
        "prt": prt_gen.model,
        "eft": eft_policy(base, ric_gen.model, base),
    }
    timing = {
        "what": f"ms per decode step (prefill + {steps} greedy steps with the KV cache, no early stop), "
        f"{prompts} held-out prompts with tags, median of 3",
        "threads": torch.get_num_threads(),
    }
    for batch in (1, 16):
        row = {}
        for name, model in models.items():
            decode_seconds(model, ric_gen.tokenizer, texts[:1], 2)  # warm-up
            runs = []
            for _ in range(3):
                seconds = sum(
                    decode_seconds(model, ric_gen.tokenizer, texts[i : i + batch], steps)
                    for i in range(0, len(texts) if batch > 1 else 4, batch)
                )
                runs.append(seconds / ((len(texts) if batch > 1 else 4) // batch * (steps + 1)))
            row[name] = {"ms_per_step": round(1000 * sorted(runs)[1], 2)}
        for name in row:
            row[name]["ratio_to_base"] = round(row[name]["ms_per_step"] / row["base"]["ms_per_step"], 2)
        timing[f"batch_{batch}"] = row
    result["timing"] = timing


STEPS = {
    "probe": step_probe,
    "prt": step_prt,
    "updated_base": step_updated_base,
    "evaluate": step_evaluate,
    "timing": step_timing,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=list(STEPS))
    known = parser.parse_args()
    if not (RIC_RUN / "eval/pareto.json").exists():
        ric("run", "recipes/demo/ric.yaml")
    result = load()
    result.setdefault("machine", {"cpu_count": os.cpu_count(), "platform": platform.platform()})
    for name, step in STEPS.items():
        if known.only and name != known.only:
            continue
        if not known.only and name in result.get("done", []):
            continue
        print(f"[bench_prt] {name}", flush=True)
        step(result)
        result["done"] = sorted(set(result.get("done", [])) | {name})
        save(result)
    print(json.dumps({k: v for k, v in result.items() if k != "probe"}, indent=1))


if __name__ == "__main__":
    main()
