"""The API's endpoints: one plain async function each, over the ``ServerState`` that
``create_app`` keeps on the app (``request.app.state.server``).

``api(endpoint, handler)`` gives every API endpoint the same frame: authenticate, refuse
while loading or stopping, answer any error in OpenAI's shape (``errors``) and write the
call's row before the response's last byte; a stream writes its own row when it ends.

Every generation is ``backend.chat(ChatRequest)`` prepared off the event loop (the
context check happens there, before any token), then run by the model's worker. A
client that goes away cancels its generation; so do the per-request time limit and,
after the grace period, shutdown.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from time import perf_counter
from typing import Any

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from localassist.engine.types import Backend, ChatRequest, ChatStream, Done, TextDelta, ToolCallDelta
from localassist.errors import ContextOverflowError, LocalAssistError
from localassist.server import errors, tokens, wire
from localassist.server.calllog import Call
from localassist.server.errors import ApiError
from localassist.server.keys import KeyRecord
from localassist.server.metrics import CONTENT_TYPE
from localassist.server.state import CallState, Loaded, ServeConfig, ServerState
from localassist.server.worker import CallJob, Job, Stopped, StreamJob

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DRAIN_LIMIT = 64 * 1024 * 1024  # past this an oversized body is not even read to the end

Handler = Callable[[Request, ServerState, CallState, KeyRecord], Awaitable[Response]]


def api(endpoint: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` as an API endpoint named ``endpoint`` in the call log and metrics."""

    async def route(request: Request) -> Response:
        state: ServerState = request.app.state.server
        client = request.client.host if request.client else None
        call = CallState(
            Call(created=time.time(), key_name="-", endpoint=endpoint, status=0, client=client), perf_counter()
        )
        try:
            key = state.authenticate(request)
            call.row.key_name = key.name
            state.check_ready()
            response = await handler(request, state, call, key)
            if isinstance(response, StreamingResponse):
                return response  # the stream records its own call when it ends
            call.row.status = response.status_code
        except ApiError as err:
            response = failed(call, err)
        except ClientDisconnect:  # gone while sending its body: the client's event, not a server error
            response = failed(call, errors.stopped("disconnect", state.config.timeout_s))
        except Exception as exc:  # never a traceback to the client
            sys.stderr.write(f"localassist: error: {endpoint}: {type(exc).__name__}: {exc}\n")
            response = failed(call, errors.internal_error())
        await committed(state.finish_call(call))
        return response

    return route


def failed(call: CallState, err: ApiError) -> Response:
    call.row.status, call.row.error_code = err.status, err.code
    return error_response(err)


# --- generations


async def chat_completions(request: Request, state: ServerState, call: CallState, key: KeyRecord) -> Response:
    return await generate(request, state, call, key, chat=True)


async def completions(request: Request, state: ServerState, call: CallState, key: KeyRecord) -> Response:
    return await generate(request, state, call, key, chat=False)


async def generate(request: Request, state: ServerState, call: CallState, key: KeyRecord, chat: bool) -> Response:
    body = await read_json(request, state.config)
    defaults = state.config.defaults
    gen = wire.parse_chat(body, defaults) if chat else wire.parse_completion(body, defaults)
    call.row.model, call.row.stream = gen.model, gen.stream
    if state.config.log_content:
        call.row.prompt = prompt_text(gen)
    loaded = state.chat_model(gen.model)
    stream = await prepare(loaded, gen)
    call.row.prompt_tokens = stream.prompt_tokens
    state.admit(key, stream.prompt_tokens)
    assert state.loop is not None
    job = StreamJob(state.loop, stream)
    state.submit(loaded, job)
    writer = wire.ChunkWriter(gen.model, chat, gen.include_usage)
    if gen.stream:
        call.job = job
        return StreamingResponse(sse(state, call, job, writer), media_type="text/event-stream", headers=SSE_HEADERS)
    done = await collect(request, job, state.config)
    # only an answer collected whole gives its row the job's timings and tokens; a
    # cancelled or failed one is recorded as it ends here
    call.job, call.done = job, done
    build = wire.chat_completion if chat else wire.text_completion
    return json_response(200, build(writer.id, writer.created, gen.model, done))


async def prepare(loaded: Loaded, gen: wire.Generation) -> ChatStream:
    """``backend.chat`` off the loop: the prompt is rendered, counted and checked against
    the context before anything is queued. With no max_tokens in the request, the
    ``max_tokens`` setting is used, lowered to what the context has room for."""
    request = ChatRequest(
        messages=gen.messages,
        prompt=gen.prompt,
        sampling=gen.sampling,
        tools=gen.tools,
        tool_choice=gen.tool_choice,
        parallel_tool_calls=gen.parallel_tool_calls,
        response_format=gen.response_format,
    )
    try:
        try:
            return await anyio.to_thread.run_sync(loaded.backend.chat, request)
        except ContextOverflowError as exc:
            room = exc.n_ctx - exc.prompt_tokens
            if gen.max_tokens_given or room < 1:
                raise
            smaller = replace(request, sampling=replace(request.sampling, max_tokens=room))
            return await anyio.to_thread.run_sync(loaded.backend.chat, smaller)
    except LocalAssistError as exc:
        raise errors.core_error(exc, "prompt" if gen.prompt is not None else "messages", generating=False) from None


async def collect(request: Request, job: Job, config: ServeConfig) -> Any:
    """The job's Done (non-streaming); a disconnect, the time limit or shutdown cancel it."""
    loop = asyncio.get_running_loop()
    watcher = asyncio.ensure_future(wait_disconnect(request))
    watcher.add_done_callback(lambda f: None if f.cancelled() else job.cancel("disconnect"))
    timer = loop.call_later(config.timeout_s, job.cancel, "timeout")
    try:
        while True:
            event = await job.events.get()
            if isinstance(event, (Done, Stopped, tuple)):
                break
    finally:
        watcher.cancel()
        timer.cancel()
    if job.stop_reason is not None:
        raise errors.stopped(job.stop_reason, config.timeout_s)
    if isinstance(event, Stopped):
        raise errors.core_error(event.error, "input", generating=True)
    return event


@dataclass
class StreamHooks:
    """What a front end over ``sse`` adds (the web chat): frames for events the API does not
    send (a tool's result, a notice), frames before ``[DONE]`` once the answer is done (its
    sources, its place in the log), and what to do once a stopped or failed job has ended."""

    event: Callable[[Any], bytes | None] = lambda _event: None
    done: Callable[[Done], Awaitable[bytes]] | None = None
    stopped: Callable[[], None] = lambda: None  # may be called more than once, and after done


async def sse(
    state: ServerState,
    call: CallState,
    job: StreamJob,
    writer: wire.ChunkWriter,
    hooks: StreamHooks | None = None,
) -> AsyncIterator[bytes]:
    hooks = hooks or StreamHooks()
    loop = asyncio.get_running_loop()
    timer = loop.call_later(state.config.timeout_s, job.cancel, "timeout")
    call.row.status = 200
    ended = False
    try:
        yield writer.start()
        while True:
            event = await job.events.get()
            if job.stop_reason is not None or isinstance(event, Stopped):
                # cancelled (time limit, shutdown: at once, tokens still queued are dropped) or failed
                err = (
                    errors.stopped(job.stop_reason, state.config.timeout_s)
                    if job.stop_reason is not None
                    else errors.core_error(
                        event.error if isinstance(event, Stopped) else None, "input", generating=True
                    )
                )
                call.row.status, call.row.error_code = err.status, err.code
                ended = True
                await committed(state.finish_call(call))
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
                call.done = event
                await committed(state.finish_call(call))  # before the client sees the end
                end = writer.finish(event)
                if hooks.done is not None:  # the front end's frames go before [DONE]
                    end = end[: -len(wire.DONE_FRAME)] + await hooks.done(event) + wire.DONE_FRAME
                yield end
                return
            else:
                extra = hooks.event(event)
                if extra:
                    yield extra
    finally:
        timer.cancel()
        # whatever ended the stream (even a client gone while the end was being written), the
        # front end gets to log what it has not yet, once the job is over (hooks.stopped is
        # idempotent: it does nothing after hooks.done)
        job.when_finished(hooks.stopped)
        if not ended:  # the client went away, or shutdown dropped a client that did not read: stop generating
            job.cancel("disconnect")
            err = errors.stopped("shutdown" if job.stop_reason == "shutdown" else "disconnect", state.config.timeout_s)
            call.row.status, call.row.error_code = err.status, err.code
            state.finish_call(call)


# --- embeddings


async def embeddings(request: Request, state: ServerState, call: CallState, key: KeyRecord) -> Response:
    req = wire.parse_embeddings(await read_json(request, state.config))
    call.row.model = req.model
    loaded = state.embed_model(req.model)
    if state.config.log_content:
        call.row.prompt = "\n".join(req.inputs)
    backend = loaded.backend
    state.admit(key, 0)
    assert state.loop is not None

    def work() -> tuple[list[list[float]], int]:
        vectors = [pooled(v) for v in backend.embed(req.inputs)]
        return vectors, sum(len(backend.tokenize(t)) for t in req.inputs)

    job = CallJob(state.loop, work)
    state.submit(loaded, job)
    call.job = job
    result = await collect(request, job, state.config)
    vectors, prompt_tokens = result[1]
    call.row.prompt_tokens = prompt_tokens
    state.limiter.used(key.name, prompt_tokens)
    return json_response(200, wire.embeddings(req.model, vectors, req.base64, prompt_tokens))


def pooled(vector: Any) -> list[float]:
    """One L2-normalized vector per input, as OpenAI and llama-server return them. A model
    without a pooling layer gives one vector per token: those are averaged first (the local
    engine's ``embed`` has done that already, so the normalizing must happen here)."""
    if vector and isinstance(vector[0], (list, tuple)):
        width = len(vector[0])
        vector = [sum(row[i] for row in vector) / len(vector) for i in range(width)]
    norm = sum(float(x) * float(x) for x in vector) ** 0.5 or 1.0
    return [float(x) / norm for x in vector]


# --- models, metrics


async def models(request: Request, state: ServerState, call: CallState, key: KeyRecord) -> Response:
    cards: dict[str, dict[str, Any]] = {}
    for m in state.models():  # one card per id; a model served for both lists both kinds
        card = cards.setdefault(m.name, wire.model_card(m.name, m.created, m.backend.n_ctx))
        card["meta"]["kinds"].append(m.kind)
    wanted = request.path_params.get("model")
    if wanted is None:
        return json_response(200, {"object": "list", "data": list(cards.values())})
    call.row.model = wanted
    if wanted not in cards:
        raise errors.model_not_found(wanted, sorted(cards))
    return json_response(200, cards[wanted])


async def metrics(request: Request, state: ServerState, call: CallState, key: KeyRecord) -> Response:
    text = state.metrics.render((m.name, m.kind, m.worker.waiting, m.worker.running) for m in state.models())
    return Response(text, media_type=CONTENT_TYPE)


# --- llama-server's token endpoints: no generation, so no queue and no rate limit; off
# the event loop, since a long text takes a while to tokenize


async def tokenize(request: Request, state: ServerState, call: CallState, key: KeyRecord) -> Response:
    req = tokens.parse_tokenize(await read_json(request, state.config))
    backend = token_model(state, call, req.model)
    return json_response(200, await anyio.to_thread.run_sync(tokens.tokenize, backend, req))


async def detokenize(request: Request, state: ServerState, call: CallState, key: KeyRecord) -> Response:
    name, ids = tokens.parse_detokenize(await read_json(request, state.config))
    backend = token_model(state, call, name)
    return json_response(200, await anyio.to_thread.run_sync(tokens.detokenize, backend, ids))


async def apply_template(request: Request, state: ServerState, call: CallState, key: KeyRecord) -> Response:
    name, messages = tokens.parse_apply_template(await read_json(request, state.config))
    backend = token_model(state, call, name, chat_only=True)
    return json_response(200, await anyio.to_thread.run_sync(tokens.apply_template, backend, messages))


def token_model(state: ServerState, call: CallState, name: str | None, chat_only: bool = False) -> Backend:
    chat = {n: m.backend for n, m in state.chat.items()}
    embed = {} if chat_only else {n: m.backend for n, m in state.embed.items()}
    call.row.model, backend = tokens.choose(name, chat, embed)
    return backend


# --- outside the API: no key, no call log


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.server
    waiting = sum(m.worker.waiting for m in state.models())
    running = sum(m.worker.running for m in state.models())
    status = {"ready": "ok"}.get(state.status, state.status)
    body = {"status": status, "queue_depth": waiting, "running": running}
    return json_response(200 if status == "ok" else 503, body)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405, in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        message, code = f"{request.method} is not allowed on {request.url.path}", "method_not_allowed"
    else:
        message, code = f"no such endpoint: {request.method} {request.url.path}", "unknown_url"
    return error_response(ApiError(exc.status_code, message, "invalid_request_error", code))


# --- shared steps


async def read_json(request: Request, config: ServeConfig) -> dict[str, Any]:
    limit = config.max_body
    declared = request.headers.get("content-length", "")
    too_big = declared.isdigit() and int(declared) > limit
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(config.read_timeout_s):  # a body sent slowly or never is not waited for
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
            f"the request body did not arrive within {config.read_timeout_s:g} s (serve_read_timeout)",
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


def prompt_text(gen: wire.Generation) -> str:
    if gen.prompt is not None:
        return gen.prompt
    return "\n".join(f"{m.role}: {m.content}" for m in gen.messages)


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


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(wire.dumps(obj), status_code=status, media_type="application/json", headers=headers)


def error_response(err: ApiError) -> Response:
    return json_response(err.status, err.body(), err.headers)
