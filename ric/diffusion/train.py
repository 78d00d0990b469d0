"""Text-to-image RiC, stage 2: LoRA on a stock diffusers UNet, trained on score-tagged captions.

Captions become `<caption> <rm1> s1 <rm2> s2` (scores rounded to 1 decimal); a seeded 10% are
dropped to "" for classifier-free guidance; PEFT LoRA on the UNet's to_q/to_k/to_v/to_out.0, the
noise- or v-prediction loss (the base scheduler's `prediction_type`), optional offset noise,
accelerate for devices and mixed precision, checkpoints every `checkpointing_steps` (safetensors +
tensor-only optimizer state) and resume from the last one. The run directory then holds adapter/
(pytorch_lora_weights.safetensors + ric_run.json), train_stats.json and train_loss.png.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..preference import round1
from ..report import plot_loss
from ..run_info import RunInfo, build_run_info
from ..rundir import atomic_dir, read_json, write_json
from .pretrain import denoising_target, offset_noise
from .tiny import resolve_pipeline

logger = logging.getLogger(__name__)


def tag_caption(caption: str, scores) -> str:
    """`<caption> <rm1> s1 <rm2> s2`, scores rounded to 1 decimal (the paper's image conditioning)."""
    tags = " ".join(f"<rm{i}> {round1(s):.1f}" for i, s in enumerate(scores, start=1))
    return f"{caption} {tags}".strip()


def dropped(seed: int, step: int, row: int, rate: float) -> bool:
    """Whether row `row` loses its caption at `step` (classifier-free guidance). Drawn per (step,
    row) from the seed, so a resumed run drops exactly the captions an uninterrupted one would."""
    return random.Random(seed * 1_000_003 + step * 997 + row).random() < rate


def _to_pixels(image, resolution: int):
    """Resize (shorter side) and centre-crop to `resolution`, scale to [-1, 1], CHW float tensor."""
    import torch

    w, h = image.size
    scale = resolution / min(w, h)
    image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))))
    w, h = image.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def _latest_checkpoint(folder: Path):
    if not folder.exists():
        return None, 0
    found = sorted(
        (int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit()
    )
    return (found[-1][1], found[-1][0]) if found else (None, 0)


UNET_LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_ENCODER_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def lora_config(cfg, targets=UNET_LORA_TARGETS):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, init_lora_weights="gaussian", target_modules=targets)


def lora_modules(parts) -> dict:
    """The modules that carry a trained LoRA, by the name their weights are saved under."""
    return {"unet": parts.unet, **({"text_encoder": parts.text_encoder} if parts.train_text_encoder else {})}


@dataclass
class Components:
    """The pipeline parts training touches: tokenizer, frozen text encoder and VAE, UNet with LoRA."""

    tokenizer: object
    text_encoder: object
    vae: object
    unet: object
    noise_scheduler: object
    weight_dtype: object
    train_text_encoder: bool = False


def load_components(base: str, cfg, accelerator) -> Components:
    """The stock components of the pipeline `base`, frozen, with a LoRA on the UNet (and, with
    `train_text_encoder`, on the text encoder), trained in fp32."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    unet.add_adapter(lora_config(cfg))
    if cfg.train_text_encoder:  # what transformers' add_adapter does (which asks for a newer PEFT)
        from peft import inject_adapter_in_model

        inject_adapter_in_model(lora_config(cfg, TEXT_ENCODER_LORA_TARGETS), text_encoder)
    vae.to(accelerator.device, dtype=weight_dtype)
    text_encoder.to(accelerator.device, dtype=weight_dtype)
    unet.to(accelerator.device, dtype=weight_dtype)
    for module in (unet, text_encoder):  # LoRA parameters train in fp32 even under mixed precision
        for p in module.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    return Components(tokenizer, text_encoder, vae, unet, noise_scheduler, weight_dtype, cfg.train_text_encoder)


def image_loader(rows, cfg):
    """Shuffled batches of row indices and their pixels (resized, centre-cropped, in [-1, 1])."""
    import torch

    def collate(indices):
        pixels = torch.stack([_to_pixels(rows[i]["image"].convert("RGB"), cfg.resolution) for i in indices])
        return {"indices": indices, "pixel_values": pixels}

    return torch.utils.data.DataLoader(
        list(range(len(rows))),
        batch_size=cfg.train_batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=cfg.dataloader_num_workers,
    )


def diffusion_loss(parts: Components, batch, captions, accelerator, noise_offset: float = 0.0):
    """The noise-prediction (or v-prediction) MSE of one batch."""
    import torch

    ids = parts.tokenizer(
        captions,
        padding="max_length",
        max_length=parts.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(accelerator.device)
    with torch.no_grad():
        pixels = batch["pixel_values"].to(accelerator.device, dtype=parts.weight_dtype)
        latents = parts.vae.encode(pixels).latent_dist.sample() * parts.vae.config.scaling_factor
    with torch.set_grad_enabled(parts.train_text_encoder and torch.is_grad_enabled()):
        encoder_hidden_states = parts.text_encoder(ids, return_dict=False)[0]
    noise = offset_noise(latents, noise_offset)
    scheduler = parts.noise_scheduler
    timesteps = torch.randint(
        0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
    ).long()
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = denoising_target(scheduler, latents, noise, timesteps)
    pred = parts.unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="mean")


class UNetLoRATrainer:
    """The LoRA training loop of text-to-image RiC, in named steps: set up, resume, train, save.

    Checkpoints hold the LoRA weights (safetensors) and tensor-only optimizer/scheduler state, written
    every `checkpointing_steps`; a rerun resumes from the last one with the same caption dropout."""

    def __init__(self, run_dir: Path, cfg, progress: bool = True):
        import datasets
        import torch
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed
        from diffusers.optimization import get_scheduler

        self.run_dir, self.cfg, self.progress = run_dir, cfg, progress
        self.rows = datasets.load_from_disk(str(run_dir / "data" / "train"))
        self.captions = [tag_caption(c, s) for c, s in zip(self.rows["caption"], self.rows["normalized_scores"])]
        self.accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
        )
        set_seed(cfg.seed)
        self.parts = load_components(resolve_pipeline(cfg.model_name_or_path), cfg, self.accelerator)
        self.lora_params = [p for m in lora_modules(self.parts).values() for p in m.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.lora_params, lr=cfg.learning_rate)
        n = self.accelerator.num_processes
        lr_scheduler = get_scheduler(
            cfg.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=cfg.lr_warmup_steps * n,
            num_training_steps=cfg.max_train_steps * n,
        )
        self.parts.unet, self.optimizer, self.loader, self.lr_scheduler = self.accelerator.prepare(
            self.parts.unet, optimizer, image_loader(self.rows, cfg), lr_scheduler
        )
        if cfg.train_text_encoder:
            self.parts.text_encoder = self.accelerator.prepare(self.parts.text_encoder)
        self.checkpoints, self.history_file = run_dir / "checkpoints", run_dir / "train_history.json"
        self.global_step, self.history, self.resumed_from = 0, [], None

    def resume(self) -> None:
        import torch

        last, step = _latest_checkpoint(self.checkpoints)
        if last is None:
            return
        logger.warning("resuming diffusion training from %s", last)
        _load_checkpoint(last, self.unwrapped(), self.optimizer, self.lr_scheduler)
        torch.manual_seed(self.cfg.seed + step)  # fresh noise stream for the remaining steps
        history = read_json(self.history_file)["log"] if self.history_file.exists() else []
        self.global_step, self.resumed_from = step, str(last)
        self.history = [h for h in history if h["step"] <= step]

    def unwrapped(self) -> dict:
        return {name: self.accelerator.unwrap_model(m) for name, m in lora_modules(self.parts).items()}

    def step(self, batch) -> float:
        """One optimizer step (with accumulation) on a batch; the loss."""
        cfg, accelerator = self.cfg, self.accelerator
        with accelerator.accumulate(self.parts.unet):
            captions = [
                "" if dropped(cfg.seed, self.global_step, i, cfg.caption_dropout) else self.captions[i]
                for i in batch["indices"]
            ]
            loss = diffusion_loss(self.parts, batch, captions, accelerator, cfg.noise_offset)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(self.lora_params, 1.0)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad()
        return float(loss.detach().item())

    def train(self) -> None:
        cfg, bar = self.cfg, None
        if self.progress and self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            what = "the UNet and the text encoder" if cfg.train_text_encoder else "the UNet"
            bar = tqdm(
                total=cfg.max_train_steps, initial=self.global_step, desc=f"training LoRA on {what}", unit="step"
            )
        for module in lora_modules(self.parts).values():
            module.train()
        while self.global_step < cfg.max_train_steps:
            for batch in self.loader:
                loss = self.step(batch)
                if not self.accelerator.sync_gradients:
                    continue
                self.global_step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")
                if self.global_step % cfg.logging_steps == 0 or self.global_step == cfg.max_train_steps:
                    self.history.append({"step": self.global_step, "loss": loss})
                if self.global_step % cfg.checkpointing_steps == 0 and self.accelerator.is_main_process:
                    _save_checkpoint(
                        self.unwrapped(),
                        self.optimizer,
                        self.lr_scheduler,
                        self.checkpoints,
                        self.global_step,
                        cfg.checkpoints_total_limit,
                    )
                    write_json(self.history_file, {"log": self.history})
                if self.global_step >= cfg.max_train_steps:
                    break
        if bar is not None:
            bar.close()
        self.accelerator.wait_for_everyone()

    def save(self, reward_stats: dict, stats: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        info = make_image_run_info(self.cfg, reward_stats)
        save_lora(self.unwrapped(), self.run_dir / "adapter", info)
        info.save(self.run_dir)
        write_json(self.run_dir / "train_stats.json", stats)
        write_json(self.history_file, {"log": self.history})
        plot_loss(self.history, self.run_dir / "train_loss.png", f"RiC text-to-image LoRA ({len(self.rows)} images)")


def train_diffusion(run_dir, cfg, meter=None, progress: bool = True) -> dict:
    """LoRA on the UNet with the noise-prediction loss; resumes from the last checkpoint."""
    run_dir = Path(run_dir)
    stats_file = run_dir / "data" / "reward_stats.json"
    if not stats_file.exists():
        raise FileNotFoundError(f"{run_dir} has no data/reward_stats.json: run the prepare stage first")
    reward_stats = read_json(stats_file)
    trainer = UNetLoRATrainer(run_dir, cfg, progress)
    trainer.resume()
    start = time.time()
    trainer.train()
    stats = {
        "global_step": trainer.global_step,
        "steps": trainer.global_step,
        "train_seconds": round(time.time() - start, 1),
        "rows": len(trainer.rows),
        "resumed_from": trainer.resumed_from,
        "log_history": trainer.history,
        "example_caption": trainer.captions[0],
        "caption_dropout": cfg.caption_dropout,
        "noise_offset": cfg.noise_offset,
        "prediction_type": trainer.parts.noise_scheduler.config.prediction_type,
        "lora_on": list(lora_modules(trainer.parts)),
    }
    trainer.save(reward_stats, stats)
    if meter is not None:
        meter.steps = trainer.global_step
    return stats


def _save_checkpoint(modules: dict, optimizer, lr_scheduler, folder: Path, step: int, keep: int) -> None:
    """LoRA weights (safetensors, one file per module: lora.safetensors for the UNet,
    text_encoder_lora.safetensors), optimizer and scheduler state (tensors and plain values, read back
    with `weights_only=True`): no pickled objects, unlike accelerate's save_state."""
    import shutil

    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"checkpoint-{step}"
    tmp = folder / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, module in modules.items():
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(module).items()},
            str(tmp / _checkpoint_file(name)),
        )
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), tmp / "scheduler.pt")
    write_json(tmp / "state.json", {"global_step": step})
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    found = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*"))
    for _, old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _checkpoint_file(name: str) -> str:
    return "lora.safetensors" if name == "unet" else f"{name}_lora.safetensors"


def _load_checkpoint(folder: Path, modules: dict, optimizer, lr_scheduler) -> None:
    import torch
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    for name, module in modules.items():
        set_peft_model_state_dict(module, load_file(str(folder / _checkpoint_file(name))))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    lr_scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))


def make_image_run_info(cfg, reward_stats: dict) -> RunInfo:
    return build_run_info(
        "diffusion",
        cfg.model_name_or_path,
        cfg,
        reward_stats["rewards"],
        reward_stats=reward_stats,
        generation={
            "guidance_scale": cfg.guidance_scale,
            "num_inference_steps": cfg.num_inference_steps,
            "resolution": cfg.resolution,
        },
        preference_method=cfg.preference_method,
        adapter="adapter",
    )


def save_lora(modules: dict, target: Path, info: RunInfo) -> None:
    """LoRA weights in diffusers' format + ric_run.json, written to a temporary folder then swapped in.

    Only the LoRA layers are saved: saving a whole pipeline with the LoRA attached writes
    `base_layer` keys that reload onto the meta device."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    with atomic_dir(target) as tmp:
        layers = {
            f"{name}_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(module))
            for name, module in modules.items()
        }
        StableDiffusionPipeline.save_lora_weights(str(tmp), safe_serialization=True, **layers)
        info.save(tmp)
