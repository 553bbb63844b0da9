"""The types every tool shares: what a tool is, what a call and a result are, and what the caller provides.

A tool is a name, a description, a JSON schema of its arguments and a safety class, plus
``run(arguments, context) -> ToolResult``. Tools never print and never ask the user
anything themselves: the caller's ``ToolContext`` carries the allowed folders, the
approval callback, the time limit and the output budget.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_OUTPUT_BUDGET = 16_000  # characters of tool output given back to the model


class Safety(str, Enum):
    """What running a tool can do; the CLI shows it and exec tools need approval."""

    SAFE = "safe"  # pure computation: no files, no processes, no network
    READ = "read"  # reads files under the folders the user allowed
    EXEC = "exec"  # runs commands or user code: every call needs the user's approval


class ToolError(Exception):
    """An expected failure inside a tool (bad date, division by zero, path outside the roots).

    The runner turns it into ``ToolResult(str(error), is_error=True)`` for the model to read.
    """


@dataclass(frozen=True)
class ToolInvocation:
    """A tool's name with its arguments decoded (a dict), as ``ToolRegistry.run`` takes it and
    the text parsers find it. ``id`` is kept when the model's format carries one (Mistral).
    Not ``engine.types.ToolCall``: that is the call as a stream or an OpenAI message carries
    it, with the arguments still JSON text (which may not parse)."""

    name: str
    arguments: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class ToolResult:
    """What goes back to the model. ``is_error`` marks refusals, bad arguments, timeouts and tool errors."""

    content: str
    is_error: bool = False


@dataclass(frozen=True)
class Approval:
    """What an exec tool is about to do, for the user to allow or refuse.

    ``argv`` is the exact argument vector a shell call will run (no shell in between).
    """

    tool: str
    arguments: dict[str, Any]
    argv: tuple[str, ...] | None = None
    cwd: Path | None = None

    def describe(self) -> str:
        """One line for the approval prompt; control characters are escaped so none can hide a part."""
        if self.argv is not None:
            text = f"run {shlex.join(self.argv)} in {self.cwd}"
        else:
            text = f"call {self.tool}({', '.join(f'{k}={v!r}' for k, v in self.arguments.items())})"
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


Approver = Callable[[Approval], bool]


@dataclass(frozen=True)
class ToolContext:
    """What the caller allows a tool call: folders, approval, time and output size.

    ``approve`` is asked before every exec-class call; without it (no terminal) exec calls are
    refused, unless ``assume_yes`` (the CLI's ``--yes-shell``) allows them without asking.
    ``deadline``, ``cancel`` and ``approved`` are set by the runner for one call.
    """

    roots: tuple[Path, ...] = ()
    approve: Approver | None = None
    assume_yes: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    output_budget: int = DEFAULT_OUTPUT_BUDGET
    deadline: float | None = None  # time.monotonic() value
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)
    approved: Approval | None = None

    def remaining(self) -> float:
        """Seconds left before the deadline (the whole timeout when no deadline is set)."""
        if self.deadline is None:
            return self.timeout_s
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.cancel.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline)


class Tool:
    """Base of every tool. Subclasses set the four class attributes and implement ``run``."""

    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = {}  # noqa: RUF012 - replaced per subclass, never mutated
    safety: Safety = Safety.SAFE

    def spec(self) -> dict[str, Any]:
        """The OpenAI function-calling form of this tool, as chat templates and servers take it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def approval(self, arguments: dict[str, Any], context: ToolContext) -> Approval | None:
        """What the user must allow before ``run``; None when nothing needs approval."""
        if self.safety is Safety.EXEC:
            return Approval(self.name, arguments)
        return None

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        raise NotImplementedError


F = TypeVar("F", bound=Callable[..., Any])

SAFE_ATTRIBUTE = "__localassist_safe__"


def safe(function: F) -> F:
    """Mark a user tool function as pure (safety class ``safe``), so it runs without approval.

    Without it a user tool is ``exec``: the user is asked before every call.
    """
    setattr(function, SAFE_ATTRIBUTE, True)
    return function


def cut_output(text: str, budget: int) -> str:
    """``text`` cut to ``budget`` characters, with the cut stated so the model knows it saw a part."""
    if len(text) <= budget:
        return text
    return f"{text[:budget]}\n[output cut: {budget:,} of {len(text):,} characters shown]"
