"""The `ric` command end to end on a tiny random model: run -> status -> generate -> evaluate, and
the bad inputs that must fail before any model loads."""

import json
from pathlib import Path

import pytest
import yaml

from ric.cli import main


def run_dir_of(recipe):
    return Path(yaml.safe_load(Path(recipe).read_text())["output_dir"])


def test_run_writes_the_whole_run_directory(tiny_recipe, capsys):
    assert main(["run", str(tiny_recipe), "--eval_num_prompts", "2"]) == 0
    run = run_dir_of(tiny_recipe)
    for path in [
        "recipe.yaml",
        "ric_run.json",
        "run_state.json",
        "train_stats.json",
        "train_loss.png",
        "data/train",
        "data/eval",
        "data/reward_stats.json",
        "data/prepare_stats.json",
        "adapter/adapter_model.safetensors",
        "adapter/ric_run.json",
        "adapter/tokenizer.json",
        "eval/pareto.json",
        "eval/pareto.png",
        "eval/base.csv",
        "eval/points/point_00.csv",
        "eval/points/point_10.csv",
    ]:
        assert (run / path).exists(), path
    pareto = json.loads((run / "eval/pareto.json").read_text())
    assert len(pareto["points"]) == 11 and pareto["num_prompts"] == 2
    assert pareto["points"][0]["preference"] == [0.0, 1.0]
    assert set(pareto["preference_following"]) == {"positivity", "conciseness"}
    assert pareto["hypervolume"] >= 0 and len(pareto["hypervolume_reference"]) == 2
    assert pareto["base"]["mean"].keys() == {"positivity", "conciseness"}
    header = (run / "eval/points/point_03.csv").read_text().splitlines()[0]
    assert header.split(",") == [
        "prompt",
        "response",
        "desired_positivity",
        "desired_raw_positivity",
        "obtained_positivity",
        "obtained_normalized_positivity",
        "desired_conciseness",
        "desired_raw_conciseness",
        "obtained_conciseness",
        "obtained_normalized_conciseness",
    ]
    state = json.loads((run / "run_state.json").read_text())["stages"]
    assert state["prepare"]["status"] == state["train"]["status"] == "done"
    out = capsys.readouterr().out
    assert "hypervolume" in out and "preference-following" in out

    # a second run finds every stage done and does not train again
    mtime = (run / "adapter/adapter_model.safetensors").stat().st_mtime
    assert main(["run", str(tiny_recipe), "--eval_num_prompts", "2"]) == 0
    assert (run / "adapter/adapter_model.safetensors").stat().st_mtime == mtime
    assert "done already" in capsys.readouterr().out

    assert main(["status", str(run)]) == 0
    assert "prepare" in capsys.readouterr().out

    assert (
        main(
            [
                "generate",
                str(run),
                "--preference",
                "0.2,0.8",
                "How do I brew green tea?",
                "--json",
                "--max_new_tokens",
                "4",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    line = json.loads(captured.out.strip().splitlines()[-1])
    assert line["prompt"] == "How do I brew green tea?" and line["preference"] == [0.2, 0.8]
    info = json.loads((run / "ric_run.json").read_text())
    from ric import preference_to_targets

    assert line["targets"] == preference_to_targets([0.2, 0.8], info["score_low"], info["score_high"], "l2")
    assert "targets: positivity=" in captured.err

    assert (
        main(
            [
                "evaluate",
                str(run),
                "--eval_num_prompts",
                "1",
                "--eval_base_model",
                "false",
                "--eval_dir",
                str(run / "eval1"),
                "--hypervolume_reference",
                "-1",
                "0",
            ]
        )
        == 0
    )
    one = json.loads((run / "eval1/pareto.json").read_text())
    assert one["num_prompts"] == 1 and one["base"] is None
    assert one["hypervolume_reference"] == [-1, 0] and one["hypervolume_reference_rule"] == "given"

    # a comparison's own held-out set: its prompts (duplicates dropped), intervals over them
    shared = run.parent / "shared_prompts.jsonl"
    shared.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Why walk?", "Is tea good?", "Why walk?"]))
    flags = [
        "--eval_dir",
        str(run / "eval_shared"),
        "--eval_base_model",
        "false",
        "--hypervolume_reference",
        "-1",
        "0",
    ]
    assert main(["evaluate", str(run), "--eval_prompts_file", str(shared), *flags]) == 0
    on_shared = json.loads((run / "eval_shared/pareto.json").read_text())
    assert on_shared["num_prompts"] == 2 and len(on_shared["hypervolume_ci"]) == 2
    assert on_shared["hypervolume_ci"][0] <= on_shared["hypervolume_ci"][1]
    point = (run / "eval_shared/points/point_00.csv").read_text()
    assert "Why walk?" in point and "Is tea good?" in point
    capsys.readouterr()
    assert main(["evaluate", str(run), "--eval_prompts_file", str(run / "missing.jsonl"), *flags]) == 2
    assert "eval_prompts_file" in capsys.readouterr().err

    # a generation flag given to `ric evaluate` takes effect (and is recorded); a training flag is refused
    args = ["evaluate", str(run), "--eval_num_prompts", "1", "--eval_dir", str(run / "eval_t")]
    assert main([*args, "--temperature", "0.1", "--max_completion_length", "3", "--seed", "7"]) == 0
    hot = json.loads((run / "eval_t/pareto.json").read_text())
    assert hot["generation"]["temperature"] == 0.1 and hot["generation"]["max_new_tokens"] == 3
    assert hot["generation"]["seed"] == 7  # another sampling seed: the evaluation's own noise
    assert hot["hypervolume_reference_rule"].startswith("base model mean - 3 std")
    capsys.readouterr()
    assert main([*args, "--learning_rate", "0.1"]) == 2
    assert "--learning_rate does not change an evaluation" in capsys.readouterr().err
    # a trainer checkpoint of the run (no ric_run.json of its own) is evaluated and answers as the run's
    checkpoint = run / "checkpoints/offline/checkpoint-2"
    assert (checkpoint / "adapter_config.json").exists() and not (checkpoint / "ric_run.json").exists()
    assert main([*args[:-1], str(run / "eval_step2"), "--adapter", str(checkpoint)]) == 0
    step2 = json.loads((run / "eval_step2/pareto.json").read_text())
    assert step2["adapter"] == str(checkpoint) and len(step2["points"]) == 11
    capsys.readouterr()
    assert main(["generate", str(run), "--adapter", str(checkpoint), "--preference", "0.2,0.8", "hi", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["targets"] == line["targets"]
    # answering in another weight dtype: the weights are loaded so, and the evaluation records it
    import torch

    from ric import RiCGenerator

    model = RiCGenerator.from_run(run, dtype="bfloat16").model  # merged: the LoRA weights (fp32) sit unused
    assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    assert main([*args[:-1], str(run / "eval_bf16"), "--dtype", "bfloat16"]) == 0
    bf16 = json.loads((run / "eval_bf16/pareto.json").read_text())
    assert bf16["dtype"] == "bfloat16" and step2["dtype"] == "auto" and len(bf16["points"]) == 11
    capsys.readouterr()
    assert main(["generate", str(run), "--dtype", "bfloat16", "--preference", "0.2,0.8", "hi", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["targets"] == line["targets"]
    assert main(["generate", str(run), "--dtype", "int8", "--preference", "0.2,0.8", "hi"]) == 2
    assert "--dtype: 'int8' is not a dtype to answer in" in capsys.readouterr().err
    # the evaluations are metered beside the stages of the run
    compute = json.loads((run / "compute.json").read_text())
    assert {"prepare", "train", "evaluate", "evaluate:eval1", "evaluate:eval_t"} <= set(compute["stages"])
    assert compute["stages"]["evaluate:eval_t"]["generated_tokens"] > 0
    assert main(["status", str(run)]) == 0
    assert "total compute" in capsys.readouterr().out

    # text-to-image flags mean nothing to a text run
    assert main(["generate", str(run), "--preference", "0.2,0.8", "hi", "--guidance_scale", "3"]) == 2
    assert "--guidance_scale: applies to text-to-image runs only" in capsys.readouterr().err


def test_generate_bad_inputs_fail_before_loading(tiny_recipe, tmp_path, capsys):
    fake = tmp_path / "fake_run"
    fake.mkdir()
    assert main(["generate", str(fake), "--preference", "0.5,0.5", "hi"]) == 2
    assert "ric_run.json" in capsys.readouterr().err
    info = {
        "base_model": "/nonexistent/model",
        "rewards": ["positivity", "conciseness"],
        "template": "chat",
        "reward_stats": {"mean": {"positivity": 0, "conciseness": 0}, "std": {"positivity": 1, "conciseness": 1}},
        "score_low": [-1, -1],
        "score_high": [1, 1],
        "adapter": "adapter",
    }
    (fake / "ric_run.json").write_text(json.dumps(info))
    for bad, fragment in [
        ("0.5", "give 2 comma-separated weights"),
        ("0.5,-0.5", "negative"),
        ("nan,1", "NaN"),
        ("0,0", "all weights are zero"),
        ("x,y", "cannot parse"),
    ]:
        assert main(["generate", str(fake), "--preference", bad, "hi"]) == 2
        err = capsys.readouterr().err
        assert "--preference" in err and fragment in err, err


def test_bad_recipes_fail_before_any_model_loads(tiny_recipe, tmp_path, capsys):
    recipe = yaml.safe_load(Path(tiny_recipe).read_text())

    def run_with(**changes):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**recipe, **changes}))
        code = main(["prepare", str(path)])
        return code, capsys.readouterr().err

    code, err = run_with(rewards=["positivity", "kindness"])
    assert code == 2 and "unknown reward 'kindness'" in err and "relevance" in err
    code, err = run_with(prompt_column="question")
    assert code == 2 and "missing column(s) ['question']" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, err = run_with(dataset_name=str(empty))
    assert code == 2 and ("empty" in err or "no data" in err.lower() or "Empty" in err), err
    code, err = run_with(max_steps="many")
    assert code == 2 and "max_steps" in err
    code, err = run_with(oops=1)
    assert code == 2 and "unknown key 'oops'" in err


def test_run_directory_of_another_recipe_is_refused(tiny_recipe, tmp_path, capsys):
    assert main(["prepare", str(tiny_recipe)]) == 0
    capsys.readouterr()
    recipe = yaml.safe_load(Path(tiny_recipe).read_text())
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**recipe, "rewards": ["conciseness", "positivity"]}))
    assert main(["prepare", str(other)]) == 2
    assert "was written by a recipe with rewards" in capsys.readouterr().err


def test_evaluate_without_a_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "recipe.yaml" in capsys.readouterr().err


def test_rewards_command(capsys):
    assert main(["rewards"]) == 0
    out = capsys.readouterr().out
    assert "positivity" in out and "relevance" in out


def _bad_data_recipe(tiny_recipe, tmp_path, train_text, eval_text='{"prompt": "Why?"}\n'):
    """The tiny recipe with other data files and a model that does not exist: an error about the data
    proves it came before any model was loaded."""
    from tests.helpers import update_recipe

    train, evaluation = tmp_path / "bad_train.jsonl", tmp_path / "bad_eval.jsonl"
    train.write_text(train_text)
    evaluation.write_text(eval_text)
    update_recipe(
        tiny_recipe,
        dataset_name=str(train),
        eval_dataset_name=str(evaluation),
        model_name_or_path=str(tmp_path / "no-such-model"),
    )
    return tiny_recipe


@pytest.mark.parametrize(
    "train_text, eval_text, fragment",
    [
        ("", None, "bad_train.jsonl' is empty"),
        ("\n\n", None, "bad_train.jsonl' is empty"),
        ('{"prompt": "  "}\n{"prompt": ""}\n', None, "every prompt in column 'prompt' is blank"),
        ('{"prompt": 3}\n', None, "column 'prompt' holds int values"),
        ('{"prompt": "Hi?"}\n{"prompt": null}\n', None, "column 'prompt' holds NoneType values (None)"),
        ('{"prompt": "Hi?"}\n{"prompt": ', None, "cannot read it as .jsonl"),
        ('{"prompt": "Hi?"}\n', '{"prompt": " "}\n', "bad_eval.jsonl': every prompt in column 'prompt' is blank"),
    ],
)
def test_bad_data_is_named_before_any_model_loads(tiny_recipe, tmp_path, capsys, train_text, eval_text, fragment):
    kwargs = {} if eval_text is None else {"eval_text": eval_text}
    recipe = _bad_data_recipe(tiny_recipe, tmp_path, train_text, **kwargs)
    assert main(["prepare", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err
    assert "no-such-model" not in err


def test_damaged_run_files_are_named(tiny_recipe, tmp_path, capsys):
    run = tmp_path / "damaged"
    run.mkdir()
    (run / "ric_run.json").write_text('{"base_model": "x", "rewards": [')
    assert main(["generate", str(run), "--preference", "0.5,0.5", "hi"]) == 2
    err = capsys.readouterr().err
    assert "ric_run.json is not valid JSON" in err and "line 1" in err
    (run / "ric_run.json").write_text('{"rewards": ["positivity"]}')
    assert main(["generate", str(run), "--preference", "1", "hi"]) == 2
    assert "missing field(s) ['base_model', 'template']" in capsys.readouterr().err
    (run / "run_state.json").write_text("{not json")
    assert main(["status", str(run)]) == 2
    assert "run_state.json is not valid JSON" in capsys.readouterr().err
    (run / "recipe.yaml").write_text("rewards: [positivity\n")
    assert main(["evaluate", str(run)]) == 2
    assert "recipe.yaml' is not valid YAML" in capsys.readouterr().err
    (run / "eval").mkdir()
    (run / "eval/pareto.json").write_text("[]")
    assert main(["compare", str(run)]) == 2
    assert "pareto.json" in capsys.readouterr().err


def test_flags_take_either_spelling(tmp_path, capsys):
    """One spelling, underscores (a recipe's keys), is documented; dashes are accepted by every command."""
    from ric.cli import one_spelling

    argv = ["run", "r.yaml", "--max-steps", "3", "--eval-num-prompts=2", "-x", "--", "a-b"]
    assert one_spelling(argv) == ["run", "r.yaml", "--max_steps", "3", "--eval_num_prompts=2", "-x", "--", "a-b"]
    for flag in ("--max-batch-size", "--max_batch_size"):
        assert main(["serve", str(tmp_path), flag, "0"]) == 2
        assert "--max_batch_size: must be a positive integer" in capsys.readouterr().err


def test_log_lines_name_their_source():
    """ric's own lines read `[ric]`; a library's warning (bitsandbytes at import, say) carries its own name."""
    import logging

    from ric.cli import _SourceFormatter

    formatter = _SourceFormatter("[%(source)s] %(message)s")

    def line(name):
        return formatter.format(logging.LogRecord(name, logging.WARNING, __file__, 1, "a message", None, None))

    assert line("ric.online") == "[ric] a message"
    assert line("reward_models.registry") == "[ric] a message"
    assert line("bitsandbytes.backends.cpu.ops") == "[bitsandbytes] a message"
    assert line("peft") == "[peft] a message"
