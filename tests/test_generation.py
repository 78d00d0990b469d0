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
