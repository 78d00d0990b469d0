"""Rewarded Soups: one RL policy per reward (training in `rl.py`), mixed with the preference weights.

At generation time the per-reward LoRA adapters are mixed in memory, theta = sum_i w_i theta_i,
through PEFT's `add_weighted_adapter(..., combination_type="cat")`, which stacks the LoRA factors
(the rank adds up) and so reproduces sum_i w_i delta_W_i exactly; "linear" would not (cross terms).
No merged model is written to disk. A generator keeps the mixes of the last few distinct
preferences it answered (`max_mixes`), and their weights beside them: a condition's key spells its
weights exactly, so a mix evicted from the cache is rebuilt from the key alone.
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
    if not getattr(
        model, "training", True
    ):  # the new adapter's dropout modules are made in training mode: they would drop
        model.eval()
    return name


class SoupsGenerator(BaselineGenerator):
    """Answers each preference with the per-reward adapters mixed at its weights (mixes cached)."""

    max_mixes = 8

    def __init__(self, model, tokenizer, info):
        super().__init__(model, tokenizer, info)
        self.mixes: OrderedDict[str, str] = OrderedDict()  # condition key -> adapter name, least recent first
        self.weights: dict[str, tuple[float, ...]] = {}  # the weights of each cached mix (the same keys)
        self.made = 0  # mixes built so far (their adapter names)

    def condition(self, preference=None, targets=None, method: str | None = None) -> Condition:
        if targets is not None or preference is None:
            raise ValueError(
                "targets: a Rewarded Soups run writes no score tags; give a preference (one weight per reward)"
            )
        if method is not None:
            raise ValueError("method: a Rewarded Soups run maps no preference to targets; leave the mapping out")
        weights = tuple(parse_preference(preference, self.info.num_objectives))
        key = "mix:" + ",".join(repr(w) for w in weights)  # repr: the float's exact value, read back below
        return Condition(key=key, preference=weights, policy=f"mix {weights_label(weights)}")

    @staticmethod
    def key_weights(key: str) -> tuple[float, ...]:
        """The weights a condition key spells (`mix:w1,w2,...`)."""
        if not key.startswith("mix:"):
            raise ValueError(f"{key!r} is not a Rewarded Soups condition key (mix:w1,w2,...)")
        return tuple(float(w) for w in key[4:].split(","))

    def activate(self, key: str) -> None:
        if key not in self.mixes:
            weights = self.key_weights(key)
            self.made += 1
            name = f"mix_{self.made}"
            while name in self.model.peft_config:
                name += "_"
            mix_adapters(self.model, [adapter_name(p["label"]) for p in self.info.policies], weights, name)
            self.mixes[key], self.weights[key] = name, weights
            while len(self.mixes) > self.max_mixes:
                old_key, old = self.mixes.popitem(last=False)
                del self.weights[old_key]
                self.model.delete_adapter(old)
        self.mixes.move_to_end(key)
        self.model.set_adapter(self.mixes[key])


def evaluate(run, eval_dir=None, overrides=None, progress: bool = True, step: int | None = None) -> dict:
    """Soups' front: the preference grid, each point answered by its mix (at trainer step `step`: of the
    policies' checkpoints of that step)."""
    return evaluate_baseline(run, SoupsGenerator, eval_dir, overrides, progress, step=step)
