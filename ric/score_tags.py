"""Score tags: writing reward scores into prompts (paper stage 2).

Templates (the paper's two byte for byte as its public code writes them, the completion following
after one space):
- `assistant`: "\\n\\nHuman: ... \\n\\nAssistant:" conversations (HH-RLHF, whose prompts end with a
  space before the marker). The tags go between the prompt and its final marker:
  `\\n\\nHuman: Why? \\n\\nAssistant:` -> `\\n\\nHuman: Why?  <rm1_score> 0.5 <rm2_score> -1.3 \\n\\nAssistant:`
- `summary`: `### Instruction: Generate a one-sentence summary of this post. ### Input: <post>
  <rm1_score> s1 <rm2_score> s2 ### Response:`
- `chat`: for chat-template models (the embedded SmolLM2): the tags are appended to the last user
  turn and the tokenizer's chat template renders the prompt, ending with its generation prompt.

Scores are rounded to 1 decimal. The response marker is removed as a *suffix*: the original code's
`str.rstrip("\\n\\nAssistant:")` strips a set of characters and can eat the end of a prompt (the
one place these templates differ from it: where it would eat a prompt's last characters, it
would also write different bytes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .preference import round1

TEMPLATES = ("assistant", "summary", "chat")
ASSISTANT_MARKER = "\n\nAssistant:"
HUMAN_MARKER = "\n\nHuman:"
SUMMARY_HEADER = "### Instruction: Generate a one-sentence summary of this post. ### Input: "
SUMMARY_MARKER = " ### Response:"

_TAG = re.compile(r" <rm(\d+)_score> (-?\d+(?:\.\d+)?)")
# a run of tags, and in the assistant layout the space the paper's code puts between the last tag and the marker
_TAG_BLOCK = re.compile(r"(?: <rm\d+_score> -?\d+(?:\.\d+)?)+(?: (?=\n\nAssistant:))?")


def strip_suffix(text: str, suffix: str) -> str:
    """Remove `suffix` from the end of `text` if it is there (a suffix, never a set of characters)."""
    return text[: -len(suffix)] if suffix and text.endswith(suffix) else text


def format_score(score: float, template: str = "chat") -> str:
    """A score as a tag writes it, rounded to 1 decimal: the paper's templates as the paper's code does
    (`str(round(score, 1))`, so a small negative score reads -0.0), the chat template without -0.0."""
    if template in ("assistant", "summary"):
        return str(round(float(score), 1))
    return f"{round1(score):.1f}"


def format_score_tags(scores: Sequence[float] | None, template: str = "chat") -> str:
    """' <rm1_score> 1.2 <rm2_score> -0.4' (empty for no scores)."""
    return "".join(f" <rm{i}_score> {format_score(s, template)}" for i, s in enumerate(scores or (), start=1))


def _check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"template: unknown {template!r}; choose one of {', '.join(TEMPLATES)}")


def _chat_messages(prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = [dict(m) for m in prompt]
    if not messages or messages[-1].get("role") != "user":
        raise ValueError("chat template: the prompt's last message must be a user turn")
    return messages


def add_score_tags(
    prompt,
    scores: Sequence[float] | None,
    template: str = "assistant",
    tokenizer=None,
    system_prompt: str | None = None,
) -> str:
    """Put score tags where the paper puts them; the result ends with the template's response marker.

    Args:
        prompt: the prompt. `assistant`: a "\\n\\nHuman: ..." conversation (its final "\\n\\nAssistant:"
            optional) or a bare request, which is wrapped as one Human turn. `summary`: the post, or an
            already formatted summary prompt. `chat`: the user's message or a list of chat messages.
        scores: one score per reward (rounded to 1 decimal); None or [] writes no tags (the
            unconditioned prompt).
        template: "assistant", "summary" or "chat".
        tokenizer: needed for `chat` (its chat template renders the prompt).
        system_prompt: `chat` only: a system turn put before a string prompt (None keeps the
            chat template's own default).

    >>> add_score_tags("\\n\\nHuman: Hi\\n\\nAssistant:", [1.23, -0.5])
    '\\n\\nHuman: Hi <rm1_score> 1.2 <rm2_score> -0.5 \\n\\nAssistant:'
    """
    _check_template(template)
    tags = format_score_tags(scores, template)
    if template == "assistant":
        # the paper's code: prompt (ending " \n\nAssistant:") without its marker + " " + "<rmi_score> si "
        # per reward + the marker, i.e. "...? " + " <rm1_score> s1 <rm2_score> s2" + " \n\nAssistant:"
        body = strip_suffix(prompt, ASSISTANT_MARKER)
        if HUMAN_MARKER not in body and not body.startswith("Human:"):
            body = f"{HUMAN_MARKER} {body.strip()} "  # a bare request, laid out as the HH-RLHF prompts are
        return body + (tags + " " if tags else "") + ASSISTANT_MARKER
    if template == "summary":
        body = strip_suffix(prompt, SUMMARY_MARKER)
        if not body.startswith(SUMMARY_HEADER):
            body = SUMMARY_HEADER + body
        return body + tags + SUMMARY_MARKER
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "template 'chat' needs a tokenizer with a chat template; pass tokenizer=..., or use the "
            "'assistant' template for a model without one"
        )
    messages = _chat_messages(prompt)
    if system_prompt is not None and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    messages[-1]["content"] = messages[-1]["content"] + tags
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def parse_score_tags(text: str) -> tuple[str, list[float]]:
    """Split a tagged prompt into (the prompt without tags, the scores in order)."""
    found = sorted((int(m.group(1)), float(m.group(2))) for m in _TAG.finditer(text))
    indices = [i for i, _ in found]
    if indices != list(range(1, len(found) + 1)):
        raise ValueError(f"score tags out of order or missing in {text!r}: rm indices {indices}")
    return _TAG_BLOCK.sub("", text), [s for _, s in found]


def response_marker(template: str, tokenizer=None) -> str:
    """The text that ends every prompt of `template` (the chat template's generation prompt for `chat`)."""
    _check_template(template)
    if template == "assistant":
        return ASSISTANT_MARKER
    if template == "summary":
        return SUMMARY_MARKER
    probe = add_score_tags("x", None, "chat", tokenizer)
    without = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    return probe[len(without) :] if probe.startswith(without) else ""
