"""The paper's dataset builders on local fixtures written in the exact hub schemas."""

from pathlib import Path

import pytest

from ric.tasks import build_hh_rlhf, build_summarize_from_feedback
from ric.tasks.hh_rlhf import split_conversation

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def test_split_at_the_last_assistant_turn():
    text = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke.\n\nAssistant: Knock knock."
    prompt, response = split_conversation(text)
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke. \n\nAssistant:"
    assert response == "Knock knock."
    # the paper's code: "\n\nAssistant:".join(text.split("\n\nAssistant:")[:-1]) + " " + "\n\nAssistant:"
    parts = text.split("\n\nAssistant:")
    assert prompt == "\n\nAssistant:".join(parts[:-1]) + " " + "\n\nAssistant:" and response == parts[-1].strip()
    assert split_conversation("no markers") is None


def test_hh_rlhf_builder(smol_tokenizer):
    rows, eval_prompts, counts = build_hh_rlhf(str(ASSETS / "hh_rlhf"), tokenizers=[smol_tokenizer])
    # 14 train rows x (chosen, rejected) = 28 candidates; one chosen is malformed; one answer is over 512 tokens
    assert counts["train_rows"] == 14 and counts["samples"] == 27 and counts["malformed"] == 1
    assert counts["dropped_by_length"] >= 1
    assert len(rows["prompt"]) == 27 - counts["dropped_by_length"]
    assert set(rows["source"]) == {"chosen", "rejected"}
    assert all(p.endswith(" \n\nAssistant:") for p in rows["prompt"])
    assert "Sure, get a tension wrench and a pick and rake the pins." in rows["response"]
    assert not any(r.startswith(" ") for r in rows["response"])
    # evaluation: every 4th of 9 test rows -> rows 0, 4, 8
    assert len(eval_prompts) == 3 and all(p.endswith("Please answer briefly. \n\nAssistant:") for p in eval_prompts)


def test_hh_rlhf_length_filter_uses_every_tokenizer(smol_tokenizer):
    rows_loose, _, _ = build_hh_rlhf(str(ASSETS / "hh_rlhf"), tokenizers=[smol_tokenizer], max_tokens=10_000)
    rows_tight, _, counts = build_hh_rlhf(
        str(ASSETS / "hh_rlhf"), tokenizers=[smol_tokenizer], min_tokens=8, max_tokens=40
    )
    assert len(rows_tight["prompt"]) < len(rows_loose["prompt"])
    for p, r in zip(rows_tight["prompt"], rows_tight["response"]):
        assert 8 <= len(smol_tokenizer(p + r, add_special_tokens=False)["input_ids"]) <= 40


def test_hh_rlhf_evaluation_prompts_keep_the_papers_length_filter(smol_tokenizer):
    """Every 4th test row whose whole chosen conversation, special tokens counted, is 8..512 tokens under
    every tokenizer (the paper's code); here with a bound that splits the fixture's evaluation rows."""
    import json

    chosen = [json.loads(line)["chosen"] for line in (ASSETS / "hh_rlhf/test.jsonl").read_text().splitlines()][::4]
    lengths = [len(smol_tokenizer.encode(text)) for text in chosen]
    bound = sorted(lengths)[1]  # keeps the two shortest
    _, eval_prompts, counts = build_hh_rlhf(str(ASSETS / "hh_rlhf"), tokenizers=[smol_tokenizer], max_tokens=bound)
    kept = [split_conversation(t)[0] for t, n in zip(chosen, lengths) if 8 <= n <= bound]
    assert eval_prompts == kept and len(kept) == 2 and counts["eval_dropped_by_length"] == 1
    # a reward tokenizer that counts more tokens drops rows the policy's would keep
    _, none_kept, counts = build_hh_rlhf(
        str(ASSETS / "hh_rlhf"), tokenizers=[smol_tokenizer, _Doubling(smol_tokenizer)], max_tokens=bound
    )
    assert len(none_kept) < 2 and counts["eval_dropped_by_length"] > 1


class _Doubling:
    """A tokenizer whose every text is twice as long as under `inner` (a reward model's longer tokenization)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, texts, add_special_tokens=False):
        ids = self.inner(texts, add_special_tokens=add_special_tokens)["input_ids"]
        return {"input_ids": [row + row for row in ids]}


def test_summarize_builder():
    rows, eval_prompts, counts = build_summarize_from_feedback(
        str(ASSETS / "summarize_from_feedback"), config="comparisons"
    )
    # 5 posts, one under 100 characters -> 4 posts x 2 summaries
    assert counts["posts_dropped_by_length"] == 1 and len(rows["prompt"]) == 8
    assert all(100 <= len(p) <= 1200 and "\n" not in p for p in rows["prompt"])
    assert rows["response"][0].startswith("Roommate eats my labeled food")
    # validation holds every post twice under the same id: de-duplicated, newlines flattened
    assert len(eval_prompts) == 4 and all("\n" not in p for p in eval_prompts)
    capped, _, _ = build_summarize_from_feedback(
        str(ASSETS / "summarize_from_feedback"), config="comparisons", num_eval_posts=2
    )
    _, capped_eval, _ = build_summarize_from_feedback(
        str(ASSETS / "summarize_from_feedback"), config="comparisons", num_eval_posts=2
    )
    assert len(capped_eval) == 2


def test_summary_evaluation_posts_come_in_the_papers_order(tmp_path):
    """One post per id, in sorted id order (the paper's code: numpy.unique over the ids), then the cap."""
    import json
    import shutil

    source = ASSETS / "summarize_from_feedback" / "comparisons"
    (tmp_path / "comparisons").mkdir()
    shutil.copy(source / "train.jsonl", tmp_path / "comparisons" / "train.jsonl")
    rows = [json.loads(line) for line in (source / "validation.jsonl").read_text().splitlines()]
    shuffled = [rows[k] for k in (6, 2, 7, 0, 4, 3, 1, 5, 8, 9)]  # ids 0103, 0101, 0103, 0100, 0102, ...
    (tmp_path / "comparisons" / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shuffled))
    _, prompts, _ = build_summarize_from_feedback(str(tmp_path), config="comparisons")
    by_id = {r["info"]["id"]: " ".join(r["info"]["post"].split()) for r in rows if len(r["info"]["post"]) >= 100}
    assert prompts == [by_id[i] for i in sorted(by_id)] and len(prompts) == 4
    _, capped, _ = build_summarize_from_feedback(str(tmp_path), config="comparisons", num_eval_posts=2)
    assert capped == [by_id["t3_0100"], by_id["t3_0101"]]


def test_schema_mismatch_names_the_missing_fields(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"question": "hi", "answer": "yo"}\n')
    (tmp_path / "test.jsonl").write_text('{"question": "hi", "answer": "yo"}\n')
    with pytest.raises(ValueError, match=r"missing column\(s\) \['chosen', 'rejected'\]"):
        build_hh_rlhf(str(tmp_path))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['info', 'summaries'\]"):
        build_summarize_from_feedback(str(tmp_path), config=None)


def test_unreachable_hub_dataset_gives_one_clear_message():
    with pytest.raises(ValueError) as info:
        build_hh_rlhf("no-such-org/no-such-dataset-xyz")
    message = str(info.value)
    assert "no-such-org/no-such-dataset-xyz" in message and "available locally" in message
