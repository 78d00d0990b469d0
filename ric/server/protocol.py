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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


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


def _number(value, name: str, default, low: float, high: float, integer: bool = False):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise RequestError(f"{name}: expected {'an integer' if integer else 'a number'}, got {value!r}", name)
    if not math.isfinite(value) or not low <= value <= high:
        raise RequestError(f"{name}: {value} is outside [{low}, {high}]", name)
    return int(value) if integer else float(value)


def _weights(value, name: str) -> list | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise RequestError(f"{name}: expected a list of numbers, one per reward, got {value!r}", name)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise RequestError(f"{name}: every entry must be a number, got {value!r}", name)
    return [float(v) for v in value]


# fields of the OpenAI API that ric serve does not honour: refused by name rather than ignored
REFUSED = ("stop", "tools", "functions", "response_format", "logprobs", "top_logprobs", "suffix", "echo")


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


def _context(info: ValidationInfo) -> dict:
    return info.context or {}


class CompletionRequestBase(BaseModel):
    """What a text and a chat completion request share. Each field is checked by a `before` validator that
    raises `RequestError` (naming the field, with the message a client sees); the request's context (served
    model names, `Limits`, the run's default settings) comes as pydantic's validation context. Fields a
    client may send that change nothing (`user`, `metadata`, penalties) are accepted (`extra="allow"`)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(default=None, validate_default=True)
    n: int = Field(default=1, validate_default=True)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(default=None, validate_default=True)
    top_p: float | None = Field(default=None, validate_default=True)
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None
    preference: list[float] | None = None
    targets: list[float] | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _model(cls, value, info: ValidationInfo):
        models = _context(info).get("models")
        if models is not None and value not in models:
            raise RequestError(
                f"model: {value!r} is not served here; available: {models}", "model", code="model_not_found"
            )
        return value

    @field_validator("n", mode="before")
    @classmethod
    def _n(cls, value):
        if value not in (None, 1):
            raise RequestError("n: one completion per request is served here; send several requests", "n")
        return 1

    @field_validator("max_tokens", "max_completion_tokens", mode="before")
    @classmethod
    def _max_tokens(cls, value, info: ValidationInfo):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestError(f"{info.field_name}: expected a positive integer, got {value!r}", info.field_name)
        cap = _context(info).get("limits", Limits()).max_tokens
        if value > cap:
            raise RequestError(f"{info.field_name}: {value} is over this server's cap of {cap}", info.field_name)
        return value

    @field_validator("stream", mode="before")
    @classmethod
    def _stream(cls, value):
        if value is None:
            return False
        if not isinstance(value, bool):
            raise RequestError(f"stream: expected true or false, got {value!r}", "stream")
        return value

    @field_validator("preference", "targets", mode="before")
    @classmethod
    def _weights(cls, value, info: ValidationInfo):
        return _weights(value, info.field_name)

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperature(cls, value, info: ValidationInfo):
        return _number(value, "temperature", _context(info).get("defaults", {}).get("temperature", 0.7), 0.0, 2.0)

    @field_validator("top_p", mode="before")
    @classmethod
    def _top_p(cls, value, info: ValidationInfo):
        return _number(value, "top_p", _context(info).get("defaults", {}).get("top_p", 1.0), 1e-6, 1.0)

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, value):
        return _number(value, "seed", None, -(2**63), 2**63 - 1, integer=True)

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, body):
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object", None)
        for name in REFUSED:
            if body.get(name) not in (None, False, [], 0):
                raise RequestError(f"{name}: not supported by ric serve; leave it out", name)
        return body

    @model_validator(mode="after")
    def _one_of(self):
        if self.preference is not None and self.targets is not None:
            raise RequestError("preference and targets: give one of them, not both", "preference")
        return self

    def new_tokens(self, default: int) -> int:
        """The answer's token budget: `max_completion_tokens`, else `max_tokens`, else the run's default."""
        given = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return default if given is None else given


class ChatCompletionRequest(CompletionRequestBase):
    """`POST /v1/chat/completions`: the conversation, its last turn the user's."""

    messages: list[ChatMessage] = Field(default=None, validate_default=True)

    @field_validator("messages", mode="before")
    @classmethod
    def _messages(cls, value):
        if not isinstance(value, list) or not value:
            raise RequestError("messages: give a non-empty list of {role, content} messages", "messages")
        for i, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise RequestError(f"messages[{i}]: expected {{role, content}} with text content", "messages")
            if message.get("role") not in ("system", "user", "assistant"):
                raise RequestError(
                    f"messages[{i}].role: {message.get('role')!r} is not system, user or assistant", "messages"
                )
        if value[-1]["role"] != "user" or not value[-1]["content"].strip():
            raise RequestError("messages: the last message must be a user turn with text", "messages")
        return value

    @property
    def prompt(self) -> list[dict]:
        return [m.model_dump() for m in self.messages]


class CompletionRequest(CompletionRequestBase):
    """`POST /v1/completions`: one prompt (the user's request; the run's template formats it)."""

    prompt: str = Field(default=None, validate_default=True)

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value):
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            value = value[0]
        if not isinstance(value, str) or not value.strip():
            raise RequestError("prompt: give one prompt with text (a string)", "prompt")
        return value


REQUESTS = {"chat": ChatCompletionRequest, "text": CompletionRequest}


def parse_request(body, kind: str, models: list[str], limits: Limits, default_settings: dict) -> CompletionRequestBase:
    """The request body as its typed model; raises RequestError naming the first field at fault."""
    context = {"models": models, "limits": limits, "defaults": default_settings}
    try:
        return REQUESTS[kind].model_validate(body, context=context)
    except ValidationError as err:
        for problem in err.errors():
            cause = (problem.get("ctx") or {}).get("error")
            if isinstance(cause, RequestError):
                raise cause from None
        problem = err.errors()[0]
        field = ".".join(str(p) for p in problem.get("loc", ())) or None
        raise RequestError(f"{field}: {problem.get('msg')}", field) from None


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
