"""Run one tool call: validate, ask approval, run under a time limit, cut the output.

Every failure becomes a ``ToolResult`` with ``is_error=True`` and a message written for the
model, so a bad call never ends the conversation. Only Ctrl-C (``KeyboardInterrupt``) and the
approval callback's own exceptions pass through.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from localassist.tools.base import Tool, ToolContext, ToolError, ToolResult, cut_output

# A tool that keeps its own deadline (shell, files) gets this long past it to report what it
# has before the runner gives up on it.
GRACE_S = 1.0
JOIN_POLL_S = 0.1


def run_tool(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    """Run ``tool`` once with ``arguments`` under ``context``'s approval, time limit and output budget."""
    from localassist.tools.schema import validate_arguments

    problem = validate_arguments(tool, arguments)
    if problem is not None:
        return ToolResult(problem, is_error=True)
    try:
        request = tool.approval(arguments, context)
    except ToolError as exc:
        return ToolResult(f"{tool.name}: {exc}", is_error=True)
    if request is not None and not context.assume_yes:
        if context.approve is None:
            return ToolResult(
                f"{tool.name}: refused: this call needs the user's approval and nobody can be asked "
                "(no terminal); nothing was run",
                is_error=True,
            )
        # Asked on the caller's thread and before the clock starts: the user's thinking time is not the tool's.
        if not context.approve(request):
            return ToolResult(f"{tool.name}: the user declined to {request.describe()}; nothing was run", is_error=True)
    call_context = dataclasses.replace(
        context,
        deadline=time.monotonic() + context.timeout_s,
        cancel=threading.Event(),
        approved=request,
    )
    result = _run_with_deadline(tool, arguments, call_context)
    return ToolResult(cut_output(result.content, context.output_budget), result.is_error)


def _run_with_deadline(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    box: list[ToolResult] = []
    # Waited on instead of ``Thread.join``: a join that Ctrl-C interrupts leaves the thread
    # marked as stopped (CPython 3.11), so a second join would return at once.
    finished = threading.Event()

    def target() -> None:
        try:
            box.append(_run_catching(tool, arguments, context))
        finally:
            finished.set()

    # A daemon thread: Python cannot kill a thread, so a tool that ignores its deadline is
    # abandoned (and told to stop through ``context.cancel``) rather than waited for.
    worker = threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True)
    worker.start()
    give_up = time.monotonic() + context.timeout_s + GRACE_S
    try:
        # Short waits: Ctrl-C is delivered to whichever thread the OS picks, and the main thread
        # raises KeyboardInterrupt only when it wakes up.
        while not finished.is_set() and time.monotonic() < give_up:
            finished.wait(JOIN_POLL_S)
    except KeyboardInterrupt:
        context.cancel.set()
        # Give a running process the moment it needs to be killed: the worker is a daemon
        # thread, and an exiting process would otherwise leave the process's group running.
        finished.wait(GRACE_S)
        raise
    if box:
        return box[0]
    context.cancel.set()
    return ToolResult(f"{tool.name}: timed out after {context.timeout_s:g} s; no result", is_error=True)


def _run_catching(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    try:
        return tool.run(arguments, context)
    except ToolError as exc:
        return ToolResult(f"{tool.name}: {exc}", is_error=True)
    except Exception as exc:  # a user tool's bug must not end the conversation: the model sees it
        return ToolResult(f"{tool.name}: {type(exc).__name__}: {exc}", is_error=True)
