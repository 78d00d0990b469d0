"""Reward registry for `ric`: named scorers of (prompt, response) batches.

    from reward_models import get_reward, list_rewards
    positivity = get_reward("positivity")
    positivity(["How are you?"], ["Wonderful, thanks!"])  # -> [0.76...]

Built-in scorers register on first use; add your own with `@register_reward("name")` or by a dotted
path ('package.module:function') in a recipe's `rewards` list.
"""

from .image_scorers import ImageScorer, to_image
from .loading import load_pretrained
from .registry import (
    INPUT_FORMATS,
    FunctionScorer,
    RewardScorer,
    check_reward_names,
    get_reward,
    list_rewards,
    load_rewards,
    register_reward,
    reward_display_name,
    reward_summary,
)
from .textnorm import combine_probabilities, textnorm_probabilities, textnorm_records

__all__ = [
    "INPUT_FORMATS",
    "FunctionScorer",
    "ImageScorer",
    "RewardScorer",
    "check_reward_names",
    "combine_probabilities",
    "get_reward",
    "list_rewards",
    "load_pretrained",
    "load_rewards",
    "register_reward",
    "reward_display_name",
    "reward_summary",
    "textnorm_probabilities",
    "textnorm_records",
    "to_image",
]
