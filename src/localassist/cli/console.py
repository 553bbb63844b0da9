"""Output helpers. stdout belongs to the answer (``out``); everything else goes to
stderr (``warn``, ``error``, ``err_console``). Both are the current environment's
streams (``cli.env``), so tests can run commands in-process."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NoReturn

import typer

from localassist.errors import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

PROG = "localassist"


def debug_enabled() -> bool:
    return os.environ.get("LOCALASSIST_DEBUG", "").lower() in {"1", "true", "yes", "on"}


def _stderr():
    from localassist.cli.env import current

    return current().stderr


def out(text: str, nl: bool = True) -> None:
    """The command's result, on stdout."""
    from localassist.cli.env import current

    stream = current().stdout
    stream.write(text + ("\n" if nl else ""))
    stream.flush()


def error(message: str) -> None:
    """One line on stderr (newlines folded so the contract holds for any message)."""
    text = " ".join(str(message).split("\n"))
    stream = _stderr()
    stream.write(f"{PROG}: error: {text}\n")
    stream.flush()


def warn(message: str) -> None:
    stream = _stderr()
    stream.write(f"{PROG}: {message}\n")
    stream.flush()


def note(message: str) -> None:
    """A plain status line on stderr, without the program name (`config set` echoes)."""
    stream = _stderr()
    stream.write(message + "\n")
    stream.flush()


_consoles: dict[int, Console] = {}


def err_console() -> Console:
    """The stderr console (one per stream). Markup and emoji codes are off: messages hold
    the user's and the model's text, and "[/x]" or ":smile:" in it must print as typed."""
    from rich.console import Console

    from localassist.cli.env import current

    env = current()
    console = _consoles.get(id(env.stderr))
    if console is None or console.file is not env.stderr:
        console = _consoles[id(env.stderr)] = Console(
            file=env.stderr,
            force_terminal=env.stderr_isatty,
            no_color=not env.colors,
            highlight=False,
            markup=False,
            emoji=False,
        )
    return console


# C0 controls and DEL, except tab and newline, shown as their Unicode control pictures
_CONTROLS = {c: 0x2400 + c for c in range(32) if c not in (9, 10)} | {127: 0x2421}


def visible(text: str) -> str:
    """``text`` safe to echo on a terminal: an escape sequence pasted into a prompt (or
    written by a model) is shown as "␛[2J", not obeyed."""
    return text.translate(_CONTROLS)


def stdout_is_terminal() -> bool:
    from localassist.cli.env import current

    return bool(current().stdout_isatty)


def stderr_is_terminal() -> bool:
    from localassist.cli.env import current

    return bool(current().stderr_isatty)


def exit_broken_pipe() -> NoReturn:
    """The reader went away (``| head -1``): stop quietly, and keep Python's own
    flush at shutdown from printing a second BrokenPipeError."""
    from localassist.cli.env import current

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, current().stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    raise typer.Exit(ExitCode.BROKEN_PIPE)
