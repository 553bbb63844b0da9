"""What the routes share, as one object: ``ServerState`` (settings, keys, the loaded
models and their workers, limits, metrics, the call log), and ``CallState``, what one
API request carries on its way through.

``ServerState`` also runs the server's life: the models load on a thread at start
(``/health`` answers 503 ``loading`` meanwhile), SIGTERM stops taking requests and,
after the grace period, cancels what still runs; ``close`` frees each model once its
worker has stopped, never under a running decode.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING

from starlette.requests import Request

from localassist.engine.types import Backend, Done, SamplingParams
from localassist.server.calllog import Call, CallLog
from localassist.server.errors import ApiError, model_not_found
from localassist.server.keys import KeyRecord, Keyring, Unauthorized
from localassist.server.limits import RateLimiter
from localassist.server.metrics import Metrics
from localassist.server.worker import Job, ModelWorker, QueueFull, StreamJob, ceil_seconds

if TYPE_CHECKING:
    from localassist.web.state import WebState

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


@dataclass
class CallState:
    """One API request on its way through: its call-log row, when it began, and for a
    generation or an embedding the job that ran it and the answer, from which the row
    takes its tokens and timings."""

    row: Call
    t0: float
    job: Job | None = None
    done: Done | None = None
    content: bool = True  # False: the prompt and answer stay out of the call log (the web chat's are in logs.db)


@dataclass(eq=False)
class ServerState:
    """``load`` (run on a thread at startup) returns the models: (name, backend, kind) triples."""

    config: ServeConfig
    keyring: Keyring
    calllog: CallLog | None
    load: Callable[[], list[tuple[str, Backend, str]]]
    status: str = "loading"  # loading | ready | stopping | failed
    chat: dict[str, Loaded] = field(default_factory=dict)
    embed: dict[str, Loaded] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    load_error: BaseException | None = None
    on_fatal: Callable[[], None] = lambda: None  # set by run.py: stop the HTTP server
    drop_connections: Callable[[], None] = lambda: None  # set by run.py: abort every open connection
    loop: asyncio.AbstractEventLoop | None = None
    loading: threading.Thread | None = None
    left_running: list[str] = field(default_factory=list)  # what close() left busy (a model, the loading)
    web: WebState | None = None  # the web chat's own state (web/state.py); None: `web = false`

    # --- lifecycle

    def start_loading(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.loading = threading.Thread(target=self._load_models, name="localassist-load", daemon=True)
        self.loading.start()

    def _load_models(self) -> None:
        try:
            for name, backend, kind in self.load():
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
        if self.loading is not None:
            self.loading.join(STOP_S)
            if self.loading.is_alive():
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
        if self.web is not None:
            self.web.close()
        if self.calllog is not None:
            self.calllog.close()

    # --- the steps every request takes

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

    def chat_model(self, name: str) -> Loaded:
        loaded = self.chat.get(name)
        if loaded is None:
            raise model_not_found(name, sorted(self.chat))
        return loaded

    def embed_model(self, name: str) -> Loaded:
        loaded = self.embed.get(name)
        if loaded is None and not self.embed:
            raise ApiError(
                404,
                "no embedding model is loaded: start the server with --embed NAME",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        if loaded is None:
            raise model_not_found(name, sorted(self.embed))
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

    # --- the call log

    def finish_call(self, call: CallState) -> asyncio.Future[None] | None:
        """Record the call. When its outcome is known (no job, or the job ended on its own),
        the row is written now and the future is done once it is committed: the response
        awaits it before its last byte, so a call a client saw answered is never lost. A
        generation cancelled while running (disconnect, time limit, shutdown) is recorded
        once the engine has stopped it (within a token or prompt batch), with the tokens it
        really produced: then None."""
        call.row.total_s = round(perf_counter() - call.t0, 4)
        job = call.job
        if job is not None and job.stop_reason is not None and job.started is not None:
            job.when_finished(lambda: self._record(call))
            return None
        return asyncio.wrap_future(self._record(call))

    def _record(self, call: CallState) -> concurrent.futures.Future[None]:
        row, job, done = call.row, call.job, call.done
        if job is not None and job.started is not None:
            row.queue_s = round(job.queue_s, 4)
        if done is None and isinstance(job, StreamJob) and job.started is not None and not job.abandoned:
            done = job.stream.result()  # what was generated before the cancel
        if done is not None:
            row.finish_reason = done.finish_reason
            row.prompt_tokens = done.prompt_tokens
            row.completion_tokens = done.completion_tokens
            stream = job.stream.state if isinstance(job, StreamJob) else None
            if stream is not None and stream.t_first is not None:
                row.ttft_s = round(stream.t_first - call.t0, 4)
            if self.config.log_content and call.content:
                row.answer = done.text
            self.metrics.generation(
                done.prompt_tokens,
                done.completion_tokens,
                row.ttft_s,
                done.timings.generation_tokens_per_s,
                row.queue_s or 0.0,
            )
            self.limiter.used(row.key_name, done.usage.total_tokens)
        self.metrics.request(row.endpoint, row.status)
        if self.calllog is not None:
            return self.calllog.record(row)
        written: concurrent.futures.Future[None] = concurrent.futures.Future()
        written.set_result(None)
        return written


def retry_headers(seconds: float) -> dict[str, str]:
    # The openai client reads retry-after-ms first (exact), then Retry-After (whole seconds).
    return {"Retry-After": str(ceil_seconds(seconds)), "retry-after-ms": str(max(1, int(seconds * 1000)))}
