"""Online augmentation (paper stage 3): Pareto-targeted generation, relabelling, multi-objective
rejection sampling, continued training. Iterated and resumable.

Per iteration k (folder RUN_DIR/online/iter_k):
  a. `sample_targets`: target vectors near the Pareto front (every objective at its maximum except
     one, the smallest of N uniform draws in [low, high] as the paper's code, or one uniform draw as
     the paper's text); prompts drawn from the training set;
  b. generate with the current adapter, in chunks written as they complete (gen/);
  c. score the generations, normalise with the saved training statistics and use the OBTAINED
     scores as the tags (relabelling) -> scored/ (Arrow);
  d. `select_by_quantile`: keep a row if ANY of its scores is at or above that score's quantile;
     the same filter picks up to `online_num_origin_samples` rows of the original data;
  e. continue training the same adapter on original-kept + every online-kept row so far
     -> RUN_DIR/adapter_online_k (with its ric_run.json); the run's ric_run.json then points there.

`run_state.json` records the step each iteration reached (`ric status RUN_DIR`); a rerun skips
finished chunks, scoring and training, and resumes training from its last checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .preference import round1, standard_normal_range
from .rundir import RunState, atomic_save_dataset, is_main_process, wait_for_everyone, write_json

logger = logging.getLogger(__name__)


GOAL_SAMPLING = ("min_of_uniform", "uniform")


def sample_targets(
    n: int, num_objectives: int, low=None, high=None, seed: int = 0, method: str = "min_of_uniform"
) -> np.ndarray:
    """Targets near the Pareto front, shape (n, num_objectives), rounded to 1 decimal.

    Every objective is set to its maximum `high` except one free objective:

    - "min_of_uniform" (the default, the paper's code): every objective is drawn uniformly in
      [low, high] (rounded to 1 decimal) and the one with the smallest draw keeps it; so the free
      value is the minimum of N uniform draws, mean low + (high - low) / (N + 1): -1.43 for 2
      objectives and -2.15 for 3 on -4.3..4.3 (ties: the first objective).
    - "uniform" (the paper's text): the free objective is picked uniformly at random and drawn
      uniformly in [low, high] (mean 0 on a symmetric range).

    `low`/`high` are scalars or one value per objective (the draw is then made on each objective's
    own range, and the smallest fraction of its range wins); by default the paper's range, the
    min/max of a standard-normal sample (about -4.3..4.3).
    """
    if n < 1 or num_objectives < 1:
        raise ValueError(f"sample_targets: n and num_objectives must be >= 1, got {n}, {num_objectives}")
    if method not in GOAL_SAMPLING:
        raise ValueError(f"sample_targets: method {method!r} is not one of {GOAL_SAMPLING}")
    default_low, default_high = standard_normal_range()
    low = np.broadcast_to(np.asarray(default_low if low is None else low, dtype=np.float64), (num_objectives,))
    high = np.broadcast_to(np.asarray(default_high if high is None else high, dtype=np.float64), (num_objectives,))
    if np.any(low >= high):
        raise ValueError(f"sample_targets: low {low.tolist()} must be below high {high.tolist()}")
    rng = np.random.default_rng(seed)
    targets = np.tile(high, (n, 1))
    rows = np.arange(n)
    if method == "uniform":
        free = rng.integers(0, num_objectives, size=n)
        targets[rows, free] = rng.uniform(low[free], high[free])
    else:
        fractions = rng.random((n, num_objectives))
        draws = np.round(fractions * (high - low) + low, 1)
        free = np.argmin((draws - low) / (high - low), axis=1)
        targets[rows, free] = draws[rows, free]
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


def adapter_before(run_dir: Path, iteration: int) -> Path:
    """The adapter iteration `iteration` starts from: the offline one, or the previous iteration's."""
    previous = run_dir / ("adapter" if iteration == 1 else f"adapter_online_{iteration - 1}")
    if not (previous / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"online iteration {iteration} needs the adapter {previous}; run the earlier stages first"
        )
    return previous


def goal_items(args, info, prompts: list[str], iteration: int) -> list[dict]:
    """a. Seeded goals and prompts: a rerun rebuilds exactly the same work list."""
    low, high = target_range(args, info)
    n = args.online_num_generations
    targets = sample_targets(
        n, info.num_objectives, low, high, seed=args.seed + 1000 * iteration, method=args.online_goal_sampling
    )
    picked = np.random.default_rng(args.seed + 1000 * iteration + 1).integers(0, len(prompts), size=n)
    return [{"i": i, "prompt": prompts[j], "targets": t.tolist()} for i, (j, t) in enumerate(zip(picked, targets))]


def generate_online(
    folder: Path, items: list[dict], info, adapter: Path, model_args, args, iteration: int, progress: bool = True
) -> tuple[list[dict], int]:
    """b. Generate with the current adapter, chunk by chunk; returns (rows, generated tokens)."""
    from .chunks import run_chunked
    from .generation import GenerationTally, format_prompts, generate_batched, load_policy
    from .vllm_backend import pick_backend

    backend = pick_backend(args.generation_backend)
    policy, tally = {}, GenerationTally()

    def work(chunk):
        if "tokenizer" not in policy:
            policy.update(_load_online_policy(backend, info, adapter, model_args, args, load_policy))
        texts = format_prompts(
            [c["prompt"] for c in chunk],
            info.template,
            policy["tokenizer"],
            [c["targets"] for c in chunk],
            info.system_prompt,
        )
        seed = args.seed + 1_000_000 * iteration + chunk[0]["i"]
        if backend == "vllm":
            out = tally.add(
                policy["vllm"].generate(
                    texts,
                    args.max_completion_length,
                    args.temperature,
                    args.top_p,
                    seed=seed,
                    template=info.template,
                    trim_truncated=args.trim_truncated,
                )
            )
            return [{**c, "response": r, "cut_by_budget": h} for c, r, h in zip(chunk, out.texts, out.hit_budget)]
        out = tally.add(
            generate_batched(
                policy["model"],
                policy["tokenizer"],
                texts,
                max_new_tokens=args.max_completion_length,
                temperature=args.temperature,
                top_p=args.top_p,
                batch_size=args.sampling_batch_size,
                seed=seed,
                template=info.template,
                progress=False,
                trim_truncated=args.trim_truncated,
            )
        )
        # a draw that ran to the budget is cut, as in prepare: with eos_after_budget_cut false it trains
        # without the end token, so the iteration does not teach the adapter to stop where the budget fell
        return [{**c, "response": r, "cut_by_budget": h} for c, r, h in zip(chunk, out.texts, out.hit_budget)]

    rows = run_chunked(
        folder / "gen", items, args.generation_chunk_size, work, f"online {iteration}: generating", progress
    )
    return rows, tally.generated_tokens


def _load_online_policy(backend: str, info, adapter: Path, model_args, args, load_policy) -> dict:
    if backend == "vllm":
        from .models import load_tokenizer, resolve_model_path
        from .vllm_backend import VLLMGenerator

        return {
            "tokenizer": load_tokenizer(str(adapter)),
            "vllm": VLLMGenerator(
                resolve_model_path(info.base_model),
                str(adapter),
                model_args.lora_r,
                trust_remote_code=args.trust_remote_code,
            ),
        }
    model, tokenizer = load_policy(info, adapter, merge=True, dtype=generation_dtype(args.online_generation_dtype))
    return {"model": model, "tokenizer": tokenizer}


def generation_dtype(dtype: str | None) -> str | None:
    """`online_generation_dtype` as this machine runs it: bfloat16 on a CPU without bf16 instructions (neither
    avx512_bf16 nor AMX) would be emulated, slower than float32, so the run's dtype is kept (with a warning)."""
    import torch

    from .config import cpu_has_bf16

    if dtype == "bfloat16" and not torch.cuda.is_available() and not cpu_has_bf16():
        logger.warning("online_generation_dtype: this CPU has no bf16 instructions; generating in the run's dtype")
        return None
    return dtype


def relabel(folder: Path, generated: list[dict], info, args, progress: bool = True):
    """c. Score the generations and keep the OBTAINED scores (normalised) as their tags -> scored/."""
    import datasets

    from reward_models import load_rewards

    from .scoring import score_chunked

    rows = [g for g in generated if g["response"].strip()]
    raw = score_chunked(
        folder / "scores",
        [g["prompt"] for g in rows],
        [g["response"] for g in rows],
        info.rewards,
        lambda: load_rewards(args.rewards, args.reward_models, batch_size=args.reward_batch_size),
        args.generation_chunk_size,
        progress,
        "scoring online generations",
    )
    if is_main_process():
        scored = datasets.Dataset.from_dict(
            {
                "prompt": [g["prompt"] for g in rows],
                "response": [g["response"] for g in rows],
                "desired_scores": [g["targets"] for g in rows],
                "scores": raw.tolist(),
                "normalized_scores": info.reward_stats.normalize(info.rewards, raw).tolist(),
                "cut_by_budget": [bool(g.get("cut_by_budget", False)) for g in rows],  # older chunks: not cut
            }
        )
        atomic_save_dataset(scored, folder / "scored")
    wait_for_everyone()
    return datasets.load_from_disk(str(folder / "scored"))


def select_training_rows(run_dir: Path, scored, train_rows, args, iteration: int):
    """d. Rejection sampling on this iteration's rows and on the original data; returns the mixture
    (original kept + every iteration's kept rows so far), this iteration's mask and the original rows kept."""
    import datasets

    folder = run_dir / "online" / f"iter_{iteration}"
    kept_mask = select_by_quantile(np.asarray(scored["normalized_scores"]), args.online_quantile)
    if is_main_process():
        atomic_save_dataset(scored.select(np.flatnonzero(kept_mask).tolist()), folder / "kept")
    wait_for_everyone()
    origin_index = np.flatnonzero(
        select_by_quantile(np.asarray(train_rows["normalized_scores"]), args.online_quantile)
    )
    if len(origin_index) > args.online_num_origin_samples:
        rng = np.random.default_rng(args.seed + iteration)
        origin_index = np.sort(rng.choice(origin_index, args.online_num_origin_samples, replace=False))
    columns = ["prompt", "response", "normalized_scores", "cut_by_budget"]
    parts = [_with_cut_flag(train_rows.select(origin_index.tolist())).select_columns(columns)]
    for k in range(1, iteration + 1):
        kept = datasets.load_from_disk(str(run_dir / "online" / f"iter_{k}" / "kept"))
        parts.append(_with_cut_flag(kept).select_columns(columns))
    mixture = datasets.concatenate_datasets(parts).shuffle(seed=args.seed + iteration)
    return mixture, kept_mask, origin_index


def _with_cut_flag(rows):
    """Rows with a `cut_by_budget` column (rows written before the flag existed: not cut)."""
    if "cut_by_budget" in rows.column_names:
        return rows
    return rows.add_column("cut_by_budget", [False] * len(rows))


def online_learning_rate(args, iteration: int) -> float:
    """The rate online iteration `iteration` (from 1) trains at: online_learning_rate x decay^(iteration-1)."""
    return args.online_learning_rate * args.online_learning_rate_decay ** (iteration - 1)


def continue_training(run_dir: Path, mixture, previous: Path, model_args, args, iteration: int):
    """e. Train the same adapter further on the mixture; returns (trainer, stats, tokenizer)."""
    from peft import PeftModel

    from .models import load_base_for_training, load_tokenizer
    from .ric_trainer import train_adapter

    tokenizer = load_tokenizer(
        model_args.model_name_or_path, padding_side="right", trust_remote_code=args.trust_remote_code
    )
    model = PeftModel.from_pretrained(
        load_base_for_training(model_args, args.trust_remote_code), str(previous), is_trainable=True
    )
    overrides = dict(
        max_steps=args.online_max_steps,
        learning_rate=online_learning_rate(args, iteration),
        lr_scheduler_type=args.online_lr_scheduler_type,
        warmup_steps=0,
    )
    trainer, stats = train_adapter(
        model, tokenizer, mixture, args, model_args, run_dir / "checkpoints" / f"online_{iteration}", overrides
    )
    return trainer, stats, tokenizer


def online_iteration(run_dir, iteration: int, model_args, data_args, args, meter=None, progress: bool = True) -> dict:
    """One online iteration, resumable step by step; returns its statistics (online/iter_k/stats.json)."""
    import contextlib

    import datasets

    from .prepare import load_prepared
    from .report import plot_loss
    from .ric_trainer import make_run_info, save_adapter
    from .run_info import load_run_info

    run_dir = Path(run_dir)
    info = check_online_run(run_dir, args)
    part = meter.part if meter is not None else (lambda name: contextlib.nullcontext())
    state, stage = RunState(run_dir), f"online_{iteration}"
    folder, previous = run_dir / "online" / f"iter_{iteration}", adapter_before(run_dir, iteration)
    info, _ = load_run_info(previous)
    train_rows, _, reward_stats = load_prepared(run_dir)
    items = goal_items(args, info, list(dict.fromkeys(train_rows["prompt"])), iteration)
    generated_tokens = state.get(f"{stage}:generate").get("generated_tokens", 0)
    if not state.done(f"{stage}:score"):
        with part("generate"):
            generated, generated_tokens = generate_online(
                folder, items, info, previous, model_args, args, iteration, progress
            )
        state.mark(f"{stage}:generate", rows=len(generated), generated_tokens=generated_tokens)
        with part("score"):
            relabel(folder, generated, info, args, progress)
        state.mark(f"{stage}:score")
    scored = datasets.load_from_disk(str(folder / "scored"))
    mixture, kept_mask, origin_index = select_training_rows(run_dir, scored, train_rows, args, iteration)
    with part("train"):
        trainer, train_stats, tokenizer = continue_training(run_dir, mixture, previous, model_args, args, iteration)
    online_scores = np.asarray(scored["normalized_scores"])
    low, high = target_range(args, info)
    stats = {
        "iteration": iteration,
        "generated": len(items),
        "empty_responses_dropped": len(items) - len(scored),
        "kept": int(kept_mask.sum()),
        "dropped": int((~kept_mask).sum()),
        "quantile": args.online_quantile,
        "learning_rate": online_learning_rate(args, iteration),
        "thresholds_normalized": np.quantile(online_scores, args.online_quantile, axis=0).tolist(),
        "origin_rows": len(train_rows),
        "origin_kept": len(origin_index),
        "training_rows": train_stats["rows"],
        "online_rows_so_far": train_stats["rows"] - len(origin_index),
        "target_low": low,
        "target_high": high,
        "generated_tokens": generated_tokens,
        "mean_obtained_normalized": online_scores.mean(0).tolist(),
        "mean_kept_normalized": online_scores[kept_mask].mean(0).tolist() if kept_mask.any() else None,
        "train": {k: v for k, v in train_stats.items() if k != "log_history"},
    }
    logger.info(
        "online iteration %d: generated %d, kept %d, dropped %d; trained on %d rows",
        iteration,
        stats["generated"],
        stats["kept"],
        stats["dropped"],
        stats["training_rows"],
    )
    if is_main_process():
        adapter_out = run_dir / f"adapter_online_{iteration}"
        new_info = make_run_info(model_args, args, reward_stats, adapter=adapter_out.name)
        save_adapter(trainer.model, tokenizer, new_info, adapter_out, extra=stats)
        new_info.save(run_dir)
        write_json(folder / "stats.json", stats)
        plot_loss(train_stats["log_history"], folder / "train_loss.png", f"RiC online iteration {iteration}")
    wait_for_everyone()
    if meter is not None:
        meter.steps, meter.generated_tokens = train_stats["global_step"], generated_tokens or 0
    return stats
