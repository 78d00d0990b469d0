"""Configuration of the RL baselines: MORLHF (one RL run per preference point on the weighted sum
of rewards) and Rewarded Soups (one RL run per reward, mixed at generation time).

Why not PPO: TRL 1.0-1.9 shipped `trl.experimental.ppo` (PPOTrainer), which scores with a reward
*model* and trains a value model beside the policy, and takes no reward functions (the registry's
scorers, a weighted sum of several); later releases removed it, and the pinned TRL has none. The
baselines therefore run TRL's GRPOTrainer (PPO's clipped objective with a group baseline in place of
the value head) or, with `rl_algorithm: rloo`, RLOOTrainer. The paper's PPO settings carry over where
TRL has the knob: KL coefficient `beta` 0.2 (fixed: GRPO has no adaptive KL controller, the code's
starts at 0.2 with target 3), learning rate 1e-5, gradient clipping 0.5, LoRA, and rollouts sampled as
the code's PPO samples them (`rollout_*`: temperature 0.7, top_p 1.0, top_k 0, no end token as the first
token). `temperature` and `top_p` are the run's evaluation and `ric generate` settings, as for RiC, so
every method's front is sampled alike. `reward_weights` is set to each preference point, so GRPO
optimises sum_i w_i r_i (a plain weighted sum, checked against its logs); per-reward means are logged
as `rewards/<name>/mean`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig, SFTConfig

from ..config import DataConfig, ObjectivesConfig, SamplingConfig, resolve_device_defaults


@dataclass
class RLConfig(GRPOConfig, ObjectivesConfig):
    """TRL's `GRPOConfig` plus the objectives: one RL policy per weight vector (see MORLHFConfig, SoupsConfig)."""

    rl_algorithm: str = field(default="grpo", metadata={"help": "TRL online RL trainer.", "choices": ["grpo", "rloo"]})
    # --- GRPOConfig fields whose defaults change (paper's MORLHF / generation settings) -----------
    output_dir: str | None = field(default=None, metadata={"help": "Run directory."})
    beta: float = field(default=0.2, metadata={"help": "KL coefficient (paper: 0.2)."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Learning rate (paper: 1e-5)."})
    temperature: float = field(
        default=0.7,
        metadata={
            "help": "Sampling temperature of the evaluation and `ric generate` (RiC's setting, so that every "
            "method's front is sampled alike); the RL rollouts use rollout_temperature."
        },
    )
    top_p: float = field(
        default=0.9, metadata={"help": "Nucleus sampling of the evaluation and `ric generate` (RiC's setting)."}
    )
    rollout_temperature: float = field(
        default=0.7, metadata={"help": "Temperature of the RL rollouts (the paper's PPO: 0.7)."}
    )
    rollout_top_p: float = field(default=1.0, metadata={"help": "top_p of the RL rollouts (the paper's PPO: 1.0)."})
    rollout_top_k: int = field(
        default=0, metadata={"help": "top_k of the RL rollouts, 0 for none (the paper's PPO: 0)."}
    )
    rollout_end_first: bool = field(
        default=False,
        metadata={
            "help": "Whether a rollout may end at its first token (the paper's PPO suppresses the end token there; "
            "not applied with use_vllm)."
        },
    )
    max_grad_norm: float = field(default=0.5, metadata={"help": "Gradient clipping (the paper's PPO: 0.5)."})
    sampling_batch_size: int = field(
        default=32,
        metadata={
            "help": "Prompts per batched generate call in evaluation and `ric generate` (GRPO's rollouts use "
            "generation_batch_size)."
        },
    )
    max_completion_length: int | None = field(
        default=128, metadata={"help": "Max new tokens (paper: 128 assistant, 48 summary)."}
    )
    max_steps: int = field(default=1000, metadata={"help": "RL steps per run."})
    logging_steps: float = field(default=5, metadata={"help": "Log every N steps."})
    save_strategy: str = field(default="steps", metadata={"help": "Checkpoint strategy (resumable runs)."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every N steps."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept per run."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision (default: on for a bf16 GPU only)."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Gradient checkpointing (default: on for a GPU only)."}
    )

    def __post_init__(self):
        resolve_device_defaults(self)
        self.check_objectives()
        if self.output_dir is None:
            raise ValueError("output_dir: the run directory is required (e.g. output_dir: runs/demo-morlhf)")
        if self.sampling_batch_size < 1:
            raise ValueError(f"sampling_batch_size must be a positive integer, got {self.sampling_batch_size}")
        if not self.rollout_temperature > 0 or not 0 < self.rollout_top_p <= 1 or self.rollout_top_k < 0:
            raise ValueError(
                "rollout_temperature must be > 0, rollout_top_p in (0, 1] and rollout_top_k >= 0; got "
                f"{self.rollout_temperature}, {self.rollout_top_p}, {self.rollout_top_k}"
            )
        if self.rl_algorithm == "rloo":
            self.refuse_grpo_only_keys()
        super().__post_init__()

    def refuse_grpo_only_keys(self) -> None:
        """RLOOConfig has no field for some of GRPOConfig's settings: one set away from its default would be
        dropped on the way to RLOOTrainer, so it is refused by name."""
        import dataclasses

        from trl import RLOOConfig

        rloo = {f.name for f in dataclasses.fields(RLOOConfig)}
        for f in dataclasses.fields(self):
            if not f.init or f.name in rloo or f.name in _OWN_FIELDS:
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if getattr(self, f.name) != default:
                raise ValueError(
                    f"{f.name}: a GRPO setting that RLOOTrainer does not have (rl_algorithm: rloo); remove it, "
                    "or set rl_algorithm: grpo"
                )


# ric's own fields of the RL configs (not TRL's, so not passed to the trainer's config)
_OWN_FIELDS = {f for cls in (ObjectivesConfig,) for f in cls.__dataclass_fields__} | {
    "rl_algorithm",
    "sampling_batch_size",
    "rollout_temperature",
    "rollout_top_p",
    "rollout_top_k",
    "rollout_end_first",
    "preferences",
    "num_preference_points",
}


@dataclass
class MORLHFConfig(RLConfig):
    """MORLHF: one RL policy per preference point, each on sum_i w_i r_i."""

    preferences: list[str] | None = field(
        default=None,
        metadata={
            "help": "Preference points, one RL run each, as comma-separated weights ('0.2,0.8'). Default: "
            "num_preference_points evenly spread."
        },
    )
    num_preference_points: int = field(
        default=5,
        metadata={
            "help": "Evenly spread preference points when `preferences` is not given (2 objectives: 0, 0.25, ..., 1)."
        },
    )

    def __post_init__(self):
        if self.num_preference_points < 1:
            raise ValueError(f"num_preference_points must be >= 1, got {self.num_preference_points}")
        super().__post_init__()

    def policy_weights(self, num_objectives: int) -> list[list[float]]:
        """The preference points of the MORLHF runs."""
        from ..preference import parse_preference, simplex_lattice

        if self.preferences:
            return [parse_preference(p, num_objectives, field="preferences") for p in self.preferences]
        if num_objectives == 2:
            n = self.num_preference_points
            return [[round(i / (n - 1), 4), round(1 - i / (n - 1), 4)] for i in range(n)] if n > 1 else [[0.5, 0.5]]
        return [list(p) for p in simplex_lattice(num_objectives, max(1, self.num_preference_points - 1))]


@dataclass
class SoupsConfig(RLConfig):
    """Rewarded Soups: one RL policy per reward (one-hot weights), mixed with the preference at generation."""

    def policy_weights(self, num_objectives: int) -> list[list[float]]:
        """One-hot weights: policy i optimises reward i alone."""
        return [[float(i == j) for j in range(num_objectives)] for i in range(num_objectives)]


@dataclass
class SFTDataConfig(DataConfig):
    """Where the SFT rows come from: a task builder's chosen responses, or prompt/response columns."""

    response_column: str = field(default="response", metadata={"help": "Column holding the response."})
    rows_from_run: str | None = field(
        default=None,
        metadata={
            "help": "A RiC run directory whose prepared rows (RUN/data/train: the responses its prepare stage "
            "sampled) are the SFT rows, without score tags; a response the sampling budget cut trains without "
            "the end token when that run's recipe has eos_after_budget_cut: false, as RiC trains it; that "
            "run's prepare stage is charged to this run's compute. dataset_name / eval_dataset_name still give "
            "the evaluation prompts."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep at most this many training rows; None keeps all."}
    )


@dataclass
class SFTRunConfig(SFTConfig, SamplingConfig, ObjectivesConfig):
    """Supervised fine-tuning on the preferred responses (the paper's starting point for MORLHF and
    Rewarded Soups): TRL's `SFTConfig` with the paper's settings, plus the rewards its evaluation scores.
    The paper's code (`sft/sft.py`) puts the loss on the response only (TRL's completion-only collator after
    the response marker), one row per device, lr 1.4e-4 linear, 20,000 steps: TRL's prompt/completion
    rows give the same loss (`completion_only_loss`, on by default)."""

    output_dir: str | None = field(default=None, metadata={"help": "Run directory."})
    learning_rate: float = field(default=1.41e-4, metadata={"help": "Learning rate (paper's code: 1.4e-4)."})
    weight_decay: float = field(default=0.01, metadata={"help": "Weight decay (paper: 0.01)."})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Batch per device (paper's code: 1)."})
    max_steps: int = field(default=20000, metadata={"help": "Training steps (paper's code: 20,000)."})
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
        if self.output_dir is None:
            raise ValueError("output_dir: the run directory is required (e.g. output_dir: runs/hh_rlhf/sft)")
        super().__post_init__()
