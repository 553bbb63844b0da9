"""Templates: built-ins, user templates, parameters, and their use from ask and chat."""

from __future__ import annotations

import json

import pytest

import chatformats
from chatformats import n_tokens
from localassist.assistant import Assistant
from localassist.conversation.prompt_templates import editable_path, list_templates, load_template
from localassist.engine.types import SamplingParams
from localassist.errors import UsageError
from localassist.settings import load_settings


def config_dir():
    return load_settings().paths.config_dir


def test_builtins_are_there():
    names = {t.name for t in list_templates(config_dir())}
    assert {"summarize", "translate", "extract-invoice", "commit-message", "explain-code"} <= names
    invoice = load_template("extract-invoice", config_dir())
    assert invoice.examples and invoice.schema["required"] == ["invoice_number", "total", "due_date"]


def test_render_with_defaults_and_params():
    t = load_template("summarize", config_dir())
    system, shots, user = t.render("Some text.", {"points": "5"})
    assert system.startswith("You summarize")
    assert "5 bullet points" in user and "Some text." in user and shots == []
    assert "3 bullet points" in t.render("Some text.", {})[2]
    with pytest.raises(UsageError, match="has no parameter colour"):
        t.render("x", {"colour": "red"})
    with pytest.raises(UsageError, match="works on input"):
        t.render("", {})


def test_user_template_shadows_and_missing_params_are_listed():
    path = config_dir() / "templates" / "summarize.toml"
    path.parent.mkdir(parents=True)
    path.write_text('system = "Mine"\nprompt = "{style} and {tone}: {input}"\n')
    t = load_template("summarize", config_dir())
    assert not t.builtin and t.system == "Mine"
    with pytest.raises(UsageError, match="needs -p style VALUE -p tone VALUE"):
        t.render("text", {})


def test_bad_template_files_are_clear_errors():
    d = config_dir() / "templates"
    d.mkdir(parents=True)
    (d / "broken.toml").write_text("prompt = ")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_template("broken", config_dir())
    (d / "odd.toml").write_text('prompt = "{input}"\ncolour = "red"\n')
    with pytest.raises(UsageError, match="unknown keys colour"):
        load_template("odd", config_dir())
    with pytest.raises(UsageError, match="no template 'missing'"):
        load_template("missing", config_dir())


def test_template_options_yield_to_flags():
    t = load_template("summarize", config_dir())
    assert t.apply_options(load_settings()).temperature == 0.2
    assert t.apply_options(load_settings({"temperature": 0.9})).temperature == 0.9


def test_edit_copies_the_builtin_then_uses_the_editor(cli, tmp_path):
    assert editable_path("translate", config_dir()).read_text().startswith("description")
    script = tmp_path / "editor.sh"
    script.write_text('#!/bin/sh\necho \'description = "edited"\' > "$1"\necho \'prompt = "{input}"\' >> "$1"\n')
    script.chmod(0o755)
    result = cli("templates", "edit", "mine", env={"EDITOR": str(script)})
    assert result.returncode == 0, result.stderr
    listed = cli("templates", "list").stdout
    assert "mine" in listed and "edited" in listed
    assert "prompt" in cli("templates", "show", "mine").stdout


@pytest.mark.model
def test_ask_with_a_template_and_params(cli, model_env):
    result = cli(
        "ask",
        "-t",
        "summarize",
        "-p",
        "points",
        "2",
        "-n",
        "8",
        "-T",
        "0",
        "--json",
        input="Cats sleep a lot. Dogs bark.",
        env=model_env,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(cli("logs", "--json").stdout)
    assert "2 bullet points" in rows[-1]["prompt"] and "Cats sleep a lot." in rows[-1]["prompt"]
    missing = cli("ask", "-t", "summarize", "-p", "nope", "1", input="x", env=model_env)
    assert missing.returncode == 2 and "has no parameter nope" in missing.stderr
    alone = cli("ask", "-p", "points", "2", "hello", env=model_env)
    assert alone.returncode == 2 and "goes with -t" in alone.stderr


# --- one precedence, and a template applied once


@pytest.mark.model
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


@pytest.mark.model
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


@pytest.mark.model
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
