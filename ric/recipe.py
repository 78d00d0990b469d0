"""Reading recipes the TRL way: `--config recipe.yaml` plus command-line overrides.

`TrlParser` sends each YAML key to the dataclass that owns it; on top of it this module refuses
unknown keys, renamed keys and values of the wrong type with a message that names the key and the
fix, before anything heavy is loaded (argparse would otherwise take a YAML value as a default
unchecked). `check_run_dir` refuses to mix a run directory with a recipe of other objectives.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Sequence
from pathlib import Path

import yaml


class RecipeError(ValueError):
    """A recipe or command line that cannot be used as given."""


# Keys renamed since they first appeared: an old name is refused with its new one.
RENAMED_KEYS = {
    "end_cut_responses": "eos_after_budget_cut",
    "online_chunk_size": "generation_chunk_size",
    "morlhf_num_points": "num_preference_points",
    "eval_generation_batch_size": "eval_batch_size",
    "eval_num_captions": "eval_num_prompts",
    # RiC's and SFT's prompts per generate call; MORLHF and Soups keep GRPO's own generation_batch_size
    "generation_batch_size": "sampling_batch_size",
}

RECIPE_FILE = "recipe.yaml"


def refuse_renamed(keys, source: str, fields=()) -> None:
    """Refuse an old key name with its new one, unless the recipe's classes still have a field of that name."""
    for key in keys:
        if key in RENAMED_KEYS and key not in fields:
            raise RecipeError(f"{source}: key {key!r} was renamed to {RENAMED_KEYS[key]!r}; rename it there")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe {str(path)!r} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {str(path)!r} must be a YAML mapping of key: value")
    return data


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def value_matches(value, annotation) -> bool:
    """Whether a YAML value fits a dataclass field annotation."""
    if annotation is typing.Any or annotation is object:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(value_matches(value, arm) for arm in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, Sequence, tuple):
        args = typing.get_args(annotation)
        return isinstance(value, list) and (not args or all(value_matches(v, args[0]) for v in value))
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value in {m.value for m in annotation} or isinstance(value, annotation)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True  # annotations we do not know are left to the dataclass itself


def check_recipe(mapping: dict, dataclass_types: Sequence[type], source: str = "recipe") -> None:
    """Refuse unknown keys, values of the wrong type and values outside a field's choices."""
    fields: dict[str, tuple[dataclasses.Field, object]] = {}
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        wider = getattr(cls, "RECIPE_TYPES", {})  # what a recipe file may hold, when wider than the field's type
        for f in dataclasses.fields(cls):
            if f.init:
                fields[f.name] = (f, wider.get(f.name, hints.get(f.name, f.type)))
    refuse_renamed(mapping, source, fields)
    for key, value in mapping.items():
        if key == "env":
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RecipeError(
                f"{source}: unknown key {key!r}.{hint} Remove it or fix its spelling (see `ric run --help`)."
            )
        f, annotation = fields[key]
        choices = f.metadata.get("choices")
        if choices is not None and value is not None and value not in choices:
            raise RecipeError(f"{source}: {key} = {value!r} is not one of {list(choices)}")
        if not value_matches(value, annotation):
            raise RecipeError(
                f"{source}: {key} = {value!r} has the wrong type ({type(value).__name__}); "
                f"expected {_type_name(annotation)}. Fix the value in the recipe."
            )


def parse_flags(argv: Sequence[str]) -> set[str]:
    """The keys given as `--key value` or `--key=value` flags."""
    return {token[2:].split("=", 1)[0] for token in argv if token.startswith("--") and len(token) > 2}


def parse_recipe(dataclass_types: Sequence[type], argv: Sequence[str], recipe: str | Path | None = None):
    """Parse `argv` (plus its `--config` file, or `recipe`) into instances of `dataclass_types`.

    Returns (instances, effective mapping): the mapping is the recipe with the command-line overrides
    applied, which is what a run directory records so that later stages re-read the same settings.
    """
    from trl import TrlParser

    argv = list(argv)
    fields = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
    refuse_renamed(parse_flags(argv), "command line", fields)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise RecipeError("--config needs a path to a YAML recipe")
        recipe = argv[i + 1]
        del argv[i : i + 2]
    mapping = load_yaml(recipe) if recipe is not None else {}
    check_recipe(mapping, dataclass_types, source=str(recipe) if recipe else "recipe")
    parser = TrlParser(dataclass_types)
    try:
        instances = parser.parse_args_and_config((["--config", str(recipe)] if recipe is not None else []) + argv)
    except SystemExit as err:
        raise RecipeError(f"cannot parse the command line {' '.join(argv)!r} (see --help)") from err
    except ValueError as err:
        if isinstance(err, RecipeError):
            raise
        raise RecipeError(str(err)) from None
    namespace, _ = parser.parse_known_args(argv)
    given = _flags_given(parser, argv)
    effective = {**mapping, **{k: v for k, v in vars(namespace).items() if k in given}}
    effective.pop("env", None)
    return tuple(instances), effective


def _flags_given(parser, argv: Sequence[str]) -> set[str]:
    given = set()
    for token in argv:
        if token.startswith("--"):
            flag = token.split("=", 1)[0]
            for action in parser._actions:
                if flag in action.option_strings:
                    given.add(action.dest)
    return given


def check_run_dir(run_dir: Path, effective: dict) -> None:
    """Refuse to mix a run directory with a recipe whose method, rewards, template, model or data differ."""
    recorded = Path(run_dir) / RECIPE_FILE
    if not recorded.exists():
        return
    previous = load_yaml(recorded)
    sampling = ("sampling_system_prompts", "sampling_max_completion_lengths")
    for key in ("method", "rewards", "template", "model_name_or_path", "dataset_name", *sampling):
        # a key left out is not compared, except the method and the sampling settings: left out means the default
        if key not in ("method", *sampling) and (key not in previous or key not in effective):
            continue
        old, new = previous.get(key), effective.get(key)
        if key == "method":
            old, new = old or "ric", new or "ric"
        if old != new:
            raise RecipeError(
                f"{run_dir} was written by a recipe with {key} = {old!r}, this one has {new!r}; "
                "use a new output_dir (or remove the old run directory)"
            )
