"""Remote engines from the command line, against a scripted server on 127.0.0.1:
`remote add/list/rm` (the key never stored), `-m NAME:MODEL`, `--base-url`, `models
--remote`, errors as exit codes, and privacy: remote shown as remote everywhere, a
warning for plain HTTP to another machine (reached here through a local proxy), and
nothing contacted unless named."""

from __future__ import annotations

import json
import stat

import pytest

from conftest import run_cli
from fakeremote import FakeRemote, Reply, chunk, closed_port, llama_server, models, sse, usage_chunk
from imports import loaded_by


def answer(*pieces: str) -> Reply:
    return Reply(lines=sse(*(chunk(p) for p in pieces), chunk(finish="stop"), usage_chunk(9, len(pieces))))


@pytest.fixture
def server():
    with FakeRemote() as remote:
        llama_server(remote, n_ctx=2048)
        remote.route("POST", "/v1/chat/completions", answer("Hello", " there"))
        yield remote


def config_text(home) -> str:
    return (home / "config" / "config.toml").read_text()


def test_remote_add_stores_the_url_and_the_key_variable_never_the_key(server, isolated_home, monkeypatch):
    monkeypatch.setenv("BOX_KEY", "top-secret-key")
    added = run_cli("remote", "add", "box", server.url + "/v1/", "--key-env", "BOX_KEY")
    assert added.returncode == 0, added.stderr
    text = config_text(isolated_home)
    assert "[remotes.box]" in text and f'url = "{server.url}"' in text and 'key_env = "BOX_KEY"' in text
    assert "top-secret-key" not in text
    assert stat.S_IMODE((isolated_home / "config" / "config.toml").stat().st_mode) == 0o600
    listed = run_cli("remote", "list", "--json")
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["box"]["url"] == server.url and rows["box"]["key_set"] is True
    assert rows["ollama"]["builtin"] is True
    assert server.requests == []  # adding and listing contact nothing
    assert run_cli("remote", "rm", "box").returncode == 0
    assert "box" not in config_text(isolated_home)
    again = run_cli("remote", "rm", "box")
    assert again.returncode == 2 and "no remote named 'box'" in again.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bad:name", "http://127.0.0.1:1"], "invalid remote name"),
        (["box", "ftp://example.org"], "not an http(s) URL"),
        (["box", "http://127.0.0.1:1", "--key-env", "sk-live-123"], "not an environment variable name"),
    ],
)
def test_remote_add_refuses_bad_input_in_one_line(args, words):
    result = run_cli("remote", "add", *args)
    assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1


def test_ask_on_a_named_remote_streams_the_answer_and_shows_it_as_remote(server, monkeypatch):
    monkeypatch.setenv("BOX_KEY", "k1")
    run_cli("remote", "add", "box", server.url, "--key-env", "BOX_KEY")
    result = run_cli("ask", "-m", "box:qwen", "-T", "0", "--stats", "Say hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello there\n"
    assert "model box:qwen (remote)" in result.stderr
    sent = server.requests[-1]
    assert sent.headers["Authorization"] == "Bearer k1" and sent.json["temperature"] == 0
    logged = json.loads(run_cli("logs", "--json").stdout)
    assert logged[-1]["model"] == "box:qwen (remote)"


def test_base_url_needs_no_config_and_verbose_says_remote(server):
    result = run_cli("ask", "--base-url", server.url, "-v", "-T", "0", "Say hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello there\n"
    assert f"remote={server.url}" in result.stderr and "server=llama.cpp" in result.stderr
    assert "ctx=2048 (/props)" in result.stderr


def test_models_remote_lists_what_the_server_offers_with_context(server):
    server.route("GET", "/v1/models", Reply(json=models("a", "b", owned_by="vllm", max_model_len=32768)))
    run_cli("remote", "add", "box", server.url)
    table = run_cli("models", "--remote", "box")
    assert table.returncode == 0, table.stderr
    assert "box:a" in table.stdout and "32768" in table.stdout and "box:b" in table.stdout
    rows = json.loads(run_cli("models", "--remote", "box", "--json").stdout)
    assert [(r["name"], r["context_length"]) for r in rows] == [("box:a", 32768), ("box:b", 32768)]


def test_a_refused_key_is_exit_7_and_names_the_variable(server, monkeypatch):
    server.route(
        "POST", "/v1/chat/completions", Reply(401, json={"error": {"message": "Invalid API Key", "code": 401}})
    )
    monkeypatch.setenv("BOX_KEY", "wrong")
    run_cli("remote", "add", "box", server.url, "--key-env", "BOX_KEY")
    result = run_cli("ask", "-m", "box:qwen", "hi")
    assert result.returncode == 7 and "BOX_KEY" in result.stderr
    assert result.stderr.startswith("localassist: error:") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_an_unreachable_remote_is_exit_3_with_its_url():
    url = f"http://127.0.0.1:{closed_port()}"
    result = run_cli("ask", "--base-url", url, "hi")
    assert result.returncode == 3 and url in result.stderr and result.stderr.count("\n") == 1


def test_server_context_overflow_is_exit_4(server):
    body = {
        "error": {"code": 400, "message": "exceeds the available context size", "type": "exceed_context_size_error"}
    }
    server.route("POST", "/v1/chat/completions", Reply(400, json=body))
    result = run_cli("ask", "--base-url", server.url, "hi")
    assert result.returncode == 4 and "does not fit the context" in result.stderr


def test_plain_http_to_another_machine_warns_once(server, monkeypatch):
    # 10.0.0.5 is reached through the fake server acting as an HTTP proxy: nothing leaves this machine
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    run_cli("remote", "add", "far", "http://10.0.0.5:8000")
    result = run_cli("ask", "-m", "far:qwen", "-T", "0", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello there\n"
    assert result.stderr.count("plain HTTP") == 1 and "http://10.0.0.5:8000" in result.stderr
    local = run_cli("ask", "--base-url", server.url, "hi")  # loopback: no warning
    assert "plain HTTP" not in local.stderr


def test_chat_with_piped_input_and_no_terminal_answers_once_on_the_remote(server):
    result = run_cli("chat", "--base-url", server.url, "-T", "0", input="Say hello")
    assert result.returncode == 0, result.stderr
    assert "Hello there" in result.stdout
    assert server.posted("/v1/chat/completions")[-1]["messages"][-1] == {"role": "user", "content": "Say hello"}


def test_info_on_a_remote_name_says_it_is_remote(server):
    run_cli("remote", "add", "box", server.url)
    result = run_cli("info", "box:qwen")
    assert result.returncode == 3 and "remote server" in result.stderr and server.requests == []


def test_a_configured_remote_is_not_contacted_unless_named(server, starter_model):
    run_cli("remote", "add", "box", server.url)
    env = {"LOCALASSIST_MODEL": str(starter_model)}
    assert run_cli("models", env=env).returncode == 0
    assert run_cli("ask", "--raw", "-T", "0", "-n", "2", "The sky is", env=env).returncode == 0
    assert server.requests == []


def test_config_file_with_a_broken_remote_is_one_clear_line(isolated_home):
    config = isolated_home / "config"
    config.mkdir(parents=True)
    (config / "config.toml").write_text('[remotes.box]\nurl = "not a url"\n')
    result = run_cli("ask", "hi")
    assert result.returncode == 1 and "remote 'box'" in result.stderr and "not an http(s) URL" in result.stderr


def test_remote_flags_never_come_from_the_environment(server, starter_model):
    env = {"LOCALASSIST_BASE_URL": server.url, "LOCALASSIST_MODEL": str(starter_model)}
    result = run_cli("ask", "--raw", "-T", "0", "-n", "2", "The sky is", env=env)
    assert result.returncode == 0 and server.requests == []


def test_ctrl_c_closes_the_connection_keeps_the_text_and_exits_130(server):
    import signal
    import subprocess
    import sys
    import time

    server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk("tick "), done=False), keep_streaming=True))
    proc = subprocess.Popen(
        [sys.executable, "-m", "localassist", "ask", "--base-url", server.url, "count"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.read(5)  # the answer has started
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert (first + rest).decode().startswith("tick tick")
    assert server.disconnected.wait(5)
    logged = json.loads(run_cli("logs", "--json").stdout)
    assert logged[-1]["response"].startswith("tick ") and logged[-1]["model"].endswith("(remote)")


def test_remote_commands_import_no_http_or_model_library():
    for args in (["remote", "add", "box", "http://127.0.0.1:9"], ["remote", "list"], ["remote", "rm", "box"]):
        loaded, output = loaded_by(args, ("httpx", "llama_cpp", "numpy", "langchain_core"))
        assert loaded == [], (args, output)
