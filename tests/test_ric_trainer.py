"""Stage 2 on a tiny random model: the tagged SFT rows, RiCTrainer steps, the saved adapter."""

import json

import pytest
import torch

from ric.prepare import load_prepared
from ric.ric_trainer import build_sft_dataset, completion_text, make_run_info, save_adapter, train_adapter


def test_sft_rows_carry_their_own_scores_as_tags(prepared, smol_tokenizer):
    *_, args, _, _ = prepared
    train, _, _ = load_prepared(args.output_dir)
    dataset = build_sft_dataset(train, "chat", smol_tokenizer)
    first = dataset[0]
    s1, s2 = train[0]["normalized_scores"]
    assert f"<rm1_score> {round(s1, 1):.1f} <rm2_score> {round(s2, 1):.1f}<|im_end|>" in first["prompt"].replace(
        "-0.0", "0.0"
    )
    assert first["prompt"].endswith("<|im_start|>assistant\n")
    assert first["completion"] == train[0]["response"]
    assert completion_text("Hi", "assistant") == " Hi" and completion_text(" Hi", "assistant") == " Hi"


def test_training_changes_lora_and_reloads_to_identical_logits(prepared, smol_tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ric.models import load_causal_lm

    model_args, data_args, args, _, _ = prepared
    train, _, stats = load_prepared(args.output_dir)
    model = load_causal_lm(model_args.model_name_or_path, device="cpu")
    trainer, result = train_adapter(model, smol_tokenizer, train, args, model_args, tmp_path / "ckpt")
    assert (
        result["rows"] == len(train)
        and trainer.sft_rows["prompt"] == build_sft_dataset(train, "chat", smol_tokenizer)["prompt"]
    )
    losses = [e["loss"] for e in result["log_history"] if "loss" in e]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    lora_b = {n: p for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b.values()), "LoRA B starts at zero and must have moved"

    info = make_run_info(model_args, args, stats, adapter="adapter")
    save_adapter(trainer.model, smol_tokenizer, info, tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "ric_run.json").read_text())
    assert saved["rewards"] == ["positivity", "conciseness"] and saved["template"] == "chat"
    assert saved["base_model"] == model_args.model_name_or_path
    assert len(saved["score_low"]) == len(saved["score_high"]) == 2

    batch = smol_tokenizer(["<|im_start|>user\nhello <rm1_score> 1.0<|im_end|>\n"], return_tensors="pt")
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**batch).logits
        base = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)
        reloaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
        got = reloaded(**batch).logits
        plain = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)(**batch).logits
    assert torch.allclose(expected, got, atol=1e-5)
    assert not torch.allclose(plain, got, atol=1e-4), "the adapter must change the model's output"

    # Merged for inference: the same logits; with the adapter off, the base model's again.
    from ric.generation import merge_for_inference

    assert merge_for_inference(reloaded)
    with torch.no_grad():
        merged = reloaded(**batch).logits
        with reloaded.disable_adapter():
            off = reloaded(**batch).logits
        remerged = reloaded(**batch).logits
    assert torch.allclose(merged, got, atol=1e-4)
    assert torch.allclose(off, plain, atol=1e-4)
    assert torch.allclose(remerged, got, atol=1e-4)
    assert not merge_for_inference(AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)), (
        "no adapter, nothing to merge"
    )


def test_cut_rows_train_without_the_end_token_and_the_rest_as_trl_tokenizes_them(
    tiny_model_dir, smol_tokenizer, tmp_path
):
    import datasets
    from trl import SFTConfig, SFTTrainer

    from ric.models import load_causal_lm

    rows = datasets.Dataset.from_dict(
        {
            "prompt": ["Do you like rain?", "Is tea good?", "Name a fruit."],
            "response": ["I love rain. It smells fresh.", "Tea is good", "An apple."],
            "normalized_scores": [[0.5, -1.0], [1.2, 0.3], [-0.4, 0.0]],
            "cut_by_budget": [False, True, False],
        }
    )
    plain = build_sft_dataset(rows, "chat", smol_tokenizer, system_prompt="")
    assert plain.column_names == ["prompt", "completion"], "the default keeps TRL's own text path"
    tokenized = build_sft_dataset(rows, "chat", smol_tokenizer, system_prompt="", eos_after_budget_cut=False)
    assert tokenized["prompt"] == plain["prompt"]

    def prepared(dataset):
        args = SFTConfig(
            output_dir=str(tmp_path / "sft"),
            report_to="none",
            max_length=256,
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
        )
        trainer = SFTTrainer(
            model=load_causal_lm(str(tiny_model_dir), device="cpu"),
            args=args,
            train_dataset=dataset,
            processing_class=smol_tokenizer,
        )
        return trainer.train_dataset

    ours, trl = prepared(tokenized), prepared(plain)
    eos = smol_tokenizer.eos_token_id
    for n, cut in enumerate(rows["cut_by_budget"]):
        if cut:
            # the same sequence and loss mask without the final end-of-sequence token
            assert trl[n]["input_ids"][-1] == eos and ours[n]["input_ids"] == trl[n]["input_ids"][:-1]
            assert ours[n]["labels"] == trl[n]["labels"][:-1]
        else:
            assert ours[n]["input_ids"] == trl[n]["input_ids"] and ours[n]["labels"] == trl[n]["labels"]
            assert ours[n]["input_ids"][-1] == eos


@pytest.mark.parametrize("adapter_dtype", ["float32", "bfloat16"])
def test_adapter_dtype_under_8bit_loading(prepared, smol_tokenizer, tmp_path, adapter_dtype):
    """bitsandbytes loads the tiny base in 8-bit on the CPU; TRL would train its LoRA in bf16, where
    AdamW updates at lr 1e-5 round away. The adapter keeps `adapter_dtype` through training and saving."""
    import dataclasses

    from safetensors.torch import load_file

    from ric.models import load_causal_lm

    model_args, _, args, _, _ = prepared
    model_args = dataclasses.replace(model_args, load_in_8bit=True, adapter_dtype=adapter_dtype)
    train, _, stats = load_prepared(args.output_dir)
    model = load_causal_lm(model_args.model_name_or_path, load_in_8bit=True, device="cpu")
    assert getattr(model, "is_loaded_in_8bit", False)
    overrides = dict(learning_rate=1e-5, lr_scheduler_type="constant", warmup_steps=0, max_steps=10, weight_decay=0.0)
    dtype = getattr(torch, adapter_dtype)
    seen = {}

    from transformers import TrainerCallback

    class Before(TrainerCallback):  # LoRA-A as the first optimizer step finds it
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["before"] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}

    trainer, _ = train_adapter(
        model, smol_tokenizer, train, args, model_args, tmp_path / "ckpt", overrides, callbacks=[Before()]
    )
    after = {n: p.detach() for n, p in trainer.model.named_parameters() if "lora_A" in n}
    assert after and all(p.dtype == dtype for p in after.values())
    changed = sum((after[n] != seen["before"][n]).sum().item() for n in after)
    total = sum(p.numel() for p in after.values())
    print(f"changed LoRA-A entries after 10 steps at lr 1e-5 ({adapter_dtype}): {changed}/{total}")
    if adapter_dtype == "float32":
        assert changed / total > 0.99, "every LoRA-A entry moves in fp32"
    else:
        assert changed / total < 0.5, "in bf16 most lr-1e-5 updates round away"
    info = make_run_info(model_args, args, stats, adapter="adapter")
    save_adapter(trainer.model, smol_tokenizer, info, tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert {v.dtype for v in saved.values()} == {dtype}


def test_group_rows_by_prompt_batches_a_prompts_rows_together(prepared, smol_tokenizer, tmp_path):
    import dataclasses

    import datasets

    from ric.models import load_causal_lm
    from ric.ric_trainer import PromptGroupSampler, RiCTrainer

    _, _, args, _, _ = prepared
    one, _, _ = load_prepared(args.output_dir)
    longer = one.map(lambda r: {"response": r["response"] + " And more."})
    train = datasets.concatenate_datasets([one, longer]).shuffle(seed=0)  # two rows per prompt, scattered
    groups = list(train["prompt"])
    sampler = PromptGroupSampler(groups, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(len(groups)))
    seen = [groups[i] for i in order]
    runs = [p for k, p in enumerate(seen) if k == 0 or seen[k - 1] != p]
    assert len(runs) == len(set(groups)), "each prompt's rows come one after another"
    sampler.set_epoch(1)
    assert list(sampler) != order and sorted(sampler) == sorted(order), "a new order every epoch"

    grouped = dataclasses.replace(args, output_dir=str(tmp_path), group_rows_by_prompt=True, report_to="none")
    model = load_causal_lm(prepared[0].model_name_or_path, device="cpu")
    trainer = RiCTrainer(model, args=grouped, train_rows=train, processing_class=smol_tokenizer)
    assert isinstance(trainer._get_train_sampler(), PromptGroupSampler)
    batch = next(iter(trainer.get_train_dataloader()))
    texts = smol_tokenizer.batch_decode(batch["input_ids"])
    firsts = [next(p for p in set(groups) if p in t) for t in texts]
    runs = [p for k, p in enumerate(firsts) if k == 0 or firsts[k - 1] != p]
    assert len(runs) == len(set(runs)) and len(runs) < len(firsts), "a batch holds whole groups, not scattered rows"
    plain = RiCTrainer(
        model,
        args=dataclasses.replace(grouped, group_rows_by_prompt=False),
        train_rows=train,
        processing_class=smol_tokenizer,
    )
    assert not isinstance(plain._get_train_sampler(), PromptGroupSampler)


def test_padding_free_keeps_the_batch_and_its_loss_and_no_row_sees_another(prepared, smol_tokenizer, tmp_path):
    import dataclasses

    import datasets

    from ric.models import load_causal_lm
    from ric.ric_trainer import RiCTrainer

    _, _, args, _, _ = prepared
    one, _, _ = load_prepared(args.output_dir)
    longer = one.map(lambda r: {"response": r["response"] + " And a good deal more, said at length."})
    train = datasets.concatenate_datasets([one, longer]).shuffle(seed=0)  # rows of uneven length
    grouped = dataclasses.replace(args, output_dir=str(tmp_path), group_rows_by_prompt=True, report_to="none")
    model = load_causal_lm(prepared[0].model_name_or_path, device="cpu").eval()
    padded = RiCTrainer(model, args=grouped, train_rows=train, processing_class=smol_tokenizer)
    free = RiCTrainer(
        model, args=dataclasses.replace(grouped, padding_free=True), train_rows=train, processing_class=smol_tokenizer
    )
    assert free.args.max_length == grouped.max_length, "the recipe's max_length stays the run's"
    a, b = next(iter(padded.get_train_dataloader())), next(iter(free.get_train_dataloader()))
    assert b["input_ids"].shape[0] == 1 and "attention_mask" not in b
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(a["input_ids"], a["attention_mask"])]
    assert b["input_ids"][0].tolist() == [t for r in rows for t in r], "the same rows, in the same order, end to end"
    assert (a["attention_mask"] == 0).any(), "the padded batch did pad"
    with torch.no_grad():
        loss_padded = padded.compute_loss(padded.model, dict(a))
        loss_free = free.compute_loss(free.model, dict(b))
        assert torch.allclose(loss_padded, loss_free, rtol=1e-5), (loss_padded, loss_free)
        # no attention across rows: the second row's logits laid end to end equal its logits alone
        logits = free.model(input_ids=b["input_ids"], position_ids=b["position_ids"]).logits[0]
        across = free.model(input_ids=b["input_ids"]).logits[0]  # one sequence: rows attend to earlier rows
        start, length = len(rows[0]), len(rows[1])
        alone = free.model(input_ids=torch.tensor([rows[1]])).logits[0]
        assert torch.allclose(logits[start : start + length], alone, atol=1e-4)
        assert not torch.allclose(across[start : start + length], alone, atol=1e-4), "the check can tell"

    # a recipe's max_length still holds: the rows are cut as SFTTrainer cuts them on the padded path
    short = dataclasses.replace(grouped, max_length=int(max(map(len, padded.train_dataset["input_ids"]))) - 4)
    cut_padded = RiCTrainer(model, args=short, train_rows=train, processing_class=smol_tokenizer).train_dataset
    cut_free = RiCTrainer(
        model, args=dataclasses.replace(short, padding_free=True), train_rows=train, processing_class=smol_tokenizer
    ).train_dataset
    assert len(cut_padded) > 0 and max(map(len, cut_free["input_ids"])) == short.max_length
    assert cut_free["input_ids"] == cut_padded["input_ids"] and cut_free["labels"] == cut_padded["labels"]
    tiny = dataclasses.replace(grouped, max_length=8, padding_free=True)  # the prompt alone fills it: no row is left
    assert len(RiCTrainer(model, args=tiny, train_rows=train, processing_class=smol_tokenizer).train_dataset) == 0


def test_the_lm_head_scores_only_labelled_positions_on_a_cpu_with_the_same_loss_and_gradients(
    prepared, smol_tokenizer, tmp_path, monkeypatch
):
    import dataclasses

    import trl.trainer.utils as trl_utils

    from ric.models import labelled_positions_only, load_causal_lm
    from ric.ric_trainer import RiCTrainer

    _, _, args, _, _ = prepared
    train, _, _ = load_prepared(args.output_dir)
    model = load_causal_lm(prepared[0].model_name_or_path, device="cpu")
    trainer = RiCTrainer(
        model,
        args=dataclasses.replace(args, output_dir=str(tmp_path), report_to="none"),
        train_rows=train,
        processing_class=smol_tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert 0 < labelled < batch["labels"][:, 1:].numel(), "prompt positions carry no label"

    projected = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def counting(hidden, *rest):  # the real projection, counting the positions it is given
        projected.append(hidden.shape[0])
        return apply(hidden, *rest)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting)
    decide = trl_utils._use_triton

    def loss_and_grads():
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch))
        loss.backward()
        grads = [p.grad.clone() for p in trainer.model.parameters() if p.requires_grad]
        return loss.detach(), grads

    every_loss, every_grads = loss_and_grads()
    with labelled_positions_only():
        only_loss, only_grads = loss_and_grads()
    assert trl_utils._use_triton is decide, "TRL's own decision is back after the block"
    assert projected == [batch["labels"][:, 1:].numel(), labelled], projected
    assert torch.allclose(every_loss, only_loss, rtol=1e-5), (every_loss, only_loss)
    assert len(only_grads) > 0
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(every_grads, only_grads))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_paper_recipes_precision_switch_on_an_8bit_base(tiny_model_dir, dtype):
    """The paper recipes load the 8-bit base's other modules in bf16 (`dtype: bfloat16`); `dtype: float32` keeps
    them in fp32 as the paper's code had them. Every paper recipe names the switch."""
    from ric.models import load_causal_lm
    from tests.helpers import ROOT

    model = load_causal_lm(str(tiny_model_dir), load_in_8bit=True, device="cpu", dtype=dtype)
    int8 = {p.dtype for p in model.parameters() if p.dtype == torch.int8}
    others = {p.dtype for p in model.parameters() if p.dtype != torch.int8}
    assert int8 == {torch.int8} and others == {getattr(torch, dtype)}
    for recipe in sorted((ROOT / "recipes").glob("*/*.yaml")):
        text = recipe.read_text()
        if "load_in_8bit: true" in text:
            assert "dtype: float32 and bf16: false" in text, recipe
