"""The agent loop: the model answers, calling tools as it goes, until it answers without one.

One :class:`Agent` holds the tools, what they may touch (``ToolContext``: folders, approval,
time) and the limits. ``Agent.stream(backend, request)`` is a ``ChatStream`` like any other:
it yields the answer's text from every round, plus :class:`ToolStarted` and
:class:`ToolFinished` events a front end can show, and ends with one ``Done`` for the whole
answer. Each round the model may call tools; the calls run in the order given, each result
goes back to the model as a ``tool`` message, and the model goes on.

Limits: at most ``max_steps`` rounds of calls (then one last round without tools, so the
model answers with what it has), a wall-clock limit for the whole answer, a time limit per
call, each result cut to a token budget (the cut is stated in the result), and at most
``max_repairs`` invalid calls (bad JSON, unknown tool, arguments that break the schema: the
model gets the repair message and tries again). ``tool_choice`` required or named applies to
the first round only, as OpenAI's Agents SDK does, so a forced call cannot loop forever.
Ctrl-C stops the loop; every call made until then is kept for the log.

Tool results are data: they go to the model as the content of tool messages (plain text,
never parsed for control tokens), inside the template's tool-response markup, or folded
into a user turn labelled as tool output for templates without tool roles.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from localassist.engine.types import (
    Backend,
    ChatRequest,
    ChatStream,
    Done,
    Message,
    StreamState,
    TextDelta,
    Timings,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from localassist.errors import AnswerInvalidError
from localassist.tools.base import Approval, ToolContext, ToolError, ToolResult
from localassist.tools.registry import ToolRegistry

DEFAULT_MAX_STEPS = 5
DEFAULT_WALL_S = 600.0
DEFAULT_OUTPUT_TOKENS = 1000
MAX_REPAIRS = 2
# A guard before the token cut (which is the real one): no tool output bigger than this is tokenized.
MAX_OUTPUT_CHARS = 2_000_000

NOT_NEEDED, APPROVED, DECLINED, NO_TERMINAL, ASSUMED, NOT_ASKED, FAILED_FIRST, INTERRUPTED = (
    "not needed",
    "approved",
    "declined",
    "refused: no terminal to ask on",
    "approved by --yes-shell",
    "not asked: invalid call",
    "not asked: the call failed before it",
    "interrupted",
)


@dataclass(frozen=True)
class AgentLimits:
    max_steps: int = DEFAULT_MAX_STEPS
    wall_s: float = DEFAULT_WALL_S
    tool_timeout_s: float = 30.0
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    max_repairs: int = MAX_REPAIRS


@dataclass(frozen=True)
class ToolRecord:
    """One call as it happened: shown on stderr and written to the log."""

    step: int  # the round, from 1
    call_id: str
    name: str
    arguments: str  # the JSON text the model wrote
    approval: str
    result: str  # what the model was given
    is_error: bool
    seconds: float


@dataclass(frozen=True)
class ToolStarted:
    step: int
    call: ToolCall


@dataclass(frozen=True)
class ToolFinished:
    record: ToolRecord


@dataclass(frozen=True)
class AgentNotice:
    """A limit the loop hit, in words for the user."""

    text: str


class AgentStream(ChatStream):
    """The agent's answer as a stream; ``records`` (the calls) and ``notices`` (limits hit)
    fill in as it runs."""

    def __init__(self, state: StreamState, produce: Any) -> None:
        self.records: list[ToolRecord] = []
        self.notices: list[str] = []
        super().__init__(state, produce)


class Agent:
    def __init__(
        self,
        registry: ToolRegistry,
        context: ToolContext | None = None,
        limits: AgentLimits | None = None,
        tool_choice: str | dict[str, Any] = "auto",
    ) -> None:
        self.registry = registry
        self.context = context or ToolContext()
        self.limits = limits or AgentLimits()
        self.tool_choice = tool_choice

    def request(self, request: ChatRequest) -> ChatRequest:
        """``request`` with this agent's tools and first-round tool choice."""
        return replace(request, tools=tuple(self.registry.specs()), tool_choice=self.tool_choice)

    def stream(self, backend: Backend, request: ChatRequest) -> AgentStream:
        """Start answering (the first round's errors are raised here, before any token)."""
        request = self.request(request)
        first = backend.chat(request)
        state = StreamState(backend.model_name, first.prompt_tokens, load_s=backend.load_seconds)
        return AgentStream(state, lambda outer: self._run(outer, backend, request, first))

    # --- the loop

    def _run(
        self, outer: AgentStream, backend: Backend, request: ChatRequest, first: ChatStream
    ) -> Generator[Any, None, None]:
        state = outer.state
        deadline = time.monotonic() + self.limits.wall_s
        out_of_time = f"stopped: the answer ran past its time limit ({self.limits.wall_s:g} s)"
        messages = list(request.messages)
        inner, step, repairs, last_round, timed_out = first, 0, 0, False, False
        rounds: list[Done] = []
        try:
            while True:
                done, begun = yield from self._relay(outer, inner, deadline)
                rounds.append(done)
                self._account(state, rounds)
                if outer.cancelled:
                    return
                if done.finish_reason == "cancelled" or time.monotonic() >= deadline:
                    timed_out = True
                    yield self._notice(outer, out_of_time)
                    break
                # A call cut off by max_tokens is not in tool_calls: say so, or the answer just ends.
                forced = step == 0 and self.tool_choice not in ("auto", "none")
                cut = begun > len(done.tool_calls) or (forced and not done.tool_calls)
                if done.finish_reason == "length" and cut:
                    yield self._notice(outer, "a tool call was cut off at --max-tokens and not run; raise --max-tokens")
                if last_round and not done.text.strip():
                    yield self._notice(outer, "the model gave no answer after its tool calls")
                if not done.tool_calls or last_round:
                    break
                step += 1
                messages.append(Message("assistant", done.text, tool_calls=done.tool_calls))
                for call in done.tool_calls:
                    yield ToolStarted(step, call)
                    started = time.perf_counter()
                    try:
                        record, invalid = self._call(step, call, deadline, backend.tokenize)
                    except KeyboardInterrupt:
                        result = ToolResult("interrupted by the user", is_error=True)
                        outer.records.append(self._record(step, call, INTERRUPTED, result, started, None))
                        raise
                    outer.records.append(record)
                    repairs += invalid
                    messages.append(Message("tool", record.result, tool_call_id=call.id, name=call.name))
                    yield ToolFinished(record)
                if time.monotonic() >= deadline:
                    timed_out = True
                    yield self._notice(outer, out_of_time)
                    break
                choice: str | dict[str, Any] = "auto"
                if repairs > self.limits.max_repairs:
                    note = f"the tool calls were still invalid after {self.limits.max_repairs} repairs"
                    yield self._notice(outer, f"{note}; the model answers without tools now")
                    choice, last_round = "none", True
                elif step >= self.limits.max_steps:
                    done_rounds = "1 round" if step == 1 else f"{step} rounds"
                    note = f"stopped calling tools after {done_rounds} (--max-steps {self.limits.max_steps})"
                    yield self._notice(outer, f"{note}; the model answers with what it has")
                    choice, last_round = "none", True
                inner = backend.chat(replace(request, messages=tuple(messages), tool_choice=choice))
        finally:
            inner.close()
        yield self._done(state, rounds, "length" if timed_out else None)

    def _relay(self, outer: AgentStream, inner: ChatStream, deadline: float) -> Generator[Any, None, tuple[Done, int]]:
        """Pass one round's text on (its tool calls come whole in its Done); return that Done
        and how many calls the model began."""
        begun = [0]
        # a call whose arguments break its schema is checked again below, and the model told what to fix
        with suppress(AnswerInvalidError):
            yield from self._relay_events(outer, inner, deadline, begun)
        return inner.result(), begun[0]

    def _relay_events(self, outer: AgentStream, inner: ChatStream, deadline: float, begun: list[int]) -> Iterator[Any]:
        state = outer.state
        separated = False
        for event in inner:
            if outer.cancelled or time.monotonic() >= deadline:
                inner.cancel()
            if isinstance(event, TextDelta) and event.text:
                if not separated and state.parts:  # a later round: keep its text apart from the last one's
                    joined = "".join(state.parts)
                    gap = "" if joined.endswith("\n\n") else "\n" if joined.endswith("\n") else "\n\n"
                    if gap:
                        state.parts.append(gap)
                        yield TextDelta(gap)
                separated = True
                if state.t_first is None:
                    state.t_first = time.perf_counter()
                state.parts.append(event.text)
                yield event
            elif isinstance(event, ToolCallDelta):
                begun[0] += event.name is not None
                if state.t_first is None:
                    state.t_first = time.perf_counter()

    def _account(self, state: StreamState, rounds: list[Done]) -> None:
        state.prompt_tokens = sum(d.prompt_tokens for d in rounds)
        state.cached_tokens = sum(d.cached_tokens for d in rounds)
        state.completion_tokens = sum(d.completion_tokens for d in rounds)

    def _done(self, state: StreamState, rounds: list[Done], reason: str | None) -> Done:
        """One Done for the whole answer: every round's tokens, the first round's prompt speed."""
        first, last = rounds[0].timings, rounds[-1].timings
        state.t_end = end = time.perf_counter()
        state.finish_reason = reason or (
            "stop" if rounds[-1].finish_reason == "tool_calls" else rounds[-1].finish_reason
        )
        return Done(
            text="".join(state.parts),
            model=state.model,
            finish_reason=state.finish_reason,
            usage=Usage(state.prompt_tokens, state.cached_tokens, state.completion_tokens),
            timings=Timings(
                load_s=first.load_s,
                ttft_s=round(state.t_first - state.t_start, 4) if state.t_first else None,
                prompt_tokens_per_s=first.prompt_tokens_per_s,
                generation_tokens_per_s=last.generation_tokens_per_s,
                total_s=round(end - state.t_start, 4),
            ),
        )

    def _notice(self, outer: AgentStream, text: str) -> AgentNotice:
        outer.notices.append(text)
        return AgentNotice(text)

    # --- one call

    def _call(
        self, step: int, call: ToolCall, deadline: float, tokenize: Callable[[str], list[int]]
    ) -> tuple[ToolRecord, bool]:
        """Run one call; return its record and whether it was invalid (a repair for the model)."""
        from localassist.tools.runner import run_tool
        from localassist.tools.schema import validate_arguments

        start = time.perf_counter()
        tool = self.registry.get(call.name)
        problem = None
        arguments: Any = None
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            problem = f"the arguments of {call.name!r} are not valid JSON ({exc.msg}); call it again with a JSON object"
        if problem is None and tool is None:
            problem = f"there is no tool named {call.name!r}; the tools are: {', '.join(self.registry.names)}"
        if problem is None and tool is not None:
            problem = validate_arguments(tool, arguments)
        if problem is not None or tool is None:
            result = ToolResult(problem or "", is_error=True)
            return self._record(step, call, NOT_ASKED, result, start, tokenize), True
        approve = self.context.approve
        decisions: list[bool] = []

        def asking(request: Approval) -> bool:
            decisions.append(bool(approve is not None and approve(request)))
            return decisions[-1]

        context = replace(
            self.context,
            approve=asking if approve is not None else None,
            timeout_s=max(0.1, min(self.context.timeout_s, deadline - time.monotonic())),
            output_budget=MAX_OUTPUT_CHARS,
        )
        needs: Approval | str | None  # str: FAILED_FIRST
        try:
            needs = tool.approval(arguments, context)
        except ToolError:
            needs = FAILED_FIRST
        result = run_tool(tool, arguments, context)
        if decisions:
            approval = APPROVED if decisions[-1] else DECLINED
        elif needs is None:
            approval = NOT_NEEDED
        elif needs == FAILED_FIRST:
            approval = FAILED_FIRST
        elif context.assume_yes:
            approval = ASSUMED
        else:
            approval = NO_TERMINAL
        return self._record(step, call, approval, result, start, tokenize), False

    def _record(
        self,
        step: int,
        call: ToolCall,
        approval: str,
        result: ToolResult,
        start: float,
        tokenize: Callable[[str], list[int]] | None,
    ) -> ToolRecord:
        text = cut_to_tokens(result.content, self.limits.output_tokens, tokenize) if tokenize else result.content
        if result.is_error:
            text = f"error: {text}"
        seconds = round(time.perf_counter() - start, 3)
        return ToolRecord(step, call.id, call.name, call.arguments, approval, text, result.is_error, seconds)


def cut_to_tokens(text: str, budget: int, tokenize: Callable[[str], list[int]]) -> str:
    """``text`` cut to ``budget`` tokens; the cut is stated, so the model knows it saw a part."""
    total = len(tokenize(text))
    if total <= budget:
        return text
    low, high = 0, min(len(text), budget * 8)
    while high < len(text) and len(tokenize(text[:high])) <= budget:  # a bound past the cut, found cheaply
        low, high = high, min(len(text), high * 2)
    while low < high:  # the longest prefix within the budget, by binary search
        middle = (low + high + 1) // 2
        if len(tokenize(text[:middle])) <= budget:
            low = middle
        else:
            high = middle - 1
    return f"{text[:low]}\n[output cut: the first {budget:,} of {total:,} tokens shown]"
