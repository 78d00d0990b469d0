"""`ric train`: reward-conditioned LoRA SFT with TRL's `SFTTrainer` (PAPER.md stage 2).

Each training row becomes prompt = the prompt with its normalised scores written as tags,
completion = the response; TRL's prompt/completion path puts the loss on the completion only and
appends EOS. The run directory then holds `adapter/` (LoRA weights, tokenizer, `ric_run.json`),
`ric_run.json` in the root, `train_stats.json` and `train_loss.png`. Training resumes from the
last checkpoint under `checkpoints/` when rerun after an interruption.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

from .io import RunState, atomic_dir, write_json
from .run_info import RewardStats, RunInfo
from .score_tags import add_score_tags

logger = logging.getLogger(__name__)


def completion_text(response: str, template: str) -> str:
    """The completion as the template expects it: after "...Assistant:" or "### Response:" a space."""
    if template in ("assistant", "summary") and not response.startswith((" ", "\n")):
        return " " + response
    return response


def build_sft_dataset(rows, template: str, tokenizer, score_column: str = "normalized_scores", system_prompt: str | None = None,
                      end_cut_responses: bool = True):
    """prompt/completion rows: the prompt carries the row's own (normalised) scores as tags.

    With `end_cut_responses=False` and rows flagged `cut_by_budget`, the rows come tokenized the way
    `SFTTrainer` tokenizes prompt/completion text (`input_ids`, `completion_mask`, the end-of-sequence
    token after each completion), except that a cut row gets no end-of-sequence token.
    """
    import datasets
    from trl.data_utils import common_prefix_length

    prompts = [add_score_tags(p, s, template, tokenizer, system_prompt) for p, s in zip(rows["prompt"], rows[score_column])]
    completions = [completion_text(r, template) for r in rows["response"]]
    columns = getattr(rows, "column_names", None) or list(rows)
    cut = list(rows["cut_by_budget"]) if "cut_by_budget" in columns else [False] * len(prompts)
    if end_cut_responses or not any(cut):
        return datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})
    eos = tokenizer.eos_token
    input_ids, masks = [], []
    for prompt, completion, open_ended in zip(prompts, completions, cut):
        if not open_ended and not completion.endswith(eos):
            completion = completion + eos
        prompt_ids = tokenizer(text=prompt)["input_ids"]
        ids = tokenizer(text=prompt + completion)["input_ids"]
        start = common_prefix_length(prompt_ids, ids)  # where SFTTrainer starts the completion, too
        input_ids.append(ids)
        masks.append([0] * start + [1] * (len(ids) - start))
    return datasets.Dataset.from_dict({"prompt": prompts, "completion": completions, "input_ids": input_ids, "completion_mask": masks})


def model_load_kwargs(model_args, trust_remote_code: bool) -> dict:
    return dict(
        dtype=model_args.dtype,
        load_in_8bit=model_args.load_in_8bit,
        load_in_4bit=model_args.load_in_4bit,
        trust_remote_code=trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        revision=model_args.model_revision,
    )


def make_run_info(model_args, args, reward_stats: dict, adapter: str | None) -> RunInfo:
    kwargs = model_load_kwargs(model_args, args.trust_remote_code)
    return RunInfo(
        base_model=model_args.model_name_or_path,
        rewards=list(reward_stats["rewards"]),
        reward_models=args.reward_models,
        template=args.template,
        system_prompt=args.system_prompt,
        reward_stats=RewardStats(mean=reward_stats["mean"], std=reward_stats["std"]),
        score_low=list(reward_stats["score_low"]),
        score_high=list(reward_stats["score_high"]),
        preference_method=args.preference_method,
        generation=dict(
            max_new_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            batch_size=args.generation_batch_size,
        ),
        model_kwargs={k: v for k, v in kwargs.items() if v not in (None, False, "main")},
        adapter=adapter,
    )


def load_base_for_training(model_args, args):
    from accelerate import PartialState

    from .models import load_causal_lm

    quantized = model_args.load_in_8bit or model_args.load_in_4bit
    device = f"cuda:{PartialState().local_process_index}" if quantized else "cpu"  # the trainer places the rest
    return load_causal_lm(model_args.model_name_or_path, device=device, **model_load_kwargs(model_args, args.trust_remote_code))


def save_adapter(model, tokenizer, info: RunInfo, target: Path, extra: dict | None = None) -> None:
    """Write adapter + tokenizer + ric_run.json into a temporary folder, then swap it into place."""
    with atomic_dir(target) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        info.save(tmp)
        if extra:
            write_json(tmp / "train_stats.json", extra)


def plot_loss(log_history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    if not points:
        return
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot(*zip(*points), marker="o", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def run_sft(
    model,
    tokenizer,
    dataset,
    args,
    model_args,
    output_dir: Path,
    overrides: dict | None = None,
    peft_config=None,
):
    """One SFTTrainer run (resuming from the last checkpoint in `output_dir`); returns (trainer, stats)."""
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTTrainer, get_peft_config

    # The RiC config is an SFTConfig: the trainer takes it as is, pointed at this stage's folder.
    sft_args = dataclasses.replace(args, output_dir=str(output_dir), report_to=args.report_to or "none", **(overrides or {}))
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config if peft_config is not None else (get_peft_config(model_args) if not _is_peft(model) else None),
    )
    last = get_last_checkpoint(str(output_dir)) if output_dir.exists() else None
    if last:
        logger.warning("resuming training from %s", last)
    start = time.time()
    result = trainer.train(resume_from_checkpoint=last)
    stats = {
        "train_seconds": round(time.time() - start, 1),
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "metrics": result.metrics,
        "rows": len(dataset),
        "resumed_from": last,
        "log_history": trainer.state.log_history,
    }
    return trainer, stats


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def train(run_dir, model_args, data_args, args, progress: bool = True) -> dict:
    """Offline RiC training on the prepared data; returns the training statistics."""
    from .models import load_tokenizer
    from .prepare import load_prepared

    run_dir = Path(run_dir)
    train_rows, _, reward_stats = load_prepared(run_dir)
    names = [n for n in reward_stats["rewards"]]
    from reward_models import reward_display_name

    if [reward_display_name(r) for r in args.rewards] != names:
        raise ValueError(
            f"rewards: the recipe names {args.rewards} but {run_dir}/data was prepared for {names}; "
            "use the recipe that prepared this run directory, or a new output_dir"
        )
    tokenizer = load_tokenizer(model_args.model_name_or_path, padding_side="right", trust_remote_code=args.trust_remote_code)
    dataset = build_sft_dataset(train_rows, args.template, tokenizer, system_prompt=args.system_prompt,
                                end_cut_responses=args.end_cut_responses)
    model = load_base_for_training(model_args, args)
    trainer, stats = run_sft(model, tokenizer, dataset, args, model_args, run_dir / "checkpoints" / "offline")
    info = make_run_info(model_args, args, reward_stats, adapter="adapter")
    stats.update(stage="offline", example_prompt=dataset[0]["prompt"], example_completion=dataset[0]["completion"])
    if trainer.accelerator.is_main_process:
        save_adapter(trainer.model, tokenizer, info, run_dir / "adapter", extra=stats)
        info.save(run_dir)
        write_json(run_dir / "train_stats.json", stats)
        plot_loss(stats["log_history"], run_dir / "train_loss.png", f"RiC offline SFT ({len(dataset)} rows)")
        RunState(run_dir).mark("train", steps=stats["global_step"], seconds=stats["train_seconds"])
    trainer.accelerator.wait_for_everyone()
    return stats
