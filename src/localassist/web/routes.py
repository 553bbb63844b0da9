"""The web chat's endpoints: the page's static files and its JSON API under ``/web/api``.

Every endpoint runs in the same frame (``web``): the user is found from the session
cookie (401 otherwise), a request that changes anything must come from this origin with
the session's CSRF token (403 otherwise), errors answer as JSON in the API's shape, and
what changes something is written to the call log under the key ``web:<user>``, sign-ins
and refused sign-ins too. A chat answer goes through the same model queue, rate limits,
time limit and SSE frames as ``/v1/chat/completions``; only its input (a conversation
of the log, under its memory policy) and the frames it adds before ``[DONE]`` differ.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from localassist.conversation.log_store import LogError, new_id
from localassist.errors import LocalAssistError, UsageError
from localassist.server import errors, wire
from localassist.server.calllog import Call
from localassist.server.db import ServerDBError
from localassist.server.errors import ApiError
from localassist.server.routes import (
    SSE_HEADERS,
    StreamHooks,
    collect,
    committed,
    failed,
    json_response,
    read_json,
    sse,
)
from localassist.server.state import CallState, ServerState
from localassist.server.worker import CallJob, StreamJob
from localassist.web import conversations as convs
from localassist.web import security, turns
from localassist.web.accounts import NAME_RE
from localassist.web.state import LOCAL_USER, WebState, WebUser

if TYPE_CHECKING:
    from localassist.engine.types import Done

Handler = Callable[[Request, ServerState, CallState, WebUser], Awaitable[Response]]
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SIGNINS_AT_ONCE = 4  # sign-ins checked at once from one address (each hash is 128 MiB for 0.7 s)


def cross_site() -> ApiError:
    return ApiError(403, "refused: the request does not come from this site's page", "permission_error", "cross_site")


UPLOAD_KINDS = {
    ".txt": "text",
    ".md": "text",
    ".markdown": "text",
    ".csv": "text",
    ".json": "text",
    ".html": "text",
    ".htm": "text",
    ".pdf": "pdf",
}


def web(endpoint: str, handler: Handler, *, change: bool = False, model: bool = False) -> Callable[[Request], Any]:
    """``handler`` as a web API endpoint. ``change``: it changes something (origin and CSRF
    checks; recorded in the call log). ``model``: it needs the models loaded."""

    async def route(request: Request) -> Response:
        state: ServerState = request.app.state.server
        webstate = _web(state)
        call = _call(request, webstate, endpoint)

        async def work() -> Response:
            if change and not security.same_origin(request, webstate.trust_proxy):
                raise cross_site()
            # off the loop: the session is a read (and now and then a write) of server.db
            user = await anyio.to_thread.run_sync(webstate.user, request)
            call.row.key_name = user.key.name
            if change and not security.token_matches(request.headers.get("x-csrf-token"), user.csrf):
                raise ApiError(403, "refused: missing or wrong CSRF token; reload the page", "permission_error", "csrf")
            if model:
                state.check_ready()
            return await handler(request, state, call, user)

        response = await _guarded(state, call, work)
        if not isinstance(response, StreamingResponse) and (
            change or (call.row.status >= 400 and call.row.status != 401)
        ):
            await committed(state.finish_call(call))
        return security.secured(response)

    return route


def _call(request: Request, webstate: WebState, endpoint: str) -> CallState:
    address = security.client_address(request, webstate.trust_proxy)
    row = Call(created=time.time(), key_name="web", endpoint=f"web.{endpoint}", status=0, client=address)
    return CallState(row, perf_counter())


async def _guarded(state: ServerState, call: CallState, work: Callable[[], Awaitable[Response]]) -> Response:
    """``work()``'s response, or its error as the API answers errors (never a traceback);
    the call's row gets the status. A stream records its own row when it ends."""
    endpoint = call.row.endpoint
    try:
        response = await work()
        if not isinstance(response, StreamingResponse):
            call.row.status = response.status_code
        return response
    except ApiError as err:
        return failed(call, err)
    except convs.ConversationNotFound as exc:
        return failed(call, ApiError(404, str(exc), "invalid_request_error", "not_found"))
    except (LogError, ServerDBError) as exc:  # a database of the server's cannot be read or written
        sys.stderr.write(f"localassist: error: {endpoint}: {exc}\n")
        return failed(call, ApiError(500, str(exc), "server_error", "storage_error"))
    except LocalAssistError as exc:
        return failed(call, errors.core_error(exc, "body", generating=False))
    except ClientDisconnect:
        return failed(call, errors.stopped("disconnect", state.config.timeout_s))
    except Exception as exc:  # never a traceback to the page
        sys.stderr.write(f"localassist: error: {endpoint}: {type(exc).__name__}: {exc}\n")
        return failed(call, errors.internal_error())


# --- the page


async def page(request: Request) -> Response:
    return security.secured(_static("index.html", "text/html; charset=utf-8"))


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return security.secured(Response("not found", 404, media_type="text/plain"))
    return security.secured(_static(name, STATIC[name]))


def _static(name: str, media_type: str) -> Response:
    data, etag = _packaged(name)
    # no-cache: revalidated each load (an upgrade shows at once), and cheap with the ETag
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache", "ETag": etag})


@functools.cache
def _packaged(name: str) -> tuple[bytes, str]:
    """A file of the page, read from the package once, and its ETag."""
    data = resources.files("localassist.web").joinpath("static").joinpath(name).read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


# --- session, sign-in


async def session(request: Request) -> Response:
    state: ServerState = request.app.state.server
    webstate = _web(state)
    call = _call(request, webstate, "session")

    async def work() -> Response:
        body: dict[str, Any] = {"user": None, "signin_required": True, "csrf": None}
        cookie = None
        if not await anyio.to_thread.run_sync(webstate.signin_required):
            cookie, csrf = webstate.local_session(request)
            body.update(user=LOCAL_USER, signin_required=False, csrf=csrf)
        else:
            try:
                user = await anyio.to_thread.run_sync(webstate.user, request)
                body.update(user=user.name, csrf=user.csrf)
            except ApiError:
                pass  # not signed in: the page shows the sign-in form
        if body["user"] is not None:
            body.update(await anyio.to_thread.run_sync(_page_setup, state, webstate))
        response = json_response(200, body, {"Cache-Control": "no-store"})
        if cookie is not None:
            security.session_cookie(response, cookie, webstate.secure(request))
        return response

    response = await _guarded(state, call, work)
    if call.row.status >= 500:
        await committed(state.finish_call(call))
    return security.secured(response)


def _page_setup(state: ServerState, webstate: WebState) -> dict[str, Any]:
    models = list(state.chat)
    chat = turns.defaults(webstate.settings, models[0] if models else "")
    n_ctx = max((m.backend.n_ctx for m in state.chat.values()), default=4096)
    return {
        "models": models,
        "defaults": chat.as_dict(),
        "ranges": {
            "temperature": [0, 2, 0.05],
            "top_k": [0, 200, 1],
            "top_p": [0, 1, 0.01],
            "max_tokens": [1, n_ctx, 1],
        },
        "memory_policies": list(dict.fromkeys([chat.memory, *turns.MEMORY_POLICIES])),
        "indexes": webstate.indexes(),
        "tools": list(webstate.tools),
        "upload_limit": webstate.upload_limit,
        "upload_types": sorted(k.lstrip(".") for k in UPLOAD_KINDS),
        "status": state.status,
    }


async def signin(request: Request) -> Response:
    state: ServerState = request.app.state.server
    webstate = _web(state)
    call = _call(request, webstate, "signin")
    call.row.key_name = "web:-"

    async def work() -> Response:
        if not security.same_origin(request, webstate.trust_proxy):
            raise cross_site()
        if not await anyio.to_thread.run_sync(webstate.signin_required):
            raise ApiError(400, "this server needs no sign-in", "invalid_request_error", "no_signin")
        body = await read_json(request, state.config)
        name, password = body.get("username"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
            raise ApiError(400, "give a username and a password", "invalid_request_error", "missing")
        if NAME_RE.fullmatch(name):
            call.row.key_name = f"web:{name}"
        # Failures count per (name, address), so a stranger cannot lock a user out from
        # elsewhere, and per address (SignInLimiter). One attempt per pair at a time and a
        # few per address, or attempts sent together would all pass before a hash ends.
        pair = f"{name.lower()} {call.row.client}"
        wait = webstate.limiter.check(pair, call.row.client)
        if wait is None and (pair in webstate.signing_in or webstate.in_flight(call.row.client) >= SIGNINS_AT_ONCE):
            wait = 1.0
        if wait is not None:
            raise ApiError(
                429,
                f"too many sign-in attempts; try again in {int(wait) + 1} s",
                "rate_limit_error",
                "signin_locked",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        webstate.signing_in.add(pair)
        try:
            right = await webstate.accounts.verify_async(name, password[:1024])
        finally:
            webstate.signing_in.discard(pair)
        if not right:
            webstate.limiter.failed(pair, call.row.client)
            raise ApiError(401, "wrong username or password", "authentication_error", "signin_failed")
        webstate.limiter.succeeded(pair, call.row.client)
        agent = request.headers.get("user-agent", "")[:200]
        token, csrf = await anyio.to_thread.run_sync(webstate.accounts.start_session, name, call.row.client, agent)
        response = json_response(200, {"user": name, "csrf": csrf}, {"Cache-Control": "no-store"})
        security.session_cookie(response, token, webstate.secure(request))
        return response

    response = await _guarded(state, call, work)
    await committed(state.finish_call(call))
    return security.secured(response)


async def signout(request: Request, state: ServerState, call: CallState, user: WebUser) -> Response:
    webstate = _web(state)
    if user.owner is not None:
        await anyio.to_thread.run_sync(webstate.accounts.end_session, user.token)
    response = Response(status_code=204)
    security.clear_cookie(response, webstate.secure(request))
    return response


# --- conversations


async def list_conversations(request: Request, state: ServerState, call: CallState, user: WebUser) -> Response:
    query = request.query_params.get("q", "").strip()[:200] or None
    data = await _with_log(state, lambda store: convs.listing(store, user.owner, query))
    return json_response(200, {"data": data})


async def get_conversation(request: Request, state: ServerState, call: CallState, user: WebUser) -> Response:
    cid = request.path_params["cid"]

    def read(store: Any) -> dict[str, Any]:
        raw = convs.check_owner(store, cid, user.owner)
        return convs.view(store.conversation(cid), _settings_of(state, raw).as_dict())

    return json_response(200, await _with_log(state, read))


async def patch_conversation(request: Request, state: ServerState, call: CallState, user: WebUser) -> Response:
    cid = request.path_params["cid"]
    body = await read_json(request, state.config)
    title = body.get("title")
    if title is not None and (not isinstance(title, str) or not title.strip()):
        raise UsageError("title must be text")

    def change(store: Any) -> dict[str, Any]:
        raw = convs.check_owner(store, cid, user.owner)
        chat = _settings_of(state, raw)
        if "settings" in body:
            chat = _changed(state, chat, body["settings"])
        store.update_conversation(cid, title=title, settings=chat.as_dict() if "settings" in body else None)
        row = store.listed(cid)
        if row is None:  # deleted meanwhile (another tab, `logs rm`)
            raise convs.ConversationNotFound(f"no conversation {cid}")
        return dict(row)

    return json_response(200, await _with_log(state, change))


async def delete_conversation(request: Request, state: ServerState, call: CallState, user: WebUser) -> Response:
    cid = request.path_params["cid"]
    await _with_log(state, lambda store: convs.check_owner(store, cid, user.owner))
    paths = _web(state).settings.paths
    await anyio.to_thread.run_sync(convs.delete_one, paths.data_dir, paths.cache_dir, cid, user.owner)
    return Response(status_code=204)


# --- chat


async def chat(request: Request, state: ServerState, call: CallState, user: WebUser) -> Response:
    webstate = _web(state)
    body = await read_json(request, state.config)
    cid, message, action = body.get("conversation"), body.get("message") or "", body.get("action") or "send"
    if (cid is not None and not isinstance(cid, str)) or not isinstance(message, str) or not isinstance(action, str):
        raise UsageError("conversation must be an id or null, message text, action a word")
    if cid is None and action != "send":
        raise UsageError(f"nothing to {action} in a new conversation")
    _check_log_on(webstate)

    def read(store: Any) -> tuple[turns.ChatSettings, Any]:
        if cid is None:
            return _changed(state, _settings_of(state, {}), body.get("settings")), None
        raw = convs.check_owner(store, cid, user.owner)
        return _changed(state, _settings_of(state, raw), body.get("settings")), store.conversation(cid)

    settings, conversation = await _with_log(state, read)
    loaded = state.chat_model(settings.model)
    call.row.model, call.row.stream = settings.model, True
    call.content = False  # the conversation log holds the web chat's text, and deletes it with the conversation
    conversation_id = cid or new_id()  # a new one is made only once its answer has started
    docs = await anyio.to_thread.run_sync(webstate.docs_search, settings.index) if settings.index else None
    registry = None
    if settings.tools:
        from localassist.tools.registry import resolve_tools

        registry = resolve_tools(",".join(settings.tools))

    def begin() -> turns.WebTurn | list[str]:
        from localassist.web.documents import uploaded

        attached = uploaded(webstate.data_dir, conversation) if conversation and conversation.attachments else None
        return turns.start(
            loaded.backend,
            state.config.defaults,
            settings,
            conversation,
            action,
            message,
            conversation_id=conversation_id,
            owner=user.owner,
            data_dir=webstate.data_dir,
            docs=docs,
            registry=registry,
            tool_roots=webstate.tool_roots,
            attached=attached,
        )

    try:
        if settings.memory == "summary":  # fitting may ask the model for a summary: its turn in the queue
            started = await _on_worker(request, state, loaded, lambda _stopping: begin())
        else:
            started = await anyio.to_thread.run_sync(begin)
    except LocalAssistError as exc:
        raise errors.core_error(exc, "message", generating=False) from None
    writer = wire.ChunkWriter(settings.model, True, include_usage=True)
    if isinstance(started, list):  # the index had nothing relevant: no model was asked, nothing logged
        call.row.status = 200
        await committed(state.finish_call(call))
        frames = writer.start() + b"".join(_notice(n) for n in started) + wire.DONE_FRAME
        headers = {**SSE_HEADERS, "X-Conversation-Id": cid or ""}
        return StreamingResponse(iter([frames]), media_type="text/event-stream", headers=headers)
    call.row.prompt_tokens = started.turn.stream.prompt_tokens
    state.admit(user.key, started.turn.stream.prompt_tokens)
    assert state.loop is not None
    job = StreamJob(state.loop, started.turn.stream)
    state.submit(loaded, job)
    call.job = job
    return StreamingResponse(
        _notices_first(started.notices, sse(state, call, job, writer, _hooks(job, started))),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "X-Conversation-Id": conversation_id},
    )


def _hooks(job: StreamJob, started: turns.WebTurn) -> StreamHooks:
    """A chat answer's hooks: logged once (``_logged_once``), and its tool calls and the
    agent's notices as frames under it."""

    def log() -> tuple[int | None, list[str]]:
        return turns.finish(started)[1], started.log_errors

    def event(ev: Any) -> bytes | None:
        from localassist.agent import AgentNotice, ToolFinished

        if isinstance(ev, ToolFinished):
            r = ev.record
            return wire.frame(
                {
                    "object": "localassist.tool",
                    "name": r.name,
                    "arguments": r.arguments,
                    "result": r.result,
                    "is_error": r.is_error,
                }
            )
        if isinstance(ev, AgentNotice):
            return _notice(ev.text)
        return None

    return _logged_once(job, log, started.sources, "an answer", event)


def _logged_once(
    job: StreamJob,
    log: Callable[[], tuple[int | None, list[str]]],
    sources: list[dict[str, Any]],
    what: str,
    event: Callable[[Any], bytes | None] = lambda _event: None,
) -> StreamHooks:
    """Hooks that ``log()`` the exchange exactly once: when the answer is done (then the
    frames before [DONE] give its sources, what could not be logged, and its place in the
    log), or once its job has ended after a Stop, a time limit or a failure (the answer so
    far, marked). A job that never started answered nothing: nothing is logged."""
    loop = asyncio.get_running_loop()
    logged = False

    async def done(answer: Done) -> bytes:
        nonlocal logged
        logged = True
        exchange_id, problems = await anyio.to_thread.run_sync(log)
        out = wire.frame({"object": "localassist.sources", "sources": sources}) if sources else b""
        out += b"".join(_notice(f"not logged: {problem}") for problem in problems)
        t = answer.timings
        timings = {"ttft_s": t.ttft_s, "tokens_per_s": t.generation_tokens_per_s, "exchange_id": exchange_id}
        return out + wire.frame({"object": "localassist.timings", **timings})

    def stopped() -> None:
        nonlocal logged
        if logged or job.started is None or job.abandoned:
            return
        logged = True
        later = loop.run_in_executor(None, log)
        later.add_done_callback(_report(f"logging {what} that was stopped"))

    return StreamHooks(event=event, done=done, stopped=stopped)


def _report(what: str) -> Callable[[asyncio.Future[Any]], None]:
    """A done-callback that says on stderr why background work failed (never silently)."""

    def check(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            exc = future.exception()
            sys.stderr.write(f"localassist: error: {what}: {type(exc).__name__}: {exc}\n")

    return check


async def _notices_first(notices: list[str], frames: Any) -> Any:
    first = True
    try:
        async for chunk in frames:
            yield chunk
            if first:  # after the role chunk: the memory policy's notices, as the REPL shows them
                first = False
                for text in notices:
                    yield _notice(text)
    finally:  # a client gone: the answer's own stream stops its job now, not when collected
        await frames.aclose()


def _notice(text: str) -> bytes:
    return wire.frame({"object": "localassist.notice", "text": text})


# --- documents


async def upload(request: Request, state: ServerState, call: CallState, user: WebUser) -> Response:
    webstate = _web(state)
    cid = request.path_params["cid"]
    name = _file_name(request.headers.get("x-filename", ""))
    kind = UPLOAD_KINDS.get(Path(name).suffix.lower())
    if not name or kind is None:
        raise ApiError(
            415,
            f"attach a file of type {', '.join(sorted(k.lstrip('.') for k in UPLOAD_KINDS))}",
            "invalid_request_error",
            "unsupported_type",
        )
    _check_log_on(webstate)
    data = await _read_upload(request, state, webstate.upload_limit)
    _check_content(name, kind, data)

    def read(store: Any) -> tuple[Any, turns.ChatSettings]:
        if cid == "new":
            return None, _settings_of(state, {})
        raw = convs.check_owner(store, cid, user.owner)
        return store.conversation(cid), _settings_of(state, raw)

    conversation, settings = await _with_log(state, read)
    conversation_id = new_id() if conversation is None else cid
    loaded = state.chat_model(settings.model)
    from localassist.web import documents

    def work(stopping: threading.Event) -> tuple[int, str]:
        return documents.attach(
            loaded.backend,
            state.config.defaults,
            settings,
            conversation,
            name,
            data,
            conversation_id=conversation_id,
            owner=user.owner,
            data_dir=webstate.data_dir,
            config_dir=webstate.settings.paths.config_dir,
            stopping=stopping,
        )

    call.row.model = settings.model
    state.admit(user.key, 0)
    try:
        # on the model's worker: a file too long to pin whole is summarized to fit
        index, notice = await _on_worker(request, state, loaded, work)
    except LogError:
        raise
    except LocalAssistError as exc:
        raise errors.core_error(exc, "file", generating=False) from None
    attachment = {"id": index, "name": name}
    return json_response(200, {"conversation": conversation_id, "attachment": attachment, "notice": notice})


async def summarize(request: Request, state: ServerState, call: CallState, user: WebUser) -> Response:
    webstate = _web(state)
    cid = request.path_params["cid"]
    body = await read_json(request, state.config)
    which = body.get("attachment")
    if not isinstance(which, int) or isinstance(which, bool):
        raise UsageError("attachment must be the attachment's id")

    def read(store: Any) -> tuple[Any, turns.ChatSettings]:
        raw = convs.check_owner(store, cid, user.owner)
        return store.conversation(cid), _settings_of(state, raw)

    _check_log_on(webstate)
    conversation, settings = await _with_log(state, read)
    if not 0 <= which < len(conversation.attachments):
        raise ApiError(404, f"no attachment {which}", "invalid_request_error", "not_found")
    loaded = state.chat_model(settings.model)
    call.row.model, call.row.stream = settings.model, True
    from localassist.web import documents

    def plan(stopping: threading.Event) -> documents.Summary:
        return documents.start_summary(
            loaded.backend,
            state.config.defaults,
            settings,
            conversation,
            conversation.attachments[which],
            data_dir=webstate.data_dir,
            config_dir=webstate.settings.paths.config_dir,
            stopping=stopping,
        )

    call.content = False
    try:
        state.admit(user.key, 0)
        run = await _on_worker(request, state, loaded, plan)  # the map calls: model work, in the queue
    except LocalAssistError as exc:
        raise errors.core_error(exc, "attachment", generating=False) from None
    assert state.loop is not None
    job = StreamJob(state.loop, run.stream)
    state.submit(loaded, job)
    call.job = job

    def log() -> tuple[int | None, list[str]]:
        exchange_id, problem = documents.log_summary(run, webstate.data_dir)
        return exchange_id, [problem] if problem else []

    writer = wire.ChunkWriter(settings.model, True, include_usage=True)
    frames = sse(state, call, job, writer, _logged_once(job, log, run.sources, "a summary"))
    return StreamingResponse(
        _notices_first(run.notices, frames),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "X-Conversation-Id": cid},
    )


def _file_name(header: str) -> str:
    """The uploaded file's name as shown and logged: its last path part, without control or
    format characters (a NUL, a right-to-left override), its stem cut to 120 characters."""
    import unicodedata

    name = Path(unquote(header)).name
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf")).strip()
    path = Path(name)
    return path.stem[:120] + path.suffix[:12] if name else ""


async def _on_worker(request: Request, state: ServerState, loaded: Any, fn: Callable[[threading.Event], Any]) -> Any:
    """``fn(stopping)`` run by the model's worker, in its queue (429 when full), under the
    request's time limit; what it returns. For model work that is not one streamed answer
    (fitting a long document or conversation by summarizing it); ``stopping`` is set when
    the client goes or the time limit passes, and ``fn`` stops at its next token."""
    assert state.loop is not None

    def run() -> tuple[bool, Any]:
        try:
            return True, fn(job.stopping)
        except LocalAssistError as exc:  # the core's own errors: raised here as what they are
            return False, exc
        except KeyboardInterrupt:  # stopped (stopping was set): nobody waits for it any more
            return False, None

    job = CallJob(state.loop, run)
    state.submit(loaded, job)
    ok, value = (await collect(request, job, state.config))[1]
    if not ok:
        raise value
    return value


async def _read_upload(request: Request, state: ServerState, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_big(limit)
    chunks, size = [], 0
    try:
        with anyio.fail_after(state.config.read_timeout_s * 4):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_big(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408,
            f"the file did not arrive within {state.config.read_timeout_s * 4:g} s",
            "timeout_error",
            "request_timeout",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)


def _too_big(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the file is larger than this server's limit of {limit // (1024 * 1024)} MiB (web_upload_mb)",
        "invalid_request_error",
        "file_too_large",
        headers={"Connection": "close"},
    )


def _check_content(name: str, kind: str, data: bytes) -> None:
    """The type is the content's, not the name's: a PDF must start as one, text must be text."""
    is_pdf = data.startswith(b"%PDF-")
    if kind == "pdf" and not is_pdf:
        raise ApiError(415, f"{name} is not a PDF", "invalid_request_error", "unsupported_type")
    if kind != "pdf":
        if is_pdf or b"\x00" in data[:65536]:
            raise ApiError(415, f"{name} is not a text file", "invalid_request_error", "unsupported_type")
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ApiError(415, f"{name} is not UTF-8 text", "invalid_request_error", "unsupported_type") from None


# --- shared steps


def _web(state: ServerState) -> WebState:
    assert state.web is not None
    return state.web


async def _with_log(state: ServerState, action: Callable[[Any], Any]) -> Any:
    """``action(store)`` on the conversation log, off the event loop."""
    from localassist.conversation.exchange_log import open_log

    data_dir = _web(state).data_dir

    def run() -> Any:
        store = open_log(data_dir)
        try:
            return action(store)
        finally:
            store.close()

    return await anyio.to_thread.run_sync(run)


def _settings_of(state: ServerState, raw: dict[str, Any]) -> turns.ChatSettings:
    """A conversation's stored settings over the server's defaults (a setting that is no
    longer valid here, such as a model no longer served, falls back to the default)."""
    webstate = _web(state)
    models = list(state.chat)
    chat = turns.defaults(webstate.settings, models[0] if models else "")
    indexes = webstate.indexes() if raw.get("index") else []
    for key, value in raw.items():
        try:
            chat = _fitted(state, chat.changed({key: value}, models, indexes, webstate.tools))
        except LocalAssistError:
            continue
    return chat


def _check_log_on(webstate: WebState) -> None:
    if not webstate.settings.log:  # "not logged" leaves no trace on disk: so no web conversation either
        raise UsageError(
            "the web chat keeps its conversations in the log, which is off on this server (`localassist logs on`)"
        )


def _fitted(state: ServerState, chat: turns.ChatSettings) -> turns.ChatSettings:
    """``chat``, if its max tokens fit its model's context; else a UsageError saying so."""
    loaded = state.chat.get(chat.model)
    if loaded is not None and chat.max_tokens > loaded.backend.n_ctx:
        n_ctx = loaded.backend.n_ctx
        raise UsageError(f"max_tokens must be at most {n_ctx:,}, the context of {chat.model}")
    return chat


def _changed(state: ServerState, chat: turns.ChatSettings, raw: Any) -> turns.ChatSettings:
    webstate = _web(state)
    indexes = webstate.indexes() if isinstance(raw, dict) and raw.get("index") else []
    return _fitted(state, chat.changed(raw, list(state.chat), indexes, webstate.tools))
