"""The set of tools for one session, built from a ``--tools`` spec: ``calc,time``, ``all``, ``./my_tools.py``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from localassist.errors import UsageError
from localassist.tools.base import Tool, ToolContext, ToolInvocation, ToolResult

BUILTIN_NAMES = ("calc", "time", "files", "shell")
ALL = "all"  # every built-in tool; shell included, and it still asks before every command


def builtin_tools() -> dict[str, Tool]:
    """Fresh instances of the built-in tools, by name (imported here so ``localassist.tools`` stays light)."""
    from localassist.tools.calc import CalcTool
    from localassist.tools.clock import ClockTool
    from localassist.tools.files import FilesTool
    from localassist.tools.shell import ShellTool

    return {"calc": CalcTool(), "time": ClockTool(), "files": FilesTool(), "shell": ShellTool()}


class ToolRegistry:
    """Tools by name, in the order given. Names are unique."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise UsageError(f"--tools: two tools are named {tool.name!r}; rename one")
            self._tools[tool.name] = tool

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[dict[str, Any]]:
        """The tools in OpenAI function format, for a chat template's ``tools`` or a server's passthrough."""
        return [tool.spec() for tool in self]

    def run(self, call: ToolInvocation, context: ToolContext) -> ToolResult:
        """Run one call; an unknown tool name is an error result that lists the real ones."""
        from localassist.tools.runner import run_tool

        tool = self.get(call.name)
        if tool is None:
            return ToolResult(
                f"there is no tool named {call.name!r}; the tools are: {', '.join(self.names)}", is_error=True
            )
        return run_tool(tool, call.arguments, context)


def resolve_tools(spec: str | Iterable[str]) -> ToolRegistry:
    """The tools a ``--tools`` value names: comma-separated built-in names, ``all``, and paths to ``.py`` files.

    Several ``--tools`` values may be given as an iterable. An unknown name is a ``UsageError``
    listing what is available; a user tool named like a built-in one is a ``UsageError`` too.
    """
    values = [spec] if isinstance(spec, str) else list(spec)
    items = [item.strip() for value in values for item in value.split(",")]
    if not items or any(not item for item in items):
        raise UsageError(f"--tools needs tool names separated by commas (available: {_available()})")
    builtins = builtin_tools()
    chosen: list[Tool] = []
    for item in items:
        if item.endswith(".py") or "/" in item or os.sep in item:
            from localassist.tools.user import load_user_tools

            chosen.extend(load_user_tools(item))
        elif item.lower() == ALL:
            chosen.extend(builtins.values())
        elif item.lower() in builtins:
            chosen.append(builtins[item.lower()])
        else:
            raise UsageError(f"--tools: unknown tool {item!r}; available: {_available()}")
    unique: list[Tool] = []
    for tool in chosen:  # `calc,all` names calc twice: the same tool, kept once
        if not any(tool is seen for seen in unique):
            unique.append(tool)
    return ToolRegistry(unique)


def _available() -> str:
    return f"{', '.join(BUILTIN_NAMES)}, {ALL}, or a path to a .py file"
