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
from .inference import RiCGenerator
from .run_info import load_run_info


def evaluate(
    run,
    eval_dir=None,
    overrides: dict | None = None,
    progress: bool = True,
    adapter=None,
    device=None,
    dtype: str | None = None,
    served=None,
) -> dict:
    """Evaluate a run (its latest adapter unless `adapter` is given); returns pareto.json's content.

    `overrides` holds generation settings given for this evaluation (`ric evaluate RUN --temperature 0.1`);
    `dtype` answers in another weight dtype than the run's (`ric evaluate RUN --dtype bfloat16`).
    `served(info, load_in_process)` -> (loader, identity, servers): the grid answered by an engine's server from
    the run's export instead (`ric evaluate --engine llama.cpp`: `ric.server.engines.served_loader`); the base
    model's answers stay in-process, the servers are stopped at the end."""
    info, folder = load_run_info(run.run_dir)
    adapter_dir = Path(adapter) if adapter else resolve_adapter(folder, info)
    info = adapter_info(adapter_dir, info)
    identity = {"adapter": str(adapter_dir.resolve()), **({"dtype": dtype} if dtype else {})}
    extra = {"adapter": str(adapter_dir), "dtype": dtype or info.model_kwargs.get("dtype", "auto")}

    def load_in_process():
        return RiCGenerator(*load_policy(info, adapter_dir, device, dtype=dtype), info)

    load, servers, title = load_in_process, [], "RiC"
    if served is not None:
        load, engine, servers = served(info, load_in_process)
        identity.update(engine)
        extra.update(engine, dtype=None)
        title += f" ({engine['engine']}, {engine['outtype']})"
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
            title=title,
            label="RiC, one adapter (grid of preferences)",
        )
    finally:
        for server in servers:
            server.stop()
