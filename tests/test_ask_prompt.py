from __future__ import annotations

import pytest

from localassist.conversation.prompt import build_user_text, decode_stdin
from localassist.engine.types import Message
from localassist.errors import UsageError
from localassist.settings import DEFAULT_INPUT_TEMPLATE


def test_instruction_only_and_input_only():
    assert build_user_text("  Summarize  ", None, DEFAULT_INPUT_TEMPLATE) == "Summarize"
    assert build_user_text("", "some text\n", DEFAULT_INPUT_TEMPLATE) == "some text\n"


def test_both_are_joined_through_the_template_not_a_space():
    text = build_user_text("Write a commit message", "diff --git a b\n+x\n", DEFAULT_INPUT_TEMPLATE)
    assert text == "Write a commit message\n\n<input>\ndiff --git a b\n+x\n</input>"


def test_braces_in_user_text_are_not_placeholders():
    text = build_user_text("Explain {input}", "f = lambda: {instruction}", "{instruction}|{input}")
    assert text == "Explain {input}|f = lambda: {instruction}"


@pytest.mark.parametrize(("instruction", "piped"), [(None, None), ("", ""), ("   ", " \n\t")])
def test_empty_input_is_a_usage_error(instruction, piped):
    with pytest.raises(UsageError, match="nothing to ask"):
        build_user_text(instruction, piped, DEFAULT_INPUT_TEMPLATE)


def test_system_prompt_comes_first():
    """What the engine is sent for a question: the system prompt, then the user's text. ask's
    pipeline (pipeline.start) and chat both send through Assistant.send."""
    from localassist.assistant import Assistant
    from localassist.engine.types import SamplingParams
    from scripted import ScriptedBackend

    for system, expected in (
        ("be terse", (Message("system", "be terse"), Message("user", "hi"))),
        (None, (Message("user", "hi"),)),
    ):
        backend = ScriptedBackend(["ok"])
        session = Assistant(backend, SamplingParams(max_tokens=8), system=system)
        session.finish(session.send("hi"))
        assert backend.requests[0].messages == expected


def test_binary_stdin_is_refused_and_bad_utf8_is_replaced():
    with pytest.raises(UsageError, match="binary"):
        decode_stdin(b"\x7fELF\x00\x01")
    assert decode_stdin(b"caf\xe9") == "caf\ufffd"


# --- a UTF-8 byte order mark on stdin is not text


def test_utf8_bom_on_stdin_is_dropped():
    assert decode_stdin(b"\xef\xbb\xbfhello") == "hello"
    assert decode_stdin("héllo".encode()) == "héllo"
