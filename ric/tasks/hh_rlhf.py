"""Anthropic/hh-rlhf -> RiC rows (the paper's Helpful Assistant task).

Training: both the `chosen` and the `rejected` conversation of every train row are samples. The
prompt is everything before the last "\\n\\nAssistant:", a space and that marker (the paper's code
builds it so, and the reward models read it that way); the response is what follows. Rows whose
prompt + response is outside 8..512 tokens under the policy tokenizer or any reward tokenizer are
dropped and counted. Evaluation: the prompt of every 4th test row whose chosen conversation is 8..512
tokens under the same tokenizers (special tokens counted, as the paper's code counts them), duplicates
removed. Accepts
the hub id or a local file/folder in the same schema (columns `chosen`, `rejected`).
"""

from __future__ import annotations

from ..data import load_table, require_columns
from ..score_tags import ASSISTANT_MARKER

HUB_ID = "Anthropic/hh-rlhf"


def split_conversation(text: str) -> tuple[str, str] | None:
    """(prompt, response) split at the LAST assistant turn, as the paper's code splits it: the prompt
    is the conversation before that turn + " " + "\\n\\nAssistant:" (a space before the marker: the
    reward models read the prompt so), the response what follows, stripped."""
    cut = text.rfind(ASSISTANT_MARKER)
    if cut < 0:
        return None
    return text[:cut] + " " + ASSISTANT_MARKER, text[cut + len(ASSISTANT_MARKER) :].strip()


def token_length_filter(pairs, tokenizers, min_tokens: int, max_tokens: int):
    """Keep (prompt, response) pairs whose prompt + response length is within the bounds under EVERY tokenizer."""
    return within_lengths([p + r for p, r in pairs], tokenizers, min_tokens, max_tokens)


def within_lengths(texts, tokenizers, min_tokens: int, max_tokens: int, add_special_tokens: bool = False):
    """Whether each text's token count lies in [min_tokens, max_tokens] under EVERY tokenizer."""
    keep = [True] * len(texts)
    for tok in tokenizers:
        lengths = [len(ids) for ids in tok(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]
        keep = [k and min_tokens <= n <= max_tokens for k, n in zip(keep, lengths)]
    return keep


def build_hh_rlhf(
    name: str = HUB_ID,
    config: str | None = None,
    tokenizers=(),
    min_tokens: int = 8,
    max_tokens: int = 512,
    eval_every: int = 4,
    train_split: str = "train",
    test_split: str = "test",
):
    """Returns (train rows {prompt, response, source}, eval prompts, counts)."""
    train = load_table(name, train_split, config)
    require_columns(train, ["chosen", "rejected"], name)
    pairs, sources, malformed = [], [], 0
    for row in train:
        for column in ("chosen", "rejected"):
            split = split_conversation(row[column])
            if split is None or not split[1]:
                malformed += 1
                continue
            pairs.append(split)
            sources.append(column)
    keep = token_length_filter(pairs, tokenizers, min_tokens, max_tokens)
    rows = {
        "prompt": [p for (p, _), k in zip(pairs, keep) if k],
        "response": [r for (_, r), k in zip(pairs, keep) if k],
        "source": [s for s, k in zip(sources, keep) if k],
    }
    test = load_table(name, test_split, config)
    require_columns(test, ["chosen"], name)
    # the paper's code keeps an evaluation row when its whole chosen conversation, encoded with the special
    # tokens, is 8..512 tokens long under the policy's and every reward model's tokenizer
    chosen = [row["chosen"] for row in test.select(range(0, len(test), eval_every))]
    fits = within_lengths(chosen, tokenizers, min_tokens, max_tokens, add_special_tokens=True)
    eval_prompts = []
    for text, ok in zip(chosen, fits):
        split = split_conversation(text)
        if split is not None and ok:
            eval_prompts.append(split[0])
    eval_prompts = list(dict.fromkeys(eval_prompts))
    counts = {
        "train_rows": len(train),
        "samples": len(pairs),
        "malformed": malformed,
        "dropped_by_length": len(pairs) - sum(keep),
        "eval_dropped_by_length": len(fits) - sum(fits),
        "eval_prompts": len(eval_prompts),
    }
    return rows, eval_prompts, counts
