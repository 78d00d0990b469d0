"""Recipes are read the TRL way; every recipe in the repository parses into the real config classes."""

from pathlib import Path

import pytest
import yaml

from ric.recipe import RecipeError, check_recipe
from tests.helpers import parse_run_args

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)


def write(tmp_path, mapping):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return str(path)


def test_recipes_exist():
    assert any(p.parent.name == "demo" for p in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(p.relative_to(ROOT)) for p in RECIPES])
def test_every_recipe_parses_into_the_config_classes(recipe):
    from ric.methods import recipe_method
    from ric.recipe import parse_recipe

    classes = recipe_method(str(recipe)).config_classes()
    instances, effective = parse_recipe(classes, [], str(recipe))
    assert len(instances) == len(classes)
    for instance, cls in zip(instances, classes):
        assert type(instance) is cls
    assert effective == yaml.safe_load(recipe.read_text())


def test_paper_defaults():
    (model, data, args, ev), _ = parse_run_args(["--output_dir", "x", "--rewards", "positivity", "relevance"])
    assert (model.lora_r, model.lora_alpha, model.lora_dropout) == (64, 128, 0.05)
    assert args.learning_rate == pytest.approx(1.41e-4) and args.max_steps == 20000
    assert args.weight_decay == pytest.approx(0.01) and args.per_device_train_batch_size == 2
    assert (args.temperature, args.top_p) == (0.7, 0.9)
    assert (args.online_quantile, args.online_num_origin_samples, args.online_max_steps) == (0.7, 10000, 4000)
    assert args.online_learning_rate == pytest.approx(1e-5) and args.online_lr_scheduler_type == "constant"
    assert ev.eval_preference_method == "l2"
    assert args.rewards == ["positivity", "relevance"]


def test_cpu_defaults_turn_bf16_and_checkpointing_off():
    import torch

    (_, _, args, _), _ = parse_run_args(["--output_dir", "x"])
    if not torch.cuda.is_available():
        assert args.bf16 is False and args.gradient_checkpointing is False


def test_a_recipes_bf16_on_a_cpu_is_autocast_where_the_cpu_computes_bf16():
    import torch

    from ric.config import cpu_has_bf16

    if torch.cuda.is_available():
        pytest.skip("a GPU machine: bf16 is the GPU's")
    (_, _, args, _), _ = parse_run_args(["--output_dir", "x", "--bf16", "true"])
    assert (args.bf16, args.use_cpu) == ((True, True) if cpu_has_bf16() else (False, False))


def test_command_line_overrides_the_file(tmp_path):
    recipe = write(tmp_path, {"output_dir": "runs/x", "max_steps": 10, "rewards": ["positivity"], "lora_r": 8})
    (model, _, args, _), effective = parse_run_args(["--max_steps", "3"], recipe)
    assert args.max_steps == 3 and model.lora_r == 8
    assert effective["max_steps"] == 3 and effective["lora_r"] == 8
    (_, _, args, _), _ = parse_run_args(["--config", recipe])
    assert args.max_steps == 10


@pytest.mark.parametrize(
    "mapping, fragment",
    [
        ({"output_dir": "x", "lerning_rate": 0.1}, "unknown key 'lerning_rate'. Did you mean 'learning_rate'"),
        ({"output_dir": "x", "learning_rate": "fast"}, "learning_rate = 'fast' has the wrong type"),
        ({"output_dir": "x", "max_steps": 1.5}, "max_steps = 1.5 has the wrong type"),
        ({"output_dir": "x", "rewards": "positivity"}, "rewards = 'positivity' has the wrong type"),
        ({"output_dir": "x", "template": "alpaca"}, "template = 'alpaca' is not one of"),
        ({"output_dir": "x", "use_peft": "yes"}, "use_peft = 'yes' has the wrong type"),
        ({"output_dir": "x", "online_quantile": 1.5}, "online_quantile must be in (0, 1)"),
        ({"output_dir": "x", "num_responses_per_prompt": 0}, "num_responses_per_prompt must be >= 1"),
    ],
)
def test_bad_recipes_are_refused_with_the_key_named(tmp_path, mapping, fragment):
    with pytest.raises(RecipeError) as info:
        parse_run_args([], write(tmp_path, mapping))
    assert fragment in str(info.value)


def test_unknown_command_line_flag(tmp_path):
    with pytest.raises(RecipeError):
        parse_run_args(["--no_such_flag", "1"], write(tmp_path, {"output_dir": "x"}))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        parse_run_args([], str(tmp_path / "nope.yaml"))


def test_check_recipe_accepts_env_and_known_keys():
    from ric.methods import METHODS

    check_recipe(
        {"env": {"A": "1"}, "lora_r": 4, "report_to": ["none"], "method": "ric"}, METHODS["ric"].config_classes()
    )


def test_config_flag_picks_the_recipes_method_like_a_positional_recipe(tmp_path):
    from ric.baselines.config import MORLHFConfig
    from ric.cli import split_recipe
    from ric.methods import open_run

    assert split_recipe(["--config", "r.yaml", "--max_steps", "3"]) == ("r.yaml", ["--max_steps", "3"])
    assert split_recipe(["r.yaml", "--max_steps", "3"]) == ("r.yaml", ["--max_steps", "3"])
    assert split_recipe(["--max_steps", "3", "--config"]) == (None, ["--max_steps", "3", "--config"])
    recipe = str(ROOT / "recipes/demo/morlhf.yaml")
    for argv in (["--config", recipe], [recipe]):
        run = open_run(*reversed(split_recipe(argv + ["--output_dir", str(tmp_path / "run")])))
        assert run.method == "morlhf" and isinstance(run.configs[2], MORLHFConfig)
        assert run.configs[2].num_preference_points == 5


@pytest.mark.parametrize(
    "old, new",
    [
        ("end_cut_responses", "eos_after_budget_cut"),
        ("online_chunk_size", "generation_chunk_size"),
        ("morlhf_num_points", "num_preference_points"),
        ("eval_generation_batch_size", "eval_batch_size"),
        ("generation_batch_size", "sampling_batch_size"),
    ],
)
def test_renamed_keys_are_refused_with_their_new_name(tmp_path, old, new):
    with pytest.raises(RecipeError, match=f"key '{old}' was renamed to '{new}'"):
        parse_run_args([], write(tmp_path, {"output_dir": "x", old: 1}))
    with pytest.raises(RecipeError, match=f"key '{old}' was renamed to '{new}'"):
        parse_run_args([f"--{old}", "1"], write(tmp_path, {"output_dir": "x"}))


def test_a_renamed_key_that_is_another_methods_own_field_is_kept(tmp_path):
    # RiC's generation_batch_size became sampling_batch_size; MORLHF's is GRPO's own rollout batch
    (_, _, args, _), _ = parse_run_args(
        [], write(tmp_path, {"method": "morlhf", "output_dir": "x", "generation_batch_size": 8, "num_generations": 4})
    )
    assert args.generation_batch_size == 8 and args.sampling_batch_size == 32


def test_rloo_refuses_a_grpo_setting_it_would_drop(tmp_path):
    base = {"method": "morlhf", "output_dir": "x", "rl_algorithm": "rloo"}
    parse_run_args([], write(tmp_path, base))  # GRPO's defaults: nothing to drop
    with pytest.raises(RecipeError, match="scale_rewards: a GRPO setting that RLOOTrainer does not have"):
        parse_run_args([], write(tmp_path, {**base, "scale_rewards": "batch"}))
    (_, _, args, _), _ = parse_run_args(
        [], write(tmp_path, {**base, "rl_algorithm": "grpo", "scale_rewards": "batch"})
    )
    assert args.scale_rewards == "batch"


def test_methods_are_modules_found_by_name():
    import importlib

    from ric.methods import METHODS

    assert list(METHODS)[:6] == ["ric", "morlhf", "soups", "sft", "prt", "diffusion"]
    for name, method in METHODS.items():
        assert method is importlib.import_module(f"ric.methods.{name}").METHOD and method.name == name


def test_a_method_outside_ric_is_found_through_its_entry_point(tmp_path, monkeypatch):
    """A plug-in package (a real distribution on sys.path, found by importlib.metadata) adds a method."""
    import sys

    from ric.methods import METHODS, get_method

    (tmp_path / "my_method.py").write_text(
        "from ric.methods.sft import METHOD as SFT\n"
        "import dataclasses\n"
        "METHOD = dataclasses.replace(SFT, name='mine', description='a plug-in')\n"
    )
    info = tmp_path / "my_method-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ric.methods]\nmine = my_method\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "mine" in list(METHODS) and get_method("mine").description == "a plug-in"
    monkeypatch.delitem(sys.modules, "my_method")
    METHODS._loaded.pop("mine")


def test_a_key_of_another_method_is_refused(tmp_path):
    # MORLHF's preference points mean nothing to Rewarded Soups, RiC's sampling nothing to the baselines
    with pytest.raises(RecipeError, match="unknown key 'preferences'"):
        parse_run_args([], write(tmp_path, {"method": "soups", "output_dir": "x", "preferences": ["0.5,0.5"]}))
    with pytest.raises(RecipeError, match="unknown key 'sampling_system_prompts'"):
        parse_run_args([], write(tmp_path, {"method": "morlhf", "output_dir": "x", "sampling_system_prompts": ["a"]}))
    with pytest.raises(RecipeError, match="method = 'ppo' is not one of"):
        parse_run_args([], write(tmp_path, {"method": "ppo", "output_dir": "x"}))


PAPER_RECIPES = [p for p in RECIPES if p.parent.name in ("hh_rlhf", "summary")]


def _parsed(recipe):
    """name -> value of every field of the recipe's parsed config instances."""
    from dataclasses import asdict

    from ric.methods import recipe_method
    from ric.recipe import parse_recipe

    instances, _ = parse_recipe(recipe_method(str(recipe)).config_classes(), [], str(recipe))
    merged: dict = {}
    for instance in instances:
        merged.update(asdict(instance) if hasattr(instance, "__dataclass_fields__") else vars(instance))
    return merged


def test_defaults_are_the_paper_codes_where_it_departs_from_the_text():
    (model, _, args, ev), _ = parse_run_args(["--output_dir", "x"])
    assert model.adapter_dtype == "float32"
    assert args.score_range == "gaussian" and (args.score_range_seed, args.score_range_samples) == (8888, 50000)
    assert args.online_goal_sampling == "min_of_uniform"
    assert args.trim_truncated is False


@pytest.mark.parametrize("recipe", PAPER_RECIPES, ids=[str(p.relative_to(ROOT)) for p in PAPER_RECIPES])
def test_paper_recipes_keep_the_official_settings(recipe):
    from reward_models.paper_models import SUMMARY_INSTRUCTION_PROMPT

    values = _parsed(recipe)
    assert values["adapter_dtype"] == "float32"
    assert values.get("trim_truncated", False) is False, "the paper's code does not trim truncated answers"
    if "score_range" in values:
        assert values["score_range"] == "gaussian"
    if "online_goal_sampling" in values:
        assert values["online_goal_sampling"] == "min_of_uniform"
    if recipe.stem.startswith(("morlhf", "soups")):
        assert values["model_name_or_path"] == f"runs/{recipe.parent.name}/sft/merged", "the baselines start from SFT"
        assert (ROOT / "recipes" / recipe.parent.name / "sft.yaml").exists()
    if recipe.stem == "sft":  # sft/sft.py: the completion-only collator, batch 1 per device
        assert values["completion_only_loss"] is True and values["per_device_train_batch_size"] == 1
    if "deberta" in recipe.stem:
        declared = yaml.safe_load(recipe.read_text())["reward_models"]["deberta"]
        assert declared["prompt_template"] == SUMMARY_INSTRUCTION_PROMPT


def test_demo_recipes_keep_their_cpu_choices():
    values = _parsed(ROOT / "recipes/demo/ric.yaml")
    assert values["trim_truncated"] is True and values["score_range"] == "quantiles"


def test_the_comparison_questions_are_held_out_from_every_other_demo_file():
    """recipes/demo/data/compare_prompts.jsonl: >= 100 questions, each once, none equal (case and punctuation
    aside) to a question of the demo's training, evaluation or apart files."""
    import json
    import re

    def questions(name):
        lines = (ROOT / f"recipes/demo/data/{name}.jsonl").read_text().splitlines()
        return [re.sub(r"[^a-z0-9 ]", "", json.loads(line)["prompt"].lower()).strip() for line in lines if line]

    held_out = questions("compare_prompts")
    assert len(held_out) >= 100 and len(set(held_out)) == len(held_out)
    for other in ("train_prompts", "eval_prompts", "apart_prompts"):
        assert not set(held_out) & set(questions(other)), other
