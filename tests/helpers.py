"""Helpers shared by the tests (importable, unlike conftest fixtures)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def parse_run_args(argv, recipe=None):
    """(the method's config instances, the effective recipe) of `recipe` + `argv`."""
    from ric.methods import parse_run

    run = parse_run(list(argv), str(recipe) if recipe is not None else None)
    return run.configs, run.effective


def run_dir_of(recipe) -> Path:
    return Path(yaml.safe_load(Path(recipe).read_text())["output_dir"])


def update_recipe(recipe: Path, **changes) -> dict:
    mapping = {**yaml.safe_load(recipe.read_text()), **changes}
    recipe.write_text(yaml.safe_dump(mapping))
    return mapping


def stages_of(recipe, argv=()):
    """The Run and its stages, as `ric run` builds them."""
    from ric.methods import METHODS, parse_run

    run = parse_run(list(argv), str(recipe))
    return run, METHODS[run.method].stages(run)


def tiny_config(kind, tokenizer, **extra):
    from transformers import LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[kind]
    extra.setdefault("vocab_size", len(tokenizer))
    return cls(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **extra,
    )


def tiny_model(kind, tokenizer, seed=0, **extra):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(kind, tokenizer, **extra)).eval()
