"""Baselines: GRPO with weighted registry rewards, exact in-memory Rewarded Soups, `ric compare`."""

import builtins
import json
from pathlib import Path

import pytest
import torch
import yaml

from ric.cli import main


@pytest.fixture()
def rl_recipe(tiny_recipe):
    recipe = yaml.safe_load(tiny_recipe.read_text())
    recipe.update(
        method="morlhf",
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=6,
        logging_steps=1,
        learning_rate=0.01,
        beta=0.2,
        preferences=["0.3,0.7", "1.0,0.0"],
        eval_num_prompts=2,
        eval_batch_size=4,
        save_steps=100,
    )
    recipe.pop("max_length", None)
    tiny_recipe.write_text(yaml.safe_dump(recipe))
    return tiny_recipe


def test_grpo_with_weighted_registry_rewards(rl_recipe):
    from reward_models import load_rewards
    from ric.baselines.rl import rl_dataset, train_rl_policy
    from ric.models import load_tokenizer
    from tests.helpers import parse_run_args

    (model_args, data_args, args, _), _ = parse_run_args([], str(rl_recipe))
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    dataset = rl_dataset(
        ["How do I bake bread?", "Name a color.", "Why is the sky blue?", "Say hi."], "chat", tokenizer
    )
    scorers = load_rewards(["positivity", "conciseness"])
    out = Path(args.output_dir) / "policy"
    stats = train_rl_policy(model_args, args, scorers, [0.3, 0.7], dataset, tokenizer, out)
    assert stats["global_step"] == 2 and stats["generated_tokens"] > 0
    logged = stats["reward_logs"]
    assert logged and all("rewards/positivity/mean" in e and "rewards/conciseness/mean" in e for e in logged)
    from safetensors.torch import load_file

    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero and must have moved"
    history = json.loads((out / "stats.json").read_text())
    assert history["weights"] == [0.3, 0.7]


def test_soups_mixing_is_the_exact_weighted_sum_and_writes_nothing(tiny_model_dir, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ric.baselines.soups import mix_adapters

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(base, config, adapter_name="a")
    model.add_adapter(
        "b", LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    weights = [0.3, 0.7]

    def no_writes(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            raise AssertionError(f"mixing wrote to {file}")
        return real_open(file, mode, *args, **kwargs)

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", no_writes)
    mix_adapters(model, ["a", "b"], weights, "mix")
    monkeypatch.setattr(builtins, "open", real_open)

    checked = 0
    for name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and "mix" in getattr(module, "lora_A", {}):
            expected = weights[0] * module.get_delta_weight("a") + weights[1] * module.get_delta_weight("b")
            got = module.get_delta_weight("mix")
            assert torch.allclose(got, expected, atol=1e-5, rtol=0), name
            checked += 1
    assert checked == 4  # q_proj and v_proj of 2 layers


@pytest.mark.parametrize("method", ["morlhf", "soups"])
def test_baseline_recipes_run_end_to_end(rl_recipe, method, capsys):
    recipe = yaml.safe_load(rl_recipe.read_text())
    recipe["method"] = method
    if method == "soups":
        recipe.pop("preferences")  # Soups trains one policy per reward
    rl_recipe.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(rl_recipe), "--eval_grid_divisions", "2"]) == 0
    run = Path(recipe["output_dir"])
    pareto = json.loads((run / "eval/pareto.json").read_text())
    assert pareto["method"] == method and pareto["num_prompts"] == 2
    if method == "morlhf":
        assert [p["preference"] for p in pareto["points"]] == [[0.3, 0.7], [1.0, 0.0]]
        assert sorted(p.name for p in (run / "policies").iterdir()) == ["w_0.30_0.70", "w_1.00_0.00"]
    else:
        assert sorted(p.name for p in (run / "policies").iterdir()) == ["conciseness", "positivity"]
        assert [p["preference"] for p in pareto["points"]] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
        assert not list(run.rglob("*mix*")), "soups mixing writes no merged model"
    compute = json.loads((run / "compute.json").read_text())
    assert compute["total"]["optimizer_steps"] == 4 and compute["total"]["generated_tokens"] > 0
    assert pareto["base"] is not None and pareto["hypervolume"] >= 0

    # every command works on a baseline's run directory
    capsys.readouterr()
    assert main(["evaluate", str(run), "--eval_dir", str(run / "eval_again"), "--temperature", "0.5"]) == 0
    again = json.loads((run / "eval_again/pareto.json").read_text())
    assert again["method"] == method and again["generation"]["temperature"] == 0.5
    assert again["hypervolume_reference_rule"] == pareto["hypervolume_reference_rule"]
    capsys.readouterr()
    assert (
        main(["generate", str(run), "--preference", "0.9,0.1", "Name a color.", "--json", "--max_new_tokens", "3"])
        == 0
    )
    out = capsys.readouterr()
    answer = json.loads(out.out.strip().splitlines()[-1])
    assert answer["preference"] == [0.9, 0.1] and answer["prompt"] == "Name a color."
    if method == "morlhf":
        assert answer["policy"] == "w_1.00_0.00", "the trained point nearest to (0.9, 0.1)"
    else:
        assert answer["policy"] == "mix w_0.90_0.10"
    assert f"policy: {answer['policy']}" in out.err
    assert main(["status", str(run)]) == 0
    assert "policy:" in capsys.readouterr().out
    for flag in (["--method", "l2"], ["--adapter", str(run)]):
        assert main(["generate", str(run), "--preference", "0.5,0.5", "hi", *flag]) == 2
        assert flag[0] in capsys.readouterr().err
    assert main(["evaluate", str(run), "--adapter", str(run)]) == 2
    assert "--adapter" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--eval_preference_method", "l1"]) == 2, "no score tags, no mapping"
    assert "--eval_preference_method does not change a" in capsys.readouterr().err
    if method == "morlhf":  # its points are its policies; Soups mixes its adapters on the grid it is given
        assert main(["evaluate", str(run), "--eval_grid_divisions", "5"]) == 2
        assert "--eval_grid_divisions does not change a morlhf evaluation" in capsys.readouterr().err


def test_soups_generator_mixes_once_per_preference_and_keeps_few(rl_recipe, capsys):
    """Distinct preferences get distinct mixes (cached); the oldest mix is dropped past the cap."""
    from ric.baselines.soups import SoupsGenerator

    recipe = yaml.safe_load(rl_recipe.read_text())
    recipe.update(method="soups", max_steps=1)
    recipe.pop("preferences")
    rl_recipe.write_text(yaml.safe_dump(recipe))
    assert main(["train", str(rl_recipe)]) == 2  # training needs the prepared prompts first
    assert "prepare" in capsys.readouterr().err
    assert main(["prepare", str(rl_recipe)]) == 0 and main(["train", str(rl_recipe)]) == 0
    generator = SoupsGenerator.from_run(recipe["output_dir"])
    generator.max_mixes = 2
    first = generator.generate(["hi"], preference=[0.2, 0.8], max_new_tokens=2)
    assert first[0]["policy"] == "mix w_0.20_0.80"
    names = set(generator.model.peft_config)
    generator.generate(["hi"], preference=[0.2, 0.8], max_new_tokens=2)
    assert set(generator.model.peft_config) == names, "the same preference reuses its mix"
    generator.generate(["hi"], preference=[0.6, 0.4], max_new_tokens=2)
    generator.generate(["hi"], preference=[0.7, 0.3], max_new_tokens=2)
    mixes = [n for n in generator.model.peft_config if n.startswith("mix_")]
    assert len(mixes) == 2 and len(generator.mixes) == 2


def test_grpo_keeps_an_fp32_adapter_on_an_8bit_base(rl_recipe):
    """GRPOTrainer casts the LoRA of a quantized base to bf16; the run casts it back (adapter_dtype)."""
    import dataclasses

    from safetensors.torch import load_file

    from reward_models import load_rewards
    from ric.baselines.rl import rl_dataset, train_rl_policy
    from ric.models import load_tokenizer
    from tests.helpers import parse_run_args

    (model_args, _, args, _), _ = parse_run_args(["--max_steps", "1"], str(rl_recipe))
    model_args = dataclasses.replace(model_args, load_in_8bit=True, adapter_dtype="float32")
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    dataset = rl_dataset(["How do I bake bread?", "Name a color.", "Say hi.", "Why?"], "chat", tokenizer)
    out = Path(args.output_dir) / "policy-8bit"
    stats = train_rl_policy(
        model_args, args, load_rewards(["positivity", "conciseness"]), [0.5, 0.5], dataset, tokenizer, out
    )
    assert stats["global_step"] == 1
    saved = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert saved and {v.dtype for v in saved.values()} == {torch.float32}


def test_rollouts_have_their_own_sampling_and_every_demo_method_evaluates_alike(smol_tokenizer, tmp_path):
    """GRPO's rollouts take the rollout_* keys (the paper's PPO: temperature 0.7, top_p 1.0, top_k 0, no end
    token first, clipping 0.5); the recipe's temperature / top_p stay the evaluation's, the same for every
    demo method."""
    from ric.baselines.rl import rollout_config
    from ric.run_info import build_run_info
    from tests.helpers import ROOT, parse_run_args

    recipe = tmp_path / "morlhf.yaml"
    recipe.write_text(yaml.safe_dump({"method": "morlhf", "output_dir": str(tmp_path / "run"), "temperature": 0.3}))
    (_, _, args, _), _ = parse_run_args([], recipe)
    rl = rollout_config(args, [0.5, 0.5], tmp_path / "c", smol_tokenizer)
    assert (rl.temperature, rl.top_p, rl.top_k, rl.max_grad_norm, rl.beta) == (0.7, 1.0, 0, 0.5, 0.2)
    assert rl.generation_kwargs == {"begin_suppress_tokens": [smol_tokenizer.eos_token_id]}
    assert rl.reward_weights == [0.5, 0.5] and args.temperature == 0.3
    kept = rollout_config(
        parse_run_args(["--rollout_end_first", "true"], recipe)[0][2], [1, 0], tmp_path, smol_tokenizer
    )
    assert kept.generation_kwargs is None

    evaluation = {}
    for name in ("ric", "prt", "sft", "morlhf", "soups"):
        path = ROOT / "recipes/demo" / f"{name}.yaml"
        if not path.exists():
            continue
        (model_args, _, method_args, _), _ = parse_run_args([], path)
        info = build_run_info(name, model_args.model_name_or_path, method_args, ["positivity", "conciseness"])
        evaluation[name] = {k: v for k, v in info.generation.items() if k != "batch_size"}
    assert len(evaluation) >= 4 and all(v == evaluation["ric"] for v in evaluation.values()), evaluation


def test_evaluate_a_baseline_at_a_trainer_step(rl_recipe, capsys):
    """`ric evaluate --step N`: every policy answers from its checkpoint of step N (the points of a
    learning curve); a step without checkpoints is refused with the steps kept, and RiC runs refuse it."""
    recipe = yaml.safe_load(rl_recipe.read_text())
    recipe.update(save_steps=1, save_total_limit=10, preferences=["0.5,0.5"])
    rl_recipe.write_text(yaml.safe_dump(recipe))
    assert main(["prepare", str(rl_recipe)]) == 0 and main(["train", str(rl_recipe)]) == 0
    run = Path(recipe["output_dir"])
    kept = run / "policies/w_0.50_0.50/checkpoints"
    assert sorted(p.name for p in kept.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    first = kept / "checkpoint-1/adapter_model.safetensors"
    assert first.read_bytes() != (run / "policies/w_0.50_0.50/adapter/adapter_model.safetensors").read_bytes()
    fronts = {}
    for step in (1, 2):
        assert main(["evaluate", str(run), "--step", str(step), "--eval_dir", str(run / f"eval_step_{step}")]) == 0
        fronts[step] = json.loads((run / f"eval_step_{step}/pareto.json").read_text())
        assert fronts[step]["step"] == step and fronts[step]["num_prompts"] == 2
    gen = {step: sorted((run / f"eval_step_{step}/gen").glob("points-*")) for step in fronts}
    assert gen[1][0].name != gen[2][0].name, "another step is another fingerprint: nothing reused"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--step", "5"]) == 2
    err = capsys.readouterr().err
    assert "--step 5" in err and "kept: [1, 2]" in err
    from ric.methods import METHODS
    from ric.recipe import RecipeError

    with pytest.raises(RecipeError, match="--step: applies to morlhf and soups runs only"):
        METHODS["ric"].check_options({"step": 1})
