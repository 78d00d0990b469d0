"""Batched generation: cut budgets give the same text as runs stopped there; sentence trimming."""

import pytest


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


def test_evaluation_chunks_sample_their_own_random_streams(tiny_model_dir, smol_tokenizer):
    """Two chunks of the same (prompt, point) items: the same answers only when the same items repeat."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ric.generation import PolicyFront
    from ric.inference import RiCGenerator
    from ric.report import FrontPoint
    from ric.run_info import RewardStats, RunInfo

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), LoraConfig(r=2))
    info = RunInfo(
        base_model=str(tiny_model_dir),
        rewards=["a", "b"],
        template="chat",
        score_low=[-1, -1],
        score_high=[1, 1],
        reward_stats=RewardStats(mean={"a": 0, "b": 0}, std={"a": 1, "b": 1}),
    )
    settings = dict(max_new_tokens=6, temperature=1.0, top_p=1.0, batch_size=4, seed=11, trim_truncated=False)
    front = PolicyFront(lambda: RiCGenerator(model, smol_tokenizer, info), [FrontPoint([0.5, 0.5])], settings)
    first = [{"i": i, "point": 0, "prompt": "Say something."} for i in range(4)]
    second = [{"i": i, "point": 0, "prompt": "Say something."} for i in range(4, 8)]
    a, b, again = front.points(first), front.points(second), front.points(first)
    assert a == again, "a chunk's stream is seeded by its items: a rerun gives the same answers"
    assert a != b, "another chunk of the same prompts draws other answers"


def test_vllm_requests_get_their_own_seeds():
    from ric.vllm_backend import request_seeds

    assert request_seeds(5, 3) == [5, 6, 7] and request_seeds(None, 2) == [None, None]


def test_trim_truncated_is_a_switch_and_off_by_default(tiny_model_dir, smol_tokenizer):
    """Off (the paper's code): a budget-cut answer comes back as generated; on: its unfinished sentence goes."""
    import torch
    from transformers import AutoModelForCausalLM

    from ric.generation import generate_batched, trim_to_sentence

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    # a head that writes only " yes", " no" and "." (every other token at -100), drawn at random:
    # answers of short sentences that the token budget cuts mid-sentence
    words = [smol_tokenizer.convert_tokens_to_ids(t) for t in ("Ġyes", "Ġno", ".")]
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-100.0)
        head.bias[words] = 0.0
    model.lm_head = head
    prompts = [f"Question {i}?" for i in range(6)]
    kwargs = dict(max_new_tokens=11, batch_size=6, seed=0, temperature=1.0, template="chat", progress=False)
    raw = generate_batched(model, smol_tokenizer, prompts, **kwargs).texts
    trimmed = generate_batched(model, smol_tokenizer, prompts, trim_truncated=True, **kwargs).texts
    assert raw == generate_batched(model, smol_tokenizer, prompts, trim_truncated=False, **kwargs).texts
    assert trimmed == [trim_to_sentence(t) for t in raw]
    assert any(t != r for t, r in zip(trimmed, raw)), f"no answer was cut mid-sentence: {raw}"
    assert all(t.endswith(".") or "." not in r for t, r in zip(trimmed, raw))
