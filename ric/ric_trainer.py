"""Reward-conditioned LoRA SFT (paper stage 2): `RiCTrainer`, TRL's `SFTTrainer` on prepared rows.

Each training row becomes prompt = the prompt with its normalised scores written as tags,
completion = the response; TRL's prompt/completion path puts the loss on the completion only and
appends EOS. `train` is the offline stage of `ric train`: the run directory then holds `adapter/`
(LoRA weights, tokenizer, `ric_run.json`), `ric_run.json` in the root, `train_stats.json` and
`train_loss.png`. Training resumes from the last checkpoint under `checkpoints/` when rerun after
an interruption. The online stage (`ric/online.py`) continues the same adapter with the same trainer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from trl import SFTTrainer

from .models import cast_adapter, labelled_positions_only
from .report import plot_loss
from .run_info import RunInfo, build_run_info
from .rundir import atomic_dir, is_main_process, wait_for_everyone, write_json
from .score_tags import add_score_tags

logger = logging.getLogger(__name__)


def completion_text(response: str, template: str) -> str:
    """The completion as the template expects it: after "...Assistant:" or "### Response:" a space."""
    if template in ("assistant", "summary") and not response.startswith((" ", "\n")):
        return " " + response
    return response


def build_sft_dataset(
    rows,
    template: str,
    tokenizer,
    score_column: str | None = "normalized_scores",
    system_prompt: str | None = None,
    eos_after_budget_cut: bool = True,
):
    """prompt/completion rows: the prompt carries the row's own (normalised) scores as tags (none with
    `score_column=None`: the SFT baseline's rows).

    With `eos_after_budget_cut=False` and rows flagged `cut_by_budget`, the rows come tokenized the way
    `SFTTrainer` tokenizes prompt/completion text (`input_ids`, `completion_mask`, the end-of-sequence
    token after each completion), except that a cut row gets no end-of-sequence token.
    """
    import datasets
    from trl.data_utils import common_prefix_length

    scores = rows[score_column] if score_column else [None] * len(rows["prompt"])
    prompts = [add_score_tags(p, s, template, tokenizer, system_prompt) for p, s in zip(rows["prompt"], scores)]
    completions = [completion_text(r, template) for r in rows["response"]]
    columns = getattr(rows, "column_names", None) or list(rows)
    cut = list(rows["cut_by_budget"]) if "cut_by_budget" in columns else [False] * len(prompts)
    if eos_after_budget_cut or not any(cut):
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
    return datasets.Dataset.from_dict(
        {"prompt": prompts, "completion": completions, "input_ids": input_ids, "completion_mask": masks}
    )


class PromptGroupSampler:
    """Row indices, the rows of one prompt next to each other: every epoch the prompts are shuffled (seeded
    with seed + epoch) and each yields its rows in a shuffled order, so a batch holds whole groups."""

    def __init__(self, groups, seed: int = 0):
        self.groups: dict = {}
        for index, key in enumerate(groups):
            self.groups.setdefault(key, []).append(index)
        self.seed, self.epoch, self.size = seed, 0, len(groups)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        import numpy as np

        rng = np.random.default_rng(self.seed + self.epoch)
        keys = list(self.groups)
        for k in rng.permutation(len(keys)):
            members = self.groups[keys[k]]
            yield from (members[i] for i in rng.permutation(len(members)))


def truncate_rows(dataset, limit: int, mode: str = "keep_start"):
    """Tokenized rows cut to `limit` tokens as SFTTrainer's own truncation cuts them (`input_ids` and `labels`,
    the first tokens for `keep_start`, the last for `keep_end`); a row left without a label to learn is dropped,
    as there."""
    if max(len(ids) for ids in dataset["input_ids"]) <= limit:
        return dataset
    cut = slice(None, limit) if mode == "keep_start" else slice(-limit, None)
    dataset = dataset.map(lambda row: {"input_ids": row["input_ids"][cut], "labels": row["labels"][cut]})
    return dataset.filter(lambda row: any(label != -100 for label in row["labels"]))


class RowsSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose recipe's max_length holds under `padding_free` too.

    Padding-free (TRL's `padding_free`): the collator lays a batch's rows end to end as one sequence whose
    position ids restart at every row; transformers reads the restarts as a block-diagonal causal mask, so no
    token attends across rows, and the batch keeps its rows (the sampler is untouched). TRL refuses max_length
    there (it only truncates when packing): the rows are truncated here instead, as it would."""

    def __init__(self, model, args, train_dataset, **kwargs):
        limit = args.max_length if args.padding_free and not args.packing else None
        super().__init__(
            model=model,
            args=dataclasses.replace(args, max_length=None) if limit else args,
            train_dataset=train_dataset,
            **kwargs,
        )
        if limit:
            self.args.max_length = limit
            self.train_dataset = truncate_rows(self.train_dataset, limit, args.truncation_mode)


class RiCTrainer(RowsSFTTrainer):
    """TRL's `SFTTrainer` on prepared RiC rows (prompt, response, normalized_scores[, cut_by_budget]).

    The rows are turned into prompt/completion pairs with every row's own scores as tags in its prompt
    (`build_sft_dataset`); everything else is SFTTrainer's: completion-only loss, LoRA from
    `peft_config`, checkpoints and resume.

        trainer = RiCTrainer(model, args=RiCConfig(...), train_rows=rows, processing_class=tokenizer,
                             peft_config=LoraConfig(...))
        trainer.train()
    """

    def __init__(
        self,
        model,
        args,
        train_rows,
        processing_class,
        peft_config=None,
        eos_after_budget_cut=None,
        adapter_dtype: str = "float32",
        **kwargs,
    ):
        eos = args.eos_after_budget_cut if eos_after_budget_cut is None else eos_after_budget_cut
        # which rows answer the same prompt (group_rows_by_prompt batches them together)
        self.row_groups = list(train_rows["prompt"])
        # the tagged prompt/completion rows, kept as built (SFTTrainer tokenizes its own copy)
        self.sft_rows = build_sft_dataset(
            train_rows, args.template, processing_class, system_prompt=args.system_prompt, eos_after_budget_cut=eos
        )
        super().__init__(
            model=model,
            args=args,
            train_dataset=self.sft_rows,
            processing_class=processing_class,
            peft_config=peft_config,
            **kwargs,
        )
        # SFTTrainer casts the adapter of a quantized base to bf16; the optimizer does not exist yet
        cast_adapter(self.model, adapter_dtype)

    def _get_train_sampler(self, train_dataset=None):
        if getattr(self.args, "group_rows_by_prompt", False):
            size = len(train_dataset if train_dataset is not None else self.train_dataset)
            if size != len(self.row_groups):
                raise RuntimeError(f"group_rows_by_prompt: {size} training rows but {len(self.row_groups)} prompts")
            return PromptGroupSampler(self.row_groups, seed=self.args.seed)
        return super()._get_train_sampler(train_dataset)


def train_adapter(
    model,
    tokenizer,
    rows,
    args,
    model_args,
    output_dir: Path,
    overrides: dict | None = None,
    eos_after_budget_cut: bool | None = None,
    callbacks=None,
    trainer_cls=None,
    peft_config=None,
    **trainer_kwargs,
):
    """One RiCTrainer run (resuming from the last checkpoint in `output_dir`); returns (trainer, stats).

    A base model gets a new LoRA adapter from the recipe's LoRA settings (or `peft_config`); a PEFT model
    (an adapter loaded trainable) is trained further as it is. `trainer_cls` (a RiCTrainer subclass, PRT's)
    and `trainer_kwargs` change the trainer."""
    from transformers.trainer_utils import get_last_checkpoint
    from trl import get_peft_config

    # The RiC config is an SFTConfig: the trainer takes it as is, pointed at this stage's folder.
    sft_args = dataclasses.replace(
        args, output_dir=str(output_dir), report_to=args.report_to or "none", **(overrides or {})
    )
    if hasattr(model, "peft_config"):
        peft_config = None
    elif peft_config is None and model_args.use_peft:
        peft_config = get_peft_config(model_args)
    trainer = (trainer_cls or RiCTrainer)(
        model,
        args=sft_args,
        train_rows=rows,
        processing_class=tokenizer,
        peft_config=peft_config,
        eos_after_budget_cut=eos_after_budget_cut,
        adapter_dtype=model_args.adapter_dtype,
        callbacks=callbacks,
        **trainer_kwargs,
    )
    last = get_last_checkpoint(str(output_dir)) if output_dir.exists() else None
    if last:
        logger.warning("resuming training from %s", last)
    start = time.time()
    with labelled_positions_only():
        result = trainer.train(resume_from_checkpoint=last)
    stats = {
        "train_seconds": round(time.time() - start, 1),
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "metrics": result.metrics,
        "rows": len(trainer.sft_rows),
        "resumed_from": last,
        "log_history": trainer.state.log_history,
    }
    return trainer, stats


def make_run_info(model_args, args, reward_stats: dict, adapter: str | None, method: str = "ric") -> RunInfo:
    """The record of a run trained on prepared RiC data (RiC, and PRT which reads the same tags)."""
    return build_run_info(
        method,
        model_args.model_name_or_path,
        args,
        reward_stats["rewards"],
        model_args=model_args,
        reward_stats=reward_stats,
        preference_method=args.preference_method,
        adapter=adapter,
    )


def save_adapter(model, tokenizer, info: RunInfo, target: Path, extra: dict | None = None) -> None:
    """Write adapter + tokenizer + ric_run.json into a temporary folder, then swap it into place."""
    with atomic_dir(target) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        info.save(tmp)
        if extra:
            write_json(tmp / "train_stats.json", extra)


def train(
    run_dir,
    model_args,
    data_args,
    args,
    meter=None,
    progress: bool = True,
    method: str = "ric",
    prepare_model=None,
    **trainer_kwargs,
) -> dict:
    """Offline training on the prepared data (RiC's; PRT's with `method="prt"`, its model hook
    `prepare_model(model) -> (model, peft_config)` and its trainer in `trainer_kwargs`); returns the
    training statistics. The result goes to RUN_DIR/adapter (or RUN_DIR/reward for a fully trained model)."""
    from reward_models import reward_display_name

    from .models import load_base_for_training, load_tokenizer
    from .prepare import load_prepared

    run_dir = Path(run_dir)
    train_rows, _, reward_stats = load_prepared(run_dir)
    names = list(reward_stats["rewards"])
    if [reward_display_name(r) for r in args.rewards] != names:
        raise ValueError(
            f"rewards: the recipe names {args.rewards} but {run_dir}/data was prepared for {names}; "
            "use the recipe that prepared this run directory, or a new output_dir"
        )
    tokenizer = load_tokenizer(
        model_args.model_name_or_path, padding_side="right", trust_remote_code=args.trust_remote_code
    )
    model = load_base_for_training(model_args, args.trust_remote_code)
    peft_config = None
    if prepare_model is not None:
        model, peft_config = prepare_model(model)
    trainer, stats = train_adapter(
        model,
        tokenizer,
        train_rows,
        args,
        model_args,
        run_dir / "checkpoints" / "offline",
        peft_config=peft_config,
        **trainer_kwargs,
    )
    folder = "adapter" if model_args.use_peft else "reward"
    info = make_run_info(model_args, args, reward_stats, adapter=folder, method=method)
    first = trainer.sft_rows[0]
    stats.update(stage="offline", example_prompt=first["prompt"], example_completion=first["completion"])
    if is_main_process():
        save_adapter(trainer.model, tokenizer, info, run_dir / folder, extra=stats)
        info.save(run_dir)
        write_json(run_dir / "train_stats.json", stats)
        title = "RiC offline SFT" if method == "ric" else f"{method.upper()} training"
        plot_loss(stats["log_history"], run_dir / "train_loss.png", f"{title} ({stats['rows']} rows)")
    wait_for_everyone()
    if meter is not None:
        meter.steps = stats["global_step"]
    return stats
