"""Configuration of a PRT run (Portable Reward Tuning, Chijiwa et al., ICML 2025) on RiC's data.

PRT reads the same prepared rows as RiC (score tags in the prompt) and the same training settings
(a TRL `SFTConfig`: steps, learning rate, batch, LoRA), so `PRTConfig` is `RiCConfig` plus what PRT
adds: the entropy term and how r starts. There is no online stage. `PRTModelConfig` lets r train
fully (`use_peft: false`) as well as with LoRA (the default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .config import ModelConfig
from .ric_config import RiCConfig

REWARD_INITS = ("base", "zero_head")


@dataclass
class PRTModelConfig(ModelConfig):
    """The base model (frozen during training, the one r is first initialised from) and r's LoRA; with
    `use_peft: false` r is trained fully (all its weights saved)."""

    requires_peft: ClassVar[bool] = False


@dataclass
class PRTConfig(RiCConfig):
    """RiC's training settings plus PRT's: the policy is softmax(log_softmax(base logits) + r logits)."""

    prt_entropy_coef: float = field(
        default=0.0,
        metadata={
            "help": "alpha of the optional term -alpha * H(softmax(r)) added to the loss, which keeps r's own "
            "distribution broad (the paper tries 1e-5..1e-1); 0 leaves it out."
        },
    )
    prt_reward_init: str = field(
        default="base",
        metadata={
            "help": "How r starts: base (the paper's: r is a copy of the base, so the untrained policy is the base "
            "at temperature 1/2) or zero_head (r's output layer is a new matrix of zeros, trained with r: the "
            "untrained policy is the base itself).",
            "choices": list(REWARD_INITS),
        },
    )

    def __post_init__(self):
        if self.num_online_iterations:
            raise ValueError(
                "num_online_iterations: a PRT run has no online stage; set it to 0 (online augmentation is RiC's)"
            )
        if self.prt_entropy_coef < 0:
            raise ValueError(f"prt_entropy_coef must be >= 0, got {self.prt_entropy_coef}")
        super().__post_init__()
