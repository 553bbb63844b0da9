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
    """The stderr console. Markup and emoji codes are off: messages hold the user's and
    the model's text, and "[/x]" or ":smile:" in it must print as typed, never be parsed."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, markup=False, emoji=False)


# C0 controls and DEL, except tab and newline, shown as their Unicode control pictures
_CONTROLS = {c: 0x2400 + c for c in range(32) if c not in (9, 10)} | {127: 0x2421}


def visible(text: str) -> str:
    """``text`` safe to echo on a terminal: an escape sequence pasted into a prompt (or
    written by a model) is shown as "␛[2J", not obeyed."""
    return text.translate(_CONTROLS)


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
