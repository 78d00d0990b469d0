"""ric.sampling draws from the distribution transformers' temperature + top-p warpers define."""

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from ric.sampling import NucleusSampler


def reference_probs(scores, temperature, top_p):
    """transformers' own warpers, then softmax: the distribution do_sample=True draws from."""
    warped = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores.clone()))
    return warped.softmax(-1)


def drawn_frequencies(sampler, scores, n):
    torch.manual_seed(0)
    counts = torch.zeros_like(scores)
    for _ in range(n):
        counts.scatter_add_(1, sampler.draw(scores).unsqueeze(1), torch.ones(scores.shape[0], 1))
    return counts / n


@pytest.mark.parametrize("temperature,top_p,k", [(0.3, 0.9, 64), (1.0, 0.9, 4), (0.7, 0.5, 8), (1.3, 1.0, 64)])
def test_draws_follow_the_transformers_distribution(temperature, top_p, k):
    torch.manual_seed(1)
    # Rows from peaked to flat, so that some rows' nucleus is wider than k (the full-sort fallback).
    scores = torch.randn(6, 40) * torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.1]).unsqueeze(1)
    expected = reference_probs(scores, temperature, top_p)
    got = drawn_frequencies(NucleusSampler(temperature, top_p, k=k), scores, 4000)
    assert (got[expected == 0] == 0).all(), "a token outside transformers' nucleus was drawn"
    assert torch.allclose(got, expected, atol=0.035)


def test_kept_set_matches_transformers_exactly():
    from ric.sampling import nucleus

    torch.manual_seed(2)
    scores = torch.randn(32, 500) * 3
    for top_p in (0.3, 0.9, 0.99):
        expected = reference_probs(scores, 1.0, top_p) > 0
        for k in (8, 64, 500):
            ids, probs, fallback = nucleus(scores, top_p, k)
            kept = torch.zeros_like(expected)
            kept.scatter_(1, ids, probs > 0)
            if fallback is not None:
                rows, full_ids, full_probs = fallback
                kept[rows] = False
                kept[rows] = kept[rows].scatter(1, full_ids, full_probs > 0)
            assert torch.equal(kept, expected), (top_p, k)


def test_generate_uses_it_as_a_processor_and_repeats_with_the_seed(tiny_model_dir, smol_tokenizer):
    from ric.generation import generate_batched
    from ric.models import load_causal_lm

    model = load_causal_lm(str(tiny_model_dir), device="cpu")
    sampler = NucleusSampler(0.7, 0.9)
    scores = torch.randn(3, model.config.vocab_size)
    out = sampler(None, scores)
    assert torch.equal(out.argmax(-1), out.isfinite().float().argmax(-1)) and out.isfinite().sum() == 3
    smol_tokenizer.pad_token = smol_tokenizer.eos_token
    kw = dict(max_new_tokens=8, temperature=0.7, top_p=0.9, template="chat", progress=False, trim_truncated=False)
    prompts = ["<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>user\nhi there<|im_end|>\n"]
    first = generate_batched(model, smol_tokenizer, prompts, seed=3, **kw).texts
    assert first == generate_batched(model, smol_tokenizer, prompts, seed=3, **kw).texts
    assert first != generate_batched(model, smol_tokenizer, prompts, seed=4, **kw).texts
    with pytest.raises(ValueError, match="top_p"):
        NucleusSampler(0.7, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        NucleusSampler(0.0, 0.9)
