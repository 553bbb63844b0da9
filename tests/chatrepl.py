"""The real chat REPL in a pseudo-terminal (pexpect), for the chat tests: type a line, read what was shown."""

from __future__ import annotations

import os
import re
import sys

import pexpect

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")
PROMPT_READY = "\x1b[?2004h"  # prompt_toolkit turns bracketed paste on once per prompt


class Repl:
    def __init__(self, *args: str, env: dict[str, str], columns: int = 120) -> None:
        full_env = {**os.environ, **env, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color"}
        full_env.pop("NO_COLOR", None)
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "localassist", "chat", "-T", "0", *args],
            env=full_env,
            dimensions=(40, columns),
            encoding="utf-8",
            timeout=90,
        )
        self.child.expect_exact(PROMPT_READY)

    def send(self, line: str) -> str:
        """Type a line, wait for the next prompt, return what was shown in between."""
        self.child.sendline(line)
        self.child.expect_exact(PROMPT_READY)
        return ANSI.sub("", self.child.before)

    def exit(self) -> int:
        self.child.sendeof()
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus


def stats(repl: Repl) -> dict[str, int]:
    # The line wraps at the terminal's width wherever its words fall (the model's path is
    # part of it): read it as words, never by where a line breaks.
    shown = " ".join(repl.send("/stats").split())
    found = re.search(r"prompt (\d+) tok \((\d+) cached\) \| answer (\d+) tok", shown)
    assert found, shown
    prompt, cached, answer = map(int, found.groups())
    return {"prompt": prompt, "cached": cached, "answer": answer}
