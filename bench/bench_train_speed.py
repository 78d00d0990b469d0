"""LoRA training speed of the demo's offline stage, one change at a time, against this machine's matmul peak.

    python bench/bench_train_speed.py [--run runs/demo] [--steps 20] [--variants padded,padding_free,...]

The probe: the fp32 (and bf16) matmul peak of this machine, the best of a few square products of 2048 on every
core (GFLOP/s). The variants train the demo recipe's adapter on its prepared rows (RUN/data/train, the
recipe's batch of 8 with the rows of one question together) for --steps steps from a fresh LoRA, each in
its own process, one after another:

- padded: today's path (each batch padded to its longest row);
- padding_free: the rows of a batch end to end, no padding, no attention across rows (TRL's padding_free);
- padding_free_bf16: the same under bf16 autocast (only where the CPU has avx512_bf16 or AMX);
- padded_labelled, padding_free_bf16_labelled: padded fp32 and padding-free bf16 with the LM head projecting only the
  positions that carry a label (what ric's trainers do); the four above project every position, as TRL does off
  CUDA/XPU.

For each: seconds per step (the first two steps left out: warm-up), real tokens per step (pads not
counted), tokens/s, the mean loss of the steps, and LoRA training utilisation: 4 x parameters x tokens/s
(forward 2, backward through the frozen weights 2) over the fp32 peak. Run it alone: the figures are only
worth something then. Writes bench/results/train_speed.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# "_all_positions": the LM head projects every position onto the vocabulary, as TRL's fused head does off
# CUDA/XPU (ric's trainers project only the labelled ones: `ric.models.labelled_positions_only`)
VARIANTS = {
    "padded": {"padding_free": False, "bf16": False, "_all_positions": True},
    "padding_free": {"padding_free": True, "bf16": False, "_all_positions": True},
    "padding_free_bf16": {"padding_free": True, "bf16": True, "use_cpu": True, "_all_positions": True},
    "padded_bf16": {"padding_free": False, "bf16": True, "use_cpu": True, "_all_positions": True},
    "padded_labelled": {"padding_free": False, "bf16": False},
    "padding_free_bf16_labelled": {"padding_free": True, "bf16": True, "use_cpu": True},
}


def cpu_flags() -> list[str]:
    from ric.config import cpu_flags as all_flags

    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
    return sorted(f for f in all_flags() if f in wanted)


def matmul_peak(dtype: str, size: int = 2048, repeats: int = 8) -> float:
    """GFLOP/s of the best of `repeats` (size x size) @ (size x size) products on every core."""
    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(size, size).to(kind), torch.randn(size, size).to(kind)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def one_variant(run: Path, name: str, steps: int) -> dict:
    """Train `steps` steps of the run's recipe with the variant's overrides; return its timings."""
    import dataclasses
    import tempfile

    import numpy as np
    from transformers import TrainerCallback

    from ric.methods import parse_run
    from ric.models import load_causal_lm, load_tokenizer
    from ric.prepare import load_prepared
    from ric.ric_trainer import train_adapter

    spec = dict(VARIANTS[name])
    if spec.pop("_all_positions", False):
        import contextlib

        import ric.ric_trainer

        ric.ric_trainer.labelled_positions_only = contextlib.nullcontext  # TRL's own choice: every position
    model_args, _, args, _ = parse_run([], run / "recipe.yaml").configs
    train, _, _ = load_prepared(run)
    tokenizer = load_tokenizer(model_args.model_name_or_path, padding_side="right")
    model = load_causal_lm(model_args.model_name_or_path, device="cpu")
    params = sum(p.numel() for p in model.parameters())
    times, tokens = [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start, self.seen = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)
            tokens.append(state.num_input_tokens_seen - self.seen)

    overrides = {
        "max_steps": steps,
        "save_strategy": "no",
        "logging_steps": 1,
        # real tokens: the attention mask's sum when padded; every token when padding-free (no mask there, and
        # "non_padding" would then drop every token equal to the pad id, which is this tokenizer's <|im_end|>)
        "include_num_input_tokens_seen": "all" if spec.get("padding_free") else "non_padding",
        **spec,
    }
    with tempfile.TemporaryDirectory() as out:
        args = dataclasses.replace(args, output_dir=out)
        _, stats = train_adapter(
            model, tokenizer, train, args, model_args, Path(out), overrides=overrides, callbacks=[Clock()]
        )
    losses = [e["loss"] for e in stats["log_history"] if "loss" in e]
    seconds, counted = float(np.mean(times[2:])), float(np.mean(tokens[2:]))
    return {
        "variant": name,
        "overrides": spec,
        "lm_head_positions": "all" if VARIANTS[name].get("_all_positions") else "labelled",
        "steps": steps,
        "seconds_per_step": round(seconds, 3),
        "seconds_per_step_each": [round(t, 3) for t in times],
        "tokens_per_step": round(counted, 1),
        "tokens_per_second": round(counted / seconds, 1),
        "parameters": params,
        "training_gflops": round(4 * params * counted / seconds / 1e9, 2),
        "mean_loss": round(float(np.mean(losses)), 4),
        "losses": losses,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs/demo"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one variant, JSON on stdout
    parser.add_argument("--out", default=str(ROOT / "bench/results/train_speed.json"))
    a = parser.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one_variant(Path(a.run), a.one, a.steps)))
        return
    from ric.config import cpu_has_bf16

    flags = cpu_flags()
    peaks = {"float32": round(matmul_peak("float32"), 1), "bfloat16": round(matmul_peak("bfloat16"), 1)}
    print("matmul peak GFLOP/s", peaks, "flags", flags)
    rows = []
    for name in a.variants.split(","):
        if VARIANTS[name].get("bf16") and not cpu_has_bf16():
            rows.append({"variant": name, "skipped": "the CPU has neither avx512_bf16 nor AMX"})
            continue
        cmd = [sys.executable, __file__, "--run", a.run, "--steps", str(a.steps), "--one", name]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        row = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
        row["utilisation_of_fp32_peak"] = round(row["training_gflops"] / peaks["float32"], 3)
        rows.append(row)
        print(name, {k: row[k] for k in ("seconds_per_step", "tokens_per_step", "tokens_per_second", "mean_loss")})
    result = {
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "flags": flags},
        "matmul_peak_gflops": peaks,
        "run": str(Path(a.run).resolve().relative_to(ROOT)) if Path(a.run).resolve().is_relative_to(ROOT) else a.run,
        "variants": rows,
    }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
