"""`ric evaluate` for a RiC run (paper stage 5): the preference grid on held-out prompts.

For every point of the grid the preference is mapped to targets, one response is generated per
held-out prompt with the targets in its prompt, and the responses are scored with the raw
(un-normalised) rewards. The base model, unconditioned (adapter off, no tags), answers the same
prompts first; then the adapter is merged into the base weights for speed and the grid is
generated, batched across points (`ric.generation.evaluate_grid` over a `RiCGenerator`).
`ric.report.evaluate_run` does the chunking, scoring and the files (eval/pareto.json, pareto.png,
points/point_XX.csv, base.csv), as for every method.
"""

from __future__ import annotations

from pathlib import Path

from .generation import adapter_info, evaluate_grid, load_policy, resolve_adapter
from .inference import RiCGenerator, ServedGenerator
from .run_info import load_run_info


def evaluate(
    run,
    eval_dir=None,
    overrides: dict | None = None,
    progress: bool = True,
    adapter=None,
    device=None,
    dtype: str | None = None,
    engine: str | None = None,
    outtype: str | None = None,
) -> dict:
    """Evaluate a run (its latest adapter unless `adapter` is given); returns pareto.json's content.

    `overrides` holds generation settings given for this evaluation (`ric evaluate RUN --temperature 0.1`);
    `dtype` answers in another weight dtype than the run's (`ric evaluate RUN --dtype bfloat16`).
    `engine` "llama.cpp" (or "vllm") answers the grid from the run's export (GGUF `outtype`) under that
    engine's server, as `ric serve --engine` does; the base model's answers stay in-process."""
    info, folder = load_run_info(run.run_dir)
    adapter_dir = Path(adapter) if adapter else resolve_adapter(folder, info)
    info = adapter_info(adapter_dir, info)
    identity = {"adapter": str(adapter_dir.resolve()), **({"dtype": dtype} if dtype else {})}
    extra = {"adapter": str(adapter_dir), "dtype": dtype or info.model_kwargs.get("dtype", "auto")}

    def load_in_process():
        return RiCGenerator(*load_policy(info, adapter_dir, device, dtype=dtype), info)

    load, servers = load_in_process, []
    if engine and engine != "builtin":
        load, outtype = served_loader(run, info, adapter, dtype, engine, outtype, load_in_process, servers)
        identity.update(engine=engine, outtype=outtype)
        extra.update(engine=engine, outtype=outtype, dtype=None)
    try:
        return evaluate_grid(
            run,
            info,
            load,
            identity=identity,
            extra=extra,
            eval_dir=eval_dir,
            overrides=overrides,
            progress=progress,
            title="RiC" + (f" ({engine}, {outtype})" if "engine" in identity else ""),
            label="RiC, one adapter (grid of preferences)",
        )
    finally:
        for server in servers:
            server.stop()


def served_loader(run, info, adapter, dtype, engine: str, outtype, load_in_process, servers: list):
    """(a loader of the `ServedGenerator` that answers through `engine`, the export type), checked now;
    the engine's server starts when the loader is called, and is appended to `servers`."""
    from .methods import get_method
    from .models import load_tokenizer
    from .recipe import RecipeError
    from .server.engines import check_engine, engine_sampling, start_engine_server

    if adapter or dtype:
        flag = "--adapter" if adapter else "--dtype"
        raise RecipeError(
            f"{flag}: not with --engine {engine}, which answers from the run's export of its latest adapter"
        )
    outtype = check_engine(engine, get_method("ric"), outtype)

    def load():
        formatter = RiCGenerator(None, load_tokenizer(str(resolve_adapter(run.run_dir, info))), info)
        name = run.run_dir.resolve().name
        server = start_engine_server(run.run_dir, engine, outtype, name, formatter.tokenizer)
        servers.append(server)
        identity = {"engine": engine, "outtype": outtype}
        return ServedGenerator(formatter, server.url, name, engine_sampling(engine), load_in_process, identity)

    return load, outtype
