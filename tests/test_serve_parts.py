"""The server's parts without a model: limits, the queue's retry promises, keys, the
wire format's chunk sequence, the call log's query plan and writer, and the app itself
on a scripted backend (clients that leave, a model that outlasts the shutdown).
Expected values are worked out by hand in each test."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time

import pytest

pytest.importorskip("starlette")


import pytest

from localassist.engine.types import Done, SamplingParams, Timings, Usage
from localassist.errors import UsageError
from localassist.server import errors, wire
from localassist.server.calllog import Call, CallLog, recent
from localassist.server.db import connect, db_path
from localassist.server.keys import Keyring, KeyStore, Unauthorized, parse_key_lines
from localassist.server.limits import RateLimiter
from localassist.server.metrics import Histogram
from localassist.server.worker import CallJob, ModelWorker, QueueFull


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_refuses_the_third_and_says_when_the_first_leaves_the_window():
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.admit("k", 2, 0, 10) is None
    clock.now += 15
    assert limiter.admit("k", 2, 0, 10) is None
    clock.now += 5  # 20 s after the first: it leaves the 60 s window in 40 s
    assert limiter.admit("k", 2, 0, 10) == pytest.approx(40.0)
    assert limiter.admit("other", 2, 0, 10) is None  # per key
    clock.now += 40.001
    assert limiter.admit("k", 2, 0, 10) is None


def test_tokens_per_minute_waits_until_enough_old_tokens_expire():
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.admit("k", 0, 100, 5000) is None  # alone in an empty window: admitted, or it never could be
    limiter.used("k", 60)  # at t=1000
    clock.now += 10
    limiter.used("k", 30)  # at t=1010: 90 used
    assert limiter.admit("k", 0, 100, 5) is None  # 95 <= 100
    # 90 used + 20 asked = 110: 10 must go, the first 60 leave at t=1060, 50 s from now
    assert limiter.admit("k", 0, 100, 20) == pytest.approx(50.0)


def test_a_full_queue_refuses_at_once_and_spreads_the_retry_times():
    loop = asyncio.new_event_loop()
    gate = threading.Event()
    worker = ModelWorker("m", max_queue=2)
    try:
        jobs = [CallJob(loop, gate.wait) for _ in range(3)]
        worker.submit(jobs[0])
        deadline = time.monotonic() + 5
        while worker.running == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.submit(jobs[1])
        worker.submit(jobs[2])
        assert (worker.running, worker.waiting) == (1, 2)
        # no history yet: 1 s per job; 3 jobs ahead -> 3 s, then one more second per refused client
        with pytest.raises(QueueFull) as first:
            worker.submit(CallJob(loop, gate.wait))
        with pytest.raises(QueueFull) as second:
            worker.submit(CallJob(loop, gate.wait))
        assert first.value.retry_after == pytest.approx(3.0, abs=0.05)
        assert second.value.retry_after == pytest.approx(4.0, abs=0.05)
        jobs[1].cancel("disconnect")  # a waiting job that is dropped frees its place at once
        assert worker.waiting == 1
        worker.submit(CallJob(loop, gate.wait))
    finally:
        gate.set()
        assert worker.stop(10)
        loop.close()


def test_keys_are_stored_as_hashes_in_a_private_file(tmp_path):
    store = KeyStore(tmp_path)
    key = store.create("laptop")
    store.close()
    path = db_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("server.db"))
    assert key.encode() not in raw and key[3:].encode() not in raw
    import hashlib

    assert hashlib.sha256(key.encode()).hexdigest().encode() in raw


def test_keyring_accepts_a_key_refuses_wrong_and_revoked_ones(tmp_path):
    store = KeyStore(tmp_path)
    good, old = store.create("good"), store.create("old")
    ring = Keyring(store, [("env-1", "x" * 20, "env")])
    assert not ring.open
    assert ring.check(good).name == "good"
    assert ring.check("x" * 20).name == "env-1"
    for presented, reason in ((None, "missing"), ("la-wrong", "invalid"), (good + "x", "invalid")):
        with pytest.raises(Unauthorized) as err:
            ring.check(presented)
        assert err.value.reason == reason
    other = KeyStore(tmp_path)  # `keys revoke` from another process
    assert other.revoke("old")
    other.close()
    ring._checked = 0.0  # the ring looks again at most once a second
    with pytest.raises(Unauthorized) as err:
        ring.check(old)
    assert err.value.reason == "revoked"
    with pytest.raises(UsageError):
        store.create("good")  # an active name is unique
    store.close()


def test_a_keyring_that_has_had_a_key_never_opens_when_every_key_is_revoked(tmp_path):
    store = KeyStore(tmp_path)
    ring = Keyring(store, open_access=True)  # started open: no key had ever been created
    assert ring.check(None).name == "anonymous"
    key = KeyStore(tmp_path).create("first")  # `keys create` while serving closes it
    ring._checked = 0.0
    with pytest.raises(Unauthorized):
        ring.check(None)
    assert ring.check(key).name == "first"
    other = KeyStore(tmp_path)
    assert other.revoke("first")  # the last key
    other.close()
    ring._checked = 0.0
    for presented in (None, key, "la-anything-else-at-all"):
        with pytest.raises(Unauthorized):
            ring.check(presented)
    assert not ring.open and not ring.active
    store.close()


def test_open_access_is_chosen_at_start_never_by_revoking_keys():
    from localassist.server.run import open_access

    assert open_access("auto", "127.0.0.1", active=False, ever=False)  # a fresh install on loopback
    assert not open_access("auto", "127.0.0.1", active=False, ever=True)  # every key revoked: locked
    assert not open_access("auto", "127.0.0.1", active=True, ever=True)
    assert not open_access("keys", "127.0.0.1", active=False, ever=False)
    assert open_access("open", "::1", active=False, ever=True)  # the explicit choice
    assert not open_access("auto", "0.0.0.0", active=True, ever=True)
    for auth, host, active in (("open", "127.0.0.1", True), ("open", "0.0.0.0", False), ("auto", "0.0.0.0", False)):
        with pytest.raises(UsageError):
            open_access(auth, host, active=active, ever=True)
    # web chat users on another address: the server starts for them, its API locked, never open
    assert not open_access("auto", "0.0.0.0", active=False, ever=False, web_users=True)
    with pytest.raises(UsageError):
        open_access("open", "0.0.0.0", active=False, ever=False, web_users=True)


def test_key_lines_from_env_or_file():
    text = "# team keys\nalice:aaaaaaaaaaaaaaaaaaaa\n\nbbbbbbbbbbbbbbbbbbbb, carol:cccccccccccccccccccc\n"
    assert parse_key_lines(text, "file") == [
        ("alice", "a" * 20),
        ("file-2", "b" * 20),
        ("carol", "c" * 20),
    ]
    with pytest.raises(UsageError, match="shorter than 16"):
        parse_key_lines("short", "env")


def _done(text: str, reason: str) -> Done:
    return Done(text, "m", reason, Usage(7, 2, 3), Timings(0, 0.1, None, None, 0.2))


def test_stream_chunks_role_first_finish_reason_on_the_last_content_then_usage_then_done():
    writer = wire.ChunkWriter("m", chat=True, include_usage=True)
    raw = (
        writer.start() + writer.text("Hel") + writer.text("lo") + writer.text(" you") + writer.finish(_done("", "stop"))
    )
    frames = raw.decode().split("\n\n")[:-1]
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(f[len("data: ") :]) for f in frames[:-1]]
    assert {c["id"] for c in chunks} == {writer.id}
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},  # the first content goes out at once
        {"content": "lo"},
        {"content": " you"},
        None,
    ]
    assert [c["choices"][0]["finish_reason"] if c["choices"] else "-" for c in chunks] == [
        None,
        None,
        None,
        "stop",
        "-",
    ]
    assert [c["usage"] for c in chunks[:-1]] == [None] * 4
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 10


def test_stream_without_usage_has_no_usage_field_and_a_one_piece_answer_ends_with_an_empty_delta():
    writer = wire.ChunkWriter("m", chat=True, include_usage=False)
    raw = writer.start() + writer.text("Hi") + writer.finish(_done("Hi", "length"))
    chunks = [json.loads(f[len("data: ") :]) for f in raw.decode().split("\n\n")[:-2]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}


def test_every_wire_object_matches_openais_published_schema_never_a_null_system_fingerprint():
    import openai_schema
    from localassist.engine.types import ToolCall, ToolCallDelta

    def chunks(raw: bytes) -> list[dict]:
        frames = raw.decode().split("\n\n")[:-1]
        assert frames[-1] == "data: [DONE]"
        return [json.loads(f[len("data: ") :]) for f in frames[:-1]]

    for chat, path in ((True, "/chat/completions"), (False, "/completions")):
        for include_usage in (True, False):
            writer = wire.ChunkWriter("m", chat=chat, include_usage=include_usage)
            raw = writer.start() + writer.text("Hel") + writer.text("lo") + writer.finish(_done("Hello", "length"))
            for chunk in chunks(raw):
                openai_schema.check_chunk(path, chunk)
    writer = wire.ChunkWriter("m", chat=True, include_usage=True)
    raw = (
        writer.start()
        + writer.text("Let me")
        + writer.tool_call(ToolCallDelta(0, "call_1", "multiply", ""))
        + writer.tool_call(ToolCallDelta(0, None, None, '{"a": 2}'))
        + writer.finish(_done("Let me", "tool_calls"))
    )
    for chunk in chunks(raw):
        openai_schema.check_chunk("/chat/completions", chunk)
    err = errors.ApiError(503, "the server is shutting down", "unavailable_error", "shutting_down")
    for chunk in chunks(writer.error(err)):
        openai_schema.check_chunk("/chat/completions", chunk)
    openai_schema.check_error(err.body())
    call = Done("", "m", "tool_calls", Usage(7, 2, 3), Timings(0, 0.1, None, None, 0.2), (ToolCall("c", "f", "{}"),))
    for done in (_done("Hi", "stop"), call):
        body = wire.chat_completion("chatcmpl-1", 1, "m", done)
        assert "system_fingerprint" not in body
        openai_schema.check("/chat/completions", body)
    openai_schema.check("/completions", wire.text_completion("cmpl-1", 1, "m", _done("Hi", "length")))
    openai_schema.check("/embeddings", wire.embeddings("m", [[0.6, 0.8]], False, 2))
    openai_schema.check("/models/{model}", wire.model_card("m", 1, 1024))
    openai_schema.check("/models", {"object": "list", "data": [wire.model_card("m", 1, 1024)]})


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model", "missing_required_parameter"),
        ({"model": "m", "messages": []}, "messages", "invalid_value"),
        ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
        ({"model": "m", "messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content", "invalid_value"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature",
            "invalid_type",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": True},
            "temperature",
            "invalid_type",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
            "invalid_value",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**12},
            "max_tokens",
            "invalid_value",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n", "not_supported"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            "tools[0].function",
            "invalid_type",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
            "not_supported",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {}},
            "stream_options",
            "invalid_value",
        ),
    ],
)
def test_bad_chat_fields_are_named_with_a_string_code(body, param, code):
    with pytest.raises(errors.ApiError) as err:
        wire.parse_chat(body, SamplingParams())
    assert (err.value.status, err.value.param, err.value.code) == (400, param, code)
    assert set(err.value.body()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xff\xfe{}", "invalid_encoding"),
        (b"{", "invalid_json"),
        (b"[1]", "invalid_json"),
        (b"", "invalid_json"),
        (b'{"a": NaN}', "invalid_json"),
        (b"[" * 100000, "invalid_json"),
    ],
)
def test_bodies_that_are_not_a_utf8_json_object_are_400(raw, code):
    with pytest.raises(errors.ApiError) as err:
        wire.parse_body(raw)
    assert (err.value.status, err.value.code) == (400, code)


def test_histogram_buckets_are_cumulative():
    h = Histogram((0.1, 1))
    for v in (0.05, 0.1, 0.5, 3):
        h.observe(v)
    assert h.lines("x") == [
        'x_bucket{le="0.1"} 2',
        'x_bucket{le="1"} 3',
        'x_bucket{le="+Inf"} 4',
        "x_sum 3.65",
        "x_count 4",
    ]


def test_call_log_listing_reads_through_an_index_not_a_scan(tmp_path):
    log = CallLog(tmp_path)
    for i in range(50):
        log.record(Call(created=time.time(), key_name=f"k{i % 3}", endpoint="completions", status=200, model="m"))
    log.close()
    assert len(recent(tmp_path, 10)) == 10
    assert [c.key_name for c in recent(tmp_path, 2, key="k1")] == ["k1", "k1"]
    db = connect(tmp_path)
    for where in ("", "WHERE key_name = 'k1'", "WHERE model = 'm'", "WHERE status = 200"):
        plan = " ".join(
            r[3] for r in db.execute(f"EXPLAIN QUERY PLAN SELECT * FROM calls {where} ORDER BY id DESC LIMIT 20")
        )
        assert "TEMP B-TREE" not in plan and ("INDEX" in plan or plan.startswith("SCAN calls")), plan
    db.close()
    assert oct(os.stat(db_path(tmp_path)).st_mode & 0o777) == "0o600"


def test_call_log_lists_calls_in_order_of_arrival_not_of_ending(tmp_path):
    log = CallLog(tmp_path)
    log.record(Call(created=100.0, key_name="quick", endpoint="chat", status=200))  # came second, ended first
    log.record(Call(created=50.0, key_name="long-stream", endpoint="chat", status=200))
    log.close()
    assert [c.key_name for c in recent(tmp_path, 10)] == ["long-stream", "quick"]


def test_call_log_rows_stay_visible_to_other_processes_while_the_key_store_is_open(tmp_path):
    """Regression: opening the second connection (call log beside key store) used to open
    and close the database file, which drops this process's POSIX locks on it; another
    process reading the log then deleted the WAL, and later rows vanished for everyone else."""
    import subprocess
    import sys

    def count_elsewhere() -> int:
        code = (
            "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
            "print(db.execute('select count(*) from calls').fetchone()[0])"
        )
        return int(
            subprocess.run(
                [sys.executable, "-c", code, str(db_path(tmp_path))], capture_output=True, text=True, check=True
            ).stdout
        )

    def until(n: int) -> int:
        deadline = time.monotonic() + 10
        while (seen := count_elsewhere()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return seen

    store = KeyStore(tmp_path)
    log = CallLog(tmp_path)
    try:
        for n in (1, 2, 3):
            log.record(Call(created=time.time(), key_name="k", endpoint="completions", status=200))
            assert until(n) == n
    finally:
        log.close()
        store.close()


# --- the call log's writer outlives whatever happens to one row, and shutdown waits with a bound


class HeldLog(CallLog):
    """A call log whose writer waits at ``gate`` before each transaction (and raises
    ``fail`` once, if given); ``rows`` are the futures of the rows queued."""

    def __init__(self, data_dir, fail: Exception | None = None) -> None:
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.fail = fail
        self.rows: list = []
        super().__init__(data_dir)

    def record(self, call):
        row = super().record(call)
        self.rows.append(row)
        return row

    def _write(self, batch):
        self.writing.set()
        self.gate.wait(30)
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail
        super()._write(batch)


def test_cancelled_waits_on_call_log_rows_never_kill_the_writer(tmp_path):
    """A response waits for its row through ``asyncio.wrap_future``; cancelling that wait
    (what a client that goes away, or uvicorn's shutdown timeout, does) makes asyncio
    cancel the row's future. The writer used to die on it (InvalidStateError), and every
    later response then waited for ever."""
    log = HeldLog(tmp_path)

    async def main() -> None:
        rows = [
            log.record(Call(created=float(i), key_name=f"gone-{i}", endpoint="chat.completions", status=200))
            for i in range(20)
        ]
        waits = [asyncio.wrap_future(row) for row in rows]
        assert await asyncio.to_thread(log.writing.wait, 10)  # the writer is in its first transaction
        for wait in waits:
            wait.cancel()
        await asyncio.sleep(0)  # asyncio passes each cancel on to the row's future
        assert all(row.cancelled() for row in rows)
        log.gate.set()
        after = Call(created=100.0, key_name="after", endpoint="chat.completions", status=200)
        await asyncio.wait_for(asyncio.wrap_future(log.record(after)), 10)

    try:
        asyncio.run(main())
    finally:
        log.gate.set()
        log.close()
    # nobody waited for the cancelled rows, but they are written all the same
    assert [c.key_name for c in recent(tmp_path, 50)] == [f"gone-{i}" for i in range(20)] + ["after"]


def test_an_unexpected_error_in_the_call_log_writer_is_reported_once_and_the_writer_goes_on(tmp_path, capsys):
    log = HeldLog(tmp_path, fail=RuntimeError("disk on fire"))
    log.gate.set()
    try:
        assert log.record(Call(created=1.0, key_name="lost", endpoint="completions", status=200)).result(10) is None
        log.record(Call(created=2.0, key_name="kept", endpoint="completions", status=200)).result(10)
    finally:
        log.close()
    assert [c.key_name for c in recent(tmp_path, 10)] == ["kept"]
    assert capsys.readouterr().err.count("the call log cannot be written: RuntimeError: disk on fire") == 1


def scripted_server(log, backend=None):
    from localassist.server.app import create_app
    from localassist.server.state import ServeConfig, ServerState
    from scripted import ScriptedBackend

    backend = backend or ScriptedBackend(["Hello there."])
    state = ServerState(
        ServeConfig(max_queue=16), Keyring(None, open_access=True), log, lambda: [("m", backend, "chat")]
    )
    return state, create_app(state)


async def until_ready(state) -> None:
    state.start_loading(asyncio.get_running_loop())
    deadline = time.monotonic() + 10
    while state.status == "loading" and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert state.status == "ready"


async def asgi_post(app, path: str, body: dict, gone: asyncio.Event | None = None) -> list[dict]:
    """One POST through the app as uvicorn delivers it (ASGI spec 2.3, so Starlette
    listens for the disconnect while it streams); the client goes away once ``gone`` is set.
    Returns the messages sent."""
    raw = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    gone = gone or asyncio.Event()
    sent: list[dict] = []
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_streams_whose_clients_leave_while_their_rows_are_written_leave_the_server_answering(tmp_path):
    """Five streams have their answers and wait for their rows (the writer is held) when
    their clients leave: Starlette cancels each stream in that wait. The rows are written
    all the same (the wait is shielded: the writer never sees a cancelled row), and the
    next request is answered; it used to wait for ever behind a dead writer."""
    log = HeldLog(tmp_path)
    state, app = scripted_server(log)
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}

    async def main() -> tuple[list, list]:
        await until_ready(state)
        gone = asyncio.Event()
        try:
            streams = [asyncio.create_task(asgi_post(app, "/v1/chat/completions", body, gone)) for _ in range(5)]
            deadline = time.monotonic() + 10
            while len(log.rows) < 5 and time.monotonic() < deadline:  # each answer is done, its row queued
                await asyncio.sleep(0.01)
            assert len(log.rows) == 5
            gone.set()
            left = await asyncio.wait_for(asyncio.gather(*streams), 10)
            log.gate.set()
            after = await asyncio.wait_for(asgi_post(app, "/v1/chat/completions", {**body, "stream": False}), 10)
        finally:
            log.gate.set()
            state.cancel_all("shutdown")
            await asyncio.to_thread(state.close)
            await asyncio.to_thread(state.close_log)
        return left, after

    left, after = asyncio.run(main())
    for sent in left:  # cut off in the wait: the last chunk and [DONE] never went out
        assert sent[0]["status"] == 200
        assert not any(b"[DONE]" in m.get("body", b"") for m in sent)
    assert after[0]["status"] == 200
    assert json.loads(b"".join(m.get("body", b"") for m in after[1:]))["choices"][0]["message"]["content"] == (
        "Hello there."
    )
    assert not any(row.cancelled() for row in log.rows)
    assert [(c.status, c.stream) for c in recent(tmp_path, 10)] == [(200, True)] * 5 + [(200, False)]


def test_a_model_busy_past_the_shutdown_bound_is_said_so_not_freed_and_its_call_still_logged(
    tmp_path, monkeypatch, capsys
):
    """ServerState.close waited for every worker without a bound (and ignored whether it
    stopped): a model inside one long prompt batch held the shutdown for as long as the
    batch took. Now it waits STOP_S, says so, leaves the model unfreed under its running
    batch, and still writes the call's row."""
    from localassist.engine.types import ChatStream, StreamState, TextDelta
    from localassist.server import state as server_state
    from scripted import ScriptedBackend

    monkeypatch.setattr(server_state, "STOP_S", 0.2)
    batch = threading.Event()
    freed: list[bool] = []

    def chat(request):
        state = StreamState("m", prompt_tokens=10)

        def produce(stream):
            batch.wait(30)  # one long prompt batch: llama_decode does not look at the cancel
            yield TextDelta("late")
            yield state.done("stop")

        return ChatStream(state, produce)

    backend = ScriptedBackend(["x"])
    backend.chat = chat
    backend.close = lambda: freed.append(True)
    state, app = scripted_server(CallLog(tmp_path), backend)
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}

    async def main() -> list[dict]:
        await until_ready(state)
        try:
            stream = asyncio.create_task(asgi_post(app, "/v1/chat/completions", body))
            deadline = time.monotonic() + 10
            while state.chat["m"].worker.running == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            state.cancel_all("shutdown")  # the end of the grace period
            sent = await asyncio.wait_for(stream, 10)
            await asyncio.wait_for(asyncio.to_thread(state.close), 10)
            await asyncio.to_thread(state.close_log)
        finally:
            batch.set()
        return sent

    sent = asyncio.run(main())
    assert b"shutting_down" in b"".join(m.get("body", b"") for m in sent)
    assert state.left_running == ["m"] and not freed  # never freed under a running decode
    assert "m did not stop within 0.2 s of the shutdown" in capsys.readouterr().err
    assert [(c.status, c.error_code, c.prompt_tokens) for c in recent(tmp_path, 10)] == [(503, "shutting_down", 10)]


def test_revoking_the_last_key_does_not_open_a_server_listening_off_loopback(tmp_path):
    pytest.importorskip("starlette")
    from localassist.server.keys import Keyring, KeyStore, Unauthorized

    store = KeyStore(tmp_path)
    key = store.create("only")
    ring = Keyring(store)  # as `serve` builds it when a key exists
    assert ring.check(key).name == "only"
    other = KeyStore(tmp_path)  # `keys revoke only` from another process, while serving
    assert other.revoke("only")
    other.close()
    ring._checked = 0.0  # the ring looks again at most once a second
    for presented, reason in ((None, "missing"), (key, "revoked"), ("la-anything-at-all-here", "invalid")):
        with pytest.raises(Unauthorized) as err:
            ring.check(presented)
        assert err.value.reason == reason
    store.close()


def test_the_serve_range_error_writes_max_tokens_limit_as_a_whole_number():
    pytest.importorskip("starlette")
    from localassist.server.errors import ApiError
    from localassist.server.wire import parse_chat

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2_000_000}
    with pytest.raises(ApiError) as err:
        parse_chat(body, SamplingParams())
    assert "between 1 and 1048576 (got 2000000)" in str(err.value.message)  # 2**20, not 1.04858e+06


def test_core_errors_are_answered_from_one_table_by_type_not_by_message():
    from localassist.errors import (
        AnswerInvalidError,
        ContextOverflowError,
        LocalAssistError,
        SchemaError,
        ToolsError,
    )

    def answer(exc, generating=False):
        err = errors.core_error(exc, "messages", generating=generating)
        return err.status, err.code, err.param

    # the words in a message decide nothing: a schema error that talks of tools is a schema error
    assert answer(SchemaError("the tools' schema is bad")) == (400, "invalid_value", "response_format")
    assert answer(ToolsError("no schema for this tool")) == (400, "invalid_value", "tools")
    assert answer(UsageError("bad")) == (400, "invalid_value", "messages")
    overflow = ContextOverflowError(prompt_tokens=900, max_tokens=200, n_ctx=1024)
    assert answer(overflow) == (400, "context_length_exceeded", "messages")
    # mid-answer: a usage error is about no one field; any other error is the engine's, a 500
    assert answer(SchemaError("x"), generating=True) == (400, "invalid_value", None)
    assert answer(UsageError("x"), generating=True) == (400, "invalid_value", None)
    assert answer(AnswerInvalidError("x"), generating=True)[:2] == (500, "answer_invalid")
    assert answer(LocalAssistError("template refused"))[:2] == (400, "invalid_value")
    assert answer(LocalAssistError("decode failed"), generating=True)[:2] == (500, "engine_error")
