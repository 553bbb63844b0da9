"""The terminal a command runs in: its streams and what they are (httpie-style).

Every CLI module reads stdin and writes stdout/stderr through ``current()``, so a test
can run a command in-process with ``using(Environment(...))`` and in-memory streams,
and say whether each stream is a terminal, without monkeypatching ``sys``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


@dataclass
class Environment:
    stdin: IO[Any] | None = field(default_factory=lambda: sys.stdin)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    stdin_isatty: bool | None = None
    stdout_isatty: bool | None = None
    stderr_isatty: bool | None = None
    colors: bool | None = None  # None: NO_COLOR decides
    width: int | None = None  # None: the terminal's

    def __post_init__(self) -> None:
        if self.stdin_isatty is None:
            self.stdin_isatty = _isatty(self.stdin)
        if self.stdout_isatty is None:
            self.stdout_isatty = _isatty(self.stdout)
        if self.stderr_isatty is None:
            self.stderr_isatty = _isatty(self.stderr)
        if self.colors is None:
            self.colors = "NO_COLOR" not in os.environ

    def read_stdin(self) -> bytes | None:
        """Piped input (None when stdin is a terminal or closed)."""
        if self.stdin is None or self.stdin_isatty:
            return None
        data = self.stdin.buffer.read() if hasattr(self.stdin, "buffer") else self.stdin.read()
        return data.encode("utf-8") if isinstance(data, str) else data


_current: Environment | None = None


def current() -> Environment:
    """The environment of the running command: the one set with ``using``, else the
    process's streams as they are now (a test runner may have swapped them)."""
    return _current if _current is not None else Environment()


@contextmanager
def using(env: Environment) -> Iterator[Environment]:
    """Run commands in ``env`` (tests, embedding the CLI)."""
    global _current
    saved, _current = _current, env
    try:
        yield env
    finally:
        _current = saved
