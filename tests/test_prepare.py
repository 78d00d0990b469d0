"""Stage 1 on a tiny random model: scoring, normalisation, sampled data (system turns, budgets,
off-topic rows) and the settings it refuses."""

import json

import pytest
import torch

from ric.prepare import load_prepared, prepare
from ric.ric_trainer import build_sft_dataset
from tests.helpers import parse_run_args


def _rows_and_raw(run_dir):
    """The prepared rows and raw scores of a run directory, as write_prepared takes them."""
    import numpy as np

    from ric.prepare import Rows

    train, evaluation, _ = load_prepared(run_dir)
    rows = Rows(
        list(train["prompt"]),
        list(train["response"]),
        list(train["source"]),
        list(train["cut_by_budget"]),
        list(evaluation["prompt"]),
    )
    return rows, np.asarray(train["scores"])


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
    # the default score range is the paper's code's: standard-normal draws, whatever the data
    from ric.run_info import gaussian_range

    assert (stats["score_low"], stats["score_high"]) == gaussian_range(2)
    assert stats["score_range"] == {"kind": "gaussian", "quantile": None, "seed": 8888, "samples": 50000}
    from ric.prepare import write_prepared

    args.score_range = "data"
    data_stats = write_prepared(args.output_dir, *_rows_and_raw(args.output_dir), ["positivity", "conciseness"], args)
    assert data_stats["score_low"] == pytest.approx(normalized.min(0).values.tolist(), abs=1e-3)
    assert summary["pearson"] is not None


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
