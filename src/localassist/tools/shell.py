"""``shell``: run one command, only after the user approved that exact argument vector.

No shell is involved (``shell=False``): the command is split with ``shlex.split`` and run in an
allowed folder with stdin closed, a time limit and an output cap. ``run`` refuses any argv
the runner did not get approved, so calling the tool directly cannot skip the approval.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Any

from localassist.tools.base import Approval, Safety, Tool, ToolContext, ToolError, ToolResult
from localassist.tools.files import locate

POLL_S = 0.2  # how often a running command checks for Ctrl-C and the deadline


def command_argv(command: str) -> tuple[str, ...]:
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise ToolError(f"cannot split the command: {exc}") from None
    if not argv:
        raise ToolError("the command is empty")
    return argv


def working_folder(arguments: dict[str, Any], context: ToolContext) -> Path:
    if not context.roots:
        raise ToolError("no folder is allowed to run commands in; the user can allow one with --allow DIR")
    folder = locate(arguments["cwd"], context.roots) if arguments.get("cwd") else context.roots[0].resolve()
    if not folder.is_dir():
        raise ToolError(f"{arguments['cwd']}: not a folder")
    return folder


class ShellTool(Tool):
    name = "shell"
    description = (
        "Run one program with arguments in an allowed folder, after the user approves it. No shell: pipes, "
        "redirections, globs, && and $VARS do not work. Returns the exit code, stdout and stderr."
    )
    parameters = {  # noqa: RUF012
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "for example: git log --oneline -5"},
            "cwd": {"type": "string", "description": "folder to run in (an allowed folder); default the first"},
        },
        "required": ["command"],
        "additionalProperties": False,
    }
    safety = Safety.EXEC

    def approval(self, arguments: dict[str, Any], context: ToolContext) -> Approval:
        return Approval(self.name, arguments, command_argv(arguments["command"]), working_folder(arguments, context))

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        argv = command_argv(arguments["command"])
        cwd = working_folder(arguments, context)
        approved = context.approved
        if not context.assume_yes and (approved is None or approved.argv != argv or approved.cwd != cwd):
            raise ToolError("refused: this command was not approved by the user; nothing was run")
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=os.name == "posix",  # its own group, so a timeout kills its children too
            )
        except FileNotFoundError:
            raise ToolError(f"command not found: {argv[0]}") from None
        except PermissionError:
            raise ToolError(f"permission denied: {argv[0]}") from None
        stdout, stderr, ended = wait_killable(process, context)
        parts = [ended or f"exit code: {process.returncode}"]
        for label, data in (("stdout", stdout), ("stderr", stderr)):
            if data:
                parts.append(f"{label}:\n{data.decode('utf-8', 'replace').rstrip()}")
        return ToolResult("\n".join(parts), is_error=bool(ended))


def wait_killable(
    process: subprocess.Popen[bytes], context: ToolContext, input: bytes | None = None
) -> tuple[bytes, bytes, str]:
    """stdout, stderr and why it was stopped ('' when it ended by itself): the process (started
    in a session of its own) is killed with its group at the deadline or on Ctrl-C."""
    while True:
        try:
            stdout, stderr = process.communicate(input, timeout=min(POLL_S, max(context.remaining(), 0.01)))
            return stdout, stderr, ""
        except subprocess.TimeoutExpired:
            # communicate() keeps what it read so far and the input it has still to write, so
            # retrying loses nothing.
            input = None
            if context.expired():
                break
    reason = "interrupted" if context.cancel.is_set() else f"timed out after {context.timeout_s:g} s"
    _kill(process)
    try:
        stdout, stderr = process.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild left the group and holds the pipes open
        return b"", b"", f"killed: {reason} (its output could not be collected)"
    return stdout, stderr, f"killed: {reason} (partial output below)"


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass
