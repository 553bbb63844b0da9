"""Which of some modules a real `localassist` command imports: the command runs as
`python -m localassist` does, in a fresh interpreter, and the modules found loaded when
it ends are returned (the command's own output is returned too, for the assertion's message)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping

SCRIPT = """
import runpy, sys
watched = sys.argv[1].split(",")
sys.argv = ["localassist", *sys.argv[2:]]
try:
    runpy.run_module("localassist", run_name="__main__")
except SystemExit:
    pass
sys.stderr.write("\\nLOADED=" + ",".join(m for m in watched if m in sys.modules) + "\\n")
"""


def loaded_by(
    args: Iterable[str], watched: Iterable[str], env: Mapping[str, str] | None = None
) -> tuple[list[str], str]:
    """(the watched modules the command imported, its stdout and stderr)."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(watched), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    marker = proc.stderr.rindex("\nLOADED=")
    loaded = proc.stderr[marker + len("\nLOADED=") :].strip()
    return [m for m in loaded.split(",") if m], proc.stdout + proc.stderr[:marker]
