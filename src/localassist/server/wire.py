"""The OpenAI wire format: request bodies in, response objects and stream chunks out
(the error envelope: ``errors``). Pure functions over dicts; no HTTP here.

Request fields are checked by type and range and turned into the core's types
(``Message``, ``SamplingParams``, ``ResponseFormat``). A field that would change the
answer and cannot be honoured (``n`` > 1, ``logprobs``, a ``logit_bias``, non-zero
presence/frequency penalties, images) is refused with 400 ``not_supported``; fields
that change nothing here (``user``, ``metadata``, ``store``, ``service_tier``) and unknown
fields are ignored. ``tools`` are passed to the model, whose calls come back as
``tool_calls`` (streamed as deltas keyed by ``index``); the server never runs a tool.

The checks are written by hand, not declared as a pydantic model: a model's errors
would still have to be translated into these (the field's path as ``param``,
``invalid_type`` / ``invalid_value`` / ``not_supported``, what was sent), and the rules
a declaration cannot state (lone surrogates, ``not_supported`` values, one field
allowed only with another) written by hand beside it; pydantic and the models would
also add about 0.3 s to the server's start (docs/design.md has the figures). A model would validate a chat body in
about 10 µs where these take about 20: no request notices either.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from localassist.engine.types import Done, Message, ResponseFormat, SamplingParams, ToolCall, ToolCallDelta
from localassist.server.errors import ApiError, invalid, not_supported

MAX_TOKENS_LIMIT = 1_048_576
MAX_STOPS = 16
MAX_EMBED_INPUTS = 2048
DONE_FRAME = b"data: [DONE]\n\n"


# --- request bodies


def parse_body(raw: bytes) -> dict[str, Any]:
    """A JSON object from strict UTF-8 (no BOM games, no UTF-16), without NaN or Infinity."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(f"the request body is not valid UTF-8 (byte {exc.start})", code="invalid_encoding") from None
    if not text.strip():
        raise invalid("the request body is empty: send a JSON object", code="invalid_json")
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise invalid("the request body is nested too deeply", code="invalid_json") from None
    except ValueError as exc:
        raise invalid(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise invalid(f"the request body must be a JSON object, not {_kind(body)}", code="invalid_json")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _text(value: Any, param: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise invalid(f"{param} must be a string, not {_kind(value)}", param, "invalid_type")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(f"{param} contains a lone surrogate (\\ud800-\\udfff), not text", param) from None
    if not allow_empty and not value:
        raise invalid(f"{param} must not be empty", param)
    return value


def _number(body: Mapping[str, Any], name: str, lo: float, hi: float, *, integer: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        kind = "an integer" if integer else "a number"
        raise invalid(f"{name} must be {kind}, not {_kind(value)}", name, "invalid_type")
    if not lo <= value <= hi:
        raise invalid(f"{name} must be between {lo} and {hi} (got {value})", name)  # not :g: 1.04858e+06
    return value


def _bool(body: Mapping[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid(f"{name} must be true or false, not {_kind(value)}", name, "invalid_type")
    return value


def model_of(body: Mapping[str, Any]) -> str:
    if "model" not in body or body["model"] is None:
        raise invalid(
            "model is required: the name of a model this server serves (GET /v1/models)",
            "model",
            "missing_required_parameter",
        )
    return _text(body["model"], "model", allow_empty=False)


@dataclass(frozen=True)
class Generation:
    """A parsed chat or completions request."""

    model: str
    sampling: SamplingParams
    max_tokens_given: bool
    stream: bool = False
    include_usage: bool = False
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    response_format: ResponseFormat | None = None
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _sampling(body: Mapping[str, Any], defaults: SamplingParams) -> tuple[SamplingParams, bool]:
    for name in ("presence_penalty", "frequency_penalty"):
        value = _number(body, name, -2, 2)
        if value:
            raise not_supported(f"{name} is not supported (use repeat_penalty); send 0 or leave it out", name)
    if body.get("logit_bias"):
        raise not_supported("logit_bias is not supported", "logit_bias")
    if body.get("logprobs") not in (None, False, 0):
        raise not_supported("logprobs are not supported", "logprobs")
    if body.get("top_logprobs") not in (None, 0):
        raise not_supported("top_logprobs is not supported", "top_logprobs")
    for name in ("n", "best_of"):
        value = _number(body, name, 1, 128, integer=True)
        if value not in (None, 1):
            raise not_supported(f"{name} must be 1: one answer per request", name)
    max_tokens = _number(body, "max_completion_tokens", 1, MAX_TOKENS_LIMIT, integer=True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", 1, MAX_TOKENS_LIMIT, integer=True)
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (_text(stop, "stop", allow_empty=False),)
    elif isinstance(stop, list) and len(stop) <= MAX_STOPS:
        stops = tuple(_text(s, "stop", allow_empty=False) for s in stop)
    else:
        raise invalid(f"stop must be a string or an array of at most {MAX_STOPS} strings", "stop", "invalid_type")
    values = {
        "temperature": _number(body, "temperature", 0, 2),
        "top_p": _number(body, "top_p", 0, 1),
        "top_k": _number(body, "top_k", 0, 100_000, integer=True),
        "min_p": _number(body, "min_p", 0, 1),
        "repeat_penalty": _number(body, "repeat_penalty", 0.5, 2),
        "seed": _number(body, "seed", -1, 2**32 - 1, integer=True),
        "max_tokens": max_tokens,
    }
    sampling = replace(
        defaults,
        **{k: v for k, v in values.items() if v is not None},
        stop=stops,
        natural_end=False,  # OpenAI semantics: no stop string means run to EOS or max_tokens
    )
    return sampling, max_tokens is not None


def _stream_options(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = bool(_bool(body, "stream"))
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise invalid("stream_options must be an object", "stream_options", "invalid_type")
    if not stream:
        raise invalid("stream_options is only allowed when stream is true", "stream_options")
    return stream, bool(_bool(options, "include_usage"))


def _content(value: Any, param: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return _text(value, param)
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            where = f"{param}[{i}]"
            if not isinstance(part, dict):
                raise invalid(f"{where} must be an object", where, "invalid_type")
            if part.get("type") != "text":
                raise not_supported(f"{where}: only text content is supported (got {part.get('type')!r})", where)
            parts.append(_text(part.get("text"), f"{where}.text"))
        return "".join(parts)
    raise invalid(f"{param} must be a string or an array of text parts, not {_kind(value)}", param, "invalid_type")


def _tool_calls(value: Any, param: str) -> tuple[ToolCall, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid(f"{param} must be an array", param, "invalid_type")
    calls = []
    for i, call in enumerate(value):
        where = f"{param}[{i}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise invalid(f"{where} must be an object with a function", where, "invalid_type")
        calls.append(
            ToolCall(
                _text(call.get("id", f"call_{i}"), f"{where}.id"),
                _text(fn.get("name"), f"{where}.function.name"),
                _text(fn.get("arguments", "{}"), f"{where}.function.arguments"),
            )
        )
    return tuple(calls)


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _messages(value: Any) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise invalid(
            "messages must be a non-empty array",
            "messages",
            "invalid_type" if not isinstance(value, list) else "invalid_value",
        )
    out = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"{where} must be an object", where, "invalid_type")
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise invalid(f"{where}.role must be one of {', '.join(ROLES)} (got {role!r})", f"{where}.role")
        content = _content(item.get("content"), f"{where}.content")
        if role == "tool":
            call_id = _text(item.get("tool_call_id"), f"{where}.tool_call_id")
            out.append(Message("tool", content, tool_call_id=call_id))
        elif role == "assistant":
            out.append(
                Message("assistant", content, tool_calls=_tool_calls(item.get("tool_calls"), where + ".tool_calls"))
            )
        else:
            out.append(Message(ROLES[role], content))
    return tuple(out)


def _response_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("response_format must be an object", "response_format", "invalid_type")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat("json_object")
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise invalid(
                "response_format.json_schema.schema must be a JSON schema object",
                "response_format.json_schema.schema",
                "invalid_type",
            )
        return ResponseFormat("json_schema", schema)
    raise invalid(
        f"response_format.type must be text, json_object or json_schema (got {kind!r})", "response_format.type"
    )


TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def map_tools(body: Mapping[str, Any]) -> tuple[tuple[dict[str, Any], ...], str | dict[str, Any], bool]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as ``ChatRequest`` takes them.
    Parallel calls are off unless asked for (as in llama-server: small models repeat a call)."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise invalid("parallel_tool_calls must be a boolean", "parallel_tool_calls", "invalid_type")
    if tools is None or tools == []:
        if choice not in (None, "none", "auto"):
            raise invalid("tool_choice names a tool, but the request has no tools", "tool_choice")
        return (), "auto", False
    if not isinstance(tools, list):
        raise invalid("tools must be an array", "tools", "invalid_type")
    names: list[str] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise invalid(f'{where} must be an object with "type": "function"', where, "invalid_type")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise invalid(f"{where}.function must be an object", f"{where}.function", "invalid_type")
        name = fn.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise invalid(f"{where}.function.name must be 1-64 letters, digits, _ or -", f"{where}.function.name")
        if name in names:
            raise invalid(f"{where}.function.name {name!r} is given twice", f"{where}.function.name")
        names.append(name)
        for key, kind in (("parameters", dict), ("description", str)):
            if fn.get(key) is not None and not isinstance(fn[key], kind):
                raise invalid(f"{where}.function.{key} has the wrong type", f"{where}.function.{key}", "invalid_type")
    if choice is None:
        choice = "auto"
    elif isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if choice.get("type") != "function" or name not in names:
            raise invalid(f"tool_choice must name one of the tools: {', '.join(names)}", "tool_choice")
        choice = {"type": "function", "function": {"name": name}}
    elif choice not in ("none", "auto", "required"):
        raise invalid("tool_choice must be none, auto, required or a named function", "tool_choice")
    return tuple(tools), choice, bool(parallel)


def parse_chat(body: Mapping[str, Any], defaults: SamplingParams) -> Generation:
    model = model_of(body)
    messages = _messages(body.get("messages"))
    sampling, given = _sampling(body, defaults)
    stream, include_usage = _stream_options(body)
    tools, tool_choice, parallel = map_tools(body)
    return Generation(
        model=model,
        sampling=sampling,
        max_tokens_given=given,
        stream=stream,
        include_usage=include_usage,
        messages=messages,
        response_format=_response_format(body.get("response_format")),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
    )


def parse_completion(body: Mapping[str, Any], defaults: SamplingParams) -> Generation:
    model = model_of(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise not_supported(
                "prompt must be one string (arrays of prompts or of token ids are not supported)", "prompt"
            )
        prompt = prompt[0]
    prompt = _text(prompt, "prompt", allow_empty=False)
    if body.get("suffix"):
        raise not_supported("suffix (fill-in-the-middle) is not supported", "suffix")
    if _bool(body, "echo"):
        raise not_supported("echo is not supported", "echo")
    sampling, given = _sampling(body, defaults)
    stream, include_usage = _stream_options(body)
    return Generation(model, sampling, given, stream, include_usage, prompt=prompt)


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[str, ...]
    base64: bool


def parse_embeddings(body: Mapping[str, Any]) -> EmbeddingRequest:
    model = model_of(body)
    value = body.get("input")
    if isinstance(value, str):
        inputs: tuple[str, ...] = (_text(value, "input", allow_empty=False),)
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) > MAX_EMBED_INPUTS:
            raise invalid(f"input holds at most {MAX_EMBED_INPUTS} strings (got {len(value)})", "input")
        inputs = tuple(_text(v, f"input[{i}]", allow_empty=False) for i, v in enumerate(value))
    elif isinstance(value, list) and value:
        raise not_supported("input must be a string or an array of strings (token ids are not supported)", "input")
    else:
        raise invalid("input must be a non-empty string or array of strings", "input", "invalid_type")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise invalid(f"encoding_format must be float or base64 (got {fmt!r})", "encoding_format")
    if body.get("dimensions") is not None:
        raise not_supported("dimensions is not supported: the model's own size is returned", "dimensions")
    return EmbeddingRequest(model, inputs, fmt == "base64")


# --- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage(done: Done) -> dict[str, Any]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def tool_calls(done: Done) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in done.tool_calls
    ]


def chat_completion(cid: str, created: int, model: str, done: Done) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": done.text, "refusal": None}
    if done.tool_calls:  # OpenAI's shape: content null when the answer is only calls
        message = {**message, "content": done.text or None, "tool_calls": tool_calls(done)}
    return {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": done.finish_reason,
            }
        ],
        "usage": usage(done),
    }


def text_completion(cid: str, created: int, model: str, done: Done) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": done.text, "logprobs": None, "finish_reason": done.finish_reason}],
        "usage": usage(done),
    }


class ChunkWriter:
    """The frames of one stream: one id, the role in the first delta, each later
    content delta held back by one so that ``finish_reason`` rides on the last content
    chunk (the first is sent at once: time to first token is not delayed), then the
    usage chunk with ``choices: []`` when asked for, then ``[DONE]``."""

    def __init__(self, model: str, chat: bool, include_usage: bool) -> None:
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())
        self.model = model
        self.chat = chat
        self.include_usage = include_usage
        self._held: str | None = None
        self._sent_content = False

    def _chunk(self, choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        # OpenAI's schema lets a chat chunk's usage be null until the last chunk; a completion
        # chunk has the completion's shape, where usage is an object or absent
        if self.include_usage and (self.chat or usage_value is not None):
            obj["usage"] = usage_value
        return frame(obj)

    def _choice(self, text: str | None, finish_reason: str | None, role: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def start(self) -> bytes:
        return self._chunk([self._choice("", None, role=True)]) if self.chat else b""

    def text(self, text: str) -> bytes:
        if not text:
            return b""
        if not self._sent_content:
            self._sent_content = True
            return self._chunk([self._choice(text, None)])
        held, self._held = self._held, text
        return self._chunk([self._choice(held, None)]) if held is not None else b""

    def tool_call(self, delta: ToolCallDelta) -> bytes:
        """A piece of a call, keyed by ``index``: id, type and name in its first delta, then
        argument text (the content held back goes out first)."""
        held, self._held = self._held, None
        out = self._chunk([self._choice(held, None)]) if held is not None else b""
        entry: dict[str, Any] = {"index": delta.index}
        if delta.id is not None:
            entry.update(id=delta.id, type="function", function={"name": delta.name, "arguments": delta.arguments})
        else:
            entry["function"] = {"arguments": delta.arguments}
        choice = {"index": 0, "delta": {"tool_calls": [entry]}, "logprobs": None, "finish_reason": None}
        return out + self._chunk([choice])

    def finish(self, done: Done) -> bytes:
        held, self._held = self._held, None
        out = self._chunk([self._choice(held if held is not None else None, done.finish_reason)])
        if self.include_usage:
            out += self._chunk([], usage(done))
        return out + DONE_FRAME

    def error(self, err: ApiError) -> bytes:
        """After the headers went out the status cannot change: the error is a data frame."""
        return frame(err.body()) + DONE_FRAME


def frame(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def embeddings(model: str, vectors: Sequence[Sequence[float]], as_base64: bool, prompt_tokens: int) -> dict[str, Any]:
    data = []
    for i, vector in enumerate(vectors):
        value: Any = list(vector)
        if as_base64:  # what the openai client asks for by default: little-endian float32
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_card(name: str, created: int, n_ctx: int) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "localassist",
        "meta": {"n_ctx": n_ctx, "kinds": []},
    }
