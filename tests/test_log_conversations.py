"""Logging, continuing and resuming conversations, through the real CLI and model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pexpect
import pytest

from chatrepl import ANSI, Repl
from localassist.conversation.log_store import LogStore, log_path
from localassist.engine.types import Done, Timings, Usage
from logseed import logged_conversation, seed_log

pytestmark = pytest.mark.model

FAST = ("-T", "0", "-n", "6")


def logged(cli, *args):
    result = cli("logs", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_ask_logs_and_continues(cli, model_env):
    first = cli("ask", "Name three sorting algorithms", *FAST, env=model_env)
    assert first.returncode == 0, first.stderr
    second = cli("ask", "-c", "Which is stable?", *FAST, "--stats", env=model_env)
    assert second.returncode == 0, second.stderr
    rows = logged(cli)
    assert [r["prompt"] for r in rows] == ["Name three sorting algorithms", "Which is stable?"]
    assert rows[0]["conversation_id"] == rows[1]["conversation_id"]
    assert rows[1]["response"] == second.stdout.rstrip("\n")
    assert rows[0]["params"]["temperature"] == 0.0 and rows[0]["completion_tokens"] > 0
    # the continued prompt carries the first exchange
    assert rows[1]["prompt_tokens"] > rows[0]["prompt_tokens"] + rows[0]["completion_tokens"]
    cid = rows[0]["conversation_id"]
    assert f"conversation {cid}" in second.stderr
    third = cli("ask", "--cid", cid[:6], "And the fastest?", *FAST, env=model_env)
    assert third.returncode == 0
    assert len(logged(cli, "--cid", cid)) == 3


def test_logs_search_show_rm(cli, model_env):
    cli("ask", "Tell me about quicksort", *FAST, env=model_env)
    cli("ask", "Tell me about graphs", *FAST, env=model_env)
    found = logged(cli, "-q", "quicksort")
    assert [r["prompt"] for r in found] == ["Tell me about quicksort"]
    cid = found[0]["conversation_id"]
    md = cli("logs", "show", cid, "--format", "md")
    assert md.returncode == 0 and "## You\n\nTell me about quicksort" in md.stdout
    data = json.loads(cli("logs", "show", cid, "--format", "json").stdout)
    assert data["id"] == cid and len(data["exchanges"]) == 1
    assert "Tell me about" in cli("logs", "-n", "5").stdout
    assert cli("logs", "rm", cid).returncode == 0
    assert logged(cli, "-q", "quicksort") == []
    assert cli("logs", "rm", "--all", "--yes").returncode == 0
    assert logged(cli) == []
    bad = cli("logs", "show", "nope")
    assert bad.returncode == 2 and "no conversation" in bad.stderr


def test_logs_off_really_stops_writing(cli, model_env, isolated_home):
    assert cli("logs", "off").returncode == 0
    assert "logging: off" in cli("logs", "status").stdout
    cli("ask", "not logged", *FAST, env=model_env)
    assert logged(cli) == []
    assert cli("logs", "on").returncode == 0
    cli("ask", "logged", *FAST, env=model_env)
    cli("ask", "not this one", *FAST, "--no-log", env=model_env)
    assert [r["prompt"] for r in logged(cli)] == ["logged"]
    assert cli("logs", "path").stdout.strip() == str(isolated_home / "data" / "logs.db")


def test_corrupt_log_never_loses_the_answer(cli, model_env, isolated_home):
    db = isolated_home / "data" / "logs.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"garbage, not a database" * 50)
    result = cli("ask", "--raw", "1, 2, 3,", *FAST, env=model_env)
    assert result.returncode == 0
    assert result.stdout.strip()  # the answer came first
    assert "corrupt" in result.stderr and "not logged" in result.stderr
    assert result.stderr.count("\n") == 1


def test_chat_resume_reopens_the_conversation(cli, model_env):
    cli("ask", "My name is Zoltan.", *FAST, env=model_env)
    env = {**os.environ, **model_env, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "localassist", "chat", "--resume", *FAST],
        env=env,
        dimensions=(40, 120),
        encoding="utf-8",
        timeout=90,
    )
    child.expect_exact("\x1b[?2004h")
    assert "resumed" in child.before
    child.sendline("/show")
    child.expect_exact("\x1b[?2004h")
    assert "exchanges       1" in child.before
    child.sendline("What is my name?")
    child.expect_exact("\x1b[?2004h")
    child.sendeof()
    child.expect(pexpect.EOF)
    rows = logged(cli)
    assert [r["prompt"] for r in rows] == ["My name is Zoltan.", "What is my name?"]
    assert rows[0]["conversation_id"] == rows[1]["conversation_id"]


def test_continue_without_history_is_a_usage_error(cli, model_env):
    result = cli("ask", "-c", "hello", env=model_env)
    assert result.returncode == 2 and "no logged conversation to continue" in result.stderr


def test_each_logged_exchange_keeps_its_system_prompt(cli, model_env):
    first = cli("ask", "--system", "Be terse.", "Hello", *FAST, env=model_env)
    assert first.returncode == 0, first.stderr
    second = cli("ask", "-c", "Again", *FAST, env=model_env)  # the conversation's system prompt comes back
    assert second.returncode == 0, second.stderr
    third = cli("ask", "-c", "--system", "Answer in French.", "Encore", *FAST, env=model_env)
    assert third.returncode == 0, third.stderr
    rows = logged(cli)
    assert [(r["prompt"], r["system"], r["status"]) for r in rows] == [
        ("Hello", "Be terse.", "active"),
        ("Again", "Be terse.", "active"),
        ("Encore", "Answer in French.", "active"),
    ]
    found = logged(cli, "-q", "Encore")
    assert [r["prompt"] for r in found] == ["Encore"]


# --- resume applies the memory policy instead of failing


def _seed_long_conversation(home, n=12, words=60):
    store = LogStore(log_path(home / "data"))
    timings = Timings(0, None, None, None, 0)
    cid = None
    for i in range(n):
        text = f"Exchange {i}: " + " ".join(["filler"] * words)
        done = Done(text, "starter", "stop", Usage(0, 0, 0), timings)
        cid = store.log_exchange(cid, f"Question {i}? " + " ".join(["more"] * words), done, {}).conversation_id
    store.close()
    return cid


def test_resume_longer_than_the_context_drops_old_exchanges_with_a_notice(model_env, isolated_home):
    _seed_long_conversation(isolated_home)
    repl = Repl("--resume", "--ctx", "512", "-n", "8", env=model_env)
    shown = ANSI.sub("", repl.child.before)
    assert "resumed" in shown and "oldest exchanges" in shown and "to fit the context" in shown
    used = repl.send("/show")
    assert "exchanges" in used
    repl.send("And now?")  # the conversation goes on
    assert repl.exit() == 0


# --- the log and resume show the conversation as it stood on screen


def test_log_shows_the_conversation_as_it_stood_after_regen_undo_system(model_env, isolated_home):
    repl = Repl("-n", "4", env=model_env)
    repl.send("First question")
    repl.send("Second question")
    repl.send("/regen")
    repl.send("Third question")
    repl.send("/undo")
    repl.send("/system Be brief.")
    assert repl.exit() == 0
    conv = logged_conversation(isolated_home)
    assert [m.content for m in conv.messages() if m.role == "user"] == ["First question", "Second question"]
    assert conv.system == "Be brief."
    everything = logged_conversation(isolated_home, conv.id, include_hidden=True)
    assert sorted(ex.status for ex in everything.exchanges) == ["active", "active", "superseded", "undone"]
    # chat --resume shows exactly that
    again = Repl("--resume", "-n", "4", env=model_env)
    shown = again.send("/show")
    assert "exchanges       2" in shown and "Be brief." in shown
    assert again.exit() == 0
    shown_json = subprocess.run(
        [sys.executable, "-m", "localassist", "logs", "show", conv.id, "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [ex["prompt"] for ex in json.loads(shown_json)["exchanges"]] == ["First question", "Second question"]


def test_clear_and_load_are_reflected_in_the_log(model_env, isolated_home, tmp_path):
    repl = Repl("-n", "4", env=model_env)
    repl.send("Alpha")
    repl.send("Beta")
    repl.send(f"/save {tmp_path / 't.json'}")
    repl.send("/clear")
    repl.send("Gamma")
    conv = logged_conversation(isolated_home)
    assert [m.content for m in conv.messages() if m.role == "user"] == ["Gamma"]
    repl.send(f"/load {tmp_path / 't.json'}")
    assert repl.exit() == 0
    conv = logged_conversation(isolated_home)
    transcript = json.loads((tmp_path / "t.json").read_text())["messages"]
    assert [(m.role, m.content) for m in conv.messages()] == [(m["role"], m["content"]) for m in transcript]


@pytest.mark.model
def test_chat_resume_shows_the_last_exchange(model_env, isolated_home):
    from chatrepl import ANSI, Repl

    answer = "\n".join(f"line {i} of the answer" for i in range(1, 31))
    cid = seed_log(isolated_home, [("First question?", "First answer."), ("What is a quokka?\nIn one line.", answer)])
    repl = Repl("--resume", "-n", "2", env=model_env)
    shown = ANSI.sub("", repl.child.before)
    assert f"resumed {cid}: 2 exchanges" in shown
    assert ">>> What is a quokka?\n... In one line." in shown
    assert "line 30 of the answer" in shown and "line 19 of the answer" in shown  # its last 12 lines
    assert "line 18 of the answer" not in shown and "First answer." not in shown
    assert f"(18 lines above; `localassist logs show {cid}` shows it all)" in shown
    assert repl.exit() == 0
