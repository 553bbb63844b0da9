"""RemoteBackend against a scripted server on 127.0.0.1 (tests/fakeremote.py): the
probe of each engine, SSE streaming, usage and tool-call deltas, every error dialect
mapped to its exit code, retries on 429/503, timeouts, cancel closing the connection,
and Ollama's native API with an honest context. Nothing leaves the machine."""

from __future__ import annotations

import threading
import time

import pytest

from fakeremote import (
    FakeRemote,
    Reply,
    chunk,
    closed_port,
    llama_server,
    models,
    ndjson,
    ollama,
    sse,
    usage_chunk,
)
from localassist.engine.remote import RemoteBackend
from localassist.engine.types import ChatRequest, Message, ResponseFormat, SamplingParams, TextDelta, ToolCallDelta
from localassist.errors import (
    AnswerInvalidError,
    ExitCode,
    LocalAssistError,
    RemoteContextOverflowError,
    exit_code_for,
)

GREEDY = SamplingParams(temperature=0, max_tokens=16)


def ask(text: str, **sampling) -> ChatRequest:
    return ChatRequest(messages=(Message("user", text),), sampling=SamplingParams(temperature=0, **sampling))


@pytest.fixture
def server():
    with FakeRemote() as remote:
        yield remote


# --- connecting: which engine, which model, what context


def test_llama_server_context_comes_from_props(server):
    llama_server(server, n_ctx=3072)
    backend = RemoteBackend(server.url, name="box")
    info = backend.info()
    assert (backend.model_name, backend.n_ctx, info.remote) == ("box:qwen (remote)", 3072, True)
    assert info.details["server"] == "llama.cpp" and "/props" in info.details["ctx"]


def test_vllm_context_comes_from_max_model_len(server):
    server.route("GET", "/v1/models", Reply(json=models("Qwen/Qwen2.5-32B", owned_by="vllm", max_model_len=32768)))
    backend = RemoteBackend(server.url + "/v1/")  # a /v1 suffix and a trailing slash are accepted
    assert (backend.probe.kind, backend.n_ctx, backend.model) == ("vllm", 32768, "Qwen/Qwen2.5-32B")


def test_localassist_serve_context_comes_from_its_model_list(server):
    card = models("starter-chat", owned_by="localassist", meta={"n_ctx": 8192, "kinds": []})
    server.route("GET", "/v1/models", Reply(json=card))
    backend = RemoteBackend(server.url)
    assert (backend.probe.kind, backend.n_ctx, backend.exact_tokens) == ("localassist", 8192, False)
    with FakeRemote() as counting:  # a localassist serve that has /tokenize counts with it
        counting.route("GET", "/v1/models", Reply(json=card)).route("POST", "/tokenize", Reply(json={"tokens": []}))
        assert RemoteBackend(counting.url).exact_tokens


def test_unknown_context_is_assumed_with_a_notice_and_ctx_overrides_it(server):
    server.route("GET", "/v1/models", Reply(json=models("gpt-x", owned_by="someone")))
    notices: list[str] = []
    backend = RemoteBackend(server.url, notify=notices.append)
    assert backend.n_ctx == 4096 and backend.probe.kind == "openai-compatible"
    assert len(notices) == 1 and "unknown" in notices[0] and "--ctx" in notices[0]
    quiet: list[str] = []
    assert RemoteBackend(server.url, ctx=16384, notify=quiet.append).n_ctx == 16384 and quiet == []


def test_several_models_need_a_name_and_a_wrong_name_lists_them(server):
    server.route("GET", "/v1/models", Reply(json=models("a", "b", owned_by="vllm", max_model_len=2048)))
    with pytest.raises(LocalAssistError, match=r"several models \(a, b\)") as several:
        RemoteBackend(server.url, name="box")
    assert exit_code_for(several.value) == ExitCode.USAGE
    with pytest.raises(LocalAssistError, match=r"no model 'c' \(it offers: a, b\)") as missing:
        RemoteBackend(server.url, "c", name="box")
    assert exit_code_for(missing.value) == ExitCode.NOT_FOUND


def test_connection_refused_is_one_line_with_the_url_and_exit_3():
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(LocalAssistError) as refused:
        RemoteBackend(url, name="box")
    assert url in str(refused.value) and "\n" not in str(refused.value)
    assert exit_code_for(refused.value) == ExitCode.NOT_FOUND


def test_missing_key_variable_fails_before_anything_is_sent(server, monkeypatch):
    monkeypatch.delenv("BOX_KEY", raising=False)
    with pytest.raises(LocalAssistError, match="BOX_KEY is not set") as missing:
        RemoteBackend(server.url, key_env="BOX_KEY")
    assert exit_code_for(missing.value) == ExitCode.ACCESS_DENIED and server.requests == []


# --- streaming


def test_stream_gives_text_usage_and_finish_reason_and_sends_the_key(server, monkeypatch):
    llama_server(server)
    server.route(
        "POST",
        "/v1/chat/completions",
        Reply(lines=sse(chunk("Hel"), chunk("lo"), chunk(finish="stop"), usage_chunk(12, 2, cached=4))),
    )
    monkeypatch.setenv("BOX_KEY", "s3cret")
    backend = RemoteBackend(server.url, key_env="BOX_KEY")
    stream = backend.chat(ask("Hi", max_tokens=5, top_k=7))
    events = list(stream)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo"]
    done = stream.result()
    assert (done.text, done.finish_reason) == ("Hello", "stop")
    assert (done.prompt_tokens, done.cached_tokens, done.completion_tokens) == (12, 4, 2)
    assert done.model.endswith("(remote)")
    sent = server.requests[-1]
    assert sent.headers["Authorization"] == "Bearer s3cret"
    body = sent.json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert (body["temperature"], body["max_tokens"], body["top_k"]) == (0, 5, 7)


def test_one_backend_sends_one_session_id_for_sticky_routing(server):
    llama_server(server)
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk("a"), chunk(finish="stop"))))
    first, second = RemoteBackend(server.url), RemoteBackend(server.url)
    for backend, text in ((first, "one"), (first, "two"), (second, "three")):
        backend.chat(ask(text)).result()
    ids = [r.headers.get("X-Session-Id") for r in server.requests if r.path == "/v1/chat/completions"]
    assert ids[0] and ids[0] == ids[1] != ids[2] and len(ids[0]) == 16


def test_tool_call_deltas_are_joined_by_index(server):
    llama_server(server)
    calls = [
        chunk(tool_calls=[{"index": 0, "id": "c1", "type": "function", "function": {"name": "add", "arguments": ""}}]),
        chunk(tool_calls=[{"index": 1, "id": "c2", "type": "function", "function": {"name": "now", "arguments": ""}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"a": 1,'}}]),
        chunk(tool_calls=[{"index": 1, "function": {"arguments": "{}"}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": ' "b": 2}'}}]),
        chunk(finish="tool_calls"),
    ]
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(*calls)))
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    now = {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}
    stream = RemoteBackend(server.url).chat(
        ChatRequest(messages=(Message("user", "1+2?"),), sampling=GREEDY, tools=(tool, now))
    )
    deltas = [e for e in stream if isinstance(e, ToolCallDelta)]
    done = stream.result()
    assert [d.index for d in deltas] == [0, 1, 0, 1, 0]
    assert done.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in done.tool_calls] == [
        ("c1", "add", '{"a": 1, "b": 2}'),
        ("c2", "now", "{}"),
    ]
    assert server.posted("/v1/chat/completions")[0]["tools"] == [tool, now]


def test_a_remote_call_to_a_tool_not_offered_is_not_a_success(server):
    llama_server(server)
    calls = [
        chunk(tool_calls=[{"index": 0, "id": "c1", "type": "function", "function": {"name": "rm", "arguments": "{}"}}]),
        chunk(finish="tool_calls"),
    ]
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(*calls)))
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    stream = RemoteBackend(server.url).chat(
        ChatRequest(messages=(Message("user", "1+2?"),), sampling=GREEDY, tools=(tool,))
    )
    with pytest.raises(AnswerInvalidError, match="'rm', which is not one of the tools"):
        stream.result()


def test_a_remote_json_answer_that_breaks_its_schema_is_not_a_success(server):
    """A remote engine that ignores response_format (or enforces less) is caught by the check."""
    llama_server(server)
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk(content='{"n": 7}'), chunk(finish="stop"))))
    schema = {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 5}}, "required": ["n"]}
    stream = RemoteBackend(server.url).chat(
        ChatRequest(
            messages=(Message("user", "n?"),), sampling=GREEDY, response_format=ResponseFormat("json_schema", schema)
        )
    )
    with pytest.raises(AnswerInvalidError, match="at /n: 7 is not a multiple of 5"):
        stream.result()


def test_raw_prompt_goes_to_completions_and_ends_at_a_blank_line(server):
    llama_server(server)
    text = {"choices": [{"index": 0, "text": "blue", "finish_reason": None}]}
    end = {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}
    server.route("POST", "/v1/completions", Reply(lines=sse(text, end)))
    params = SamplingParams(temperature=0, natural_end=True)
    done = RemoteBackend(server.url).chat(ChatRequest(prompt="The sky is", sampling=params)).result()
    assert done.text == "blue"
    body = server.posted("/v1/completions")[0]
    assert body["prompt"] == "The sky is" and "stop" not in body  # applied here, after the first text


def test_a_raw_completion_that_begins_with_a_blank_line_is_not_ended_before_any_text(server):
    # Sent as a stop, "\n\n" ended the completion at once on the server: empty text, HTTP 200.
    llama_server(server)
    pieces = ["\n\n", " blue", ".\n\nThe", " grass"]
    texts = [{"choices": [{"index": 0, "text": piece, "finish_reason": None}]} for piece in pieces]
    end = {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}
    server.route("POST", "/v1/completions", Reply(lines=sse(*texts, end)))
    params = SamplingParams(temperature=0, natural_end=True)
    done = RemoteBackend(server.url).chat(ChatRequest(prompt="The sky is", sampling=params)).result()
    assert (done.text, done.finish_reason) == ("\n\n blue.", "stop")
    given = SamplingParams(temperature=0, natural_end=True, stop=("\n\n",))  # the user's own stop: as given
    server.route("POST", "/v1/completions", Reply(lines=sse(*texts, end)))
    RemoteBackend(server.url).chat(ChatRequest(prompt="The sky is", sampling=given)).result()
    assert server.posted("/v1/completions")[-1]["stop"] == ["\n\n"]


def test_json_schema_goes_as_response_format(server):
    llama_server(server)
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk("{}", finish="stop"))))
    schema = {"type": "object"}
    request = ChatRequest(
        messages=(Message("user", "x"),), sampling=GREEDY, response_format=ResponseFormat("json_schema", schema)
    )
    RemoteBackend(server.url).chat(request).result()
    sent = server.posted("/v1/chat/completions")[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == schema


def test_grammar_is_refused_by_an_engine_that_cannot_take_it(server):
    server.route("GET", "/v1/models", Reply(json=models("m", owned_by="vllm", max_model_len=2048)))
    backend = RemoteBackend(server.url)
    with pytest.raises(LocalAssistError, match="GBNF") as refused:
        backend.chat(ChatRequest(messages=(Message("user", "x"),), grammar='root ::= "a"'))
    assert exit_code_for(refused.value) == ExitCode.USAGE


def test_a_stream_that_ends_without_finishing_is_an_error(server):
    llama_server(server)
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk("half"), done=False)))
    with pytest.raises(LocalAssistError, match="before the answer was finished"):
        RemoteBackend(server.url).chat(ask("x")).result()


# --- error dialects


ERRORS = [
    # OpenAI: a string code
    (
        400,
        {
            "error": {
                "message": "maximum context length is 4096",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
        ExitCode.CONTEXT_OVERFLOW,
        "maximum context length",
    ),
    # llama-server: an int code and exceed_context_size_error with the numbers
    (
        400,
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 5000,
                "n_ctx": 4096,
            }
        },
        ExitCode.CONTEXT_OVERFLOW,
        "5,000 prompt tokens, context 4,096",
    ),
    # vLLM before 0.10.1: the error at the top level
    (
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 2048 tokens. However, you requested 3000 tokens",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
        ExitCode.CONTEXT_OVERFLOW,
        "maximum context length is 2048",
    ),
    (
        400,
        {"object": "error", "message": "temperature must be non-negative", "type": "BadRequestError", "code": 400},
        ExitCode.USAGE,
        "temperature must be non-negative",
    ),
    # vLLM >= 0.10.1
    (
        404,
        {"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}},
        ExitCode.NOT_FOUND,
        "does not exist",
    ),
    # Ollama: a bare string
    (404, {"error": "model 'llama9' not found"}, ExitCode.NOT_FOUND, "model 'llama9' not found"),
    # llama-server auth
    (
        401,
        {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}},
        ExitCode.ACCESS_DENIED,
        "BOX_KEY",
    ),
    # llama-cpp-python's server (FastAPI)
    (401, {"detail": "Invalid API key"}, ExitCode.ACCESS_DENIED, "Invalid API key"),
    (
        422,
        {"detail": [{"loc": ["body", "max_tokens"], "msg": "value is not a valid integer"}]},
        ExitCode.USAGE,
        "not a valid integer",
    ),
    # anything else: one line with the server's words
    (500, b"Internal Server Error\n<html>trace</html>", ExitCode.ERROR, "Internal Server Error"),
]


@pytest.mark.parametrize(("status", "body", "code", "words"), ERRORS)
def test_error_dialects_map_to_exit_codes(server, monkeypatch, status, body, code, words):
    llama_server(server)
    reply = Reply(status, body=body) if isinstance(body, bytes) else Reply(status, json=body)
    server.route("POST", "/v1/chat/completions", reply)
    monkeypatch.setenv("BOX_KEY", "k")
    backend = RemoteBackend(server.url, name="box", key_env="BOX_KEY")
    with pytest.raises(LocalAssistError) as failed:
        backend.chat(ask("x")).result()
    message = str(failed.value)
    assert exit_code_for(failed.value) == code, message
    assert words in message and "\n" not in message and "box (http://127.0.0.1:" in message


def test_auth_error_without_a_key_says_how_to_give_one(server):
    server.route("GET", "/v1/models", Reply(401, json={"error": {"message": "Invalid API Key", "code": 401}}))
    with pytest.raises(LocalAssistError, match="--api-key-env") as refused:
        RemoteBackend(server.url)
    assert exit_code_for(refused.value) == ExitCode.ACCESS_DENIED


@pytest.mark.parametrize(
    ("frame", "code", "words"),
    [
        ({"error": {"code": 500, "message": "slot crashed", "type": "server_error"}}, ExitCode.ERROR, "slot crashed"),
        (
            {"error": {"code": 400, "message": "context full", "type": "exceed_context_size_error"}},
            ExitCode.CONTEXT_OVERFLOW,
            "context full",
        ),
    ],
)
def test_an_error_inside_the_stream_is_raised_after_the_text_so_far(server, frame, code, words):
    llama_server(server)
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk("partial "), frame)))
    stream = RemoteBackend(server.url).chat(ask("x"))
    seen = []
    with pytest.raises(LocalAssistError) as failed:
        for event in stream:
            seen.append(event)
    assert [e.text for e in seen] == ["partial "]
    assert exit_code_for(failed.value) == code and words in str(failed.value)


def test_llama_cpp_old_error_field_in_the_stream_is_not_dropped(server):
    llama_server(server)
    old = ['error: {"code": 500, "message": "old style failure", "type": "server_error"}\n\n']
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk("a"), done=False) + old))
    with pytest.raises(LocalAssistError, match="old style failure"):
        RemoteBackend(server.url).chat(ask("x")).result()


def test_pings_and_comments_in_the_stream_are_ignored(server):
    llama_server(server)
    lines = [": ping\n\n", *sse(chunk("ok"), chunk(finish="stop"))]
    server.route("POST", "/v1/chat/completions", Reply(lines=lines))
    assert RemoteBackend(server.url).chat(ask("x")).result().text == "ok"


# --- busy servers


def test_429_waits_retry_after_then_retries_with_one_notice(server):
    llama_server(server)
    server.route(
        "POST",
        "/v1/chat/completions",
        Reply(429, json={"error": {"message": "busy", "type": "rate_limit_error"}}, headers={"Retry-After": "1"}),
        Reply(lines=sse(chunk("done"), chunk(finish="stop"))),
    )
    notices: list[str] = []
    backend = RemoteBackend(server.url, name="box", notify=notices.append)
    started = time.monotonic()
    assert backend.chat(ask("x")).result().text == "done"
    assert time.monotonic() - started >= 0.95
    assert len(server.posted("/v1/chat/completions")) == 2
    assert len(notices) == 1 and "busy (HTTP 429); retrying in 1 s (1/3)" in notices[0]


def test_503_past_the_retries_is_an_error(server):
    llama_server(server)
    server.route(
        "POST", "/v1/chat/completions", Reply(503, json={"error": "server busy"}, headers={"retry-after-ms": "10"})
    )
    backend = RemoteBackend(server.url, retries=2)
    with pytest.raises(LocalAssistError, match="busy") as busy:
        backend.chat(ask("x")).result()
    assert exit_code_for(busy.value) == ExitCode.ERROR and len(server.posted("/v1/chat/completions")) == 3


def test_a_retry_after_past_the_bound_is_not_waited_for(server):
    llama_server(server)
    server.route(
        "POST", "/v1/chat/completions", Reply(429, json={"error": "slow down"}, headers={"Retry-After": "3600"})
    )
    started = time.monotonic()
    with pytest.raises(LocalAssistError, match="asks to wait 3600 s"):
        RemoteBackend(server.url).chat(ask("x")).result()
    assert time.monotonic() - started < 5 and len(server.posted("/v1/chat/completions")) == 1


def test_a_server_that_stops_sending_times_out_with_the_url(server):
    llama_server(server)
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk("a"), done=False), stall=5))
    backend = RemoteBackend(server.url, timeout=0.5)
    with pytest.raises(LocalAssistError, match=r"sent nothing for 0\.5 s") as stalled:
        backend.chat(ask("x")).result()
    assert server.url in str(stalled.value)


# --- cancel closes the connection


def test_cancel_mid_stream_closes_the_connection_and_keeps_the_text(server):
    llama_server(server)
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk("tick "), done=False), keep_streaming=True))
    stream = RemoteBackend(server.url).chat(ask("x"))
    for event in stream:
        if isinstance(event, TextDelta):
            threading.Thread(target=stream.cancel).start()  # from another thread, as Ctrl-C or a server would
            break
    done = stream.result()
    assert done.cancelled and done.text.startswith("tick ")
    assert server.disconnected.wait(3), "the server never saw the client go"


def test_cancel_while_the_server_is_still_on_the_prompt_closes_the_connection(server):
    llama_server(server)
    server.route("POST", "/v1/chat/completions", Reply(hold_headers=True))
    stream = RemoteBackend(server.url).chat(ask("x"))
    threading.Timer(0.3, stream.cancel).start()
    started = time.monotonic()
    done = stream.result()
    assert done.cancelled and done.text == "" and time.monotonic() - started < 3
    assert server.disconnected.wait(3)


# --- counting


def test_llama_server_counts_with_its_own_template_and_tokenizer(server):
    llama_server(server)
    server.route("POST", "/apply-template", Reply(json={"prompt": "<|user|>Hi<|end|>"}))
    server.route("POST", "/tokenize", Reply(json={"tokens": [1, 2, 3, 4, 5]}))
    backend = RemoteBackend(server.url)
    assert backend.count([Message("user", "Hi")]) == 5 and backend.tokenize("Hi") == [1, 2, 3, 4, 5]
    assert server.posted("/apply-template")[0] == {"messages": [{"role": "user", "content": "Hi"}], "model": "qwen"}
    assert server.posted("/tokenize")[0]["add_special"] is True
    assert "exact" in backend.info().details["tokens"]


def test_a_server_without_a_tokenizer_gets_a_labelled_estimate(server):
    server.route("GET", "/v1/models", Reply(json=models("m", owned_by="vllm", max_model_len=4096)))
    backend = RemoteBackend(server.url)
    assert backend.count([Message("user", "Hello world")]) > len(["Hello", " world"])
    assert "estimated" in backend.info().details["tokens"] and not backend.exact_tokens


# --- Ollama: native API, num_ctx from the need, never a clipped prompt


def test_ollama_is_detected_and_driven_through_its_native_api_with_num_ctx(server):
    ollama(server, ctx=32768)
    server.route(
        "POST",
        "/api/chat",
        Reply(
            lines=ndjson(
                {"message": {"role": "assistant", "content": "Hi "}, "done": False},
                {"message": {"role": "assistant", "content": "there"}, "done": False},
                {
                    "message": {"role": "assistant", "content": ""},
                    "done": True,
                    "done_reason": "stop",
                    "prompt_eval_count": 20,
                    "eval_count": 2,
                },
            )
        ),
    )
    backend = RemoteBackend(server.url, "llama3.2")  # a bare name means :latest, as in Ollama
    assert (backend.probe.kind, backend.n_ctx, backend.model) == ("ollama", 32768, "llama3.2:latest")
    done = backend.chat(ask("Hello", max_tokens=100)).result()
    assert (done.text, done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("Hi there", "stop", 20, 2)
    body = server.posted("/api/chat")[0]
    assert body["truncate"] is False and body["shift"] is False
    assert body["options"]["num_ctx"] == 4096 and body["options"]["num_predict"] == 100
    assert server.posted("/v1/chat/completions") == []


def test_ollama_num_ctx_grows_with_the_prompt(server):
    ollama(server, ctx=32768)
    server.route(
        "POST",
        "/api/chat",
        Reply(lines=ndjson({"message": {"content": "k"}, "done": True, "prompt_eval_count": 5000, "eval_count": 1})),
    )
    backend = RemoteBackend(server.url, kind="ollama")
    backend.chat(ask("word " * 5000, max_tokens=50)).result()
    num_ctx = server.posted("/api/chat")[0]["options"]["num_ctx"]
    assert num_ctx >= backend.count([Message("user", "word " * 5000)]) + 50 and num_ctx <= 32768


def test_ollama_prompt_that_may_not_fit_is_refused_before_sending(server):
    ollama(server, ctx=2048)
    backend = RemoteBackend(server.url, kind="ollama")
    with pytest.raises(RemoteContextOverflowError, match="clip the prompt without an error") as refused:
        backend.chat(ask("lorem ipsum " * 2000))
    assert exit_code_for(refused.value) == ExitCode.CONTEXT_OVERFLOW
    assert server.posted("/api/chat") == []


def test_ollama_that_filled_its_context_anyway_is_an_error(server):
    ollama(server, ctx=32768)
    server.route(
        "POST",
        "/api/chat",
        Reply(
            lines=ndjson(
                {"message": {"content": "x"}, "done": False},
                {
                    "message": {"content": ""},
                    "done": True,
                    "done_reason": "length",
                    "prompt_eval_count": 4000,
                    "eval_count": 96,
                },
            )
        ),
    )
    with pytest.raises(RemoteContextOverflowError, match="filled its whole context"):
        RemoteBackend(server.url, kind="ollama").chat(ask("short", max_tokens=16)).result()


def test_ollama_error_line_mid_stream_is_raised(server):
    ollama(server)
    server.route(
        "POST",
        "/api/chat",
        Reply(
            lines=ndjson(
                {"message": {"content": "a"}, "done": False}, {"error": "model runner has unexpectedly stopped"}
            )
        ),
    )
    with pytest.raises(LocalAssistError, match="unexpectedly stopped") as failed:
        RemoteBackend(server.url, kind="ollama").chat(ask("x")).result()
    assert exit_code_for(failed.value) == ExitCode.ERROR


def test_ollama_tool_calls_come_whole(server):
    ollama(server)
    call = {"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}
    server.route(
        "POST",
        "/api/chat",
        Reply(
            lines=ndjson(
                {"message": {"content": "", "tool_calls": [call]}, "done": False},
                {
                    "message": {"content": ""},
                    "done": True,
                    "done_reason": "stop",
                    "prompt_eval_count": 9,
                    "eval_count": 5,
                },
            )
        ),
    )
    done = RemoteBackend(server.url, kind="ollama").chat(ask("1+2")).result()
    assert done.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in done.tool_calls] == [("add", '{"a": 1, "b": 2}')]


def test_ollama_embeddings_use_the_native_api_without_truncation(server):
    ollama(server)
    server.route("POST", "/api/embed", Reply(json={"embeddings": [[0.1, 0.2], [0.3, 0.4]]}))
    assert RemoteBackend(server.url, kind="ollama").embed(["a", "b"]) == [[0.1, 0.2], [0.3, 0.4]]
    assert server.posted("/api/embed")[0]["truncate"] is False


def test_openai_embeddings_keep_the_input_order(server):
    llama_server(server)
    data = [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}]
    server.route("POST", "/v1/embeddings", Reply(json={"data": data}))
    assert RemoteBackend(server.url).embed(["a", "b"]) == [[1.0], [2.0]]


# --- privacy


def test_plain_http_to_another_machine_warns_once_before_anything_is_sent(monkeypatch):
    from localassist.engine import remote

    url = "http://10.0.0.5:8000"
    monkeypatch.setitem(remote._PROBES, (url, None, None), remote.Probe("vllm", "m", ["m"], 4096, "test", False, 0))
    notices: list[str] = []
    backend = RemoteBackend(url, notify=notices.append)
    backend.chat(ask("one"))
    backend.chat(ask("two"))
    assert len(notices) == 1 and "plain HTTP" in notices[0] and url in notices[0]
    quiet: list[str] = []
    local = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setitem(remote._PROBES, (local, None, None), remote.Probe("vllm", "m", ["m"], 4096, "t", False, 0))
    RemoteBackend(local, notify=quiet.append).chat(ask("one"))
    assert quiet == []


def test_show_and_the_answer_say_remote(server):
    from localassist.assistant import Assistant

    llama_server(server)
    server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk("hi"), chunk(finish="stop"))))
    assistant = Assistant(RemoteBackend(server.url, name="box"), GREEDY)
    assert assistant.show()["model"] == "box:qwen (remote)"
    done = assistant.finish(assistant.send("hello"))
    assert done.model == "box:qwen (remote)" and assistant.conversation.turns[-1].content == "hi"
