"""A user tool's call, run in a child Python process so that ``--tool-timeout`` and Ctrl-C can always stop it.

Python cannot kill a thread, and C code that holds the interpreter lock (a backtracking
regex on ``(a+)+$``, arithmetic on huge integers) keeps even the main thread from handling
Ctrl-C, so a function running inside this process could hang it until ``kill -9``. A child
process is killed, with its process group, at the deadline or on Ctrl-C. Each call starts a
fresh interpreter that runs the tool's file again and calls the one function: module-level
state does not carry over from one call to the next.

The call goes to the child as JSON on stdin; the result comes back as JSON on stdout, while
the function's own prints go to stderr, which is kept only to explain a child that died.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from localassist.tools.base import ToolContext, ToolError, ToolResult

STDERR_SHOWN = 2000  # characters of a dead child's stderr given back to the model


def run_in_child(source: Path, name: str, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
    """Call the function ``name`` of the file ``source`` with ``arguments`` in a child process."""
    from localassist.tools.shell import wait_killable

    request = json.dumps({"file": str(source), "function": name, "arguments": arguments}).encode()
    process = subprocess.Popen(
        [sys.executable, "-m", "localassist.tools.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=os.name == "posix",  # its own group: Ctrl-C reaches us, and we kill it
    )
    stdout, stderr, ended = wait_killable(process, context, request)
    if ended:
        why = "interrupted" if context.cancel.is_set() else f"timed out after {context.timeout_s:g} s"
        raise ToolError(f"{why}; no result")
    try:
        reply = json.loads(stdout)
    except ValueError:
        said = stderr.decode("utf-8", "replace").strip()[-STDERR_SHOWN:]
        raise ToolError(
            f"the tool's process ended with code {process.returncode}" + (f": {said}" if said else "")
        ) from None
    if "error" in reply:
        raise ToolError(reply["error"])
    return ToolResult(reply["content"])


def main() -> None:
    """The child: read the call, run it, write the result (or the exception) as JSON."""
    from localassist.tools.user import call, load_module

    request = json.loads(sys.stdin.buffer.read())
    result = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the function's prints must not garble the result
    try:
        module = load_module(Path(request["file"]), request["file"])
        reply = {"content": call(getattr(module, request["function"]), request["arguments"])}
    except (Exception, SystemExit) as exc:  # the model reads what went wrong, as with an in-process tool
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    result.write(json.dumps(reply, ensure_ascii=False))
    result.close()


if __name__ == "__main__":
    main()
