"""The OpenAI-compatible request and response shapes of `ric serve`, and their validation.

A chat or text completion request may carry two extra body fields (the official `openai` client
sends them with `extra_body=`):

- `preference`: one weight per reward, >= 0, not all zero (normalised to sum 1);
- `targets`: explicit normalised target scores, one per reward, within the run's score range
  widened by 1 (RiC and text-to-image runs only).

Without either, the run's default applies: equal weights. Every response carries a `ric` object
saying what was used: the preference, the targets by reward name (RiC), the policy (baselines).
Bad requests raise `RequestError`, which the app turns into a 400 with an OpenAI-style error object
naming the field.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass


class RequestError(ValueError):
    """A request that cannot be answered as given: HTTP `status` with an OpenAI-style error naming `param`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code

    def body(self) -> dict:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error"
        )
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


@dataclass
class Limits:
    max_tokens: int = 512  # the cap on a request's max_tokens
    max_prompt_tokens: int = 2048
    max_body_bytes: int = 1_000_000


@dataclass
class ParsedRequest:
    kind: str  # "chat" or "text"
    model: str
    prompt: object  # chat: the list of messages; text: the prompt string
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stream: bool
    preference: list[float] | None
    targets: list[float] | None


def _number(body: dict, name: str, default, low: float, high: float, integer: bool = False):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise RequestError(f"{name}: expected {'an integer' if integer else 'a number'}, got {value!r}", name)
    if not math.isfinite(value) or not low <= value <= high:
        raise RequestError(f"{name}: {value} is outside [{low}, {high}]", name)
    return int(value) if integer else float(value)


def _weights(body: dict, name: str) -> list | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise RequestError(f"{name}: expected a list of numbers, one per reward, got {value!r}", name)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise RequestError(f"{name}: every entry must be a number, got {value!r}", name)
    return [float(v) for v in value]


def parse_request(body, kind: str, models: list[str], limits: Limits, default_settings: dict) -> ParsedRequest:
    """Validate a request body; raises RequestError naming the field."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", None)
    model = body.get("model")
    if model not in models:
        raise RequestError(
            f"model: {model!r} is not served here; available: {models}", "model", code="model_not_found"
        )
    if kind == "chat":
        prompt = body.get("messages")
        if not isinstance(prompt, list) or not prompt:
            raise RequestError("messages: give a non-empty list of {role, content} messages", "messages")
        for i, message in enumerate(prompt):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise RequestError(f"messages[{i}]: expected {{role, content}} with text content", "messages")
            if message.get("role") not in ("system", "user", "assistant"):
                raise RequestError(
                    f"messages[{i}].role: {message.get('role')!r} is not system, user or assistant", "messages"
                )
        if prompt[-1]["role"] != "user" or not prompt[-1]["content"].strip():
            raise RequestError("messages: the last message must be a user turn with text", "messages")
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt.strip():
            raise RequestError("prompt: give one prompt with text (a string)", "prompt")
    if body.get("n", 1) != 1:
        raise RequestError("n: one completion per request is served here; send several requests", "n")
    for name in ("stop", "tools", "functions", "response_format", "logprobs", "top_logprobs", "suffix", "echo"):
        if body.get(name) not in (None, False, [], 0):
            raise RequestError(f"{name}: not supported by ric serve; leave it out", name)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    field_name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    max_tokens = default_settings["max_new_tokens"] if max_tokens is None else max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestError(f"{field_name}: expected a positive integer, got {max_tokens!r}", field_name)
    if max_tokens > limits.max_tokens:
        raise RequestError(f"{field_name}: {max_tokens} is over this server's cap of {limits.max_tokens}", field_name)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"stream: expected true or false, got {stream!r}", "stream")
    preference, targets = _weights(body, "preference"), _weights(body, "targets")
    if preference is not None and targets is not None:
        raise RequestError("preference and targets: give one of them, not both", "preference")
    return ParsedRequest(
        kind=kind,
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", default_settings.get("temperature", 0.7), 0.0, 2.0),
        top_p=_number(body, "top_p", default_settings.get("top_p", 1.0), 1e-6, 1.0),
        seed=_number(body, "seed", None, -(2**63), 2**63 - 1, integer=True),
        stream=stream,
        preference=preference,
        targets=targets,
    )


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def completion_body(kind: str, rid: str, model: str, text: str, finish_reason: str, usage: dict, ric: dict) -> dict:
    created = int(time.time())
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
            "ric": ric,
        }
    choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
        "ric": ric,
    }


def chunk_body(
    kind: str,
    rid: str,
    model: str,
    delta: str | None,
    finish_reason: str | None,
    ric: dict | None = None,
    first: bool = False,
) -> dict:
    created = int(time.time())
    if kind == "chat":
        piece = {"role": "assistant", "content": delta or ""} if first else ({"content": delta} if delta else {})
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": piece, "finish_reason": finish_reason}],
        }
    else:
        body = {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": delta or "", "finish_reason": finish_reason, "logprobs": None}],
        }
    if ric is not None:
        body["ric"] = ric
    return body
