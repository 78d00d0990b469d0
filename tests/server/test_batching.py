"""The server's in-process decode (finished rows leave the batch and its KV cache) against `model.generate`."""

import asyncio

from ric.methods import METHODS
from ric.server.batching import BatchingEngine, GenRequest


def test_rows_that_leave_the_batch_do_not_change_the_others_answers(ric_run):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    generator = METHODS["ric"].load_generator(ric_run)
    # the run's tiny model repeats one token; a wider random init varies its greedy tokens with position
    torch.manual_seed(0)
    config = LlamaConfig(**{**generator.model.config.to_dict(), "initializer_range": 1.0, "torch_dtype": None})
    generator.model = LlamaForCausalLM(config).eval()
    engine = BatchingEngine(generator, max_batch_size=8)
    try:
        prompts = ["How do I bake bread?", "Fix a tire, quickly, I am late", "Tea?", "Why is the sky blue?"]
        condition = generator.condition(preference=[0.3, 0.7])
        loop = asyncio.new_event_loop()
        # greedy rows with different budgets: rows 2 and 0 finish first and leave the batch mid-decode
        budgets = [5, 12, 2, 9]
        group = [
            GenRequest(generator.format(p, condition), condition, n, 0.0, 1.0, None, loop, asyncio.Queue())
            for p, n in zip(prompts, budgets)
        ]
        tap = engine._generate(group)
        tokenizer, model = generator.tokenizer, generator.model
        tokenizer.padding_side = "left"
        for row, request in enumerate(group):  # each row alone, through transformers' own greedy loop
            enc = tokenizer([request.text], return_tensors="pt")
            with torch.inference_mode():
                out = model.generate(
                    **enc, max_new_tokens=request.max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            alone = [t for t in out[0, enc["input_ids"].shape[1] :].tolist() if t not in engine.eos_ids]
            assert tap.ids[row] == alone[: len(tap.ids[row])], f"row {row} differs from its own greedy decode"
            assert len(tap.ids[row]) == request.max_tokens or tap.reason[row] == "stop"
        assert len({t for ids in tap.ids for t in ids}) > 4, "the greedy tokens vary (the check can fail)"
        assert sorted(tap.reason).count("length") >= 2, "at least two rows ran to their (different) budgets"
        loop.close()
    finally:
        engine.close()
