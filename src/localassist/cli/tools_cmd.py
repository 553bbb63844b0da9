"""`localassist tools`: the tools a model can be given with --tools."""

import json
from typing import Annotated, Any

import typer

from localassist.cli.console import out
from localassist.cli.tables import print_table_fitted

app = typer.Typer(help="Tools a model can call (ask/chat --tools).", no_args_is_help=True)


@app.command("list")
def list_tools(
    tools: Annotated[
        list[str] | None,
        typer.Option("--tools", help="What to list: built-in names, all, or a .py file (default: all built-ins)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, with each tool's full schema.")] = False,
) -> None:
    """Name, safety class, arguments and description of each tool.

    \b
    Safety classes: safe (pure computation), read (files under --allow folders only),
    exec (runs commands or your code: asks you before every call).
    \b
      localassist tools list
      localassist tools list --tools ./my_tools.py --json
    """
    from localassist.tools import resolve_tools

    registry = resolve_tools(tools or ["all"])
    if as_json:
        rows = [
            {
                "name": tool.name,
                "safety": tool.safety.value,
                "description": tool.description,
                "parameters": tool.parameters,
            }
            for tool in registry
        ]
        out(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    print_table_fitted(
        ["NAME", "SAFETY", "ARGUMENTS", "DESCRIPTION"],
        [[tool.name, tool.safety.value, _arguments(tool.parameters), tool.description] for tool in registry],
        _terminal_width(),
    )


def _terminal_width() -> int | None:
    """The width to fit on a terminal; None on a pipe, which gets one line per tool."""
    import shutil

    from localassist.cli.env import current

    env = current()
    return (env.width or shutil.get_terminal_size().columns) if env.stdout_isatty else None


def _arguments(schema: dict[str, Any]) -> str:
    """``name: type`` for each argument, ``*`` marking the required ones."""
    required = set(schema.get("required", ()))
    parts = []
    for name, spec in schema.get("properties", {}).items():
        kind = spec.get("type") or ("enum" if "enum" in spec else "any")
        if "enum" in spec:
            kind = "|".join(str(v) for v in spec["enum"])
        parts.append(f"{name}{'*' if name in required else ''}: {kind}")
    return ", ".join(parts) or "-"
