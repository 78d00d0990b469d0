"""The procedural shapes and the small pipeline pre-trained on them (tiny step counts here: the real
pre-training is a benchmark, the first `ric run recipes/diffusion/demo.yaml`)."""

import numpy as np
import pytest


def test_hidden_factors_drive_the_two_rewards_and_the_caption_names_the_rest():
    from reward_models import get_reward
    from ric.diffusion.shapes import draw_shape

    color, compress = get_reward("colorfulness"), get_reward("compressibility")
    grey_flat = draw_shape("red", "circle", saturation=0.0, detail=0.0, seed=1)
    vivid_flat = draw_shape("red", "circle", saturation=1.0, detail=0.0, seed=1)
    vivid_busy = draw_shape("red", "circle", saturation=1.0, detail=1.0, seed=1)
    c = color(None, [grey_flat, vivid_flat, vivid_busy])
    k = compress(None, [grey_flat, vivid_flat, vivid_busy])
    assert c[0] < 5 < c[1], "saturation is what colorfulness sees"
    assert k[2] < k[1], "detail costs JPEG bytes"
    assert np.array_equal(np.asarray(vivid_busy), np.asarray(draw_shape("red", "circle", 1.0, 1.0, seed=1)))
    red, blue = (
        np.asarray(vivid_flat, dtype=float),
        np.asarray(draw_shape("blue", "circle", 1.0, 0.0, seed=1), dtype=float),
    )
    assert red[16, 16, 0] > red[16, 16, 2] and blue[16, 16, 2] > blue[16, 16, 0], "the caption's colour is drawn"


def test_image_folder_and_the_rewards_pull_against_each_other(tmp_path):
    from reward_models import get_reward
    from ric.diffusion.prepare import read_image_folder
    from ric.diffusion.shapes import write_image_folder

    folder = write_image_folder(tmp_path / "shapes", 96, seed=3)
    images, captions, skipped = read_image_folder(folder, "text")
    assert len(images) == 96 and not skipped and all(c.startswith("a ") for c in captions)
    c = get_reward("colorfulness")(None, images)
    k = get_reward("compressibility")(None, images)
    assert np.corrcoef(c, k)[0, 1] < -0.2, "colour costs bytes: the two rewards pull against each other"


def test_the_tokenizer_reads_caption_words_whole_and_numbers_by_digit():
    from ric.diffusion.shapes import shapes_tokenizer

    tokens = shapes_tokenizer().tokenize("a yellow diamond <rm1> -1.2")
    assert tokens[:3] == ["a</w>", "yellow</w>", "diamond</w>"]
    assert tokens[3:] == ["<</w>", "rm</w>", "1</w>", "></w>", "-</w>", "1</w>", ".</w>", "2</w>"]


def test_pretrained_pipeline_is_cached_and_loads_as_a_stable_diffusion_pipeline(tmp_path, monkeypatch):
    import torch
    from diffusers import StableDiffusionPipeline

    from ric.diffusion import pretrain, shapes
    from ric.diffusion.tiny import resolve_pipeline

    monkeypatch.setenv("RIC_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    real = pretrain.train_shapes_pipeline

    def tiny_training(out, progress=True):
        calls.append(out)
        return real(out, progress=False, num_images=32, vae_steps=2, unet_steps=2, batch_size=8)

    monkeypatch.setattr(pretrain, "train_shapes_pipeline", tiny_training)
    path = resolve_pipeline(shapes.SHAPES_PIPELINE)
    assert path == resolve_pipeline(shapes.SHAPES_PIPELINE) and len(calls) == 1, "trained once, then cached"
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        ["a red circle"], num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0)
    ).images[0]
    assert image.size == (32, 32)
    assert pipe.vae.config.scaling_factor != pytest.approx(0.18215), "the scaling factor is measured"


def test_read_image_names_what_a_render_shows_and_is_unsure_rather_than_wrong():
    from ric.diffusion.shapes import COLOURS, SHAPES, draw_shape, judge_image, read_image, sample_rows

    rows = sample_rows(120, seed=41)
    images = [draw_shape(r["colour"], r["shape"], r["saturation"], r["detail"], r["seed"]) for r in rows]
    verdicts = [judge_image(image, r["colour"], r["shape"]) for image, r in zip(images, rows)]
    assert "mismatch" not in verdicts, "a render is never judged to show another colour or shape"
    vivid = [v for v, r in zip(verdicts, rows) if r["saturation"] > 0.5 and r["detail"] < 0.5]
    assert len(vivid) > 20 and vivid.count("match") >= 0.9 * len(vivid)
    # every colour and every shape is read back, and another caption is a mismatch
    for colour in COLOURS:
        for shape in SHAPES:
            image = draw_shape(colour, shape, saturation=0.9, detail=0.1, seed=7)
            seen = read_image(image)
            assert (seen["colour"], seen["shape"]) == (colour, shape), seen
    image = draw_shape("blue", "square", saturation=0.9, detail=0.1, seed=7)
    assert judge_image(image, "red", "square") == "mismatch" == judge_image(image, "blue", "circle")
    grey = read_image(draw_shape("red", "circle", saturation=0.05, detail=0.0, seed=7))
    assert grey["colour"] is None and "too grey" in grey["why"][0]
