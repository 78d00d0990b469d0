"""RiC for text-to-image: score-tagged captions, LoRA on a stock diffusers UNet, image rewards,
preference-controlled generation (`prepare.py`, `train.py`, `generate.py`; `tiny.py` builds the
tiny pipeline of the tests and the smoke recipe).

It reuses the text side's preference mapping (`ric.preference`), reward registry (`reward_models`),
normalisation statistics, report and run-directory conventions; diffusers is imported only here,
so the text path never needs it.
"""

from . import shapes_clip  # noqa: E402,F401  (registers the `shapes_clip` reward; numpy only at import)
