"""ric: Rewards-in-Context (Yang et al., ICML 2024) on Hugging Face TRL.

Reward scores are written into prompts, a LoRA adapter is fine-tuned once on
(prompt + scores -> response), and at generation time preference weights are mapped to target
scores that go into the prompt. One training run serves every trade-off.

Public API:
    preference_to_targets(preference, low, high, method="l2") -> list[float]
    add_score_tags(prompt, scores, template="assistant") -> str
    pareto_front(points) -> list of non-dominated points (maximisation)
    hypervolume(points, reference) -> float (maximisation, any dimension >= 2)
    sample_targets(n, num_objectives, low, high, seed) -> targets near the Pareto front (online stage)
    select_by_quantile(scores, quantile) -> mask of rows kept by multi-objective rejection sampling
    RiCGenerator.from_run(run_dir).generate(prompts, preference=[...])
"""

from .online import sample_targets, select_by_quantile
from .pareto import hypervolume, pareto_front, preference_following
from .preference import parse_preference, preference_grid, preference_to_targets
from .score_tags import add_score_tags, parse_score_tags

__version__ = "0.1.0"

__all__ = [
    "RiCGenerator",
    "add_score_tags",
    "hypervolume",
    "parse_preference",
    "parse_score_tags",
    "pareto_front",
    "preference_following",
    "preference_grid",
    "preference_to_targets",
    "sample_targets",
    "select_by_quantile",
]


def __getattr__(name):
    # Heavy imports (torch, transformers) only when the generation API is used.
    if name == "RiCGenerator":
        from .inference import RiCGenerator

        return RiCGenerator
    raise AttributeError(f"module 'ric' has no attribute {name!r}")
