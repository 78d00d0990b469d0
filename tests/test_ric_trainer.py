"""Offline RiC training on a tiny random model: the SFT data, a few steps, the saved adapter."""

import json

import pytest
import torch

from ric.prepare import load_prepared, prepare
from ric.ric_trainer import build_sft_dataset, completion_text, make_run_info, save_adapter, train_adapter
from tests.helpers import parse_run_args


@pytest.fixture()
def prepared(tiny_recipe):
    (model_args, data_args, args, eval_args), _ = parse_run_args([], str(tiny_recipe))
    summary = prepare(args.output_dir, model_args, data_args, args, progress=False)
    return model_args, data_args, args, eval_args, summary


def test_prepare_normalises_and_saves_stats(prepared):
    model_args, data_args, args, _, summary = prepared
    train, evaluation, stats = load_prepared(args.output_dir)
    assert summary["rows"] == len(train) == 8 and len(evaluation) == 3
    normalized = torch.tensor(train["normalized_scores"])
    assert torch.allclose(normalized.mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(normalized.std(0, unbiased=False), torch.ones(2), atol=1e-6)
    assert stats["rewards"] == ["positivity", "conciseness"]
    raw = torch.tensor(train["scores"], dtype=torch.float64)
    assert stats["mean"]["positivity"] == pytest.approx(raw[:, 0].mean().item())
    assert stats["score_low"] == pytest.approx(normalized.min(0).values.tolist(), abs=1e-3)
    assert summary["pearson"] is not None


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


def test_sampling_system_prompts_shape_the_samples_not_the_training_prompts(tiny_recipe, tmp_path, smol_tokenizer):
    import yaml

    styles = ["Answer cheerfully.", "Answer gloomily."]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ["Do you like rain?", "Is tea good?", "Name a fruit."])
    )
    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe.update(dataset_name=str(prompts), num_responses_per_prompt=3, sampling_system_prompts=styles)
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    from ric.cli import main

    assert main(["prepare", str(tiny_recipe)]) == 0
    (model_args, data_args, args, _), _ = parse_run_args([], str(tiny_recipe))
    summary = json.loads((tmp_path / "run/data/prepare_stats.json").read_text())

    sampled = [
        json.loads(line)
        for f in sorted((tmp_path / "run/data/samples").glob("chunk_*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert len(sampled) == 9
    assert all(row["system_prompt"] == styles[row["sample"] % 2] for row in sampled)
    assert set(summary["raw_mean_by_source"]) == {"sample_0", "sample_1", "sample_2"}
    train, _, _ = load_prepared(args.output_dir)
    dataset = build_sft_dataset(train, "chat", smol_tokenizer)
    assert not any(style in p for p in dataset["prompt"] for style in styles)

    # the same run directory refuses other styles (its samples were drawn under these ones)
    recipe["sampling_system_prompts"] = ["Answer angrily."]
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    assert main(["prepare", str(tiny_recipe)]) == 2


def test_sampling_budgets_cross_the_system_turns(tiny_recipe, tmp_path, smol_tokenizer):
    import yaml

    styles = ["Answer cheerfully.", "Answer gloomily."]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": p}) + "\n" for p in ["Do you like rain?", "Is tea good?", "Name a fruit."])
    )
    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe.update(
        dataset_name=str(prompts),
        num_responses_per_prompt=4,
        sampling_system_prompts=styles,
        sampling_max_completion_lengths=[1, 12],
        min_response_tokens=1,
    )
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    from ric.cli import main

    assert main(["prepare", str(tiny_recipe)]) == 0
    sampled = [
        json.loads(line)
        for f in sorted((tmp_path / "run/data/samples").glob("chunk_*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    assert len(sampled) == 12
    # every turn meets every budget: (turn, budget) = (j mod 2, (j // 2) mod 2)
    assert {(row["sample"], row["system_prompt"], row["max_new_tokens"]) for row in sampled} == {
        (0, styles[0], 1),
        (1, styles[1], 1),
        (2, styles[0], 12),
        (3, styles[1], 12),
    }
    length = {
        b: [
            len(smol_tokenizer(r["response"], add_special_tokens=False)["input_ids"])
            for r in sampled
            if r["max_new_tokens"] == b
        ]
        for b in (1, 12)
    }
    # (a decoded token can re-encode as a few)
    assert max(length[1]) <= 3 and sum(length[12]) > 2 * sum(length[1])
    # one draw per (prompt, turn): the short answer is the long one's beginning
    by_key = {(r["prompt"], r["system_prompt"], r["max_new_tokens"]): r["response"] for r in sampled}
    pairs = [(by_key[(p, t, 1)], by_key[(p, t, 12)]) for p, t, b in by_key if b == 1]
    assert len(pairs) == 6 and all(long.startswith(short) for short, long in pairs)
    # a cut answer with no complete sentence is empty and dropped, counted as such
    train, _, _ = load_prepared(tmp_path / "run")
    empty = sum(not r["response"] for r in sampled)
    summary = json.loads((tmp_path / "run/data/prepare_stats.json").read_text())
    assert (
        summary["dropped"]["empty_response"] == empty
        and len(train) == 12 - empty - summary["dropped"]["response_too_short"]
    )
    # only a whole draw that ran to the largest budget counts as cut by it (the tiny random model never ends)
    assert all(r["cut_by_budget"] == (r["max_new_tokens"] == 12) for r in sampled)
    assert [r["cut_by_budget"] for r in train] == [r["source"] in ("sample_2", "sample_3") for r in train]
    assert summary["cut_by_budget"] == sum(train["cut_by_budget"]) > 0

    # the run directory refuses other budgets (its samples were drawn with these)
    recipe["sampling_max_completion_lengths"] = [1, 24]
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    assert main(["prepare", str(tiny_recipe)]) == 2


@pytest.mark.parametrize("bad", [[0, 8], [], [2.5], [True]])
def test_bad_sampling_budgets_are_refused(tiny_recipe, bad):
    import yaml

    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe["sampling_max_completion_lengths"] = bad
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ValueError, match="sampling_max_completion_lengths"):
        parse_run_args([], str(tiny_recipe))


def test_sampling_system_prompts_need_the_chat_template(tiny_recipe, tmp_path):
    import yaml

    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe.update(
        model_name_or_path=str(tmp_path / "no-such-model"),
        template="assistant",
        sampling_system_prompts=["Answer cheerfully."],
    )
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    (model_args, data_args, args, _), _ = parse_run_args([], str(tiny_recipe))
    with pytest.raises(ValueError, match="sampling_system_prompts: only the chat template"):
        prepare(args.output_dir, model_args, data_args, args, progress=False)


def test_offtopic_rows_pair_each_prompt_with_other_prompts_answers(tiny_recipe):
    from ric.prepare import offtopic_rows

    prompts = ["a?", "a?", "b?", "c?"]
    responses = ["A1", "A2", "B1", "C1"]
    new_prompts, new_responses, taken = offtopic_rows(prompts, responses, 2, seed=0)
    assert [responses[i] for i in taken] == new_responses
    assert new_prompts == ["a?", "a?", "b?", "b?", "c?", "c?"]
    for p, r in zip(new_prompts, new_responses):
        assert r in responses and not r.startswith(p[0].upper())
    assert offtopic_rows(prompts, responses, 2, seed=0) == (new_prompts, new_responses, taken)
    with pytest.raises(ValueError, match="offtopic_responses_per_prompt"):
        offtopic_rows(["a?", "a?"], ["x", "y"], 1, seed=0)

    # through prepare: the extra rows are scored against their new prompt and marked as such
    (model_args, data_args, args, _), _ = parse_run_args(["--offtopic_responses_per_prompt", "1"], str(tiny_recipe))
    summary = prepare(args.output_dir, model_args, data_args, args, progress=False)
    train, _, _ = load_prepared(args.output_dir)
    assert summary["rows"] == len(train) == 16 and "off-topic" in summary["source"]
    extra = [i for i, s in enumerate(train["source"]) if s == "offtopic"]
    assert len(extra) == 8
    answers = dict(zip(train["prompt"][:8], train["response"][:8]))
    for i in extra:
        assert train["response"][i] in answers.values() and answers[train["prompt"][i]] != train["response"][i]
    assert set(summary["raw_mean_by_source"]) == {"dataset", "offtopic"}


def test_generation_cuts_equal_runs_stopped_at_that_budget(tiny_model_dir, smol_tokenizer):
    from transformers import AutoModelForCausalLM

    from ric.generation import generate_batched, trim_to_sentence

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    prompts = ["Do you like rain?", "Is tea good?", "Name a fruit, please."]
    kwargs = dict(batch_size=2, seed=3, template="chat", progress=False)
    cut = generate_batched(model, smol_tokenizer, prompts, max_new_tokens=9, cuts=[2, 9], **kwargs).cut_texts
    for n, budget in enumerate((2, 9)):
        alone = generate_batched(model, smol_tokenizer, prompts, max_new_tokens=budget, **kwargs).texts
        # the same text, except that a shorter cut with no complete sentence comes back empty
        for c, a in zip(cut, alone):
            assert c[n] == a or (budget < 9 and c[n] == "" and trim_to_sentence(a, keep_fragment=False) == "")
    assert trim_to_sentence("One. Two and", keep_fragment=False) == "One."
    assert (
        trim_to_sentence("no end here", keep_fragment=False) == "" and trim_to_sentence("no end here") == "no end here"
    )
    with pytest.raises(ValueError, match="cuts must be token counts between 1 and max_new_tokens"):
        generate_batched(model, smol_tokenizer, prompts, max_new_tokens=4, cuts=[8], **kwargs)


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
