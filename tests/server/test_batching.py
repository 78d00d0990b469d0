"""The server's in-process decode against `model.generate`: rows that leave the batch (their KV cache rows
dropped) and rows that join it mid-decode (their cache left-padded to the batch's, or the batch's to
theirs) each get the answer they would get alone."""

import asyncio

import pytest

from ric.methods import METHODS
from ric.server.batching import BatchingEngine, GenRequest, StreamTap

PROMPTS = ["How do I bake bread?", "Fix a tire, quickly, I am late", "Tea?", "Why is the sky blue?"]
LONG = "Tell me, in a few words and without any detail at all, why people keep cats and dogs at home?"


@pytest.fixture(scope="module")
def engine(ric_run):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    generator = METHODS["ric"].load_generator(ric_run)
    # the run's tiny model repeats one token; a wider random init varies its greedy tokens with position
    torch.manual_seed(0)
    config = LlamaConfig(**{**generator.model.config.to_dict(), "initializer_range": 1.0, "torch_dtype": None})
    generator.model = LlamaForCausalLM(config).eval()
    engine = BatchingEngine(generator, max_batch_size=8)
    engine.close()  # no worker thread: the test drives the decode itself
    while not engine.waiting.empty():
        engine.waiting.get()
    yield engine


def requests_for(engine, prompts, budgets, loop):
    condition = engine.generator.condition(preference=[0.3, 0.7])
    return [
        GenRequest(engine.generator.format(p, condition), condition, n, 0.0, 1.0, None, loop, asyncio.Queue())
        for p, n in zip(prompts, budgets)
    ]


def alone(engine, request) -> list[int]:
    """The request's greedy tokens from transformers' own generate, with nothing else in the batch."""
    import torch

    tokenizer, model = engine.generator.tokenizer, engine.generator.model
    enc = tokenizer([request.text], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=request.max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    return [t for t in out[0, enc["input_ids"].shape[1] :].tolist() if t not in engine.eos_ids]


def check_rows(engine, tap):
    for row, request in enumerate(tap.requests):
        expected = alone(engine, request)
        assert tap.ids[row] == expected[: len(tap.ids[row])], f"row {row} differs from its own greedy decode"
        assert len(tap.ids[row]) == request.max_tokens or tap.reason[row] == "stop"
    assert len({t for ids in tap.ids for t in ids}) > 4, "the greedy tokens vary (the check can fail)"


def test_rows_that_leave_the_batch_do_not_change_the_others_answers(engine):
    loop = asyncio.new_event_loop()
    # greedy rows with different budgets: rows 2 and 0 finish first and leave the batch mid-decode
    tap = StreamTap(requests_for(engine, PROMPTS, [5, 12, 2, 9], loop), *tap_args(engine))
    engine._decode(tap)
    check_rows(engine, tap)
    assert sorted(tap.reason).count("length") >= 2
    loop.close()


@pytest.mark.parametrize("joining_is_longer", [True, False], ids=["joiner-longer", "batch-longer"])
def test_requests_that_join_a_running_batch_get_their_own_answers(engine, joining_is_longer):
    loop = asyncio.new_event_loop()
    first, joining = (PROMPTS[:2], [LONG, PROMPTS[2]]) if joining_is_longer else ([LONG, PROMPTS[3]], PROMPTS[2:])
    tap = StreamTap(requests_for(engine, first, [10, 4], loop), *tap_args(engine))
    later = requests_for(engine, joining, [6, 9], loop)
    for request in later:  # waiting when the batch starts: they join after its first step
        engine.waiting.put(request)
    before = engine.stats["joined_running_batch"]
    largest = engine._decode(tap)
    assert engine.stats["joined_running_batch"] - before == 2 and largest == 4
    assert tap.requests[2:] == later and all(tap.finished)
    check_rows(engine, tap)
    loop.close()


def tap_args(engine):
    return engine.generator.tokenizer, engine.eos_ids, engine.stop_markers


def test_a_finished_row_leaves_the_running_count_while_its_batch_goes_on(engine, monkeypatch):
    # with requests joining a running batch the batch may never end while clients keep sending: a row
    # that counted until its batch ended filled the queue limit (429s) at four clients
    loop = asyncio.new_event_loop()
    seen = []
    original = StreamTap.finish

    def finish(self, row, reason):
        original(self, row, reason)
        seen.append(engine.snapshot()["running"])

    monkeypatch.setattr(StreamTap, "finish", finish)
    base = engine.snapshot()  # the tests above drive `_decode` alone, which counts its joiners only
    for request in requests_for(engine, PROMPTS[:3], [12, 2, 3], loop):
        engine.submit(request)
    engine._run([engine.waiting.get() for _ in range(3)])
    assert seen == [base["running"] + k for k in (2, 1, 0)], "each answer leaves the count when it is complete"
    stats = engine.snapshot()
    assert stats["running"] == base["running"] and stats["queued"] == base["queued"]
    loop.close()


def test_padding_no_row_needs_is_trimmed_from_the_cache():
    import torch
    from transformers import DynamicCache

    from ric.server.batching import trim_left_padding

    cache = DynamicCache()
    keys = torch.arange(2 * 1 * 5 * 2, dtype=torch.float32).reshape(2, 1, 5, 2)
    cache.update(keys, keys + 100, 0)
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
    cache, trimmed = trim_left_padding(cache, mask)
    assert trimmed.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert torch.equal(cache.layers[0].keys, keys[:, :, 2:]) and torch.equal(
        cache.layers[0].values, keys[:, :, 2:] + 100
    )
    same, kept = trim_left_padding(cache, trimmed)
    assert kept.shape == (2, 3) and same.layers[0].keys.shape[2] == 3


def test_the_engine_loads_its_model_in_the_thread_that_runs_it(ric_run):
    import threading

    loaded_in = []

    def loader():
        loaded_in.append(threading.current_thread())
        return METHODS["ric"].load_generator(ric_run)

    engine = BatchingEngine(loader=loader)
    try:
        assert loaded_in == [engine.thread] and engine.generator.model is not None
        assert engine.eos_ids, "set up from the loaded generator"
    finally:
        engine.close()

    def broken():
        raise FileNotFoundError("no adapter here")

    with pytest.raises(FileNotFoundError, match="no adapter here"):
        BatchingEngine(loader=broken)
