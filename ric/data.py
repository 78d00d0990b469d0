"""Loading prompt/response data: local jsonl, json, csv, parquet, a `save_to_disk` folder, a hub id,
or one of the paper's task builders (`ric/tasks`). Every check that can fail on bad data (missing
or empty file, missing column, blank prompts) runs here, before any model loads.
"""

from __future__ import annotations

import os
from pathlib import Path

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_table(name: str, split: str = "train", config: str | None = None):
    """Load one split as a `datasets.Dataset`.

    A local file is read whole (its `split` is ignored); a folder written by `save_to_disk` may hold
    a DatasetDict, from which `split` is taken; anything else is treated as a hub dataset id.
    """
    import datasets

    path = Path(os.path.expanduser(name))
    if path.is_file():
        builder = _FORMATS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"dataset {name!r}: unsupported file type {path.suffix!r}; use .jsonl, .json, .csv or .parquet"
            )
        if builder != "parquet" and not path.read_bytes().strip():
            raise ValueError(f"dataset {name!r} is empty: the file holds no rows; give it at least one row")
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as err:  # the datasets stack raises many types (StopIteration for an empty file)
            raise ValueError(
                f"dataset {name!r}: cannot read it as {path.suffix} ({type(err).__name__}: {str(err)[:200]}); "
                "fix the file (one JSON object per line for .jsonl, a header row for .csv)"
            ) from None
    if path.is_dir():
        if (
            (path / "dataset_info.json").exists()
            or (path / "dataset_dict.json").exists()
            or (path / "state.json").exists()
        ):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ValueError(f"dataset {name!r}: no split {split!r}; it has {list(loaded)}")
                return loaded[split]
            return loaded
        # A folder of jsonl/csv/parquet files named by split (train.jsonl, test.jsonl); a hub config
        # name becomes a sub-folder when the folder has one.
        data_dir = config if config and (path / config).is_dir() else None
        return datasets.load_dataset(str(path), data_dir=data_dir, split=split)
    if name.startswith((".", "/", "~")) or name.endswith(tuple(_FORMATS)):
        raise FileNotFoundError(f"dataset {name!r} does not exist")
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as err:  # the hub stack raises many types; give one message
        raise ValueError(
            f"cannot load dataset {name!r} (split {split!r}): it is not a local file or folder and the hub could "
            f"not provide it ({type(err).__name__}: {str(err)[:200]}). Make it available locally or run where the "
            "hub is reachable."
        ) from None


def require_columns(dataset, columns, name: str, field_hint: str = "") -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        hint = f" Set {field_hint} to the column that holds them." if field_hint else ""
        raise ValueError(f"dataset {name!r}: missing column(s) {missing}; it has {dataset.column_names}.{hint}")


def nonblank_prompts(
    prompts, name: str, column: str, setting: str = "prompt_column", kind: str = "prompt"
) -> list[str]:
    """The prompts (or captions: `kind`) that hold text, in order; refuses non-text values and a table
    whose prompts are all blank, naming the dataset, the column and the recipe key (`setting`) that picks it."""
    prompts = list(prompts)
    bad = [p for p in prompts if not isinstance(p, str)]  # a null (None) prompt too
    if bad:
        raise ValueError(
            f"dataset {name!r}: column {column!r} holds {type(bad[0]).__name__} values ({bad[0]!r}); "
            f"{kind}s must be text"
        )
    kept = [p for p in prompts if p.strip()]
    if not kept:
        raise ValueError(
            f"dataset {name!r}: every {kind} in column {column!r} is blank ({len(prompts)} rows); "
            f"give {kind}s with text, or set {setting} to the column that holds them"
        )
    return kept


def load_prompt_tables(data_args):
    """Training table and evaluation prompts, with their columns checked (before any model loads).

    Returns (training table, evaluation prompts: unique, blank ones dropped)."""
    if not data_args.dataset_name:
        raise ValueError("dataset_name: required; give a .jsonl/.csv/.parquet file, a save_to_disk folder or a hub id")
    train = load_table(data_args.dataset_name, data_args.dataset_train_split, data_args.dataset_config)
    require_columns(train, [data_args.prompt_column], data_args.dataset_name, "prompt_column")
    if len(train) == 0:
        raise ValueError(f"dataset {data_args.dataset_name!r} is empty: it needs at least one prompt")
    nonblank_prompts(train[data_args.prompt_column], data_args.dataset_name, data_args.prompt_column)
    eval_name = data_args.eval_dataset_name or data_args.dataset_name
    if data_args.eval_dataset_name is None and Path(data_args.dataset_name).is_file():
        raise ValueError(
            "eval_dataset_name: required when dataset_name is a single file (it has no test split); "
            "give a file of held-out prompts"
        )
    evaluation = load_table(eval_name, data_args.dataset_test_split, data_args.dataset_config)
    require_columns(evaluation, [data_args.prompt_column], eval_name, "prompt_column")
    if len(evaluation) == 0:
        raise ValueError(f"evaluation prompts {eval_name!r}: empty; give at least one held-out prompt")
    eval_prompts = nonblank_prompts(evaluation[data_args.prompt_column], eval_name, data_args.prompt_column)
    return train, list(dict.fromkeys(eval_prompts))


def builder_kwargs(data_args) -> dict:
    kwargs = {"name": data_args.dataset_name} if data_args.dataset_name else {}
    if data_args.dataset_config:
        kwargs["config"] = data_args.dataset_config
    return kwargs


def load_prompts(data_args, tokenizers=()) -> tuple[list[str], list[str]]:
    """(training prompts, evaluation prompts), unique and non-blank, for methods that need prompts only."""
    if data_args.dataset_builder:
        from .tasks import BUILDERS

        rows, eval_prompts, _ = BUILDERS[data_args.dataset_builder](tokenizers=tokenizers, **builder_kwargs(data_args))
        return list(dict.fromkeys(rows["prompt"])), eval_prompts
    train, eval_prompts = load_prompt_tables(data_args)
    prompts = nonblank_prompts(train[data_args.prompt_column], data_args.dataset_name, data_args.prompt_column)
    return list(dict.fromkeys(prompts)), eval_prompts
