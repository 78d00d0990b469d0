"""PRT at generation time: a tuned reward model r steers a base model, any base whose vocabulary is r's.

`prt_policy` wraps the two models as one causal LM (a `LogitMix`): each step runs both (each with its
own KV cache, held together in a `SteeringCache`) and returns log_softmax(base logits) + r's logits;
`eft_policy` mixes three the same way (emulated fine-tuning, the comparison PRT is measured against).
A `LogitMix` offers what
ric's decoders use, `generate` for `generate_batched` and `forward(..., past_key_values=...)` with a
cache that `ric serve` can trim, join and select rows of, so RiC's batching, sampling and serving work
unchanged. `PRTGenerator` answers a preference as RiC does (targets in the prompt's score tags);
`ric evaluate | generate | serve RUN_DIR --base MODEL` put r on another base after
`check_same_vocabulary` has compared the tokenizers' vocabularies and the models' logit widths.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .generation import evaluate_grid, load_policy
from .inference import RiCGenerator
from .recipe import RecipeError
from .run_info import RunInfo, load_run_info


class SteeringCache:
    """The KV caches of the models of a `LogitMix`, one object: `layers` lists every model's cache layers (so
    code that reads every layer's keys and values reads them all), row selection applies to each, and
    `rebuilt` makes a new one from such tensors."""

    def __init__(self, count: int):
        from transformers import DynamicCache

        self.caches = [DynamicCache() for _ in range(count)]

    @property
    def layers(self):
        return [layer for cache in self.caches for layer in cache.layers]

    def batch_select_indices(self, indices) -> None:
        for cache in self.caches:
            cache.batch_select_indices(indices)

    def rebuilt(self, tensors: list[tuple]) -> SteeringCache:
        """A new SteeringCache holding `tensors` (one (keys, values) per layer, in `layers`' order)."""
        from transformers import DynamicCache

        new, start = SteeringCache(0), 0
        for cache in self.caches:
            count = len(cache.layers)
            new.caches.append(DynamicCache(ddp_cache_data=tensors[start : start + count]))
            start += count
        return new

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.caches[0].get_seq_length(layer_idx)


def _mix_class():
    import torch

    class LogitMix(torch.nn.Module):
        """Several causal LMs of one vocabulary decoding together as one: at every position the logits are
        sum_i c_i * t_i, t_i a model's log_softmax (`normalize`) or raw logits. The first model is the base:
        `disable_adapter()` leaves it alone (the evaluation's reference point)."""

        def __init__(self, models, coefficients, normalize):
            super().__init__()
            self.models = torch.nn.ModuleList(m.eval() for m in models)
            self.coefficients, self.normalize = list(coefficients), list(normalize)
            self.mixing = True

        @property
        def generation_config(self):
            return self.models[0].generation_config

        @property
        def config(self):
            return self.models[0].config

        @property
        def dtype(self):
            return self.models[0].dtype

        def new_cache(self) -> SteeringCache:
            return SteeringCache(len(self.models))

        @contextlib.contextmanager
        def disable_adapter(self):
            """The base alone, as PEFT's `disable_adapter` gives a PEFT model's base."""
            self.mixing = False
            try:
                yield
            finally:
                self.mixing = True

        def forward(
            self,
            input_ids=None,
            attention_mask=None,
            position_ids=None,
            past_key_values: SteeringCache | None = None,
            logits_to_keep: int = 0,
            use_cache: bool | None = None,
            **kwargs,
        ):
            from transformers.modeling_outputs import CausalLMOutputWithPast

            common = dict(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                logits_to_keep=logits_to_keep,
                use_cache=use_cache,
            )
            caches = past_key_values.caches if past_key_values is not None else [None] * len(self.models)
            if not self.mixing:
                logits = self.models[0](**common, past_key_values=caches[0]).logits.float()
                return CausalLMOutputWithPast(logits=logits, past_key_values=past_key_values)
            logits = None
            for model, cache, c, normalize in zip(self.models, caches, self.coefficients, self.normalize):
                term = model(**common, past_key_values=cache).logits.float()
                term = c * (torch.log_softmax(term, dim=-1) if normalize else term)
                logits = term if logits is None else logits + term
            return CausalLMOutputWithPast(logits=logits, past_key_values=past_key_values)

        @torch.inference_mode()
        def generate(
            self,
            input_ids,
            attention_mask=None,
            max_new_tokens: int = 20,
            pad_token_id: int | None = None,
            do_sample: bool = False,
            logits_processor=None,
            **unused,
        ):
            """Greedy (or processor-drawn, as ric's NucleusSampler draws) decoding with every model's KV cache;
            returns the prompt ids followed by the new ids, finished rows padded with `pad_token_id`, as
            transformers' `generate` does."""
            if do_sample:
                raise ValueError("LogitMix.generate draws through a logits processor (ric's sampler), not do_sample")
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            eos = self.generation_config.eos_token_id
            eos = torch.tensor([eos] if isinstance(eos, int) else list(eos or []), device=input_ids.device)
            pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if len(eos) else 0)
            mask = attention_mask
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            cache = self.new_cache()
            out = self(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
            logits, last = out.logits[:, -1, :], positions[:, -1:]
            sequence = input_ids
            done = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
            for step in range(max_new_tokens):
                scores = logits_processor(sequence, logits) if logits_processor else logits
                tokens = torch.where(done, torch.full_like(done, pad, dtype=torch.long), scores.argmax(-1))
                sequence = torch.cat([sequence, tokens[:, None]], dim=1)
                done |= torch.isin(tokens, eos)
                if done.all() or step == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
                last = last + 1
                out = self(input_ids=tokens[:, None], attention_mask=mask, position_ids=last, past_key_values=cache)
                logits = out.logits[:, -1, :]
            return sequence

    return LogitMix


def prt_policy(base, reward):
    """PRT: the base steered by r, log_softmax(base) + r."""
    return _mix_class()([base, reward], [1.0, 1.0], [True, False])


def eft_policy(new_base, tuned, old_base):
    """Emulated fine-tuning (proxy-tuning): a new base plus what tuning changed in the old one,
    log_softmax(new base) + log_softmax(tuned) - log_softmax(old base); three models a step."""
    return _mix_class()([new_base, tuned, old_base], [1.0, 1.0, -1.0], [True, True, True])


def output_width(model) -> int:
    return int(model.get_output_embeddings().weight.shape[0])


def check_same_vocabulary(reward_tokenizer, base_tokenizer, reward_model, base_model, base_name: str) -> None:
    """Refuse a base whose tokenizer vocabulary or logit width differs from r's, saying what differs."""
    mine, theirs = reward_tokenizer.get_vocab(), base_tokenizer.get_vocab()
    if mine != theirs:
        missing = sorted(set(mine) - set(theirs))
        moved = sorted(t for t in set(mine) & set(theirs) if mine[t] != theirs[t])
        extra = sorted(set(theirs) - set(mine))
        parts = [
            f"{len(x)} {what} (e.g. {x[:3]})"
            for x, what in ((missing, "of r's tokens missing"), (moved, "with other ids"), (extra, "extra tokens"))
            if x
        ]
        raise RecipeError(
            f"--base {base_name}: its vocabulary differs from r's ({len(theirs)} vs {len(mine)} tokens; "
            + "; ".join(parts)
            + "): PRT steers only a base with the same vocabulary as the one r was trained with"
        )
    if output_width(reward_model) != output_width(base_model):
        raise RecipeError(
            f"--base {base_name}: its logits have {output_width(base_model)} entries, r's "
            f"{output_width(reward_model)}: PRT adds them position by position, so they must be equal"
        )


def load_reward_model(info: RunInfo, folder: Path, device=None, dtype=None):
    """(r, its tokenizer) from a PRT run: the training base plus the LoRA adapter (merged for speed), or the
    fully trained r; an adapter that trained a new output layer (`zero_head`) gets it back."""
    from .models import load_causal_lm, load_tokenizer
    from .rundir import read_json

    where = folder / (info.adapter or "adapter")
    if not where.exists():
        raise FileNotFoundError(f"{folder}: no trained r ({where.name}/) yet: run `ric train` first")
    kwargs = dict(info.model_kwargs)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if not (where / "adapter_config.json").exists():  # r trained fully
        model = load_causal_lm(str(where), device=device, **kwargs)
        return model.eval(), load_tokenizer(str(where), trust_remote_code=kwargs.get("trust_remote_code", False))
    saved = read_json(where / "adapter_config.json").get("modules_to_save") or []
    prepare_base = None
    if saved:  # r started with a zero output layer (`zero_head`), trained beside the LoRA: put one back first
        from .prt_trainer import zero_output_layer

        def prepare_base(model):
            head = zero_output_layer(model)
            if head not in saved:
                raise FileNotFoundError(f"{where}: modules_to_save {saved} do not hold the output layer {head!r}")

    return load_policy(info, where, device, merge=True, dtype=dtype, prepare_base=prepare_base)


class PRTGenerator(RiCGenerator):
    """A PRT run's answers: the preference mapped to score tags as for RiC, the base steered by r."""

    @classmethod
    def from_run(cls, run_dir, device: str | None = None, dtype: str | None = None, base: str | None = None):
        """`base`: the model r steers (default: the one r was trained against)."""
        from .generation import check_inference_dtype
        from .models import load_causal_lm, load_tokenizer

        info, folder = load_run_info(run_dir)
        if info.method != "prt":
            raise ValueError(f"{run_dir} is a {info.method} run, not a PRT run")
        if dtype is not None:
            check_inference_dtype(dtype)
        reward, tokenizer = load_reward_model(info, folder, device, dtype)
        kwargs = {**info.model_kwargs, **({"dtype": dtype} if dtype else {})}
        name = base or info.base_model
        base_model = load_causal_lm(name, device=device, **kwargs).eval()
        if base is not None:
            trust = kwargs.get("trust_remote_code", False)
            check_same_vocabulary(tokenizer, load_tokenizer(name, trust_remote_code=trust), reward, base_model, name)
        return cls(prt_policy(base_model, reward), tokenizer, info)

    def prepare_points(self) -> None:
        """r was merged when it loaded; nothing to do."""


def evaluate(run, eval_dir=None, overrides=None, progress: bool = True, dtype=None, base=None) -> dict:
    """A PRT run's preference grid (the base alone as the reference point), on its training base or `base`."""
    info, folder = load_run_info(run.run_dir)
    steered = base or info.base_model
    reward = str((folder / (info.adapter or "adapter")).resolve())
    return evaluate_grid(
        run,
        info,
        lambda: PRTGenerator.from_run(run.run_dir, dtype=dtype, base=base),
        identity={"reward": reward, "base": steered, **({"dtype": dtype} if dtype else {})},
        extra={"reward_model": reward, "steered_base": steered},
        eval_dir=eval_dir,
        overrides=overrides,
        progress=progress,
        title="PRT",
        label="PRT, one r steering the base (grid of preferences)",
    )
