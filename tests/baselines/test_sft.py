"""The baselines' starting point: SFT on the chosen responses, merged into the base, and an RL
baseline that starts from the merged model (the paper's MORLHF and Soups start from SFT)."""

import json
from pathlib import Path

import torch
import yaml

from ric.cli import main
from tests.helpers import ROOT


def sft_recipe(tiny_model_dir, tmp_path, **changes) -> Path:
    """recipes/hh_rlhf/sft.yaml on the tiny model and the local HH-RLHF fixture."""
    sft = yaml.safe_load((ROOT / "recipes/hh_rlhf/sft.yaml").read_text())
    sft.update(
        dict(
            model_name_or_path=str(tiny_model_dir),
            load_in_8bit=changes.pop("load_in_8bit", False),
            dtype="float32",
            dataset_name=str(ROOT / "tests/assets/hh_rlhf"),
            rewards=["positivity", "conciseness"],
            output_dir=str(tmp_path / "sft"),
            max_steps=2,
            per_device_train_batch_size=4,
            lora_r=4,
            lora_alpha=8,
            max_completion_length=4,
            sampling_batch_size=4,
            save_steps=100,
            max_length=256,
            logging_steps=1,
            eval_num_prompts=2,
        ),
        **changes,
    )
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(sft))
    return path


def test_sft_keeps_an_fp32_adapter_on_an_8bit_base(tiny_model_dir, tmp_path):
    """SFTTrainer casts the LoRA of a quantized base to bf16; the run casts it back (adapter_dtype)."""
    from safetensors.torch import load_file

    path = sft_recipe(tiny_model_dir, tmp_path, load_in_8bit=True, adapter_dtype="float32")
    assert main(["prepare", str(path)]) == 0 and main(["train", str(path)]) == 0
    saved = load_file(str(tmp_path / "sft" / "adapter" / "adapter_model.safetensors"))
    assert saved and {v.dtype for v in saved.values()} == {torch.float32}
    assert (tmp_path / "sft" / "merged" / "config.json").exists()


def test_sft_recipe_merges_and_an_rl_recipe_starts_from_it(tiny_model_dir, tmp_path, capsys):
    path = sft_recipe(tiny_model_dir, tmp_path)
    assert main(["run", str(path)]) == 0
    run = tmp_path / "sft"
    import datasets

    rows = datasets.load_from_disk(str(run / "data/train"))
    chosen = [
        json.loads(line)["chosen"] for line in (ROOT / "tests/assets/hh_rlhf/train.jsonl").read_text().splitlines()
    ]
    assert len(rows) > 5 and all(any(r in c for c in chosen) for r in rows["response"]), "the chosen responses only"
    pareto = json.loads((run / "eval/pareto.json").read_text())
    assert pareto["method"] == "sft" and len(pareto["points"]) == 1 and pareto["points"][0]["policy"] == "sft"
    assert pareto["preference_following"] is None and pareto["base"] is not None

    # the merged model is the base with the adapter folded in
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    batch = {"input_ids": torch.tensor([[5, 17, 99, 3]])}
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(str(run / "merged"))(**batch).logits
        adapted = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(run / "adapter")
        )
        expected = adapted(**batch).logits
        base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))(**batch).logits
    assert torch.allclose(merged, expected, atol=1e-4) and not torch.allclose(merged, base, atol=1e-4)

    capsys.readouterr()
    assert main(["generate", str(run), "How do I plant tomatoes?", "--max_new_tokens", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["policy"] == "sft"
    assert main(["generate", str(run), "--preference", "0.5,0.5", "hi"]) == 2
    assert "answers without a preference" in capsys.readouterr().err

    # MORLHF from the SFT model, as the paper's recipes do
    rl = yaml.safe_load((ROOT / "recipes/hh_rlhf/morlhf_harmless_helpful.yaml").read_text())
    assert rl["model_name_or_path"] == "runs/hh_rlhf/sft/merged"
    rl.update(
        model_name_or_path=str(run / "merged"),
        load_in_8bit=False,
        dtype="float32",
        dataset_name=str(ROOT / "tests/assets/hh_rlhf"),
        rewards=["positivity", "conciseness"],
        output_dir=str(tmp_path / "morlhf"),
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=4,
        num_preference_points=2,
        lora_r=4,
        lora_alpha=8,
        eval_num_prompts=2,
        eval_batch_size=4,
        eval_grid_divisions=None,
    )
    rl.pop("eval_grid_divisions")
    rl_path = tmp_path / "morlhf.yaml"
    rl_path.write_text(yaml.safe_dump(rl))
    assert main(["run", str(rl_path)]) == 0
    info = json.loads((tmp_path / "morlhf/ric_run.json").read_text())
    assert info["base_model"] == str(run / "merged") and len(info["policies"]) == 2
    assert Path(tmp_path / "morlhf/policies/w_0.00_1.00/adapter/adapter_model.safetensors").exists()
    # the SFT run's work (not its evaluation) is charged to the baseline that starts from it
    sft_compute = json.loads((run / "compute.json").read_text())["stages"]
    charged = json.loads((tmp_path / "morlhf/compute.json").read_text())["stages"]["reused:start"]
    assert charged["charged_from"] == str(run) and charged["charged_stages"] == ["prepare", "train"]
    assert charged["cpu_seconds"] == round(
        sft_compute["prepare"]["cpu_seconds"] + sft_compute["train"]["cpu_seconds"], 1
    )
    assert charged["optimizer_steps"] == sft_compute["train"]["optimizer_steps"] == 2
    # `ric export` writes the same model, with its serving notes (no score tags: an SFT model takes no preference)
    assert main(["export", str(run), str(tmp_path / "export"), "--preference", "0.5,0.5"]) == 2
    assert "one model for every preference" in capsys.readouterr().err
    assert main(["export", str(run), str(tmp_path / "export")]) == 0
    with torch.no_grad():
        exported = AutoModelForCausalLM.from_pretrained(str(tmp_path / "export"))(**batch).logits
    assert torch.allclose(exported, merged, atol=1e-5)
    serving = json.loads((tmp_path / "export" / "ric_serving.json").read_text())
    assert serving["method"] == "sft" and "tags" not in serving and serving["point"] is None


def test_sft_on_the_rows_a_ric_run_sampled_under_its_end_token_rule(tiny_model_dir, tmp_path):
    """`rows_from_run`: the SFT rows are a RiC run's sampled rows without tags; a row the sampling budget cut
    trains without the end token when that run does so; the run's sampling is charged to the SFT run."""
    import datasets

    from ric.baselines.sft import rows_of_run
    from ric.models import load_tokenizer
    from ric.ric_trainer import build_sft_dataset

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"How do I do task {i}?"}) + "\n" for i in range(6)))
    ric = {
        "model_name_or_path": str(tiny_model_dir),
        "dataset_name": str(prompts),
        "eval_dataset_name": str(prompts),
        "rewards": ["positivity", "conciseness"],
        "template": "chat",
        "num_responses_per_prompt": 2,
        "max_completion_length": 5,
        "sampling_batch_size": 6,
        "eos_after_budget_cut": False,
        "min_response_tokens": 1,
        "output_dir": str(tmp_path / "ric"),
    }
    (tmp_path / "ric.yaml").write_text(yaml.safe_dump(ric))
    assert main(["prepare", str(tmp_path / "ric.yaml")]) == 0
    ric_rows = datasets.load_from_disk(str(tmp_path / "ric/data/train"))
    assert any(ric_rows["cut_by_budget"]), "the random tiny model runs into the 5-token budget"

    path = sft_recipe(
        tiny_model_dir,
        tmp_path,
        dataset_name=str(prompts),
        eval_dataset_name=str(prompts),
        rows_from_run=str(tmp_path / "ric"),
        dataset_builder=None,
        template="chat",
    )
    assert main(["run", str(path)]) == 0
    rows = datasets.load_from_disk(str(tmp_path / "sft/data/train"))
    assert rows["prompt"] == ric_rows["prompt"] and rows["response"] == ric_rows["response"]
    assert rows["cut_by_budget"] == ric_rows["cut_by_budget"]
    ric_compute = json.loads((tmp_path / "ric/compute.json").read_text())["stages"]["prepare"]
    stages = json.loads((tmp_path / "sft/compute.json").read_text())["stages"]
    assert stages["reused:prepare"]["cpu_seconds"] == ric_compute["cpu_seconds"]
    assert stages["reused:prepare"]["generated_tokens"] == ric_compute["generated_tokens"] > 0
    assert (tmp_path / "sft/merged/config.json").exists()

    # the rows as SFT trains them: no tags, a cut row ends without the end token, the others with it
    tokenizer = load_tokenizer(str(tiny_model_dir))
    built = build_sft_dataset(rows, "chat", tokenizer, score_column=None, eos_after_budget_cut=False)
    for cut, ids, prompt in zip(rows["cut_by_budget"], built["input_ids"], built["prompt"]):
        assert "<rm" not in prompt
        assert (ids[-1] == tokenizer.eos_token_id) is not cut
    # under a RiC run that ends cut rows with the end token, SFT does too
    (tmp_path / "ric/recipe.yaml").write_text(yaml.safe_dump({**ric, "eos_after_budget_cut": True}))
    assert not any(rows_of_run(tmp_path / "ric")["cut_by_budget"])
