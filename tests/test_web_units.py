"""Unit tests of the web chat's logic that its HTTP and browser tests reach only in part:
the sidebar settings' checks (the CLI's own ranges), the Host and Origin rules, upload
names and types by content, and the frames a tool call and an agent notice become."""

from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace

import pytest

pytest.importorskip("starlette")

from starlette.requests import Request

from localassist.errors import UsageError
from localassist.server.errors import ApiError
from localassist.settings import load_settings
from localassist.web import routes, security, turns

MODELS = ["m1", "m2"]


def request(headers: dict[str, str], scheme: str = "http") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "scheme": scheme, "headers": raw, "path": "/", "query_string": b""})


def base() -> turns.ChatSettings:
    return turns.defaults(load_settings({}), "m1")


def test_the_defaults_are_the_clis():
    chat = base()
    settings = load_settings({})
    assert (chat.temperature, chat.top_k, chat.top_p, chat.max_tokens, chat.memory) == (
        settings.temperature,
        settings.top_k,
        settings.top_p,
        settings.max_tokens,
        settings.memory,
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"temperature": 2.5}, "between 0 and 2"),
        ({"top_p": -0.1}, "between 0 and 1"),
        ({"top_k": 1.5}, "top_k"),
        ({"max_tokens": 0}, "between 1 and 1048576"),
        ({"temperature": True}, "must be a number"),
        ({"temperature": [1]}, "must be a number"),
        ({"model": "elsewhere"}, "not served here"),
        ({"memory": "forever"}, "buffer, window:K"),
        ({"index": "secret"}, "no index"),
        ({"tools": ["shell"]}, "tools this server allows"),
        ("not an object", "must be an object"),
    ],
)
def test_a_setting_out_of_range_is_refused_naming_the_range(raw, message):
    with pytest.raises(UsageError, match=message):
        base().changed(raw, MODELS, ["docs"], ("calc",))


def test_settings_change_only_what_is_sent():
    chat = base().changed(
        {"temperature": "0.3", "top_k": 7, "model": "m2", "memory": "window:3", "index": "docs", "tools": ["calc"]},
        MODELS,
        ["docs"],
        ("calc",),
    )
    assert (chat.temperature, chat.top_k, chat.model, chat.memory, chat.index, chat.tools) == (
        0.3,
        7,
        "m2",
        "window:3",
        "docs",
        ("calc",),
    )
    assert chat.top_p == base().top_p
    assert json.loads(json.dumps(chat.as_dict()))["tools"] == ["calc"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:8080", True),
        ("LOCALHOST", True),
        ("[::1]:8080", True),
        ("127.0.0.2", True),
        ("evil.example:8080", False),
        ("127.0.0.1.evil.example", False),
        ("[::1", False),
        ("", False),
    ],
)
def test_a_loopback_host(host, loopback):
    assert security.loopback_host(request({"host": host})) is loopback


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ({"host": "h:1", "origin": "http://h:1"}, True),
        ({"host": "h:1", "referer": "http://h:1/#/c/1"}, True),
        ({"host": "h:1", "origin": "http://h:1", "sec-fetch-site": "same-origin"}, True),
        ({"host": "h:1", "origin": "http://h:1", "sec-fetch-site": "cross-site"}, False),
        ({"host": "h:1", "origin": "http://h:1", "sec-fetch-site": "same-site"}, False),
        ({"host": "h:1", "origin": "http://evil:1"}, False),
        ({"host": "h:1", "origin": "https://h:1"}, False),
        ({"host": "h:1", "origin": "null"}, False),
        ({"host": "h:1"}, False),
    ],
)
def test_a_change_must_come_from_this_origin(headers, same):
    assert security.same_origin(request(headers), trust_proxy=False) is same


def test_forwarded_headers_count_only_from_a_trusted_proxy():
    headers = {"host": "chat.example", "x-forwarded-proto": "https", "x-forwarded-for": "6.6.6.6, 10.0.0.9"}
    assert not security.is_https(request(headers), trust_proxy=False)
    assert security.is_https(request(headers), trust_proxy=True)
    # the proxy's own entry is the last one; the client wrote those before it
    assert security.client_address(request(headers), trust_proxy=True) == "10.0.0.9"
    assert security.cookie_name(True) == "__Host-localassist"


def test_upload_names_lose_paths_and_invisible_characters():
    assert routes._file_name("..%2F..%2Fetc%2Fpasswd.txt") == "passwd.txt"
    assert routes._file_name("a%00b.txt") == "ab.txt"
    assert routes._file_name("%E2%80%AEtxt.exe.md") == "txt.exe.md"
    assert routes._file_name("x" * 500 + ".pdf") == "x" * 120 + ".pdf"


@pytest.mark.parametrize(
    ("name", "kind", "data", "ok"),
    [
        ("a.pdf", "pdf", b"%PDF-1.7 ...", True),
        ("a.pdf", "pdf", b"plain words", False),
        ("a.txt", "text", b"%PDF-1.7 ...", False),
        ("a.txt", "text", b"bin\x00ary", False),
        ("a.txt", "text", "caf\u00e9".encode("latin-1"), False),
        ("a.md", "text", "# caf\u00e9".encode(), True),
    ],
)
def test_upload_types_are_the_contents(name, kind, data, ok):
    if ok:
        routes._check_content(name, kind, data)
    else:
        with pytest.raises(ApiError) as err:
            routes._check_content(name, kind, data)
        assert err.value.status == 415


def test_a_tool_call_and_an_agent_notice_become_frames_under_the_answer():
    from localassist.agent import AgentNotice, ToolFinished, ToolRecord

    record = ToolRecord(1, "c1", "calc", '{"expression": "6*7"}', "auto", "42", False, 0.01)

    async def frames() -> list[bytes | None]:
        hooks = routes._hooks(None, SimpleNamespace(sources=[]))  # type: ignore[arg-type]
        return [hooks.event(ToolFinished(record)), hooks.event(AgentNotice("out of steps")), hooks.event(object())]

    # a loop of its own, on a thread: the browser tests' Playwright holds this thread's loop
    got: list[list[bytes | None]] = []
    runner = threading.Thread(target=lambda: got.append(asyncio.run(frames())))
    runner.start()
    runner.join()
    tool, notice, other = got[0]
    assert tool is not None and notice is not None
    assert json.loads(tool[len(b"data: ") :]) == {
        "object": "localassist.tool",
        "name": "calc",
        "arguments": '{"expression": "6*7"}',
        "result": "42",
        "is_error": False,
    }
    assert json.loads(notice[len(b"data: ") :]) == {"object": "localassist.notice", "text": "out of steps"}
    assert other is None
