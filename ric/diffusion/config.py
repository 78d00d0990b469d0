"""Configuration of RiC for text-to-image (`method: diffusion` in a recipe).

Paper: Stable Diffusion v1.5, LoRA on the UNet attention projections, captions conditioned as
`<rm1> s1 <rm2> s2` beside the caption, 10% of captions dropped to empty for classifier-free
guidance, aesthetic and compressibility rewards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import check_score_range
from ..preference import PREFERENCE_METHODS

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@dataclass
class DiffusionConfig:
    """Everything of a text-to-image RiC run but the evaluation grid (`ric.config.EvaluationConfig`)."""

    output_dir: str | None = field(default=None, metadata={"help": "Run directory."})
    model_name_or_path: str = field(
        default=SD15,
        metadata={
            "help": "Stable Diffusion pipeline: hub id, local folder, or 'tiny:stable-diffusion' (smoke "
            f"tests). Default {SD15}."
        },
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Training images: a folder with metadata.jsonl (file_name, text), or a datasets dataset "
            "(save_to_disk folder or hub id) with image and caption columns."
        },
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split of a datasets dataset."})
    image_column: str = field(default="image", metadata={"help": "Image column of a datasets dataset."})
    caption_column: str = field(default="text", metadata={"help": "Caption column."})
    eval_captions: list[str] | None = field(
        default=None,
        metadata={
            "help": "Captions used by `ric evaluate` (default: the first eval_num_prompts distinct training "
            "captions, 4 when that is not set)."
        },
    )
    rewards: list[str] | None = field(
        default=None,
        metadata={"help": "Image rewards in tag order (compressibility, aesthetic, colorfulness, or dotted paths)."},
    )
    reward_models: dict | str | None = field(
        default=None,
        metadata={"help": "Reward settings, e.g. {aesthetic: {head: path/to/head.safetensors, clip_model: ...}}."},
    )
    reward_batch_size: int = field(default=16, metadata={"help": "Images per reward forward pass."})
    score_range: str = field(
        default="data",
        metadata={
            "help": "low/high of each normalised reward for the preference mapping: data (min/max of the training "
            "images' scores), quantiles (score_range_quantile and 1 - it) or gaussian (min/max of "
            "score_range_samples standard-normal draws seeded with score_range_seed).",
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
        default="l2", metadata={"help": "Preference -> target mapping.", "choices": list(PREFERENCE_METHODS)}
    )
    resolution: int = field(default=512, metadata={"help": "Training resolution (SD1.5: 512)."})
    train_batch_size: int = field(default=4, metadata={"help": "Images per device per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps accumulated per update."})
    max_train_steps: int = field(default=10000, metadata={"help": "Optimizer steps."})
    learning_rate: float = field(default=1e-4, metadata={"help": "LoRA learning rate."})
    lr_scheduler: str = field(default="constant", metadata={"help": "diffusers scheduler name."})
    lr_warmup_steps: int = field(default=0, metadata={"help": "Warm-up steps."})
    lora_r: int = field(default=32, metadata={"help": "LoRA rank on to_q/to_k/to_v/to_out.0."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    train_text_encoder: bool = field(
        default=False,
        metadata={
            "help": "Also train a LoRA (same rank and alpha) on the text encoder's attention projections "
            "(q_proj, k_proj, v_proj, out_proj), as diffusers' LoRA scripts offer: the score tags are numbers, "
            "which a text encoder that never learned to read them passes on only faintly."
        },
    )
    caption_dropout: float = field(
        default=0.1,
        metadata={"help": "Fraction of captions dropped to empty (paper: 10%, for classifier-free guidance)."},
    )
    noise_offset: float = field(
        default=0.0,
        metadata={
            "help": "Offset noise, as diffusers' training scripts offer: every image's noise gets a constant per "
            "channel drawn with this std (0.1 is usual). Plain noise leaves an image's mean colour readable at "
            "almost every step, so the UNet never learns to set it from the caption; with the offset it must. "
            "0 (the paper's): off."
        },
    )
    mixed_precision: str = field(
        default="no", metadata={"help": "accelerate mixed precision.", "choices": ["no", "fp16", "bf16"]}
    )
    checkpointing_steps: int = field(default=500, metadata={"help": "Save a resumable checkpoint every N steps."})
    checkpoints_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    guidance_scale: float = field(default=7.5, metadata={"help": "Classifier-free guidance scale at generation."})
    num_inference_steps: int = field(default=50, metadata={"help": "Denoising steps at generation."})
    seed: int = field(default=0, metadata={"help": "Seed of training, caption dropout and generation."})
    logging_steps: int = field(default=10, metadata={"help": "Record the loss every N steps."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Data loading workers."})

    def __post_init__(self):
        import json

        if self.output_dir is None:
            raise ValueError("output_dir: the run directory is required")
        if isinstance(self.reward_models, str):
            self.reward_models = json.loads(self.reward_models) if self.reward_models.strip() else None
        if isinstance(self.rewards, str):
            self.rewards = [r for r in self.rewards.replace(" ", ",").split(",") if r]
        check_score_range(self)
        if self.noise_offset < 0:
            raise ValueError(f"noise_offset must be >= 0 (0 turns it off), got {self.noise_offset}")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        for name in ("resolution", "train_batch_size", "max_train_steps", "lora_r", "num_inference_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8 (the VAE's downsampling), got {self.resolution}")
