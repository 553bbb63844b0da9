"""The chat REPL's commands as docs/chat.md describes them, in a real pseudo-terminal with the
real starter model at temperature 0: /model, /template, /system, Tab completion,
Esc-Enter, and the summary-memory notice. What reached the model is checked in the log
(`logs --json`) and, for token counts, against llama.cpp's tokenizer on prompts written
out by hand (tests/chatformats.py)."""

from __future__ import annotations

import json
import os
import re

import pytest

import chatformats
from chatformats import n_tokens
from chatrepl import Repl, stats

pytestmark = pytest.mark.model

TRANSLATOR = "You are a careful translator. You output only the translation, nothing else."  # translate.toml


def logged(cli) -> list[dict]:
    result = cli("logs", "--json", "-n", "50")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_model_command_switches_model_and_keeps_the_conversation(model_env, starter_model, tmp_path, cli):
    models = tmp_path / "models"
    models.mkdir()
    (models / "other.gguf").symlink_to(starter_model)
    # KV snapshots off: "other" is the same file, and a restored snapshot would hide
    # whether the switch really loaded a fresh model
    env = {**model_env, "LOCALASSIST_MODELS_DIRS": str(models), "LOCALASSIST_KV_CACHE_SIZE": "0"}
    repl = Repl("-n", "8", env=env)
    repl.send("Name a colour.")
    before = stats(repl)
    repl.child.send("/model oth\t")  # Tab completes model names too (docs/chat.md, Keys)
    assert "now chatting with other" in repl.send("")
    shown = repl.send("/show")
    assert re.search(r"model\s+other\n", shown) and re.search(r"exchanges\s+1\n", shown)
    repl.send("And another one?")
    after = stats(repl)
    assert after["cached"] == 0  # a freshly loaded model: nothing in its KV cache yet
    assert after["prompt"] > before["prompt"] + before["answer"]  # ...but the whole conversation was sent
    assert repl.exit() == 0
    rows = logged(cli)
    assert [r["model"] for r in rows] == [str(starter_model.resolve()), "other"]
    assert rows[0]["conversation_id"] == rows[1]["conversation_id"]


def test_template_command_sends_messages_through_the_template(model_env, cli, vocab):
    repl = Repl("-n", "4", env=model_env)
    assert "template translate" in repl.send("/template translate language=French")
    assert re.search(r"temperature\s+0\.0\n", repl.send("/show"))  # its temperature 0.1 yields to -T 0
    repl.send("Good morning")
    sent = "Translate the following text into French.\n\nGood morning"
    assert stats(repl)["prompt"] == n_tokens(vocab, chatformats.gemma([("system", TRANSLATOR), ("user", sent)]))
    assert "template off" in repl.send("/template off")
    repl.send("Good night")
    assert repl.exit() == 0
    rows = logged(cli)
    assert [r["prompt"] for r in rows] == [sent, "Good night"]


def test_system_command_sets_and_removes_the_system_prompt(model_env, vocab):
    repl = Repl("-n", "4", env=model_env)
    assert "system prompt set" in repl.send("/system Answer in one word.")
    assert re.search(r"system\s+Answer in one word\.\n", repl.send("/show"))
    repl.send("Hello")
    with_system = chatformats.gemma([("system", "Answer in one word."), ("user", "Hello")])
    assert stats(repl)["prompt"] == n_tokens(vocab, with_system)

    assert "system prompt removed" in repl.send("/system")
    assert re.search(r"system\s+-\n", repl.send("/show"))
    repl.send("/clear")
    repl.send("Hello")
    assert stats(repl)["prompt"] == n_tokens(vocab, chatformats.gemma([("user", "Hello")]))
    assert repl.exit() == 0


def test_tab_completes_commands_and_set_parameters(model_env):
    repl = Repl("-n", "4", env=model_env)
    repl.child.send("/he\t")
    shown = repl.send("")  # Enter: what was sent is the completed command
    assert "drop the last answer and generate it again" in shown and "unknown command" not in shown
    repl.child.send("/set tempe\t")
    assert "temperature = 0.3" in repl.send(" 0.3")
    repl.child.send("/set memory summ\t")
    assert "memory = summary" in repl.send("")
    assert repl.exit() == 0


def test_esc_enter_inserts_a_newline_instead_of_sending(model_env, cli):
    repl = Repl("-n", "4", env=model_env)
    repl.child.send("first line\x1b\r")  # Esc, Enter
    repl.child.send("second line")
    repl.send("")
    assert re.search(r"exchanges\s+1\n", repl.send("/show"))
    assert repl.exit() == 0
    assert [r["prompt"] for r in logged(cli)] == ["first line\nsecond line"]


def test_summary_memory_announces_the_summary(model_env):
    # budget = ctx - max_tokens = 992 tokens; each exchange below takes about 160, so the 7th
    # message overflows, and half of the conversation summarized (a summary is at most 32
    # tokens here) makes room for it: summarizing, not dropping, is what has to happen
    repl = Repl("--memory", "summary", "--ctx", "1024", "-n", "32", env=model_env)
    for i in range(10):
        shown = repl.send(f"Note {i}: " + "the sky is blue and the grass is green, " * 12)
        notice = re.search(r"summarized (\d+) oldest exchanges? \(([\d,]+) tokens\) to fit the context", shown)
        if notice:
            break
    assert notice, "no summary notice after 10 long messages"
    assert int(notice.group(1)) >= 1 and "dropped" not in shown
    assert stats(repl)["prompt"] <= 1024 - 32  # what was sent fits the budget
    assert repl.exit() == 0


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
