"""`ric serve RUN_DIR`: an OpenAI-compatible server and a web page where each request chooses its
own trade-off (`app.py`), answered in-process with batching (`batching.py`) or by an upstream
OpenAI-compatible server such as vLLM (`engines.py`). `serve` loads a run and starts the server."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("ric.serve")


def load_service(
    run_dir,
    upstream: str | None = None,
    upstream_model: str | None = None,
    upstream_api_key: str | None = None,
    raw: bool = False,
    max_batch_size: int = 16,
    batch_window: float = 0.02,
    max_queue: int = 64,
    device: str | None = None,
    dtype: str | None = None,
    base: str | None = None,
    engine: str = "builtin",
    outtype: str | None = None,
):
    """The run's generator (its model loaded in-process, or only its tokenizer for an upstream) and engine.
    `dtype` loads the weights in another dtype than the run's (RiC and PRT runs, in-process); `base` is the
    base model a PRT run steers. `engine` "llama.cpp" or "vllm": ric exports the run (GGUF `outtype`, or a
    merged Hugging Face folder; cached in RUN_DIR/export) and fronts that engine's server, started here."""
    from ..generation import STOP_MARKERS
    from ..methods import get_method
    from ..run_info import load_run_info
    from .app import Service
    from .engines import InProcessEngine, UpstreamEngine, check_engine, engine_sampling, start_engine_server

    run_dir = Path(run_dir)
    info, _ = load_run_info(run_dir)  # a clear error before anything loads
    method = get_method(info.method, f"{run_dir}/ric_run.json")
    if method.makes_images:
        raise ValueError(f"{run_dir} is a text-to-image run: ric serve answers text; use `ric generate` for images")
    name = run_dir.resolve().name
    method.check_options({"dtype": dtype, "base": base})
    outtype = check_engine(engine, method, outtype)
    if engine != "builtin":
        generator = _generator_without_model(run_dir, info)
        child = start_engine_server(run_dir, engine, outtype, name, generator.tokenizer)
        engine = UpstreamEngine(
            child.url,
            lambda c: name,
            max_queue=max_queue,
            child=child,
            sampling=engine_sampling(engine),
            engine=engine,
            count_tokens=lambda text: len(generator.tokenizer(text, add_special_tokens=False)["input_ids"]),
            stop=STOP_MARKERS.get(info.template, ()),
        )
    elif upstream:
        if method.upstream is None:
            raise ValueError(f"--upstream: {method.upstream_refusal}; serve it in-process (leave --upstream out)")
        generator = _generator_without_model(run_dir, info)
        model_for = (lambda c: c.policy) if method.upstream == "policy" else (lambda c: upstream_model or name)
        engine = UpstreamEngine(upstream, model_for, upstream_api_key, max_queue)
    else:
        options = {"device": device, **{k: v for k, v in (("dtype", dtype), ("base", base)) if v}}
        # loaded in the engine's worker thread, the one that runs the model (see BatchingEngine)
        engine = InProcessEngine(
            max_batch_size=max_batch_size,
            batch_window=batch_window,
            max_queue=max_queue,
            loader=lambda: method.load_generator(run_dir, **options),
        )
        generator = engine.generator
    return Service(name=name, run_dir=run_dir, generator=generator, engine=engine, raw=raw)


def _generator_without_model(run_dir: Path, info):
    """The run's generator with its tokenizer only: conditions and prompt formats, no weights."""
    from ..methods import get_method
    from ..models import load_tokenizer

    folder = run_dir / info.adapter if info.adapter and (run_dir / info.adapter).exists() else None
    tokenizer = load_tokenizer(str(folder) if folder else info.base_model)
    return get_method(info.method).generator_class()(None, tokenizer, info)


def serve(
    run_dir,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    limits=None,
    page: bool = True,
    **options,
) -> None:
    """Load the run and serve it until Ctrl-C (in-flight requests finish first)."""
    import uvicorn

    from .app import create_app

    api_key = api_key or os.environ.get("RIC_API_KEY") or None
    service = load_service(run_dir, **options)
    app = create_app(service, limits, api_key, page)
    where = f"http://{host}:{port}"
    model = service.generator.model
    weights = "weights upstream" if model is None else f"{str(model.dtype).removeprefix('torch.')} weights"
    logger.info(
        "serving %s (%s run, rewards %s, %s) at %s%s",
        service.name,
        service.info.method,
        ", ".join(service.info.rewards),
        weights,
        where,
        " with an API key" if api_key else "",
    )
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=60)
    try:
        uvicorn.Server(config).run()  # Ctrl-C: stop accepting, let in-flight requests finish, then return
    except KeyboardInterrupt:  # uvicorn raises the signal again once it has shut down
        pass
    logger.info("stopped %s", where)
