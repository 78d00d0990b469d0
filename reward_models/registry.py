"""The reward registry: named scorers that score batches of (prompt, response) pairs.

Every scorer declares how its model reads its input (`input_format`), so that the same code feeds a
hub sequence classifier, a sentiment lexicon or an embedding model. A recipe names rewards by
registry name (`positivity`), by a dotted path to the user's own code (`my_pkg.rewards:brevity`),
or declares a hub / local sequence-classification model in `reward_models`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

# How a scorer's model reads a (prompt, response) pair.
INPUT_FORMATS = {
    "prompt_response": "the tokenizer's text/text_pair: text=prompt, text_pair=response",
    "response": "the response alone",
    "response_bos_prompt": 'one string response + " " + bos + " " + prompt (reversed, joined by the bos token)',
    "response_prompt": "the tokenizer's text/text_pair reversed: text=response, text_pair=prompt",
    "image": "the image alone (text-to-image rewards)",
    "caption_image": "the caption (the prompt) and the image",
}


class RewardScorer:
    """Base class of every reward. Subclasses implement `_score_batch`.

    Attributes:
        name: the name under which the scorer appears in tables and prompts' metadata.
        input_format: one of `INPUT_FORMATS`.
        batch_size: how many pairs one forward pass takes.
    """

    name: str = "reward"
    input_format: str = "prompt_response"
    batch_size: int = 64

    def _score_batch(self, prompts: list[str], responses: list[str]) -> list[float]:
        raise NotImplementedError

    def __call__(self, prompts: Sequence[str], responses: Sequence[str], progress: bool = False) -> list[float]:
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError(
                f"reward {self.name!r}: got {len(prompts)} prompts and {len(responses)} responses; "
                "pass one prompt per response."
            )
        scores: list[float] = []
        starts = range(0, len(prompts), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"scoring {self.name}", unit="batch", leave=False)
        for start in starts:
            batch = self._score_batch(
                prompts[start : start + self.batch_size], responses[start : start + self.batch_size]
            )
            scores.extend(float(s) for s in batch)
        return scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, input_format={self.input_format!r})"


class FunctionScorer(RewardScorer):
    """Wraps a plain function `f(prompts, responses) -> list[float]` (or TRL style `f(completions, prompts=...)`)."""

    def __init__(self, fn: Callable[..., Sequence[float]], name: str, batch_size: int = 256):
        self.fn, self.name, self.batch_size = fn, name, batch_size
        params = inspect.signature(fn).parameters
        self._trl_style = "completions" in params

    def _score_batch(self, prompts, responses):
        if self._trl_style:
            return list(self.fn(completions=responses, prompts=prompts))
        return list(self.fn(prompts, responses))


_REGISTRY: dict[str, Callable[..., RewardScorer]] = {}


def register_reward(name: str) -> Callable:
    """Decorator: register a scorer class or factory under `name`."""

    def wrap(factory):
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"reward name {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_rewards() -> list[str]:
    """Names of every registered reward."""
    _load_builtins()
    return sorted(_REGISTRY)


def reward_summary(name: str) -> dict:
    """{"name", "input_format", "description"} of a registered reward (what `ric rewards` lists)."""
    _load_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown reward {name!r}; known: {', '.join(list_rewards())}")
    factory = _REGISTRY[name]
    doc = (factory.__doc__ or "").strip().splitlines()
    return {"name": name, "input_format": getattr(factory, "input_format", "?"), "description": doc[0] if doc else ""}


def _load_builtins() -> None:
    # Importing the modules registers their scorers; kept lazy so `import reward_models` stays light.
    from . import hf_scorer, image_scorers, paper_models, text_scorers, textnorm  # noqa: F401


def _import_dotted(path: str):
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"reward {path!r}: a dotted path reads 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"reward {path!r}: cannot import module {module_name!r} ({err})") from None
    try:
        return getattr(module, attr), attr
    except AttributeError:
        raise ValueError(f"reward {path!r}: module {module_name!r} has no attribute {attr!r}") from None


def is_dotted_path(name: str) -> bool:
    return ":" in name or ("." in name and not name.startswith(".") and "/" not in name)


def reward_display_name(spec: str) -> str:
    """The short name a reward spec gets in tables ('pkg.mod:brevity' -> 'brevity')."""
    if is_dotted_path(spec):
        return spec.split(":")[-1].split(".")[-1]
    return spec


def check_reward_names(names: Sequence[str], declared: dict[str, Any] | None = None, field: str = "rewards") -> None:
    """Raise a clear error for an unknown reward name, before anything heavy loads."""
    declared = declared or {}
    known = list_rewards()
    if not names:
        raise ValueError(f"`{field}` is empty: name at least one reward, e.g. {field}: [positivity, relevance]")
    for name in names:
        if name in declared and declared[name].get("type") == "textnorm":
            from .textnorm import check_textnorm

            check_textnorm(name, declared[name], declared)
            continue
        if name in declared or name in _REGISTRY:
            continue
        if is_dotted_path(name):
            _import_dotted(name)
            continue
        raise ValueError(
            f"`{field}`: unknown reward {name!r}. Known rewards: {', '.join(known)}. "
            "Declare a hub or local sequence classifier under `reward_models`, or give a dotted path "
            "'package.module:function' to your own scorer."
        )
    display = [reward_display_name(n) for n in names]
    if len(set(display)) != len(display):
        raise ValueError(f"`{field}`: reward names must be distinct, got {display}")


def _call_supported(
    factory: Callable, optional: dict[str, Any], strict: dict[str, Any] | None = None, where: str = ""
):
    """Call `factory` with the optional keywords it accepts (a lexicon takes no `device`) and every strict one."""
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    strict = strict or {}
    unknown = [k for k in strict if k not in params and not takes_any]
    if unknown:
        accepted = [k for k in params if k not in ("self", "kwargs")]
        raise ValueError(f"{where}: unknown field(s) {unknown}; this reward takes {accepted}")
    kwargs = {k: v for k, v in optional.items() if takes_any or k in params}
    try:
        return factory(**{**kwargs, **strict})
    except TypeError as err:
        if "required" in str(err) and "argument" in str(err):
            raise ValueError(
                f"{where or getattr(factory, '__name__', 'reward')}: {err}; e.g. give `model: <hub id or local "
                "folder>`"
            ) from None
        raise


def get_reward(name: str, declared: dict[str, Any] | None = None, **kwargs) -> RewardScorer:
    """Build the scorer named `name`.

    Args:
        name: a registry name, a name declared in `declared`, or a dotted path to a scorer class,
            factory, or plain function `f(prompts, responses) -> list[float]`.
        declared: `{name: {"model": hub id or path, "input_format": ..., "logit_index": ...}}` for
            sequence-classification reward models (and any other keyword the scorer takes).
        **kwargs: passed to the scorer's constructor (e.g. `device`, `batch_size`).
    """
    declared = declared or {}
    check_reward_names([name], declared)
    if name in declared:
        spec = dict(declared[name])
        kind = spec.pop("type", name if name in _REGISTRY else "sequence_classifier")
        if kind == "textnorm":  # it builds the rewards it normalises, which may be declared too
            spec = {"of": name, **spec, "declared": declared}
        factory = _REGISTRY.get(kind)
        if factory is None:
            raise ValueError(f"reward_models.{name}.type: unknown type {kind!r}; known: {', '.join(list_rewards())}")
        scorer = _call_supported(factory, kwargs, spec, where=f"reward_models.{name}")
        scorer.name = name
        return scorer
    if name in _REGISTRY:
        return _call_supported(_REGISTRY[name], kwargs)
    obj, attr = _import_dotted(name)
    if inspect.isclass(obj) and issubclass(obj, RewardScorer):
        scorer = _call_supported(obj, kwargs)
    elif callable(obj):
        produced = None
        try:
            if not inspect.signature(obj).parameters:
                produced = obj()  # a factory that takes no argument
        except (TypeError, ValueError):
            pass
        scorer = produced if isinstance(produced, RewardScorer) else FunctionScorer(obj, name=attr)
    else:
        raise ValueError(f"reward {name!r}: {attr!r} is neither a RewardScorer nor a function")
    scorer.name = reward_display_name(name)
    return scorer


def load_rewards(names: Sequence[str], declared: dict[str, Any] | None = None, **kwargs) -> list[RewardScorer]:
    """Build every scorer of a recipe (names checked first, then loaded)."""
    check_reward_names(names, declared)
    return [get_reward(n, declared, **kwargs) for n in names]
