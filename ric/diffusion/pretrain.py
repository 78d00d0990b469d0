"""Pre-training the small shapes pipeline (`bundled:shapes-sd`) from configs, on the procedural set.

Two phases, both plain PyTorch over stock diffusers / transformers components:

1. the VAE (AutoencoderKL, one downsampling: 32x32 RGB -> 16x16x4 latents) learns to reconstruct the
   images (MSE + a small KL term); its `scaling_factor` is set to 1 / std of the latents, as SD's;
2. the UNet (UNet2DConditionModel with cross-attention) and the CLIP text encoder learn to denoise
   the latents given the caption (DDPM v-prediction with offset noise, 10 % of captions dropped for
   classifier-free guidance).

The result is saved as a StableDiffusionPipeline folder (DDIM scheduler for generation), which
`StableDiffusionPipeline.from_pretrained` and every ric stage load like any other.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def offset_noise(latents, noise_offset: float = 0.0, generator=None):
    """Gaussian noise shaped like `latents`, plus a constant per image and channel of std `noise_offset`
    (diffusers' `--noise_offset`): with it the noise also hides the image's mean colour."""
    import torch

    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if noise_offset:
        b, c = latents.shape[:2]
        noise = noise + noise_offset * torch.randn(
            (b, c, 1, 1), generator=generator, device=latents.device, dtype=latents.dtype
        )
    return noise


def denoising_target(scheduler, latents, noise, timesteps):
    """What the UNet learns to predict: the noise, or the velocity for a v-prediction scheduler."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def build_components(seed: int = 0, prediction_type: str = "v_prediction"):
    """(tokenizer, text encoder, VAE, UNet, training scheduler), random weights, from configs."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .shapes import shapes_tokenizer

    torch.manual_seed(seed)
    tokenizer = shapes_tokenizer(model_max_length=48)  # a caption and two score tags fit
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=48,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=8,
        sample_size=32,
        layers_per_block=1,
    )
    unet = UNet2DConditionModel(  # cross-attention at the 8x8 level, where the LoRA of the RiC stage goes
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(48, 96),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=48,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type
    )
    return tokenizer, text_encoder, vae, unet, noise_scheduler


def _pixels(images):
    import torch

    array = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def train_vae(vae, pixels, steps: int, batch_size: int, lr: float, kl_weight: float, seed: int, bar=None) -> list:
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr)
    history = []
    vae.train()
    for step in range(steps):
        index = torch.randint(0, len(pixels), (batch_size,), generator=generator)
        batch = pixels[index]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        loss = torch.nn.functional.mse_loss(recon, batch) + kl_weight * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            history.append({"step": step, "vae_loss": loss.item()})
        if bar is not None:
            bar.update(1)
    vae.eval()
    return history


def train_denoiser(
    unet,
    text_encoder,
    tokenizer,
    noise_scheduler,
    latents,
    captions,
    steps: int,
    batch_size: int,
    lr: float,
    caption_dropout: float,
    seed: int,
    bar=None,
    noise_offset: float = 0.0,
) -> list:
    import torch

    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 100))
    history = []
    unet.train()
    text_encoder.train()
    for step in range(steps):
        index = torch.randint(0, len(latents), (batch_size,), generator=generator)
        texts = ["" if rng.random() < caption_dropout else captions[i] for i in index.tolist()]
        ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        hidden = text_encoder(ids, return_dict=False)[0]
        clean = latents[index]
        noise = offset_noise(clean, noise_offset, generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        pred = unet(noise_scheduler.add_noise(clean, noise, timesteps), timesteps, hidden, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred, denoising_target(noise_scheduler, clean, noise, timesteps))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            history.append({"step": step, "denoise_loss": loss.item()})
        if bar is not None:
            bar.update(1)
    unet.eval()
    text_encoder.eval()
    return history


def pretrain_pipeline(
    out: str | Path,
    num_images: int = 4000,
    vae_steps: int = 400,
    unet_steps: int = 1500,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    prediction_type: str = "v_prediction",
    noise_offset: float = 0.1,
) -> dict:
    """Train the shapes pipeline from scratch and save it (StableDiffusionPipeline layout) into `out`.

    v-prediction (SD 2's objective) and offset noise by default: with plain noise prediction the
    UNet can denoise an image's overall colour from the noisy latent itself at nearly every step, so
    the caption barely steers it (measured: a "grey" caption still drew colourful images)."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from ..rundir import write_json
    from .shapes import describe, draw_shape, sample_rows

    start = time.time()
    torch.manual_seed(seed)
    rows = sample_rows(num_images, seed=10_000 + seed)  # not the demo's data seed: the RiC rows are new images
    images = [draw_shape(r["colour"], r["shape"], r["saturation"], r["detail"], r["seed"]) for r in rows]
    pixels = _pixels(images)
    tokenizer, text_encoder, vae, unet, noise_scheduler = build_components(seed, prediction_type)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=vae_steps + unet_steps, desc="pre-training the shapes pipeline", unit="step")
    vae_history = train_vae(vae, pixels, vae_steps, batch_size, 2e-3, 1e-6, seed, bar)
    with torch.no_grad():
        moments = torch.cat([vae.encode(pixels[i : i + 256]).latent_dist.mean for i in range(0, len(pixels), 256)])
    scaling = float(1.0 / moments.std())
    vae.register_to_config(scaling_factor=scaling)
    words = np.random.default_rng(seed)
    captions = [describe(r, words) for r in rows]
    unet_history = train_denoiser(
        unet,
        text_encoder,
        tokenizer,
        noise_scheduler,
        moments * scaling,
        captions,
        unet_steps,
        batch_size,
        1e-3,
        0.1,
        seed,
        bar,
        noise_offset,
    )
    if bar is not None:
        bar.close()
    scheduler = DDIMScheduler.from_config(noise_scheduler.config, clip_sample=False, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out))
    stats = {
        "num_images": num_images,
        "vae_steps": vae_steps,
        "unet_steps": unet_steps,
        "batch_size": batch_size,
        "seed": seed,
        "prediction_type": prediction_type,
        "noise_offset": noise_offset,
        "scaling_factor": scaling,
        "seconds": round(time.time() - start, 1),
        "vae_loss": vae_history,
        "denoise_loss": unet_history,
    }
    write_json(Path(out) / "pretrain_stats.json", stats)
    return stats


# the cache folder's name changes with the pre-training recipe, so an older cached pipeline is not reused
SHAPES_CACHE_NAME = "shapes-sd-v2"


def shapes_pipeline_path(progress: bool = True) -> Path:
    """The trained bundled:shapes-sd pipeline folder, trained and cached on first use."""
    from ..models import cache_dir

    target = cache_dir() / "models" / SHAPES_CACHE_NAME
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".shapes-sd-", dir=target.parent))
    try:
        logger.warning("Training the bundled shapes pipeline once under %s (a few minutes on a CPU)", target)
        train_shapes_pipeline(tmp, progress=progress)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def train_shapes_pipeline(out: Path, progress: bool = True, **kwargs) -> dict:
    return pretrain_pipeline(out, progress=progress, **kwargs)
