"""openai/summarize_from_feedback (config `comparisons`) -> RiC rows (the paper's Reddit Summary task).

Posts of 100..1200 characters, newlines flattened. Training: both summaries of every comparison
row are samples (prompt = the post, response = the summary; `source` says which one the labeller
chose, which the SFT stage of the baselines keeps). Evaluation: validation posts, one per post id,
in sorted id order (the paper's code takes them so), the first 2,000. Accepts the hub id or a local
file/folder in the same schema (`info` with `id` and `post`, `summaries` as a list of {text}).
"""

from __future__ import annotations

from ..data import load_table, require_columns

HUB_ID = "openai/summarize_from_feedback"


def flatten(text: str) -> str:
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())


def _post_ok(post: str | None, min_chars: int, max_chars: int) -> bool:
    return post is not None and min_chars <= len(post) <= max_chars


def build_summarize_from_feedback(
    name: str = HUB_ID,
    config: str | None = "comparisons",
    tokenizers=(),
    min_chars: int = 100,
    max_chars: int = 1200,
    num_eval_posts: int = 2000,
    train_split: str = "train",
    test_split: str = "validation",
):
    """Returns (train rows {prompt, response, source}, eval prompts, counts)."""
    train = load_table(name, train_split, config)
    require_columns(train, ["info", "summaries"], name)
    rows = {"prompt": [], "response": [], "source": []}
    dropped = 0
    for row in train:
        post = row["info"].get("post") if isinstance(row["info"], dict) else None
        if not _post_ok(post, min_chars, max_chars):
            dropped += 1
            continue
        for k, summary in enumerate(row["summaries"]):
            rows["prompt"].append(flatten(post))
            rows["response"].append(flatten(summary["text"]))
            rows["source"].append("chosen" if k == row.get("choice") else "rejected")
    test = load_table(name, test_split, config)
    require_columns(test, ["info"], name)
    # the paper's code: one row per post id (its first), in sorted id order (numpy.unique), the first 2,000
    first = {}
    for row in test:
        info = row["info"]
        post = info.get("post")
        if info.get("id") is None or info["id"] in first or not _post_ok(post, min_chars, max_chars):
            continue
        first[info["id"]] = flatten(post)
    eval_prompts = [first[i] for i in sorted(first)][:num_eval_posts]
    counts = {
        "train_rows": len(train),
        "posts_dropped_by_length": dropped,
        "samples": len(rows["prompt"]),
        "eval_prompts": len(eval_prompts),
    }
    return rows, eval_prompts, counts
