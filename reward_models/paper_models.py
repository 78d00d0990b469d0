"""The paper's six reward models, by name, each with its hub id and how each reads its input.

| name     | hub id                                          | reads                                  | logit |
|----------|-------------------------------------------------|----------------------------------------|-------|
| harmless | Ray2333/gpt2-large-harmless-reward_model        | (prompt, response) text pair           | 0     |
| helpful  | Ray2333/gpt2-large-helpful-reward_model         | (prompt, response) text pair           | 0     |
| humor    | mohameddhiab/humor-no-humor                     | the response only                      | 1     |
| summary  | Tristan/gpt2_reward_summarization               | summary + " " + bos + " " + post       | 0     |
| faithful | CogComp/bart-faithful-summary-detector          | text=summary, text_pair=post           | 1     |
| deberta  | OpenAssistant/reward-model-deberta-v3-large-v2  | (prompt, response) text pair           | 0     |

`get_reward("harmless")` loads the hub model; `get_reward("harmless", model="/local/copy")` (or a
recipe's `reward_models: {harmless: {model: /local/copy}}`) feeds a local copy through the same
adapter. Inputs are truncated to the model's limit (at most 1024 tokens) and batched. In the
summary task the paper's code gives `deberta` the task's instruction prompt as its question:
`reward_models: {deberta: {prompt_template: SUMMARY_INSTRUCTION_PROMPT}}` (the Reddit recipes do).
`summary` scores where the paper's code (transformers 4.45) did: with a pad id in the model's own
config, at the token before the first pad id, the bos between summary and post (`pooling: auto`).
"""

from __future__ import annotations

from .hf_scorer import SequenceClassifierScorer
from .registry import register_reward

# what `deberta` reads as its question in the summary task (the paper's code): the instruction prompt
SUMMARY_INSTRUCTION_PROMPT = (
    "### Instruction: Generate a one-sentence summary of this post. ### Input: {prompt} ### Response:"
)

PAPER_REWARD_MODELS = {
    "harmless": {
        "model": "Ray2333/gpt2-large-harmless-reward_model",
        "input_format": "prompt_response",
        "logit_index": 0,
    },
    "helpful": {
        "model": "Ray2333/gpt2-large-helpful-reward_model",
        "input_format": "prompt_response",
        "logit_index": 0,
    },
    "humor": {"model": "mohameddhiab/humor-no-humor", "input_format": "response", "logit_index": 1},
    # pooling auto: the official code's rule, from the hub config's own pad id (see SequenceClassifierScorer)
    "summary": {
        "model": "Tristan/gpt2_reward_summarization",
        "input_format": "response_bos_prompt",
        "logit_index": 0,
        "pooling": "auto",
    },
    "faithful": {
        "model": "CogComp/bart-faithful-summary-detector",
        "input_format": "response_prompt",
        "logit_index": 1,
    },
    "deberta": {
        "model": "OpenAssistant/reward-model-deberta-v3-large-v2",
        "input_format": "prompt_response",
        "logit_index": 0,
    },
}


def _factory(name: str, spec: dict):
    def build(
        model: str | None = None,
        batch_size: int = 16,
        device: str | None = None,
        max_length: int = 1024,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        **overrides,
    ):
        unknown = sorted(set(overrides) - {"input_format", "logit_index", "prompt_template", "pooling"})
        if unknown:  # before any model loads
            raise ValueError(f"reward {name!r}: unknown field(s) {unknown}")
        scorer = SequenceClassifierScorer(
            model=model or spec["model"],
            input_format=overrides.get("input_format", spec["input_format"]),
            logit_index=overrides.get("logit_index", spec["logit_index"]),
            prompt_template=overrides.get("prompt_template", "{prompt}"),
            pooling=overrides.get("pooling", spec.get("pooling", "last_token")),
            max_length=max_length,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
        )
        scorer.name = name
        return scorer

    build.__doc__ = f"{name}: {spec['model']} ({spec['input_format']}, logit {spec['logit_index']})"
    build.input_format = spec["input_format"]
    return build


for _name, _spec in PAPER_REWARD_MODELS.items():
    register_reward(_name)(_factory(_name, _spec))
