"""What `ric evaluate` and `ric generate` accept on a baseline's run comes from the method registry: a flag
the method would ignore is refused by name, before the recipe is parsed or any model loads."""

import json

import pytest
import yaml

from ric.cli import main
from tests.helpers import ROOT

RL = dict(
    max_steps=2,
    per_device_train_batch_size=4,
    num_generations=4,
    max_completion_length=6,
    eval_num_prompts=2,
    eval_batch_size=4,
)


@pytest.fixture()
def run_of(tiny_recipe, tmp_path, monkeypatch):
    """A run directory of `method` as `ric prepare` starts it (the effective recipe in RUN/recipe.yaml),
    nothing trained; the recipe must not even be parsed before a refusal."""
    import ric.methods

    def fail(*args, **kwargs):
        raise AssertionError("the recipe was parsed before the flags were checked")

    monkeypatch.setattr(ric.methods, "parse_run", fail)

    def make(method: str):
        if method == "sft":
            recipe = yaml.safe_load((ROOT / "recipes/hh_rlhf/sft.yaml").read_text())
        else:
            recipe = {**yaml.safe_load(tiny_recipe.read_text()), **RL, "method": method}
            if method == "morlhf":
                recipe["preferences"] = ["0.3,0.7", "1.0,0.0"]
        run = tmp_path / f"{method}-run"
        recipe["output_dir"] = str(run)
        run.mkdir()
        (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        return run

    return make


@pytest.mark.parametrize(
    "method, flag, value, why",
    [
        ("morlhf", "eval_grid_divisions", "5", "its points are the trained policies"),
        ("morlhf", "eval_preference_method", "l2", "writes no score tags"),
        ("soups", "eval_preference_method", "l1", "writes no score tags"),
        ("sft", "eval_grid_divisions", "3", "it is one point, the SFT model"),
        ("sft", "eval_preference_method", "l2", "writes no score tags"),
    ],
)
def test_evaluate_refuses_an_evaluation_key_the_method_does_not_read(run_of, capsys, method, flag, value, why):
    run = run_of(method)
    assert main(["evaluate", str(run), "--eval_num_prompts", "1", f"--{flag}", value]) == 2
    err = capsys.readouterr().err
    assert f"--{flag} does not change a {method} evaluation" in err and why in err, err
    assert err.count("ric evaluate:") == 1, err
    takes = err.split("evaluation takes ")[1]
    assert "--eval_num_prompts" in takes and "--temperature" in takes and f"--{flag}" not in takes, err


def test_evaluate_and_serve_refuse_dtype_for_a_baseline(run_of, capsys):
    from ric.server import load_service

    run = run_of("morlhf")
    assert main(["evaluate", str(run), "--dtype", "bfloat16"]) == 2
    assert "--dtype: applies to ric and prt runs only; this is a morlhf run" in capsys.readouterr().err
    (run / "ric_run.json").write_text(
        json.dumps({"method": "morlhf", "base_model": "x", "rewards": ["a", "b"], "template": "chat"})
    )
    with pytest.raises(ValueError, match="--dtype: applies to ric and prt runs only"):
        load_service(run, dtype="bfloat16")


def test_evaluate_keys_the_method_reads_pass_the_check():
    from ric.config import EvaluationConfig
    from ric.methods import EVALUATION_KEYS, METHODS

    assert set(EVALUATION_KEYS) == set(EvaluationConfig.__dataclass_fields__), "a new key needs a place in the table"
    for method in METHODS.values():
        assert set(method.evaluation_keys) <= set(EVALUATION_KEYS), method.name
        method.check_evaluate_flags(set(method.evaluation_keys) | set(method.generation_keys))
        if not method.takes_targets:
            assert "eval_preference_method" not in method.evaluation_keys, method.name
    assert "eval_grid_divisions" in METHODS["soups"].evaluation_keys, "Soups mixes its adapters on the grid"


@pytest.mark.parametrize(
    "method, flags, fragment",
    [
        ("morlhf", {"preference": "0.5,0.5", "method": "l2"}, "--method: a morlhf run writes no score tags"),
        ("soups", {"preference": "0.5,0.5", "adapter": "x"}, "--adapter: applies to ric runs only"),
        ("soups", {"preference": "0.5,0.5", "guidance_scale": 3.0}, "--guidance_scale: applies to text-to-image"),
        ("sft", {"preference": "0.5,0.5"}, "--preference: a sft run answers without a preference"),
        ("sft", {"out": "x.png"}, "--out: applies to text-to-image runs only; this is a sft run"),
        ("morlhf", {}, "--preference: required for a morlhf run"),
        ("diffusion", {"preference": "0.5,0.5", "temperature": 0.5}, "--temperature: applies to text runs only"),
        ("soups", {"preference": "0.5,0.5", "dtype": "bfloat16"}, "--dtype: applies to ric and prt runs only"),
        ("diffusion", {"preference": "0.5,0.5", "dtype": "float16"}, "--dtype: applies to ric and prt runs only"),
        ("ric", {"preference": "0.5,0.5", "base": "other-model"}, "--base: applies to prt runs only"),
        ("prt", {"preference": "0.5,0.5", "adapter": "x"}, "--adapter: applies to ric runs only"),
    ],
)
def test_generate_refuses_what_the_method_would_ignore(method, flags, fragment):
    from ric.methods import METHODS
    from ric.recipe import RecipeError

    with pytest.raises(RecipeError, match="^" + fragment.replace(".", r"\.")):
        METHODS[method].check_generate_flags(flags)


def test_generate_takes_what_the_method_honours():
    from ric.methods import METHODS

    METHODS["ric"].check_generate_flags({"preference": "1,0", "method": "l2", "adapter": "a", "top_p": 0.9})
    METHODS["soups"].check_generate_flags({"preference": "1,0", "temperature": 0.7, "max_new_tokens": 3})
    METHODS["sft"].check_generate_flags({"max_new_tokens": 3})
    METHODS["diffusion"].check_generate_flags({"preference": "1,0", "out": "a.png", "num_inference_steps": 2})


def fake_run(tmp_path, method: str):
    run = tmp_path / method
    run.mkdir()
    info = {
        "method": method,
        "base_model": "/nonexistent/model",
        "rewards": ["positivity", "conciseness"],
        "template": "chat",
        "policies": [{"label": "positivity", "weights": [1, 0], "adapter": "policies/positivity/adapter"}],
    }
    (run / "ric_run.json").write_text(json.dumps(info))
    return run


@pytest.mark.parametrize(
    "method, upstream, fragment",
    [
        ("soups", "http://127.0.0.1:9/v1", "--upstream: a Rewarded Soups run mixes its adapters per preference"),
        ("diffusion", None, "is a text-to-image run: ric serve answers text"),
    ],
)
def test_serve_refuses_what_the_table_says_it_cannot_serve(tmp_path, method, upstream, fragment):
    from ric.server import load_service

    with pytest.raises(ValueError, match=fragment):
        load_service(fake_run(tmp_path, method), upstream=upstream)
