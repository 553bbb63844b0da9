"""`ask`'s options as docs/ask.md describes them: --chat-format, Ctrl-C with --json and
LOCALASSIST_STOP. Token counts are checked against llama.cpp's own tokenizer on prompts
written out by hand (tests/chatformats.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import chatformats
from chatformats import n_tokens

# The finish reason `ask --json` reports after Ctrl-C (docs/ask.md: "cancelled").
INTERRUPTED_REASON = "cancelled"
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
QUESTION = "Name a colour."
SYSTEM = "Be brief."


def ask_json(cli, env, *args: str):
    result = cli("ask", *args, "-T", "0", "-n", "1", "--json", "--no-log", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- --chat-format


@pytest.mark.model
def test_chat_format_chatml_sends_chatml_turns(cli, model_env, vocab):
    chat = [("system", SYSTEM), ("user", QUESTION)]
    data = ask_json(cli, model_env, "--chat-format", "chatml", "-s", SYSTEM, QUESTION)
    # the starter adds BOS itself; ChatML's text has none
    expected = n_tokens(vocab, chatformats.chatml(chat), bos=True)
    assert data["usage"]["prompt_tokens"] == expected
    # the default for this gemma3 model is Gemma's turns: a different prompt, so the flag mattered
    default = ask_json(cli, model_env, "-s", SYSTEM, QUESTION)
    assert default["usage"]["prompt_tokens"] == n_tokens(vocab, chatformats.gemma(chat))
    assert default["usage"]["prompt_tokens"] != expected


@pytest.mark.model
@pytest.mark.parametrize("name", ["gemma", "chatml", "llama3", "phi3"])
def test_each_builtin_chat_format_renders_its_family_turns(starter_model, vocab, name):
    from localassist.engine.local import LoadOptions, LocalBackend
    from localassist.engine.types import Message

    chat = [("system", SYSTEM), ("user", QUESTION), ("assistant", "Blue."), ("user", "Another?")]
    # BOS: the model's own in the text where the format asks for it, else llama.cpp adds it
    text, add_bos = {
        "gemma": (chatformats.gemma(chat), False),
        "chatml": (chatformats.chatml(chat), True),
        "llama3": (chatformats.llama3(chat, bos="<bos>"), False),
        "phi3": (chatformats.phi3(chat), True),
    }[name]
    expected = chatformats.tokens(vocab, text, bos=add_bos)
    backend = LocalBackend(starter_model, "starter", LoadOptions(chat_format=name, ctx=256, threads=2))
    try:
        assert backend.chat_tokens([Message(role, text) for role, text in chat]) == expected
    finally:
        backend.close()


@pytest.mark.parametrize("command", [["ask", "hi"], ["chat"]])
def test_unknown_chat_format_is_a_usage_error(cli, model_env, command):
    result = cli(*command, "--chat-format", "klingon", input="hi", env=model_env)
    assert result.returncode == 2, result.stderr
    assert "--chat-format must be one of auto, gguf, gemma, chatml, llama3, phi3" in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_chat_format_gguf_needs_a_template_in_the_file(cli, model_env):
    result = cli("ask", "hi", "--chat-format", "gguf", env=model_env)
    assert result.returncode == 2
    assert "has no chat template" in result.stderr and result.stderr.count("\n") == 1


# --- Ctrl-C with --json


@pytest.mark.model
def test_ctrl_c_with_json_prints_the_partial_answer_and_exits_130(model_env, greedy):
    proc = subprocess.Popen(
        [sys.executable, "-m", "localassist", "ask", "--raw", COUNTING, "-T", "0", "-n", "3000", "--json", "-v"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **model_env},
    )
    # -v reports the loaded backend on stderr just before generation starts
    seen = b""
    while b"backend=llama.cpp" not in seen:
        line = proc.stderr.readline()
        assert line, seen.decode(errors="replace")
        seen += line
    time.sleep(1.5)  # a few dozen tokens at this machine's speed
    assert proc.poll() is None, "generation ended before the interrupt"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode(errors="replace")
    assert out.count(b"\n") == 1  # one JSON object, nothing else
    data = json.loads(out)
    assert data["finish_reason"] == INTERRUPTED_REASON
    assert data["usage"]["completion_tokens"] > 0
    assert data["text"].startswith(greedy(COUNTING, 1)[0])  # the greedy continuation, as llama.cpp gives it
    assert b"Traceback" not in err


# --- LOCALASSIST_STOP


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ('["0, 1", "END"]', ["0, 1", "END"]),  # JSON array: a comma inside an item stays
        ("zzz,12", ["zzz", "12"]),  # comma-separated
    ],
)
def test_stop_env_forms_are_parsed(cli, raw, parsed):
    shown = json.loads(cli("config", "show", "--json", env={"LOCALASSIST_STOP": raw}).stdout)
    assert shown["stop"] == {"value": parsed, "source": "env LOCALASSIST_STOP"}


@pytest.mark.model
@pytest.mark.parametrize(
    ("raw", "stops"),
    [
        ('["0, 1"]', ["0, 1"]),  # read as a comma list, '["0' and ' 1"]' would never match
        ("zzz,12", ["zzz", "12"]),  # read as one string, "zzz,12" would never match
    ],
)
def test_stop_env_reaches_the_sampler(cli, model_env, greedy, raw, stops):
    env = {**model_env, "LOCALASSIST_STOP": raw}
    result = cli("ask", "--raw", COUNTING, "-T", "0", "-n", "40", "--json", "--no-log", env=env)
    data = json.loads(result.stdout)
    # the answer ends where the earliest stop string starts in llama.cpp's greedy count
    count = "".join(greedy(COUNTING, 40))
    cut = min(count.index(stop) for stop in stops if stop in count)
    assert (data["text"], data["finish_reason"]) == (count[:cut], "stop")
