"""User tools: schemas built from a real file's signatures and docstrings; loading errors name the culprit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Literal

import pytest

from localassist.errors import UsageError
from localassist.tools import Safety, ToolContext, run_tool, safe
from localassist.tools.runner import GRACE_S
from localassist.tools.user import function_tool, load_user_tools

FIXTURES = Path(__file__).parent / "fixtures" / "tools"


@pytest.fixture
def user_file(tmp_path):
    """A copy of the fixture, so the test also sees whether loading leaves a __pycache__ behind."""
    target = tmp_path / "user_tools.py"
    shutil.copy(FIXTURES / "user_tools.py", target)
    return target


def test_schemas_come_from_signatures_and_docstrings(user_file):
    tools = {tool.name: tool for tool in load_user_tools(user_file)}
    assert list(tools) == ["word_count", "convert_temperature", "tag_files"]  # no _helper, no imported join
    assert tools["word_count"].spec() == {
        "type": "function",
        "function": {
            "name": "word_count",
            "description": "Count the words in a text.",
            "parameters": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "description": "The text to count."},
                    "unique": {
                        "type": "boolean",
                        "description": "Count each distinct word once, ignoring case.",
                        "default": False,
                    },
                },
                "required": ["text"],
                "additionalProperties": False,
            },
        },
    }
    assert tools["convert_temperature"].description == "Convert a temperature between Celsius and Fahrenheit."
    assert tools["convert_temperature"].parameters == {
        "type": "object",
        "properties": {
            "value": {"type": "number", "description": "The temperature."},
            "unit": {"type": "string", "enum": ["C", "F"], "description": "The unit of value."},
            "digits": {
                "anyOf": [{"type": "integer"}, {"type": "null"}],
                "description": "Round to this many digits.",
                "default": None,
            },
        },
        "required": ["value", "unit"],
        "additionalProperties": False,
    }
    assert tools["tag_files"].description == "tag files"
    assert tools["tag_files"].parameters["properties"] == {
        "paths": {"type": "array", "items": {"type": "string"}},
        "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}], "default": None},
        "limits": {
            "anyOf": [{"type": "object", "additionalProperties": {"type": "integer"}}, {"type": "null"}],
            "default": None,
        },
    }
    assert not (user_file.parent / "__pycache__").exists()


def test_user_tools_are_exec_unless_marked_safe(user_file):
    tools = {tool.name: tool for tool in load_user_tools(user_file)}
    assert tools["word_count"].safety is Safety.SAFE
    assert tools["convert_temperature"].safety is Safety.EXEC
    assert tools["tag_files"].safety is Safety.EXEC


def test_safe_user_tool_runs_and_exec_user_tool_needs_approval(user_file):
    tools = {tool.name: tool for tool in load_user_tools(user_file)}
    assert run_tool(tools["word_count"], {"text": "a b A", "unique": True}, ToolContext()).content == "2"
    arguments = {"value": 100, "unit": "C"}
    refused = run_tool(tools["convert_temperature"], arguments, ToolContext())
    assert refused.is_error and "needs the user's approval" in refused.content
    asked = []
    approved = run_tool(tools["convert_temperature"], arguments, ToolContext(approve=lambda r: asked.append(r) or True))
    assert approved.content == "212.0 F"
    assert asked[0].describe() == "call convert_temperature(value=100, unit='C')"
    assert run_tool(tools["tag_files"], {"paths": ["a"]}, ToolContext(assume_yes=True)).content == (
        '{"paths": ["a"], "tags": [], "limits": {}}'
    )


def test_invalid_arguments_get_a_repair_message_with_the_schema(user_file):
    tool = next(t for t in load_user_tools(user_file) if t.name == "convert_temperature")
    result = run_tool(tool, {"value": "hot", "unit": "K", "extra": 1}, ToolContext(assume_yes=True))
    assert result.is_error
    assert result.content.startswith("invalid arguments for tool 'convert_temperature': ")
    assert "'extra' was unexpected" in result.content
    assert "arguments.unit: 'K' is not one of ['C', 'F']" in result.content
    assert "arguments.value: 'hot' is not of type 'number'" in result.content
    assert '"enum":["C","F"]' in result.content


def test_a_function_without_type_hints_is_an_error_that_names_it():
    with pytest.raises(UsageError, match=r"function 'shout': parameter 'text' has no type hint"):
        load_user_tools(FIXTURES / "user_tools_untyped.py")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(x: int:\n    pass\n", "syntax error on line 1"),
        ("raise RuntimeError('boom')\n", "loading it raised RuntimeError: boom"),
        ("_private = 1\n", "defines no public functions"),
        ("import datetime\ndef f(when: datetime.date) -> str:\n    return ''\n", "unsupported type hint"),
        ("def f(*args: int) -> int:\n    return 0\n", "must be a plain named parameter"),
    ],
)
def test_broken_tool_files_are_usage_errors(tmp_path, source, message):
    path = tmp_path / "tools.py"
    path.write_text(source)
    with pytest.raises(UsageError, match=message):
        load_user_tools(path)


def test_a_missing_tools_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_user_tools(tmp_path / "nope.py")


def test_a_tool_that_raises_reports_the_error_to_the_model():
    @safe
    def divide(a: int, b: int) -> float:
        """Divide."""
        return a / b

    result = run_tool(function_tool(divide), {"a": 1, "b": 0}, ToolContext())
    assert result.is_error
    assert result.content == "divide: ZeroDivisionError: division by zero"


def test_a_tool_past_its_timeout_is_reported():
    release = threading.Event()

    @safe
    def stuck(mode: Literal["wait"]) -> str:
        """Wait until released."""
        release.wait(30)
        return "late"

    started = time.monotonic()
    result = run_tool(function_tool(stuck), {"mode": "wait"}, ToolContext(timeout_s=0.2))
    release.set()
    assert result.is_error
    assert result.content == "stuck: timed out after 0.2 s; no result"
    assert time.monotonic() - started < 0.2 + GRACE_S + 1


def test_async_user_tools_are_awaited():
    @safe
    async def hello(name: str) -> str:
        """Greet."""
        return f"hi {name}"

    assert run_tool(function_tool(hello), {"name": "Ada"}, ToolContext()).content == "hi Ada"


# --- a user tool that holds the interpreter lock is still stopped (issue #19, item 4)

HOG_TOOLS = FIXTURES / "hog_tools.py"
RUN_IN_A_CHILD = """
import sys, time
from localassist.tools import ToolContext, run_tool
from localassist.tools.user import load_user_tools

(hog,) = [t for t in load_user_tools(sys.argv[1]) if t.name == "hog"]
print("started", flush=True)
started = time.monotonic()
result = run_tool(hog, {"n": 1}, ToolContext(timeout_s=float(sys.argv[2])))
print(f"{time.monotonic() - started:.2f}", result.is_error, result.content, flush=True)
"""


def _hog_child(tmp_path: Path, timeout_s: float) -> tuple[subprocess.Popen[str], Path]:
    """The call in a child process: before the fix the tool ran on a thread of the caller, and
    holding the lock there hung the caller (here the child, not the test)."""
    pid_file = tmp_path / "hog.pid"
    child = subprocess.Popen(
        [sys.executable, "-c", RUN_IN_A_CHILD, str(HOG_TOOLS), str(timeout_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOG_PID_FILE": str(pid_file)},
    )
    return child, pid_file


def _finish(child: subprocess.Popen[str], seconds: float, what: str) -> tuple[str, str]:
    try:
        return child.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail(what)


def _gone(pid_file: Path) -> bool:
    """Whether the tool's process has ended (it is killed here if not, so no test leaves it spinning)."""
    pid = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return False


def test_a_user_tool_holding_the_interpreter_lock_stops_at_its_timeout(tmp_path):
    child, pid_file = _hog_child(tmp_path, timeout_s=1)
    stdout, stderr = _finish(child, 1 + GRACE_S + 20, "the tool ran past its 1 s time limit")
    assert child.returncode == 0, stderr
    seconds, outcome = stdout.splitlines()[1].split(" ", 1)
    assert outcome == "True hog: timed out after 1 s; no result"
    assert float(seconds) < 1 + GRACE_S + 2
    assert _gone(pid_file)  # the tool's process was killed, not left running


def test_ctrl_c_stops_a_user_tool_holding_the_interpreter_lock(tmp_path):
    child, pid_file = _hog_child(tmp_path, timeout_s=600)
    assert child.stdout.readline() == "started\n"
    for _ in range(100):  # until the tool is inside its search
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    _, stderr = _finish(child, 20, "Ctrl-C did not stop the tool")
    assert "KeyboardInterrupt" in stderr
    assert _gone(pid_file)


def test_a_user_tools_prints_never_reach_stdout_and_each_call_runs_apart(capfd):
    (chatty,) = [t for t in load_user_tools(HOG_TOOLS) if t.name == "chatty"]
    result = run_tool(chatty, {"text": "hi"}, ToolContext())
    assert not result.is_error and result.content.startswith("echo hi from ")
    assert int(result.content.rsplit(" ", 1)[1]) != os.getpid()
    assert "printed by the tool" not in capfd.readouterr().out


def test_a_user_tool_whose_process_dies_says_so(tmp_path):
    path = tmp_path / "dies.py"
    path.write_text("import os\n\ndef die(code: int) -> str:\n    os._exit(code)\n")
    (die,) = load_user_tools(path)
    result = run_tool(die, {"code": 3}, ToolContext(assume_yes=True))
    assert result.is_error and result.content == "die: the tool's process ended with code 3"
