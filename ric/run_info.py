"""`ric_run.json`: the one file generation needs, written in the run root and beside every adapter.

It names the method and the base model, the rewards (in tag order) and how they load, the template,
the default generation settings and what the method conditions on: for RiC and text-to-image the
normalisation statistics (mean/std of each raw reward over the training set) and the normalised
score range (low/high) the preference mapping uses; for the RL baselines their policies (one LoRA
adapter per weight vector).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .rundir import RUN_INFO, RunFileError, read_json, write_json

FORMAT_VERSION = 1


@dataclass
class RewardStats:
    """Per reward: mean and std of the raw scores over the training set (the paper's normalisation)."""

    mean: dict[str, float]
    std: dict[str, float]

    @classmethod
    def fit(cls, names, raw: np.ndarray) -> RewardStats:
        raw = np.asarray(raw, dtype=np.float64)
        mean = raw.mean(axis=0)
        std = raw.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)  # a constant reward normalises to 0, not to NaN
        return cls(mean=dict(zip(names, mean.tolist())), std=dict(zip(names, std.tolist())))

    def normalize(self, names, raw) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        mean = np.array([self.mean[n] for n in names])
        std = np.array([self.std[n] for n in names])
        return (raw - mean) / std

    def denormalize(self, names, normalized) -> np.ndarray:
        normalized = np.asarray(normalized, dtype=np.float64)
        return normalized * np.array([self.std[n] for n in names]) + np.array([self.mean[n] for n in names])

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}


@dataclass
class RunInfo:
    base_model: str
    rewards: list[str]
    template: str
    reward_stats: RewardStats | None = None
    score_low: list[float] | None = None
    score_high: list[float] | None = None
    method: str = "ric"
    policies: list[dict] | None = None  # RL baselines: [{"label", "weights", "adapter"}]
    reward_models: dict | None = None
    system_prompt: str | None = None
    preference_method: str = "l2"
    generation: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)
    adapter: str | None = None
    recipe: str | None = None
    format_version: int = FORMAT_VERSION

    @property
    def num_objectives(self) -> int:
        return len(self.rewards)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["reward_stats"] = self.reward_stats.to_dict() if self.reward_stats else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RunInfo:
        data = dict(data)
        if data.get("reward_stats") is not None:
            data["reward_stats"] = RewardStats(**data["reward_stats"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, folder: str | Path) -> None:
        write_json(Path(folder) / RUN_INFO, self.to_dict())


def build_run_info(
    method: str,
    base_model: str,
    args,
    rewards,
    *,
    model_args=None,
    reward_stats: dict | None = None,
    generation: dict | None = None,
    **fields,
) -> RunInfo:
    """The RunInfo every method writes, built in one place.

    `args`: the method's config (its objectives: reward_models, template, system_prompt; and, for text
    methods, the generation settings `max_completion_length`, `temperature`, `top_p`,
    `sampling_batch_size`, `trim_truncated`, unless `generation` is given). `model_args` adds how the
    base model loads; `reward_stats` (prepare's reward_stats.json) the normalisation and score range."""
    if generation is None:
        generation = dict(
            max_new_tokens=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            batch_size=args.sampling_batch_size,
            trim_truncated=args.trim_truncated,
        )
    if model_args is not None:
        from .models import model_load_kwargs

        kwargs = model_load_kwargs(model_args, args.trust_remote_code)
        fields["model_kwargs"] = {k: v for k, v in kwargs.items() if v not in (None, False, "main")}
    if reward_stats is not None:
        fields.update(
            reward_stats=RewardStats(mean=reward_stats["mean"], std=reward_stats["std"]),
            score_low=list(reward_stats["score_low"]),
            score_high=list(reward_stats["score_high"]),
        )
    return RunInfo(
        method=method,
        base_model=base_model,
        rewards=list(rewards),
        template=getattr(args, "template", "image"),
        reward_models=args.reward_models,
        system_prompt=getattr(args, "system_prompt", None),
        generation=generation,
        **fields,
    )


def load_run_info(path: str | Path) -> tuple[RunInfo, Path]:
    """Read `ric_run.json` from a run directory or an adapter folder; returns (info, folder)."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"{str(folder)!r} does not exist: give a run directory written by `ric train`")
    file = folder / RUN_INFO
    if not file.exists():
        raise FileNotFoundError(
            f"{str(folder)!r} has no {RUN_INFO}: it is not a trained run directory or adapter folder. "
            "Run `ric train` (or `ric run RECIPE.yaml`) to create one."
        )
    data = read_json(file)
    required = ("base_model", "rewards", "template")
    if not isinstance(data, dict) or any(k not in data for k in required):
        missing = [k for k in required if not isinstance(data, dict) or k not in data]
        raise RunFileError(
            f"{file}: missing field(s) {missing}; the file was damaged: restore it or train the run again"
        )
    try:
        return RunInfo.from_dict(data), folder
    except TypeError as err:
        raise RunFileError(f"{file}: unreadable ({err}); restore it or train the run again") from None


SCORE_RANGES = ("gaussian", "data", "quantiles")


def gaussian_range(num_objectives: int, seed: int = 8888, samples: int = 50_000) -> tuple[list[float], list[float]]:
    """The paper's code's evaluation range: per objective the min/max of `samples` standard-normal
    draws (NumPy's legacy generator seeded with `seed`, one draw set per objective in order)."""
    rng = np.random.RandomState(seed)
    draws = [rng.randn(samples) for _ in range(num_objectives)]
    return [float(d.min()) for d in draws], [float(d.max()) for d in draws]


def score_range(
    normalized: np.ndarray, kind: str = "data", quantile: float | None = None, seed: int = 8888, samples: int = 50_000
) -> tuple[list[float], list[float]]:
    """low/high of each normalised reward, which the preference mapping spreads targets over.

    gaussian: min/max of standard-normal draws (the paper's code, the same for every data set);
    data: min/max of the training scores; quantiles: the `quantile` / 1 - `quantile` quantiles."""
    normalized = np.asarray(normalized, dtype=np.float64)
    if kind == "gaussian":
        return gaussian_range(normalized.shape[1], seed, samples)
    if kind == "quantiles":
        low, high = np.quantile(normalized, quantile, axis=0), np.quantile(normalized, 1 - quantile, axis=0)
    elif kind == "data":
        low, high = normalized.min(axis=0), normalized.max(axis=0)
    else:
        raise ValueError(f"score_range: unknown {kind!r}; choose one of {', '.join(SCORE_RANGES)}")
    return [round(float(x), 4) for x in low], [round(float(x), 4) for x in high]
