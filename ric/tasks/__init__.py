"""Dataset builders for the paper's tasks (the Helpful Assistant and Reddit Summary tasks; docs/method.md).

A builder turns a hub dataset (or a local copy in the same schema) into the (prompt, response)
training rows and held-out evaluation prompts that `ric prepare` scores. Select one with
`dataset_builder: hh_rlhf` or `dataset_builder: summarize_from_feedback` in a recipe.
"""

from .hh_rlhf import build_hh_rlhf
from .summarize import build_summarize_from_feedback

BUILDERS = {
    "hh_rlhf": build_hh_rlhf,
    "summarize_from_feedback": build_summarize_from_feedback,
}

__all__ = ["BUILDERS", "build_hh_rlhf", "build_summarize_from_feedback"]
