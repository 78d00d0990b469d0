"""The method registry: every command (`ric run | prepare | train | evaluate | generate | status`, and
`ric serve`) finds what to do with a recipe or a run directory here, and only here.

A method is a module that exports `METHOD` (a `ric.methods.base.Method`: its config classes, stages,
evaluation, generator, and what the commands may ask of its runs), found by its name the way TRL's
CLI finds a command: `method: prt` in a recipe imports `ric.methods.prt`. A method shipped outside
ric registers its module under the entry-point group `ric.methods` (`name = "package.module"`).
Adding a method is one module here plus its own stages; nothing else is edited.

| method    | stages                                          | answers a preference with                    |
|-----------|-------------------------------------------------|----------------------------------------------|
| ric       | prepare, train, online_1..k, evaluate           | the one adapter, targets in the prompt       |
| morlhf    | prepare, policy:<w> per preference, evaluate    | the trained policy nearest to the preference |
| soups     | prepare, policy:<reward> per reward, evaluate   | the per-reward adapters mixed at the weights |
| sft       | prepare, train (+ merged model), evaluate       | no preference: the baselines' starting point |
| prt       | prepare, train, evaluate                        | reward r + any same-vocabulary base, tags    |
| diffusion | prepare, train, evaluate                        | the one UNet LoRA, targets in the caption    |
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..pipeline import Stage
from ..recipe import RecipeError
from .base import (
    EVALUATION_KEYS,
    GENERATE_FLAGS,
    POLICY_EVALUATION_KEYS,
    Method,
    Run,
)

__all__ = [
    "EVALUATION_KEYS",
    "GENERATE_FLAGS",
    "METHODS",
    "POLICY_EVALUATION_KEYS",
    "Method",
    "Run",
    "get_method",
    "open_evaluation",
    "open_run",
    "parse_run",
    "recipe_method",
]

ENTRY_POINT_GROUP = "ric.methods"
_NOT_METHODS = {"base"}
# the built-in methods in the order `ric run --help` and errors list them (any other module found follows)
_ORDER = ("ric", "morlhf", "soups", "sft", "prt", "diffusion")


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _module_names() -> dict[str, str]:
    """Method name -> module path: this package's modules, then plug-ins (which may not shadow a built-in)."""
    here = [m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_METHODS]
    order = sorted(here, key=lambda n: _ORDER.index(n) if n in _ORDER else len(_ORDER))
    found = {name: f"{__name__}.{name}" for name in order}
    for name, module in _entry_points().items():
        found.setdefault(name, module)
    return found


class _Registry(Mapping):
    """name -> Method, each module imported the first time its method is asked for."""

    def __init__(self):
        self._loaded: dict[str, Method] = {}

    def __getitem__(self, name: str) -> Method:
        if name not in self._loaded:
            modules = _module_names()
            if name not in modules:
                raise KeyError(name)
            method = getattr(importlib.import_module(modules[name]), "METHOD", None)
            if not isinstance(method, Method) or method.name != name:
                raise RecipeError(f"method module {modules[name]!r} does not export METHOD = Method({name!r}, ...)")
            self._loaded[name] = method
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_module_names())

    def __len__(self) -> int:
        return len(_module_names())


METHODS: Mapping[str, Method] = _Registry()


def get_method(name, source: str = "recipe") -> Method:
    name = "ric" if name is None else name
    if not isinstance(name, str) or name not in METHODS:
        raise RecipeError(f"{source}: method = {name!r} is not one of {list(METHODS)}")
    return METHODS[name]


# --- loading a recipe or a run directory ---------------------------------------------------------


def recipe_method(recipe: str | Path | None) -> Method:
    from ..recipe import load_yaml

    return get_method(load_yaml(recipe).get("method") if recipe else None, str(recipe or "recipe"))


def parse_run(argv, recipe: str | Path | None) -> Run:
    """A recipe (+ command-line overrides) parsed into its method's configs; nothing heavy is loaded."""
    from ..recipe import parse_recipe

    method = recipe_method(recipe)
    instances, effective = parse_recipe(method.config_classes(), argv, recipe)
    configs = instances[1:]  # without MethodConfig
    output_dir = next((getattr(c, "output_dir", None) for c in configs if getattr(c, "output_dir", None)), None)
    return Run(method.name, Path(output_dir), configs, effective)


def open_run(argv, recipe: str | Path | None) -> Run:
    """`parse_run`, then the checks that need no model (reward names, the run directory's own recipe),
    and the effective recipe written to RUN_DIR/recipe.yaml."""
    from reward_models import check_reward_names

    from ..recipe import RECIPE_FILE, check_run_dir
    from ..rundir import is_main_process, write_yaml

    run = parse_run(argv, recipe)
    check_reward_names(run.objectives.rewards or [], run.objectives.reward_models)
    check_run_dir(run.run_dir, run.effective)
    if is_main_process():
        write_yaml(run.run_dir / RECIPE_FILE, run.effective)
    return run


def open_evaluation(run_dir, argv, eval_dir=None, **options) -> tuple[Stage, Path]:
    """`ric evaluate RUN_DIR [--key value ...]`: the run's own recipe with the flags given, each checked
    against the run's method before any model loads. `options`: the method options given (`adapter`,
    `dtype`, `base`). Returns (the evaluation stage, where it writes)."""
    from ..recipe import RECIPE_FILE, parse_flags

    run_dir = Path(run_dir)
    recipe = run_dir / RECIPE_FILE
    if not recipe.exists():
        raise RecipeError(f"{run_dir} has no {RECIPE_FILE}: give a run directory written by `ric run` or `ric train`")
    method = recipe_method(recipe)
    given = parse_flags(argv)
    method.check_evaluate_flags(given, **options)
    run = parse_run(list(argv) + ["--output_dir", str(run_dir)], recipe)
    values = {k: getattr(c, k) for c in run.configs for k in c.__dataclass_fields__}
    overrides = {k: v for k, v in values.items() if k in given and k in method.generation_keys}
    options = {k: v for k, v in options.items() if v}
    eval_dir = Path(eval_dir) if eval_dir else run_dir / "eval"
    return method.evaluation_stage(run, f"evaluate:{eval_dir.name}", eval_dir, overrides, **options), eval_dir
