"""The agent loop: rounds, limits, repairs, approval, cuts, Ctrl-C.

A scripted backend plays the model where the test needs a model that misbehaves on cue
(never stops calling, writes invalid arguments, calls outside the allowed folders); the
tools are the real ones. The last test runs the loop on a real model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest

from localassist.agent import Agent, AgentLimits, ToolFinished, ToolStarted, cut_to_tokens
from localassist.engine.types import (
    ChatRequest,
    Done,
    Message,
    SamplingParams,
    TextDelta,
)
from localassist.tools import ToolContext, resolve_tools
from localassist.tools.schema import validate_arguments
from scripted import ScriptedBackend

FIXTURES = Path(__file__).parent / "fixtures" / "tools"


def run(agent, backend, question="q"):
    stream = agent.stream(backend, ChatRequest(messages=(Message("user", question),)))
    events = list(stream)
    return events, stream.result(), stream


def tool_messages(request: ChatRequest) -> list[Message]:
    return [m for m in request.messages if m.role == "tool"]


def test_max_steps_stops_a_model_that_never_stops_calling():
    backend = ScriptedBackend([[("calc", {"expression": "1+1"})]])
    agent = Agent(resolve_tools("calc"), limits=AgentLimits(max_steps=3))
    _, done, stream = run(agent, backend)
    assert len(stream.records) == 3  # three rounds of calls, then no more
    assert [r.tool_choice for r in backend.requests] == ["auto", "auto", "auto", "none"]
    assert done.text == "final answer" and done.finish_reason == "stop"
    assert stream.notices == [
        "stopped calling tools after 3 rounds (--max-steps 3); the model answers with what it has"
    ]
    assert len(tool_messages(backend.requests[-1])) == 3


def test_a_forced_choice_applies_to_the_first_round_only():
    backend = ScriptedBackend([[("calc", {"expression": "2*3"})], "6"])
    agent = Agent(resolve_tools("calc"), tool_choice="required")
    _, done, stream = run(agent, backend)
    assert [r.tool_choice for r in backend.requests] == ["required", "auto"]
    assert done.text == "6" and stream.records[0].result == "6"


def test_invalid_arguments_get_the_repair_message_and_at_most_two_repairs():
    registry = resolve_tools(str(FIXTURES / "agent_tools.py"))
    bad = {"a": "seventeen", "b": 23}
    backend = ScriptedBackend([[("multiply", bad)]])
    agent = Agent(registry, limits=AgentLimits(max_steps=10))
    _, _, stream = run(agent, backend)
    expected = validate_arguments(registry.get("multiply"), bad)  # the schema's own complaint
    assert "'seventeen' is not of type 'integer'" in expected
    assert len(stream.records) == 3  # the first try and two repairs
    assert all(r.result == f"error: {expected}" and r.is_error for r in stream.records)
    assert all(r.approval == "not asked: invalid call" for r in stream.records)
    assert backend.requests[-1].tool_choice == "none"
    assert "still invalid after 2 repairs" in stream.notices[0]


def test_an_unknown_tool_or_bad_json_is_a_repair_too():
    backend = ScriptedBackend([[("nosuch", {})], "ok"])
    _, _, stream = run(Agent(resolve_tools("calc")), backend)
    assert stream.records[0].result == "error: there is no tool named 'nosuch'; the tools are: calc"


def test_parallel_calls_run_in_order_and_their_results_go_back_in_order():
    backend = ScriptedBackend([[("calc", {"expression": "1+1"}), ("calc", {"expression": "2+2"})], "done"])
    events, _, stream = run(Agent(resolve_tools("calc")), backend)
    assert [r.result for r in stream.records] == ["2", "4"]
    results = tool_messages(backend.requests[1])
    assert [(m.content, m.tool_call_id, m.name) for m in results] == [
        ("2", "call_1_0", "calc"),
        ("4", "call_1_1", "calc"),
    ]
    assistant = next(m for m in backend.requests[1].messages if m.role == "assistant")
    assert [c.id for c in assistant.tool_calls] == ["call_1_0", "call_1_1"]
    kinds = [type(e).__name__ for e in events if not isinstance(e, TextDelta)]
    assert kinds == ["ToolStarted", "ToolFinished", "ToolStarted", "ToolFinished", "Done"]


def test_files_refuses_paths_outside_the_allowed_folder(tmp_path):
    root = tmp_path / "notes"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("the secret")
    (root / "link").symlink_to(tmp_path / "secret.txt")
    calls = [
        ("files", {"action": "read", "path": "../secret.txt"}),
        ("files", {"action": "read", "path": str(tmp_path / "secret.txt")}),
        ("files", {"action": "read", "path": "link"}),
    ]
    backend = ScriptedBackend([calls, "done"])
    agent = Agent(resolve_tools("files"), ToolContext(roots=(root,)))
    _, _, stream = run(agent, backend)
    assert [r.is_error for r in stream.records] == [True, True, True]
    assert all("outside the allowed folders" in r.result for r in stream.records)
    assert not any("the secret" in m.content for m in tool_messages(backend.requests[1]))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('id')", "not allowed in an arithmetic expression: attribute access"),
        ("(1).__class__", "not allowed in an arithmetic expression: attribute access"),
        ("10**10**10", "exponent too large"),
    ],
)
def test_calc_refuses_code_and_huge_powers(expression, message):
    backend = ScriptedBackend([[("calc", {"expression": expression})], "done"])
    _, _, stream = run(Agent(resolve_tools("calc")), backend)
    assert stream.records[0].is_error and message in stream.records[0].result


def test_a_tool_timeout_is_reported_to_the_model(tmp_path):
    tools = tmp_path / "slow.py"
    tools.write_text(
        "import time\nfrom localassist.tools import safe\n\n@safe\ndef nap(seconds: float) -> str:\n"
        '    """Sleep."""\n    time.sleep(seconds)\n    return "awake"\n'
    )
    backend = ScriptedBackend([[("nap", {"seconds": 5})], "done"])
    agent = Agent(resolve_tools(str(tools)), ToolContext(timeout_s=0.3))
    start = time.monotonic()
    _, _, stream = run(agent, backend)
    assert time.monotonic() - start < 4
    assert stream.records[0].result == "error: nap: timed out after 0.3 s; no result"


def test_the_wall_clock_limit_ends_the_answer():
    backend = ScriptedBackend([[("calc", {"expression": "1"})]])
    agent = Agent(resolve_tools("calc"), limits=AgentLimits(max_steps=100, wall_s=0.0))
    _, done, stream = run(agent, backend)
    assert done.finish_reason == "length"
    assert stream.notices == ["stopped: the answer ran past its time limit (0 s)"]


def test_approval_decisions_are_recorded(tmp_path):
    tools = FIXTURES / "agent_exec_tools.py"
    backend = ScriptedBackend([[("touch", {"name": "a"}), ("touch", {"name": "b"})], "done"])
    answers = iter([True, False])
    agent = Agent(resolve_tools(str(tools)), ToolContext(approve=lambda request: next(answers)))
    _, _, stream = run(agent, backend)
    assert [r.approval for r in stream.records] == ["approved", "declined"]
    assert stream.records[1].result.startswith("error: touch: the user declined")

    for context, approval in [
        (ToolContext(), "refused: no terminal to ask on"),
        (ToolContext(assume_yes=True), "approved by --yes-shell"),
    ]:
        backend = ScriptedBackend([[("touch", {"name": "c"})], "done"])
        _, _, stream = run(Agent(resolve_tools(str(tools)), context), backend)
        assert stream.records[0].approval == approval


def test_ctrl_c_at_the_approval_prompt_stops_the_loop_and_keeps_the_calls():
    def interrupt(request):
        raise KeyboardInterrupt

    backend = ScriptedBackend([[("touch", {"name": "a"})], "done"])
    agent = Agent(resolve_tools(str(FIXTURES / "agent_exec_tools.py")), ToolContext(approve=interrupt))
    stream = agent.stream(backend, ChatRequest(messages=(Message("user", "q"),)))
    with pytest.raises(KeyboardInterrupt):
        for _ in stream:
            pass
    stream.cancel()
    done = stream.result()
    assert done.cancelled
    assert [r.approval for r in stream.records] == ["interrupted"]
    assert len(backend.requests) == 1  # no round after the interrupt


def test_a_later_round_is_set_apart_from_the_text_before_the_call():
    backend = ScriptedBackend([("Let me check.", [("calc", {"expression": "1+1"})]), "It is 2."])
    events, done, _ = run(Agent(resolve_tools("calc")), backend)
    assert done.text == "Let me check.\n\nIt is 2."
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == done.text


def test_tool_output_is_cut_to_the_token_budget_and_the_cut_is_stated(vocab):
    def tokenize(text):
        return vocab.tokenize(text.encode(), add_bos=False, special=False)

    for text in ("word " * 500, "=" * 20_000):  # short tokens; long ones (runs of "=" are few tokens)
        cut = cut_to_tokens(text, 50, tokenize)
        shown, note = cut.rsplit("\n", 1)
        total = len(tokenize(text))
        assert note == f"[output cut: the first 50 of {total:,} tokens shown]"
        assert len(tokenize(shown)) <= 50 < len(tokenize(text[: len(shown) + 1]))
    assert cut_to_tokens("short", 50, tokenize) == "short"


@pytest.mark.model
def test_a_forced_call_on_a_real_model_completes_the_loop(starter_chat_path):
    from localassist.engine.local import LoadOptions, LocalBackend

    path = starter_chat_path
    template = str(FIXTURES / "qwen2.5_chat_template.jinja")
    backend = LocalBackend(path, "starter-chat", LoadOptions(ctx=1024, threads=1, chat_format=template))
    try:
        registry = resolve_tools(str(FIXTURES / "agent_tools.py"))
        agent = Agent(registry, tool_choice={"type": "function", "function": {"name": "multiply"}})
        request = ChatRequest(
            messages=(Message("user", "What is 17 times 23?"),), sampling=SamplingParams(temperature=0, max_tokens=60)
        )
        stream = agent.stream(backend, request)
        events = list(stream)
        done = stream.result()
    finally:
        backend.close()
    started = [e for e in events if isinstance(e, ToolStarted)]
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert len(started) == len(finished) >= 1
    arguments = json.loads(started[0].call.arguments)
    jsonschema.validate(arguments, registry.get("multiply").parameters)
    assert finished[0].record.result == str(arguments["a"] * arguments["b"])
    assert done.finish_reason in ("stop", "length") and isinstance(done, Done)


@pytest.mark.model
def test_a_tool_call_cut_off_by_max_tokens_is_said_not_silent(starter_chat_path):
    from localassist.engine.local import LoadOptions, LocalBackend

    path = starter_chat_path
    template = str(FIXTURES / "qwen2.5_chat_template.jinja")
    backend = LocalBackend(path, "starter-chat", LoadOptions(ctx=1024, threads=1, chat_format=template))
    try:
        agent = Agent(resolve_tools(str(FIXTURES / "agent_tools.py")), tool_choice="required")
        # '{"name": "multiply", "arguments": {"a": 17, "b": 23}}' is well over 6 tokens
        request = ChatRequest(
            messages=(Message("user", "What is 17 times 23?"),), sampling=SamplingParams(temperature=0, max_tokens=6)
        )
        stream = agent.stream(backend, request)
        events = list(stream)
        done = stream.result()
    finally:
        backend.close()
    assert not [e for e in events if isinstance(e, ToolStarted)] and not stream.records
    assert done.finish_reason == "length" and done.text == ""
    assert stream.notices == ["a tool call was cut off at --max-tokens and not run; raise --max-tokens"]
