"""Trust defects in chat and ask (issue #9): what is logged and resumed is what was shown,
one precedence for templates, and a REPL that survives any text and any failure.

Every test here failed on the code before the fix."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys

import pytest

import chatformats
from chatformats import n_tokens
from localassist.assistant import Assistant
from localassist.conversation.log_store import LogStore, log_path
from localassist.engine.types import Done, SamplingParams, Timings, Usage
from test_chat_repl import ANSI, PROMPT_READY, Repl

pytestmark = pytest.mark.model

PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


def paste(repl: Repl, text: str) -> str:
    """Paste ``text`` (bracketed paste: taken literally, controls included) and send it."""
    repl.child.send(PASTE_START + text + PASTE_END)
    repl.child.send("\r")
    repl.child.expect_exact(PROMPT_READY)
    return ANSI.sub("", repl.child.before)


def logged(home, cid=None, include_hidden=False):
    store = LogStore(log_path(home / "data"))
    try:
        return store.conversation(cid or store.latest_conversation_id(), include_hidden=include_hidden)
    finally:
        store.close()


# --- 8: user and model text is never Rich markup


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


# --- 10: a failing turn or command costs one line, not the session


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


# --- 11: resume applies the memory policy instead of failing


def _seed_long_conversation(home, n=12, words=60):
    store = LogStore(log_path(home / "data"))
    timings = Timings(0, None, None, None, 0)
    cid = None
    for i in range(n):
        text = f"Exchange {i}: " + " ".join(["filler"] * words)
        done = Done(text, "starter", "stop", Usage(0, 0, 0), timings)
        cid = store.log_exchange(cid, f"Question {i}? " + " ".join(["more"] * words), done, {}).conversation_id
    store.close()
    return cid


def test_resume_longer_than_the_context_drops_old_exchanges_with_a_notice(model_env, isolated_home):
    _seed_long_conversation(isolated_home)
    repl = Repl("--resume", "--ctx", "512", "-n", "8", env=model_env)
    shown = ANSI.sub("", repl.child.before)
    assert "resumed" in shown and "oldest exchanges" in shown and "to fit the context" in shown
    used = repl.send("/show")
    assert "exchanges" in used
    repl.send("And now?")  # the conversation goes on
    assert repl.exit() == 0


# --- 12: the log and resume show the conversation as it stood on screen


def test_log_shows_the_conversation_as_it_stood_after_regen_undo_system(model_env, isolated_home):
    repl = Repl("-n", "4", env=model_env)
    repl.send("First question")
    repl.send("Second question")
    repl.send("/regen")
    repl.send("Third question")
    repl.send("/undo")
    repl.send("/system Be brief.")
    assert repl.exit() == 0
    conv = logged(isolated_home)
    assert [m.content for m in conv.messages() if m.role == "user"] == ["First question", "Second question"]
    assert conv.system == "Be brief."
    everything = logged(isolated_home, conv.id, include_hidden=True)
    assert sorted(ex.status for ex in everything.exchanges) == ["active", "active", "superseded", "undone"]
    # chat --resume shows exactly that
    again = Repl("--resume", "-n", "4", env=model_env)
    shown = again.send("/show")
    assert "exchanges       2" in shown and "Be brief." in shown
    assert again.exit() == 0
    shown_json = subprocess.run(
        [sys.executable, "-m", "localassist", "logs", "show", conv.id, "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [ex["prompt"] for ex in json.loads(shown_json)["exchanges"]] == ["First question", "Second question"]


def test_clear_and_load_are_reflected_in_the_log(model_env, isolated_home, tmp_path):
    repl = Repl("-n", "4", env=model_env)
    repl.send("Alpha")
    repl.send("Beta")
    repl.send(f"/save {tmp_path / 't.json'}")
    repl.send("/clear")
    repl.send("Gamma")
    conv = logged(isolated_home)
    assert [m.content for m in conv.messages() if m.role == "user"] == ["Gamma"]
    repl.send(f"/load {tmp_path / 't.json'}")
    assert repl.exit() == 0
    conv = logged(isolated_home)
    transcript = json.loads((tmp_path / "t.json").read_text())["messages"]
    assert [(m.role, m.content) for m in conv.messages()] == [(m["role"], m["content"]) for m in transcript]


# --- 13: one precedence, and a template applied once


def test_regen_sends_the_templated_message_once(backend):
    from localassist.conversation.prompt_templates import load_template
    from localassist.settings import app_paths

    session = Assistant(backend, SamplingParams(temperature=0, max_tokens=2))
    session.use_template(load_template("translate", app_paths().config_dir), {"language": "French"})
    first = session.send("Hello")
    session.finish(first)
    again = session.regen()
    assert again.user.content == first.user.content
    assert again.user.content.count("Translate the following text") == 1


def test_explicit_flags_beat_template_options_in_chat(backend):
    from localassist.conversation.prompt_templates import load_template
    from localassist.settings import app_paths

    params = SamplingParams(temperature=0.5, max_tokens=5)
    session = Assistant(backend, params, system="Mine", explicit=frozenset({"max_tokens", "system"}))
    session.use_template(load_template("summarize", app_paths().config_dir))
    assert session.params.max_tokens == 5  # the flag wins over the template's 400
    assert session.params.temperature == 0.2  # the template's option beats the setting
    assert session.user_system == "Mine"  # -s wins over the template's system prompt
    session.set("temperature", "0.9")  # /set is explicit too
    assert session.params.temperature == 0.9
    session.use_template(None)
    assert session.params == SamplingParams(temperature=0.9, max_tokens=5)


# --- 14: raw mode has no conversation, and few-shot examples come before the history


def test_raw_with_a_conversation_is_a_usage_error(cli, model_env):
    assert cli("ask", "-T", "0", "-n", "2", "Hello", env=model_env).returncode == 0
    result = cli("ask", "--raw", "-c", "more", env=model_env)
    assert result.returncode == 2 and "--raw" in result.stderr and "-c" in result.stderr


def test_few_shot_examples_come_before_the_history(cli, model_env, isolated_home, vocab):
    templates = isolated_home / "config" / "templates"
    templates.mkdir(parents=True)
    (templates / "shots.toml").write_text(
        '[[examples]]\nuser = "Example in"\nassistant = "Example out"\n', encoding="utf-8"
    )
    first = json.loads(cli("ask", "-T", "0", "-n", "3", "--json", "First", env=model_env).stdout)
    second = cli("ask", "-t", "shots", "-c", "-T", "0", "-n", "2", "--json", "Second", env=model_env)
    assert second.returncode == 0, second.stderr
    chat = [("user", "Example in"), ("assistant", "Example out"), ("user", "First"), ("assistant", first["text"])]
    expected = n_tokens(vocab, chatformats.gemma([*chat, ("user", "Second")]))
    assert json.loads(second.stdout)["usage"]["prompt_tokens"] == expected


# --- 21: never half a JSON on stdout


def test_structured_answer_cut_by_max_tokens_prints_nothing_on_stdout(cli, model_env):
    schema = (
        '{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]}'
    )
    result = cli("ask", "-T", "0", "-n", "3", "--json-schema", schema, "A person", env=model_env)
    assert result.returncode == 1 and "raise --max-tokens" in result.stderr
    assert result.stdout == ""
    whole = cli("ask", "-T", "0", "-n", "60", "--json-schema", schema, "A person", env=model_env)
    assert whole.returncode == 0, whole.stderr
    assert set(json.loads(whole.stdout)) == {"name", "age"}


# --- 6: every file holding the user's text is 0600 in a 0700 folder


def test_chat_history_and_saved_sessions_are_private(model_env, isolated_home, tmp_path):
    repl = Repl("-n", "2", env=model_env)
    repl.send("a private thought")
    repl.send(f"/save {tmp_path / 'mine.json'}")
    assert repl.exit() == 0
    history = isolated_home / "data" / "chat_history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert stat.S_IMODE(history.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "mine.json").stat().st_mode) == 0o600


# --- Tab completes the models on this machine, not only catalog names


def test_model_tab_completion_offers_local_models(model_env, tmp_path, starter_model):
    folder = tmp_path / "mine"
    folder.mkdir()
    os.symlink(starter_model, folder / "zebra-model-q4_k_m.gguf")
    repl = Repl("-n", "2", env={**model_env, "LOCALASSIST_MODELS_DIRS": str(folder)})
    repl.child.send("/model zeb\t")
    repl.child.expect_exact("ra-model-q4_k_m")  # the rest of the name, completed
    shown = repl.send("")  # Enter sends the completed command
    assert "now chatting with zebra-model-q4_k_m" in shown
    assert repl.exit() == 0
