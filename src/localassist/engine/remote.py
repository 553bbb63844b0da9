"""The remote backend: a model served by llama-server, vLLM, Ollama, another
``localassist serve`` or any OpenAI-compatible engine, over HTTP (httpx, imported here).

Connecting probes the server once per process: which engine it is (its dialect, see
``engine/dialects.py``: what differs between llama-server, vLLM, Ollama, localassist
and other OpenAI-compatible servers), the model, and its context length, else
``--ctx``, else an assumption said in a notice. This module keeps what every dialect
shares: the HTTP, retries, the stream and its cancelling, token counts.

Every error dialect becomes a localassist error (see ``engine/remote_errors.py``); 429 and 503
are retried after ``Retry-After`` (bounded), with a notice through ``notify``; nothing
here prints. ``ChatStream.cancel()`` shuts the connection's socket, from any thread,
so the server sees the client go and stops generating.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import suppress
from email.utils import parsedate_to_datetime
from time import perf_counter, sleep, time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from localassist.engine.detokenize import NATURAL_END, IncrementalDetokenizer
from localassist.engine.dialects import Dialect, Parse, Probe, detect, dialect_named
from localassist.engine.remote_errors import error_for, parse_error_text
from localassist.engine.structured import answer_check
from localassist.engine.token_estimate import estimate_messages, estimate_tokens
from localassist.engine.types import BackendInfo, ChatRequest, ChatStream, Done, Event, Message, StreamState, TextDelta
from localassist.errors import RemoteAuthError, RemoteError, RemoteUnavailableError, UsageError
from localassist.urls import is_loopback, normalize_url, plain_http_elsewhere

if TYPE_CHECKING:
    import httpx

ASSUMED_CTX = 4096  # when neither the server nor the user says
MAX_RETRIES = 3
MAX_WAIT_S = 30.0  # the longest Retry-After honoured; a server asking more gets an error

_PROBES: dict[tuple[str, str | None, str | None], Probe] = {}
_PROBES_LOCK = threading.Lock()


class RemoteStream(ChatStream):
    """A stream whose ``cancel()`` also shuts the connection (from any thread): a server
    still evaluating the prompt or generating sees the client go and stops."""

    def __init__(
        self,
        state: StreamState,
        produce: Callable[[ChatStream], Generator[Event, None, None]],
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
    variable ``key_env`` and is sent as a bearer token. ``kind`` (a key of
    ``dialects.DIALECTS``: ``ollama`` for the built-in name) skips detection.
    ``notify`` receives one-line notices (retries, assumptions, plain HTTP)."""

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
        common: dict[str, Any] = {
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
        self.dialect: Dialect = dialect_named(self.probe.kind)(self)
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

    def request_json(self, method: str, path: str, body: Any = None, *, quiet_404: bool = False) -> Any:
        """The decoded JSON answer (None on a 404 with ``quiet_404``): how dialects ask."""
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
        if kind is None:  # the OpenAI listing says which engine it is, or is a first clue
            listing = self.request_json("GET", "/v1/models", quiet_404=True)
            probe = detect(self, listing)(self).probe(model, listing)
        else:
            probe = dialect_named(kind)(self).probe(model)
        probe.seconds = perf_counter() - start
        if self._choosing:
            with _PROBES_LOCK:
                _PROBES[key] = probe
        return probe

    def choose(self, model: str | None, ids: list[str], *, single_model: bool = False) -> str:
        """The model to use of ``ids`` the server offers: ``model``, or the only one."""
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
        return self.dialect.list_models()

    # --- tokens

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        """The server's token ids (llama-server's ``/tokenize``); on a server without one,
        placeholder ids as many as the conservative estimate (``exact_tokens`` is False).
        ``model`` goes along for a server of several models (localassist serve)."""
        if self._tokenizer:
            body = self.request_json(
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
        return self.dialect.clips_silently

    def count(self, messages: Sequence[Message]) -> int:
        """Prompt tokens of ``messages``: rendered by the server's template and counted by
        its tokenizer where it has them (see the dialect's ``tokenize_messages``), else the
        conservative estimate."""
        if self._tokenizer and messages:
            body = self.dialect.tokenize_messages([m.as_openai() for m in messages])
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
        path, body, parse = self.dialect.chat_request(request, estimate)
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
        parse: Parse,
        natural_end: bool = False,
    ) -> Generator[Event, None, None]:
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

    # --- embeddings

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, from the server's embedding endpoint."""
        if not texts:
            return []
        vectors = self.dialect.embed(texts)
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
            grammar=self.dialect.grammar,
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
