"""shell: nothing runs without the user's approval of the exact argv; no shell in between; time and output capped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from localassist.tools import Approval, ToolContext, ToolError, run_tool
from localassist.tools.shell import ShellTool

pytestmark = pytest.mark.skipif(os.name != "posix", reason="runs POSIX commands")


def shell(command: str, root: Path, **context):
    return run_tool(ShellTool(), {"command": command}, ToolContext(roots=(root,), **context))


def test_an_approved_command_runs_in_the_allowed_folder(tmp_path):
    asked: list[Approval] = []
    result = shell("pwd", tmp_path, approve=lambda request: asked.append(request) or True)
    assert result.content == f"exit code: 0\nstdout:\n{tmp_path.resolve()}"
    assert asked[0].argv == ("pwd",)
    assert asked[0].cwd == tmp_path.resolve()


def test_approval_is_asked_for_the_exact_argv_and_no_shell_interprets_it(tmp_path):
    asked: list[Approval] = []
    result = shell("""printf '%s|' "a b" c '$HOME' ';' rm""", tmp_path, approve=lambda r: asked.append(r) or True)
    assert asked[0].argv == ("printf", "%s|", "a b", "c", "$HOME", ";", "rm")
    assert asked[0].describe() == f"run printf '%s|' 'a b' c '$HOME' ';' rm in {tmp_path.resolve()}"
    assert result.content == "exit code: 0\nstdout:\na b|c|$HOME|;|rm|"


def test_the_approval_line_escapes_control_characters_so_nothing_hides_in_it(tmp_path):
    asked: list[Approval] = []
    shell("echo 'safe\x1b[8m; rm -rf ~\x1b[0m' done", tmp_path, approve=lambda r: asked.append(r) or False)
    assert asked[0].argv == ("echo", "safe\x1b[8m; rm -rf ~\x1b[0m", "done")
    assert asked[0].describe() == f"run echo 'safe\\x1b[8m; rm -rf ~\\x1b[0m' done in {tmp_path.resolve()}"


def test_without_an_approval_callback_nothing_runs(tmp_path):
    result = shell("touch marker", tmp_path)
    assert result.is_error
    assert "needs the user's approval" in result.content
    assert not (tmp_path / "marker").exists()


def test_a_declined_command_does_not_run(tmp_path):
    result = shell("touch marker", tmp_path, approve=lambda request: False)
    assert result.is_error
    assert result.content == f"shell: the user declined to run touch marker in {tmp_path.resolve()}; nothing was run"
    assert not (tmp_path / "marker").exists()


def test_calling_the_tool_directly_cannot_skip_approval(tmp_path):
    with pytest.raises(ToolError, match="not approved"):
        ShellTool().run({"command": "touch marker"}, ToolContext(roots=(tmp_path,), approve=lambda request: True))
    assert not (tmp_path / "marker").exists()


def test_assume_yes_runs_without_asking(tmp_path):
    result = shell("touch marker", tmp_path, assume_yes=True)
    assert result.content == "exit code: 0"
    assert (tmp_path / "marker").exists()


def test_a_command_past_its_timeout_is_killed_with_its_children_and_reported(tmp_path):
    script = "echo started; sleep 30 & echo $! > child; wait"
    started = time.monotonic()
    result = shell(f"sh -c '{script}'", tmp_path, assume_yes=True, timeout_s=1)
    assert time.monotonic() - started < 5
    assert result.is_error
    assert result.content.startswith("killed: timed out after 1 s (partial output below)\nstdout:\nstarted")
    child = int((tmp_path / "child").read_text())
    time.sleep(0.2)
    assert not _running(child), "the background child still runs"


def test_ctrl_c_during_a_command_kills_it_before_the_interrupt_goes_on(tmp_path):
    def ctrl_c() -> None:  # a real SIGINT, landing on the tool's thread as a terminal's Ctrl-C may
        worker = next(thread for thread in threading.enumerate() if thread.name == "tool-shell")
        signal.pthread_kill(worker.ident, signal.SIGINT)

    timer = threading.Timer(1.0, ctrl_c)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        shell("sh -c 'sleep 30 & echo $! > child; wait'", tmp_path, assume_yes=True, timeout_s=30)
    assert time.monotonic() - started < 5, "Ctrl-C waited for the command's timeout"
    child = int((tmp_path / "child").read_text())
    time.sleep(0.2)
    assert not _running(child), "the command still runs after Ctrl-C"


SHELL_IN_A_CHILD = """
import sys
from pathlib import Path
from localassist.tools import ToolContext, run_tool
from localassist.tools.shell import ShellTool

print("started", flush=True)
command = "sh -c 'sleep 300 & echo $! > child; wait'"
run_tool(ShellTool(), {"command": command}, ToolContext(roots=(Path(sys.argv[1]),), assume_yes=True, timeout_s=600))
"""


def test_ctrl_c_kills_the_command_before_the_process_exits(tmp_path):
    # In a process of its own, which exits on the interrupt as ``ask`` does: the runner's wait for
    # the kill returned at once after Ctrl-C (an interrupted Thread.join), so the command outlived it.
    child = subprocess.Popen(
        [sys.executable, "-c", SHELL_IN_A_CHILD, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout.readline() == b"started\n"
    for _ in range(100):
        if (tmp_path / "child").exists() and (tmp_path / "child").read_text():
            break
        time.sleep(0.1)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=20)
    assert b"KeyboardInterrupt" in stderr
    command = int((tmp_path / "child").read_text())
    alive = _running(command)
    if alive:
        os.kill(command, signal.SIGKILL)
    assert not alive, "the command still runs after Ctrl-C ended the process"


def _running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[1].split()[0] != "Z"


def test_output_is_cut_to_the_budget_and_the_cut_is_stated(tmp_path):
    command = f"{sys.executable} -c \"print('x' * 80000)\""
    result = shell(command, tmp_path, assume_yes=True, output_budget=1_000)
    full = "exit code: 0\nstdout:\n" + "x" * 80_000
    assert result.content == full[:1_000] + f"\n[output cut: 1,000 of {len(full):,} characters shown]"


def test_exit_code_and_stderr_are_reported(tmp_path):
    result = shell("ls no-such-file", tmp_path, assume_yes=True)
    assert result.content.startswith("exit code: 2\nstderr:\n")
    assert "no-such-file" in result.content


def test_unknown_commands_and_bad_folders_are_tool_errors(tmp_path):
    assert (
        shell("no-such-program-xyz", tmp_path, assume_yes=True).content
        == "shell: command not found: no-such-program-xyz"
    )
    outside = run_tool(ShellTool(), {"command": "pwd", "cwd": "/"}, ToolContext(roots=(tmp_path,), assume_yes=True))
    assert "outside the allowed folders" in outside.content
    no_roots = run_tool(ShellTool(), {"command": "pwd"}, ToolContext(assume_yes=True))
    assert "--allow" in no_roots.content
    assert "cannot split" in shell("echo 'unclosed", tmp_path, assume_yes=True).content
