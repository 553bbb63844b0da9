"""What differs between the engines a remote backend talks to, one class per dialect:
llama-server, vLLM, Ollama, another ``localassist serve``, and any other
OpenAI-compatible server. A dialect says how its engine is recognised, where the
model list and context length come from, which sampling fields it takes, how its
stream is framed (server-sent events or Ollama's NDJSON), and its tokenizer and
embedding endpoints. ``RemoteBackend`` (``engine/remote.py``) keeps the HTTP, the
retries and the stream's life, and asks its dialect for the rest; it never compares
engine names. A new engine is one more class here, added to ``DIALECTS``.

Ollama is driven through its native ``/api/chat``, because its OpenAI endpoint cannot
set the context size and Ollama clips a longer prompt without an error: ``num_ctx``
is set from the prompt's size and ``truncate``/``shift`` are turned off.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, ClassVar

from localassist.engine.remote_errors import ServerError, error_for, parse_error_body
from localassist.engine.types import (
    ChatRequest,
    Event,
    Message,
    SamplingParams,
    StreamState,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from localassist.errors import (
    LocalAssistError,
    RemoteContextOverflowError,
    RemoteError,
    RemoteUnavailableError,
    UsageError,
)

if TYPE_CHECKING:
    from localassist.engine.remote import RemoteBackend, RemoteStream

OLLAMA_CTX_STEPS = 4096  # num_ctx grows in powers of two from here: fewer model reloads
_CTX_KEYS = ("context_length", "max_model_len", "n_ctx", "context_window", "max_context_length")

# how a dialect's stream becomes events: (the streamed HTTP response, the stream)
Parse = Callable[[Any, "RemoteStream"], Iterator[Event]]
_ASK = object()  # "the /v1/models listing was not fetched yet"


@dataclass
class Probe:
    """What connecting found out, cached per (URL, model) for the process."""

    kind: str  # the dialect's name, a key of DIALECTS
    model: str
    models: list[str]
    n_ctx: int | None
    ctx_source: str
    tokenizer: bool  # the server has llama-server's /tokenize
    seconds: float = 0.0


class Dialect:
    """The part of a remote engine's API that differs from the others. An instance
    serves one backend (``remote``) and uses its ``request_json`` for every call."""

    kind: ClassVar[str]
    grammar: ClassVar[bool] = False  # takes a GBNF grammar
    clips_silently: ClassVar[bool] = False  # clips a prompt past its context instead of refusing it

    def __init__(self, remote: RemoteBackend) -> None:
        self.remote = remote

    @classmethod
    def recognises(cls, remote: RemoteBackend, entries: list[dict[str, Any]]) -> bool:
        """Whether a server whose ``/v1/models`` lists ``entries`` speaks this dialect."""
        return False

    def probe(self, model: str | None, listing: Any = _ASK) -> Probe:
        """The model to use (``model``, or the server's only one), the models offered and
        the context length; ``listing`` is ``/v1/models``'s answer when detection fetched it."""
        raise NotImplementedError

    def list_models(self) -> list[dict[str, Any]]:
        """What the server offers: id, context length (where it says), owner."""
        raise NotImplementedError

    def chat_request(self, request: ChatRequest, estimate: int) -> tuple[str, dict[str, Any], Parse]:
        """The path and body to POST for ``request`` (``estimate``: its prompt tokens, by
        the conservative count), and how to read the streamed answer."""
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> Any:
        """The server's vectors for ``texts`` (checked by the caller)."""
        raise NotImplementedError

    def tokenize_messages(self, messages: list[dict[str, Any]]) -> Any:
        """The ``/tokenize`` answer for a prompt of ``messages`` as the server renders it
        (None where it cannot)."""
        return None

    def _refuse_grammar(self, request: ChatRequest, name: str) -> None:
        if request.grammar is not None and not self.grammar:
            raise UsageError(f"{self.remote.where} ({name}) does not take a GBNF grammar; use --json-schema")


# --- OpenAI-compatible engines


class OpenAICompatible(Dialect):
    """Any server of the OpenAI API: ``/v1/models``, streamed ``/v1/chat/completions``
    and ``/v1/completions``, ``/v1/embeddings``, and only the OpenAI sampling fields."""

    kind = "openai-compatible"
    single_model: ClassVar[bool] = False  # serves its one model under whatever name is asked

    def probe(self, model: str | None, listing: Any = _ASK) -> Probe:
        remote = self.remote
        if listing is _ASK:
            listing = remote.request_json("GET", "/v1/models", quiet_404=True)
        if listing is None:
            raise RemoteUnavailableError(f"{remote.where} has no /v1/models: is it an OpenAI-compatible server?")
        entries = _entries(listing)
        ids = [str(e["id"]) for e in entries]
        chosen = remote.choose(model, ids, single_model=self.single_model)
        entry = next((e for e in entries if e["id"] == chosen), {})
        n_ctx, source = self.context_length(entry)
        tokenizer = self.has_tokenizer(chosen)
        return Probe(self.kind, chosen, ids, n_ctx, source if n_ctx else "unknown", tokenizer)

    def context_length(self, entry: dict[str, Any]) -> tuple[int | None, str]:
        """The chosen model's context length and where it was read."""
        return _ctx_of(entry), "/v1/models"

    def has_tokenizer(self, model: str) -> bool:
        return False

    def list_models(self) -> list[dict[str, Any]]:
        listing = self.remote.request_json("GET", "/v1/models") or {}
        return [
            {"id": e.get("id"), "context_length": self.listed_context(e), "owned_by": e.get("owned_by")}
            for e in listing.get("data", [])
        ]

    def listed_context(self, entry: dict[str, Any]) -> int | None:
        return _ctx_of(entry)

    def sampling(self, p: SamplingParams) -> dict[str, Any]:
        """The sampling fields beyond the OpenAI API's that this engine takes."""
        return {}

    def chat_request(self, request: ChatRequest, estimate: int) -> tuple[str, dict[str, Any], Parse]:
        p = request.sampling
        body: dict[str, Any] = {"model": self.remote.model, "stream": True, "stream_options": {"include_usage": True}}
        body.update(temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens)
        if p.seed >= 0:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        body.update(self.sampling(p))
        self._refuse_grammar(request, self.kind)
        if request.grammar is not None:
            body["grammar"] = request.grammar
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": fmt.schema or {}, "strict": True},
            }
        elif fmt is not None and fmt.type == "json_object":
            body["response_format"] = {"type": "json_object"}
        if request.raw:
            body["prompt"] = request.prompt
            return "/v1/completions", body, self.parse
        body["messages"] = [m.as_openai() for m in request.messages]
        if request.tools:
            body["tools"] = list(request.tools)
            body["tool_choice"] = request.tool_choice
        return "/v1/chat/completions", body, self.parse

    def parse(self, response: Any, stream: RemoteStream) -> Iterator[Event]:
        """Server-sent events of chunks (text or tool-call pieces per choice, usage last)
        up to ``[DONE]``; an error event or body mid-stream is raised."""
        remote, state = self.remote, stream.state
        deltas = Deltas(state)
        reason: str | None = None
        for event, data in sse_events(response.iter_lines()):
            if stream.cancelled:
                return
            if data.strip() == "[DONE]":
                reason = reason or ("tool_calls" if deltas.calls else "stop")
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                if event == "error":
                    raise error_for(None, ServerError(data), remote.where, remote.key_hint) from None
                raise RemoteError(f"{remote.where} sent an event that is not JSON: {data[:80]!r}") from None
            problem = parse_error_body(chunk) if isinstance(chunk, dict) else None
            if problem is not None or event == "error":
                raise error_for(None, problem or ServerError(str(chunk)), remote.where, remote.key_hint)
            if not isinstance(chunk, dict):
                continue
            if chunk.get("truncated"):  # llama-server: the prompt was cut to fit (context shift)
                raise RemoteContextOverflowError(
                    f"{remote.where} truncated the prompt to fit its context; the answer would not be about "
                    "the whole input. Shorten the input or lower --max-tokens"
                )
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                _apply_usage(state, usage)
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                text = delta.get("content") if "delta" in choice else choice.get("text")
                if text:
                    yield deltas.text(text)
                for call in delta.get("tool_calls") or []:
                    function = call.get("function") or {}
                    index = int(call.get("index", len(deltas.calls)))
                    yield deltas.call(index, call.get("id"), function.get("name"), function.get("arguments") or "")
                reason = _openai_reason(choice.get("finish_reason")) or reason
        deltas.finish(reason)

    def embed(self, texts: Sequence[str]) -> Any:
        body = self.remote.request_json("POST", "/v1/embeddings", {"model": self.remote.model, "input": list(texts)})
        data = sorted((body or {}).get("data", []), key=lambda d: d.get("index", 0))
        return [d.get("embedding") for d in data]


class LlamaServer(OpenAICompatible):
    """llama.cpp's llama-server: one model whatever it is called, the context length in
    ``/props``, llama.cpp's samplers, GBNF grammars, and ``/apply-template`` and
    ``/tokenize`` for exact counts."""

    kind = "llama.cpp"
    grammar = True
    single_model = True

    @classmethod
    def recognises(cls, remote: RemoteBackend, entries: list[dict[str, Any]]) -> bool:
        return "llamacpp" in _owners(entries)

    def context_length(self, entry: dict[str, Any]) -> tuple[int | None, str]:
        props = self.remote.request_json("GET", "/props", quiet_404=True) or {}
        settings = props.get("default_generation_settings") or {}
        return _int(settings.get("n_ctx")) or _int(props.get("n_ctx")), "/props"

    def has_tokenizer(self, model: str) -> bool:
        return True

    def listed_context(self, entry: dict[str, Any]) -> int | None:
        remote = self.remote
        return remote.probe.n_ctx if entry.get("id") == remote.model else _ctx_of(entry)

    def sampling(self, p: SamplingParams) -> dict[str, Any]:
        return _llama_sampling(p)

    def tokenize_messages(self, messages: list[dict[str, Any]]) -> Any:
        """The rendered prompt, tokenized: message text that looks like a control token
        (a pasted ``<|im_end|>``) counts as that one token, as the server will see it."""
        remote = self.remote
        rendered = remote.request_json(
            "POST", "/apply-template", {"messages": messages, "model": remote.model}, quiet_404=True
        )
        prompt = rendered.get("prompt") if isinstance(rendered, dict) else None
        if not isinstance(prompt, str):
            return None
        asked = {"content": prompt, "add_special": True, "parse_special": True, "model": remote.model}
        return remote.request_json("POST", "/tokenize", asked, quiet_404=True)


class LocalAssist(OpenAICompatible):
    """Another ``localassist serve``: several models, each with its context length in
    ``/v1/models``; llama.cpp's samplers; ``/tokenize`` takes messages and counts them
    exactly as its chat endpoint evaluates them (where the server has the tokenizer)."""

    kind = "localassist"

    @classmethod
    def recognises(cls, remote: RemoteBackend, entries: list[dict[str, Any]]) -> bool:
        return "localassist" in _owners(entries)

    def has_tokenizer(self, model: str) -> bool:
        """Whether the server answers ``/tokenize`` (asked once, with no text)."""
        body = self.remote.request_json("POST", "/tokenize", {"content": "", "model": model}, quiet_404=True)
        return isinstance(body, dict) and isinstance(body.get("tokens"), list)

    def sampling(self, p: SamplingParams) -> dict[str, Any]:
        return _llama_sampling(p)

    def tokenize_messages(self, messages: list[dict[str, Any]]) -> Any:
        remote = self.remote
        return remote.request_json("POST", "/tokenize", {"messages": messages, "model": remote.model}, quiet_404=True)


class VLLM(OpenAICompatible):
    """vLLM: ``max_model_len`` in ``/v1/models``, its own names for the samplers."""

    kind = "vllm"

    @classmethod
    def recognises(cls, remote: RemoteBackend, entries: list[dict[str, Any]]) -> bool:
        return "vllm" in _owners(entries) or any("max_model_len" in e for e in entries)

    def sampling(self, p: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "top_k": p.top_k if p.top_k > 0 else -1,
            "min_p": p.min_p,
            "repetition_penalty": p.repeat_penalty,
        }
        if p.ignore_eos:
            body["ignore_eos"] = True
        return body


# --- Ollama's native API


class Ollama(Dialect):
    """Ollama, through ``/api/tags``, ``/api/show``, ``/api/chat`` (NDJSON) and
    ``/api/embed``: ``num_ctx`` set per request from the prompt's estimate, and a
    prompt that may not fit refused before it is sent, since Ollama would clip it."""

    kind = "ollama"
    clips_silently = True

    @classmethod
    def recognises(cls, remote: RemoteBackend, entries: list[dict[str, Any]]) -> bool:
        """Its OpenAI listing does not say, so ask ``/api/version``."""
        try:
            version = remote.request_json("GET", "/api/version", quiet_404=True)
        except LocalAssistError:
            return False
        return isinstance(version, dict) and "version" in version

    def probe(self, model: str | None, listing: Any = _ASK) -> Probe:
        remote = self.remote
        tags = remote.request_json("GET", "/api/tags") or {}
        ids = [str(m.get("name") or m.get("model")) for m in tags.get("models", []) if isinstance(m, dict)]
        if model and ":" not in model and f"{model}:latest" in ids:
            model = f"{model}:latest"  # as Ollama itself resolves a bare name
        chosen = remote.choose(model, ids)
        n_ctx = self._context_length(chosen) if chosen else None
        return Probe(self.kind, chosen, ids, n_ctx, "/api/show" if n_ctx else "unknown", False)

    def _context_length(self, model: str) -> int | None:
        shown = self.remote.request_json("POST", "/api/show", {"model": model}) or {}
        info = shown.get("model_info") or {}
        return next((_int(v) for k, v in info.items() if k.endswith(".context_length")), None)

    def list_models(self) -> list[dict[str, Any]]:
        return [
            {"id": model, "context_length": self._context_length(model), "owned_by": "ollama"}
            for model in self.remote.probe.models
        ]

    def chat_request(self, request: ChatRequest, estimate: int) -> tuple[str, dict[str, Any], Parse]:
        remote = self.remote
        p = request.sampling
        need = estimate + p.max_tokens + 1
        limit = remote.n_ctx
        if need > limit:
            raise RemoteContextOverflowError(
                f"the input may not fit the context of {remote.spec}: about {estimate:,} prompt tokens "
                f"(estimated: Ollama has no tokenizer endpoint) + {p.max_tokens:,} max tokens > {limit:,}. "
                "Ollama would clip the prompt without an error, so it was not sent; shorten the input or lower "
                "--max-tokens" + ("" if remote.user_ctx else ", or raise --ctx")
            )
        num_ctx = remote.user_ctx if remote.user_ctx else min(limit, _ladder(need))
        options: dict[str, Any] = {
            "num_ctx": num_ctx,
            "num_predict": p.max_tokens,
            "temperature": p.temperature,
            "top_k": p.top_k,
            "top_p": p.top_p,
            "min_p": p.min_p,
            "repeat_penalty": p.repeat_penalty,
        }
        if p.seed >= 0:
            options["seed"] = p.seed
        if p.stop:
            options["stop"] = list(p.stop)
        # truncate/shift off: Ollama >= 0.12 then answers an error instead of clipping
        body: dict[str, Any] = {"model": remote.model, "stream": True, "options": options}
        body.update(truncate=False, shift=False)
        self._refuse_grammar(request, "Ollama")
        fmt = request.response_format
        if fmt is not None and fmt.type != "text":
            body["format"] = fmt.schema if fmt.type == "json_schema" and fmt.schema else "json"
        parse = lambda response, stream: self.parse(response, stream, num_ctx)  # noqa: E731
        if request.raw:
            body.update(prompt=request.prompt, raw=True)
            return "/api/generate", body, parse
        body["messages"] = [_ollama_message(m) for m in request.messages]
        if request.tools:
            body["tools"] = list(request.tools)
        return "/api/chat", body, parse

    def parse(self, response: Any, stream: RemoteStream, num_ctx: int) -> Iterator[Event]:
        """One JSON object a line: text (or whole tool calls) until ``done``, which
        carries the counts; a context filled to the brim is an error (it may be clipped)."""
        remote, state = self.remote, stream.state
        deltas = Deltas(state)
        for line in response.iter_lines():
            if stream.cancelled:
                return
            if not line.strip():
                continue
            try:
                chunk = json.loads(line)
            except ValueError:
                raise RemoteError(f"{remote.where} sent a line that is not JSON: {line[:80]!r}") from None
            problem = parse_error_body(chunk)
            if problem is not None:
                raise error_for(None, problem, remote.where, remote.key_hint)
            message = chunk.get("message") or {}
            text = message.get("content") if "message" in chunk else chunk.get("response")
            if text:
                yield deltas.text(text)
            for call in message.get("tool_calls") or []:  # each comes whole, its arguments an object
                function = call.get("function") or {}
                arguments = function.get("arguments")
                arguments = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
                index = len(deltas.calls)
                yield deltas.call(index, call.get("id") or f"call_{index}", function.get("name"), arguments)
            if chunk.get("done"):
                prompt = _int(chunk.get("prompt_eval_count"))
                completion = _int(chunk.get("eval_count"))
                if prompt is not None:
                    state.prompt_tokens = prompt
                if completion is not None:
                    state.completion_tokens = completion
                if (prompt or 0) + (completion or 0) >= num_ctx:
                    raise RemoteContextOverflowError(
                        f"{remote.where} filled its whole context (num_ctx {num_ctx:,}: {prompt} prompt + "
                        f"{completion} answer tokens): Ollama may have clipped the prompt or the answer. "
                        "Shorten the input, lower --max-tokens or raise --ctx"
                    )
                reason = chunk.get("done_reason") or "stop"
                deltas.finish("tool_calls" if deltas.calls else ("length" if reason == "length" else "stop"))
                return

    def embed(self, texts: Sequence[str]) -> Any:
        """``/api/embed`` with ``truncate`` off, so a long text is an error rather than cut."""
        remote = self.remote
        body = remote.request_json(
            "POST", "/api/embed", {"model": remote.model, "input": list(texts), "truncate": False}
        )
        return (body or {}).get("embeddings")


# Detection asks in this order; a server none of them recognises is OpenAICompatible.
DIALECTS: dict[str, type[Dialect]] = {d.kind: d for d in (LlamaServer, LocalAssist, VLLM, Ollama, OpenAICompatible)}


def detect(remote: RemoteBackend, listing: Any) -> type[Dialect]:
    """The dialect of a server whose ``/v1/models`` answered ``listing`` (None: 404)."""
    entries = _entries(listing)
    return next((d for d in DIALECTS.values() if d.recognises(remote, entries)), OpenAICompatible)


def dialect_named(kind: str) -> type[Dialect]:
    if kind not in DIALECTS:
        raise UsageError(f"unknown server kind {kind!r} (known: {', '.join(DIALECTS)})")
    return DIALECTS[kind]


# --- a stream's pieces, whatever its framing


@dataclass
class _Call:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class Deltas:
    """One answer as its pieces arrive, from server-sent events or NDJSON alike: text is
    counted (one token a piece until the server's count says), timed and passed on; tool
    calls are joined by index and go into the stream's state when the answer finishes."""

    def __init__(self, state: StreamState) -> None:
        self.state = state
        self.calls: dict[int, _Call] = {}

    def text(self, text: str) -> TextDelta:
        state = self.state
        if state.t_first is None:
            state.t_first = perf_counter()
        state.parts.append(text)
        state.completion_tokens += 1
        return TextDelta(text)

    def call(self, index: int, call_id: str | None, name: str | None, arguments: str) -> ToolCallDelta:
        builder = self.calls.setdefault(index, _Call())
        builder.id = builder.id or call_id
        builder.name += name or ""
        builder.arguments.append(arguments)
        if self.state.t_first is None:
            self.state.t_first = perf_counter()
        return ToolCallDelta(index, call_id, name, arguments)

    def finish(self, reason: str | None) -> None:
        """The answer ended for ``reason`` (None: the server never said); a "stop" with
        tool calls is a tool-call answer."""
        state = self.state
        state.finish_reason = reason
        for index in sorted(self.calls):
            call = self.calls[index]
            state.tool_calls.append(ToolCall(call.id or f"call_{index}", call.name, "".join(call.arguments)))
        if state.tool_calls and state.finish_reason == "stop":
            state.finish_reason = "tool_calls"


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str | None, str]]:
    """(event name, data) per server-sent event: ``data:`` lines joined, ``:`` comments
    (pings) skipped. llama.cpp's old non-standard ``error:`` field comes out as an "error" event."""
    data: list[str] = []
    event: str | None = None
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            data, event = [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "error":
            yield "error", value
    if data:
        yield event, "\n".join(data)


# --- helpers


def _llama_sampling(p: SamplingParams) -> dict[str, Any]:
    """llama.cpp's samplers, as llama-server and localassist serve take them."""
    body: dict[str, Any] = {"top_k": p.top_k, "min_p": p.min_p, "repeat_penalty": p.repeat_penalty}
    if p.ignore_eos:
        body["ignore_eos"] = True
    return body


def _openai_reason(reason: str | None) -> str | None:
    """An OpenAI ``finish_reason`` as one of stop, length, tool_calls (None: not finished)."""
    if not reason:
        return None
    reason = {"function_call": "tool_calls", "content_filter": "stop"}.get(reason, reason)
    return reason if reason in ("stop", "length", "tool_calls") else "stop"


def _entries(listing: Any) -> list[dict[str, Any]]:
    return [e for e in (listing or {}).get("data", []) if isinstance(e, dict) and e.get("id")]


def _owners(entries: list[dict[str, Any]]) -> set[str]:
    return {str(e.get("owned_by", "")).lower() for e in entries}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _ctx_of(entry: dict[str, Any]) -> int | None:
    for key in _CTX_KEYS:
        if _int(entry.get(key)):
            return entry[key]
    meta = entry.get("meta")
    return _int(meta.get("n_ctx")) if isinstance(meta, dict) else None


def _ladder(need: int) -> int:
    """The smallest power-of-two step >= ``need``: a new num_ctx reloads the model, so
    it changes in few steps."""
    return max(OLLAMA_CTX_STEPS, 1 << math.ceil(math.log2(need)))


def _apply_usage(state: StreamState, usage: dict[str, Any]) -> None:
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int):
        state.prompt_tokens = prompt
    if isinstance(completion, int):
        state.completion_tokens = completion
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if isinstance(cached, int):
        state.cached_tokens = cached


def _ollama_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": _loads_or_text(c.arguments)}} for c in message.tool_calls
        ]
    if message.role == "tool" and message.name:
        out["tool_name"] = message.name
    return out


def _loads_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
