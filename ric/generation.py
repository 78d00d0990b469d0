"""Batched generation and the preference-controlled generation API.

The original code generated one sample at a time; here prompts are sorted by length, batched with
left padding, and returned in their input order (bench/bench_batching.py measures the gain).

    from ric import RiCGenerator
    gen = RiCGenerator.from_run("runs/demo")
    gen.generate(["How do I brew green tea?"], preference=[0.2, 0.8])
    # -> [{"prompt": ..., "response": ..., "targets": [..., ...], "preference": [0.2, 0.8]}]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from .preference import parse_preference, preference_to_targets
from .run_info import RunInfo, load_run_info
from .score_tags import add_score_tags

logger = logging.getLogger(__name__)

# A response ends where the model starts a new turn on its own.
STOP_MARKERS = {
    "assistant": ("\n\nHuman:", "\n\nAssistant:", "\nHuman:"),
    "summary": ("###", "\n\n"),
    "chat": ("<|im_start|>", "<|im_end|>", "\nuser\n", "\nUser:"),
}


def clean_response(text: str, template: str = "assistant") -> str:
    """Cut a response at the first runaway turn marker and trim whitespace."""
    for marker in STOP_MARKERS.get(template, ()):
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    return text.strip()


_SENTENCE_END = re.compile(r"[.!?](?=[\s\"')\]]|$)|\n")


def trim_to_sentence(text: str, keep_fragment: bool = True) -> str:
    """Drop the unfinished last sentence of a response that ran into the token limit.

    Keeps everything up to the last sentence end (., !, ? or a line break); a response with no
    sentence end is kept whole, or comes back empty with `keep_fragment=False`.
    """
    ends = []
    for m in _SENTENCE_END.finditer(text):
        i = m.start()
        if text[i] == "." and i >= 1 and text[i - 1].isdigit() and (i < 2 or text[i - 2] in "\n "):
            continue  # "2." of a numbered list, not a sentence end
        end = m.end()
        while end < len(text) and text[end] in "\"')]":
            end += 1
        ends.append(end)
    if not ends:
        return text.strip() if keep_fragment else ""
    return text[: ends[-1]].strip()


def generate_batched(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.7,
    top_p: float = 0.9,
    do_sample: bool = True,
    batch_size: int = 32,
    seed: int | None = 0,
    template: str = "assistant",
    progress: bool = True,
    desc: str = "generating",
    stats: dict | None = None,
    trim_truncated: bool = True,
    cuts: Sequence[int] | None = None,
    hit_budget: list | None = None,
) -> list[str] | list[list[str]]:
    """Generate one response per prompt (already formatted), batched with left padding.

    Prompts are sorted by token length so that batches carry little padding; outputs come back in
    input order. A response cut by `max_new_tokens` loses its unfinished last sentence when
    `trim_truncated` is on. `stats`, when given, receives `generated_tokens`, `sequences` and
    `truncated` (how many hit the limit). `hit_budget`, when given (a list), receives one bool per
    prompt in input order: whether its draw ran to `max_new_tokens` without ending.

    With `cuts` (token budgets, each <= `max_new_tokens`), every prompt gets one response per cut
    instead: the same draw stopped after that many new tokens, finished as a response cut by its
    budget would be (what a run with that budget and the same random stream would have produced),
    except that a response cut shorter than `max_new_tokens` that holds no complete sentence comes
    back empty: cut data must not teach a model to stop mid-sentence.
    """
    import torch
    from transformers import LogitsProcessorList

    from .sampling import NucleusSampler

    prompts = list(prompts)
    if not prompts:
        return []
    if cuts is not None and (not cuts or max(cuts) > max_new_tokens or min(cuts) < 1):
        raise ValueError(f"cuts must be token counts between 1 and max_new_tokens ({max_new_tokens}), got {list(cuts)}")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    outputs: list[str | None] = [None] * len(prompts)
    hits = [False] * len(prompts)
    device = next(model.parameters()).device
    generator_seed = seed
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch")
    was_training = model.training
    model.eval()
    generated = truncated = 0
    sampler = NucleusSampler(temperature, top_p) if do_sample else None
    for n, start in enumerate(batches):
        index = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in index], return_tensors="pt", padding=True).to(device)
        if generator_seed is not None:
            torch.manual_seed(generator_seed + n)
        # Sampling draws inside a logits processor (ric.sampling: the same distribution as
        # transformers' temperature + top-p, without sorting the vocabulary at every step).
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, do_sample=False,
                      logits_processor=LogitsProcessorList([sampler]) if sampler else None)
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        eos_ids = _eos_ids(model, tokenizer)
        for row, i in zip(new_tokens, index):
            ids = row.tolist()
            end = next((k for k, t in enumerate(ids) if t in eos_ids), len(ids))
            generated += end
            hits[i] = end == len(ids) and len(ids) >= max_new_tokens
            truncated += hits[i]
            if cuts is None:
                outputs[i] = _finish(tokenizer, ids, end, max_new_tokens, template, trim_truncated)
            else:
                outputs[i] = [_finish(tokenizer, ids[:cut], min(end, cut), cut, template, trim_truncated,
                                      keep_fragment=cut >= max_new_tokens) for cut in cuts]
    if was_training:
        model.train()
    if hit_budget is not None:
        hit_budget.extend(hits)
    if stats is not None:
        stats["generated_tokens"] = stats.get("generated_tokens", 0) + generated
        stats["sequences"] = stats.get("sequences", 0) + len(prompts)
        stats["truncated"] = stats.get("truncated", 0) + truncated
    return outputs  # type: ignore[return-value]


def _finish(tokenizer, ids: list[int], end: int, budget: int, template: str, trim_truncated: bool,
            keep_fragment: bool = True) -> str:
    """Decode the tokens before `end` (the first eos); a response cut by `budget` loses its unfinished sentence."""
    text = clean_response(tokenizer.decode(ids[:end], skip_special_tokens=True), template)
    if trim_truncated and end == len(ids) and len(ids) >= budget:
        text = trim_to_sentence(text, keep_fragment)
    return text


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return {i for i in ids if i is not None}


def format_prompts(prompts: Sequence, template: str, tokenizer, targets: Sequence[Sequence[float]] | None = None,
                   system_prompt: str | None = None):
    """Formatted prompts, with score tags when `targets` (one vector per prompt) is given."""
    if targets is None:
        targets = [None] * len(prompts)
    return [add_score_tags(p, t, template, tokenizer, system_prompt) for p, t in zip(prompts, targets)]


def load_policy(info: RunInfo, adapter_dir: str | Path | None, device: str | None = None, merge: bool = False):
    """Base model (+ the run's LoRA adapter when `adapter_dir` is given) and tokenizer, ready to generate.

    `merge=True` folds the adapter into the base weights for speed (see `merge_for_inference`).
    """
    from .models import load_causal_lm, load_tokenizer

    kwargs = dict(info.model_kwargs)
    model = load_causal_lm(info.base_model, device=device, **kwargs)
    tokenizer_source = adapter_dir if adapter_dir is not None else info.base_model
    tokenizer = load_tokenizer(str(tokenizer_source), trust_remote_code=kwargs.get("trust_remote_code", False))
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        if merge:
            merge_for_inference(model)
    model.eval()
    return model, tokenizer


def merge_for_inference(model) -> bool:
    """Fold a PEFT model's LoRA weights into its base layers, in memory, when that is exact enough.

    Unmerged, every adapted linear layer runs two extra small matmuls per token: on a CPU that made
    generation with the demo's r=64 adapter 1.2x slower, with the same greedy answers (bench/results/merge.json).
    The model stays a PeftModel: `disable_adapter()` still gives the base model (PEFT unmerges first).
    Quantized bases (8-bit, 4-bit) are left unmerged: merging would round the adapter into them.
    Returns whether the adapter was merged.
    """
    if not hasattr(model, "merge_adapter"):
        return False
    base = model.get_base_model()
    if getattr(base, "is_loaded_in_8bit", False) or getattr(base, "is_loaded_in_4bit", False) or getattr(
        base, "quantization_method", None
    ):
        return False
    model.merge_adapter()
    return True


class RiCGenerator:
    """Preference weights in, targets into the score tags, batched generation, responses out."""

    def __init__(self, model, tokenizer, info: RunInfo):
        self.model, self.tokenizer, self.info = model, tokenizer, info

    @classmethod
    def from_run(cls, run_dir: str | Path, adapter: str | Path | None = None, device: str | None = None):
        """Load a trained run: `run_dir` is a run directory (its latest adapter is used) or an adapter folder."""
        info, folder = load_run_info(run_dir)
        adapter_dir = Path(adapter) if adapter else resolve_adapter(folder, info)
        adapter_info, _ = load_run_info(adapter_dir)
        return cls(*load_policy(adapter_info, adapter_dir, device, merge=True), adapter_info)

    def targets_for(self, preference, method: str | None = None) -> list[float]:
        weights = parse_preference(preference, self.info.num_objectives)
        return preference_to_targets(weights, self.info.score_low, self.info.score_high, method or self.info.preference_method)

    def generate(
        self,
        prompts: str | Sequence,
        preference=None,
        targets: Sequence[float] | None = None,
        method: str | None = None,
        progress: bool = False,
        **generation_kwargs,
    ) -> list[dict]:
        """Answer each prompt with the trade-off `preference` (or explicit normalised `targets`)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts: empty; give at least one prompt")
        if (preference is None) == (targets is None):
            raise ValueError("give either preference (weights) or targets (normalised scores), not both")
        weights = None
        if preference is not None:
            weights = parse_preference(preference, self.info.num_objectives)
            targets = self.targets_for(weights, method)
        elif len(targets) != self.info.num_objectives:
            raise ValueError(f"targets: need {self.info.num_objectives} values ({', '.join(self.info.rewards)})")
        settings = {**self.info.generation, **generation_kwargs}
        texts = format_prompts(prompts, self.info.template, self.tokenizer, [targets] * len(prompts), self.info.system_prompt)
        responses = generate_batched(
            self.model, self.tokenizer, texts, template=self.info.template, progress=progress, **settings
        )
        return [
            {"prompt": p, "response": r, "targets": list(targets), "preference": weights}
            for p, r in zip(prompts, responses)
        ]


def resolve_adapter(folder: Path, info: RunInfo) -> Path:
    """The adapter a run directory points to (its latest), or `folder` itself if it is an adapter."""
    if (folder / "adapter_config.json").exists():
        return folder
    if info.adapter is None:
        raise FileNotFoundError(f"{str(folder)!r} holds no trained adapter yet: run `ric train` first")
    adapter = folder / info.adapter
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"adapter {str(adapter)!r} named in {folder}/ric_run.json is missing")
    return adapter
