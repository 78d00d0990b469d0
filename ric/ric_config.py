"""Configuration of a RiC run: its data options and RiC training (a TRL `SFTConfig` plus the
objectives, the score range, generation and the online stage). The model, prompts, objectives and
evaluation grid are shared with the baselines (`ric/config.py`).

Defaults are the paper's (docs/method.md): LoRA r 64 / alpha 128 /
dropout 0.05, lr 1.41e-4 with linear decay, weight decay 0.01, batch 2 per device, 20,000 offline
steps; online iterations of 20,000 generations, quantile 0.7, 10,000 original samples, 4,000 steps
at lr 1e-5 constant; generation with top_p 0.9 and temperature 0.7.

Departures, all switchable: bf16 and gradient checkpointing default to on only on a GPU (on this
kind of 2-core CPU bf16 runs ~13x slower and checkpointing costs ~20%); `template: chat` exists
for chat-template models such as the embedded SmolLM2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from .config import DataConfig, ObjectivesConfig, SamplingConfig, check_score_range, resolve_device_defaults
from .preference import PREFERENCE_METHODS


@dataclass
class RiCDataConfig(DataConfig):
    """The data options of RiC's prepare stage: responses given or sampled, and how they are sampled."""

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
            "budget loses its unfinished last sentence), so the data holds short and long answers. With S "
            "system turns, "
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
class RiCConfig(SFTConfig, SamplingConfig, ObjectivesConfig):
    """TRL's `SFTConfig` plus what RiC adds: the rewards, the score-tag template, the score range,
    generation settings, and the online augmentation stage. Paper defaults; see the module docstring."""

    score_range: str = field(
        default="gaussian",
        metadata={
            "help": "low/high of each normalised reward, which the preference mapping spreads targets over: gaussian "
            "(the paper's code: min/max of score_range_samples standard-normal draws seeded with score_range_seed, "
            "about -4.1..4.1), data (min/max of the training scores) or quantiles (score_range_quantile and 1 - it).",
            "choices": ["gaussian", "data", "quantiles"],
        },
    )
    score_range_quantile: float | None = field(
        default=None, metadata={"help": "score_range quantiles only: the lower quantile (default 0.05)."}
    )
    score_range_seed: int = field(default=8888, metadata={"help": "score_range gaussian only: the draws' seed."})
    score_range_samples: int = field(
        default=50000, metadata={"help": "score_range gaussian only: standard-normal draws per objective."}
    )
    preference_method: str = field(
        default="l2",
        metadata={
            "help": "Default preference -> target mapping for `ric generate`.",
            "choices": list(PREFERENCE_METHODS),
        },
    )
    group_rows_by_prompt: bool = field(
        default=False,
        metadata={
            "help": "Batch the rows of one prompt together (its answers at different scores, e.g. one draw cut at "
            "two budgets): the prompts are shuffled every epoch and each brings all its rows into the same "
            "batch, so a step sees answers that differ in their tags side by side. False: rows drawn at "
            "random (the original code)."
        },
    )
    eos_after_budget_cut: bool = field(
        default=True,
        metadata={
            "help": "Train rows whose sampled answer the sampling budget cut (prepare's cut_by_budget column: "
            "the answer, trimmed to its last sentence, had not ended) with the end-of-sequence token, like "
            "every other row (the original code). False: without it, so the model learns their text but "
            "not to stop where the sampler's budget stopped it. Online iterations flag their own generations "
            "that ran to max_completion_length the same way, and keep the flag of the original rows they mix in."
        },
    )
    # --- generation (sampling responses, online augmentation, evaluation): SamplingConfig, and ----
    generation_backend: str = field(
        default="auto",
        metadata={
            "help": "Online generation engine: 'auto' (vLLM when installed and CUDA is present, else "
            "transformers), 'transformers' or 'vllm'.",
            "choices": ["auto", "transformers", "vllm"],
        },
    )
    # --- online augmentation (paper stage 3) ---------------------------------------------------------
    num_online_iterations: int = field(default=0, metadata={"help": "Online augmentation iterations (paper: 1-2)."})
    online_num_generations: int = field(default=20000, metadata={"help": "Generations per online iteration."})
    online_quantile: float = field(default=0.7, metadata={"help": "Keep a row if ANY score is >= this quantile."})
    online_num_origin_samples: int = field(default=10000, metadata={"help": "Original rows kept by the same filter."})
    online_max_steps: int = field(default=4000, metadata={"help": "Training steps per online iteration."})
    online_learning_rate: float = field(default=1e-5, metadata={"help": "Learning rate of online iterations."})
    online_learning_rate_decay: float = field(
        default=1.0,
        metadata={
            "help": "Online iteration k (from 1) trains at online_learning_rate x decay^(k-1): 1.0 keeps one rate "
            "for every iteration (the paper's code); below 1, later iterations move the adapter less."
        },
    )
    online_lr_scheduler_type: str = field(default="constant", metadata={"help": "Scheduler of online iterations."})
    online_target_range: str = field(
        default="normal",
        metadata={
            "help": "Online goal range: 'normal' (paper: min/max of a standard normal sample, ~-4.3..4.3) or "
            "'data' (the run's normalised score range).",
            "choices": ["normal", "data"],
        },
    )
    online_goal_sampling: str = field(
        default="min_of_uniform",
        metadata={
            "help": "How the free objective of an online goal is drawn: min_of_uniform (the paper's code: every "
            "objective drawn uniformly, the smallest kept) or uniform (the paper's text: one uniform draw).",
            "choices": ["min_of_uniform", "uniform"],
        },
    )
    online_target_low: float | None = field(
        default=None, metadata={"help": "Explicit low end of the online goal range (overrides online_target_range)."}
    )
    online_target_high: float | None = field(
        default=None, metadata={"help": "Explicit high end of the online goal range (overrides online_target_range)."}
    )
    online_generation_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weight dtype the online iteration generates in (default: the run's dtype; the evaluation keeps "
            "the run's). bfloat16 decodes faster at small batches on a CPU with bf16 instructions, not at the "
            "demo's batch of 128 (bench/results/generation_dtype.json).",
            "choices": ["auto", "float32", "bfloat16", "float16"],
        },
    )
    generation_chunk_size: int = field(
        default=256,
        metadata={"help": "Generations written per resumable chunk (sampling in prepare, online generation)."},
    )

    # --- SFTConfig fields whose defaults change -----------------------------------------------------
    output_dir: str | None = field(default=None, metadata={"help": "Run directory: data, adapter, evaluation."})
    learning_rate: float = field(default=1.41e-4, metadata={"help": "Offline learning rate (paper: 1.41e-4)."})
    weight_decay: float = field(default=0.01, metadata={"help": "Weight decay (paper: 0.01)."})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Batch per device (paper: 2 x 4 GPUs)."})
    max_steps: int = field(default=20000, metadata={"help": "Offline training steps (paper: 20,000)."})
    max_length: int | None = field(default=1024, metadata={"help": "Max tokens of prompt + response."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision (default: on for a bf16 GPU only)."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Gradient checkpointing (default: on for a GPU only)."}
    )

    def __post_init__(self):
        resolve_device_defaults(self)
        self.check_objectives()
        check_score_range(self)
        if not 0 < self.online_quantile < 1:
            raise ValueError(f"online_quantile must be in (0, 1), got {self.online_quantile}; the paper uses 0.7")
        if not 0 < self.online_learning_rate_decay <= 1:
            raise ValueError(
                f"online_learning_rate_decay must be in (0, 1], got {self.online_learning_rate_decay}; "
                "1.0 trains every online iteration at online_learning_rate"
            )
        for name in (
            "max_completion_length",
            "sampling_batch_size",
            "online_num_generations",
            "online_max_steps",
            "generation_chunk_size",
        ):
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
        if self.online_generation_dtype is not None:
            from .generation import check_inference_dtype

            check_inference_dtype(self.online_generation_dtype, "online_generation_dtype")
        if self.output_dir is None:
            raise ValueError("output_dir: the run directory is required (e.g. output_dir: runs/demo)")
        super().__post_init__()
