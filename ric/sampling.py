"""Temperature + nucleus (top-p) sampling without sorting the whole vocabulary at every step.

`transformers` samples with top-p by sorting all V logits of every row at every step and then
drawing from a V-way multinomial. With SmolLM2's 49,152-token vocabulary, a batch of 128 and 48 new
tokens on a 2-core CPU, the sort and the draw took 19 of 48 seconds; this sampler brings the batch
from 45.4 to 28.5 seconds (bench/bench_sampling.py -> bench/results/sampling.json). The
nucleus at the temperatures RiC uses is a handful of tokens, so `NucleusSampler` takes the top
`k` logits, checks that they hold the nucleus (they hold probability mass >= top_p), and draws among
them; a row whose top `k` do not hold the nucleus falls back to the full sort. The kept set is the
one `transformers.TopPLogitsWarper` keeps (a token is kept when the tokens ranked above it hold
less than top_p), so the distribution is the same; the random stream differs.

It runs as a logits processor that has already drawn the token: it returns scores that are -inf
everywhere but the drawn token, for `generate(do_sample=False)` to pick.
"""

from __future__ import annotations

import torch


def nucleus(logits: torch.Tensor, top_p: float | torch.Tensor, k: int = 64):
    """(candidate token ids, their probabilities with the tokens outside the nucleus zeroed), per row.

    `logits` are already divided by the temperature; `top_p` is one value or one per row. The
    candidates are each row's top `k` tokens;
    the third value is None, or, for the rows whose top `k` do not hold the nucleus, (those rows,
    their whole vocabulary sorted, its kept probabilities)."""
    logits = logits.float()
    top_p = torch.as_tensor(top_p, dtype=torch.float32, device=logits.device)
    if top_p.dim() == 0:
        top_p = top_p.expand(logits.shape[0])
    k = min(k, logits.shape[-1])
    log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)
    top, ids = logits.topk(k, dim=-1)
    probs = (top - log_norm).exp()
    cumulative = probs.cumsum(dim=-1)
    fallback = None
    uncovered = cumulative[:, -1] < top_p
    if k < logits.shape[-1] and bool(uncovered.any()):
        rows = uncovered.nonzero().squeeze(-1)
        full_top, full_ids = logits[rows].sort(dim=-1, descending=True)
        full_probs = (full_top - log_norm[rows]).exp()
        fallback = (rows, full_ids, _kept(full_probs, full_probs.cumsum(dim=-1), top_p[rows]))
    return ids, _kept(probs, cumulative, top_p), fallback


def _kept(probs: torch.Tensor, cumulative: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Probabilities (sorted high to low) with every token zeroed whose predecessors hold >= top_p (per row)."""
    keep = (cumulative - probs) < top_p[:, None]
    keep[:, 0] = True
    return probs * keep


class NucleusSampler:
    """A `transformers` logits processor that draws the next token (temperature, then top-p).

    Use with `model.generate(do_sample=False, logits_processor=LogitsProcessorList([sampler]))`;
    the draw uses torch's global random generator, so `torch.manual_seed` makes it repeatable."""

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0, k: int = 64):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.temperature, self.top_p, self.k = float(temperature), float(top_p), int(k)

    def draw(self, scores: torch.Tensor) -> torch.Tensor:
        """One token id per row."""
        logits = scores.float() / self.temperature
        if self.top_p >= 1.0:
            # Gumbel-max: an exact draw from the full softmax in one pass.
            noise = -torch.empty_like(logits).exponential_().log()
            return (logits + noise).argmax(dim=-1)
        ids, probs, fallback = nucleus(logits, self.top_p, self.k)
        tokens = ids.gather(1, torch.multinomial(probs, 1)).squeeze(1)
        if fallback is not None:
            rows, full_ids, full_probs = fallback
            tokens[rows] = full_ids.gather(1, torch.multinomial(full_probs, 1)).squeeze(1)
        return tokens

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        tokens = self.draw(scores)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, tokens.unsqueeze(1), 0.0)
        return out
