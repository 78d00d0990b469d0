"""The shapes_clip caption-image scorer: trained here on renders (a short run), read through the registry,
and normalised by TextNorm over image captions."""

import json

import numpy as np
import pytest

import ric.diffusion  # noqa: F401  (registers shapes_clip)

CONTRASTS = "recipes/diffusion/shapes_contrasts.jsonl"


@pytest.fixture(scope="module")
def scorer_dir(tmp_path_factory):
    from ric.diffusion.shapes_clip import train_shapes_clip

    out = tmp_path_factory.mktemp("shapes_clip")
    stats = train_shapes_clip(out, seed=0, progress=False, num_images=1500, steps=150)
    assert stats["loss"][-1][1] < stats["loss"][0][1]
    return out


def test_it_picks_the_right_caption_of_a_render(scorer_dir):
    from reward_models import get_reward, reward_summary
    from ric.diffusion.shapes import COLOURS, SHAPES, draw_shape, sample_rows

    scorer = get_reward("shapes_clip", path=str(scorer_dir))
    assert scorer.input_format == "caption_image" and reward_summary("shapes_clip")["input_format"] == "caption_image"
    captions = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    rows = [r for r in sample_rows(60, seed=99) if r["saturation"] > 0.4]
    right = 0
    for r in rows:
        image = draw_shape(r["colour"], r["shape"], r["saturation"], r["detail"], r["seed"])
        scores = scorer(captions, [image] * len(captions))
        right += captions[int(np.argmax(scores))] == r["text"]
    assert right >= 0.7 * len(rows), f"{right}/{len(rows)} renders given their own caption"


def test_textnorm_over_a_caption_scorer_and_over_an_ensemble(scorer_dir):
    from reward_models import check_reward_names, get_reward, textnorm_probabilities
    from ric.diffusion.shapes import draw_shape

    declared = {
        "clip": {"type": "shapes_clip", "path": str(scorer_dir)},
        "alignment": {"type": "textnorm", "of": "clip", "source": "file", "path": CONTRASTS, "contrasts": 8},
        "both": {"type": "textnorm", "of": ["clip", "clip"], "source": "file", "path": CONTRASTS, "ensemble": "mean"},
    }
    check_reward_names(["alignment", "colorfulness"], declared)
    alignment = get_reward("alignment", declared)
    red_circle = draw_shape("red", "circle", saturation=0.9, detail=0.1, seed=3)
    got = alignment(["a red circle", "a blue square"], [red_circle, red_circle])
    table = {r["prompt"]: r["contrasts"] for r in map(json.loads, open(CONTRASTS))}
    clip = get_reward("clip", declared)
    by_hand = textnorm_probabilities([clip(["a red circle", *table["a red circle"]], [red_circle] * 9)], 3.0)[0]
    assert got[0] == pytest.approx(by_hand)
    assert got[0] > 1 / 9 > got[1], "the image's own caption is the likely one, another caption not"
    assert get_reward("both", declared)(["a red circle"], [red_circle]) == pytest.approx([got[0]])
    # a declared reward that does not read the caption is refused by its registered type
    with pytest.raises(ValueError, match="does not read the prompt"):
        check_reward_names(["tn"], {"c": {"type": "colorfulness"}, "tn": {"type": "textnorm", "of": "c"}})


def test_a_missing_model_folder_is_a_clear_error(tmp_path):
    from reward_models import get_reward

    with pytest.raises(FileNotFoundError, match="shapes_clip.path"):
        get_reward("shapes_clip", path=str(tmp_path))
