"""Supervised fine-tuning on the preferred responses: where the paper's MORLHF and Rewarded Soups start.

`method: sft` recipes (`recipes/hh_rlhf/sft.yaml`, `recipes/summary/sft.yaml`) train a LoRA adapter
on the chosen responses of the task (HH-RLHF: the `chosen` conversation; Reddit summary: the summary
the labeller chose) with TRL's `SFTTrainer`, merge it into the base weights and save the merged model
under RUN_DIR/merged. The RL recipes point `model_name_or_path` at that folder. Stages: `prepare`
(rows -> data/), `train` (LoRA SFT, then the merged model), `evaluate` (the SFT model as one point
beside the base model). An SFT run answers without a preference: `ric generate RUN_DIR "PROMPT"`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..generation import Condition, PolicyGenerator
from ..run_info import build_run_info, load_run_info
from ..rundir import atomic_dir, atomic_save_dataset, is_main_process, wait_for_everyone, write_json

logger = logging.getLogger(__name__)


def rows_of_run(run_dir) -> dict:
    """{prompt, response, cut_by_budget}: the rows a RiC run's prepare stage wrote (RUN/data/train), with a
    row cut by the sampling budget flagged only where that run trains such rows without the end token
    (`eos_after_budget_cut: false` in its recipe.yaml), so that SFT applies RiC's rule to them."""
    import datasets
    import yaml

    from ..recipe import RecipeError

    run_dir = Path(run_dir)
    if not (run_dir / "data" / "train").exists():
        raise RecipeError(
            f"rows_from_run: {run_dir} has no prepared rows (data/train); run `ric prepare` on its recipe first"
        )
    train = datasets.load_from_disk(str(run_dir / "data" / "train"))
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text()) if (run_dir / "recipe.yaml").exists() else {}
    eos_after_cut = (recipe or {}).get("eos_after_budget_cut", True)
    cut = list(train["cut_by_budget"]) if "cut_by_budget" in train.column_names else [False] * len(train)
    return {
        "prompt": list(train["prompt"]),
        "response": list(train["response"]),
        "cut_by_budget": [bool(c) and not eos_after_cut for c in cut],
    }


def sft_rows(data_args, tokenizers=()) -> tuple[dict, list[str]]:
    """(rows {prompt, response[, cut_by_budget]}, evaluation prompts): a RiC run's prepared rows
    (`rows_from_run`), a builder's chosen rows, or the data's columns."""
    from ..data import builder_kwargs, load_prompt_tables, require_columns

    if data_args.rows_from_run:
        _, eval_prompts = load_prompt_tables(data_args)
        rows = rows_of_run(data_args.rows_from_run)
    elif data_args.dataset_builder:
        from ..tasks import BUILDERS

        built, eval_prompts, _ = BUILDERS[data_args.dataset_builder](
            tokenizers=tokenizers, **builder_kwargs(data_args)
        )
        keep = [i for i, source in enumerate(built["source"]) if source == "chosen"]
        rows = {"prompt": [built["prompt"][i] for i in keep], "response": [built["response"][i] for i in keep]}
    else:
        train, eval_prompts = load_prompt_tables(data_args)
        require_columns(train, [data_args.response_column], data_args.dataset_name, "response_column")
        rows = {"prompt": list(train[data_args.prompt_column]), "response": list(train[data_args.response_column])}
    keep = [i for i, (p, r) in enumerate(zip(rows["prompt"], rows["response"])) if str(p).strip() and str(r).strip()]
    keep = keep[: data_args.max_train_samples]
    if not keep:
        raise ValueError(f"dataset {data_args.dataset_name!r}: no (prompt, response) row with text to train on")
    return {k: [v[i] for i in keep] for k, v in rows.items()}, eval_prompts


def prepare_sft(run_dir, model_args, data_args, args, meter=None) -> dict:
    """The SFT rows -> data/train, evaluation prompts -> data/eval, and the run's ric_run.json."""
    import datasets

    from reward_models import check_reward_names, load_rewards, reward_display_name

    from ..models import load_tokenizer

    check_reward_names(args.rewards or [], args.reward_models)
    tokenizers = []
    if data_args.dataset_builder:  # the paper's tasks filter by the policy's and every reward tokenizer's length
        tokenizers = [load_tokenizer(model_args.model_name_or_path, trust_remote_code=args.trust_remote_code)]
        scorers = load_rewards(args.rewards, args.reward_models, batch_size=args.reward_batch_size)
        tokenizers += [s.tokenizer for s in scorers if getattr(s, "tokenizer", None) is not None]
    rows, eval_prompts = sft_rows(data_args, tokenizers)
    run_dir = Path(run_dir)
    if is_main_process():
        atomic_save_dataset(datasets.Dataset.from_dict(rows), run_dir / "data" / "train")
        atomic_save_dataset(datasets.Dataset.from_dict({"prompt": eval_prompts}), run_dir / "data" / "eval")
        build_run_info(
            "sft",
            model_args.model_name_or_path,
            args,
            [reward_display_name(r) for r in args.rewards],
            model_args=model_args,
        ).save(run_dir)
    wait_for_everyone()
    summary = {"rows": len(rows["prompt"]), "eval_prompts": len(eval_prompts)}
    if data_args.rows_from_run:
        from ..rundir import charge_compute

        # the sampling that made these rows is this baseline's cost too, as it is RiC's
        charge_compute(run_dir, "reused:prepare", data_args.rows_from_run, stages=["prepare"])
        summary["rows_from_run"] = data_args.rows_from_run
        summary["cut_without_end_token"] = sum(rows["cut_by_budget"])
    return summary


def train_sft(run_dir, model_args, data_args, args, meter=None) -> dict:
    """LoRA SFT on the prepared rows (no score tags), then the adapter merged into the base -> merged/."""
    import dataclasses

    import datasets
    from transformers.trainer_utils import get_last_checkpoint
    from trl import get_peft_config

    from ..models import cast_adapter, labelled_positions_only, load_base_for_training, load_tokenizer
    from ..report import plot_loss
    from ..ric_trainer import RowsSFTTrainer, build_sft_dataset

    run_dir = Path(run_dir)
    if not (run_dir / "data" / "train").exists():
        raise FileNotFoundError(f"{run_dir} has no prepared rows (data/train): run `ric prepare` first")
    rows = datasets.load_from_disk(str(run_dir / "data" / "train"))
    tokenizer = load_tokenizer(
        model_args.model_name_or_path, padding_side="right", trust_remote_code=args.trust_remote_code
    )
    # no score tags; rows flagged cut_by_budget train without the end token
    dataset = build_sft_dataset(
        rows, args.template, tokenizer, score_column=None, system_prompt=args.system_prompt, eos_after_budget_cut=False
    )
    checkpoints = run_dir / "checkpoints"
    sft_args = dataclasses.replace(args, output_dir=str(checkpoints), report_to=args.report_to or "none")
    trainer = RowsSFTTrainer(
        model=load_base_for_training(model_args, args.trust_remote_code),
        args=sft_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    cast_adapter(trainer.model, model_args.adapter_dtype)
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.exists() else None
    start = time.time()
    with labelled_positions_only():
        result = trainer.train(resume_from_checkpoint=last)
    stats = {
        "global_step": trainer.state.global_step,
        "steps": trainer.state.global_step,
        "train_seconds": round(time.time() - start, 1),
        "train_loss": result.training_loss,
        "rows": len(dataset),
        "resumed_from": last,
        "log_history": trainer.state.log_history,
    }
    if is_main_process():
        info, _ = load_run_info(run_dir)
        info.adapter = "adapter"
        with atomic_dir(run_dir / "adapter") as tmp:
            trainer.model.save_pretrained(str(tmp), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp))
            info.save(tmp)
        info.save(run_dir)
        merge_adapter(run_dir, model_args, args.trust_remote_code)
        write_json(run_dir / "train_stats.json", stats)
        plot_loss(
            stats["log_history"], run_dir / "train_loss.png", f"SFT on the chosen responses ({len(dataset)} rows)"
        )
    wait_for_everyone()
    if meter is not None:
        meter.steps = stats["global_step"]
    return stats


def merge_adapter(run_dir: Path, model_args, trust_remote_code: bool = False) -> Path:
    """The base model (unquantized, in the recipe's dtype) with the SFT adapter folded in -> RUN_DIR/merged."""
    from peft import PeftModel

    from ..models import load_causal_lm, load_tokenizer

    base = load_causal_lm(
        model_args.model_name_or_path,
        dtype=model_args.dtype,
        device="cpu",
        trust_remote_code=trust_remote_code,
        revision=model_args.model_revision,
    )
    merged = PeftModel.from_pretrained(base, str(run_dir / "adapter")).merge_and_unload()
    target = run_dir / "merged"
    with atomic_dir(target) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        load_tokenizer(str(run_dir / "adapter"), trust_remote_code=trust_remote_code).save_pretrained(str(tmp))
    logger.info("merged SFT model written to %s (point an RL recipe's model_name_or_path there)", target)
    return target


class SFTGenerator(PolicyGenerator):
    """The SFT model: one policy whatever the preference (the adapter on the base model)."""

    @classmethod
    def from_run(cls, run_dir, device: str | None = None, merge: bool = True):
        from ..generation import load_policy, resolve_adapter

        info, folder = load_run_info(run_dir)
        return cls(*load_policy(info, resolve_adapter(folder, info), device, merge=merge), info)

    def prepare_points(self) -> None:
        from ..generation import merge_for_inference

        merge_for_inference(self.model)  # after the base model's answers, as a RiC evaluation does

    def condition(self, preference=None, targets=None, method: str | None = None) -> Condition:
        if targets is not None or method is not None:
            raise ValueError("an SFT run writes no score tags: it takes neither targets nor a mapping method")
        return Condition(key="sft", preference=tuple(preference) if preference is not None else None, policy="sft")


def evaluate(run, eval_dir=None, overrides=None, progress: bool = True) -> dict:
    """The SFT model as one point (its preference: equal weights, for the schema) beside the base model."""
    from ..generation import GENERATION_FLAGS, PolicyFront
    from ..report import FrontPoint, evaluate_run

    info, _ = load_run_info(run.run_dir)
    n = len(info.rewards)
    points = [FrontPoint(preference=[round(1 / n, 4)] * n, policy="sft")]
    return evaluate_run(
        run,
        info,
        points,
        lambda settings: PolicyFront(
            lambda: SFTGenerator.from_run(run.run_dir, merge=False),
            points,
            settings,
            identity={"adapter": str((run.run_dir / "adapter").resolve())},
        ),
        flags=GENERATION_FLAGS,
        eval_dir=eval_dir,
        overrides=overrides,
        progress=progress,
        title="SFT",
        label="SFT (one model)",
    )
