"""`localassist serve` as clients see it: real server processes on 127.0.0.1 running the
starter model, driven with the official `openai` client and raw HTTP.

Texts are compared with an oracle run of the same model in this process (the
``backend`` fixture) at temperature 0. Every prompt is used once per process: asking
the very same prompt twice in one process can break a near-tie differently, because
llama.cpp's KV prefix reuse then evaluates a one-token suffix with a different kernel
than a batch; distinct prompts are evaluated as batches in both processes."""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

import openai_schema  # noqa: E402
from localassist.engine.types import ChatRequest, Message, SamplingParams  # noqa: E402
from serverproc import ServerProc, sse_frames  # noqa: E402

pytestmark = pytest.mark.model
MODEL = "gemma-3-270m-q4_k_m"  # a model given by path is served under its file's stem
ENGINE = ["--threads", "1", "--ctx", "1024"]
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def server(starter_model, tmp_path_factory):
    """Open (no keys), chat + embeddings, a queue of 2."""
    proc = ServerProc(
        tmp_path_factory.mktemp("serve-home"),
        ["-m", str(starter_model), "--embed", str(starter_model), "--max-queue", "2", *ENGINE],
        env={"LOCALASSIST_SERVE_MAX_BODY_MB": "1", "LOCALASSIST_MAX_TOKENS": "4"},
    )
    yield proc.wait_ready()
    code = proc.stop()
    print(proc.stderr)
    assert code == 0, proc.stderr


def client(server, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kwargs.pop("api_key", "none"), **kwargs)


def alone(backend, *, prompt=None, messages=None, max_tokens=8) -> str:
    request = ChatRequest(
        messages=tuple(Message(m["role"], m["content"]) for m in messages or ()),
        prompt=prompt,
        sampling=SamplingParams(temperature=0, max_tokens=max_tokens),
    )
    return backend.chat(request).result().text


def assert_error(status, body, want_status, code, param=...):
    assert status == want_status, body
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["code"] == code and isinstance(body["error"]["message"], str)
    if param is not ...:
        assert body["error"]["param"] == param


def logged(server, where: str, args: tuple = (), timeout: float = 20) -> list[sqlite3.Row]:
    """Rows of the call log, once there (it is written in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        db = sqlite3.connect(server.home / "data" / "server.db")
        db.row_factory = sqlite3.Row
        rows = db.execute(f"SELECT * FROM calls WHERE {where}", args).fetchall()
        db.close()
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


# --- the happy paths, with the official client


def test_chat_non_stream_gives_the_text_the_model_gives_alone(server, backend):
    messages = [{"role": "user", "content": "Name a colour of the sky."}]
    reply = client(server).chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == alone(backend, messages=messages)
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens == backend.count([Message("user", messages[0]["content"])])
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_stream_with_usage_through_the_openai_client(server, backend):
    messages = [{"role": "user", "content": "Write one word about rivers."}]
    chunks = list(
        client(server).chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == alone(backend, messages=messages)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_stream_wire_format_frame_by_frame(server, backend):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say something about mountains."}],
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read()
    frames = sse_frames(raw)  # only `data: ` frames: no pings, no comments, no `event:` lines
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert content[-1]["choices"][0]["finish_reason"] == "length"  # on the last content chunk
    assert all(c["choices"][0]["finish_reason"] is None for c in content[:-1])
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == alone(backend, messages=body["messages"], max_tokens=6)


def test_completions_endpoint_continues_the_prompt(server, backend):
    reply = client(server).completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=6, temperature=0)
    assert reply.choices[0].text == alone(backend, prompt="1, 2, 3, 4,", max_tokens=6)


def test_json_schema_answer_validates_against_the_schema(server):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}, "bright": {"type": "boolean"}},
        "required": ["colour", "bright"],
        "additionalProperties": False,
    }
    reply = client(server).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Pick a colour as JSON."}],
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}},
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_embeddings_have_the_models_width_as_floats_and_as_base64(server, starter_model):
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(starter_model))
    width = int(reader.fields["gemma3.embedding_length"].parts[-1][0])  # oracle: the gguf package
    api = client(server)
    got = api.embeddings.create(model=MODEL, input=["red apples", "green pears"])  # the client asks for base64
    floats = api.embeddings.create(model=MODEL, input=["red apples", "green pears"], encoding_format="float")
    assert [len(d.embedding) for d in got.data] == [width, width]
    assert [d.index for d in got.data] == [0, 1]
    for a, b in zip(got.data, floats.data, strict=True):
        assert a.embedding == pytest.approx(b.embedding, rel=1e-6, abs=1e-6)
    assert got.data[0].embedding != got.data[1].embedding
    assert got.usage.prompt_tokens > 0


def test_models_list_and_one_model(server):
    api = client(server)
    assert [m.id for m in api.models.list()] == [MODEL]
    assert api.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError) as err:
        api.models.retrieve("gpt-4")
    assert err.value.code == "model_not_found"


def test_health_is_public_and_counts_the_queue(server):
    status, body = server.get("/health")
    assert status == 200 and body == {"status": "ok", "queue_depth": 0, "running": 0}


def test_metrics_in_prometheus_text(server):
    client(server).completions.create(model=MODEL, prompt="The sea is", max_tokens=2, temperature=0)
    text = httpx.get(server.url + "/metrics").text
    assert re.search(r'^localassist_requests_total\{endpoint="completions",status="200"\} [1-9]', text, re.M)
    assert f'localassist_queue_depth{{model="{MODEL}",kind="chat"}} 0' in text
    assert re.search(r'^localassist_tokens_total\{direction="out"\} [1-9]', text, re.M)
    assert re.search(r"^localassist_time_to_first_token_seconds_count [1-9]", text, re.M)
    assert "# TYPE localassist_decode_tokens_per_second histogram" in text


# --- every error, exact shape


def test_error_shapes(server):
    def post(body: bytes, path="/v1/chat/completions"):
        resp = httpx.post(server.url + path, content=body, timeout=60)
        return resp.status_code, resp.json()

    ok_msg = [{"role": "user", "content": "hi"}]
    assert_error(*post(b"{not json"), 400, "invalid_json")
    assert_error(*post(b'{"model": "x", "messages": [{"role": "user", "content": "\xff"}]}'), 400, "invalid_encoding")
    assert_error(
        *post(json.dumps({"model": MODEL, "messages": ok_msg, "temperature": "hot"}).encode()),
        400,
        "invalid_type",
        "temperature",
    )
    assert_error(
        *post(json.dumps({"model": MODEL, "messages": ok_msg, "max_tokens": 10**9}).encode()),
        400,
        "invalid_value",
        "max_tokens",
    )
    assert_error(*post(json.dumps({"model": "gpt-4o", "messages": ok_msg}).encode()), 404, "model_not_found", "model")
    assert_error(
        *post(json.dumps({"model": MODEL, "messages": ok_msg, "logit_bias": {"1": 5}}).encode()),
        400,
        "not_supported",
        "logit_bias",
    )
    assert_error(
        *post(json.dumps({"model": MODEL, "input": [1, 2]}).encode(), "/v1/embeddings"), 400, "not_supported", "input"
    )
    assert_error(*post(b"{" + b" " * (1024 * 1024) + b"}"), 413, "request_too_large")
    status, body = (
        httpx.get(server.url + "/v1/chat/completions").status_code,
        httpx.get(server.url + "/v1/chat/completions").json(),
    )
    assert_error(status, body, 405, "method_not_allowed")
    assert_error(*post(b"{}", "/v1/nothing"), 404, "unknown_url")


def test_context_length_exceeded_before_generating_with_the_counts(server, backend):
    content = "word " * 1100
    status, body = server.post(
        "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 10}
    )
    assert_error(status, body, 400, "context_length_exceeded", "messages")
    prompt = backend.count([Message("user", content)])
    assert prompt > 1024
    assert "maximum context length is 1024 tokens" in body["error"]["message"]
    assert f"{prompt + 10} tokens ({prompt} in the prompt, 10 for the completion)" in body["error"]["message"]


def test_a_prompt_that_fills_the_context_is_refused_even_without_max_tokens(server, backend):
    words = "cat " * 1100
    assert backend.count([Message("user", words)]) >= 1024
    status, body = server.post(
        "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": words}]}
    )
    assert_error(status, body, 400, "context_length_exceeded")


# --- load: 12 concurrent streaming clients against --max-queue 2


def _counting(n: int) -> str:
    return ", ".join(str(i) for i in range(n, n + 4)) + ","


def _raw_stream(server, prompt: str) -> tuple[int, str, dict]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 10, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as resp:
        raw = resp.read()
        if resp.status_code != 200:
            return resp.status_code, "", {"headers": dict(resp.headers), "body": json.loads(raw)}
    chunks = [json.loads(f) for f in sse_frames(raw)[:-1]]
    assert not any("error" in c for c in chunks), chunks
    return 200, "".join(c["choices"][0]["text"] for c in chunks), {}


def test_twelve_streaming_clients_either_get_their_own_text_or_429_then_the_client_retries(server, backend):
    first = [_counting(100 + 17 * i) for i in range(12)]
    second = [_counting(500 + 23 * i) for i in range(12)]
    expected = {p: alone(backend, prompt=p, max_tokens=10) for p in first + second}
    assert len(set(expected.values())) == 24  # distinct answers: cross-talk would show

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda p: (p, *_raw_stream(server, p)), first))
    refused = [r for r in results if r[1] == 429]
    assert refused, "12 clients against 1 running + 2 waiting: some must be refused"
    for prompt, status, text, info in results:
        assert status in (200, 429), info
        if status == 200:
            assert text == expected[prompt]
        else:
            assert_error(429, info["body"], 429, "queue_full")
            assert int(info["headers"]["retry-after"]) >= 1
            assert 0 < int(info["headers"]["retry-after-ms"]) <= 60_000

    api = client(server, max_retries=8)

    def with_retries(prompt: str) -> str:
        stream = api.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0, stream=True)
        return "".join(c.choices[0].text for c in stream)

    with ThreadPoolExecutor(12) as pool:
        texts = list(pool.map(with_retries, second))
    assert texts == [expected[p] for p in second]
    metrics = httpx.get(server.url + "/metrics").text
    assert not re.search(r'status="5\d\d"', metrics), metrics


def test_disconnect_mid_stream_stops_generation_and_frees_the_worker(server):
    body = {"model": MODEL, "prompt": "7, 8, 9, 10,", "max_tokens": 300, "temperature": 0, "stream": True}
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    payload = json.dumps(body).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    seen = b""
    t_first = None
    while seen.count(b'"text":"') < 4:  # the role-less completion chunks: wait for 4 of them
        seen += sock.recv(65536)
        t_first = t_first or time.perf_counter()
    per_token = (time.perf_counter() - t_first) / 3
    sock.close()
    closed = time.perf_counter()
    reply = client(server).completions.create(model=MODEL, prompt="Blue", max_tokens=1, temperature=0)
    assert reply.choices[0].text is not None
    waited = time.perf_counter() - closed
    (cancelled,) = logged(server, "prompt = ?", (body["prompt"],))
    assert cancelled["status"] == 499 and cancelled["error_code"] == "client_disconnected"
    # it stopped within a token or two of the disconnect, not after 300
    assert 4 <= cancelled["completion_tokens"] <= 4 + 3, dict(cancelled)
    assert waited < 10 * per_token + 1.0, (waited, per_token)


def test_call_log_has_key_model_endpoint_tokens_and_timings(server, cli):
    client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Log me please"}], max_tokens=3, temperature=0
    )
    assert logged(server, "prompt = ?", ("user: Log me please",))
    result = cli("logs", "--server", "--json", "-n", "50", env={"LOCALASSIST_HOME": str(server.home)})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    mine = [r for r in rows if r["prompt"] == "user: Log me please"]
    assert len(mine) == 1
    row = mine[0]
    assert row["key_name"] == "anonymous" and row["model"] == MODEL and row["endpoint"] == "chat.completions"
    assert row["status"] == 200 and row["completion_tokens"] == 3 and row["prompt_tokens"] > 0
    assert row["queue_s"] >= 0 and 0 < row["ttft_s"] <= row["total_s"]
    assert row["answer"]  # content logging is on by default on loopback
    table = cli("logs", "--server", env={"LOCALASSIST_HOME": str(server.home)})
    assert "chat.completions" in table.stdout and "KEY" in table.stdout


# --- auth, limits, bind rule


@pytest.fixture(scope="module")
def keyed(starter_model, tmp_path_factory):
    home = tmp_path_factory.mktemp("keyed-home")
    from conftest import run_cli

    env = {"LOCALASSIST_HOME": str(home)}
    keys = {
        name: run_cli("keys", "create", name, *extra, env=env).stdout.strip()
        for name, extra in (("alice", []), ("bob", []), ("slow", ["--rpm", "2"]))
    }
    proc = ServerProc(
        home,
        ["-m", str(starter_model), *ENGINE],
        env={"LOCALASSIST_API_KEYS": "ci:" + "k" * 24, "LOCALASSIST_SERVE_LOG_CONTENT": "false"},
    )
    proc.keys = keys
    yield proc.wait_ready()
    assert proc.stop() == 0, proc.stderr


def test_auth_bearer_and_x_api_key_work_and_every_failure_is_401_invalid_api_key(keyed, cli):
    ok = client(keyed, api_key=keyed.keys["alice"]).models.list()
    assert [m.id for m in ok] == [MODEL]
    assert keyed.get("/v1/models", {"X-Api-Key": keyed.keys["bob"]})[0] == 200
    assert keyed.get("/v1/models", {"Authorization": "Bearer " + "k" * 24})[0] == 200  # from the environment
    status, body = keyed.get("/v1/models")
    assert_error(status, body, 401, "invalid_api_key")
    assert "didn't provide an API key" in body["error"]["message"]
    assert_error(*keyed.get("/v1/models", {"Authorization": "Bearer la-wrong"}), 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        client(keyed, api_key="la-nope").models.list()
    assert keyed.get("/health")[0] == 200  # public
    revoked = cli("keys", "revoke", "bob", env={"LOCALASSIST_HOME": str(keyed.home)})
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(1.2)  # the server looks at the key store at most once a second
    status, body = keyed.get("/v1/models", {"X-Api-Key": keyed.keys["bob"]})
    assert_error(status, body, 401, "invalid_api_key")
    assert "revoked" in body["error"]["message"]
    listing = cli("keys", "list", "--json", env={"LOCALASSIST_HOME": str(keyed.home)})
    by_name = {k["name"]: k for k in json.loads(listing.stdout)}
    assert by_name["alice"]["last_used"] is not None and by_name["bob"]["revoked"] is not None


def test_per_key_requests_per_minute_answers_429_with_retry_after(keyed):
    headers = {"Authorization": "Bearer " + keyed.keys["slow"]}
    body = {"model": MODEL, "prompt": "Slow and", "max_tokens": 1, "temperature": 0}
    assert keyed.post("/v1/completions", body, headers)[0] == 200
    assert keyed.post("/v1/completions", {**body, "prompt": "Slow but"}, headers)[0] == 200
    resp = httpx.post(keyed.url + "/v1/completions", json={**body, "prompt": "Slow or"}, headers=headers)
    assert_error(resp.status_code, resp.json(), 429, "rate_limit_exceeded")
    assert 50 <= int(resp.headers["retry-after"]) <= 60
    other = {"Authorization": "Bearer " + keyed.keys["alice"]}
    assert keyed.post("/v1/completions", {**body, "prompt": "Quick or"}, other)[0] == 200  # limits are per key


def test_call_log_names_the_key_never_stores_it_and_no_content_when_off(keyed):
    client(keyed, api_key=keyed.keys["alice"]).completions.create(
        model=MODEL, prompt="Secret plans", max_tokens=2, temperature=0
    )
    assert logged(keyed, "key_name = 'alice' AND endpoint = 'completions'")
    data = keyed.home / "data"
    raw = b"".join(p.read_bytes() for p in data.iterdir() if p.name.startswith("server.db"))
    for key in keyed.keys.values():
        assert key.encode() not in raw
    assert b"Secret plans" not in raw  # serve_log_content=false
    db = sqlite3.connect(data / "server.db")
    names = {r[0] for r in db.execute("SELECT key_name FROM calls")}
    db.close()
    assert "alice" in names


def test_non_loopback_bind_without_keys_is_refused(cli):
    result = cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in result.stderr
    assert "keys create" in result.stderr and "Traceback" not in result.stderr


# --- the process: time limit, SIGTERM


def test_request_time_limit_then_sigterm_during_a_stream_exits_0(starter_model, tmp_path):
    proc = ServerProc(
        tmp_path / "home", ["-m", str(starter_model), "--timeout", "2", *ENGINE], env={"LOCALASSIST_SERVE_GRACE": "1"}
    ).wait_ready()
    try:
        long = {"model": MODEL, "prompt": "1, 2, 3,", "max_tokens": 900, "temperature": 0}
        resp = httpx.post(proc.url + "/v1/completions", json=long, timeout=60)
        assert_error(resp.status_code, resp.json(), 408, "request_timeout")
        assert resp.headers["x-should-retry"] == "false"

        frames: list[bytes] = []
        started = threading.Event()

        def stream() -> None:
            with httpx.stream(
                "POST", proc.url + "/v1/completions", json={**long, "stream": True, "prompt": "4, 5,"}, timeout=60
            ) as r:
                for line in r.iter_lines():
                    if line:
                        frames.append(line.encode())
                        started.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert started.wait(60)
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0, proc.stderr
        reader.join(10)
    finally:
        proc.stop()
    assert frames[-1] == b"data: [DONE]"
    error = json.loads(frames[-2][len(b"data: ") :])
    assert error["error"]["code"] in ("shutting_down", "request_timeout")
    assert "Traceback" not in proc.stderr


# --- fuzz: bodies of every shape, never a 500


def test_fuzzed_requests_never_get_a_500_or_a_traceback(server):
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = (
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "robot"]) | values},
        optional={"content": st.text(max_size=40) | values, "tool_call_id": values, "tool_calls": values},
    )
    # max_tokens mostly small (a generation may run), sometimes absurd; everything else anything
    fields = {
        "model": st.just(MODEL) | values,
        "messages": st.lists(message, max_size=3) | values,
        "prompt": st.text(max_size=40) | values,
        "input": st.text(min_size=1, max_size=20) | st.lists(st.text(max_size=10), max_size=3) | values,
        "max_tokens": st.integers(-2, 3) | st.just(10**9) | values,
        "temperature": st.floats(-1, 3) | values,
        "stream": st.booleans() | values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": values}) | values,
        "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=20) | values,
        "response_format": st.sampled_from([{"type": "json_object"}, {"type": "json_schema"}]) | values,
        "seed": values,
        "top_p": values,
        "top_k": values,
        "n": values,
        "tools": values,
        "logprobs": values,
        "encoding_format": values,
        "dimensions": values,
    }
    bodies = st.fixed_dictionaries({}, optional=fields).map(lambda d: json.dumps(d).encode()) | st.binary(max_size=64)
    paths = st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
    http = httpx.Client(base_url=server.url, timeout=60)
    statuses: list[int] = []

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(path=paths, body=bodies)
    def check(path: str, body: bytes) -> None:
        resp = http.post(path, content=body)
        statuses.append(resp.status_code)
        assert resp.status_code < 500, (path, body, resp.text)
        assert "Traceback" not in resp.text
        operation = path.removeprefix("/v1")
        if resp.status_code >= 400:
            error = resp.json()["error"]
            assert set(error) == ERROR_KEYS and isinstance(error["code"], str), resp.text
            openai_schema.check_error(resp.json())
        elif resp.headers["content-type"].startswith("text/event-stream"):
            frames = sse_frames(resp.content)
            assert frames[-1] == "[DONE]"
            for f in frames[:-1]:
                openai_schema.check_chunk(operation, json.loads(f))
        elif path != "/v1/embeddings" or '"embedding":"' not in resp.text:  # base64: a string, as OpenAI sends
            openai_schema.check(operation, resp.json())

    try:
        check()
    finally:
        http.close()
    assert 400 in statuses  # the fuzz reached the validation


# --- the container's entry point, run directly (no container engine here)


def _dockerfile() -> tuple[dict[str, str], list[str], list[str]]:
    """ENV (runtime stage), ENTRYPOINT and HEALTHCHECK CMD of the Dockerfile."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", runtime, re.M).group(1))
    health = json.loads(re.search(r"CMD (\[.*\])$", runtime.split("HEALTHCHECK", 1)[1], re.M).group(1))
    return env, entry, health


def test_container_entry_point_refuses_without_keys_and_serves_with_a_secret_file(starter_model, tmp_path, cli):
    import subprocess
    import sys

    env, entry, health = _dockerfile()
    assert entry == ["localassist", "serve"]
    assert env["LOCALASSIST_SERVE_HOST"] == "0.0.0.0" and env["LOCALASSIST_HOME"] == "/data"
    container = {k: v for k, v in env.items() if k.startswith("LOCALASSIST_SERVE_")}
    container["LOCALASSIST_SERVE_PORT"] = "0"
    # as the image starts with no keys at all: refused, with the reason
    refused = cli(*entry[1:], "-m", str(starter_model), env=container)
    assert refused.returncode == 2 and "without API keys" in refused.stderr
    # with a Docker secret file of keys (host moved to loopback: tests only use 127.0.0.1)
    secret = tmp_path / "api_keys"
    secret.write_text("# team\nci:" + "s" * 32 + "\n")
    proc = ServerProc(
        tmp_path / "data",
        ["-m", str(starter_model), *ENGINE],
        env={**container, "LOCALASSIST_SERVE_HOST": "127.0.0.1", "LOCALASSIST_SERVE_KEY_FILE": str(secret)},
    ).wait_ready()
    try:
        port = proc.url.rsplit(":", 1)[1]
        check = subprocess.run([sys.executable, *health[1:]], env={"LOCALASSIST_SERVE_PORT": port}, timeout=30)
        assert check.returncode == 0  # the HEALTHCHECK command, as Docker would run it
        assert proc.get("/v1/models")[0] == 401
        assert proc.get("/v1/models", {"Authorization": "Bearer " + "s" * 32})[0] == 200
    finally:
        assert proc.stop() == 0


@pytest.mark.model
def test_serve_embeddings_are_unit_length_as_openai_and_llama_server_return_them(starter_model):
    pytest.importorskip("starlette")
    import math

    from localassist.engine.local import LoadOptions, LocalBackend
    from localassist.server.routes import pooled  # what /v1/embeddings applies to each of backend.embed's vectors

    backend = LocalBackend(starter_model, "starter", LoadOptions(ctx=512, threads=1, embedding=True))
    try:
        raw = backend.embed(["red apples", "green pears"])
    finally:
        backend.close()
    for vector in raw:
        served = pooled(vector)
        assert math.fsum(x * x for x in served) == pytest.approx(1.0, abs=1e-9)
        length = math.sqrt(math.fsum(b * b for b in vector))
        cosine = math.fsum(a * b for a, b in zip(served, vector, strict=True)) / length
        assert cosine == pytest.approx(1.0, abs=1e-9)  # the same direction, only the length changed
