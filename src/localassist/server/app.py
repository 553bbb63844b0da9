"""The Starlette application: routes, authentication, admission (limits, then the
model's queue), streaming, and one call-log row per API request.

Every generation is ``backend.chat(ChatRequest)`` prepared off the event loop (the
context check happens there, before any token), then run by the model's worker. A
client that goes away cancels its generation; so do the per-request time limit and,
after the grace period, shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from localassist.engine.types import Backend, ChatRequest, ChatStream, Done, SamplingParams, TextDelta, ToolCallDelta
from localassist.errors import AnswerInvalidError, ContextOverflowError, LocalAssistError, UsageError
from localassist.server import tokens, wire
from localassist.server.calllog import Call, CallLog
from localassist.server.keys import KeyRecord, Keyring, Unauthorized
from localassist.server.limits import RateLimiter
from localassist.server.metrics import CONTENT_TYPE, Metrics
from localassist.server.wire import ApiError
from localassist.server.worker import CallJob, Job, ModelWorker, QueueFull, Stopped, StreamJob, ceil_seconds

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DRAIN_LIMIT = 64 * 1024 * 1024  # past this an oversized body is not even read to the end
DRAIN_S = 5  # after the grace period, how long a client has to read its response's end before it is dropped
STOP_S = 60.0  # at the end of a shutdown, how long the models have to stop (and load) before the process exits


@dataclass(frozen=True)
class ServeConfig:
    max_queue: int = 4
    timeout_s: float = 600.0
    grace_s: float = 10.0
    max_body: int = 8 * 1024 * 1024
    log_content: bool = True
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    read_timeout_s: float = 30.0  # for a request's body (its headers: server/connections.py)
    defaults: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class Loaded:
    name: str
    backend: Backend
    worker: ModelWorker
    kind: str  # chat | embedding
    created: int


class ServerState:
    """What the routes share. ``load`` (run on a thread at startup) returns the models:
    (name, backend, kind) triples."""

    def __init__(
        self,
        config: ServeConfig,
        keyring: Keyring,
        calllog: CallLog | None,
        load: Callable[[], list[tuple[str, Backend, str]]],
    ) -> None:
        self.config = config
        self.keyring = keyring
        self.calllog = calllog
        self._load = load
        self.status = "loading"  # loading | ready | stopping | failed
        self.chat: dict[str, Loaded] = {}
        self.embed: dict[str, Loaded] = {}
        self.metrics = Metrics()
        self.limiter = RateLimiter()
        self.load_error: BaseException | None = None
        self.on_fatal: Callable[[], None] = lambda: None  # set by run.py: stop the HTTP server
        self.drop_connections: Callable[[], None] = lambda: None  # set by run.py: abort every open connection
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loader: threading.Thread | None = None
        self.left_running: list[str] = []  # what close() left busy (a model, the loading), not freed

    # --- lifecycle

    def start_loading(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._loader = threading.Thread(target=self._load_models, name="localassist-load", daemon=True)
        self._loader.start()

    def _load_models(self) -> None:
        try:
            for name, backend, kind in self._load():
                # a BatchedBackend decodes `parallel` answers together: as many jobs run at once
                parallel = getattr(backend, "parallel", 1)
                worker = ModelWorker(f"{kind}:{name}", self.config.max_queue, concurrency=parallel)
                loaded = Loaded(name, backend, worker, kind, int(time.time()))
                (self.chat if kind == "chat" else self.embed)[name] = loaded
        except BaseException as exc:  # reported by run.py after the server stops
            self.load_error = exc
            self.status = "failed"
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self.on_fatal)
            return
        if self.status == "loading":
            self.status = "ready"

    def begin_shutdown(self) -> None:
        """SIGTERM: stop taking requests now. After the grace period, cancel what still runs:
        every response ends at once with its ``shutting_down`` error (a stream: the frame and
        ``[DONE]``), without waiting for the engine to notice, so the process never has to
        cut one off. ``DRAIN_S`` later, drop the connections of clients that have not read
        that far, rather than leave uvicorn to cancel their tasks."""
        if self.status == "stopping":
            return
        self.status = "stopping"
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.call_later, self.config.grace_s, self.cancel_all, "shutdown")
            self.loop.call_soon_threadsafe(self.loop.call_later, self.config.grace_s + DRAIN_S, self.drop_connections)

    def cancel_all(self, reason: str) -> None:
        for loaded in self.models():
            loaded.worker.cancel_all(reason)

    def models(self) -> list[Loaded]:
        return [*self.chat.values(), *self.embed.values()]

    def close(self) -> None:
        """Off the loop, once the HTTP side is done: each worker finishes the token, prompt
        batch or embedding it is in (its jobs are cancelled), then its model is freed:
        never under a running decode. All of it waits at most ``STOP_S``: a model still
        busy (or loading) then is not freed, stderr says so, and it is in ``left_running``."""
        deadline = time.monotonic() + STOP_S
        if self._loader is not None:
            self._loader.join(STOP_S)
            if self._loader.is_alive():
                self.left_running.append("loading")
                sys.stderr.write(
                    f"localassist: warning: the models were still loading {STOP_S:g} s after the shutdown; "
                    "exiting without waiting for them\n"
                )
        for loaded in self.models():
            if loaded.worker.stop(timeout=max(0.0, deadline - time.monotonic())):
                loaded.backend.close()
            else:
                self.left_running.append(loaded.name)
                sys.stderr.write(
                    f"localassist: warning: {loaded.name} did not stop within {STOP_S:g} s of the shutdown "
                    "(it is inside one long prompt batch or embedding); its model is not freed under it, "
                    "the process exits with it still running\n"
                )

    def close_log(self) -> None:
        if self.calllog is not None:
            self.calllog.close()

    # --- shared steps

    def check_ready(self) -> None:
        if self.status == "loading":
            raise ApiError(
                503,
                "the model is loading; retry shortly",
                "unavailable_error",
                "model_loading",
                headers={"Retry-After": "1"},
            )
        if self.status != "ready":
            raise ApiError(
                503,
                "the server is shutting down",
                "unavailable_error",
                "shutting_down",
                headers={"x-should-retry": "false"},
            )

    def authenticate(self, request: Request) -> KeyRecord:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else None
        presented = presented or request.headers.get("x-api-key") or None
        try:
            key = self.keyring.check(presented)
        except Unauthorized as exc:
            message = {
                "missing": "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'.",
                "invalid": "Incorrect API key provided.",
                "revoked": "This API key has been revoked.",
            }[exc.reason]
            if not self.keyring.active:  # every key revoked: the server stays locked, it never opens
                message += " No API key is active on this server: create one with `localassist keys create NAME`."
            raise ApiError(
                401, message, "invalid_request_error", "invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        touched = self.keyring.take_touches()
        if touched and self.calllog is not None:
            self.calllog.touch_keys(touched, time.time())
        return key

    async def read_json(self, request: Request) -> dict[str, Any]:
        limit = self.config.max_body
        declared = request.headers.get("content-length", "")
        too_big = declared.isdigit() and int(declared) > limit
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.config.read_timeout_s):  # a body sent slowly or never is not waited for
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        too_big = True
                    if too_big:  # read on (and drop) so the client gets the 413 rather than a reset connection
                        if size > DRAIN_LIMIT:
                            break
                        continue
                    chunks.append(chunk)
        except TimeoutError:
            raise ApiError(
                408,
                f"the request body did not arrive within {self.config.read_timeout_s:g} s (serve_read_timeout)",
                "timeout_error",
                "request_timeout",
                headers={"Connection": "close"},
            ) from None
        if too_big:
            raise ApiError(
                413,
                f"the request body is larger than the server's limit of {limit:,} bytes (serve_max_body)",
                "invalid_request_error",
                "request_too_large",
            )
        return wire.parse_body(b"".join(chunks))

    def chat_model(self, name: str) -> Loaded:
        loaded = self.chat.get(name)
        if loaded is None:
            raise wire.model_not_found(name, sorted(self.chat))
        return loaded

    def admit(self, key: KeyRecord, prompt_tokens: int) -> None:
        rpm = key.requests_per_minute if key.requests_per_minute is not None else self.config.requests_per_minute
        tpm = key.tokens_per_minute if key.tokens_per_minute is not None else self.config.tokens_per_minute
        wait = self.limiter.admit(key.name, rpm, tpm, prompt_tokens)
        if wait is not None:
            raise ApiError(
                429,
                f"Rate limit reached for key {key.name!r} ({rpm or 'no'} requests/min, {tpm or 'no'} tokens/min); "
                f"retry in {wait:.1f} s",
                "rate_limit_error",
                "rate_limit_exceeded",
                headers=retry_headers(wait),
            )

    def submit(self, loaded: Loaded, job: Job) -> None:
        try:
            loaded.worker.submit(job)
        except QueueFull as full:
            self.metrics.rejected_queue_full += 1
            raise ApiError(
                429,
                f"The server is busy: {loaded.worker.max_queue} requests are already waiting for {loaded.name}; "
                f"retry in {full.retry_after:.1f} s",
                "rate_limit_error",
                "queue_full",
                headers=retry_headers(full.retry_after),
            ) from None

    async def prepare(self, loaded: Loaded, gen: wire.Generation) -> ChatStream:
        """``backend.chat`` off the loop: the prompt is rendered, counted and checked
        against the context before anything is queued. With no max_tokens in the request,
        the ``max_tokens`` setting is used, lowered to what the context has room for."""
        request = ChatRequest(
            messages=gen.messages,
            prompt=gen.prompt,
            sampling=gen.sampling,
            tools=gen.tools,
            tool_choice=gen.tool_choice,
            parallel_tool_calls=gen.parallel_tool_calls,
            response_format=gen.response_format,
        )
        param = "prompt" if gen.prompt is not None else "messages"
        try:
            try:
                return await anyio.to_thread.run_sync(loaded.backend.chat, request)
            except ContextOverflowError as exc:
                room = exc.n_ctx - exc.prompt_tokens
                if gen.max_tokens_given or room < 1:
                    raise
                smaller = replace(request, sampling=replace(request.sampling, max_tokens=room))
                return await anyio.to_thread.run_sync(loaded.backend.chat, smaller)
        except ContextOverflowError as exc:
            raise wire.context_exceeded(exc.prompt_tokens, exc.max_tokens, exc.n_ctx, param) from None
        except UsageError as exc:
            where = "response_format" if gen.response_format is not None and "schema" in str(exc) else param
            where = "tools" if gen.tools and "tool" in str(exc) else where
            raise wire.invalid(str(exc).replace("--json-schema: ", ""), where) from None
        except LocalAssistError as exc:  # a chat template that refuses these messages, ...
            raise wire.invalid(str(exc), param) from None

    def finish_call(
        self, call: Call, t0: float, job: Job | None = None, done: Done | None = None
    ) -> asyncio.Future[None] | None:
        """Record the call. When its outcome is known (no job, or the job ended on its own),
        the row is written now and the future is done once it is committed: the response
        awaits it before its last byte, so a call a client saw answered is never lost. A
        generation cancelled while running (disconnect, time limit, shutdown) is recorded
        once the engine has stopped it (within a token or prompt batch), with the tokens it
        really produced: then None."""
        call.total_s = round(perf_counter() - t0, 4)
        if job is not None and job.stop_reason is not None and job.started is not None:
            job.when_finished(lambda: self._record(call, t0, job, done))
            return None
        return asyncio.wrap_future(self._record(call, t0, job, done))

    def _record(self, call: Call, t0: float, job: Job | None, done: Done | None) -> concurrent.futures.Future[None]:
        if job is not None and job.started is not None:
            call.queue_s = round(job.queue_s, 4)
        if done is None and isinstance(job, StreamJob) and job.started is not None and not job.abandoned:
            done = job.stream.result()  # what was generated before the cancel
        if done is not None:
            call.finish_reason = done.finish_reason
            call.prompt_tokens = done.prompt_tokens
            call.completion_tokens = done.completion_tokens
            state = job.stream.state if isinstance(job, StreamJob) else None
            if state is not None and state.t_first is not None:
                call.ttft_s = round(state.t_first - t0, 4)
            if self.config.log_content:
                call.answer = done.text
            self.metrics.generation(
                done.prompt_tokens,
                done.completion_tokens,
                call.ttft_s,
                done.timings.generation_tokens_per_s,
                call.queue_s or 0.0,
            )
            self.limiter.used(call.key_name, done.usage.total_tokens)
        self.metrics.request(call.endpoint, call.status)
        if self.calllog is not None:
            return self.calllog.record(call)
        written: concurrent.futures.Future[None] = concurrent.futures.Future()
        written.set_result(None)
        return written


def retry_headers(seconds: float) -> dict[str, str]:
    # The openai client reads retry-after-ms first (exact), then Retry-After (whole seconds).
    return {"Retry-After": str(ceil_seconds(seconds)), "retry-after-ms": str(max(1, int(seconds * 1000)))}


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(wire.dumps(obj), status_code=status, media_type="application/json", headers=headers)


def error_response(err: ApiError) -> Response:
    return json_response(err.status, err.body(), err.headers)


STOP_ERRORS = {
    "timeout": lambda cfg: ApiError(
        408,
        f"the request took longer than the server's time limit of {cfg.timeout_s:g} s (serve_timeout)",
        "timeout_error",
        "request_timeout",
        headers={"x-should-retry": "false"},
    ),
    "shutdown": lambda _cfg: ApiError(503, "the server is shutting down", "unavailable_error", "shutting_down"),
    "disconnect": lambda _cfg: ApiError(
        499, "the client closed the connection", "invalid_request_error", "client_disconnected"
    ),
}


def engine_error(exc: BaseException | None) -> ApiError:
    if isinstance(exc, ContextOverflowError):
        return wire.context_exceeded(exc.prompt_tokens, exc.max_tokens, exc.n_ctx, "input")
    if isinstance(exc, UsageError):
        return wire.invalid(str(exc))
    if isinstance(exc, AnswerInvalidError):  # the model's JSON broke a keyword checked after generation
        return ApiError(500, str(exc), "server_error", "answer_invalid")
    sys.stderr.write(f"localassist: error: generation failed: {type(exc).__name__}: {exc}\n")
    return ApiError(500, "the model failed while generating; see the server's log", "server_error", "engine_error")


def pooled(vector: Any) -> list[float]:
    """One L2-normalized vector per input, as OpenAI and llama-server return them. A model
    without a pooling layer gives one vector per token: those are averaged first (the local
    engine's ``embed`` has done that already, so the normalizing must happen here)."""
    if vector and isinstance(vector[0], (list, tuple)):
        width = len(vector[0])
        vector = [sum(row[i] for row in vector) / len(vector) for i in range(width)]
    norm = sum(float(x) * float(x) for x in vector) ** 0.5 or 1.0
    return [float(x) / norm for x in vector]


async def committed(row: asyncio.Future[None] | None) -> None:
    """Wait until a call's row is committed (``finish_call``'s future; None: nothing to
    wait for). Shielded: when the wait is cancelled (Starlette cancels a stream whose
    client went away, uvicorn's shutdown timeout cancels a waiting request), the row is
    written all the same, and the call log's writer never sees its future cancelled."""
    if row is not None:
        await asyncio.shield(row)


async def wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def prompt_text(gen: wire.Generation) -> str:
    if gen.prompt is not None:
        return gen.prompt
    return "\n".join(f"{m.role}: {m.content}" for m in gen.messages)


def create_app(state: ServerState) -> Starlette:
    Handler = Callable[[Request, KeyRecord, Call, float], Awaitable[Response]]

    def api(endpoint: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            t0 = perf_counter()
            client = request.client.host if request.client else None
            call = Call(created=time.time(), key_name="-", endpoint=endpoint, status=0, client=client)
            try:
                key = state.authenticate(request)
                call.key_name = key.name
                state.check_ready()
                response = await handler(request, key, call, t0)
                if isinstance(response, StreamingResponse):
                    return response  # the stream records its own call when it ends
                call.status = response.status_code
            except ApiError as err:
                call.status, call.error_code = err.status, err.code
                response = error_response(err)
            except ClientDisconnect:  # gone while sending its body: the client's event, not a server error
                err = STOP_ERRORS["disconnect"](state.config)
                call.status, call.error_code = err.status, err.code
                response = error_response(err)
            except Exception as exc:  # never a traceback to the client
                sys.stderr.write(f"localassist: error: {endpoint}: {type(exc).__name__}: {exc}\n")
                err = ApiError(500, "internal server error; see the server's log", "server_error", "internal_error")
                call.status, call.error_code = 500, err.code
                response = error_response(err)
            await committed(state.finish_call(call, t0, getattr(call, "_job", None), getattr(call, "_done", None)))
            return response

        return run

    async def generate(request: Request, key: KeyRecord, call: Call, t0: float, chat: bool) -> Response:
        body = await state.read_json(request)
        gen = (
            wire.parse_chat(body, state.config.defaults) if chat else wire.parse_completion(body, state.config.defaults)
        )
        call.model, call.stream = gen.model, gen.stream
        if state.config.log_content:
            call.prompt = prompt_text(gen)
        loaded = state.chat_model(gen.model)
        stream = await state.prepare(loaded, gen)
        call.prompt_tokens = stream.prompt_tokens
        state.admit(key, stream.prompt_tokens)
        assert state.loop is not None
        job = StreamJob(state.loop, stream)
        state.submit(loaded, job)
        writer = wire.ChunkWriter(gen.model, chat, gen.include_usage)
        if gen.stream:
            return StreamingResponse(sse(job, writer, call, t0), media_type="text/event-stream", headers=SSE_HEADERS)
        done = await collect(request, job)
        call._job, call._done = job, done  # type: ignore[attr-defined]
        build = wire.chat_completion if chat else wire.text_completion
        return json_response(200, build(writer.id, writer.created, gen.model, done))

    async def collect(request: Request, job: Job) -> Any:
        """The job's Done (non-streaming); a disconnect, the time limit or shutdown cancel it."""
        loop = asyncio.get_running_loop()
        watcher = asyncio.ensure_future(wait_disconnect(request))
        watcher.add_done_callback(lambda f: None if f.cancelled() else job.cancel("disconnect"))
        timer = loop.call_later(state.config.timeout_s, job.cancel, "timeout")
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, (Done, Stopped, tuple)):
                    break
        finally:
            watcher.cancel()
            timer.cancel()
        if job.stop_reason is not None:
            raise STOP_ERRORS[job.stop_reason](state.config)
        if isinstance(event, Stopped):
            raise engine_error(event.error)
        return event

    async def sse(job: StreamJob, writer: wire.ChunkWriter, call: Call, t0: float) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(state.config.timeout_s, job.cancel, "timeout")
        call.status = 200
        ended = False
        try:
            yield writer.start()
            while True:
                event = await job.events.get()
                if job.stop_reason is not None or isinstance(event, Stopped):
                    # cancelled (time limit, shutdown: at once, tokens still queued are dropped) or failed
                    err = (
                        STOP_ERRORS[job.stop_reason](state.config)
                        if job.stop_reason is not None
                        else engine_error(event.error if isinstance(event, Stopped) else None)
                    )
                    call.status, call.error_code = err.status, err.code
                    ended = True
                    await committed(state.finish_call(call, t0, job))
                    yield writer.error(err)
                    return
                if isinstance(event, TextDelta):
                    chunk = writer.text(event.text)
                    if chunk:
                        yield chunk
                elif isinstance(event, ToolCallDelta):
                    yield writer.tool_call(event)
                elif isinstance(event, Done):
                    ended = True
                    await committed(state.finish_call(call, t0, job, event))  # before the client sees the end
                    yield writer.finish(event)
                    return
        finally:
            timer.cancel()
            if not ended:  # the client went away, or shutdown dropped a client that did not read: stop generating
                job.cancel("disconnect")
                err = STOP_ERRORS["shutdown" if job.stop_reason == "shutdown" else "disconnect"](state.config)
                call.status, call.error_code = err.status, err.code
                state.finish_call(call, t0, job)

    async def chat_completions(request: Request, key: KeyRecord, call: Call, t0: float) -> Response:
        return await generate(request, key, call, t0, chat=True)

    async def completions(request: Request, key: KeyRecord, call: Call, t0: float) -> Response:
        return await generate(request, key, call, t0, chat=False)

    async def embeddings(request: Request, key: KeyRecord, call: Call, t0: float) -> Response:
        req = wire.parse_embeddings(await state.read_json(request))
        call.model = req.model
        loaded = state.embed.get(req.model)
        if loaded is None:
            if not state.embed:
                raise ApiError(
                    404,
                    "no embedding model is loaded: start the server with --embed NAME",
                    "invalid_request_error",
                    "model_not_found",
                    "model",
                )
            raise wire.model_not_found(req.model, sorted(state.embed))
        if state.config.log_content:
            call.prompt = "\n".join(req.inputs)
        backend = loaded.backend
        state.admit(key, 0)
        assert state.loop is not None

        def work() -> tuple[list[list[float]], int]:
            vectors = [pooled(v) for v in backend.embed(req.inputs)]
            return vectors, sum(len(backend.tokenize(t)) for t in req.inputs)

        job = CallJob(state.loop, work)
        state.submit(loaded, job)
        call._job = job  # type: ignore[attr-defined]
        result = await collect(request, job)
        vectors, tokens = result[1]
        call.prompt_tokens = tokens
        state.limiter.used(key.name, tokens)
        return json_response(200, wire.embeddings(req.model, vectors, req.base64, tokens))

    async def models(request: Request, key: KeyRecord, call: Call, t0: float) -> Response:
        cards: dict[str, dict[str, Any]] = {}
        for m in state.models():  # one card per id; a model served for both lists both kinds
            card = cards.setdefault(m.name, wire.model_card(m.name, m.created, m.backend.n_ctx))
            card["meta"]["kinds"].append(m.kind)
        wanted = request.path_params.get("model")
        if wanted is None:
            return json_response(200, {"object": "list", "data": list(cards.values())})
        call.model = wanted
        if wanted not in cards:
            raise wire.model_not_found(wanted, sorted(cards))
        return json_response(200, cards[wanted])

    def token_model(name: str | None, call: Call, chat_only: bool = False) -> Backend:
        chat = {n: m.backend for n, m in state.chat.items()}
        embed = {} if chat_only else {n: m.backend for n, m in state.embed.items()}
        call.model, backend = tokens.choose(name, chat, embed)
        return backend

    # llama-server's token endpoints: no generation, so no queue and no rate limit; off the
    # event loop, since a long text takes a while to tokenize
    async def tokenize(request: Request, key: KeyRecord, call: Call, t0: float) -> Response:
        req = tokens.parse_tokenize(await state.read_json(request))
        backend = token_model(req.model, call)
        return json_response(200, await anyio.to_thread.run_sync(tokens.tokenize, backend, req))

    async def detokenize(request: Request, key: KeyRecord, call: Call, t0: float) -> Response:
        name, ids = tokens.parse_detokenize(await state.read_json(request))
        backend = token_model(name, call)
        return json_response(200, await anyio.to_thread.run_sync(tokens.detokenize, backend, ids))

    async def apply_template(request: Request, key: KeyRecord, call: Call, t0: float) -> Response:
        name, messages = tokens.parse_apply_template(await state.read_json(request))
        backend = token_model(name, call, chat_only=True)
        return json_response(200, await anyio.to_thread.run_sync(tokens.apply_template, backend, messages))

    async def metrics(request: Request, key: KeyRecord, call: Call, t0: float) -> Response:
        text = state.metrics.render((m.name, m.kind, m.worker.waiting, m.worker.running) for m in state.models())
        return Response(text, media_type=CONTENT_TYPE)

    async def health(request: Request) -> Response:
        waiting = sum(m.worker.waiting for m in state.models())
        running = sum(m.worker.running for m in state.models())
        status = {"ready": "ok"}.get(state.status, state.status)
        body = {"status": status, "queue_depth": waiting, "running": running}
        return json_response(200 if status == "ok" else 503, body)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            return error_response(
                ApiError(
                    405,
                    f"{request.method} is not allowed on {request.url.path}",
                    "invalid_request_error",
                    "method_not_allowed",
                )
            )
        return error_response(
            ApiError(
                exc.status_code,
                f"no such endpoint: {request.method} {request.url.path}",
                "invalid_request_error",
                "unknown_url",
            )
        )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        state.start_loading(asyncio.get_running_loop())
        try:
            yield
        finally:
            state.cancel_all("shutdown")
            await anyio.to_thread.run_sync(state.close)
            # the rows of generations cancelled last were queued on this loop as their workers
            # stopped, before this line runs: now the call log writes them and closes
            await anyio.to_thread.run_sync(state.close_log)
            if state.left_running:
                # a model still inside llama.cpp: the interpreter's exit tears down what that
                # thread runs on (it can die of SIGSEGV). Every response has ended and the
                # call log is closed, so leave now; the system frees the model's memory.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)

    routes = [
        Route("/v1/chat/completions", api("chat.completions", chat_completions), methods=["POST"]),
        Route("/v1/completions", api("completions", completions), methods=["POST"]),
        Route("/v1/embeddings", api("embeddings", embeddings), methods=["POST"]),
        Route("/v1/models", api("models", models), methods=["GET"]),
        Route("/v1/models/{model:path}", api("models", models), methods=["GET"]),
        Route("/metrics", api("metrics", metrics), methods=["GET"]),
        Route("/tokenize", api("tokenize", tokenize), methods=["POST"]),
        Route("/detokenize", api("detokenize", detokenize), methods=["POST"]),
        Route("/apply-template", api("apply-template", apply_template), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_found})
