"""Batched generation with a policy (base model + LoRA adapter), used by every stage that generates.

The original code generated one sample at a time; here prompts are sorted by length, batched with
left padding, and returned in their input order (bench/bench_batching.py measures the gain).
`generate_batched` returns a `Generations` object: the responses, which draws ran into the token
budget, and token counts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .recipe import RecipeError
from .report import FrontGenerator
from .run_info import RUN_INFO, RunInfo, load_run_info
from .score_tags import add_score_tags

logger = logging.getLogger(__name__)

# Recipe keys that `ric evaluate RUN_DIR --key value` applies to an evaluation's generation, and the
# generate_batched setting each one sets.
GENERATION_FLAGS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "max_completion_length": "max_new_tokens",
    "seed": "seed",
}

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


@dataclass
class Generations:
    """What one `generate_batched` call produced, in input order.

    texts: one response per prompt (drawn up to max_new_tokens).
    cut_texts: with `cuts`, per prompt one response per cut (the same draw stopped at each budget).
    hit_budget: per prompt, whether the draw ran to max_new_tokens without ending.
    generated_tokens: new tokens up to each response's end (padding and eos not counted).
    """

    texts: list[str]
    hit_budget: list[bool]
    generated_tokens: int
    cut_texts: list[list[str]] | None = None

    @property
    def truncated(self) -> int:
        return sum(self.hit_budget)


@dataclass
class GenerationTally:
    """Token and sequence counts summed over several `generate_batched` calls (for compute records)."""

    generated_tokens: int = 0
    sequences: int = 0
    truncated: int = 0

    def add(self, generations: Generations) -> Generations:
        self.generated_tokens += generations.generated_tokens
        self.sequences += len(generations.texts)
        self.truncated += generations.truncated
        return generations

    def to_dict(self) -> dict:
        return {"generated_tokens": self.generated_tokens, "sequences": self.sequences, "truncated": self.truncated}


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
    trim_truncated: bool = False,
    cuts: Sequence[int] | None = None,
) -> Generations:
    """Generate one response per prompt (already formatted), batched with left padding.

    Prompts are sorted by token length so that batches carry little padding; outputs come back in
    input order. A response cut by `max_new_tokens` loses its unfinished last sentence when
    `trim_truncated` is on.

    With `cuts` (token budgets, each <= `max_new_tokens`), every prompt also gets one response per cut
    (`Generations.cut_texts`): the same draw stopped after that many new tokens, finished as a response cut by its
    budget would be (what a run with that budget and the same random stream would have produced),
    except that a response cut shorter than `max_new_tokens` that holds no complete sentence comes
    back empty: cut data must not teach a model to stop mid-sentence.
    """
    from .sampling import NucleusSampler

    prompts = list(prompts)
    if cuts is not None and (not cuts or max(cuts) > max_new_tokens or min(cuts) < 1):
        raise ValueError(
            f"cuts must be token counts between 1 and max_new_tokens ({max_new_tokens}), got {list(cuts)}"
        )
    result = Generations(
        texts=[""] * len(prompts),
        hit_budget=[False] * len(prompts),
        generated_tokens=0,
        cut_texts=[[] for _ in prompts] if cuts is not None else None,
    )
    if not prompts:
        return result
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # longest first: little padding per batch
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    ends = eos_ids(model, tokenizer)
    sampler = NucleusSampler(temperature, top_p) if do_sample else None
    was_training = model.training
    model.eval()
    for n, start in enumerate(starts):
        index = order[start : start + batch_size]
        batch_seed = None if seed is None else seed + n
        rows = _draw(model, tokenizer, [prompts[i] for i in index], max_new_tokens, sampler, batch_seed)
        for ids, i in zip(rows, index):
            end = next((k for k, t in enumerate(ids) if t in ends), len(ids))
            result.generated_tokens += end
            result.hit_budget[i] = end == len(ids) and len(ids) >= max_new_tokens
            result.texts[i] = _finish(tokenizer, ids, end, max_new_tokens, template, trim_truncated)
            if cuts is not None:
                result.cut_texts[i] = [
                    _finish(
                        tokenizer,
                        ids[:cut],
                        min(end, cut),
                        cut,
                        template,
                        trim_truncated,
                        keep_fragment=cut >= max_new_tokens,
                    )
                    for cut in cuts
                ]
    if was_training:
        model.train()
    return result


def _draw(model, tokenizer, texts, max_new_tokens: int, sampler, seed: int | None) -> list[list[int]]:
    """One batch through `model.generate`: the new token ids of every row (padding included)."""
    import torch
    from transformers import LogitsProcessorList

    device = next(model.parameters()).device
    enc = tokenizer(texts, return_tensors="pt", padding=True).to(device)
    if seed is not None:
        torch.manual_seed(seed)
    # Sampling draws inside a logits processor (ric.sampling: the same distribution as
    # transformers' temperature + top-p, without sorting the vocabulary at every step).
    processors = LogitsProcessorList([sampler]) if sampler else None
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            do_sample=False,
            logits_processor=processors,
        )
    return out[:, enc["input_ids"].shape[1] :].tolist()


def _finish(
    tokenizer, ids: list[int], end: int, budget: int, template: str, trim_truncated: bool, keep_fragment: bool = True
) -> str:
    """Decode the tokens before `end` (the first eos); a response cut by `budget` loses its unfinished sentence."""
    text = clean_response(tokenizer.decode(ids[:end], skip_special_tokens=True), template)
    if trim_truncated and end == len(ids) and len(ids) >= budget:
        text = trim_to_sentence(text, keep_fragment)
    return text


def eos_ids(model, tokenizer) -> set[int]:
    """The token ids that end an answer: the tokenizer's eos and pad, and the model's configured eos."""
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return {i for i in ids if i is not None}


def format_prompts(
    prompts: Sequence,
    template: str,
    tokenizer,
    targets: Sequence[Sequence[float]] | None = None,
    system_prompt: str | None = None,
):
    """Formatted prompts, with score tags when `targets` (one vector per prompt) is given."""
    if targets is None:
        targets = [None] * len(prompts)
    return [add_score_tags(p, t, template, tokenizer, system_prompt) for p, t in zip(prompts, targets)]


def load_policy(
    info: RunInfo,
    adapter_dir: str | Path | None,
    device: str | None = None,
    merge: bool = False,
    dtype: str | None = None,
    prepare_base=None,
):
    """Base model (+ the run's LoRA adapter when `adapter_dir` is given) and tokenizer, ready to generate.

    `merge=True` folds the adapter into the base weights for speed (see `merge_for_inference`).
    `dtype` overrides the run's weight dtype for answering (`INFERENCE_DTYPES`; the run's by default).
    `prepare_base(model)` changes the base before the adapter loads (PRT's `zero_head` output layer).
    """
    from .models import load_causal_lm, load_tokenizer

    kwargs = dict(info.model_kwargs)
    if dtype is not None:
        kwargs["dtype"] = check_inference_dtype(dtype)
    model = load_causal_lm(info.base_model, device=device, **kwargs)
    if prepare_base is not None:
        prepare_base(model)
    tokenizer_source = adapter_dir if adapter_dir is not None else info.base_model
    tokenizer = load_tokenizer(str(tokenizer_source), trust_remote_code=kwargs.get("trust_remote_code", False))
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        if merge:
            merge_for_inference(model)
    model.eval()
    return model, tokenizer


INFERENCE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_inference_dtype(dtype: str, field: str = "--dtype") -> str:
    """`dtype` if it names a weight dtype to answer in, else a RecipeError naming `field`. On a CPU with
    bf16 instructions (avx512_bf16, AMX) bfloat16 decodes about twice as fast as float32 (bench/LOG.md)."""
    if dtype not in INFERENCE_DTYPES:
        raise RecipeError(
            f"{field}: {dtype!r} is not a dtype to answer in; choose one of {', '.join(INFERENCE_DTYPES)}"
        )
    return dtype


def merge_for_inference(model) -> bool:
    """Fold a PEFT model's LoRA weights into its base layers, in memory, when that is exact enough.

    Unmerged, every adapted linear layer runs two extra small matmuls per token: on a CPU that made
    generation with the demo's r=64 adapter 1.2x slower, with the same greedy answers (bench/results/merge.json).
    The model stays a PeftModel: `disable_adapter()` still gives the base model (PEFT unmerges first).
    Quantized bases (8-bit, 4-bit) are left unmerged: merging would round the adapter into them.
    Returns whether the adapter was merged.
    """
    from .models import is_quantized

    if not hasattr(model, "merge_adapter") or is_quantized(model.get_base_model()):
        return False
    model.merge_adapter()
    return True


def adapter_info(adapter_dir: Path, run_info: RunInfo) -> RunInfo:
    """The record an adapter folder is used with: its own ric_run.json, or for a trainer checkpoint of
    the run (RUN_DIR/checkpoints/offline/checkpoint-100: adapter weights, no ric_run.json) the run's,
    whose rewards, statistics, template and score range every adapter of the run shares."""
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / RUN_INFO).exists() or not (adapter_dir / "adapter_config.json").exists():
        return load_run_info(adapter_dir)[0]
    return run_info


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


@dataclass(frozen=True)
class Condition:
    """What a request is answered under: the model set-up (`key`) and what goes into the prompt.

    RiC: one set-up for every preference, the normalised `targets` written into the prompt as score
    tags. The RL baselines: one set-up per adapter (a MORLHF policy, a Soups mix), no tags."""

    key: str
    preference: tuple[float, ...] | None = None
    targets: tuple[float, ...] | None = None
    policy: str | None = None

    def describe(self) -> dict:
        out: dict = {"preference": list(self.preference) if self.preference is not None else None}
        if self.targets is not None:
            out["targets"] = list(self.targets)
        if self.policy is not None:
            out["policy"] = self.policy
        return out


class PolicyGenerator:
    """Answers prompts under conditions, batched: every method's `ric generate` (and server) path.

    Subclasses say how a preference (or explicit targets) becomes a `Condition` and how a condition's
    model set-up is activated; requests that share a set-up are generated in one batched call.
    `options` names the generation settings a caller may override."""

    options = frozenset({"max_new_tokens", "temperature", "top_p", "seed"})
    takes_targets = False  # whether explicit normalised targets are meaningful (RiC only)

    def __init__(self, model, tokenizer, info: RunInfo):
        self.model, self.tokenizer, self.info = model, tokenizer, info
        self.tally = GenerationTally()  # tokens generated so far

    @property
    def rewards(self) -> list[str]:
        return list(self.info.rewards)

    def condition(self, preference=None, targets=None, method: str | None = None) -> Condition:
        raise NotImplementedError

    def activate(self, key: str) -> None:
        """Put the model into the set-up of `key` (nothing to do when every condition shares one)."""

    def prepare_points(self) -> None:
        """Called once before an evaluation grid, after the base model's answers (RiC merges its adapter)."""

    def format(self, prompt, condition: Condition) -> str:
        targets = list(condition.targets) if condition.targets is not None else None
        return add_score_tags(prompt, targets, self.info.template, self.tokenizer, self.info.system_prompt)

    def settings(self, **overrides) -> dict:
        allowed = self.options | {"batch_size", "trim_truncated"}  # the last two come from the run itself
        unknown = sorted(k for k, v in overrides.items() if v is not None and k not in allowed)
        if unknown:
            raise ValueError(
                f"{unknown[0]}: not a generation setting of a {self.info.method} run; it takes {sorted(self.options)}"
            )
        return {**self.info.generation, **{k: v for k, v in overrides.items() if v is not None}}

    def generate_conditioned(
        self, prompts: Sequence, conditions: Sequence[Condition], progress: bool = False, **overrides
    ) -> list[dict]:
        """One response per (prompt, condition), in order; prompts that share a set-up share the batches."""
        if len(prompts) != len(conditions):
            raise ValueError(f"got {len(prompts)} prompts and {len(conditions)} conditions")
        settings = self.settings(**overrides)
        results: list[dict | None] = [None] * len(prompts)
        for key in dict.fromkeys(c.key for c in conditions):
            index = [i for i, c in enumerate(conditions) if c.key == key]
            self.activate(key)
            texts = [self.format(prompts[i], conditions[i]) for i in index]
            out = self.tally.add(
                generate_batched(
                    self.model, self.tokenizer, texts, template=self.info.template, progress=progress, **settings
                )
            )
            for i, response in zip(index, out.texts):
                results[i] = {"prompt": prompts[i], "response": response, **conditions[i].describe()}
        return results  # type: ignore[return-value]

    def generate(
        self, prompts, preference=None, targets=None, method: str | None = None, progress: bool = False, **overrides
    ) -> list[dict]:
        """Answer each prompt with the trade-off `preference` (or explicit normalised `targets`)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts: empty; give at least one prompt")
        condition = self.condition(preference, targets, method)
        return self.generate_conditioned(prompts, [condition] * len(prompts), progress=progress, **overrides)

    def generate_base(self, prompts: Sequence, progress: bool = False, **overrides) -> list[str]:
        """The base model's answers (adapters off, no tags): the reference point of an evaluation."""
        texts = format_prompts(
            list(prompts), self.info.template, self.tokenizer, system_prompt=self.info.system_prompt
        )
        with self.model.disable_adapter():
            out = generate_batched(
                self.model,
                self.tokenizer,
                texts,
                template=self.info.template,
                progress=progress,
                **self.settings(**overrides),
            )
        return self.tally.add(out).texts


class PolicyFront(FrontGenerator):
    """An evaluation front answered by a `PolicyGenerator` (RiC, MORLHF, Soups): the base model's
    answers first, then every point under the condition its preference maps to."""

    def __init__(
        self, load_generator, points, settings: dict, method: str | None = None, identity: dict | None = None
    ):
        self.load_generator, self.points_, self.settings, self.method = load_generator, points, settings, method
        self.identity = identity or {}
        self.generator = None
        self.conditions: dict[int, Condition] = {}

    def _generator(self) -> PolicyGenerator:
        if self.generator is None:
            self.generator = self.load_generator()
        return self.generator

    def _settings(self, items) -> dict:
        """The evaluation's settings, with the seed offset by the chunk's first item (its own random stream)."""
        seed = self.settings.get("seed")
        return {**self.settings, "seed": None if seed is None else seed + items[0]["i"]}

    def base(self, items):
        return self._generator().generate_base([c["prompt"] for c in items], **self._settings(items))

    def points(self, items):
        generator = self._generator()
        if not self.conditions:
            generator.prepare_points()
            self.conditions = {
                k: generator.condition(p.preference, method=self.method) for k, p in enumerate(self.points_)
            }
        out = generator.generate_conditioned(
            [c["prompt"] for c in items], [self.conditions[c["point"]] for c in items], **self._settings(items)
        )
        return [r["response"] for r in out]

    def generation_stats(self) -> dict:
        return self.generator.tally.to_dict() if self.generator is not None else {}


def evaluate_grid(
    run,
    info: RunInfo,
    load_generator,
    *,
    identity: dict,
    title: str,
    label: str,
    extra: dict | None = None,
    eval_dir=None,
    overrides: dict | None = None,
    progress: bool = True,
) -> dict:
    """The preference grid of a run that writes score tags (RiC, PRT), each point's targets in the prompt,
    answered by the `PolicyGenerator` that `load_generator()` returns, through the shared evaluation."""
    from .report import evaluate_run, grid_points

    method = run.evaluation.eval_preference_method
    points = grid_points(info, method, run.evaluation.eval_grid_divisions)
    return evaluate_run(
        run,
        info,
        points,
        lambda settings: PolicyFront(load_generator, points, settings, method=method, identity=identity),
        flags=GENERATION_FLAGS,
        eval_dir=eval_dir,
        overrides=overrides,
        progress=progress,
        extra={**(extra or {}), "preference_method": method},
        title=title,
        label=label,
    )
