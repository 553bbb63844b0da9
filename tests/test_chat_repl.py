"""The real REPL in a pseudo-terminal, running the real starter model at temperature 0."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pexpect
import pytest

import chatformats
from chatformats import n_tokens
from chatrepl import ANSI, PROMPT_READY, Repl, stats
from localassist.assistant import Assistant
from localassist.engine.types import SamplingParams

pytestmark = pytest.mark.model


def test_stats_are_read_the_same_wherever_the_terminal_wraps_the_line(starter_model, tmp_path):
    # a model path as long as pytest's temp folders grow, in a terminal narrower than the line
    deep = tmp_path / ("d" * 50) / ("e" * 50)
    deep.mkdir(parents=True)
    (deep / "starter.gguf").symlink_to(starter_model)
    counts = []
    for columns in (40, 57, 300):
        repl = Repl("-n", "4", env={"LOCALASSIST_MODEL": str(deep / "starter.gguf")}, columns=columns)
        repl.send("Hello")
        counts.append(stats(repl))
        assert repl.exit() == 0
    assert counts[0] == counts[1] == counts[2] and 0 < counts[0]["answer"] <= 4, counts


def test_multi_turn_set_clear_regen_and_exit(model_env, tmp_path):
    repl = Repl("-n", "16", env=model_env)
    first = repl.send("Hello! What is your name?")
    assert first.strip()
    turn1 = stats(repl)
    repl.send("And what is the second point?")
    turn2 = stats(repl)
    # the follow-up carries the conversation and only the new tokens are evaluated
    assert turn2["prompt"] > turn1["prompt"] + turn1["answer"]
    assert turn2["cached"] >= turn1["prompt"] + turn1["answer"] - 2

    assert "max_tokens = 5" in repl.send("/set max_tokens 5")
    repl.send("Say something")
    said = stats(repl)
    assert said["answer"] <= 5
    assert "must be a number between 0 and 2" in repl.send("/set temperature 7")
    assert "unknown command /frob" in repl.send("/frob")
    assert "exchanges       3" in repl.send("/show")

    repl.send("/regen")
    again = stats(repl)
    # the same question sent again, not after the old answer: all of it but one token is in the KV cache
    assert (again["prompt"], again["cached"]) == (said["prompt"], said["prompt"] - 1)
    assert "exchanges       3" in repl.send("/show")
    repl.send("/undo")
    assert "exchanges       2" in repl.send("/show")
    assert "conversation cleared" in repl.send("/clear")
    assert "exchanges       0" in repl.send("/show")
    assert "/regen" in repl.send("/help")
    assert repl.exit() == 0


def test_save_and_load_round_trip(model_env, tmp_path):
    repl = Repl("-n", "8", "--system", "You are terse.", env=model_env)
    repl.send("Name a colour.")
    repl.send("Name another.")
    saved = tmp_path / "talk.json"
    assert "saved" in repl.send(f"/save {saved}")
    repl.send(f"/save {tmp_path / 'talk.md'}")
    data = json.loads(saved.read_text())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]
    assert data["messages"][0]["content"] == "Name a colour." and data["system"] == "You are terse."
    assert (tmp_path / "talk.md").read_text().startswith("# Chat with")
    repl.send("/clear")
    assert "loaded 4 messages" in repl.send(f"/load {saved}")
    assert "exchanges       2" in repl.send("/show")
    repl.send(f"/save {tmp_path / 'again.json'}")
    assert json.loads((tmp_path / "again.json").read_text())["messages"] == data["messages"]
    assert repl.exit() == 0


def test_ctrl_c_stops_the_answer_and_keeps_it(model_env, tmp_path):
    repl = Repl("-n", "1500", env=model_env)
    repl.child.sendline("List the numbers from 1 to 300, separated by commas.")
    repl.child.expect(r"1\d\.")  # the answer is streaming
    repl.child.sendintr()
    repl.child.expect_exact(PROMPT_READY)
    assert "interrupted" in ANSI.sub("", repl.child.before)
    repl.send(f"/save {tmp_path / 'cut.json'}")
    last = json.loads((tmp_path / "cut.json").read_text())["messages"][-1]
    assert last["role"] == "assistant" and last["interrupted"] is True and "10." in last["content"]
    assert "finish" not in last
    # the REPL survived: it still answers
    assert repl.send("/stats").count("(cancelled)") == 1
    assert repl.exit() == 0


def test_ctrl_c_on_the_prompt_clears_the_line(model_env):
    repl = Repl("-n", "4", env=model_env)
    repl.child.send("half a thought")
    repl.child.sendintr()
    repl.child.expect_exact(PROMPT_READY)
    assert "exchanges       0" in repl.send("/show")
    assert repl.exit() == 0


def test_triple_quote_block_is_one_message(model_env, tmp_path):
    repl = Repl("-n", "4", env=model_env)
    repl.child.sendline('"""first line')
    repl.child.sendline("second line")
    repl.child.sendline('"""')
    repl.child.expect_exact(PROMPT_READY)
    repl.send(f"/save {tmp_path / 'block.json'}")
    messages = json.loads((tmp_path / "block.json").read_text())["messages"]
    assert messages[0]["content"] == "first line\nsecond line"
    assert repl.exit() == 0


def test_history_is_persisted(model_env, isolated_home):
    repl = Repl("-n", "2", env=model_env)
    repl.send("/show")
    assert repl.exit() == 0
    history = isolated_home / "data" / "chat_history"
    assert "/show" in history.read_text()


def test_piped_input_without_a_terminal_answers_once(model_env, cli):
    proc = subprocess.run(
        [sys.executable, "-m", "localassist", "chat", "-T", "0", "-n", "6"],
        input=b"Hello there",
        capture_output=True,
        env={**os.environ, **model_env},
        start_new_session=True,  # no controlling terminal: /dev/tty cannot be opened
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and b"\x1b" not in proc.stdout
    # one exchange: the piped text was the question, and stdout is its answer
    rows = json.loads(cli("logs", "--json").stdout)
    assert [r["prompt"] for r in rows] == ["Hello there"]
    assert proc.stdout.decode().rstrip("\n") == rows[0]["response"].rstrip("\n")


def test_piped_context_then_the_terminal(model_env, cli, vocab):
    """`cat notes | localassist chat`: the notes become context, the terminal keeps the chat."""
    env = {**os.environ, **model_env, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color"}
    command = f"printf 'The secret word is pineapple.' | {sys.executable} -m localassist chat -T 0 -n 6"
    child = pexpect.spawn("bash", ["-c", command], env=env, dimensions=(40, 120), encoding="utf-8", timeout=90)
    child.expect_exact(PROMPT_READY)
    assert "context: 29 characters from stdin" in ANSI.sub("", child.before)
    child.sendline("/show")
    child.expect_exact(PROMPT_READY)
    used = re.search(r"context used\s+(\d+)/", ANSI.sub("", child.before))
    assert used and int(used.group(1)) > 10  # the pinned context is counted before any exchange
    child.sendline("What is the secret word?")
    child.expect_exact(PROMPT_READY)
    child.sendline("/stats")
    child.expect_exact(PROMPT_READY)
    sent = int(re.search(r"prompt (\d+) tok", ANSI.sub("", child.before)).group(1))
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    # the question came from the terminal, and the piped notes went to the model with it
    rows = json.loads(cli("logs", "--json").stdout)
    assert [r["prompt"] for r in rows] == ["What is the secret word?"]
    question_alone = n_tokens(vocab, chatformats.gemma([("user", "What is the secret word?")]))
    assert sent >= question_alone + n_tokens(vocab, "The secret word is pineapple.", special=False)


PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


def paste(repl: Repl, text: str) -> str:
    """Paste ``text`` (bracketed paste: taken literally, controls included) and send it."""
    repl.child.send(PASTE_START + text + PASTE_END)
    repl.child.send("\r")
    repl.child.expect_exact(PROMPT_READY)
    return ANSI.sub("", repl.child.before)


# --- user and model text is never Rich markup


NASTY = [
    "[/x]",
    "[bold]b[/bold]",
    "[red",
    "\\[",
    "x\\",
    "[/]",
    "[link=file:///etc]",
    ":smile:",
    "\x1b[2J",
    "\x07",
    "\x1b]0;t\x07",
]


def test_markup_like_and_control_text_never_breaks_the_repl(model_env, isolated_home):
    repl = Repl("-n", "2", env=model_env)
    rng = random.Random(7)
    alphabet = "[]/\\x:\x1b\x07\x08\x00\x7f é"
    samples = NASTY + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(25)]
    for text in samples:
        shown = paste(repl, "/system " + text)
        assert "system prompt set" in shown or "system prompt removed" in shown, (text, shown)
        shown = repl.send("/show")
        assert "error" not in shown.lower(), (text, shown)
        assert "\x1b[2J" not in repl.child.before  # an escape sequence is shown, never sent on to the terminal
    for text in NASTY[:4]:
        paste(repl, text)  # as chat messages: answered, logged, echoed in /undo
        assert "removed:" in repl.send("/undo")
    assert repl.exit() == 0


# --- a failing turn or command costs one line, not the session


def test_an_unexpected_failure_in_a_turn_keeps_the_session(backend, isolated_home, monkeypatch):
    import io

    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from localassist.cli.env import Environment, using
    from localassist.cli.repl import Repl
    from localassist.settings import load_settings

    settings = load_settings({"history": False, "log": False})
    session = Assistant(backend, SamplingParams(temperature=0, max_tokens=2))
    failures = iter([RuntimeError("boom")])
    real_send = session.send

    def flaky_send(text):
        for exc in failures:
            raise exc
        return real_send(text)

    monkeypatch.setattr(session, "send", flaky_send)
    err = io.StringIO()
    with using(Environment(stdin=None, stdout=io.StringIO(), stderr=err)), create_pipe_input() as pipe:
        pipe.send_text("first\rsecond\r\x04")  # Ctrl-D at the end: EOF ends the REPL
        Repl(session, settings, False, pt_input=pipe, pt_output=DummyOutput()).run()
    assert "internal error: RuntimeError: boom" in err.getvalue()
    assert [m.content for m in session.conversation.turns if m.role == "user"] == ["second"]
