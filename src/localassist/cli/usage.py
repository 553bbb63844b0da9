"""Typer's own usage errors (an unknown option or command, a bad value, a missing argument)
as the project's one line, naming the closest real option or command when there is one.

Typer (its vendored Click) would print three lines, usage and hint and error, and suggest
anything within difflib's default 0.6 similarity: `--bogus` got "--docs, --verbose".
"""

from __future__ import annotations

import difflib
import re
from typing import Any

# "bogus" is 0.67 from "logs" and 0.62 from "--docs" (dashes count as matches): unrelated.
# Typos score higher: "temprature" 0.95, "modle" 0.8, "chta" 0.75.
CUTOFF = 0.75
_NO_SUCH_COMMAND = re.compile(r"No such command (['\"])(.*?)\1")


def closest(word: str, names: list[str]) -> str | None:
    """The real name ``word`` most likely meant: the only one it begins, else the most
    similar above ``CUTOFF``; None when nothing is close. Dashes are not compared, and a
    long option is only matched with long options (a one-letter option has no typo to fix)."""
    bare = word.lstrip("-")
    long_form = word.startswith("--")
    candidates = {n.lstrip("-"): n for n in names if n.startswith("--") == long_form}
    if not bare or (word.startswith("-") and not long_form):
        return None
    starting = [n for n in candidates if n.startswith(bare)]
    if len(starting) == 1:
        return candidates[starting[0]]
    found = difflib.get_close_matches(bare, list(candidates), n=1, cutoff=CUTOFF)
    return candidates[found[0]] if found else None


def _options(ctx: Any) -> list[str]:
    names = list(ctx.help_option_names)
    for param in ctx.command.params:
        if param.param_type_name == "option":
            names += [*param.opts, *param.secondary_opts]
    return names


def usage_line(exc: Any) -> str:
    """One line for a Typer usage error ``exc`` (a ``typer.TyperException`` with ``ctx``)."""
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "localassist"
    option = getattr(exc, "option_name", None)
    if ctx is not None and option and hasattr(exc, "possibilities"):  # Click's NoSuchOption
        guess = closest(option, _options(ctx))
        hint = f"; did you mean {guess}?" if guess else f" (`{path} -h` lists them)"
        return f"unknown option {option} for `{path}`{hint}"
    message = " ".join(str(getattr(exc, "message", exc)).split())
    unknown = _NO_SUCH_COMMAND.match(message)
    if ctx is not None and unknown and hasattr(ctx.command, "list_commands"):
        guess = closest(unknown[2], ctx.command.list_commands(ctx))
        hint = f"; did you mean `{path} {guess}`?" if guess else f" (`{path} -h` lists them)"
        return f"unknown command {unknown[2]!r}{hint}"
    message = " ".join(exc.format_message().split()).rstrip(".")
    return f"{message[:1].lower()}{message[1:]} (`{path} -h` for help)"
