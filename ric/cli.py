"""The `ric` command: parses arguments, asks the method registry (`ric.methods`) what to do, prints.

    ric run RECIPE.yaml [--key value ...]      prepare -> train (-> online) -> evaluate, resumable
    ric prepare|train RECIPE.yaml [--key value ...]
    ric evaluate RUN_DIR [--key value ...]      the Pareto front of a trained run (any method)
    ric generate RUN_DIR --preference 0.2,0.8 "PROMPT" [...]
    ric serve RUN_DIR [--port 8000 ...]         an OpenAI-compatible server (+ web page), a preference per request
    ric export RUN_DIR OUT [--format hf|gguf]   the run as one merged model (+ ric_serving.json) for any engine
    ric compare RUN_DIR... [--out DIR]          every method's front on one plot + hypervolume/compute table
    ric status RUN_DIR                          which stages a run directory finished, and their compute
    ric rewards                                 the registered reward names

Recipes are read the TRL way: `--config FILE` (or the file as first argument) plus command-line
flags that override its keys; unknown keys and wrong types are refused before anything loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .recipe import RecipeError
from .rundir import RunFileError

USAGE = __doc__
BASE_HELP = (
    "PRT runs: the base model r steers (hub id or folder; default: the one it was trained on); its vocabulary "
    "must equal r's"
)
DTYPE_HELP = (
    "RiC and PRT runs: weight dtype to answer in (auto, float32, bfloat16, float16; default: the run's). "
    "bfloat16 decodes about 2x faster a step on a CPU with bf16 instructions (docs/serve.md)"
)


def check_dtype(dtype: str | None) -> None:
    """`--dtype`, checked before any model loads."""
    if dtype:
        from .generation import check_inference_dtype

        check_inference_dtype(dtype)


GROUPS = {"run": ("prepare", "train", "evaluate"), "prepare": ("prepare",), "train": ("train",)}


class _SourceFormatter(logging.Formatter):
    """Prefixes each line with where it comes from: `[ric]` for ric's own loggers, the top-level package's
    name for a library's (`[bitsandbytes] ...`), so a library's warning is not read as ric's."""

    OWN = ("ric", "reward_models", "root", "__main__")

    def format(self, record):
        source = record.name.split(".")[0]
        record.source = "ric" if source in self.OWN else source
        return super().format(record)


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_SourceFormatter("[%(source)s] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request it makes
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_warning()
    except ImportError:
        pass


def split_recipe(argv: list[str]) -> tuple[str | None, list[str]]:
    """Accept `ric run recipe.yaml ...` as well as `ric run --config recipe.yaml ...`: (recipe, the rest)."""
    if argv and not argv[0].startswith("-"):
        return argv[0], argv[1:]
    if "--config" in argv[:-1]:  # a bare trailing --config is left for the parser to refuse
        i = argv.index("--config")
        return argv[i + 1], argv[:i] + argv[i + 2 :]
    return None, argv


def cmd_stages(command: str, argv: list[str]) -> None:
    from .methods import METHODS, open_run
    from .pipeline import run_stages

    recipe, rest = split_recipe(argv)
    run = open_run(rest, recipe)
    stages = METHODS[run.method].stages(run)
    run_stages(run.run_dir, stages, GROUPS[command], on_outcome=lambda outcome: print(outcome.line, flush=True))
    pareto = run.run_dir / "eval" / "pareto.json"
    if command == "run" and pareto.exists():
        from .rundir import read_json

        print_eval(read_json(pareto), run.run_dir / "eval")


def print_eval(result: dict, eval_dir) -> None:
    names = result["rewards"]
    print(
        f"evaluated {len(result['points'])} preference points x {result['num_prompts']} prompts -> "
        f"{eval_dir}/pareto.json, pareto.png"
    )
    for p in result["points"]:
        w = ",".join(f"{x:.2f}" for x in p["preference"])
        means = "  ".join(f"{n}={p['mean'][n]:.3f}" for n in names)
        extra = f"targets={p['targets']}" if "targets" in p else f"policy={p.get('policy')}"
        print(f"  w=({w})  {extra}  {means}")
    if result.get("base"):
        print("  base model:  " + "  ".join(f"{n}={result['base']['mean'][n]:.3f}" for n in names))
    print(
        f"hypervolume {result['hypervolume']:.4g} (reference {result['hypervolume_reference']}: "
        f"{result.get('hypervolume_reference_rule', 'given')}); base model {result.get('hypervolume_base')}"
    )
    following = result.get("preference_following") or {}
    print(
        "preference-following (Spearman): " + ", ".join(f"{n} {v:.2f}" for n, v in following.items() if v is not None)
    )


def cmd_evaluate(argv: list[str]) -> None:
    from .methods import open_evaluation
    from .pipeline import run_stage

    parser = argparse.ArgumentParser(prog="ric evaluate", description="Pareto front of a trained run (any method).")
    parser.add_argument("run_dir")
    parser.add_argument(
        "--adapter",
        help="RiC runs: adapter folder to evaluate, or a trainer checkpoint of the run "
        "(RUN_DIR/checkpoints/offline/checkpoint-100); default: the run's latest",
    )
    parser.add_argument(
        "--step",
        type=int,
        help="MORLHF and Soups runs: every policy's trainer checkpoint of this step "
        "(policies/<label>/checkpoints/checkpoint-STEP) instead of its final adapter",
    )
    parser.add_argument("--eval_dir", help="where to write (default: RUN_DIR/eval; with --engine: eval-ENGINE-TYPE)")
    parser.add_argument("--dtype", help=DTYPE_HELP)
    parser.add_argument("--base", help=BASE_HELP)
    parser.add_argument(
        "--engine",
        help="RiC runs: answer the grid from the run's export under llama.cpp (or vllm), as `ric serve --engine` "
        "does; default: in-process (builtin)",
    )
    parser.add_argument(
        "--outtype", help="with --engine llama.cpp: the GGUF type (f32, f16, bf16, q8_0, q4_k_m, q4_0; default q4_k_m)"
    )
    known, rest = parser.parse_known_args(argv)
    check_dtype(known.dtype)
    engine = known.engine if known.engine != "builtin" else None
    if known.outtype and not engine:
        raise RecipeError("--outtype: applies with --engine llama.cpp or vllm (the export they answer from)")
    eval_dir = known.eval_dir
    if engine and not eval_dir:
        from .server.engines import DEFAULT_OUTTYPE

        eval_dir = Path(known.run_dir) / f"eval-{engine}-{known.outtype or DEFAULT_OUTTYPE.get(engine, '')}"
    stage, eval_dir = open_evaluation(
        known.run_dir,
        rest,
        eval_dir,
        adapter=known.adapter,
        dtype=known.dtype,
        base=known.base,
        engine=engine,
        step=known.step,
        outtype=known.outtype if engine else None,
    )
    print_eval(run_stage(known.run_dir, stage).summary, eval_dir)
    if (eval_dir / "image_grid.png").exists():
        print(f"image grid: {eval_dir}/image_grid.png")


def cmd_generate(argv: list[str]) -> None:
    from .methods import GENERATE_FLAGS, get_method
    from .preference import PREFERENCE_METHODS, parse_preference
    from .run_info import load_run_info
    from .rundir import generated_image_paths, save_image

    parser = argparse.ArgumentParser(prog="ric generate", description="Answer prompts with a chosen trade-off.")
    parser.add_argument("run_dir", help="run directory (its latest adapter) or, for RiC, an adapter folder")
    parser.add_argument("prompts", nargs="+", help="one or more prompts (captions for text-to-image runs)")
    parser.add_argument("--preference", help="one weight per reward, e.g. 0.2,0.8 (not for an SFT run)")
    parser.add_argument(
        "--method", choices=PREFERENCE_METHODS, help="RiC / text-to-image: preference -> target mapping"
    )
    parser.add_argument("--max_new_tokens", type=int, help="text runs")
    parser.add_argument("--temperature", type=float, help="text runs")
    parser.add_argument("--top_p", type=float, help="text runs")
    parser.add_argument("--num_inference_steps", type=int, help="text-to-image runs")
    parser.add_argument("--guidance_scale", type=float, help="text-to-image runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--adapter", help="RiC runs: adapter folder or a trainer checkpoint of the run (default: the run's latest)"
    )
    parser.add_argument("--dtype", help=DTYPE_HELP)
    parser.add_argument("--base", help=BASE_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON lines with the targets or policy used")
    parser.add_argument("--out", help="text-to-image runs: where to write the image (one prompt)")
    known = parser.parse_args(argv)
    info, _ = load_run_info(known.run_dir)  # checks the run before any model loads
    method = get_method(info.method, f"{known.run_dir}/ric_run.json")
    method.check_generate_flags(vars(known))
    check_dtype(known.dtype)
    weights = (
        parse_preference(known.preference, info.num_objectives, field="--preference") if known.preference else None
    )
    if any(not p.strip() for p in known.prompts):
        raise RecipeError("prompts: an empty prompt was given")
    paths = generated_image_paths(known.run_dir, known.prompts, weights, known.out) if method.makes_images else None
    settings = {k: getattr(known, k) for k in GENERATE_FLAGS if getattr(known, k) is not None}
    options = {k: getattr(known, k) for k in ("adapter", "dtype", "base") if getattr(known, k)}
    generator = method.load_generator(known.run_dir, **options)
    results = generator.generate(known.prompts, preference=weights, method=known.method, seed=known.seed, **settings)
    used = results[0]
    if used.get("targets") is not None:
        print("targets: " + ", ".join(f"{n}={t}" for n, t in zip(info.rewards, used["targets"])), file=sys.stderr)
    if used.get("policy"):
        print(
            f"policy: {used['policy']} (the {method.name} run's answer to preference {known.preference})",
            file=sys.stderr,
        )
    for i, r in enumerate(results):
        if paths:
            save_image(r.pop("image"), paths[i])
            r["image"] = str(paths[i])
        print(json.dumps(r) if known.json else r["image"] if paths else r["response"])


def cmd_export(argv: list[str]) -> None:
    from .export import FORMATS, export

    parser = argparse.ArgumentParser(
        prog="ric export",
        description="Write a trained run as one merged model (Hugging Face or GGUF) with ric_serving.json, "
        "which says how a preference becomes its prompt.",
    )
    parser.add_argument("run_dir")
    parser.add_argument("out", help="output folder (refused if it exists, unless --overwrite)")
    parser.add_argument("--format", default="hf", choices=FORMATS, help="hf (safetensors) or gguf (llama.cpp)")
    parser.add_argument(
        "--outtype", help="f32, f16, bf16, or for gguf q8_0, q4_k_m, q4_0 (default: f32 for hf, f16 for gguf)"
    )
    parser.add_argument("--point", help="MORLHF runs: the policy to export (its label)")
    parser.add_argument(
        "--preference", help="MORLHF: export the policy nearest to it; Soups: the mix at it (one weight per reward)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    known = parser.parse_args(argv)
    out = export(known.run_dir, known.out, known.format, known.outtype, known.point, known.preference, known.overwrite)
    print(f"exported {known.run_dir} -> {out} ({known.format}); serving notes in {out}/ric_serving.json")


def cmd_status(argv: list[str]) -> None:
    from .rundir import STATE, RunState, read_compute

    parser = argparse.ArgumentParser(prog="ric status")
    parser.add_argument("run_dir")
    known = parser.parse_args(argv)
    if not (Path(known.run_dir) / STATE).exists():
        raise RecipeError(f"{known.run_dir} has no {STATE}: nothing has run there yet")
    stages = RunState(known.run_dir).data["stages"]
    compute = read_compute(known.run_dir)
    for name, entry in stages.items():
        extra = {k: v for k, v in entry.items() if k not in ("status", "updated")}
        cost = compute["stages"].get(name)
        if cost:
            extra.update(wall_s=cost["wall_seconds"], cpu_s=cost["cpu_seconds"])
        print(f"{name:<28} {entry.get('status'):<10} {entry.get('updated', '')}  {json.dumps(extra)}")
    if compute.get("total"):
        print(f"{'total compute':<28} {json.dumps(compute['total'])}")


def cmd_rewards(argv: list[str]) -> None:
    from reward_models import list_rewards, reward_summary

    from . import diffusion  # noqa: F401  (registers the text-to-image branch's rewards)

    for name in list_rewards():
        info = reward_summary(name)
        print(f"{name:<22} input={info['input_format']:<18} {info['description']}")


def cmd_compare(argv: list[str]) -> None:
    from .compare import compare, to_markdown

    parser = argparse.ArgumentParser(
        prog="ric compare", description="Fronts of several runs on one plot, with compute."
    )
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
    print(to_markdown(result))
    print(f"wrote {known.out}/compare.json, compare.md, compare.png")


def cmd_serve(argv: list[str]) -> None:
    import logging

    from .server import serve
    from .server.protocol import Limits

    parser = argparse.ArgumentParser(
        prog="ric serve", description="OpenAI-compatible server: each request carries its own preference."
    )
    parser.add_argument("run_dir")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api_key", help="require Authorization: Bearer KEY (default: $RIC_API_KEY, else none)")
    parser.add_argument("--max_batch_size", type=int, default=16, help="rows per batched generation")
    parser.add_argument("--batch_window_ms", type=float, default=20, help="how long a batch waits for company")
    parser.add_argument("--max_queue", type=int, default=64, help="requests waiting or running; beyond: 429")
    parser.add_argument("--max_tokens", type=int, default=512, help="the cap on a request's max_tokens")
    parser.add_argument("--max_prompt_tokens", type=int, default=2048)
    parser.add_argument("--max_body_bytes", type=int, default=1_000_000)
    parser.add_argument(
        "--upstream",
        help="an OpenAI-compatible server (e.g. vllm serve) that serves the run's "
        "base model with its adapter: base URL ending in /v1",
    )
    parser.add_argument(
        "--engine",
        default="builtin",
        help="builtin (transformers in this process, batched; the default), llama.cpp (ric exports the run to "
        "GGUF and fronts llama-cpp-python's server: fastest one request at a time on a CPU), or vllm (a merged "
        "export under `vllm serve`; CUDA)",
    )
    parser.add_argument(
        "--outtype", help="--engine llama.cpp: f32, f16, bf16, q8_0, q4_k_m or q4_0 (default q4_k_m); vllm: bf16"
    )
    parser.add_argument("--upstream_model", help="the upstream's model name for the adapter (RiC; default: run name)")
    parser.add_argument("--upstream_api_key", help="API key of the upstream server")
    parser.add_argument("--raw", action="store_true", help="serve prompts as they are (no template, no tags)")
    parser.add_argument("--device", help="torch device for the in-process engine (default: cuda if present)")
    parser.add_argument("--dtype", help=DTYPE_HELP)
    parser.add_argument("--base", help=BASE_HELP)
    parser.add_argument("--no_page", action="store_true", help="no web page at /")
    known = parser.parse_args(argv)
    for name in ("max_batch_size", "max_queue", "max_tokens", "max_prompt_tokens", "max_body_bytes", "port"):
        if getattr(known, name) < 1:
            raise RecipeError(f"--{name}: must be a positive integer, got {getattr(known, name)}")
    if known.upstream_model and not known.upstream:
        raise RecipeError("--upstream_model: applies with --upstream only")
    check_dtype(known.dtype)
    if known.dtype and known.upstream:
        raise RecipeError("--dtype: the upstream server holds the weights; set its dtype there (remove --dtype)")
    if known.engine != "builtin" and (known.upstream or known.dtype or known.base):
        flag = "--upstream" if known.upstream else "--dtype" if known.dtype else "--base"
        raise RecipeError(
            f"{flag}: not with --engine {known.engine} (ric starts that engine itself, on the run's export"
            + ("; its type is --outtype" if flag == "--dtype" else "")
            + ")"
        )
    check_port(known.host, known.port)
    if known.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("ric.serve").warning(
            "binding to %s: the server is reachable from other machines", known.host
        )
    limits = Limits(
        max_tokens=known.max_tokens, max_prompt_tokens=known.max_prompt_tokens, max_body_bytes=known.max_body_bytes
    )
    serve(
        known.run_dir,
        host=known.host,
        port=known.port,
        api_key=known.api_key,
        limits=limits,
        page=not known.no_page,
        upstream=known.upstream,
        upstream_model=known.upstream_model,
        upstream_api_key=known.upstream_api_key,
        raw=known.raw,
        max_batch_size=known.max_batch_size,
        batch_window=known.batch_window_ms / 1000,
        max_queue=known.max_queue,
        device=known.device,
        dtype=known.dtype,
        base=known.base,
        engine=known.engine,
        outtype=known.outtype,
    )


def check_port(host: str, port: int) -> None:
    """Refuse a port another process holds, before any model loads."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing socket is no obstacle
        try:
            sock.bind((host, port))
        except OSError as err:
            raise RecipeError(
                f"--port: {port} on {host} is in use or not available ({err.strerror}); choose another --port"
            ) from None


def print_recipe_help(command: str) -> None:
    from trl import TrlParser

    from .methods import METHODS, get_method

    default = get_method(None)
    print(
        f"ric {command} RECIPE.yaml [--key value ...]: the keys of a recipe of the default method "
        f"(method: {default.name}) follow; other methods: {', '.join(m for m in METHODS if m != default.name)} "
        "(see docs/method.md).\n"
    )
    TrlParser(default.config_classes()).print_help()


COMMANDS = {
    "run": lambda argv: cmd_stages("run", argv),
    "prepare": lambda argv: cmd_stages("prepare", argv),
    "train": lambda argv: cmd_stages("train", argv),
    "evaluate": cmd_evaluate,
    "generate": cmd_generate,
    "compare": cmd_compare,
    "export": cmd_export,
    "serve": cmd_serve,
    "status": cmd_status,
    "rewards": cmd_rewards,
}


def one_spelling(argv: list[str]) -> list[str]:
    """Flags are spelled with underscores (`--max_new_tokens`, as a recipe's keys); the dashed spelling
    (`--max-new-tokens`) is accepted for every command and turned into it."""
    out = []
    for token in argv:
        if token.startswith("--") and len(token) > 2:
            name, eq, value = token[2:].partition("=")
            token = "--" + name.replace("-", "_") + eq + value
        out.append(token)
    return out


def exit_on_sigterm() -> None:
    """Turn SIGTERM (`kill`, a job scheduler's stop, a session's end) into SystemExit, so that the stage running
    unwinds as on Ctrl-C: its compute is kept under `interrupted` in compute.json and added in on resume.
    (SIGKILL cannot be caught: the stage's time since its last start is then not counted.)"""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> int:
    argv = one_spelling(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ric: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    if command in GROUPS and rest and rest[0] in ("-h", "--help"):
        print_recipe_help(command)
        return 0
    _setup_logging()
    exit_on_sigterm()
    try:
        COMMANDS[command](rest)
    except (RecipeError, RunFileError, ValueError, FileNotFoundError, OSError) as err:
        if os.environ.get("RIC_DEBUG"):
            raise
        print(f"ric {command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
