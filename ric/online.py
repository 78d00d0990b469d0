"""Online augmentation (PAPER.md stage 3): Pareto-targeted generation, relabelling, multi-objective
rejection sampling, continued training. Iterated and resumable.

Per iteration k (folder RUN_DIR/online/iter_k):
  a. `sample_targets`: target vectors near the Pareto front (every objective at its maximum except
     one, drawn uniformly in [low, high]); prompts drawn from the training set.
  b. generate with the current adapter, in chunks written as they complete (gen/);
  c. score the generations, normalise with the saved training statistics and use the OBTAINED
     scores as the tags (relabelling) -> scored/ (Arrow);
  d. `select_by_quantile`: keep a row if ANY of its scores is at or above that score's quantile;
     the same filter picks up to `online_num_origin_samples` rows of the original data;
  e. continue training the same adapter on original-kept + every online-kept row so far
     -> RUN_DIR/adapter_online_k (with its ric_run.json); the run's ric_run.json then points there.

`run_state.json` records the stage each iteration reached (`ric status RUN_DIR`); a rerun skips
finished chunks, scoring and training, and resumes training from its last checkpoint.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .io import RunState, atomic_save_dataset, read_json, write_json
from .preference import round1, standard_normal_range

logger = logging.getLogger(__name__)


def sample_targets(n: int, num_objectives: int, low=None, high=None, seed: int = 0) -> np.ndarray:
    """Targets near the Pareto front, shape (n, num_objectives), rounded to 1 decimal.

    Every objective is set to its maximum `high` except one, picked uniformly at random, which is
    drawn uniformly in [low, high]. `low`/`high` are scalars or one value per objective; by
    default the paper's range, the min/max of a standard normal sample (about -4.3..4.3).
    """
    if n < 1 or num_objectives < 1:
        raise ValueError(f"sample_targets: n and num_objectives must be >= 1, got {n}, {num_objectives}")
    default_low, default_high = standard_normal_range()
    low = np.broadcast_to(np.asarray(default_low if low is None else low, dtype=np.float64), (num_objectives,))
    high = np.broadcast_to(np.asarray(default_high if high is None else high, dtype=np.float64), (num_objectives,))
    if np.any(low >= high):
        raise ValueError(f"sample_targets: low {low.tolist()} must be below high {high.tolist()}")
    rng = np.random.default_rng(seed)
    targets = np.tile(high, (n, 1))
    free = rng.integers(0, num_objectives, size=n)
    targets[np.arange(n), free] = rng.uniform(low[free], high[free])
    return np.vectorize(round1)(targets)


def select_by_quantile(scores, quantile: float = 0.7) -> np.ndarray:
    """Multi-objective rejection sampling: keep a row when ANY of its scores is at or above that
    score's `quantile` over the rows. Returns a boolean mask."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}; the paper uses 0.7")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or len(scores) == 0:
        raise ValueError(f"scores: expected a non-empty (rows, objectives) table, got shape {scores.shape}")
    thresholds = np.quantile(scores, quantile, axis=0)
    return np.any(scores >= thresholds, axis=1)


def dist_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def pick_backend(choice: str) -> str:
    """'vllm' or 'transformers' for `generation_backend` ('auto': vLLM when installed and CUDA is present)."""
    from .vllm_backend import vllm_available

    if choice == "vllm":
        if not vllm_available():
            raise ValueError("generation_backend: 'vllm' needs the vllm package and a CUDA GPU; use 'auto' or 'transformers'")
        return "vllm"
    if choice == "auto" and vllm_available():
        return "vllm"
    return "transformers"


def target_range(args, info) -> tuple[list[float], list[float]]:
    """The online goal range: the recipe's, or the paper's standard-normal range."""
    n = info.num_objectives
    if args.online_target_low is not None:
        return [args.online_target_low] * n, [args.online_target_high] * n
    if args.online_target_range == "data":
        return list(info.score_low), list(info.score_high)
    low, high = standard_normal_range()
    return [low] * n, [high] * n


def check_online_run(run_dir: Path, args):
    """Clear errors before any generation: statistics, an adapter, and the recipe's rewards/template."""
    from reward_models import reward_display_name

    from .run_info import load_run_info

    if not (run_dir / "data" / "reward_stats.json").exists():
        raise ValueError(
            f"num_online_iterations: {run_dir} has no training statistics (data/reward_stats.json); "
            "run `ric prepare` and `ric train` first"
        )
    info, _ = load_run_info(run_dir)
    names = [reward_display_name(r) for r in args.rewards]
    if info.rewards != names or info.template != args.template:
        raise ValueError(
            f"{run_dir} was trained with rewards {info.rewards} and template {info.template!r}; this recipe has "
            f"{names} and {args.template!r}. Use the recipe that made the run, or a new output_dir"
        )
    return info


def run_online(run_dir, model_args, data_args, args, progress: bool = True) -> list[dict]:
    """Run every online iteration not finished yet; returns each iteration's statistics."""
    run_dir = Path(run_dir)
    check_online_run(run_dir, args)
    from .io import ComputeMeter

    results = []
    for iteration in range(1, args.num_online_iterations + 1):
        if RunState(run_dir).done(f"online_{iteration}:train"):
            results.append(read_json(run_dir / "online" / f"iter_{iteration}" / "stats.json"))
            continue
        with ComputeMeter(run_dir, f"online_{iteration}") as meter:
            stats = online_iteration(run_dir, iteration, model_args, data_args, args, progress)
            meter.steps, meter.generated_tokens = stats["train"]["global_step"], stats.get("generated_tokens") or 0
        results.append(stats)
    return results


def online_iteration(run_dir: Path, iteration: int, model_args, data_args, args, progress: bool = True) -> dict:
    import datasets

    from reward_models import load_rewards

    from .chunks import run_chunked
    from .generation import clean_response, format_prompts, generate_batched, load_policy
    from .prepare import load_prepared, score_responses
    from .run_info import load_run_info

    state = RunState(run_dir)
    stage = f"online_{iteration}"
    folder = run_dir / "online" / f"iter_{iteration}"
    adapter_out = run_dir / f"adapter_online_{iteration}"
    if state.done(f"{stage}:train"):
        logger.info("online iteration %d: done already (%s)", iteration, adapter_out)
        return read_json(folder / "stats.json")

    info, _ = load_run_info(run_dir)
    previous = run_dir / ("adapter" if iteration == 1 else f"adapter_online_{iteration - 1}")
    if not (previous / "adapter_config.json").exists():
        raise FileNotFoundError(f"online iteration {iteration} needs the adapter {previous}; run the earlier stages first")
    train_rows, _, reward_stats = load_prepared(run_dir)
    timings = {}

    # a. goals and prompts (seeded: a rerun rebuilds exactly the same work list)
    low, high = target_range(args, info)
    n = args.online_num_generations
    targets = sample_targets(n, info.num_objectives, low, high, seed=args.seed + 1000 * iteration)
    rng = np.random.default_rng(args.seed + 1000 * iteration + 1)
    prompts = list(dict.fromkeys(train_rows["prompt"]))
    picked = rng.integers(0, len(prompts), size=n)
    items = [{"i": i, "prompt": prompts[j], "targets": t.tolist()} for i, (j, t) in enumerate(zip(picked, targets))]

    # b. generation with the current adapter, chunk by chunk
    t0 = time.time()
    policy = {}
    gen_stats: dict = {}

    backend = pick_backend(args.generation_backend)

    def work(chunk):
        if "tokenizer" not in policy:
            if backend == "vllm":
                from .models import load_tokenizer, resolve_model_path
                from .vllm_backend import VLLMGenerator

                policy["tokenizer"] = load_tokenizer(str(previous))
                policy["vllm"] = VLLMGenerator(resolve_model_path(info.base_model), str(previous), model_args.lora_r,
                                               trust_remote_code=args.trust_remote_code)
            else:
                policy["model"], policy["tokenizer"] = load_policy(info, previous, merge=True)
        texts = format_prompts([c["prompt"] for c in chunk], info.template, policy["tokenizer"], [c["targets"] for c in chunk],
                               info.system_prompt)
        if backend == "vllm":
            out = policy["vllm"].generate(texts, args.max_completion_length, args.temperature, args.top_p,
                                          seed=args.seed + 1_000_000 * iteration + chunk[0]["i"], stats=gen_stats)
            return [{**c, "response": clean_response(r, info.template)} for c, r in zip(chunk, out)]
        out = generate_batched(
            policy["model"], policy["tokenizer"], texts, max_new_tokens=args.max_completion_length,
            temperature=args.temperature, top_p=args.top_p, batch_size=args.generation_batch_size,
            seed=args.seed + 1_000_000 * iteration + chunk[0]["i"], template=info.template,
            progress=False, stats=gen_stats,
        )
        return [{**c, "response": r} for c, r in zip(chunk, out)]

    if state.done(f"{stage}:score"):
        generated = None
    else:
        generated = run_chunked(folder / "gen", items, args.online_chunk_size, work, f"online {iteration}: generating", progress)
        if dist_main():
            state.mark(f"{stage}:generate", rows=len(generated), generated_tokens=gen_stats.get("generated_tokens"))
    timings["generate_seconds"] = round(time.time() - t0, 1)
    policy.clear()

    # c. relabel with the obtained scores
    t0 = time.time()
    from accelerate import PartialState

    dist = PartialState()
    if generated is not None and dist.is_main_process:
        scorers = load_rewards(args.rewards, args.reward_models, batch_size=args.reward_batch_size)
        keep_nonempty = [i for i, g in enumerate(generated) if g["response"].strip()]
        generated = [generated[i] for i in keep_nonempty]
        raw = score_responses(scorers, [g["prompt"] for g in generated], [g["response"] for g in generated], progress)
        normalized = info.reward_stats.normalize(info.rewards, raw)
        scored = datasets.Dataset.from_dict({
            "prompt": [g["prompt"] for g in generated],
            "response": [g["response"] for g in generated],
            "desired_scores": [g["targets"] for g in generated],
            "scores": raw.tolist(),
            "normalized_scores": normalized.tolist(),
        })
        atomic_save_dataset(scored, folder / "scored")
        state.mark(f"{stage}:score", rows=len(scored), empty_dropped=len(items) - len(scored))
    dist.wait_for_everyone()
    scored = datasets.load_from_disk(str(folder / "scored"))
    timings["score_seconds"] = round(time.time() - t0, 1)

    # d. multi-objective rejection sampling, on this iteration's rows and on the original data
    online_scores = np.asarray(scored["normalized_scores"])
    kept_mask = select_by_quantile(online_scores, args.online_quantile)
    kept = scored.select(np.flatnonzero(kept_mask).tolist())
    if dist.is_main_process:
        atomic_save_dataset(kept, folder / "kept")
    dist.wait_for_everyone()
    origin_mask = select_by_quantile(np.asarray(train_rows["normalized_scores"]), args.online_quantile)
    origin_index = np.flatnonzero(origin_mask)
    if len(origin_index) > args.online_num_origin_samples:
        origin_index = np.sort(np.random.default_rng(args.seed + iteration).choice(origin_index, args.online_num_origin_samples, replace=False))
    parts = [train_rows.select(origin_index.tolist()).select_columns(["prompt", "response", "normalized_scores"])]
    for k in range(1, iteration + 1):
        kept_k = datasets.load_from_disk(str(run_dir / "online" / f"iter_{k}" / "kept"))
        parts.append(kept_k.select_columns(["prompt", "response", "normalized_scores"]))
    mixture = datasets.concatenate_datasets(parts).shuffle(seed=args.seed + iteration)

    # e. continue training the same adapter
    t0 = time.time()
    from peft import PeftModel

    from .models import load_tokenizer
    from .ric_trainer import build_sft_dataset, load_base_for_training, make_run_info, plot_loss, run_sft, save_adapter

    tokenizer = load_tokenizer(model_args.model_name_or_path, padding_side="right", trust_remote_code=args.trust_remote_code)
    dataset = build_sft_dataset(mixture, info.template, tokenizer, system_prompt=info.system_prompt)
    base = load_base_for_training(model_args, args)
    model = PeftModel.from_pretrained(base, str(previous), is_trainable=True)
    overrides = dict(max_steps=args.online_max_steps, learning_rate=args.online_learning_rate,
                     lr_scheduler_type=args.online_lr_scheduler_type, warmup_steps=0)
    trainer, train_stats = run_sft(model, tokenizer, dataset, args, model_args, run_dir / "checkpoints" / f"online_{iteration}", overrides)
    timings["train_seconds"] = round(time.time() - t0, 1)

    stats = {
        "iteration": iteration,
        "generated": len(items),
        "empty_responses_dropped": len(items) - len(scored),
        "kept": int(kept_mask.sum()),
        "dropped": int((~kept_mask).sum()),
        "quantile": args.online_quantile,
        "thresholds_normalized": np.quantile(online_scores, args.online_quantile, axis=0).tolist(),
        "origin_rows": len(train_rows),
        "origin_kept": len(origin_index),
        "training_rows": len(dataset),
        "online_rows_so_far": len(dataset) - len(origin_index),
        "target_low": low,
        "target_high": high,
        "generated_tokens": gen_stats.get("generated_tokens"),
        "mean_obtained_normalized": online_scores.mean(0).tolist(),
        "mean_kept_normalized": online_scores[kept_mask].mean(0).tolist() if kept_mask.any() else None,
        "train": {k: v for k, v in train_stats.items() if k != "log_history"},
        "timings": timings,
    }
    logger.info("online iteration %d: generated %d, kept %d, dropped %d; trained on %d rows",
                iteration, stats["generated"], stats["kept"], stats["dropped"], stats["training_rows"])
    if trainer.accelerator.is_main_process:
        new_info = make_run_info(model_args, args, reward_stats, adapter=adapter_out.name)
        save_adapter(trainer.model, tokenizer, new_info, adapter_out, extra=stats)
        new_info.save(run_dir)
        write_json(folder / "stats.json", stats)
        plot_loss(train_stats["log_history"], folder / "train_loss.png", f"RiC online iteration {iteration}")
        state.mark(f"{stage}:train", steps=train_stats["global_step"], kept=stats["kept"], dropped=stats["dropped"])
    trainer.accelerator.wait_for_everyone()
    return stats
