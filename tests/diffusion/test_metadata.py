"""Bad image data is named (file, line, field) before any model loads, as bad text data is; and where
`ric generate` writes a text-to-image run's images."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ric.cli import main
from tests.helpers import ROOT


@pytest.fixture()
def recipe_on(tmp_path, monkeypatch):
    """The smoke recipe on a data folder of `rows` (metadata.jsonl lines, as text) and two real images."""
    import reward_models

    def no_models(*args, **kwargs):
        raise AssertionError("a reward model was loaded before the data was checked")

    monkeypatch.setattr(reward_models, "load_rewards", no_models)

    def make(*lines: str) -> Path:
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        for name in ("00_red_flat.png", "01_red_gradient.png"):
            shutil.copy(ROOT / "recipes/diffusion/data" / name, data / name)
        (data / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
        recipe = yaml.safe_load((ROOT / "recipes/diffusion/smoke_tiny.yaml").read_text())
        recipe.update(dataset_name=str(data), output_dir=str(tmp_path / "run"))
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path

    return make


GOOD = json.dumps({"file_name": "00_red_flat.png", "text": "a plain red square"})


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ('{"file_name": "01_red_gradient.png", "text": "a red', "metadata.jsonl line 2: not valid JSON"),
        ('["01_red_gradient.png", "a red gradient"]', "metadata.jsonl line 2: a JSON list, not an object"),
        ('{"file_name": "01_red_gradient.png", "text": 5}', "metadata.jsonl line 2: field 'text' holds int (5)"),
        ('{"file_name": "01_red_gradient.png", "text": null}', "field 'text' holds NoneType (None); captions must"),
    ],
)
def test_a_broken_metadata_line_is_named_before_any_model_loads(recipe_on, capsys, bad, fragment):
    assert main(["prepare", str(recipe_on(GOOD, bad))]) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "JSONDecodeError" not in err and "Traceback" not in err


def test_blank_captions_are_skipped_and_all_blank_is_refused(recipe_on, capsys):
    from ric.diffusion.prepare import read_image_folder

    blank = json.dumps({"file_name": "01_red_gradient.png", "text": "  "})
    path = recipe_on(GOOD, blank)
    data = Path(yaml.safe_load(path.read_text())["dataset_name"])
    images, captions, skipped = read_image_folder(data, "text")
    assert captions == ["a plain red square"] and len(images) == 1
    assert skipped == ["01_red_gradient.png (blank caption)"]

    path = recipe_on(blank, json.dumps({"file_name": "00_red_flat.png", "text": ""}))
    assert main(["prepare", str(path)]) == 2
    err = capsys.readouterr().err
    assert "every caption in column 'text' is blank (2 rows)" in err and "caption_column" in err, err
    assert main(["prepare", str(recipe_on())]) == 2
    assert "metadata.jsonl holds no rows" in capsys.readouterr().err


def test_a_dataset_of_images_with_non_text_captions_is_refused(tmp_path, recipe_on, capsys):
    import datasets
    from PIL import Image

    recipe_on(GOOD)  # only to refuse reward models
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    table = datasets.Dataset.from_dict({"image": [red, red], "text": ["a red square", None]})
    table = table.cast_column("image", datasets.Image())
    table.save_to_disk(str(tmp_path / "table"))
    recipe = yaml.safe_load((ROOT / "recipes/diffusion/smoke_tiny.yaml").read_text())
    recipe.update(dataset_name=str(tmp_path / "table"), image_column="image", output_dir=str(tmp_path / "run2"))
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["prepare", str(path)]) == 2
    err = capsys.readouterr().err
    assert "column 'text' holds NoneType values (None); captions must be text" in err, err


def test_generated_image_paths(tmp_path):
    from ric.rundir import generated_image_paths

    paths = generated_image_paths(tmp_path, ["A lighthouse, at dawn!", "???"], [0.7, 0.3])
    assert paths == [
        tmp_path / "generated" / "a-lighthouse-at-dawn_w0.70-0.30.png",
        tmp_path / "generated" / "image_w0.70-0.30.png",
    ]
    assert generated_image_paths(tmp_path, ["x"], [1, 0], out="a/b.png") == [Path("a/b.png")]
    with pytest.raises(ValueError, match="--out: names one file"):
        generated_image_paths(tmp_path, ["x", "y"], [1, 0], out="a.png")
