"""The --tools spec, the registry, and keeping `import localassist.tools` light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from localassist.errors import UsageError
from localassist.tools import BUILTIN_NAMES, Safety, ToolContext, ToolInvocation, resolve_tools

FIXTURES = Path(__file__).parent / "fixtures" / "tools"


def test_a_spec_names_builtin_tools_in_order():
    assert resolve_tools("time,calc").names == ["time", "calc"]
    assert resolve_tools(" calc , calc ").names == ["calc"]
    assert resolve_tools(["calc", "files"]).names == ["calc", "files"]


def test_all_means_every_builtin_tool_including_shell_which_still_asks():
    registry = resolve_tools("all")
    assert registry.names == list(BUILTIN_NAMES) == ["calc", "time", "files", "shell"]
    assert {tool.name: tool.safety for tool in registry} == {
        "calc": Safety.SAFE,
        "time": Safety.SAFE,
        "files": Safety.READ,
        "shell": Safety.EXEC,
    }
    refused = registry.run(ToolInvocation("shell", {"command": "true"}), ToolContext(roots=(Path.cwd(),)))
    assert refused.is_error and "needs the user's approval" in refused.content


def test_an_unknown_name_is_a_usage_error_listing_the_tools():
    with pytest.raises(UsageError) as info:
        resolve_tools("calc,weather")
    assert str(info.value) == (
        "--tools: unknown tool 'weather'; available: calc, time, files, shell, all, or a path to a .py file"
    )
    with pytest.raises(UsageError, match="available: calc, time"):
        resolve_tools("calc,,time")


def test_a_path_adds_the_user_tools_and_a_name_clash_is_refused(tmp_path):
    registry = resolve_tools(f"calc,{FIXTURES / 'user_tools.py'}")
    assert registry.names == ["calc", "word_count", "convert_temperature", "tag_files"]
    clash = tmp_path / "clash.py"
    clash.write_text('def calc(expression: str) -> str:\n    """Mine."""\n    return expression\n')
    with pytest.raises(UsageError, match="two tools are named 'calc'"):
        resolve_tools(f"calc,{clash}")


def test_specs_are_in_openai_function_format():
    for spec in resolve_tools("all").specs():
        assert spec["type"] == "function"
        assert set(spec["function"]) == {"name", "description", "parameters"}
        assert spec["function"]["parameters"]["type"] == "object"
        assert spec["function"]["description"]


def test_a_call_to_an_unknown_tool_lists_the_real_ones():
    result = resolve_tools("calc,time").run(ToolInvocation("weather", {}), ToolContext())
    assert result.is_error
    assert result.content == "there is no tool named 'weather'; the tools are: calc, time"


def test_a_registry_runs_a_call_end_to_end():
    assert resolve_tools("calc").run(ToolInvocation("calc", {"expression": "6*7"}), ToolContext()).content == "42"


def test_importing_the_tools_and_resolving_them_loads_no_heavy_module():
    code = (
        "import sys, localassist.tools as t\n"
        "t.resolve_tools('all')\n"
        "print(sorted(m for m in ('jsonschema', 'llama_cpp', 'numpy', 'typer', 'rich') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
