"""What is typed into the chat, in a real pseudo-terminal. Nothing typed ends the chat,
and keys typed while an answer streams wait for the next prompt instead of being drawn
into the answer."""

from __future__ import annotations

import io
import json
import threading

import pytest

from chatrepl import ANSI, PROMPT_READY, Repl
from logseed import logged_conversation

pytestmark = pytest.mark.model


# --- an escape sequence typed at the prompt


def test_escape_sequence_typed_at_the_prompt_does_not_end_the_chat(model_env, isolated_home):
    repl = Repl("-n", "2", env=model_env)
    # typed, not pasted: prompt_toolkit reads "\x1b[31m" as a mouse event and could not parse it
    typed = ["tab\there and \x1b[31m red", "\x1b[1;2m two", "\x1b[Mxyz three", "\x1b[<5;7m four"]
    for line in typed:
        repl.child.send(line + "\r")
        repl.child.expect_exact(PROMPT_READY)
        shown = ANSI.sub("", repl.child.before).lower()
        assert "error" not in shown and "exception" not in shown and "press enter" not in shown, (line, shown)
    assert "exchanges       4" in repl.send("/show")
    assert repl.exit() == 0
    sent = [exchange.prompt for exchange in logged_conversation(isolated_home).exchanges]
    # kept as typed (Tab completes, it does not insert)
    assert sent == ["tabhere and \x1b[31m red", "\x1b[1;2m two", "\x1b[Mxyz three", "\x1b[<5;7m four"]


def test_a_failure_in_the_input_layer_keeps_the_chat_and_the_line(backend, isolated_home):
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from localassist.assistant import Assistant
    from localassist.cli.env import Environment, using
    from localassist.cli.repl import Repl as ChatRepl
    from localassist.engine.types import SamplingParams
    from localassist.settings import load_settings

    settings = load_settings({"history": False, "log": False})
    session = Assistant(backend, SamplingParams(temperature=0, max_tokens=2))
    chat = ChatRepl(session, settings, False)
    real = chat._prompt_session
    err = io.StringIO()
    with using(Environment(stdin=None, stdout=io.StringIO(), stderr=err)), create_pipe_input() as pipe:
        broken = iter([True])

        def session_failing_once():
            prompt = real()

            @prompt.key_bindings.add("c-t")
            def _boom(event) -> None:
                if next(broken, False):
                    pipe.send_text(", finished\r\x04")  # typed after the failure, read by the next prompt
                    raise ValueError("not enough values to unpack (expected 3, got 1)")

            return prompt

        chat._prompt_session = session_failing_once
        chat.pt_input, chat.pt_output = pipe, DummyOutput()
        pipe.send_text("half a line\x14")  # Ctrl-T: the failing key
        # in a thread: before the fix, prompt_toolkit printed a traceback and waited for Enter on stdin
        thread = threading.Thread(target=chat.run, daemon=True)
        thread.start()
        thread.join(timeout=60)
        assert not thread.is_alive(), err.getvalue()
    assert "input error: ValueError: not enough values to unpack" in err.getvalue()
    assert [m.content for m in session.conversation.turns if m.role == "user"] == ["half a line, finished"]


# --- type-ahead while an answer streams


def test_keys_typed_while_an_answer_streams_wait_for_the_next_prompt(model_env, tmp_path):
    repl = Repl("-n", "1500", env=model_env)
    repl.child.sendline("List the numbers from 1 to 300, separated by commas.")
    repl.child.expect(r"1\d\.")  # the answer is streaming
    # a half-typed message, an Esc-Enter new line in it, more of it: no Enter to send it
    repl.child.send("And one about\x1b\rthe moon")
    repl.child.expect(r"2\d\.")  # still streaming after the keys arrived
    drawn = repl.child.before + repl.child.after
    repl.child.sendintr()  # stops the answer, and keeps what was typed
    repl.child.expect_exact(PROMPT_READY)
    answer = ANSI.sub("", drawn + repl.child.before)
    assert "interrupted" in answer
    assert "moon" not in answer and "one about" not in answer  # never echoed into the answer
    repl.child.send("\r")  # the keys are on the new prompt: Enter sends them, as one message
    repl.child.expect(r"\d\.")
    repl.child.sendintr()
    repl.child.expect_exact(PROMPT_READY)
    saved = tmp_path / "talk.json"
    repl.send(f"/save {saved}")
    messages = json.loads(saved.read_text())["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == [
        "List the numbers from 1 to 300, separated by commas.",
        "And one about\nthe moon",
    ]
    assert repl.exit() == 0


def test_keys_typed_ahead_cannot_answer_a_tool_approval(monkeypatch):
    """An approval between prompts reads a fresh line: what was typed before it goes to the
    next prompt (a "y" typed ahead must never approve a command)."""
    import os
    import pty

    from localassist.cli import typeahead

    leader, follower = pty.openpty()
    try:
        with typeahead.held(follower):
            os.write(leader, b"y\r")  # typed while the answer streamed
            with typeahead.asking():
                os.write(leader, b"n\n")
                assert os.read(follower, 100) == b"n\n"  # the question's answer, in the normal line mode
            assert typeahead.take() == "y\r"  # kept, for the next prompt
    finally:
        os.close(leader)
        os.close(follower)
