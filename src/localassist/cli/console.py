"""stderr helpers. stdout belongs to the answer; everything else comes here."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, NoReturn

import typer

from localassist.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

PROG = "localassist"


def debug_enabled() -> bool:
    return os.environ.get("LOCALASSIST_DEBUG", "").lower() in {"1", "true", "yes", "on"}


def error(message: str) -> None:
    """One line on stderr (newlines folded so the contract holds for any message)."""
    text = " ".join(str(message).split("\n"))
    sys.stderr.write(f"{PROG}: error: {text}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


@lru_cache(maxsize=1)
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def exit_broken_pipe() -> NoReturn:
    """The reader went away (``| head -1``): stop quietly, and keep Python's own
    flush at shutdown from printing a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise typer.Exit(ExitCode.BROKEN_PIPE)
