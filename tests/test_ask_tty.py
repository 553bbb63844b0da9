"""`ask` on a real pseudo-terminal: rendered output, streamed, never cut off."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pexpect
import pytest

pytestmark = pytest.mark.model

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_terminal_output_is_rendered_and_complete(model_env):
    args = ["-m", "localassist", "ask", "--raw", "1, 2, 3, 4, 5, 6, 7, 8,", "-T", "0", "-n", "150"]
    env = {**os.environ, **model_env, "TERM": "xterm-256color", "COLUMNS": "40", "LINES": "8"}
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(sys.executable, args, env=env, dimensions=(8, 40), encoding="utf-8", timeout=120)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    shown = child.before
    assert "\x1b[" in shown  # the terminal got escape sequences (Live redraw, styles)
    plain = ANSI.sub("", shown)
    assert "…" not in plain
    # the same answer, piped, is plain text; every number of it reached the terminal
    piped = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env).stdout
    assert "\x1b" not in piped
    numbers = re.findall(r"\d+", piped)
    assert len(numbers) > 20
    shown_numbers = iter(re.findall(r"\d+", plain))
    assert all(n in shown_numbers for n in numbers)  # in order, none missing
