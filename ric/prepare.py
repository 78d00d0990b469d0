"""`ric prepare`: score the training data with every reward and normalise (paper stage 1).

Input rows hold a prompt and a response (or prompts only: then k responses per prompt are first
sampled from the base model, batched, in resumable chunks). Rows outside the length limits are
dropped and counted. Each reward is normalised to mean 0 / std 1 over the training set; the
statistics go to `data/reward_stats.json` beside the Arrow dataset `data/train`, since training,
generation and online scoring reuse them. Held-out prompts go to `data/eval`.

Writes under RUN_DIR/data: train/ (Arrow: prompt, response, scores, normalized_scores, source,
cut_by_budget), eval/ (Arrow: prompt), reward_stats.json, prepare_stats.json (counts, drops,
correlations), samples/ (chunked base-model samples, when sampling), scores/ (chunked raw scores).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .data import builder_kwargs, load_prompt_tables, nonblank_prompts
from .pareto import pearson_matrix
from .run_info import RewardStats, score_range
from .rundir import RunFileError, atomic_save_dataset, is_main_process, read_json, wait_for_everyone, write_json
from .scoring import score_chunked

logger = logging.getLogger(__name__)


def data_dir(run_dir) -> Path:
    return Path(run_dir) / "data"


@dataclass
class Rows:
    """The training rows of the prepare stage, column by column."""

    prompts: list[str]
    responses: list[str]
    sources: list[str]  # where each row came from: "dataset", "sample_j", "offtopic", a builder's column
    cut_by_budget: list[bool]
    eval_prompts: list[str] = field(default_factory=list)
    description: str = ""
    input_rows: int = 0
    generation: dict = field(default_factory=dict)

    def select(self, index) -> Rows:
        index = list(index)
        pick = lambda values: [values[i] for i in index]  # noqa: E731
        return replace(
            self,
            prompts=pick(self.prompts),
            responses=pick(self.responses),
            sources=pick(self.sources),
            cut_by_budget=pick(self.cut_by_budget),
        )


def offtopic_rows(prompts, responses, per_prompt: int, seed: int) -> tuple[list[str], list[str], list[int]]:
    """Pair every prompt with `per_prompt` responses drawn (seeded) from other prompts' rows.

    Returns the new prompts, their responses, and the row each response was taken from."""
    rng = np.random.default_rng(seed)
    unique = list(dict.fromkeys(prompts))
    if len(unique) < 2:
        raise ValueError("offtopic_responses_per_prompt: needs at least 2 distinct prompts in the data")
    new_prompts, new_responses, taken = [], [], []
    for prompt in unique:
        for _ in range(per_prompt):
            i = int(rng.integers(len(prompts)))
            while prompts[i] == prompt:  # another prompt's response
                i = int(rng.integers(len(prompts)))
            new_prompts.append(prompt)
            new_responses.append(responses[i])
            taken.append(i)
    return new_prompts, new_responses, taken


def check_sampling_styles(args, data_args) -> None:
    if data_args.sampling_system_prompts and args.template != "chat":
        raise ValueError(
            f"sampling_system_prompts: only the chat template has a system turn (template is {args.template!r}); "
            "remove sampling_system_prompts or use template: chat"
        )


def sampling_plan(prompts, args, data_args) -> list[dict]:
    """The work items of base-model sampling: one draw per (prompt, system turn, replicate).

    Sample j of a prompt is drawn under system turn j mod S with budget (j // S) mod N; the samples
    of one (turn, replicate) share one draw cut at each of their budgets. The turn and budgets are
    part of each item, so chunks drawn with other settings are never reused."""
    k = data_args.num_responses_per_prompt
    styles = data_args.sampling_system_prompts or [args.system_prompt]
    lengths = data_args.sampling_max_completion_lengths or [args.max_completion_length]
    draws: dict[tuple[int, int], list[int]] = {}
    for j in range(k):
        draws.setdefault((j % len(styles), j // (len(styles) * len(lengths))), []).append(j)
    pairs = [(p, samples) for samples in draws.values() for p in prompts]
    return [
        {
            "prompt": p,
            "samples": samples,
            "seed": args.seed + n,
            "system_prompt": styles[samples[0] % len(styles)],
            "budgets": [lengths[(j // len(styles)) % len(lengths)] for j in samples],
        }
        for n, (p, samples) in enumerate(pairs)
    ]


def sample_base_responses(run_dir, prompts, model_args, args, data_args, progress=True) -> Rows:
    """k responses per prompt from the base model, unconditioned, in resumable chunks.

    Rows come back sample-major (every prompt's sample 0, then sample 1, ...). The samples of one
    prompt drawn under the same system turn with different budgets (`sampling_max_completion_lengths`)
    share one draw: each budget keeps that draw's first tokens, so such rows differ by length only.
    `cut_by_budget` marks a row that keeps its whole draw when that draw ran to the largest budget
    without ending (a shorter cut of a longer draw is a short answer by design and is not counted).
    """
    from .chunks import run_chunked
    from .generation import GenerationTally, generate_batched
    from .models import load_causal_lm, load_tokenizer, model_load_kwargs
    from .score_tags import add_score_tags

    policy, tally = {}, GenerationTally()

    def work(chunk):
        if "model" not in policy:
            policy["tokenizer"] = load_tokenizer(
                model_args.model_name_or_path, trust_remote_code=args.trust_remote_code
            )
            policy["model"] = load_causal_lm(
                model_args.model_name_or_path, **model_load_kwargs(model_args, args.trust_remote_code)
            )
        rows = []
        for budgets in dict.fromkeys(tuple(c["budgets"]) for c in chunk):  # one generate call per budget set
            group = [c for c in chunk if tuple(c["budgets"]) == budgets]
            texts = [
                add_score_tags(c["prompt"], None, args.template, policy["tokenizer"], c["system_prompt"])
                for c in group
            ]
            out = tally.add(
                generate_batched(
                    policy["model"],
                    policy["tokenizer"],
                    texts,
                    max_new_tokens=max(budgets),
                    temperature=args.temperature,
                    top_p=args.top_p,
                    batch_size=args.sampling_batch_size,
                    seed=group[0]["seed"],
                    template=args.template,
                    progress=progress,
                    desc="sampling base responses",
                    cuts=list(budgets),
                    trim_truncated=args.trim_truncated,
                )
            )
            for c, responses, hit in zip(group, out.cut_texts, out.hit_budget):
                rows += [
                    {
                        "prompt": c["prompt"],
                        "sample": j,
                        "system_prompt": c["system_prompt"],
                        "max_new_tokens": b,
                        "response": r,
                        "cut_by_budget": bool(hit and b == max(budgets)),
                    }
                    for j, b, r in zip(c["samples"], budgets, responses)
                ]
        return rows

    items = sampling_plan(prompts, args, data_args)
    rows = run_chunked(
        data_dir(run_dir) / "samples", items, args.generation_chunk_size, work, "sample chunks", progress
    )
    position = {p: n for n, p in enumerate(prompts)}
    rows.sort(key=lambda r: (r["sample"], position[r["prompt"]]))
    return Rows(
        prompts=[r["prompt"] for r in rows],
        responses=[r["response"] for r in rows],
        sources=[f"sample_{r['sample']}" for r in rows],
        cut_by_budget=[r.get("cut_by_budget", False) for r in rows],  # chunks older than the flag: not cut
        generation=tally.to_dict(),
    )


def collect_rows(run_dir, model_args, data_args, args, tokenizers, progress=True) -> Rows:
    """The unscored training rows and the evaluation prompts: a task builder's, the dataset's, or sampled."""
    if data_args.dataset_builder:
        from .tasks import BUILDERS

        built, eval_prompts, counts = BUILDERS[data_args.dataset_builder](
            tokenizers=tokenizers, **builder_kwargs(data_args)
        )
        if not built["prompt"]:
            raise ValueError(f"dataset_builder {data_args.dataset_builder}: no training rows left ({counts})")
        n = len(built["prompt"])
        return Rows(
            built["prompt"],
            built["response"],
            built["source"],
            [False] * n,
            eval_prompts,
            f"{data_args.dataset_builder} builder: {counts}",
            counts["train_rows"],
        )
    train, eval_prompts = load_prompt_tables(data_args)
    prompts = list(train[data_args.prompt_column])
    if data_args.response_column in train.column_names:
        n = len(prompts)
        rows = Rows(prompts, list(train[data_args.response_column]), ["dataset"] * n, [False] * n)
        rows.description = "dataset"
    else:
        unique = list(dict.fromkeys(nonblank_prompts(prompts, data_args.dataset_name, data_args.prompt_column)))
        rows = sample_base_responses(run_dir, unique, model_args, args, data_args, progress)
        rows.description = (
            f"sampled from {model_args.model_name_or_path} ({data_args.num_responses_per_prompt} per prompt)"
        )
    if data_args.offtopic_responses_per_prompt:
        extra, extra_responses, taken = offtopic_rows(
            rows.prompts, rows.responses, data_args.offtopic_responses_per_prompt, args.seed
        )
        rows.prompts, rows.responses = rows.prompts + extra, rows.responses + extra_responses
        rows.cut_by_budget = rows.cut_by_budget + [rows.cut_by_budget[i] for i in taken]
        rows.sources = rows.sources + ["offtopic"] * len(extra)
        rows.description += f", plus {data_args.offtopic_responses_per_prompt} off-topic response(s) per prompt"
    rows.eval_prompts, rows.input_rows = eval_prompts, len(train)
    return rows


def filter_rows(rows: Rows, tokenizer, data_args) -> tuple[Rows, dict]:
    """The rows inside the length limits (and at most max_train_samples of them), and the drop counts."""
    p_len = [len(x) for x in tokenizer(list(rows.prompts), add_special_tokens=False)["input_ids"]]
    r_len = [len(x) for x in tokenizer(list(rows.responses), add_special_tokens=False)["input_ids"]]
    dropped = {
        "blank_prompt": 0,
        "empty_response": 0,
        "response_too_short": 0,
        "response_too_long": 0,
        "prompt_too_long": 0,
    }
    keep = []
    for i, (pl, rl) in enumerate(zip(p_len, r_len)):
        if not isinstance(rows.prompts[i], str) or not rows.prompts[i].strip():
            dropped["blank_prompt"] += 1
        elif not isinstance(rows.responses[i], str) or not rows.responses[i].strip():
            dropped["empty_response"] += 1  # e.g. a sampled answer cut by its budget before any sentence ended
        elif rl < data_args.min_response_tokens:
            dropped["response_too_short"] += 1
        elif data_args.max_response_tokens is not None and rl > data_args.max_response_tokens:
            dropped["response_too_long"] += 1
        elif data_args.max_prompt_tokens is not None and pl > data_args.max_prompt_tokens:
            dropped["prompt_too_long"] += 1
        else:
            keep.append(i)
    if data_args.max_train_samples is not None and len(keep) > data_args.max_train_samples:
        dropped["over_max_train_samples"] = len(keep) - data_args.max_train_samples
        keep = keep[: data_args.max_train_samples]
    if not keep:
        raise ValueError(f"no training rows left after the length filters (dropped: {dropped}); loosen them")
    for reason, count in dropped.items():
        if count:
            logger.warning("prepare: dropped %d rows (%s)", count, reason)
    return rows.select(keep), dropped


def write_prepared(run_dir, rows: Rows, raw: np.ndarray, names, args) -> dict:
    """Normalise, write data/train, data/eval and reward_stats.json; returns reward_stats."""
    import datasets

    stats = RewardStats.fit(names, raw)
    normalized = stats.normalize(names, raw)
    low, high = score_range(
        normalized, args.score_range, args.score_range_quantile, args.score_range_seed, args.score_range_samples
    )
    out = data_dir(run_dir)
    atomic_save_dataset(
        datasets.Dataset.from_dict(
            {
                "prompt": rows.prompts,
                "response": rows.responses,
                "scores": raw.tolist(),
                "normalized_scores": normalized.tolist(),
                "source": rows.sources,
                "cut_by_budget": rows.cut_by_budget,
            }
        ),
        out / "train",
    )
    atomic_save_dataset(datasets.Dataset.from_dict({"prompt": rows.eval_prompts}), out / "eval")
    reward_stats = {
        "rewards": names,
        **stats.to_dict(),
        "score_low": low,
        "score_high": high,
        "score_range": {
            "kind": args.score_range,
            "quantile": args.score_range_quantile,
            "seed": args.score_range_seed,
            "samples": args.score_range_samples,
        },
        "num_rows": len(rows.prompts),
    }
    write_json(out / "reward_stats.json", reward_stats)
    return reward_stats


def prepare_summary(rows: Rows, raw: np.ndarray, names, dropped: dict) -> dict:
    sources = rows.sources
    return {
        "source": rows.description,
        "input_rows": rows.input_rows,
        "rows": len(rows.prompts),
        "dropped": dropped,
        "eval_prompts": len(rows.eval_prompts),
        "rewards": names,
        "raw_mean": dict(zip(names, raw.mean(0).tolist())),
        "raw_std": dict(zip(names, raw.std(0).tolist())),
        "pearson": pearson_matrix(raw) if len(names) > 1 and len(rows.prompts) > 2 else None,
        "raw_mean_by_source": {
            src: dict(zip(names, raw[[i for i, x in enumerate(sources) if x == src]].mean(0).tolist()))
            for src in dict.fromkeys(sources)
        }
        if 1 < len(set(sources)) <= 16
        else None,
        "generation": rows.generation,
        "cut_by_budget": sum(rows.cut_by_budget),
    }


def prepare(run_dir, model_args, data_args, args, meter=None, progress: bool = True) -> dict:
    """Run the prepare stage; returns its statistics (also written to data/prepare_stats.json)."""
    import contextlib

    from reward_models import check_reward_names, load_rewards, reward_display_name, textnorm_records

    from .models import load_tokenizer

    check_reward_names(args.rewards or [], args.reward_models)
    check_sampling_styles(args, data_args)
    names = [reward_display_name(r) for r in args.rewards]
    part = meter.part if meter is not None else (lambda name: contextlib.nullcontext())
    scorers, tokenizers = [], []
    if data_args.dataset_builder:  # the paper's tasks filter by the policy's and every reward tokenizer's length
        scorers = load_rewards(args.rewards, args.reward_models, batch_size=args.reward_batch_size)
        tokenizers = [load_tokenizer(model_args.model_name_or_path, trust_remote_code=args.trust_remote_code)]
        tokenizers += [s.tokenizer for s in scorers if getattr(s, "tokenizer", None) is not None]
    with part("sample"):
        rows = collect_rows(run_dir, model_args, data_args, args, tokenizers, progress)  # data checked first
    tokenizer = (
        tokenizers[0]
        if tokenizers
        else load_tokenizer(model_args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    )
    rows, dropped = filter_rows(rows, tokenizer, data_args)

    def load_scorers():  # only if some chunk is left to score; kept for their records
        if not scorers:
            scorers.extend(load_rewards(args.rewards, args.reward_models, batch_size=args.reward_batch_size))
        return scorers

    with part("score"):
        raw = score_chunked(
            data_dir(run_dir) / "scores",
            rows.prompts,
            rows.responses,
            names,
            load_scorers,
            args.generation_chunk_size,
            progress,
            "scoring training rows",
        )
    summary = prepare_summary(rows, raw, names, dropped)
    normalised = textnorm_records(scorers)
    if normalised:
        summary["textnorm"] = {name: record["counts"] for name, record in normalised.items()}
    if is_main_process():
        if normalised:
            write_json(data_dir(run_dir) / "textnorm.json", normalised)
        write_prepared(run_dir, rows, raw, names, args)
        write_json(data_dir(run_dir) / "prepare_stats.json", summary)
    wait_for_everyone()
    if meter is not None:
        meter.generated_tokens = rows.generation.get("generated_tokens", 0)
    return summary


def load_prepared(run_dir):
    """(train dataset, eval dataset, reward_stats dict) written by `prepare`."""
    import datasets

    out = data_dir(run_dir)
    if not (out / "reward_stats.json").exists():
        raise FileNotFoundError(f"{out} has no reward_stats.json: run `ric prepare` first")
    stats = read_json(out / "reward_stats.json")
    if not isinstance(stats, dict) or "rewards" not in stats:
        raise RunFileError(f"{out / 'reward_stats.json'}: no 'rewards' field; run `ric prepare` again")
    return datasets.load_from_disk(str(out / "train")), datasets.load_from_disk(str(out / "eval")), stats
