"""RiC for text-to-image on a tiny Stable Diffusion built from configs (no downloads)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ric.cli import main
from ric.diffusion.train import dropped, tag_caption
from tests.helpers import parse_run_args

ROOT = Path(__file__).resolve().parents[2]


def test_caption_tags_are_the_papers_format():
    assert tag_caption("a lighthouse at dawn", [1.26, -0.04]) == "a lighthouse at dawn <rm1> 1.3 <rm2> 0.0"
    assert tag_caption("", [0.5]) == "<rm1> 0.5"


def test_caption_dropout_rate_and_reproducibility():
    drops = [dropped(0, step, row, 0.1) for step in range(200) for row in range(50)]
    assert abs(np.mean(drops) - 0.1) < 0.01
    assert drops == [dropped(0, step, row, 0.1) for step in range(200) for row in range(50)]
    assert not any(dropped(0, s, r, 0.0) for s in range(50) for r in range(10))


def test_compressibility_prefers_flat_images_and_colorfulness_reads_real_photos():
    from PIL import Image

    from reward_models import get_reward

    rng = np.random.default_rng(0)
    flat = Image.fromarray(np.full((64, 64, 3), 120, np.uint8))
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    comp = get_reward("compressibility")
    flat_score, noise_score = comp(None, [flat, noise])
    assert flat_score > noise_score and noise_score < -5 and flat_score > -2
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    color = get_reward("colorfulness")
    grey_score, photo_score = color(None, [flat, str(photo)])
    assert grey_score == pytest.approx(0.0, abs=1e-9) and photo_score > 10


@pytest.fixture()
def smoke_recipe(tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes/diffusion/smoke_tiny.yaml").read_text())
    data = tmp_path / "data"
    import shutil

    shutil.copytree(ROOT / "recipes/diffusion/data", data)
    (data / "broken.png").write_bytes(b"not an image at all")
    with open(data / "metadata.jsonl", "a") as handle:
        handle.write(json.dumps({"file_name": "broken.png", "text": "a broken file"}) + "\n")
        handle.write(json.dumps({"file_name": "missing.png", "text": "a missing file"}) + "\n")
    recipe.update(
        dataset_name=str(data),
        output_dir=str(tmp_path / "run"),
        max_train_steps=4,
        checkpointing_steps=2,
        train_batch_size=4,
        num_inference_steps=2,
        eval_captions=["a plain red square"],
        logging_steps=1,
    )
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_smoke_recipe_end_to_end(smoke_recipe, tmp_path, capsys):
    assert main(["run", str(smoke_recipe)]) == 0
    run = tmp_path / "run"
    prepared = json.loads((run / "data/prepare_stats.json").read_text())
    assert prepared["rows"] == 24 and prepared["skipped"] == 2, "undecodable images are skipped and counted"
    stats = json.loads((run / "data/reward_stats.json").read_text())
    assert stats["rewards"] == ["compressibility", "colorfulness"]
    assert (run / "adapter/pytorch_lora_weights.safetensors").exists() and (run / "adapter/ric_run.json").exists()
    assert (run / "eval/image_grid.png").exists() and (run / "eval/pareto.png").exists()
    from PIL import Image

    with Image.open(run / "eval/image_grid.png") as grid:  # 32x32 images drawn at 64x64 beside the labels
        assert grid.width == 150 + 11 * 64
    pareto = json.loads((run / "eval/pareto.json").read_text())
    assert len(pareto["points"]) == 11 and pareto["method"] == "diffusion"
    assert pareto["base"] is not None, "the base pipeline (LoRA off, untagged captions) is a point too"
    with open(run / "eval" / pareto["points"][3]["csv"]) as handle:
        first = next(csv.DictReader(handle))
    assert Path(first["response"]).is_file() and first["prompt"] == "a plain red square"
    train = json.loads((run / "train_stats.json").read_text())
    assert train["global_step"] == 4 and "<rm1>" in train["example_caption"]

    capsys.readouterr()
    out = tmp_path / "lighthouse.png"
    assert main(["generate", str(run), "--preference", "0.7,0.3", "a lighthouse at dawn", "--out", str(out)]) == 0
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (32, 32)
    assert "targets: compressibility=" in capsys.readouterr().err
    assert main(["generate", str(run), "--preference", "0.7,0.3,0.0", "a lighthouse"]) == 2
    assert "2 objectives" in capsys.readouterr().err
    assert main(["generate", str(run), "--preference", "0.7,0.3", "a lighthouse", "--temperature", "0.5"]) == 2
    assert "--temperature: applies to text runs only" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--eval_dir", str(run / "eval2"), "--num_inference_steps", "1"]) == 0
    again = json.loads((run / "eval2/pareto.json").read_text())
    assert again["generation"]["num_inference_steps"] == 1 and (run / "eval2/image_grid.png").exists()


def test_training_changes_lora_and_reload_gives_identical_latents(smoke_recipe, tmp_path):
    from safetensors.torch import load_file

    from ric.diffusion.generate import generate_images, load_image_pipeline
    from ric.diffusion.prepare import prepare_images
    from ric.diffusion.train import train_diffusion

    (cfg, _), _ = parse_run_args([], smoke_recipe)
    prepare_images(cfg.output_dir, cfg, progress=False)
    train_diffusion(cfg.output_dir, cfg, progress=False)
    weights = load_file(str(Path(cfg.output_dir) / "adapter/pytorch_lora_weights.safetensors"))
    assert weights and all(torch.isfinite(v).all() for v in weights.values())
    assert any("to_q" in k for k in weights) and any("to_out" in k for k in weights)

    pipe, info = load_image_pipeline(cfg.output_dir)
    first = generate_images(pipe, info, ["a plain red square"], [1.0, -1.0], [3], output_type="latent")
    pipe2, info2 = load_image_pipeline(cfg.output_dir)
    second = generate_images(pipe2, info2, ["a plain red square"], [1.0, -1.0], [3], output_type="latent")
    assert torch.allclose(first, second)
    pipe.unload_lora_weights()
    plain = generate_images(pipe, info, ["a plain red square"], [1.0, -1.0], [3], output_type="latent")
    assert not torch.allclose(first, plain), "the LoRA changes the denoiser"


def test_resume_continues_from_the_last_checkpoint(smoke_recipe, tmp_path):
    from ric.diffusion.prepare import prepare_images
    from ric.diffusion.train import train_diffusion

    (cfg, _), _ = parse_run_args([], smoke_recipe)
    prepare_images(cfg.output_dir, cfg, progress=False)
    cfg.max_train_steps = 2
    train_diffusion(cfg.output_dir, cfg, progress=False)
    assert (Path(cfg.output_dir) / "checkpoints/checkpoint-2").exists()
    cfg.max_train_steps = 4
    stats = train_diffusion(cfg.output_dir, cfg, progress=False)
    assert stats["resumed_from"].endswith("checkpoint-2") and stats["global_step"] == 4


def test_missing_caption_column_and_wrong_preference(tmp_path, capsys):
    data = tmp_path / "d"
    data.mkdir()
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "caption": "hi"}) + "\n")
    recipe = yaml.safe_load((ROOT / "recipes/diffusion/smoke_tiny.yaml").read_text())
    recipe.update(dataset_name=str(data), output_dir=str(tmp_path / "run"))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path)]) == 2
    assert "missing field(s) ['text']" in capsys.readouterr().err


def test_aesthetic_reward_is_a_linear_head_on_normalised_clip_embeddings(tmp_path):
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from reward_models import get_reward

    torch.manual_seed(0)
    clip_dir = tmp_path / "clip"
    model = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=12,
        )
    )
    model.save_pretrained(clip_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(clip_dir)
    head = {"weight": torch.randn(1, 12), "bias": torch.tensor([0.5])}
    save_file(head, str(tmp_path / "aesthetic_head.safetensors"))
    scorer = get_reward("aesthetic", {"aesthetic": {"head": str(tmp_path), "clip_model": str(clip_dir)}}, batch_size=2)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(3)]
    scores = scorer(None, images)
    processor = CLIPImageProcessor.from_pretrained(clip_dir)
    with torch.no_grad():
        embeds = model(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"]).image_embeds
        expected = torch.nn.functional.normalize(embeds, dim=-1) @ head["weight"].T + head["bias"]
    assert scores == pytest.approx(expected.squeeze(-1).tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="head"):
        get_reward("aesthetic", {"aesthetic": {"clip_model": str(clip_dir)}})


def test_text_encoder_lora_trains_saves_resumes_and_reloads(smoke_recipe, tmp_path):
    """train_text_encoder: a LoRA on the text encoder too, in the checkpoints and the saved weights, loaded
    back by diffusers' own load_lora_weights (the text encoder's output changes with it)."""
    from safetensors.torch import load_file

    from ric.diffusion.generate import load_image_pipeline
    from ric.diffusion.prepare import prepare_images
    from ric.diffusion.train import train_diffusion

    (cfg, _), _ = parse_run_args(["--train_text_encoder", "true"], smoke_recipe)
    prepare_images(cfg.output_dir, cfg, progress=False)
    cfg.max_train_steps = 2
    train_diffusion(cfg.output_dir, cfg, progress=False)
    assert (Path(cfg.output_dir) / "checkpoints/checkpoint-2/text_encoder_lora.safetensors").exists()
    cfg.max_train_steps = 4
    stats = train_diffusion(cfg.output_dir, cfg, progress=False)
    assert stats["resumed_from"].endswith("checkpoint-2") and stats["lora_on"] == ["unet", "text_encoder"]
    weights = load_file(str(Path(cfg.output_dir) / "adapter/pytorch_lora_weights.safetensors"))
    text = {k: v for k, v in weights.items() if k.startswith("text_encoder.")}
    assert text and any("q_proj" in k for k in text) and any(k.startswith("unet.") for k in weights)
    assert any(".up." in k and v.abs().sum() > 0 for k, v in text.items()), "the text encoder's LoRA moved"

    pipe, _ = load_image_pipeline(cfg.output_dir)
    ids = pipe.tokenizer(["a plain red square <rm1> 1.0 <rm2> -1.0"], return_tensors="pt").input_ids
    with torch.no_grad():
        with_lora = pipe.text_encoder(ids)[0]
        pipe.unload_lora_weights()
        without = pipe.text_encoder(ids)[0]
    assert not torch.allclose(with_lora, without), "the saved text-encoder LoRA is loaded with the pipeline"


def test_offset_noise_hides_the_mean_colour_and_zero_is_plain_noise():
    from ric.diffusion.pretrain import offset_noise

    latents = torch.zeros(256, 4, 16, 16)
    plain = offset_noise(latents, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(plain, torch.randn(latents.shape, generator=torch.Generator().manual_seed(0)))
    shifted = offset_noise(latents, 1.0, torch.Generator().manual_seed(0))
    # the per image and channel mean of plain noise has std 1/16 (256 values); with the offset about 1
    assert plain.mean(dim=(2, 3)).std() < 0.1
    assert 0.8 < shifted.mean(dim=(2, 3)).std() < 1.2
    # the same seed draws the same pixel noise first; the offset is one constant per image and channel
    offset = (shifted - plain)[:, :, :1, :1]
    assert torch.allclose(shifted - plain, offset.expand_as(shifted), atol=1e-5)


def test_noise_offset_trains_and_is_recorded(smoke_recipe, tmp_path):
    from ric.diffusion.prepare import prepare_images
    from ric.diffusion.train import train_diffusion

    (cfg, _), _ = parse_run_args(["--noise_offset", "0.1", "--max_train_steps", "2"], smoke_recipe)
    assert cfg.noise_offset == 0.1
    prepare_images(cfg.output_dir, cfg, progress=False)
    stats = train_diffusion(cfg.output_dir, cfg, progress=False)
    assert stats["global_step"] == 2 and stats["noise_offset"] == 0.1
    with pytest.raises(ValueError, match="noise_offset must be >= 0"):
        parse_run_args(["--noise_offset", "-0.1"], smoke_recipe)
