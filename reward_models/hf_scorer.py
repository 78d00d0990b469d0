"""Sequence-classification reward models (hub id or local folder) behind one input declaration.

A reward model is declared by how it reads its input (`input_format`, see `INPUT_FORMATS`) and which
logit is the reward (`logit_index`). The paper's models differ exactly there: GPT-2 harmless/helpful
read (prompt, response) as a text pair, the humor classifier reads the response alone and its
reward is logit 1, the summary model reads "summary <bos> post", and the faithfulness detector
reads text=summary, text_pair=post (spacing as in the paper's code: "summary <bos> post" is
summary + " " + bos + " " + post). Inputs are truncated to the model's limit (at most 1024
tokens), batched, and scored on the GPU when there is one.
"""

from __future__ import annotations

import logging
import os

from .loading import load_pretrained
from .registry import INPUT_FORMATS, RewardScorer, register_reward

MAX_REWARD_TOKENS = 1024
# where a decoder-only classifier (a GPT-2 reward model) reads its score: the last non-pad token (transformers
# since 4.48), the token before the first pad id (transformers up to 4.47, which the paper's code ran: with
# a pad id equal to the bos between summary and post, the summary alone), or `auto`: first_pad when the
# model's own config names a pad id, else last_token (what batch-1 scoring gave without one)
POOLINGS = ("last_token", "first_pad", "auto")

logger = logging.getLogger(__name__)


def build_reward_inputs(input_format: str, prompts: list[str], responses: list[str], bos_token: str | None):
    """What the tokenizer receives for each input format: (texts, text_pairs or None)."""
    if input_format == "prompt_response":
        return prompts, responses
    if input_format == "response":
        return responses, None
    if input_format == "response_prompt":
        return responses, prompts
    if input_format == "response_bos_prompt":
        if not bos_token:
            raise ValueError("input_format 'response_bos_prompt' needs a tokenizer with a bos token")
        # the summary reward model of the paper's code reads summary + " " + bos + " " + post
        return [f"{r} {bos_token} {p}" for r, p in zip(responses, prompts)], None
    raise ValueError(f"input_format: unknown {input_format!r}; choose one of {', '.join(INPUT_FORMATS)}")


@register_reward("sequence_classifier")
class SequenceClassifierScorer(RewardScorer):
    """A hub or local `AutoModelForSequenceClassification` used as a reward.

    Args:
        model: hub id or local folder.
        input_format: how the model reads a pair (see `INPUT_FORMATS`).
        logit_index: which output logit is the reward (0 for single-logit reward models).
        prompt_template: what the model reads as the prompt, "{prompt}" standing for the row's prompt
            (the paper's `deberta` reads the summary task's instruction prompt around the post).
        max_length: truncation limit; the model's own limit and 1024 cap it.
        batch_size: pairs per forward pass.
        device: defaults to CUDA when available.
        dtype: torch dtype name for the model ("float32", "bfloat16", ...).
        trust_remote_code: off unless the user turns it on.
        pooling: a decoder-only classifier's scoring position (`POOLINGS`): last_token (today's transformers),
            first_pad (the token before the first pad id, as transformers up to 4.47 read it), or auto
            (first_pad if the model's config names a pad id, else last_token; decided at load, logged).
    """

    def __init__(
        self,
        model: str,
        input_format: str = "prompt_response",
        logit_index: int = 0,
        prompt_template: str = "{prompt}",
        max_length: int = MAX_REWARD_TOKENS,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        name: str | None = None,
        pooling: str = "last_token",
    ):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if input_format not in INPUT_FORMATS:
            raise ValueError(f"input_format: unknown {input_format!r}; choose one of {', '.join(INPUT_FORMATS)}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: unknown {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.model_name = model
        self.name = name or os.path.basename(str(model).rstrip("/"))
        self.input_format, self.logit_index, self.batch_size = input_format, int(logit_index), batch_size
        if "{prompt}" not in prompt_template:
            raise ValueError(f"prompt_template: {prompt_template!r} must contain {{prompt}} where the prompt goes")
        self.prompt_template = prompt_template
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_pretrained(
            AutoTokenizer, model, what="reward tokenizer", trust_remote_code=trust_remote_code
        )
        self.model = load_pretrained(
            AutoModelForSequenceClassification,
            model,
            what="reward model",
            dtype=getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
        )
        self.model.to(self.device).eval()
        num_labels = self.model.config.num_labels
        if not 0 <= self.logit_index < num_labels:
            raise ValueError(
                f"logit_index: {self.logit_index} is out of range for {model!r}, which has {num_labels} logits"
            )
        self.pooling = self._resolve_pooling(pooling, self.model.config.pad_token_id)  # before ric sets a pad
        if self.tokenizer.pad_token is None:
            # GPT-2 reward models have no pad token; the classifier reads the last non-pad position.
            self.tokenizer.pad_token = self.tokenizer.eos_token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        limits = [max_length, MAX_REWARD_TOKENS]
        model_limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(
            self.model.config, "n_positions", None
        )
        if model_limit:
            limits.append(int(model_limit))
        tok_limit = getattr(self.tokenizer, "model_max_length", None)
        if tok_limit and tok_limit < 10**8:
            limits.append(int(tok_limit))
        self.max_length = min(limits)

    def _resolve_pooling(self, pooling: str, config_pad) -> str:
        if pooling == "auto":
            pooling = "first_pad" if config_pad is not None else "last_token"
            logger.info(
                "reward %s: pooling %s (the model's config %s)",
                self.name,
                pooling,
                f"names pad id {config_pad}" if config_pad is not None else "names no pad id",
            )
        if pooling == "first_pad":
            if not hasattr(self.model, "score"):
                raise ValueError(
                    f"pooling: first_pad reads a decoder-only classifier's per-position scores; {self.model_name!r} "
                    f"({type(self.model).__name__}) has none: use pooling: last_token"
                )
            self.tokenizer.padding_side = "right"  # the first pad id must follow the text, not precede it
        return pooling

    def encode(self, prompts: list[str], responses: list[str]):
        """Tokenize a batch exactly as the model reads it (exposed for tests and debugging)."""
        prompts = [self.prompt_template.replace("{prompt}", p) for p in prompts]
        texts, pairs = build_reward_inputs(self.input_format, prompts, responses, self.tokenizer.bos_token)
        return self.tokenizer(
            texts,
            pairs,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )

    def _score_batch(self, prompts, responses):
        import torch

        enc = self.encode(prompts, responses).to(self.device)
        with torch.inference_mode():
            if self.pooling == "first_pad":
                return self._first_pad_scores(enc)
            logits = self.model(**enc).logits
        return logits[:, self.logit_index].float().cpu().tolist()

    def _first_pad_scores(self, enc):
        """transformers <= 4.47's GPT-2 pooling: the score at the token before the first pad id (the last token
        when there is none), from the per-position scores of the classifier head."""
        hidden = self.model.base_model(**enc)[0]
        scores = self.model.score(hidden)
        ids = enc["input_ids"]
        first_pad = (ids == self.model.config.pad_token_id).int().argmax(-1)  # 0 when the row holds none
        position = (first_pad - 1) % ids.shape[-1]
        rows = scores[range(len(ids)), position]
        return rows[:, self.logit_index].float().cpu().tolist()
