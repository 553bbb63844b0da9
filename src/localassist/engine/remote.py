"""The remote backend: a model served by llama-server, vLLM, Ollama, another
``localassist serve`` or any OpenAI-compatible engine, over HTTP (httpx, imported here).

Connecting probes the server once per process: which engine it is, the model, and its
context length (llama-server ``/props``, vLLM's ``max_model_len``, Ollama ``/api/show``,
localassist's ``/v1/models``), else ``--ctx``, else an assumption said in a notice.
Generation streams server-sent events (``/v1/chat/completions``, ``/v1/completions``);
Ollama is driven through its native ``/api/chat`` instead, because its OpenAI endpoint
cannot set the context size and Ollama clips a longer prompt without an error: here
``num_ctx`` is set from the prompt's size and ``truncate``/``shift`` are turned off.

Every error dialect becomes a localassist error (see ``engine/wire.py``); 429 and 503
are retried after ``Retry-After`` (bounded), with a notice through ``notify``; nothing
here prints. ``ChatStream.cancel()`` shuts the connection's socket, from any thread,
so the server sees the client go and stops generating.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from time import perf_counter, sleep, time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from localassist.engine.detokenize import NATURAL_END, IncrementalDetokenizer
from localassist.engine.structured import answer_check
from localassist.engine.types import (
    BackendInfo,
    ChatRequest,
    ChatStream,
    Done,
    Event,
    Message,
    StreamState,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from localassist.engine.wire import (
    ServerError,
    error_for,
    estimate_messages,
    estimate_tokens,
    parse_error_body,
    parse_error_text,
    sse_events,
)
from localassist.errors import (
    LocalAssistError,
    RemoteAuthError,
    RemoteContextOverflowError,
    RemoteError,
    RemoteUnavailableError,
    UsageError,
)
from localassist.urls import is_loopback, normalize_url, plain_http_elsewhere

if TYPE_CHECKING:
    import httpx

ASSUMED_CTX = 4096  # when neither the server nor the user says
OLLAMA_CTX_STEPS = 4096  # num_ctx grows in powers of two from here: fewer model reloads
MAX_RETRIES = 3
MAX_WAIT_S = 30.0  # the longest Retry-After honoured; a server asking more gets an error

# engines, as detected
LLAMA_CPP, VLLM, OLLAMA, LOCALASSIST, OPENAI = "llama.cpp", "vllm", "ollama", "localassist", "openai-compatible"
_CTX_KEYS = ("context_length", "max_model_len", "n_ctx", "context_window", "max_context_length")


@dataclass
class Probe:
    """What connecting found out, cached per (URL, model) for the process."""

    kind: str
    model: str
    models: list[str]
    n_ctx: int | None
    ctx_source: str
    tokenizer: bool  # the server has llama-server's /tokenize and /apply-template
    seconds: float


_PROBES: dict[tuple[str, str | None, str | None], Probe] = {}
_PROBES_LOCK = threading.Lock()


@dataclass
class _Call:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class RemoteStream(ChatStream):
    """A stream whose ``cancel()`` also shuts the connection (from any thread): a server
    still evaluating the prompt or generating sees the client go and stops."""

    def __init__(
        self,
        state: StreamState,
        produce: Callable[[ChatStream], Iterator[Event]],
        check: Callable[[Done], None] | None = None,
    ) -> None:
        self._sockets: list[socket.socket] = []
        super().__init__(state, produce, check)

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's ``trace`` extension: keep the connection's socket as it is opened."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                self._sockets.append(sock)
                if self.cancelled:
                    self._shut()

    def _shut(self) -> None:
        for sock in self._sockets:
            with suppress(OSError):  # already closed
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        super().cancel()
        self._shut()


class RemoteBackend:
    """A model on a server. ``url`` is the server's base (``/v1`` optional); ``model``
    the server's id for it (None: the server's only model). ``name`` is the remote's
    name (``gpu-box``), shown with the model. The API key comes from the environment
    variable ``key_env`` and is sent as a bearer token. ``kind`` skips detection
    (``ollama`` for the built-in name). ``notify`` receives one-line notices (retries,
    assumptions, plain HTTP)."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        name: str | None = None,
        key_env: str | None = None,
        ctx: int | None = None,
        kind: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        retries: int = MAX_RETRIES,
        max_wait: float = MAX_WAIT_S,
        notify: Callable[[str], None] | None = None,
        choose_model: bool = True,
    ) -> None:
        """``choose_model=False``: only connect (to list what the server offers)."""
        import httpx

        self.url = normalize_url(url)
        self.name = name
        self.key_env = key_env
        self.where = f"{name} ({self.url})" if name else self.url
        self.notify = notify or (lambda _line: None)
        self.retries = retries
        self.max_wait = max_wait
        self.timeout = timeout
        self._choosing = choose_model
        # one id per backend (a chat session, a command): a load balancer can route on it
        # so one conversation stays on one replica and its KV prefix cache is reused
        self.session_id = secrets.token_hex(8)
        headers = {"Accept": "application/json"}
        if key_env:
            key = os.environ.get(key_env, "").strip()
            if not key:
                raise RemoteAuthError(f"{key_env} is not set: it holds the API key for {self.where}")
            headers["Authorization"] = f"Bearer {key}"
        self.plain_http = plain_http_elsewhere(self.url)
        self._warned_plain = False
        # loopback never goes through a proxy from the environment
        common = {
            "base_url": self.url,
            "timeout": httpx.Timeout(timeout, connect=connect_timeout),
            "headers": headers,
            "trust_env": not is_loopback(self.url),
        }
        self._client = httpx.Client(**common)
        # streams get a connection of their own (no keep-alive), so cancel() can shut its socket
        self._stream_client = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), **common)
        self._httpx = httpx
        start = perf_counter()
        try:
            self.probe = self._probe(model, kind)
        except BaseException:
            self.close()
            raise
        self.load_seconds = perf_counter() - start
        self.model = self.probe.model
        self.spec = f"{name or urlsplit(self.url).netloc}:{self.model}"  # as typed after -m
        # how the model is shown everywhere (the REPL, stats, the log's model column, /show)
        self.model_name = f"{self.spec} (remote)"
        self.user_ctx = ctx
        if self.probe.n_ctx is None:
            self.n_ctx = ctx or ASSUMED_CTX
            if ctx is None and choose_model:
                self.notify(
                    f"the context length of {self.spec} is unknown ({self.where} does not report it): "
                    f"assuming {ASSUMED_CTX:,} tokens; pass --ctx N to use more"
                )
        else:
            self.n_ctx = min(ctx, self.probe.n_ctx) if ctx else self.probe.n_ctx
        self._tokenizer = self.probe.tokenizer

    # --- names

    @property
    def key_hint(self) -> str:
        if self.key_env:
            return f"check the key in {self.key_env}"
        return "give the key's variable with --api-key-env VAR (or `localassist remote add NAME URL --key-env VAR`)"

    # --- HTTP

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        stream: RemoteStream | None = None,
        quiet_404: bool = False,
    ) -> httpx.Response | None:
        """Send one request, retrying 429/503 after Retry-After; the response when it
        succeeded (streamed when ``stream`` is given; the caller closes it), None on a 404
        with ``quiet_404`` or when ``stream`` was cancelled while waiting."""
        httpx = self._httpx
        client = self._stream_client if stream is not None else self._client
        for attempt in range(self.retries + 1):
            extensions = {"trace": stream.trace} if stream is not None else {}
            headers = {"X-Session-Id": self.session_id} if stream is not None else {}
            request = client.build_request(method, path, json=body, headers=headers, extensions=extensions)
            try:
                response = client.send(request, stream=stream is not None)
            except httpx.ConnectTimeout:
                raise RemoteUnavailableError(f"cannot reach {self.where}: no answer to connect") from None
            except httpx.ConnectError as exc:
                raise RemoteUnavailableError(f"cannot reach {self.where}: {_reason(exc)}") from None
            except httpx.TimeoutException:
                raise RemoteError(f"{self.where} sent nothing for {self.timeout:g} s ({method} {path})") from None
            except httpx.HTTPError as exc:
                if stream is not None and stream.cancelled:
                    return None
                raise RemoteError(f"{self.where}: {method} {path} failed: {_reason(exc)}") from None
            if response.status_code < 400:
                return response
            text = response.read().decode("utf-8", "replace")
            response.close()
            status = response.status_code
            if status == 404 and quiet_404:
                return None
            if status in (429, 503) and attempt < self.retries:
                wait = _retry_after(response.headers, attempt)
                if wait > self.max_wait:
                    raise RemoteError(
                        f"{self.where} is busy (HTTP {status}) and asks to wait {wait:.0f} s; try again later"
                    )
                self.notify(
                    f"{self.where} is busy (HTTP {status}); retrying in {wait:.3g} s ({attempt + 1}/{self.retries})"
                )
                if stream is not None:
                    if stream._cancel.wait(wait):
                        return None
                else:
                    sleep(wait)
                continue
            raise error_for(status, parse_error_text(text), self.where, self.key_hint)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _json(self, method: str, path: str, body: Any = None, *, quiet_404: bool = False) -> Any:
        response = self._request(method, path, body, quiet_404=quiet_404)
        if response is None:
            return None
        try:
            return response.json()
        except ValueError:
            raise RemoteError(f"{self.where}: {path} did not answer with JSON") from None

    # --- probe

    def _probe(self, model: str | None, kind: str | None) -> Probe:
        key = (self.url, model, kind)
        with _PROBES_LOCK:
            if key in _PROBES and self._choosing:
                return _PROBES[key]
        start = perf_counter()
        probe = self._probe_ollama(model, start) if kind == OLLAMA else self._probe_openai(model, kind, start)
        if self._choosing:
            with _PROBES_LOCK:
                _PROBES[key] = probe
        return probe

    def _probe_openai(self, model: str | None, kind: str | None, start: float) -> Probe:
        listing = self._json("GET", "/v1/models", quiet_404=True)
        entries = [e for e in (listing or {}).get("data", []) if isinstance(e, dict) and e.get("id")]
        owners = {str(e.get("owned_by", "")).lower() for e in entries}
        if kind is None:
            if "llamacpp" in owners:
                kind = LLAMA_CPP
            elif "localassist" in owners:
                kind = LOCALASSIST
            elif "vllm" in owners or any("max_model_len" in e for e in entries):
                kind = VLLM
            elif self._is_ollama():
                return self._probe_ollama(model, start)
            else:
                kind = OPENAI
        if listing is None:
            raise RemoteUnavailableError(f"{self.where} has no /v1/models: is it an OpenAI-compatible server?")
        ids = [str(e["id"]) for e in entries]
        chosen = self._choose(model, ids, single_model=kind == LLAMA_CPP)
        entry = next((e for e in entries if e["id"] == chosen), {})
        n_ctx, source = _ctx_of(entry), "/v1/models"
        if kind == LLAMA_CPP:
            props = self._json("GET", "/props", quiet_404=True) or {}
            settings = props.get("default_generation_settings") or {}
            n_ctx, source = _int(settings.get("n_ctx")) or _int(props.get("n_ctx")), "/props"
        tokenizer = kind == LLAMA_CPP or (kind == LOCALASSIST and self._has_tokenizer(chosen))
        return Probe(kind, chosen, ids, n_ctx, source if n_ctx else "unknown", tokenizer, perf_counter() - start)

    def _has_tokenizer(self, model: str) -> bool:
        """Whether the server answers llama-server's ``/tokenize`` (asked once, with no text)."""
        body = self._json("POST", "/tokenize", {"content": "", "model": model}, quiet_404=True)
        return isinstance(body, dict) and isinstance(body.get("tokens"), list)

    def _is_ollama(self) -> bool:
        try:
            version = self._json("GET", "/api/version", quiet_404=True)
        except LocalAssistError:
            return False
        return isinstance(version, dict) and "version" in version

    def _probe_ollama(self, model: str | None, start: float) -> Probe:
        tags = self._json("GET", "/api/tags") or {}
        ids = [str(m.get("name") or m.get("model")) for m in tags.get("models", []) if isinstance(m, dict)]
        if model and ":" not in model and f"{model}:latest" in ids:
            model = f"{model}:latest"  # as Ollama itself resolves a bare name
        chosen = self._choose(model, ids)
        shown = (self._json("POST", "/api/show", {"model": chosen}) or {}) if chosen else {}
        info = shown.get("model_info") or {}
        n_ctx = next((_int(v) for k, v in info.items() if k.endswith(".context_length")), None)
        return Probe(OLLAMA, chosen, ids, n_ctx, "/api/show" if n_ctx else "unknown", False, perf_counter() - start)

    def _choose(self, model: str | None, ids: list[str], single_model: bool = False) -> str:
        if not self._choosing:
            return model or (ids[0] if ids else "")
        if model and (model in ids or (single_model and len(ids) <= 1)):
            return model  # llama-server serves its one model whatever it is called
        if model:
            offered = ", ".join(ids) or "none"
            raise RemoteUnavailableError(f"{self.where} has no model '{model}' (it offers: {offered})")
        if len(ids) == 1:
            return ids[0]
        if not ids:
            raise RemoteUnavailableError(f"{self.where} offers no model")
        label = self.name or "--base-url URL -m"
        raise UsageError(f"{self.where} offers several models ({', '.join(ids)}); name one: -m {label}:MODEL")

    def list_models(self) -> list[dict[str, Any]]:
        """What the server offers: id, context length (where it says), owner."""
        if self.probe.kind == OLLAMA:
            out = []
            for model_id in self.probe.models:
                shown = self._json("POST", "/api/show", {"model": model_id}) or {}
                info = shown.get("model_info") or {}
                ctx = next((_int(v) for k, v in info.items() if k.endswith(".context_length")), None)
                out.append({"id": model_id, "context_length": ctx, "owned_by": "ollama"})
            return out
        listing = self._json("GET", "/v1/models") or {}
        out = []
        for entry in listing.get("data", []):
            ctx = _ctx_of(entry)
            if self.probe.kind == LLAMA_CPP and entry.get("id") == self.model:
                ctx = self.probe.n_ctx
            out.append({"id": entry.get("id"), "context_length": ctx, "owned_by": entry.get("owned_by")})
        return out

    # --- tokens

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """The server's token ids (llama-server's ``/tokenize``); on a server without one,
        placeholder ids as many as the conservative estimate (``exact_tokens`` is False).
        ``model`` goes along for a server of several models (localassist serve)."""
        if self._tokenizer:
            body = self._json(
                "POST",
                "/tokenize",
                {"content": text, "add_special": False, "parse_special": special, "model": self.model},
                quiet_404=True,
            )
            if isinstance(body, dict) and isinstance(body.get("tokens"), list):
                return [t if isinstance(t, int) else int(t.get("id", 0)) for t in body["tokens"]]
            self._tokenizer = False
        return [0] * estimate_tokens(text)

    @property
    def exact_tokens(self) -> bool:
        return self._tokenizer

    @property
    def clips_silently(self) -> bool:
        """Ollama: a prompt past its context is clipped, not refused, so an estimate over
        the context refuses here (``chat``) and documents are fitted to it as to a count."""
        return self.probe.kind == OLLAMA

    def count(self, messages: Sequence[Message]) -> int:
        """Prompt tokens of ``messages``: rendered by the server's template and counted by
        its tokenizer where it has them, else the conservative estimate. localassist serve
        tokenizes the messages in one call, exactly as its chat endpoint evaluates them;
        llama-server's rendered text is tokenized, which counts message text that looks
        like a control token (a pasted ``<|im_end|>``) as that one token."""
        if self._tokenizer and messages:
            wanted = [m.as_openai() for m in messages]
            if self.probe.kind == LOCALASSIST:
                body = self._json("POST", "/tokenize", {"messages": wanted, "model": self.model}, quiet_404=True)
            else:
                rendered = self._json(
                    "POST", "/apply-template", {"messages": wanted, "model": self.model}, quiet_404=True
                )
                prompt = rendered.get("prompt") if isinstance(rendered, dict) else None
                body = None
                if isinstance(prompt, str):
                    asked = {"content": prompt, "add_special": True, "parse_special": True, "model": self.model}
                    body = self._json("POST", "/tokenize", asked, quiet_404=True)
            if isinstance(body, dict) and isinstance(body.get("tokens"), list):
                return len(body["tokens"])
            self._tokenizer = False
        return estimate_messages([m.content for m in messages])

    # --- generation

    def chat(self, request: ChatRequest) -> ChatStream:
        """The stream; the request is sent when it is first iterated (so Ctrl-C and
        ``cancel()`` behave as with a local model). Refusals that need no server (a
        grammar the engine cannot take, a prompt Ollama would clip) are raised here."""
        if request.prompt is None and not request.messages:
            raise UsageError("nothing to generate from: no messages and no prompt")
        if self.plain_http and not self._warned_plain:
            self._warned_plain = True
            self.notify(f"sending to {self.url} over plain HTTP: the prompt and answer are not encrypted")
        contents = [request.prompt] if request.prompt is not None else [m.content for m in request.messages]
        estimate = estimate_messages(contents)
        if self.probe.kind == OLLAMA:
            path, body, parse = self._ollama_request(request, estimate)
        else:
            path, body, parse = self._openai_request(request)
        # A raw completion's blank-line end is applied here, not sent as a stop: a server
        # would stop at a blank line even before any text.
        p = request.sampling
        natural = request.raw and p.natural_end and not p.stop
        state = StreamState(self.model_name, estimate, load_s=self.load_seconds)
        check = answer_check(request)  # the remote engine's answer is validated like a local one
        return RemoteStream(state, lambda stream: self._produce(stream, path, body, parse, natural), check)  # type: ignore[arg-type]

    def _produce(
        self,
        stream: RemoteStream,
        path: str,
        body: dict[str, Any],
        parse: Callable[[Any, RemoteStream], Iterator[Event]],
        natural_end: bool = False,
    ) -> Iterator[Event]:
        state = stream.state
        state.t_start = perf_counter()
        response = None
        try:
            if not stream.cancelled:
                response = self._request("POST", path, body, stream=stream)
            if response is None:
                state.finish_reason = "cancelled"
            else:
                try:
                    events = parse(response, stream)
                    yield from (_end_at_blank_line(events, state) if natural_end else events)
                except self._httpx.HTTPError as exc:
                    if not stream.cancelled:
                        if isinstance(exc, self._httpx.TimeoutException):
                            raise RemoteError(f"{self.where} sent nothing for {self.timeout:g} s") from None
                        raise RemoteError(f"{self.where} broke off the answer: {_reason(exc)}") from None
                if stream.cancelled:
                    state.finish_reason = "cancelled"
                elif state.finish_reason is None:
                    raise RemoteError(f"{self.where} closed the stream before the answer was finished")
        finally:
            if response is not None:
                response.close()
            state.t_end = perf_counter()
        yield state.done()

    # --- OpenAI-compatible engines

    def _sampling(self, request: ChatRequest) -> dict[str, Any]:
        p = request.sampling
        body: dict[str, Any] = {"temperature": p.temperature, "top_p": p.top_p, "max_tokens": p.max_tokens}
        if p.seed >= 0:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        kind = self.probe.kind
        if kind in (LLAMA_CPP, LOCALASSIST):
            body.update(top_k=p.top_k, min_p=p.min_p, repeat_penalty=p.repeat_penalty)
            if p.ignore_eos:
                body["ignore_eos"] = True
        elif kind == VLLM:
            body.update(top_k=p.top_k if p.top_k > 0 else -1, min_p=p.min_p, repetition_penalty=p.repeat_penalty)
            if p.ignore_eos:
                body["ignore_eos"] = True
        return body

    def _openai_request(self, request: ChatRequest) -> tuple[str, dict[str, Any], Any]:
        body: dict[str, Any] = {"model": self.model, "stream": True, "stream_options": {"include_usage": True}}
        body.update(self._sampling(request))
        if request.grammar is not None:
            if self.probe.kind != LLAMA_CPP:
                raise UsageError(f"{self.where} ({self.probe.kind}) does not take a GBNF grammar; use --json-schema")
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
            return "/v1/completions", body, self._parse_sse
        body["messages"] = [m.as_openai() for m in request.messages]
        if request.tools:
            body["tools"] = list(request.tools)
            body["tool_choice"] = request.tool_choice
        return "/v1/chat/completions", body, self._parse_sse

    def _parse_sse(self, response: Any, stream: RemoteStream) -> Iterator[Event]:
        state = stream.state
        calls: dict[int, _Call] = {}
        for event, data in sse_events(response.iter_lines()):
            if stream.cancelled:
                return
            if data.strip() == "[DONE]":
                if state.finish_reason is None:
                    state.finish_reason = "tool_calls" if calls else "stop"
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                if event == "error":
                    raise error_for(None, ServerError(data), self.where, self.key_hint) from None
                raise RemoteError(f"{self.where} sent an event that is not JSON: {data[:80]!r}") from None
            problem = parse_error_body(chunk) if isinstance(chunk, dict) else None
            if problem is not None or event == "error":
                raise error_for(None, problem or ServerError(str(chunk)), self.where, self.key_hint)
            if not isinstance(chunk, dict):
                continue
            if chunk.get("truncated"):  # llama-server: the prompt was cut to fit (context shift)
                raise RemoteContextOverflowError(
                    f"{self.where} truncated the prompt to fit its context; the answer would not be about "
                    "the whole input. Shorten the input or lower --max-tokens"
                )
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                _apply_usage(state, usage)
            for choice in chunk.get("choices") or []:
                yield from self._choice(state, choice, calls)
        _finish_tool_calls(state, calls)

    def _choice(self, state: StreamState, choice: dict[str, Any], calls: dict[int, _Call]) -> Iterator[Event]:
        delta = choice.get("delta") or {}
        text = delta.get("content") if "delta" in choice else choice.get("text")
        if text:
            if state.t_first is None:
                state.t_first = perf_counter()
            state.parts.append(text)
            state.completion_tokens += 1  # one per chunk until the usage chunk says
            yield TextDelta(text)
        for call in delta.get("tool_calls") or []:
            index = int(call.get("index", len(calls)))
            function = call.get("function") or {}
            builder = calls.setdefault(index, _Call())
            builder.id = builder.id or call.get("id")
            builder.name += function.get("name") or ""
            builder.arguments.append(function.get("arguments") or "")
            if state.t_first is None:
                state.t_first = perf_counter()
            yield ToolCallDelta(index, call.get("id"), function.get("name"), function.get("arguments") or "")
        reason = choice.get("finish_reason")
        if reason:
            state.finish_reason = {"function_call": "tool_calls", "content_filter": "stop"}.get(reason, reason)
            if state.finish_reason not in ("stop", "length", "tool_calls"):
                state.finish_reason = "stop"

    # --- Ollama's native API

    def _ollama_request(self, request: ChatRequest, estimate: int) -> tuple[str, dict[str, Any], Any]:
        p = request.sampling
        need = estimate + p.max_tokens + 1
        limit = self.n_ctx
        if need > limit:
            raise RemoteContextOverflowError(
                f"the input may not fit the context of {self.spec}: about {estimate:,} prompt tokens "
                f"(estimated: Ollama has no tokenizer endpoint) + {p.max_tokens:,} max tokens > {limit:,}. "
                "Ollama would clip the prompt without an error, so it was not sent; shorten the input or lower "
                "--max-tokens" + ("" if self.user_ctx else ", or raise --ctx")
            )
        num_ctx = self.user_ctx if self.user_ctx else min(limit, _ladder(need))
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
        body: dict[str, Any] = {"model": self.model, "stream": True, "options": options}
        body.update(truncate=False, shift=False)
        if request.grammar is not None:
            raise UsageError(f"{self.where} (Ollama) does not take a GBNF grammar; use --json-schema")
        fmt = request.response_format
        if fmt is not None and fmt.type != "text":
            body["format"] = fmt.schema if fmt.type == "json_schema" and fmt.schema else "json"
        parse = lambda response, stream: self._parse_ndjson(response, stream, num_ctx)  # noqa: E731
        if request.raw:
            body.update(prompt=request.prompt, raw=True)
            return "/api/generate", body, parse
        body["messages"] = [_ollama_message(m) for m in request.messages]
        if request.tools:
            body["tools"] = list(request.tools)
        return "/api/chat", body, parse

    def _parse_ndjson(self, response: Any, stream: RemoteStream, num_ctx: int) -> Iterator[Event]:
        state = stream.state
        for line in response.iter_lines():
            if stream.cancelled:
                return
            if not line.strip():
                continue
            try:
                chunk = json.loads(line)
            except ValueError:
                raise RemoteError(f"{self.where} sent a line that is not JSON: {line[:80]!r}") from None
            problem = parse_error_body(chunk)
            if problem is not None:
                raise error_for(None, problem, self.where, self.key_hint)
            message = chunk.get("message") or {}
            text = message.get("content") if "message" in chunk else chunk.get("response")
            if text:
                if state.t_first is None:
                    state.t_first = perf_counter()
                state.parts.append(text)
                state.completion_tokens += 1
                yield TextDelta(text)
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                arguments = function.get("arguments")
                arguments = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
                index = len(state.tool_calls)
                call_id = call.get("id") or f"call_{index}"
                state.tool_calls.append(ToolCall(call_id, str(function.get("name", "")), arguments))
                yield ToolCallDelta(index, call_id, function.get("name"), arguments)
            if chunk.get("done"):
                prompt = _int(chunk.get("prompt_eval_count"))
                completion = _int(chunk.get("eval_count"))
                if prompt is not None:
                    state.prompt_tokens = prompt
                if completion is not None:
                    state.completion_tokens = completion
                if (prompt or 0) + (completion or 0) >= num_ctx:
                    raise RemoteContextOverflowError(
                        f"{self.where} filled its whole context (num_ctx {num_ctx:,}: {prompt} prompt + "
                        f"{completion} answer tokens): Ollama may have clipped the prompt or the answer. "
                        "Shorten the input, lower --max-tokens or raise --ctx"
                    )
                reason = chunk.get("done_reason") or "stop"
                state.finish_reason = "tool_calls" if state.tool_calls else ("length" if reason == "length" else "stop")
                return

    # --- embeddings

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, from ``/v1/embeddings`` (Ollama: ``/api/embed`` with
        ``truncate`` off, so a long text is an error rather than cut)."""
        if not texts:
            return []
        if self.probe.kind == OLLAMA:
            body = self._json("POST", "/api/embed", {"model": self.model, "input": list(texts), "truncate": False})
            vectors = (body or {}).get("embeddings")
        else:
            body = self._json("POST", "/v1/embeddings", {"model": self.model, "input": list(texts)})
            data = sorted((body or {}).get("data", []), key=lambda d: d.get("index", 0))
            vectors = [d.get("embedding") for d in data]
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise RemoteError(f"{self.where} did not return one embedding per text")
        return [[float(x) for x in v] for v in vectors]

    # --- reports

    def info(self) -> BackendInfo:
        probe = self.probe
        if self.user_ctx and probe.n_ctx:
            ctx_from = f"--ctx; the server says {probe.n_ctx:,} in {probe.ctx_source}"
        elif probe.n_ctx:
            ctx_from = probe.ctx_source
        else:
            ctx_from = "--ctx" if self.user_ctx else f"assumed: {self.url} does not report it"
        return BackendInfo(
            model=self.spec,
            n_ctx=self.n_ctx,
            remote=True,
            tools=True,
            grammar=probe.kind == LLAMA_CPP,
            embeddings=True,
            details={
                "model": self.model_name,
                "remote": self.url,
                "server": probe.kind,
                "ctx": f"{self.n_ctx} ({ctx_from})",
                "tokens": "exact (server /tokenize)" if self._tokenizer else "estimated (the server cannot count)",
                "connect_s": round(self.load_seconds, 3),
            },
        )

    def close(self) -> None:
        for client in (getattr(self, "_client", None), getattr(self, "_stream_client", None)):
            if client is not None:
                client.close()


# --- helpers


def _end_at_blank_line(events: Iterator[Event], state: StreamState) -> Iterator[Event]:
    """``events`` until the first blank line after some text (the answer's end then, and the
    connection is closed); the text kept is what was passed on."""
    detok = IncrementalDetokenizer(lambda _: b"", (NATURAL_END,))  # fed decoded text, never tokens
    shown: list[str] = []
    try:
        for event in events:
            if not isinstance(event, TextDelta):
                yield event
                continue
            text = detok.push_text(event.text)
            if text:
                shown.append(text)
                yield TextDelta(text)
            if detok.stopped:
                state.finish_reason = "stop"
                return
        if tail := detok.flush():
            shown.append(tail)
            yield TextDelta(tail)
    finally:
        events.close()  # type: ignore[attr-defined]
        state.parts[:] = shown


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


def _retry_after(headers: Any, attempt: int) -> float:
    """Seconds to wait: ``retry-after-ms``, ``Retry-After`` in seconds or as a date, else
    1, 2, 4 ... seconds."""
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        pass
    return float(2**attempt)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


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


def _finish_tool_calls(state: StreamState, calls: dict[int, _Call]) -> None:
    for index in sorted(calls):
        call = calls[index]
        state.tool_calls.append(ToolCall(call.id or f"call_{index}", call.name, "".join(call.arguments)))
    if state.tool_calls and state.finish_reason == "stop":
        state.finish_reason = "tool_calls"


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
