"""Shared fixtures. Nothing here downloads: tiny models are built from configs, the tokenizer is
the bundled SmolLM2's (converted once into the test cache) or a small local one."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _log_handlers_write_to_this_tests_stderr():
    """Logging handlers made during an earlier test (the root one of `ric`'s CLI, the datasets and
    transformers libraries' own) hold that test's captured stderr, closed since: point them at this
    test's, as a fresh process would have them."""
    import logging
    import sys

    for name in (None, "datasets", "transformers"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:
                handler.stream = sys.stderr  # not setStream: it would flush the closed one
    yield


@pytest.fixture(scope="session")
def smol_path():
    from ric.models import bundled_model_path

    return bundled_model_path()


@pytest.fixture(scope="session")
def smol_tokenizer(smol_path):
    from ric.models import load_tokenizer

    return load_tokenizer(str(smol_path))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer):
    """A 2-layer Llama of hidden size 16 with the SmolLM2 tokenizer, saved as a local model folder."""
    from tests.helpers import tiny_model

    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", smol_tokenizer, seed=0).save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def tiny_recipe(tmp_path, tiny_model_dir):
    """A RiC recipe on the tiny model with prompt/response data and two fast rewards."""
    import json

    import yaml

    rows = [
        {"prompt": f"Question {i}: how do I {task}?", "response": resp}
        for i, (task, resp) in enumerate(
            [
                ("bake bread", "Mix flour and water, knead, let it rise, and bake. It is wonderful!"),
                ("fix a tire", "Patch it."),
                ("learn guitar", "Practice chords daily; it is hard at first but joyful."),
                ("sleep better", "Keep a regular schedule and a dark, quiet room."),
                ("save money", "Spend less than you earn. Terrible debts hurt."),
                ("make tea", "Steep leaves in hot water for three minutes. Lovely."),
                ("plant tomatoes", "After the last frost, in a sunny spot."),
                ("clean an oven", "Baking soda paste overnight, then wipe."),
            ]
        )
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text(
        "".join(
            json.dumps({"prompt": p}) + "\n"
            for p in ["How do I boil an egg?", "Why is the sky blue?", "Name a color."]
        )
    )
    recipe = {
        "model_name_or_path": str(tiny_model_dir),
        "dataset_name": str(train),
        "eval_dataset_name": str(evaluation),
        "rewards": ["positivity", "conciseness"],
        "template": "chat",
        "output_dir": str(tmp_path / "run"),
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "learning_rate": 0.01,
        "lora_r": 4,
        "lora_alpha": 8,
        "max_completion_length": 6,
        "sampling_batch_size": 4,
        "logging_steps": 1,
        "save_steps": 2,
        "max_length": 128,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture()
def prepared(tiny_recipe):
    """The tiny recipe's configs after its prepare stage, and the stage's summary."""
    from ric.prepare import prepare
    from tests.helpers import parse_run_args

    (model_args, data_args, args, eval_args), _ = parse_run_args([], str(tiny_recipe))
    summary = prepare(args.output_dir, model_args, data_args, args, progress=False)
    return model_args, data_args, args, eval_args, summary
