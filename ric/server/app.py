"""`ric serve RUN_DIR`: an OpenAI-compatible server where each request chooses its own trade-off.

Routes: `GET /v1/models`, `POST /v1/chat/completions` and `POST /v1/completions` (streamed as
server-sent events, or not), `GET /health`, `GET /stats` (the engine's counters: requests, batches,
rows per batch, cancelled rows), and the web page at `/` with its two helpers `GET /ric/run` (the
run: rewards, score range, its evaluated front) and `GET /ric/targets?preference=...` (what a
preference maps to). With an API key (`--api-key` or `RIC_API_KEY`) every `/v1` and `/ric` route
needs `Authorization: Bearer <key>`, compared in constant time; `/` and `/health` stay open.
A body over `max_body_bytes` is refused from its Content-Length before it is read, or, sent without
one (chunked), as soon as the bytes read pass the limit. One log line per completion request and per
refused request: method, path, status, latency (from the request's arrival), tokens, preference.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from .engines import EngineBusy
from .events import FINAL, Delta, Done, Failed
from .protocol import Limits, RequestError, chunk_body, completion_body, new_id, parse_request

logger = logging.getLogger("ric.serve")
STATIC = Path(__file__).parent / "static"


@dataclass
class Service:
    """The served run: its name, generator (for conditions and prompt formats), engine and front."""

    name: str
    run_dir: Path
    generator: object  # a PolicyGenerator (its model may live upstream)
    engine: object  # InProcessEngine or UpstreamEngine
    raw: bool = False  # prompts are sent as they are: no template, no tags (an upstream for a proxy)

    @property
    def info(self):
        return self.generator.info

    def condition(self, preference=None, targets=None):
        n = self.info.num_objectives
        if targets is not None:
            if not getattr(self.generator, "takes_targets", False):
                raise RequestError(
                    f"targets: a {self.info.method} run writes no score tags; give a preference", "targets"
                )
            try:
                return self.generator.condition(targets=targets)
            except ValueError as err:
                raise RequestError(str(err), "targets") from None
        try:
            return self.generator.condition(preference=preference if preference is not None else [1 / n] * n)
        except ValueError as err:
            raise RequestError(str(err), "preference") from None

    def describe(self, condition) -> dict:
        out = {"preference": list(condition.preference) if condition.preference is not None else None}
        if condition.targets is not None:
            out["targets"] = dict(zip(self.info.rewards, condition.targets))
        if condition.policy is not None:
            out["policy"] = condition.policy
        return out

    def format(self, kind: str, prompt, condition) -> str:
        if self.raw:
            return prompt
        if kind == "chat" and self.info.template != "chat":
            prompt = messages_to_prompt(prompt, self.info.template)
        return self.generator.format(prompt, condition)

    def count_tokens(self, text: str) -> int:
        return len(self.generator.tokenizer(text, add_special_tokens=False)["input_ids"])

    def front(self) -> dict | None:
        path = self.run_dir / "eval" / "pareto.json"
        if not path.exists():
            return None
        pareto = json.loads(path.read_text())
        keep = ("rewards", "hypervolume", "hypervolume_base", "preference_following", "num_prompts")
        points = [{k: p.get(k) for k in ("preference", "targets", "policy", "mean")} for p in pareto["points"]]
        return {
            **{k: pareto.get(k) for k in keep},
            "points": points,
            "base": {"mean": pareto["base"]["mean"]} if pareto.get("base") else None,
        }


def messages_to_prompt(messages: list[dict], template: str) -> str:
    """Chat messages as the paper's templates read them: an HH-RLHF conversation, or the post to summarise."""
    if template == "summary":
        return messages[-1]["content"]
    turns = {"user": "\n\nHuman: ", "assistant": "\n\nAssistant: "}
    text = "".join(turns[m["role"]] + m["content"].strip() for m in messages if m["role"] in turns)
    return text + " \n\nAssistant:"  # the HH-RLHF layout: a space before the final marker


class ArrivalTime:
    """ASGI middleware: the time each request arrived (`scope["ric.start"]`), for its log line's latency."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope["ric.start"] = time.monotonic()
        await self.app(scope, receive, send)


def arrival(request: Request) -> float:
    return request.scope.get("ric.start") or time.monotonic()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (400, `body_too_large`) as soon as it is known to be over `limit` bytes:
    from the Content-Length header before anything is read, else while the chunks come in."""

    def too_large(what: str) -> RequestError:
        return RequestError(f"body: {what} this server's limit of {limit} bytes", "body", code="body_too_large")

    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(f"Content-Length: {declared!r} is not a number of bytes", "body") from None
        if length > limit:
            raise too_large(f"{length} bytes (its Content-Length) is over")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"{size} bytes read so far (no Content-Length) are over")
        chunks.append(chunk)
    return b"".join(chunks)


routes = APIRouter()


def state(request: Request):
    """The served run and its settings (`app.state`, set by `create_app`)."""
    return request.app.state


def authorize(request: Request) -> None:
    api_key = state(request).api_key
    if api_key is None:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), api_key.encode()):
        raise RequestError(
            "missing or wrong API key: send Authorization: Bearer <key>", None, status=401, code="invalid_api_key"
        )


async def request_error(request: Request, err: RequestError):
    log_request(request, err.status, arrival(request), 0, 0, None)
    headers = {"Retry-After": "1"} if err.status == 429 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def validation_error(request: Request, err: RequestValidationError):
    # a missing or malformed query parameter: the OpenAI-style 400 naming it, not FastAPI's 422
    problem = (err.errors() or [{}])[0]
    field = str(problem.get("loc", ("", None))[-1]) if problem.get("loc") else None
    return await request_error(request, RequestError(f"{field}: {problem.get('msg', 'invalid')}", field))


@routes.get("/health")
async def health(request: Request):
    service = state(request).service
    problem = service.engine.health()
    if problem:
        return JSONResponse({"status": "error", "model": service.name, "detail": problem}, status_code=503)
    return {"status": "ok", "model": service.name}


@routes.get("/stats")
async def stats(request: Request):
    authorize(request)
    return state(request).service.engine.stats()


@routes.get("/v1/models")
async def models(request: Request):
    authorize(request)
    service = state(request).service
    info = service.info
    card = {
        "id": service.name,
        "object": "model",
        "created": int(service.run_dir.stat().st_mtime),
        "owned_by": "ric",
        "ric": {"method": info.method, "rewards": info.rewards, "template": info.template},
    }
    return {"object": "list", "data": [card]}


@routes.get("/ric/run")
async def run_card(request: Request):
    authorize(request)
    service = state(request).service
    info = service.info
    return {
        "model": service.name,
        "method": info.method,
        "rewards": info.rewards,
        "score_low": info.score_low,
        "score_high": info.score_high,
        "takes_targets": getattr(service.generator, "takes_targets", False),
        "front": service.front(),
        "default_preference": [1 / info.num_objectives] * info.num_objectives,
    }


@routes.get("/ric/targets")
async def targets(request: Request, preference: str | None = None):
    authorize(request)
    if preference is None:
        raise RequestError(
            "preference: required, as comma-separated weights, one per reward (?preference=0.2,0.8)", "preference"
        )
    try:
        weights = [float(x) for x in preference.split(",")]
    except ValueError:
        raise RequestError(
            f"preference: cannot parse {preference!r}; give comma-separated numbers", "preference"
        ) from None
    service = state(request).service
    return service.describe(service.condition(preference=weights))


@routes.post("/v1/chat/completions")
async def chat_completions(request: Request):
    return await complete(request, "chat")


@routes.post("/v1/completions")
async def completions(request: Request):
    return await complete(request, "text")


@routes.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request):
    if not state(request).page:
        return JSONResponse({"error": {"message": "no web page here (--no_page)", "type": "not_found_error"}}, 404)
    return (STATIC / "index.html").read_text(encoding="utf-8")


async def complete(request: Request, kind: str):
    start = arrival(request)
    authorize(request)
    app = state(request)
    service, limits = app.service, app.limits
    raw = await read_body(request, limits.max_body_bytes)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(f"the request body is not valid JSON ({err})", "body") from None
    parsed = parse_request(body, kind, [service.name], limits, app.defaults)
    if service.raw and (kind == "chat" or parsed.preference is not None or parsed.targets is not None):
        raise RequestError("this server serves raw prompts: /v1/completions without preference or targets", "prompt")
    condition = service.condition(parsed.preference, parsed.targets)
    text = service.format(kind, parsed.prompt, condition)
    prompt_tokens = service.count_tokens(text)
    if prompt_tokens > limits.max_prompt_tokens:
        raise RequestError(
            f"{'messages' if kind == 'chat' else 'prompt'}: {prompt_tokens} tokens is over "
            f"this server's limit of {limits.max_prompt_tokens}",
            "messages" if kind == "chat" else "prompt",
        )
    max_tokens = parsed.new_tokens(app.defaults["max_new_tokens"])
    events = service.engine.run(
        text, condition, max_tokens, parsed.temperature, parsed.top_p, parsed.seed, stream=parsed.stream
    )
    try:
        first = await events.__anext__()  # the queue is checked here: a full one answers 429 now
    except EngineBusy as err:
        raise RequestError(
            f"the server is busy ({err}); retry shortly", None, status=429, code="rate_limit_exceeded"
        ) from None
    ric = service.describe(condition)
    rid = new_id(kind)
    if parsed.stream:
        include_usage = bool((parsed.stream_options or {}).get("include_usage"))
        stream = sse(kind, rid, parsed.model, first, events, ric, prompt_tokens, include_usage, request, start)
        return StreamingResponse(
            stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
    done = await collect(first, events, request)
    if not isinstance(done, Done):
        log_request(request, 500, start, prompt_tokens, 0, ric)
        return JSONResponse(
            {"error": {"message": done.message, "type": "server_error", "param": None, "code": None}}, status_code=500
        )
    answer = finish_text(done.text, done.reason, service)
    tokens = done.tokens
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens}
    log_request(request, 200, start, prompt_tokens, tokens, ric)
    return completion_body(kind, rid, parsed.model, answer, done.reason, usage, ric)


@asynccontextmanager
async def lifespan(app):
    yield
    app.state.service.engine.close()  # after uvicorn has let the in-flight requests finish


def create_app(service: Service, limits: Limits | None = None, api_key: str | None = None, page: bool = True):
    """The FastAPI app: the routes of `routes`, the served run and its settings on `app.state`."""
    limits = limits or Limits()
    app = FastAPI(title=f"ric serve {service.name}", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(ArrivalTime)
    defaults = {**service.info.generation}
    defaults.setdefault("max_new_tokens", 128)
    defaults["max_new_tokens"] = min(defaults["max_new_tokens"], limits.max_tokens)
    app.state.service, app.state.limits, app.state.api_key = service, limits, api_key
    app.state.page, app.state.defaults = page, defaults
    app.add_exception_handler(RequestError, request_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(routes)
    return app


def finish_text(answer: str, reason: str, service: Service) -> str:
    """A whole (non-streamed) answer: cut at a runaway turn marker, and with the run's `trim_truncated`
    the unfinished last sentence of an answer the token limit cut dropped."""
    from ..generation import clean_response, trim_to_sentence

    text = clean_response(answer, service.info.template) if not service.raw else answer
    if reason == "length" and service.info.generation.get("trim_truncated") and not service.raw:
        text = trim_to_sentence(text)
    return text


async def collect(first, events, request):
    """The last event of a non-streamed answer (`Done` or `Failed`); a client that goes away frees its row."""
    event = first

    async def drain():
        item = first
        while not isinstance(item, FINAL):
            item = await events.__anext__()
        return item

    task = asyncio.ensure_future(drain())
    try:
        while not task.done():
            await asyncio.wait([task], timeout=0.25)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                await events.aclose()
                return Failed("client disconnected")
        event = task.result()
    finally:
        if not task.done():
            task.cancel()
    await events.aclose()
    return event


async def sse(kind, rid, model, first, events, ric, prompt_tokens, include_usage, request, start):
    """Server-sent events: a first chunk (role, and what the preference was mapped to), the deltas,
    a last chunk with the finish reason, optionally the usage, then [DONE]."""
    tokens, status = 0, 200

    def data(body) -> str:
        return f"data: {json.dumps(body)}\n\n"

    try:
        yield data(chunk_body(kind, rid, model, "", None, ric=ric, first=True))
        event = first
        while True:
            if isinstance(event, Delta):
                yield data(chunk_body(kind, rid, model, event.text, None))
            elif isinstance(event, Done):
                tokens = event.tokens
                yield data(chunk_body(kind, rid, model, None, event.reason))
                if include_usage:
                    usage = {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": tokens,
                        "total_tokens": prompt_tokens + tokens,
                    }
                    yield data(
                        {
                            "id": rid,
                            "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                            "created": int(time.time()),
                            "model": model,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                yield "data: [DONE]\n\n"
                return
            else:
                status = 500
                yield data({"error": {"message": event.message, "type": "server_error", "param": None, "code": None}})
                return
            event = await events.__anext__()
    except (asyncio.CancelledError, GeneratorExit):
        status = 499  # the client went away mid-stream
        raise
    finally:
        try:
            await events.aclose()  # a row still generating stops at its next token
        except (asyncio.CancelledError, RuntimeError):
            pass
        log_request(request, status, start, prompt_tokens, tokens, ric)


def log_request(request, status: int, start: float, prompt_tokens: int, completion_tokens: int, ric) -> None:
    latency = (time.monotonic() - start) * 1000 if start else 0.0
    preference = ric.get("preference") if ric else None
    logger.info(
        "%s %s %d %.0fms prompt_tokens=%d completion_tokens=%d preference=%s%s",
        request.method,
        request.url.path,
        status,
        latency,
        prompt_tokens,
        completion_tokens,
        None if preference is None else [round(w, 3) for w in preference],
        f" policy={ric['policy']}" if ric and ric.get("policy") else "",
    )
