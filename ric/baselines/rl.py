"""The RL baselines RiC is compared against, on TRL: one online RL policy (a LoRA adapter) per weight vector.

- MORLHF (`method: morlhf`): one policy per preference point w, optimising sum_i w_i r_i with the
  same reward registry as RiC (RUN_DIR/policies/w_<...>/adapter).
- Rewarded Soups (`method: soups`): one policy per reward (one-hot weights), mixed with the
  preference weights at generation time (`ric/baselines/soups.py`).

The RL trainer is TRL's GRPOTrainer (or RLOOTrainer): TRL 1.x has no PPOTrainer, see
`baselines/config.py`. Stages: `prepare` (the prompts -> data/train, data/eval, and ric_run.json
naming the policies), one `policy:<label>` stage per policy, `evaluate` (the shared report). The
policies are generated with through `MORLHFGenerator` / `SoupsGenerator`, which `ric generate`,
`ric evaluate` and `ric serve` use alike.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..generation import PolicyGenerator
from ..run_info import build_run_info, load_run_info
from ..rundir import (
    COMPUTE,
    atomic_dir,
    charge_compute,
    checkpoint_steps,
    is_main_process,
    wait_for_everyone,
    write_json,
)

logger = logging.getLogger(__name__)


def weights_label(weights) -> str:
    return "w_" + "_".join(f"{w:.2f}" for w in weights)


def adapter_name(label: str) -> str:
    return label.replace(".", "p")  # torch module names cannot hold dots


def policy_table(method: str, args, names) -> list[dict]:
    """Every policy of a baseline run: label, weights, adapter folder (relative to the run directory)."""
    labels = list(names) if method == "soups" else None
    table = []
    for k, weights in enumerate(args.policy_weights(len(names))):
        label = labels[k] if labels else weights_label(weights)
        table.append({"label": label, "weights": [float(w) for w in weights], "adapter": f"policies/{label}/adapter"})
    return table


def make_reward_functions(scorers, template: str, counter: dict):
    """TRL reward functions `f(completions, raw_prompt, **kwargs)` over registry scorers.

    The first one also counts generated tokens (from `completion_ids`) for the compute table.
    """
    from ..generation import clean_response

    functions = []
    for k, scorer in enumerate(scorers):

        def reward(completions, raw_prompt, completion_ids=None, _scorer=scorer, _count=(k == 0), **kwargs):
            if _count and completion_ids is not None:
                counter["generated_tokens"] = counter.get("generated_tokens", 0) + sum(len(c) for c in completion_ids)
            texts = [clean_response(c if isinstance(c, str) else c[-1]["content"], template) for c in completions]
            return _scorer(list(raw_prompt), texts)

        reward.__name__ = scorer.name
        functions.append(reward)
    return functions


def rl_dataset(prompts, template: str, tokenizer, system_prompt: str | None = None):
    import datasets

    from ..generation import format_prompts

    texts = format_prompts(prompts, template, tokenizer, system_prompt=system_prompt)
    return datasets.Dataset.from_dict({"prompt": texts, "raw_prompt": list(prompts)})


def rollout_config(args, weights, output_dir: Path, tokenizer):
    """The trainer's config for one policy: the weights, and the rollouts sampled with the `rollout_*` keys
    (the recipe's `temperature` / `top_p` stay the evaluation's), the end token suppressed as the first token
    unless `rollout_end_first`."""
    import dataclasses

    extra = dict(args.generation_kwargs or {})
    if not args.rollout_end_first and not args.use_vllm:
        extra["begin_suppress_tokens"] = [tokenizer.eos_token_id]
    # GRPOConfig derives generation_batch_size from steps_per_generation in __post_init__; passing
    # both back would be refused, so only the latter travels.
    return dataclasses.replace(
        args,
        output_dir=str(output_dir),
        reward_weights=list(weights),
        report_to=args.report_to or "none",
        generation_batch_size=None,
        steps_per_generation=args.steps_per_generation,
        temperature=args.rollout_temperature,
        top_p=args.rollout_top_p,
        top_k=args.rollout_top_k,
        generation_kwargs=extra or None,
    )


def train_rl_policy(model_args, args, scorers, weights, dataset, tokenizer, output_dir: Path) -> dict:
    """One RL run on sum_i w_i r_i; saves the LoRA adapter in `output_dir` and returns its statistics."""
    import dataclasses

    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOTrainer, RLOOConfig, RLOOTrainer, get_peft_config

    from ..models import cast_adapter, labelled_positions_only, load_base_for_training

    counter: dict = {}
    reward_funcs = make_reward_functions(scorers, args.template, counter)
    checkpoints = output_dir / "checkpoints"
    rl_args = rollout_config(args, weights, checkpoints, tokenizer)
    model = load_base_for_training(model_args, args.trust_remote_code)
    if args.rl_algorithm == "rloo":
        fields = {f.name for f in dataclasses.fields(RLOOConfig) if f.init}
        rl_args = RLOOConfig(**{k: v for k, v in dataclasses.asdict(rl_args).items() if k in fields})
        trainer_cls = RLOOTrainer
    else:
        trainer_cls = GRPOTrainer
    trainer = trainer_cls(
        model=model,
        reward_funcs=reward_funcs,
        args=rl_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    cast_adapter(trainer.model, model_args.adapter_dtype)  # GRPOTrainer casts a quantized base's adapter to bf16
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.exists() else None
    start = time.time()
    with labelled_positions_only():
        trainer.train(resume_from_checkpoint=last)
    stats = {
        "weights": list(weights),
        "train_seconds": round(time.time() - start, 1),
        "global_step": trainer.state.global_step,
        "generated_tokens": counter.get("generated_tokens", 0),
        "resumed_from": last,
        "reward_logs": [
            {k: v for k, v in e.items() if k.startswith("rewards/") or k in ("step", "reward", "kl")}
            for e in trainer.state.log_history
            if any(k.startswith("rewards/") for k in e)
        ],
    }
    if is_main_process():
        with atomic_dir(output_dir / "adapter") as tmp:
            trainer.model.save_pretrained(str(tmp), safe_serialization=True)
        write_json(output_dir / "stats.json", stats)
    wait_for_everyone()
    return stats


def prepare_prompts(run_dir, model_args, data_args, args, method: str, meter=None) -> dict:
    """The baselines' prepare stage: training and evaluation prompts -> data/, and ric_run.json."""
    import datasets

    from reward_models import check_reward_names, load_rewards, reward_display_name

    from ..data import load_prompts
    from ..models import load_tokenizer
    from ..rundir import atomic_save_dataset

    check_reward_names(args.rewards or [], args.reward_models)
    names = [reward_display_name(r) for r in args.rewards]
    tokenizers = [load_tokenizer(model_args.model_name_or_path, trust_remote_code=args.trust_remote_code)]
    if data_args.dataset_builder:  # the paper's tasks filter by every reward tokenizer's length
        scorers = load_rewards(args.rewards, args.reward_models, batch_size=args.reward_batch_size)
        tokenizers += [s.tokenizer for s in scorers if getattr(s, "tokenizer", None) is not None]
    prompts, eval_prompts = load_prompts(data_args, tokenizers)
    run_dir = Path(run_dir)
    summary = {"rows": len(prompts), "eval_prompts": len(eval_prompts)}
    start = run_of_model(model_args.model_name_or_path)
    if start is not None:  # the model this baseline starts from (an SFT run's merged/) cost compute too
        charge_compute(run_dir, "reused:start", start)
        summary["start"] = str(start)
    if is_main_process():
        atomic_save_dataset(datasets.Dataset.from_dict({"prompt": prompts}), run_dir / "data" / "train")
        atomic_save_dataset(datasets.Dataset.from_dict({"prompt": eval_prompts}), run_dir / "data" / "eval")
        build_run_info(
            method,
            model_args.model_name_or_path,
            args,
            names,
            model_args=model_args,
            policies=policy_table(method, args, names),
        ).save(run_dir)
    wait_for_everyone()
    return summary


def run_of_model(model_name_or_path: str) -> Path | None:
    """The ric run directory a local model folder was written by (RUN/merged of `method: sft`), when it has
    a compute record; None for a hub id or any other folder."""
    folder = Path(model_name_or_path)
    run = folder.parent
    if folder.is_dir() and (run / "ric_run.json").exists() and (run / COMPUTE).exists():
        return run
    return None


def train_policy(run_dir, model_args, data_args, args, policy: dict, meter=None) -> dict:
    """One policy stage: RL on its weight vector, the adapter saved under policies/<label>/."""
    import datasets

    from reward_models import load_rewards

    from ..models import load_tokenizer

    run_dir = Path(run_dir)
    if not (run_dir / "data" / "train").exists():
        raise FileNotFoundError(f"{run_dir} has no prepared prompts (data/train): run `ric prepare` first")
    tokenizer = load_tokenizer(
        model_args.model_name_or_path, padding_side="left", trust_remote_code=args.trust_remote_code
    )
    prompts = list(datasets.load_from_disk(str(run_dir / "data" / "train"))["prompt"])
    scorers = load_rewards(args.rewards, args.reward_models, batch_size=args.reward_batch_size)
    dataset = rl_dataset(prompts, args.template, tokenizer, args.system_prompt)
    stats = train_rl_policy(
        model_args, args, scorers, policy["weights"], dataset, tokenizer, run_dir / "policies" / policy["label"]
    )
    if meter is not None:
        meter.steps, meter.generated_tokens = stats["global_step"], stats["generated_tokens"]
    return {**stats, "steps": stats["global_step"]}


class BaselineGenerator(PolicyGenerator):
    """The base model with every trained policy of a baseline run loaded as a named LoRA adapter."""

    @classmethod
    def from_run(cls, run_dir, device: str | None = None, step: int | None = None):
        """Every policy's final adapter, or with `step` its trainer checkpoint of that step."""
        from peft import PeftModel

        from ..generation import load_policy

        info, folder = load_run_info(run_dir)
        adapters = policy_adapters(folder, info.policies or [], step)
        model, tokenizer = load_policy(info, None, device)
        first, *rest = info.policies
        model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=adapter_name(first["label"]))
        for policy, adapter in zip(rest, adapters[1:]):
            model.load_adapter(str(adapter), adapter_name=adapter_name(policy["label"]))
        model.eval()
        return cls(model, tokenizer, info)


def policy_adapters(folder: Path, policies: list[dict], step: int | None = None) -> list[Path]:
    """Each policy's adapter folder: its final adapter, or with `step` its trainer checkpoint of that step
    (policies/<label>/checkpoints/checkpoint-<step>, kept every `save_steps`). Missing ones are refused
    with what there is."""
    if not policies:
        raise FileNotFoundError(f"{folder}: no policies are trained yet; run `ric train` first")
    if step is None:
        paths = [folder / p["adapter"] for p in policies]
        missing = [p["label"] for p, path in zip(policies, paths) if not (path / "adapter_config.json").exists()]
        if missing:
            raise FileNotFoundError(f"{folder}: policies {missing} are not trained yet; run `ric train` first")
        return paths
    paths = [folder / "policies" / p["label"] / "checkpoints" / f"checkpoint-{step}" for p in policies]
    for policy, path in zip(policies, paths):
        if not (path / "adapter_config.json").exists():
            kept = checkpoint_steps(path.parent)
            raise FileNotFoundError(
                f"--step {step}: policy {policy['label']} has no checkpoint of that step (kept: {kept or 'none'}; "
                "the trainer keeps one every save_steps)"
            )
    return paths


def evaluate_baseline(
    run, generator_cls, eval_dir=None, overrides: dict | None = None, progress: bool = True, step: int | None = None
) -> dict:
    """Every point of a baseline's front (MORLHF: its policies; Soups: the preference grid) through the
    shared evaluation, answered by `generator_cls.from_run(run_dir)` (with `step`: the policies'
    checkpoints of that trainer step)."""
    from ..generation import GENERATION_FLAGS, PolicyFront
    from ..preference import preference_grid
    from ..report import FrontPoint, evaluate_run

    info, folder = load_run_info(run.run_dir)
    policy_adapters(folder, info.policies or [], step)  # refused before any model loads
    if run.method == "soups":
        grid = preference_grid(len(info.rewards), run.evaluation.eval_grid_divisions)
        points = [FrontPoint(preference=list(w)) for w in grid]
    else:
        points = [FrontPoint(preference=p["weights"], policy=p["label"]) for p in info.policies]
    return evaluate_run(
        run,
        info,
        points,
        lambda settings: PolicyFront(
            lambda: generator_cls.from_run(run.run_dir, step=step),
            points,
            settings,
            identity={"policies": info.policies} if step is None else {"policies": info.policies, "step": step},
        ),
        flags=GENERATION_FLAGS,
        eval_dir=eval_dir,
        overrides=overrides,
        progress=progress,
        label="MORLHF, one adapter per point" if run.method == "morlhf" else "Rewarded Soups, mixed adapters",
        extra=None if step is None else {"step": step},
    )
