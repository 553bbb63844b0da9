"""Tool-call text in each model family's documented format, well-formed and malformed, whole and streamed."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from localassist.tools import ToolInvocation
from localassist.tools.parsing import REACT_STOP, detect_format, find_call, react_instructions, visible_length
from localassist.tools.registry import resolve_tools
from toolcall_parser import parse_tool_calls

FIXTURES = Path(__file__).parent / "fixtures" / "tools"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("name", "fmt", "content", "calls"),
    [
        ("hermes_single.txt", "hermes", "", [ToolInvocation("calc", {"expression": "17 * 23"})]),
        (
            "hermes_parallel.txt",
            "hermes",
            "Let me look both up.\n",
            [
                ToolInvocation("time", {"action": "now", "zone": "Asia/Tokyo"}),
                ToolInvocation("calc", {"expression": "2**10"}),
            ],
        ),
        ("hermes_unterminated_string_args.txt", "hermes", "", [ToolInvocation("calc", {"expression": "3*3"})]),
        ("llama3_python_tag.txt", "llama3", "", [ToolInvocation("files", {"action": "list", "path": "notes"})]),
        ("llama3_bare.txt", "llama3", "", [ToolInvocation("time", {"action": "weekday", "date": "2024-07-04"})]),
        (
            "llama3_bare_two_calls.txt",
            "llama3",
            "",
            [ToolInvocation("calc", {"expression": "sqrt(2)"}), ToolInvocation("time", {"action": "today"})],
        ),
        (
            "mistral_list.txt",
            "mistral",
            "",
            [ToolInvocation("calc", {"expression": "100 / 7"}, "Ab3dE5gH9"), ToolInvocation("time", {"action": "now"})],
        ),
        ("mistral_v11.txt", "mistral", "", [ToolInvocation("calc", {"expression": "6 * 7"})]),
        (
            "react_action.txt",
            "react",
            "Thought: I need the number of days between the two dates.\n",
            [ToolInvocation("time", {"action": "days_between", "date": "2024-01-01", "end_date": "2024-03-01"})],
        ),
    ],
)
def test_documented_formats_parse_into_calls(name, fmt, content, calls):
    text = fixture(name)
    for chosen in (fmt, "auto"):
        parsed = parse_tool_calls(text, chosen)
        assert parsed.format == fmt
        assert parsed.errors == ()
        assert list(parsed.calls) == calls
        assert parsed.content == content


@pytest.mark.parametrize(
    ("name", "fmt", "good_calls", "message"),
    [
        ("hermes_bad_json.txt", "hermes", [ToolInvocation("time", {"action": "today"})], "not valid JSON"),
        ("llama3_bad_json.txt", "llama3", [], "not valid JSON"),
        ("mistral_bad_json.txt", "mistral", [], "not valid JSON"),
        ("react_bad_input.txt", "react", [], "not a JSON object"),
    ],
)
def test_malformed_calls_are_error_values_with_a_repair_hint(name, fmt, good_calls, message):
    parsed = parse_tool_calls(fixture(name), fmt)
    assert parsed.found
    assert parsed.format == fmt
    assert list(parsed.calls) == good_calls
    assert len(parsed.errors) == 1
    assert message in parsed.errors[0].message
    assert "write a call as" in parsed.errors[0].message
    assert parsed.errors[0].raw


@pytest.mark.parametrize(
    "text",
    [
        "<tool_call>\n[1, 2]\n</tool_call>",
        '<tool_call>\n{"arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "calc", "arguments": [1]}\n</tool_call>',
        '<tool_call>\n{"name": "calc", "arguments": "not json"}\n</tool_call>',
        "<tool_call>\n</tool_call>",
        "<|python_tag|>brave_search.call(query='x')",
        "[TOOL_CALLS] nonsense",
        "Action: calc\n",
    ],
)
def test_odd_call_text_never_raises(text):
    parsed = parse_tool_calls(text)
    assert parsed.found
    assert parsed.calls == ()
    assert parsed.errors


def test_plain_answers_hold_no_calls():
    text = fixture("plain_answer.txt")
    for fmt in ("auto", "hermes", "llama3", "mistral", "react"):
        parsed = parse_tool_calls(text, fmt)
        assert not parsed.found
        assert parsed.content == text
    assert parse_tool_calls('{"answer": 42}', "llama3").content == '{"answer": 42}'


def test_react_final_answer_is_the_content():
    parsed = parse_tool_calls(fixture("react_final.txt"), "react")
    assert not parsed.found
    assert parsed.content == "There are 60 days."


def stream_views(text: str, fmt: str) -> list[str]:
    """What a streaming display shows after each character arrives."""
    return [text[: visible_length(text[:end], fmt)] for end in range(len(text) + 1)]


@pytest.mark.parametrize(
    ("name", "fmt", "marker"),
    [
        ("hermes_parallel.txt", "hermes", "<tool_call>"),
        ("llama3_python_tag.txt", "llama3", "<|python_tag|>"),
        ("llama3_bare.txt", "llama3", "{"),
        ("mistral_list.txt", "mistral", "[TOOL_CALLS]"),
        ("react_action.txt", "react", "Action:"),
    ],
)
def test_streaming_never_shows_any_part_of_a_call(name, fmt, marker):
    text = fixture(name)
    content = parse_tool_calls(text, fmt).content
    views = stream_views(text, fmt)
    for before, after in itertools.pairwise(views):
        assert after.startswith(before)  # shown text is never taken back
    for view in views:
        assert content.startswith(view), view
        assert marker not in view
    assert views[-1] == content
    assert find_call(text, fmt) == (len(content), fmt)


def test_streaming_holds_a_possible_marker_prefix_then_releases_it():
    assert visible_length("The answer is <tool", "hermes") == len("The answer is ")
    assert visible_length("The answer is <b>", "hermes") == len("The answer is <b>")
    assert visible_length("It costs [TOOL", "mistral") == len("It costs ")
    assert visible_length("Thought: hmm\nAct", "react") == len("Thought: hmm\n")
    assert visible_length("Thought: hmm\nAbout", "react") == len("Thought: hmm\nAbout")
    assert visible_length('  {"na', "llama3") == 0
    assert visible_length('{"answer": 1}', "llama3") == len('{"answer": 1}')
    plain = fixture("plain_answer.txt")
    assert stream_views(plain, "auto")[-1] == plain


def test_detect_format_from_chat_templates():
    assert detect_format("{%- if tools %}<tool_call>\\n{{ tool_call | tojson }}\\n</tool_call>{% endif %}") == "hermes"
    assert detect_format('{{- "<|python_tag|>" + tool_call.name }}<|start_header_id|>') == "llama3"
    assert detect_format("{{ '[TOOL_CALLS] ' + tool_calls | tojson }}") == "mistral"
    assert detect_format("{{ bos_token }}<start_of_turn>user") == "react"
    assert detect_format(None) == "react"


def test_react_instructions_name_every_tool_and_the_stop_string():
    text = react_instructions(resolve_tools("calc,time"))
    assert "- calc: " in text and "- time: " in text
    assert "Action Input:" in text and "Final Answer:" in text
    assert REACT_STOP.strip() in text
