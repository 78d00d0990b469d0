"""Portable Reward Tuning (PRT; Chijiwa et al., ICML 2025) on RiC's data: `PRTTrainer`.

Instead of fine-tuning the base model, PRT trains a reward model r of the same architecture so that
the tuned policy is pi(y|x) proportional to pi_base(y|x) * exp(r(x, y)): at every position the
logits are log_softmax(base logits) + r's logits (lambda = 1), and the loss is the cross-entropy of
the response tokens under them. Only r receives gradients: the base runs in inference mode (it may be
8-bit or bf16) and needs no backward pass. Trained on RiC's rows (score tags in the prompt), r carries
the preference dial, and at generation time the same r steers any causal LM whose vocabulary equals
the base's (`ric.steering`), a newer release or a larger sibling, without training it.

Departures and switches: r is trained with LoRA by default (`use_peft: false` trains it fully); the
paper's initialisation (r a copy of the base, so the untrained policy is the base at temperature 1/2)
is `prt_reward_init: base`; `zero_head` gives r a new output layer of zeros, so that training starts
from the base policy itself; `prt_entropy_coef` adds the paper's optional -alpha * H(softmax(r)).
"""

from __future__ import annotations

import logging

from .models import is_quantized
from .ric_trainer import RiCTrainer, train

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def prt_logits(base_logits, reward_logits):
    """The tuned policy's logits: log_softmax(base) + r, in float32."""
    import torch

    return torch.log_softmax(base_logits.float(), dim=-1) + reward_logits.float()


def prt_loss(base_logits, reward_logits, labels, num_items_in_batch=None, entropy_coef: float = 0.0):
    """(loss, metrics): the cross-entropy of next tokens under `prt_logits`, summed over the positions whose
    label is not -100 and divided by their count (or `num_items_in_batch` under gradient accumulation),
    minus `entropy_coef` times the mean entropy of softmax(r) over the same positions."""
    import torch

    logits = prt_logits(base_logits[:, :-1], reward_logits[:, :-1])
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    count = mask.sum() if num_items_in_batch is None else num_items_in_batch
    count = torch.as_tensor(count, device=logits.device).clamp(min=1)
    loss = -(logp * mask).sum() / count
    metrics = {}
    if entropy_coef:
        r = torch.log_softmax(reward_logits[:, :-1].float(), dim=-1)
        entropy = -(r.exp() * r).sum(-1)
        mean_entropy = (entropy * mask).sum() / mask.sum().clamp(min=1)
        loss = loss - entropy_coef * mean_entropy
        metrics["reward_entropy"] = float(mean_entropy.detach())
    return loss, metrics


class PRTTrainer(RiCTrainer):
    """`RiCTrainer` (TRL's SFTTrainer on RiC rows) whose loss is PRT's: `model` is r, `base_model` the frozen
    base. Checkpoints, resume, LoRA and the prompt grouping are RiCTrainer's.

        trainer = PRTTrainer(r, args=PRTConfig(...), train_rows=rows, processing_class=tokenizer,
                             base_model=base, peft_config=LoraConfig(...))
    """

    def __init__(self, model, args, train_rows, processing_class, base_model=None, **kwargs):
        if base_model is None:
            raise ValueError("base_model: PRT needs the frozen base model beside r")
        super().__init__(model, args, train_rows, processing_class, **kwargs)
        self.prt_base = base_model.eval().requires_grad_(False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch

        keys = ("input_ids", "attention_mask", "position_ids")
        forward = {k: inputs[k] for k in keys if k in inputs}
        reward = model(**forward, use_cache=False)
        device = reward.logits.device
        if next(self.prt_base.parameters()).device != device and not is_quantized(self.prt_base):
            self.prt_base.to(device)
        with torch.no_grad():
            base_logits = self.prt_base(**forward, use_cache=False).logits
        loss, metrics = prt_loss(
            base_logits, reward.logits, inputs["labels"], num_items_in_batch, self.args.prt_entropy_coef
        )
        mode = "train" if model.training else "eval"
        for name, value in metrics.items():
            self._metrics[mode][name].append(value)
        return (loss, reward) if return_outputs else loss


def zero_output_layer(model):
    """Give `model` a new, untied output layer of zeros (r's `zero_head` start): its logits are 0 everywhere,
    so the untrained policy is the base's. Returns the output layer's module name."""
    import torch

    head = model.get_output_embeddings()
    new = torch.nn.Linear(head.in_features, head.out_features, bias=False, device=head.weight.device)
    new.weight.data.zero_()
    new.to(head.weight.dtype)
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False
    model.set_output_embeddings(new)
    return next(name for name, module in model.named_modules() if module is new)


def reward_model_hook(model_args, args):
    """`ric_trainer.train`'s model hook: r starts as the base (a copy), or with a zero output layer, which LoRA
    then trains in full beside the adapter (PEFT's `modules_to_save`)."""

    def prepare(model):
        from trl import get_peft_config

        peft_config = get_peft_config(model_args) if model_args.use_peft else None
        if args.prt_reward_init == "zero_head":
            name = zero_output_layer(model)
            if peft_config is not None:
                peft_config.modules_to_save = list(peft_config.modules_to_save or []) + [name]
        return model, peft_config

    return prepare


def train_prt(run_dir, model_args, data_args, args, meter=None) -> dict:
    """PRT's train stage: r on the prepared RiC rows against the frozen base -> RUN_DIR/adapter (LoRA) or
    RUN_DIR/reward (full), with ric_run.json naming the method and the base it was trained against."""
    from .models import load_causal_lm, model_load_kwargs

    kwargs = model_load_kwargs(model_args, args.trust_remote_code)
    base = load_causal_lm(model_args.model_name_or_path, **kwargs)  # this process's device
    return train(
        run_dir,
        model_args,
        data_args,
        args,
        meter=meter,
        method="prt",
        prepare_model=reward_model_hook(model_args, args),
        trainer_cls=PRTTrainer,
        base_model=base,
    )
