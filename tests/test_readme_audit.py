"""Defects found by running the documented examples as a new user would (docs/tools.md, docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localassist.agent import Agent, ToolStarted
from localassist.engine.types import ChatRequest, Message, SamplingParams
from localassist.tools import resolve_tools

FIXTURES = Path(__file__).parent / "fixtures" / "tools"


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


@pytest.mark.model
def test_a_tool_call_cut_off_by_max_tokens_is_said_not_silent(starter_chat_path):
    from localassist.engine.local import LoadOptions, LocalBackend

    path = starter_chat_path
    template = str(FIXTURES / "qwen2.5_chat_template.jinja")
    backend = LocalBackend(path, "starter-chat", LoadOptions(ctx=1024, threads=1, chat_format=template))
    try:
        agent = Agent(resolve_tools(str(FIXTURES / "agent_tools.py")), tool_choice="required")
        # '{"name": "multiply", "arguments": {"a": 17, "b": 23}}' is well over 6 tokens
        request = ChatRequest(
            messages=(Message("user", "What is 17 times 23?"),), sampling=SamplingParams(temperature=0, max_tokens=6)
        )
        stream = agent.stream(backend, request)
        events = list(stream)
        done = stream.result()
    finally:
        backend.close()
    assert not [e for e in events if isinstance(e, ToolStarted)] and not stream.records
    assert done.finish_reason == "length" and done.text == ""
    assert stream.notices == ["a tool call was cut off at --max-tokens and not run; raise --max-tokens"]


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
