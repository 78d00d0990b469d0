"""`ric prepare`: score the training data with every reward and normalise (PAPER.md stage 1).

Input rows hold a prompt and a response (or prompts only: then k responses per prompt are first
sampled from the base model, batched, in resumable chunks). Rows outside the length limits are
dropped and counted. Each reward is normalised to mean 0 / std 1 over the training set; the
statistics go to `data/reward_stats.json` beside the Arrow dataset `data/train`, since training,
generation and online scoring reuse them. Held-out prompts go to `data/eval`.

Writes under RUN_DIR/data: train/ (Arrow: prompt, response, scores, normalized_scores),
eval/ (Arrow: prompt), reward_stats.json, prepare_stats.json (counts, drops, correlations, timings),
samples/ (chunked base-model samples, when sampling).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .data import load_table, require_columns
from .io import RunState, atomic_save_dataset, write_json
from .pareto import pearson_matrix
from .run_info import RewardStats, score_range

logger = logging.getLogger(__name__)


def data_dir(run_dir) -> Path:
    return Path(run_dir) / "data"


def score_responses(scorers, prompts, responses, progress: bool = True) -> np.ndarray:
    """Raw scores, shape (rows, rewards), every reward batched."""
    columns = []
    for scorer in scorers:
        start = time.time()
        columns.append(scorer(prompts, responses, progress=progress))
        logger.info("scored %d rows with %s in %.1fs", len(prompts), scorer.name, time.time() - start)
    return np.asarray(columns, dtype=np.float64).T.reshape(len(prompts), len(scorers))


def load_prompt_tables(data_args):
    """Training table and evaluation prompts, with their columns checked (before any model loads)."""
    if not data_args.dataset_name:
        raise ValueError("dataset_name: required; give a .jsonl/.csv/.parquet file, a save_to_disk folder or a hub id")
    train = load_table(data_args.dataset_name, data_args.dataset_train_split, data_args.dataset_config)
    require_columns(train, [data_args.prompt_column], data_args.dataset_name, "prompt_column")
    if len(train) == 0:
        raise ValueError(f"dataset {data_args.dataset_name!r} is empty: it needs at least one prompt")
    eval_name = data_args.eval_dataset_name or data_args.dataset_name
    if data_args.eval_dataset_name is None and Path(data_args.dataset_name).is_file():
        raise ValueError(
            "eval_dataset_name: required when dataset_name is a single file (it has no test split); "
            "give a file of held-out prompts"
        )
    evaluation = load_table(eval_name, data_args.dataset_test_split, data_args.dataset_config)
    require_columns(evaluation, [data_args.prompt_column], eval_name, "prompt_column")
    if len(evaluation) == 0:
        raise ValueError(f"evaluation prompts {eval_name!r}: empty; give at least one held-out prompt")
    return train, evaluation


def load_prompts(data_args, tokenizers=()):
    """(training prompts, evaluation prompts), unique, for methods that need prompts only (the RL baselines)."""
    if data_args.dataset_builder:
        from .tasks import BUILDERS

        kwargs = {"name": data_args.dataset_name} if data_args.dataset_name else {}
        if data_args.dataset_config:
            kwargs["config"] = data_args.dataset_config
        rows, eval_prompts, _ = BUILDERS[data_args.dataset_builder](tokenizers=tokenizers, **kwargs)
        return list(dict.fromkeys(rows["prompt"])), eval_prompts
    train, evaluation = load_prompt_tables(data_args)
    return list(dict.fromkeys(train[data_args.prompt_column])), list(dict.fromkeys(evaluation[data_args.prompt_column]))


def offtopic_rows(prompts, responses, per_prompt: int, seed: int, indices: list | None = None):
    """Pair every prompt with `per_prompt` responses drawn (seeded) from other prompts' rows.

    `indices`, when given (a list), receives the row each new response was taken from."""
    rng = np.random.default_rng(seed)
    unique = list(dict.fromkeys(prompts))
    if len(unique) < 2:
        raise ValueError("offtopic_responses_per_prompt: needs at least 2 distinct prompts in the data")
    new_prompts, new_responses = [], []
    for prompt in unique:
        for _ in range(per_prompt):
            i = int(rng.integers(len(prompts)))
            while prompts[i] == prompt:  # another prompt's response
                i = int(rng.integers(len(prompts)))
            new_prompts.append(prompt)
            new_responses.append(responses[i])
            if indices is not None:
                indices.append(i)
    return new_prompts, new_responses


def check_sampling_styles(args, data_args) -> None:
    if data_args.sampling_system_prompts and args.template != "chat":
        raise ValueError(
            f"sampling_system_prompts: only the chat template has a system turn (template is {args.template!r}); "
            "remove sampling_system_prompts or use template: chat"
        )


def sample_base_responses(run_dir, prompts, model_args, args, data_args, progress=True):
    """k responses per prompt from the base model, unconditioned, in resumable chunks.

    Rows come back sample-major (every prompt's sample 0, then sample 1, ...). The samples of one
    prompt drawn under the same system turn with different budgets (`sampling_max_completion_lengths`)
    share one draw: each budget keeps that draw's first tokens, so such rows differ by length only.
    Returns prompts, responses, generation stats and, per row, whether the sampler's budget cut the
    answer (`cut_by_budget`: the row keeps its whole draw and the draw ran to the largest budget without
    ending; a shorter cut of a longer draw is a short answer by design and is not counted).
    """
    from .generation import generate_batched
    from .models import load_causal_lm, load_tokenizer
    from .score_tags import add_score_tags

    k = data_args.num_responses_per_prompt
    styles = data_args.sampling_system_prompts or [args.system_prompt]
    lengths = data_args.sampling_max_completion_lengths or [args.max_completion_length]
    # sample j = turn + S * (budget + N * replicate): system turn j mod S, budget (j // S) mod N;
    # one draw per (turn, replicate) serves every budget
    draws: dict[tuple[int, int], list[int]] = {}
    for j in range(k):
        draws.setdefault((j % len(styles), j // (len(styles) * len(lengths))), []).append(j)
    # the system turn and budgets are part of each work item, so chunks drawn with other settings are never reused
    items = [{"prompt": p, "samples": samples, "seed": args.seed + n,
              "system_prompt": styles[samples[0] % len(styles)],
              "budgets": [lengths[(j // len(styles)) % len(lengths)] for j in samples]}
             for n, (p, samples) in enumerate((p, samples) for samples in draws.values() for p in prompts)]
    state = {}

    def work(chunk):
        if "model" not in state:
            state["tokenizer"] = load_tokenizer(model_args.model_name_or_path, trust_remote_code=args.trust_remote_code)
            state["model"] = load_causal_lm(
                model_args.model_name_or_path,
                dtype=model_args.dtype,
                load_in_8bit=model_args.load_in_8bit,
                load_in_4bit=model_args.load_in_4bit,
                trust_remote_code=args.trust_remote_code,
            )
        rows = []
        for budgets in dict.fromkeys(tuple(c["budgets"]) for c in chunk):  # one generate call per budget set
            group = [c for c in chunk if tuple(c["budgets"]) == budgets]
            texts = [add_score_tags(c["prompt"], None, args.template, state["tokenizer"], c["system_prompt"]) for c in group]
            hit: list[bool] = []
            out = generate_batched(
                state["model"], state["tokenizer"], texts,
                max_new_tokens=max(budgets), temperature=args.temperature, top_p=args.top_p,
                batch_size=args.generation_batch_size, seed=group[0]["seed"], template=args.template,
                progress=progress, desc="sampling base responses", stats=state.setdefault("stats", {}),
                cuts=list(budgets), hit_budget=hit,
            )
            for c, responses, h in zip(group, out, hit):
                rows += [{"prompt": c["prompt"], "sample": j, "system_prompt": c["system_prompt"], "max_new_tokens": b,
                          "response": r, "cut_by_budget": bool(h and b == max(budgets))}
                         for j, b, r in zip(c["samples"], budgets, responses)]
        return rows

    from .chunks import run_chunked

    rows = run_chunked(data_dir(run_dir) / "samples", items, args.online_chunk_size, work, "sample chunks", progress)
    position = {p: n for n, p in enumerate(prompts)}
    rows.sort(key=lambda r: (r["sample"], position[r["prompt"]]))
    # chunks written before the flag existed count as not cut
    return ([r["prompt"] for r in rows], [r["response"] for r in rows], state.get("stats", {}),
            [r.get("cut_by_budget", False) for r in rows])


def length_filter(prompts, responses, tokenizer, data_args):
    """Indices kept and counts dropped by the token-length limits."""
    p_len = [len(x) for x in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    r_len = [len(x) for x in tokenizer(list(responses), add_special_tokens=False)["input_ids"]]
    dropped = {"empty_response": 0, "response_too_short": 0, "response_too_long": 0, "prompt_too_long": 0}
    keep = []
    for i, (pl, rl) in enumerate(zip(p_len, r_len)):
        if not responses[i].strip():  # e.g. a sampled answer cut by its budget before any sentence ended
            dropped["empty_response"] += 1
        elif rl < data_args.min_response_tokens:
            dropped["response_too_short"] += 1
        elif data_args.max_response_tokens is not None and rl > data_args.max_response_tokens:
            dropped["response_too_long"] += 1
        elif data_args.max_prompt_tokens is not None and pl > data_args.max_prompt_tokens:
            dropped["prompt_too_long"] += 1
        else:
            keep.append(i)
    return keep, dropped


def prepare(run_dir, model_args, data_args, args, progress: bool = True) -> dict:
    """Run the prepare stage; returns its statistics (also written to data/prepare_stats.json)."""
    import datasets

    from reward_models import check_reward_names, load_rewards, reward_display_name

    from .models import load_tokenizer

    start = time.time()
    check_reward_names(args.rewards or [], args.reward_models)
    check_sampling_styles(args, data_args)
    names = [reward_display_name(r) for r in args.rewards]
    timings = {}
    scorers = None
    if data_args.dataset_builder:
        from .tasks import BUILDERS

        tokenizer = load_tokenizer(model_args.model_name_or_path, trust_remote_code=args.trust_remote_code)
        scorers = load_rewards(args.rewards, args.reward_models, batch_size=args.reward_batch_size)
        tokenizers = [tokenizer] + [s.tokenizer for s in scorers if getattr(s, "tokenizer", None) is not None]
        builder = BUILDERS[data_args.dataset_builder]
        kwargs = {"name": data_args.dataset_name} if data_args.dataset_name else {}
        if data_args.dataset_config:
            kwargs["config"] = data_args.dataset_config
        rows, eval_prompts, counts = builder(tokenizers=tokenizers, **kwargs)
        if not rows["prompt"]:
            raise ValueError(f"dataset_builder {data_args.dataset_builder}: no training rows left ({counts})")
        prompts, responses, systems = rows["prompt"], rows["response"], rows["source"]
        cut = [False] * len(prompts)
        source, sample_stats, input_rows = f"{data_args.dataset_builder} builder: {counts}", {}, counts["train_rows"]
    else:
        train, evaluation = load_prompt_tables(data_args)
        eval_prompts = list(dict.fromkeys(evaluation[data_args.prompt_column]))
        input_rows = len(train)
        prompts = list(train[data_args.prompt_column])
        if data_args.response_column in train.column_names:
            responses = list(train[data_args.response_column])
            source, sample_stats = "dataset", {}
            cut = [False] * len(prompts)
        else:
            unique = list(dict.fromkeys(prompts))
            t0 = time.time()
            prompts, responses, sample_stats, cut = sample_base_responses(run_dir, unique, model_args, args, data_args, progress)
            timings["sample_seconds"] = round(time.time() - t0, 1)
            source = f"sampled from {model_args.model_name_or_path} ({data_args.num_responses_per_prompt} per prompt)"
        tokenizer = load_tokenizer(model_args.model_name_or_path, trust_remote_code=args.trust_remote_code)
        # where each row came from: the dataset, or the j-th sample of its prompt
        systems = ["dataset"] * len(prompts) if source == "dataset" else [f"sample_{i // len(unique)}" for i in range(len(prompts))]
        if data_args.offtopic_responses_per_prompt:
            taken: list[int] = []
            extra = offtopic_rows(prompts, responses, data_args.offtopic_responses_per_prompt, args.seed, taken)
            prompts, responses, cut = prompts + extra[0], responses + extra[1], cut + [cut[i] for i in taken]
            systems = systems + ["offtopic"] * len(extra[0])
            source += f", plus {data_args.offtopic_responses_per_prompt} off-topic response(s) per prompt"

    keep, dropped = length_filter(prompts, responses, tokenizer, data_args)
    prompts, responses, systems = [prompts[i] for i in keep], [responses[i] for i in keep], [systems[i] for i in keep]
    cut = [cut[i] for i in keep]
    if data_args.max_train_samples is not None and len(prompts) > data_args.max_train_samples:
        dropped["over_max_train_samples"] = len(prompts) - data_args.max_train_samples
        n = data_args.max_train_samples
        prompts, responses, systems, cut = prompts[:n], responses[:n], systems[:n], cut[:n]
    if not prompts:
        raise ValueError(f"no training rows left after the length filters (dropped: {dropped}); loosen them")
    from accelerate import PartialState

    dist = PartialState()
    if not dist.is_main_process:
        # Scoring and writing happen once, on the main process; the others wait and read the result.
        dist.wait_for_everyone()
        from .io import read_json

        return read_json(data_dir(run_dir) / "prepare_stats.json")
    for reason, count in dropped.items():
        if count:
            logger.warning("prepare: dropped %d rows (%s)", count, reason)

    t0 = time.time()
    scorers = scorers or load_rewards(args.rewards, args.reward_models, batch_size=args.reward_batch_size)
    raw = score_responses(scorers, prompts, responses, progress)
    timings["score_seconds"] = round(time.time() - t0, 1)
    stats = RewardStats.fit(names, raw)
    normalized = stats.normalize(names, raw)
    low, high = score_range(normalized, args.score_range_quantile)

    out = data_dir(run_dir)
    atomic_save_dataset(
        datasets.Dataset.from_dict(
            {"prompt": prompts, "response": responses, "scores": raw.tolist(), "normalized_scores": normalized.tolist(),
             "source": systems, "cut_by_budget": cut}
        ),
        out / "train",
    )
    atomic_save_dataset(datasets.Dataset.from_dict({"prompt": eval_prompts}), out / "eval")
    reward_stats = {"rewards": names, **stats.to_dict(), "score_low": low, "score_high": high,
                    "score_range_quantile": args.score_range_quantile, "num_rows": len(prompts)}
    write_json(out / "reward_stats.json", reward_stats)

    correlation = pearson_matrix(raw) if len(names) > 1 and len(prompts) > 2 else None

    summary = {
        "source": source,
        "input_rows": input_rows,
        "rows": len(prompts),
        "dropped": dropped,
        "eval_prompts": len(eval_prompts),
        "rewards": names,
        "raw_mean": dict(zip(names, raw.mean(0).tolist())),
        "raw_std": dict(zip(names, raw.std(0).tolist())),
        "pearson": correlation,
        "raw_mean_by_source": {
            src: dict(zip(names, raw[[i for i, x in enumerate(systems) if x == src]].mean(0).tolist()))
            for src in dict.fromkeys(systems)
        } if 1 < len(set(systems)) <= 16 else None,
        "generation": sample_stats,
        "cut_by_budget": sum(cut),
        "timings": {**timings, "total_seconds": round(time.time() - start, 1)},
    }
    write_json(out / "prepare_stats.json", summary)
    RunState(run_dir).mark("prepare", rows=len(prompts), seconds=summary["timings"]["total_seconds"])
    dist.wait_for_everyone()
    return summary


def load_prepared(run_dir):
    """(train dataset, eval dataset, reward_stats dict) written by `prepare`."""
    import datasets

    from .io import read_json

    out = data_dir(run_dir)
    if not (out / "reward_stats.json").exists():
        raise FileNotFoundError(f"{out} has no reward_stats.json: run `ric prepare` first")
    return datasets.load_from_disk(str(out / "train")), datasets.load_from_disk(str(out / "eval")), read_json(out / "reward_stats.json")
