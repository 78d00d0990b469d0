"""TextNorm's arithmetic (Kim et al., ICLR 2024, "Confidence-aware Reward Optimization for Fine-tuning
Text-to-Image Models"): a prompt-dependent reward made comparable across prompts.

An output is scored under its own prompt and under K contrastive prompts (the prompt with its content
changed); the K + 1 scores of a row are scaled min-max to [0, scale], passed through a softmax, and
the own prompt's probability is the reward. Several reward models combine by the mean of their
probabilities, or the mean minus lambda times their variance ("uncertainty"). These functions are the
arithmetic only, plain NumPy; the contrastive prompts and the scorers come from elsewhere.
"""

from __future__ import annotations

import numpy as np

ENSEMBLES = ("mean", "uncertainty")


def textnorm_probabilities(scores, scale: float) -> np.ndarray:
    """Each row's own-prompt probability: `scores` of shape (n, 1 + K), the own prompt in column 0 and the K
    contrastive prompts after it; per row min-max scaled to [0, scale], then softmax, column 0 returned.
    A row whose scores are all equal gives 1 / (1 + K) (no evidence either way)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"scores: expected shape (n, 1 + K) with K >= 1 contrastive prompts, got {scores.shape}; "
            "column 0 is the own prompt's score"
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores: NaN or infinite values; every score must be finite")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    low, high = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    scaled = scale * (scores - low) / span
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    weights = np.exp(scaled)
    return weights[:, 0] / weights.sum(axis=1)


def combine_probabilities(probabilities, method: str = "mean", lam: float = 0.0) -> np.ndarray:
    """An ensemble of TextNorm rewards: `probabilities` of shape (models, n) -> (n,), their mean, or with
    `uncertainty` the mean minus `lam` times their variance across models."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] < 1:
        raise ValueError(f"probabilities: expected shape (models, n), got {probabilities.shape}")
    if method not in ENSEMBLES:
        raise ValueError(f"method: {method!r} is not one of {list(ENSEMBLES)}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    mean = probabilities.mean(axis=0)
    if method == "mean":
        return mean
    return mean - lam * probabilities.var(axis=0)


def textnorm_records(scorers) -> dict:
    """{name: record} of the TextNorm rewards among `scorers` (their settings, counts and every prompt's
    contrasts), for the run directory; empty when none normalises."""
    return {s.name: s.record() for s in scorers if hasattr(s, "record")}


# --- TextNorm as a reward of the registry -----------------------------------------------------------------

# input formats of scorers that never read the prompt: normalising over prompts changes nothing there
PROMPT_BLIND = ("response", "image")
TEXTNORM_FIELDS = ("of", "scale", "contrasts", "source", "path", "ensemble", "lam", "seed")


def check_textnorm(name: str, spec: dict, declared: dict | None = None) -> None:
    """Refuse a bad TextNorm declaration by its field, before any model loads: the rewards it normalises
    (known, reading the prompt), K >= 1, scale > 0, the source and its file, the ensemble."""
    from .contrasts import SOURCES, check_contrast_file, read_prompts
    from .registry import _REGISTRY, _load_builtins

    where = f"reward_models.{name}"
    unknown = sorted(set(spec) - set(TEXTNORM_FIELDS) - {"type", "batch_size", "device"})
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; TextNorm takes {list(TEXTNORM_FIELDS)}")
    inner = spec.get("of", name)
    inner = [inner] if isinstance(inner, str) else inner
    if not isinstance(inner, list) or not inner or not all(isinstance(n, str) for n in inner):
        raise ValueError(f"{where}.of: the reward(s) to normalise, a name or a list of names, got {spec.get('of')!r}")
    _load_builtins()
    for reward in inner:
        other = (declared or {}).get(reward) if reward != name else None
        if other is not None:  # declared: its own input_format, else its registered type's
            kind = _REGISTRY.get(other.get("type", reward))
            fmt = other.get("input_format", getattr(kind, "input_format", "prompt_response"))
        elif reward in _REGISTRY:
            fmt = getattr(_REGISTRY[reward], "input_format", "prompt_response")
        else:
            raise ValueError(
                f"{where}.of: unknown reward {reward!r}; TextNorm normalises a registered or declared one"
            )
        if fmt in PROMPT_BLIND:
            raise ValueError(
                f"{where}.of: {reward!r} does not read the prompt (input_format {fmt}): its score is the same under "
                "every prompt, so TextNorm would give every answer 1 / (1 + K); normalise a prompt-dependent reward "
                "(e.g. relevance, a caption scorer, a prompt_response classifier)"
            )
    k, scale = spec.get("contrasts", 8), spec.get("scale", 3.0)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{where}.contrasts: K contrastive prompts per prompt, an integer >= 1, got {k!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"{where}.scale: the softmax's range c, a number > 0, got {scale!r}")
    source = spec.get("source", "rules")
    if source not in SOURCES:
        raise ValueError(f"{where}.source: {source!r} is not one of {', '.join(SOURCES)}")
    if source in ("dataset", "file") and not spec.get("path"):
        what = "a JSONL of {prompt} rows to draw neighbours from" if source == "dataset" else "the contrasts JSONL"
        raise ValueError(f"{where}.path: source {source} needs {what}")
    if source == "file":
        try:
            check_contrast_file(spec["path"])
        except ValueError as err:
            raise ValueError(f"{where}.path: {err}") from None
    if source == "dataset":
        try:
            read_prompts(spec["path"])
        except ValueError as err:
            raise ValueError(f"{where}.path: {err}") from None
    ensemble, lam = spec.get("ensemble", "mean"), spec.get("lam", 0.0)
    if ensemble not in ENSEMBLES:
        raise ValueError(f"{where}.ensemble: {ensemble!r} is not one of {list(ENSEMBLES)}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
        raise ValueError(f"{where}.lam: the uncertainty weight, a number >= 0, got {lam!r}")


def _register():
    from .registry import RewardScorer, get_reward, register_reward

    @register_reward("textnorm")
    class TextNormScorer(RewardScorer):
        """TextNorm: a prompt-dependent reward as the probability of its own prompt among K contrastive ones."""

        input_format = "prompt_response"

        def __init__(
            self,
            of=None,
            scale: float = 3.0,
            contrasts: int = 8,
            source: str = "rules",
            path: str | None = None,
            ensemble: str = "mean",
            lam: float = 0.0,
            seed: int = 0,
            batch_size: int = 64,
            device: str | None = None,
            declared: dict | None = None,
        ):
            from .contrasts import NearestPrompts, check_contrast_file, read_prompts

            names = [of] if isinstance(of, str) else list(of or [])
            # an inner reward is the registry's or declared; a TextNorm declaration under its name is this one itself
            own = {k: v for k, v in (declared or {}).items() if v.get("type") != "textnorm"}
            self.inner = [get_reward(n, own or None) for n in names]
            self.input_format = self.inner[0].input_format
            self.scale, self.k, self.source, self.seed = float(scale), int(contrasts), source, seed
            self.ensemble, self.lam, self.batch_size = ensemble, float(lam), batch_size
            self.table = check_contrast_file(path) if source == "file" else None
            self.nearest = NearestPrompts(read_prompts(path), device=device) if source == "dataset" else None
            self.made: dict[str, list[str]] = {}  # prompt -> its contrasts (what was used, for the record)
            self.counts = {"prompts": 0, "without_contrast": 0, "fewer_than_k": 0, "rows_without_contrast": 0}

        def contrasts_for(self, prompts: list[str]) -> list[list[str]]:
            from .contrasts import rule_contrasts

            new = [p for p in dict.fromkeys(prompts) if p not in self.made]
            if new:
                if self.source == "rules":
                    made = [rule_contrasts(p, self.k, self.seed) for p in new]
                elif self.source == "dataset":
                    made = self.nearest(new, self.k)
                else:
                    made = [self.table.get(p, [])[: self.k] for p in new]
                for prompt, contrasts in zip(new, made):
                    self.made[prompt] = contrasts
                    self.counts["prompts"] += 1
                    self.counts["without_contrast"] += not contrasts
                    self.counts["fewer_than_k"] += 0 < len(contrasts) < self.k
            return [self.made[p] for p in prompts]

        def probabilities(self, prompts: list[str], responses: list) -> np.ndarray:
            """(models, n): each inner reward's own-prompt probability per row."""
            contrasts = self.contrasts_for(prompts)
            pair_prompts, pair_responses, spans = [], [], []
            for prompt, response, others in zip(prompts, responses, contrasts):
                spans.append((len(pair_prompts), 1 + len(others)))
                pair_prompts += [prompt, *others]
                pair_responses += [response] * (1 + len(others))
            out = []
            for scorer in self.inner:
                scores = np.asarray(scorer(pair_prompts, pair_responses), dtype=np.float64)
                row = np.empty(len(prompts))
                for i, (start, width) in enumerate(spans):
                    # no contrast: no evidence either way, the value equal scores give (counted, never 1.0)
                    row[i] = (
                        textnorm_probabilities(scores[None, start : start + width], self.scale)[0]
                        if width > 1
                        else 1 / (1 + self.k)
                    )
                out.append(row)
            return np.asarray(out)

        def _score_batch(self, prompts, responses):
            probabilities = self.probabilities(list(prompts), list(responses))
            self.counts["rows_without_contrast"] += sum(not c for c in self.contrasts_for(list(prompts)))
            return combine_probabilities(probabilities, self.ensemble, self.lam).tolist()

        def record(self) -> dict:
            """What the normalisation did (for the run directory): settings, counts, every prompt's contrasts."""
            return {
                "of": [s.name for s in self.inner],
                "scale": self.scale,
                "contrasts": self.k,
                "source": self.source,
                "seed": self.seed,
                "ensemble": self.ensemble,
                "lam": self.lam,
                "counts": dict(self.counts),
                "made": self.made,
            }

    return TextNormScorer


TextNormScorer = _register()
