"""MORLHF: one RL policy per preference point, each optimising sum_i w_i r_i (training in `rl.py`).

A MORLHF run can only answer with the preferences it was trained on: `ric generate` (and
`ric serve`) answer a preference with the trained policy nearest to it (Euclidean distance between
weight vectors, the first on ties) and name that policy in the output.
"""

from __future__ import annotations

from ..generation import Condition
from ..preference import parse_preference
from .rl import BaselineGenerator, adapter_name, evaluate_baseline


class MORLHFGenerator(BaselineGenerator):
    """Answers each preference with the nearest trained policy."""

    def nearest_policy(self, weights) -> dict:
        def distance(policy):
            return sum((a - b) ** 2 for a, b in zip(policy["weights"], weights))

        return min(self.info.policies, key=distance)

    def condition(self, preference=None, targets=None, method: str | None = None) -> Condition:
        if targets is not None or preference is None:
            raise ValueError("targets: a MORLHF run writes no score tags; give a preference (one weight per reward)")
        if method is not None:
            raise ValueError("method: a MORLHF run maps no preference to targets; leave the mapping out")
        weights = parse_preference(preference, self.info.num_objectives)
        policy = self.nearest_policy(weights)
        return Condition(key=policy["label"], preference=tuple(weights), policy=policy["label"])

    def activate(self, key: str) -> None:
        self.model.set_adapter(adapter_name(key))


def evaluate(run, eval_dir=None, overrides=None, progress: bool = True, step: int | None = None) -> dict:
    """MORLHF's front: every trained policy at its own preference point (at trainer step `step`: each
    policy's checkpoint of that step)."""
    return evaluate_baseline(run, MORLHFGenerator, eval_dir, overrides, progress, step=step)
