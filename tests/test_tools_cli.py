"""`--tools` on the command line: flags, the calls on stderr, the log, approval on a terminal.

The model runs are the real ones (temperature 0, a forced call, few tokens); approval is
asked on a real pseudo-terminal, and refused in a process that has no terminal at all."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest
from typer.testing import CliRunner

from localassist.cli.app import app
from localassist.tools import resolve_tools

FIXTURES = Path(__file__).parent / "fixtures" / "tools"
AGENT_TOOLS = str(FIXTURES / "agent_tools.py")  # multiply(a: int, b: int), safe
EXEC_TOOLS = str(FIXTURES / "agent_exec_tools.py")  # touch(name: str), exec: asks first
QWEN = str(FIXTURES / "qwen2.5_chat_template.jinja")
FAST = ["-T", "0", "--threads", "1", "--max-steps", "1"]
runner = CliRunner()


def no_terminal(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI in a new session: no controlling terminal, so /dev/tty cannot be opened."""
    return subprocess.run(
        [sys.executable, "-m", "localassist", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
        start_new_session=True,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allow", "."], "--allow goes with --tools"),
        (["--yes-shell"], "--yes-shell goes with --tools"),
        (["--tool-choice", "required"], "--tool-choice goes with --tools"),
        (["--tools", "calc,nope"], "unknown tool 'nope'"),
        (
            ["--tools", "calc", "--tool-choice", "time"],
            "--tool-choice must be auto, none, required or one of the tools",
        ),
        (["--tools", "files", "--allow", "/no/such/folder"], "--allow /no/such/folder: no such folder"),
        (["--tools", "calc", "--raw"], "--tools cannot be combined with --raw"),
    ],
)
def test_bad_tool_flags_are_one_line_usage_errors(cli, args, message):
    result = cli("ask", *args, "question")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert result.stdout == ""


def test_yes_shell_is_documented_as_dangerous():
    text = " ".join(runner.invoke(app, ["ask", "--help"]).stdout.split())  # help is wrapped
    assert "--yes-shell" in text and "DANGEROUS: run the model's shell commands without asking" in text
    assert "--max-steps" in text and "--allow" in text and "--tool-choice" in text


def test_tools_list_shows_each_tool_with_its_safety_class():
    result = runner.invoke(app, ["tools", "list"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows == {"calc": "safe", "time": "safe", "files": "read", "shell": "exec"}
    listed = json.loads(runner.invoke(app, ["tools", "list", "--tools", EXEC_TOOLS, "--json"]).stdout)
    assert listed == [
        {
            "name": "touch",
            "safety": "exec",
            "description": "Pretend to create a file.",
            "parameters": resolve_tools(EXEC_TOOLS).get("touch").parameters,
        }
    ]


@pytest.mark.model
def test_ask_shows_each_call_on_stderr_and_logs_it(starter_chat_path):
    env = {"LOCALASSIST_MODEL": str(starter_chat_path)}
    args = ["ask", "--chat-format", QWEN, "--tools", AGENT_TOOLS, "--tool-choice", "multiply", *FAST, "-n", "60"]
    result = no_terminal([*args, "What is 17 times 23?"], env)
    assert result.returncode == 0, result.stderr
    started = re.search(r'^localassist: tool multiply \{"a": (\d+), "b": (\d+)\}$', result.stderr, re.MULTILINE)
    assert started, result.stderr
    product = int(started.group(1)) * int(started.group(2))
    assert re.search(rf"^localassist:   -> {product} \(\d+\.\d\d s\)$", result.stderr, re.MULTILINE)
    assert "stopped calling tools after 1 round (--max-steps 1)" in result.stderr
    shown = no_terminal(["logs", "show", "--format", "json", _latest(env)], env)
    (exchange,) = json.loads(shown.stdout)["exchanges"]
    (call,) = exchange["tool_calls"]
    assert (call["name"], call["result"], call["approval"]) == ("multiply", str(product), "not needed")
    assert json.loads(call["arguments"]) == {"a": int(started.group(1)), "b": int(started.group(2))}


def _latest(env: dict[str, str]) -> str:
    rows = json.loads(no_terminal(["logs", "-n", "1", "--json"], env).stdout)
    return rows[0]["conversation_id"]


@pytest.mark.model
def test_a_call_that_needs_approval_is_refused_without_a_terminal(model_env):
    args = ["ask", "--tools", EXEC_TOOLS, "--tool-choice", "touch", *FAST, "-n", "40", "Make a file."]
    result = no_terminal(args, model_env)
    assert result.returncode == 0, result.stderr
    assert "[refused: no terminal to ask on]" in result.stderr
    assert "needs the user's approval and nobody can be asked (no terminal); nothing was run" in result.stderr


@pytest.mark.model
@pytest.mark.parametrize(("answer", "decision"), [("", "declined"), ("n", "declined"), ("y", "approved")])
def test_the_terminal_is_asked_before_an_exec_call_and_no_is_the_default(model_env, answer, decision):
    args = ["-m", "localassist", "ask", "--tools", EXEC_TOOLS, "--tool-choice", "touch", *FAST, "-n", "40"]
    env = {**os.environ, **model_env, "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, [*args, "Make a file."], env=env, encoding="utf-8", timeout=300)
    child.expect(r"localassist: allow call touch\(name='[^\n]*'\)\? \[y/N\] ")
    child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert f"[{decision}]" in child.before
    if decision == "approved":
        assert "-> created " in child.before
    else:
        assert "the user declined to call touch" in child.before


@pytest.mark.model
def test_chat_with_tools_shows_the_calls_and_tools_lists_them(starter_chat_path):
    env = {
        **os.environ,
        "LOCALASSIST_MODEL": str(starter_chat_path),
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "TERM": "xterm-256color",
    }
    args = ["-m", "localassist", "chat", "--chat-format", QWEN, "--tools", AGENT_TOOLS, "--tool-choice", "multiply"]
    child = pexpect.spawn(
        sys.executable, [*args, *FAST, "-n", "60"], env=env, dimensions=(40, 120), encoding="utf-8", timeout=300
    )
    ready = "\x1b[?2004h"  # prompt_toolkit turns bracketed paste on once per prompt
    child.expect_exact(ready)
    child.sendline("/tools")
    child.expect_exact(ready)
    assert "multiply (safe)" in child.before and "at most 1 round of calls per answer" in child.before
    child.sendline("What is 17 times 23?")
    child.expect_exact(ready)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", child.before)
    started = re.search(r'localassist: tool multiply \{"a": (\d+), "b": (\d+)\}', shown)
    assert started, shown
    assert f"-> {int(started.group(1)) * int(started.group(2))} (" in shown
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.model
def test_ctrl_c_at_the_approval_prompt_ends_cleanly_and_the_call_is_logged(model_env):
    args = ["-m", "localassist", "ask", "--tools", EXEC_TOOLS, "--tool-choice", "touch", *FAST, "-n", "40"]
    env = {**os.environ, **model_env, "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, [*args, "Make a file."], env=env, encoding="utf-8", timeout=300)
    child.expect(r"\[y/N\] ")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, child.before
    assert "Traceback" not in child.before and "interrupted" in child.before
    rows = json.loads(no_terminal(["logs", "-n", "1", "--json"], model_env).stdout)
    (exchange,) = rows
    assert exchange["finish_reason"] == "cancelled"
    assert [(c["name"], c["approval"]) for c in exchange["tool_calls"]] == [("touch", "interrupted")]


@pytest.mark.model
def test_last_round_of_a_react_model_never_prints_a_call_that_is_not_run(starter_model, tmp_path):
    # The base starter has no tool template (ReAct); after --max-steps it used to copy its
    # earlier "Action: files / Action Input: {...}" lines onto stdout as the answer.
    env = {"LOCALASSIST_MODEL": str(starter_model)}
    # room for the whole call the grammar makes it write (the files tool has many arguments)
    args = ["ask", "--tools", "calc,files", "--allow", str(tmp_path), "--tool-choice", "required", *FAST, "-n", "240"]
    result = no_terminal([*args, "Which files mention the dentist?"], env)
    assert result.returncode == 0, result.stderr
    assert "stopped calling tools after 1 round" in result.stderr
    assert "Action" not in result.stdout
    if not result.stdout.strip():
        assert "the model gave no answer after its tool calls" in result.stderr


HOG_TOOLS = str(FIXTURES / "hog_tools.py")  # hog(n: int): a backtracking regex that holds the interpreter lock


@pytest.mark.model
def test_tool_timeout_stops_a_tool_that_holds_the_interpreter_lock(model_env):
    args = ["ask", "--tools", HOG_TOOLS, "--tool-choice", "hog", "--tool-timeout", "1", *FAST, "-n", "40", "Search."]
    started = time.monotonic()
    result = no_terminal(args, model_env, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "hog: timed out after 1 s; no result" in result.stderr
    assert time.monotonic() - started < 120


@pytest.mark.model
def test_ctrl_c_stops_a_tool_that_holds_the_interpreter_lock(model_env):
    args = ["-m", "localassist", "ask", "--tools", HOG_TOOLS, "--tool-choice", "hog", *FAST, "-n", "40"]
    env = {**os.environ, **model_env, "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, [*args, "Search."], env=env, encoding="utf-8", timeout=120)
    child.expect("localassist: tool hog ")
    time.sleep(1.0)  # the tool is in its search now
    child.sendintr()
    child.expect(pexpect.EOF, timeout=20)  # before the fix only kill -9 ended it
    child.close()
    assert child.exitstatus == 130, child.before
    assert "Traceback" not in child.before


# --- tools list, index notices and names, logs rm --all, chat --resume


def test_tools_list_fits_a_120_column_terminal_and_keeps_every_word():
    from localassist.cli import tools_cmd
    from localassist.cli.env import Environment, using
    from localassist.tools import resolve_tools

    def listed(**terminal) -> list[str]:
        buf = io.StringIO()
        with using(Environment(stdin=None, stdout=buf, stderr=io.StringIO(), **terminal)):
            tools_cmd.list_tools(tools=None, as_json=False)
        return buf.getvalue().splitlines()

    shown = listed(stdout_isatty=True, width=120)
    assert max(len(line) for line in shown) <= 120
    words = " ".join(shown).split()
    for tool in resolve_tools(["all"]):
        for word in tool.description.split():
            assert word in words, (tool.name, word)  # wrapped, never cut
    piped = listed(stdout_isatty=False)  # a pipe: one line per tool, for grep
    assert len(piped) == 1 + len(resolve_tools(["all"]))
