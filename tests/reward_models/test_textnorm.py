"""TextNorm's arithmetic against a hand computation of its definition."""

import math

import numpy as np
import pytest

from reward_models import combine_probabilities, textnorm_probabilities


def by_hand(row, scale):
    low, high = min(row), max(row)
    scaled = [scale * (x - low) / (high - low) for x in row]
    total = sum(math.exp(x) for x in scaled)
    return math.exp(scaled[0]) / total


def test_own_prompt_probability_matches_the_definition():
    scores = [[0.31, 0.12, 0.25, 0.05], [0.10, 0.40, 0.20, 0.30], [-2.0, -3.0, -2.5, -1.0]]
    got = textnorm_probabilities(scores, scale=3.0)
    assert got == pytest.approx([by_hand(r, 3.0) for r in scores], rel=1e-12)
    # the own prompt scoring highest gets the most mass; a higher scale makes the reward more decisive
    assert got[0] > 0.25 > got[1]
    assert textnorm_probabilities(scores, scale=10.0)[0] > got[0]


def test_the_normalisation_ignores_each_rows_offset_and_units():
    row = np.array([[0.3, 0.1, 0.2]])
    assert textnorm_probabilities(row, 5) == pytest.approx(textnorm_probabilities(100 * row - 7, 5))


def test_a_row_of_equal_scores_is_uniform_not_one():
    assert textnorm_probabilities([[0.5, 0.5, 0.5, 0.5]], 3.0) == pytest.approx([0.25])


def test_ensembles():
    p = np.array([[0.6, 0.2], [0.4, 0.2]])
    assert combine_probabilities(p) == pytest.approx([0.5, 0.2])
    assert combine_probabilities(p, "uncertainty", lam=1.0) == pytest.approx([0.5 - 0.01, 0.2])


@pytest.mark.parametrize(
    "scores, scale, fragment",
    [
        ([[0.1, 0.2]], 0.0, "scale must be > 0"),
        ([[0.1]], 1.0, "K >= 1 contrastive prompts"),
        ([0.1, 0.2], 1.0, r"shape \(n, 1 \+ K\)"),
        ([[0.1, float("nan")]], 1.0, "NaN or infinite"),
    ],
)
def test_bad_input_names_the_argument(scores, scale, fragment):
    with pytest.raises(ValueError, match=fragment):
        textnorm_probabilities(scores, scale)
    with pytest.raises(ValueError, match="is not one of"):
        combine_probabilities([[0.5]], "median")


# --- TextNorm as a reward: contrasts, the registry, a recipe, refusals ---------------------------------------


def test_rule_contrasts_swap_one_word_of_its_kind_deterministically():
    from reward_models.contrasts import rule_contrasts

    got = rule_contrasts("a red circle", 30)
    assert "a blue circle" in got and "a red square" in got and "a red circle" not in got
    assert all(
        len(c.split()) == 3 and sum(a != b for a, b in zip(c.split(), "a red circle".split())) == 1 for c in got
    )
    assert "Three cats" in rule_contrasts("Two cats", 30) and "3 dogs" in rule_contrasts("2 dogs", 30)
    assert rule_contrasts("a red circle", 4, seed=1) == rule_contrasts("a red circle", 4, seed=1)
    assert rule_contrasts("a red circle", 4, seed=1) != rule_contrasts("a red circle", 4, seed=2)
    assert rule_contrasts("What do you think about Tuesdays?", 4) == [], "no vocabulary word: no contrast"


def test_textnorm_reward_scores_its_own_prompt_against_the_contrasts(tmp_path):
    """Through the registry, with a file of contrasts and a real prompt-dependent reward (MiniLM relevance):
    the same answer scores higher under its own question than under another's; a prompt without contrasts gets
    1 / (1 + K), is counted, and is never 1.0."""
    import json

    from reward_models import check_reward_names, get_reward, reward_summary

    contrasts = tmp_path / "contrasts.jsonl"
    contrasts.write_text(
        json.dumps({"prompt": "How do I bake bread?", "contrasts": ["How do I fix a tire?", "Why is the sky blue?"]})
        + "\n"
        + json.dumps({"prompt": "How do I fix a tire?", "contrasts": ["How do I bake bread?", "Name a color."]})
        + "\n"
    )
    declared = {"relevance": {"type": "textnorm", "source": "file", "path": str(contrasts), "contrasts": 2}}
    check_reward_names(["relevance"], declared)
    scorer = get_reward("relevance", declared)
    bread = "Knead the dough, let it rise, and bake it in a hot oven."
    got = scorer(["How do I bake bread?", "How do I fix a tire?", "Unlisted question?"], [bread, bread, bread])
    assert got[0] > 1 / 3 > got[1], got
    assert got[2] == pytest.approx(1 / 3)
    raw = get_reward("relevance")(["How do I bake bread?"] * 3, [bread] * 3)
    assert got[0] == pytest.approx(
        textnorm_probabilities(
            [[raw[0], *get_reward("relevance")(["How do I fix a tire?", "Why is the sky blue?"], [bread] * 2)]], 3.0
        )[0]
    )
    record = scorer.record()
    assert record["counts"] == {"prompts": 3, "without_contrast": 1, "fewer_than_k": 0, "rows_without_contrast": 1}
    assert record["made"]["How do I bake bread?"] == ["How do I fix a tire?", "Why is the sky blue?"]
    assert reward_summary("textnorm")["description"].startswith("TextNorm")


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"of": "positivity"}, "does not read the prompt"),
        ({"of": "colorfulness"}, "does not read the prompt"),
        ({"contrasts": 0}, "contrasts: K contrastive prompts"),
        ({"scale": -1}, "scale: the softmax's range"),
        ({"source": "file"}, "path: source file needs"),
        ({"source": "file", "path": "EMPTY"}, "empty"),
        ({"source": "file", "path": "BROKEN"}, "line 2: not JSON"),
        ({"source": "file", "path": "SELF"}, "a contrast equals its own prompt"),
        ({"ensemble": "max"}, "ensemble: 'max'"),
        ({"lam": -0.5}, "lam: the uncertainty weight"),
    ],
)
def test_bad_textnorm_declarations_are_refused_by_field(tmp_path, spec, words):
    import json

    from reward_models import check_reward_names

    files = {
        "EMPTY": "\n",
        "BROKEN": json.dumps({"prompt": "a", "contrasts": ["b"]}) + "\n{oops\n",
        "SELF": json.dumps({"prompt": "a", "contrasts": ["b", "a"]}) + "\n",
    }
    if spec.get("path") in files:
        path = tmp_path / "contrasts.jsonl"
        path.write_text(files[spec["path"]])
        spec = {**spec, "path": str(path)}
    with pytest.raises(ValueError, match=words):
        check_reward_names(["relevance"], {"relevance": {"type": "textnorm", **spec}})


def test_a_recipe_names_textnorm_inline_and_prepare_records_it(tiny_recipe, tmp_path):
    """`rewards: [positivity, {name: relevance, normalize: textnorm, ...}]`: the prepared rows carry TextNorm's
    probabilities (in (0, 1)), data/textnorm.json holds every prompt's contrasts, prepare's stats the counts."""
    import json

    import yaml

    from ric.cli import main

    recipe = yaml.safe_load(tiny_recipe.read_text())
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(
            json.dumps({"prompt": p}) + "\n"
            for p in ["How do I make soup?", "Why do cats purr?", "Name a river.", "How do I tie a tie?"]
        )
    )
    recipe["rewards"] = [
        "positivity",
        {
            "name": "relevance",
            "normalize": "textnorm",
            "scale": 3,
            "contrasts": 2,
            "source": "dataset",
            "path": str(pool),
        },
    ]
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    assert main(["prepare", str(tiny_recipe)]) == 0
    data = tmp_path / "run" / "data"
    record = json.loads((data / "textnorm.json").read_text())["relevance"]
    assert record["source"] == "dataset" and record["contrasts"] == 2 and len(record["made"]) == 8
    assert all(len(c) == 2 for c in record["made"].values())
    stats = json.loads((data / "prepare_stats.json").read_text())
    assert stats["textnorm"]["relevance"]["prompts"] == 8 and stats["textnorm"]["relevance"]["without_contrast"] == 0
    import datasets

    scores = [row[1] for row in datasets.load_from_disk(str(data / "train"))["scores"]]
    assert all(0 < s < 1 for s in scores) and len(set(scores)) > 1
    # a normalisation other than textnorm is refused by name
    recipe["rewards"][1]["normalize"] = "zscore"
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    assert main(["prepare", str(tiny_recipe), "--output_dir", str(tmp_path / "other")]) == 2
