"""The `ric` command.

    ric run RECIPE.yaml [--key value ...]      prepare -> train -> (online) -> evaluate, resumable
    ric prepare|train RECIPE.yaml [--key value ...]
    ric evaluate RUN_DIR [--key value ...]      the Pareto front of a trained run
    ric generate RUN_DIR --preference 0.2,0.8 "PROMPT" [...]
    ric compare RUN_DIR... [--out DIR]          every method's front on one plot + hypervolume/compute table
    ric status RUN_DIR                          which stages a run directory finished
    ric rewards                                 the registered reward names

Recipes are read the TRL way: `--config FILE` (or the file as first argument) plus command-line
flags that override its keys; unknown keys and wrong types are refused before anything loads.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from .parser import RecipeError

logger = logging.getLogger("ric")

USAGE = __doc__


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="[ric] %(message)s", stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_warning()
    except ImportError:
        pass


def run_dataclasses():
    from .ric_config import EvaluationConfig, RiCConfig, RiCDataConfig, RiCModelConfig

    return (RiCModelConfig, RiCDataConfig, RiCConfig, EvaluationConfig)


def recipe_method(recipe: str | None) -> str:
    from .parser import load_yaml

    return str(load_yaml(recipe).get("method", "ric")) if recipe else "ric"


def recipe_dataclasses(recipe: str | None) -> tuple:
    """The config classes a recipe parses into (by its `method` key)."""
    from .ric_config import METHODS, EvaluationConfig, MethodConfig, RiCDataConfig, RiCModelConfig

    method = recipe_method(recipe)
    if method not in METHODS:
        raise RecipeError(f"{recipe}: method = {method!r} is not one of {list(METHODS)}")
    if method in ("morlhf", "soups"):
        from .morlhf_config import MORLHFConfig

        return (MethodConfig, RiCModelConfig, RiCDataConfig, MORLHFConfig, EvaluationConfig)
    if method == "diffusion":
        from .diffusion.diffusion_config import DiffusionRiCConfig

        return (MethodConfig, DiffusionRiCConfig)
    return (MethodConfig, *run_dataclasses())


def _split_recipe(argv: list[str]) -> tuple[str | None, list[str]]:
    """Accept `ric run recipe.yaml ...` as well as `ric run --config recipe.yaml ...`: (recipe, the rest)."""
    if argv and not argv[0].startswith("-"):
        return argv[0], argv[1:]
    if "--config" in argv[:-1]:  # a bare trailing --config is left for parse_recipe to refuse
        i = argv.index("--config")
        return argv[i + 1], argv[:i] + argv[i + 2:]
    return None, argv


def parse_run_args(argv: list[str], recipe: str | None = None):
    """(model, data, ric, evaluation) configs of a RiC recipe, and the effective mapping."""
    from .parser import parse_recipe

    instances, effective = parse_recipe(recipe_dataclasses(recipe), argv, recipe)
    return instances[1:], effective


def check_run_dir(run_dir: Path, effective: dict) -> None:
    """Refuse to mix a run directory with a recipe whose rewards or template differ from its own."""
    from .io import RECIPE
    from .parser import load_yaml

    recorded = run_dir / RECIPE
    if not recorded.exists():
        return
    previous = load_yaml(recorded)
    sampling = ("sampling_system_prompts", "sampling_max_completion_lengths")
    for key in ("rewards", "template", "model_name_or_path", "dataset_name", *sampling):
        # a key left out is not compared, except the sampling settings: left out means none
        if key not in sampling and (key not in previous or key not in effective):
            continue
        if previous.get(key) != effective.get(key):
            raise RecipeError(
                f"{run_dir} was written by a recipe with {key} = {previous.get(key)!r}, this one has {effective.get(key)!r}; "
                "use a new output_dir (or remove the old run directory)"
            )


def _start(argv: list[str]):
    recipe, rest = _split_recipe(argv)
    (model_args, data_args, args, eval_args), effective = parse_run_args(rest, recipe)
    from reward_models import check_reward_names

    check_reward_names(args.rewards or [], args.reward_models)
    run_dir = Path(args.output_dir)
    check_run_dir(run_dir, effective)
    from accelerate import PartialState

    if PartialState().is_main_process:
        from .io import RECIPE, write_yaml

        write_yaml(run_dir / RECIPE, effective)
    return model_args, data_args, args, eval_args, run_dir


def cmd_prepare(argv):
    from .prepare import prepare

    model_args, data_args, args, _, run_dir = _start(argv)
    summary = prepare(run_dir, model_args, data_args, args)
    _print_prepare(summary, run_dir)


def _print_prepare(summary, run_dir):
    print(f"prepared {summary['rows']} training rows ({summary['source']}) and {summary['eval_prompts']} eval prompts in {run_dir}/data")
    if any(summary["dropped"].values()):
        print(f"dropped: {summary['dropped']}")
    if summary.get("pearson"):
        names = summary["rewards"]
        def show(r):
            return "undefined (a reward is constant)" if r is None else f"{r:+.3f}"

        pairs = [f"{names[i]}/{names[j]} {show(summary['pearson'][i][j])}" for i in range(len(names)) for j in range(i + 1, len(names))]
        print("Pearson correlation of raw rewards: " + ", ".join(pairs))


def cmd_train(argv):
    from .ric_trainer import train

    model_args, data_args, args, _, run_dir = _start(argv)
    stats = train(run_dir, model_args, data_args, args)
    print(f"trained {stats['global_step']} steps in {stats['train_seconds']:.0f}s; adapter in {run_dir}/adapter")


def _print_eval(result, eval_dir):
    names = result["rewards"]
    print(f"evaluated {len(result['points'])} preference points x {result['num_prompts']} prompts -> {eval_dir}/pareto.json, pareto.png")
    for p in result["points"]:
        w = ",".join(f"{x:.2f}" for x in p["preference"])
        means = "  ".join(f"{n}={p['mean'][n]:.3f}" for n in names)
        extra = f"targets={p['targets']}" if "targets" in p else f"policy={p.get('policy')}"
        print(f"  w=({w})  {extra}  {means}")
    if result.get("base"):
        print("  base model:  " + "  ".join(f"{n}={result['base']['mean'][n]:.3f}" for n in names))
    print(f"hypervolume {result['hypervolume']:.4g} (reference {result['hypervolume_reference']}); base model {result.get('hypervolume_base')}")
    following = result.get("preference_following") or {}
    print("preference-following (Spearman): " + ", ".join(f"{n} {v:.2f}" for n, v in following.items() if v is not None))


def cmd_evaluate(argv):
    from .evaluation import evaluate
    from .io import RECIPE

    parser = argparse.ArgumentParser(prog="ric evaluate", description="Pareto front of a trained run.")
    parser.add_argument("run_dir")
    parser.add_argument("--adapter", help="adapter folder to evaluate (default: the run's latest)")
    parser.add_argument("--eval_dir", help="where to write (default: RUN_DIR/eval)")
    known, rest = parser.parse_known_args(argv)
    run_dir = Path(known.run_dir)
    recipe = run_dir / RECIPE
    if not recipe.exists():
        raise RecipeError(f"{run_dir} has no {RECIPE}: give a run directory written by `ric run` or `ric train`")
    if recipe_method(str(recipe)) == "diffusion":
        from .diffusion.diffusion_trainer import evaluate_diffusion

        cfg, _ = _parse_diffusion(rest + ["--output_dir", str(run_dir)], str(recipe))
        _print_eval(evaluate_diffusion(run_dir, cfg), run_dir / "eval")
        return
    (_, _, args, eval_args), _ = parse_run_args(rest + ["--output_dir", str(run_dir)], str(recipe))
    result = evaluate(run_dir, eval_args, args, adapter=known.adapter, eval_dir=known.eval_dir)
    _print_eval(result, known.eval_dir or run_dir / "eval")


def cmd_generate(argv):
    import json

    from .generation import RiCGenerator
    from .preference import PREFERENCE_METHODS, parse_preference
    from .run_info import load_run_info

    parser = argparse.ArgumentParser(prog="ric generate", description="Answer prompts with a chosen trade-off.")
    parser.add_argument("run_dir", help="run directory (its latest adapter) or an adapter folder")
    parser.add_argument("prompts", nargs="+", help="one or more prompts")
    parser.add_argument("--preference", required=True, help="one weight per reward, e.g. 0.2,0.8")
    parser.add_argument("--method", choices=PREFERENCE_METHODS, help="preference -> target mapping (default: the run's)")
    parser.add_argument("--max_new_tokens", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top_p", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adapter", help="adapter folder (default: the run's latest)")
    parser.add_argument("--json", action="store_true", help="print JSON lines with targets")
    parser.add_argument("--out", help="text-to-image runs: where to write the image (default RUN_DIR/generated/<prompt>.png)")
    known = parser.parse_args(argv)
    info, _ = load_run_info(known.run_dir)  # checks the run before any model loads
    weights = parse_preference(known.preference, info.num_objectives, field="--preference")
    if any(not p.strip() for p in known.prompts):
        raise RecipeError("prompts: an empty prompt was given")
    if info.template == "image":
        return _generate_image(known, info, weights)
    overrides = {k: getattr(known, k) for k in ("max_new_tokens", "temperature", "top_p") if getattr(known, k) is not None}
    generator = RiCGenerator.from_run(known.run_dir, adapter=known.adapter)
    results = generator.generate(known.prompts, preference=weights, method=known.method, seed=known.seed, **overrides)
    targets = results[0]["targets"]
    print("targets: " + ", ".join(f"{n}={t}" for n, t in zip(info.rewards, targets)), file=sys.stderr)
    for r in results:
        print(json.dumps(r) if known.json else r["response"])


def _generate_image(known, info, weights):
    import re

    from .diffusion.diffusion_trainer import generate_images, load_image_pipeline
    from .preference import preference_to_targets

    targets = preference_to_targets(weights, info.score_low, info.score_high, known.method or info.preference_method)
    pipe, info = load_image_pipeline(known.run_dir)
    images, prompts = generate_images(pipe, info, known.prompts, targets, seed=known.seed)
    print("targets: " + ", ".join(f"{n}={t}" for n, t in zip(info.rewards, targets)), file=sys.stderr)
    for k, (image, caption) in enumerate(zip(images, known.prompts)):
        if known.out and len(images) == 1:
            path = Path(known.out)
        else:
            slug = re.sub(r"[^a-z0-9]+", "-", caption.lower()).strip("-")[:60] or "image"
            path = Path(known.run_dir) / "generated" / f"{slug}_w{'-'.join(f'{w:.2f}' for w in weights)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        print(path)


def cmd_status(argv):
    import json

    from .io import STATE, read_json

    parser = argparse.ArgumentParser(prog="ric status")
    parser.add_argument("run_dir")
    known = parser.parse_args(argv)
    path = Path(known.run_dir) / STATE
    if not path.exists():
        raise RecipeError(f"{known.run_dir} has no {STATE}: nothing has run there yet")
    stages = read_json(path)["stages"]
    for name, entry in stages.items():
        extra = {k: v for k, v in entry.items() if k not in ("status", "updated")}
        print(f"{name:<24} {entry.get('status'):<10} {entry.get('updated', '')}  {json.dumps(extra)}")


def cmd_rewards(argv):
    from reward_models import list_rewards
    from reward_models.registry import _REGISTRY

    for name in list_rewards():
        doc = (_REGISTRY[name].__doc__ or "").strip().splitlines()
        print(f"{name:<22} input={getattr(_REGISTRY[name], 'input_format', '?'):<18} {doc[0] if doc else ''}")


def _parse_diffusion(argv, recipe=None):
    from .parser import parse_recipe

    r, rest = _split_recipe(argv)
    (_, cfg), effective = parse_recipe(recipe_dataclasses(recipe or r), rest, recipe or r)
    return cfg, effective


def run_diffusion(argv):
    from .diffusion.diffusion_trainer import evaluate_diffusion, prepare_images, train_diffusion
    from .io import RECIPE, ComputeMeter, RunState, write_yaml

    cfg, effective = _parse_diffusion(argv)
    from reward_models import check_reward_names

    check_reward_names(cfg.rewards or [], cfg.reward_models)
    run_dir = Path(cfg.output_dir)
    check_run_dir(run_dir, effective)
    write_yaml(run_dir / RECIPE, effective)
    if RunState(run_dir).done("prepare"):
        print(f"prepare: done already ({run_dir}/data)")
    else:
        with ComputeMeter(run_dir, "prepare"):
            summary = prepare_images(run_dir, cfg)
        print(f"scored {summary['rows']} images (skipped {summary['skipped']} that failed to decode) in {run_dir}/data")
    if RunState(run_dir).done("train"):
        print(f"train: done already ({run_dir}/adapter)")
    else:
        with ComputeMeter(run_dir, "train") as meter:
            stats = train_diffusion(run_dir, cfg)
            meter.steps = stats["global_step"]
        print(f"trained {stats['global_step']} LoRA steps in {stats['train_seconds']:.0f}s")
    result = evaluate_diffusion(run_dir, cfg)
    print(f"image grid: {run_dir}/eval/image_grid.png")
    _print_eval(result, run_dir / "eval")


def cmd_run(argv):
    from .evaluation import evaluate
    from .io import RunState
    from .prepare import prepare
    from .ric_trainer import train

    recipe, _ = _split_recipe(argv)
    method = recipe_method(recipe)
    if method == "diffusion":
        return run_diffusion(argv)
    if method in ("morlhf", "soups"):
        from .morlhf_trainer import run_rl_baseline

        model_args, data_args, args, eval_args, run_dir = _start(argv)
        result = run_rl_baseline(method, run_dir, model_args, data_args, args, eval_args)
        _print_eval(result, run_dir / "eval")
        return
    model_args, data_args, args, eval_args, run_dir = _start(argv)
    from .io import ComputeMeter

    state = RunState(run_dir)
    timings = {}
    t0 = time.time()
    if state.done("prepare"):
        print(f"prepare: done already ({run_dir}/data)")
    else:
        with ComputeMeter(run_dir, "prepare") as meter:
            summary = prepare(run_dir, model_args, data_args, args)
            meter.generated_tokens = summary.get("generation", {}).get("generated_tokens", 0)
        _print_prepare(summary, run_dir)
    timings["prepare"] = time.time() - t0
    t0 = time.time()
    if RunState(run_dir).done("train"):
        print(f"train: done already ({run_dir}/adapter)")
    else:
        with ComputeMeter(run_dir, "train") as meter:
            stats = train(run_dir, model_args, data_args, args)
            meter.steps = stats["global_step"]
        print(f"trained {stats['global_step']} steps in {stats['train_seconds']:.0f}s")
    timings["train"] = time.time() - t0
    if args.num_online_iterations:
        from .online import run_online

        t0 = time.time()
        run_online(run_dir, model_args, data_args, args)
        timings["online"] = time.time() - t0
    t0 = time.time()
    result = evaluate(run_dir, eval_args, args)
    timings["evaluate"] = time.time() - t0
    _print_eval(result, run_dir / "eval")
    from .io import write_json

    write_json(run_dir / "run_timings.json", {k: round(v, 1) for k, v in timings.items()})


def cmd_compare(argv):
    from .compare import compare

    parser = argparse.ArgumentParser(prog="ric compare", description="Fronts of several runs on one plot, with compute.")
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", default="compare", help="output folder (default: ./compare)")
    parser.add_argument("--reference", help="hypervolume reference point, comma-separated (default: the first run's)")
    known = parser.parse_args(argv)
    reference = None
    if known.reference:
        try:
            reference = [float(x) for x in known.reference.split(",")]
        except ValueError:
            raise RecipeError(f"--reference: cannot parse {known.reference!r}; give comma-separated numbers") from None
    result = compare(known.run_dirs, known.out, reference)
    from .compare import to_markdown

    print(to_markdown(result))
    print(f"wrote {known.out}/compare.json, compare.md, compare.png")


COMMANDS = {
    "compare": cmd_compare,
    "run": cmd_run,
    "prepare": cmd_prepare,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "generate": cmd_generate,
    "status": cmd_status,
    "rewards": cmd_rewards,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ric: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    if command in ("run", "prepare", "train") and rest and rest[0] in ("-h", "--help"):
        from trl import TrlParser

        TrlParser(recipe_dataclasses(None)).print_help()
        return 0
    _setup_logging()
    try:
        COMMANDS[command](rest)
    except (RecipeError, ValueError, FileNotFoundError, OSError) as err:
        if os.environ.get("RIC_DEBUG"):
            raise
        print(f"ric {command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
