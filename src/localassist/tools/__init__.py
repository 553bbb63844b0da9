"""Tools a model can call: the built-in ones (calc, time, files, shell), user tools from a Python file,
their schemas and safety classes, and where a call starts in the text models write.

Importing this package is cheap: jsonschema is imported on the first validated call, and the
built-in tools when a registry is resolved.
"""

from __future__ import annotations

from localassist.tools.base import (
    Approval,
    Approver,
    Safety,
    Tool,
    ToolContext,
    ToolError,
    ToolInvocation,
    ToolResult,
    cut_output,
    safe,
)
from localassist.tools.registry import BUILTIN_NAMES, ToolRegistry, builtin_tools, resolve_tools
from localassist.tools.runner import run_tool

__all__ = [
    "BUILTIN_NAMES",
    "Approval",
    "Approver",
    "Safety",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolInvocation",
    "ToolRegistry",
    "ToolResult",
    "builtin_tools",
    "cut_output",
    "resolve_tools",
    "run_tool",
    "safe",
]
