"""Dynamic preference adjustment (paper stage 4): preference weights -> target scores -> score tags
in the prompt -> one batched generation with the run's single adapter.

    from ric import RiCGenerator
    gen = RiCGenerator.from_run("runs/demo")
    gen.generate(["How do I brew green tea?"], preference=[0.2, 0.8])
    # -> [{"prompt": ..., "response": ..., "targets": [..., ...], "preference": [0.2, 0.8]}]

The mapping itself (`linear`, `l2`, `linf`) is `ric.preference.preference_to_targets`; a request may
also give the normalised targets directly. Requests with different preferences differ only in
their prompt text, so they share every batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .generation import Condition, PolicyGenerator, adapter_info, load_policy, merge_for_inference, resolve_adapter
from .preference import check_targets, parse_preference, preference_to_targets
from .run_info import load_run_info


class RiCGenerator(PolicyGenerator):
    """Preference weights in, targets into the score tags, batched generation, responses out."""

    takes_targets = True

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ):
        """Load a trained run: `run_dir` is a run directory (its latest adapter is used) or an adapter folder.
        `dtype` ("bfloat16", ...) answers in another weight dtype than the run's."""
        info, folder = load_run_info(run_dir)
        adapter_dir = Path(adapter) if adapter else resolve_adapter(folder, info)
        info = adapter_info(adapter_dir, info)
        return cls(*load_policy(info, adapter_dir, device, merge=True, dtype=dtype), info)

    def prepare_points(self) -> None:
        merge_for_inference(self.model)  # after the base model's answers: disable_adapter() would unmerge

    def targets_for(self, preference, method: str | None = None) -> list[float]:
        weights = parse_preference(preference, self.info.num_objectives)
        return preference_to_targets(
            weights, self.info.score_low, self.info.score_high, method or self.info.preference_method
        )

    def condition(
        self, preference=None, targets: Sequence[float] | None = None, method: str | None = None
    ) -> Condition:
        if (preference is None) == (targets is None):
            raise ValueError("give either preference (weights) or targets (normalised scores), not both")
        if preference is not None:
            weights = parse_preference(preference, self.info.num_objectives)
            return Condition(key="ric", preference=tuple(weights), targets=tuple(self.targets_for(weights, method)))
        return Condition(
            key="ric",
            targets=tuple(check_targets(targets, self.info.score_low, self.info.score_high, self.info.rewards)),
        )
