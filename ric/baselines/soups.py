"""Rewarded Soups: one RL policy per reward (training in `rl.py`), mixed with the preference weights.

At generation time the per-reward LoRA adapters are mixed in memory, theta = sum_i w_i theta_i,
through PEFT's `add_weighted_adapter(..., combination_type="cat")`, which stacks the LoRA factors
(the rank adds up) and so reproduces sum_i w_i delta_W_i exactly; "linear" would not (cross terms).
No merged model is written to disk. A generator keeps the mixes of the last few distinct
preferences it answered.
"""

from __future__ import annotations

from collections import OrderedDict

from ..generation import Condition
from ..preference import parse_preference
from .rl import BaselineGenerator, adapter_name, evaluate_baseline, weights_label


def mix_adapters(model, adapters: list[str], weights, name: str) -> str:
    """A new adapter `name` on `model` whose delta is sum_i w_i delta_W_i (nothing written to disk)."""
    model.add_weighted_adapter(list(adapters), [float(w) for w in weights], name, combination_type="cat")
    model.set_adapter(name)
    return name


class SoupsGenerator(BaselineGenerator):
    """Answers each preference with the per-reward adapters mixed at its weights (mixes cached)."""

    max_mixes = 8

    def __init__(self, model, tokenizer, info):
        super().__init__(model, tokenizer, info)
        self.mixes: OrderedDict[str, str] = OrderedDict()  # condition key -> adapter name, least recent first
        self.weights: dict[str, tuple[float, ...]] = {}

    def condition(self, preference=None, targets=None, method: str | None = None) -> Condition:
        if targets is not None or preference is None:
            raise ValueError(
                "targets: a Rewarded Soups run writes no score tags; give a preference (one weight per reward)"
            )
        if method is not None:
            raise ValueError("method: a Rewarded Soups run maps no preference to targets; leave the mapping out")
        weights = tuple(parse_preference(preference, self.info.num_objectives))
        key = "mix:" + ",".join(repr(w) for w in weights)
        self.weights[key] = weights
        return Condition(key=key, preference=weights, policy=f"mix {weights_label(weights)}")

    def activate(self, key: str) -> None:
        if key not in self.mixes:
            name = f"mix_{len(self.weights)}_{len(self.mixes)}"
            while name in self.model.peft_config:
                name += "_"
            mix_adapters(self.model, [adapter_name(p["label"]) for p in self.info.policies], self.weights[key], name)
            self.mixes[key] = name
            while len(self.mixes) > self.max_mixes:
                _, old = self.mixes.popitem(last=False)
                self.model.delete_adapter(old)
        self.mixes.move_to_end(key)
        self.model.set_adapter(self.mixes[key])


def evaluate(run, eval_dir=None, overrides=None, progress: bool = True) -> dict:
    """Soups' front: the preference grid, each point answered by its mix."""
    return evaluate_baseline(run, SoupsGenerator, eval_dir, overrides, progress)
