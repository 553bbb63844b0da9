"""`--tools` on ask and chat: the flags, the agent they build, the approval prompt on the
terminal, and the tool calls shown on stderr while the answer streams on stdout."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from localassist.cli.console import visible
from localassist.errors import UsageError

if TYPE_CHECKING:
    from localassist.agent import Agent, ToolRecord
    from localassist.tools.base import Approval

TOOLS = "Tools"

Tools = Annotated[
    list[str] | None,
    typer.Option(
        "--tools",
        help="Let the model call tools: calc,time,files,shell, all, or a .py file of functions (repeatable).",
        rich_help_panel=TOOLS,
    ),
]
Allow = Annotated[
    list[str] | None,
    typer.Option(
        "--allow", help="A folder files and shell may use (repeatable; nothing by default).", rich_help_panel=TOOLS
    ),
]
MaxSteps = Annotated[
    int, typer.Option("--max-steps", min=1, max=50, help="Most rounds of tool calls per answer.", rich_help_panel=TOOLS)
]
ToolTimeout = Annotated[
    float, typer.Option("--tool-timeout", min=0.1, help="Seconds one tool call may take.", rich_help_panel=TOOLS)
]
ToolChoice = Annotated[
    str,
    typer.Option(
        "--tool-choice", help="auto, none, required, or a tool's name (forces the first call).", rich_help_panel=TOOLS
    ),
]
YesShell = Annotated[
    bool,
    typer.Option(
        "--yes-shell",
        help="DANGEROUS: run the model's shell commands without asking (see docs/tools.md).",
        rich_help_panel=TOOLS,
    ),
]

PREVIEW_CHARS = 160


def tool_choice_value(value: str, names: list[str]) -> str | dict[str, Any]:
    """``--tool-choice``: auto, none, required, or a tool's name (OpenAI's named form)."""
    if value in ("auto", "none", "required"):
        return value
    if value in names:
        return {"type": "function", "function": {"name": value}}
    raise UsageError(
        f"--tool-choice must be auto, none, required or one of the tools: {', '.join(names)} (got {value!r})"
    )


def build_agent(
    tools: list[str] | None,
    allow: list[str] | None,
    max_steps: int,
    tool_timeout: float,
    tool_choice: str,
    yes_shell: bool,
) -> Agent | None:
    """The agent the flags describe, or None without --tools (then the other tool flags are errors)."""
    if not tools:
        given = [flag for flag, on in (("--allow", allow), ("--yes-shell", yes_shell)) if on]
        if tool_choice != "auto":
            given.append("--tool-choice")
        if given:
            raise UsageError(f"{', '.join(given)} goes with --tools")
        return None
    from localassist.agent import Agent, AgentLimits
    from localassist.tools import ToolContext, resolve_tools
    from localassist.tools.base import Safety
    from localassist.tools.files import resolve_roots

    registry = resolve_tools(tools)
    roots = resolve_roots(allow or [])
    asks = any(tool.safety is Safety.EXEC for tool in registry) and not yes_shell
    approve = terminal_approver() if asks else None
    context = ToolContext(roots=roots, approve=approve, assume_yes=yes_shell, timeout_s=tool_timeout)
    limits = AgentLimits(max_steps=max_steps, tool_timeout_s=tool_timeout)
    agent = Agent(registry, context, limits, tool_choice_value(tool_choice, registry.names))
    return agent


def terminal_approver():
    """Asks on the controlling terminal (/dev/tty), default No; None when there is none, so
    exec-class calls are refused (unless --yes-shell)."""
    try:  # two handles: a terminal is not seekable, so text mode cannot open it "r+"
        reader = open("/dev/tty", encoding="utf-8", errors="replace")  # noqa: SIM115 - kept for the session
        writer = open("/dev/tty", "w", encoding="utf-8", errors="replace")  # noqa: SIM115
    except OSError:
        return None

    def approve(request: Approval) -> bool:
        writer.write(f"localassist: allow {visible(request.describe())}? [y/N] ")
        writer.flush()
        from localassist.cli import typeahead

        with typeahead.asking():  # a chat's keys typed ahead go to its next prompt, not to this answer
            answer = reader.readline()
        if not answer:  # end of input: nobody is there
            writer.write("\n")
            return False
        return answer.strip().lower() in ("y", "yes")

    return approve


def describe_tools(agent: Agent | None) -> list[str]:
    """``/tools``: what the model may call, under which limits."""
    if agent is None:
        return ["no tools (start chat with --tools calc,time,files,shell, all, or a .py file)"]
    lines = [f"{tool.name} ({tool.safety.value})" for tool in agent.registry]
    roots = ", ".join(str(root) for root in agent.context.roots) or "none (--allow DIR)"
    steps = agent.limits.max_steps
    lines.append(f"allowed folders: {roots}; at most {steps} round{'' if steps == 1 else 's'} of calls per answer")
    if agent.context.assume_yes:
        lines.append("--yes-shell: commands run WITHOUT asking")
    return lines


# --- showing an answer with tool calls


def _compact(arguments: str) -> str:
    try:
        text = json.dumps(json.loads(arguments), ensure_ascii=False)
    except json.JSONDecodeError:
        text = arguments
    return _cut(text)


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return visible(text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…")


def describe_started(name: str, arguments: str) -> str:
    return f"localassist: tool {visible(name)} {_compact(arguments)}"


def describe_finished(record: ToolRecord) -> str:
    approval = "" if record.approval == "not needed" else f" [{record.approval}]"
    return f"localassist:   -> {_cut(record.result)} ({record.seconds:.2f} s){approval}"


def describe_event(event: object) -> str | None:
    """The stderr line ``session.show_answer`` shows for an agent's event while the answer
    streams: a tool call as it starts (name, arguments) and ends (result preview, time,
    approval), or a notice — plain text, never markup. None for any other event."""
    from localassist.agent import AgentNotice, ToolFinished, ToolStarted

    if isinstance(event, ToolStarted):
        return describe_started(event.call.name, event.call.arguments)
    if isinstance(event, ToolFinished):
        return describe_finished(event.record)
    if isinstance(event, AgentNotice):
        return f"localassist: {event.text}"
    return None
