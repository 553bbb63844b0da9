"""Documents pinned to a chat's context (/file, text piped into chat) are part of the logged
conversation: `logs show` shows them (name, sha256, the text the model was given) and
`chat --resume` and `ask -c` give them back, or say exactly which one they could not
(issue #19, item 13). The real REPL in a pseudo-terminal, the real starter model, a real
log file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys

import pexpect
import pytest

from chatrepl import ANSI, PROMPT_READY, Repl
from localassist.conversation.log_store import LogStore, log_path

pytestmark = pytest.mark.model

NOTES = "".join(f"Line {i}: the harbour lantern at pier {i} burns quillfeather oil.\n" for i in range(1, 21))


def logged(home):
    store = LogStore(log_path(home / "data"))
    try:
        return store.conversation(store.latest_conversation_id())
    finally:
        store.close()


def context_used(repl: Repl) -> int:
    found = re.search(r"context used\s+([\d,]+)/", " ".join(repl.send("/show").split()))
    assert found
    return int(found.group(1).replace(",", ""))


def test_file_attached_in_chat_is_lost_on_resume_and_missing_from_logs_show(
    model_env, isolated_home, tmp_path, monkeypatch, cli, backend
):
    monkeypatch.chdir(tmp_path)  # the REPL runs here: `/file notes.md` names the file as typed
    (tmp_path / "notes.md").write_text(NOTES, encoding="utf-8")
    digest = hashlib.sha256((tmp_path / "notes.md").read_bytes()).hexdigest()
    repl = Repl("--ctx", "1024", "-n", "4", env=model_env)
    assert "attached notes.md (" in " ".join(repl.send("/file notes.md").split())
    repl.send("Which oil do the lanterns burn?")
    used = context_used(repl)
    assert repl.exit() == 0

    # the log holds the attachment: its name, sha256 and the text that went into the context
    conversation = logged(isolated_home)
    (attachment,) = conversation.attachments
    assert (attachment.name, attachment.sha256, attachment.mode) == ("notes.md", digest, "whole")
    assert NOTES.strip() in attachment.text and attachment.text.startswith('<document source="notes.md">')
    assert attachment.after_exchange is None  # attached before the first exchange

    shown = cli("logs", "show", conversation.id).stdout
    assert f"**Attached:** notes.md (whole, sha256 {digest})" in shown and "pier 20 burns quillfeather" in shown
    assert shown.index("**Attached:**") < shown.index("## You")  # where it was attached
    as_json = json.loads(cli("logs", "show", conversation.id, "--format", "json").stdout)
    assert [(a["name"], a["sha256"], a["text"]) for a in as_json["attachments"]] == [
        ("notes.md", digest, attachment.text)
    ]

    # chat --resume pins it again: the context holds exactly what it held when the chat ended
    again = Repl("--resume", "--ctx", "1024", "-n", "4", env=model_env)
    assert "attached again: notes.md" in " ".join(ANSI.sub("", again.child.before).split())
    assert context_used(again) == used
    assert again.exit() == 0

    # so does ask -c: the document is in the prompt (it alone is more tokens than the rest)
    asked = cli("ask", "-c", "--json", "--ctx", "1024", "-T", "0", "-n", "2", "And at pier 3?", env=model_env)
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["usage"]["prompt_tokens"] > len(backend.tokenize(NOTES))


def test_resume_says_which_attachment_it_could_not_restore(model_env, isolated_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.md").write_text(NOTES, encoding="utf-8")  # whole in 1024 tokens, too long for 256
    repl = Repl("--ctx", "1024", "-n", "4", env=model_env)
    assert "attached notes.md (" in " ".join(repl.send("/file notes.md").split())
    repl.send("Which oil?")
    assert repl.exit() == 0

    again = Repl("--resume", "--ctx", "256", "-n", "4", env=model_env)
    shown = " ".join(ANSI.sub("", again.child.before).split())
    assert re.search(
        r"notes\.md was attached to this conversation \(whole, [\d,]+ tokens\) but does not fit the context now "
        r"\([\d,]+ tokens left for documents\): it was left out",
        shown,
    ), shown
    assert "attached again" not in shown
    assert context_used(again) < 256  # the conversation goes on without it
    again.send("Which oil?")
    assert again.exit() == 0


def test_piped_context_is_logged_and_back_on_resume(model_env, isolated_home):
    env = {**os.environ, **model_env, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color"}
    command = f"printf 'The secret word is pineapple.' | {sys.executable} -m localassist chat --ctx 512 -T 0 -n 4"
    child = pexpect.spawn("bash", ["-c", command], env=env, dimensions=(40, 120), encoding="utf-8", timeout=90)
    child.expect_exact(PROMPT_READY)
    child.sendline("What is the secret word?")
    child.expect_exact(PROMPT_READY)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    (attachment,) = logged(isolated_home).attachments
    text = "The secret word is pineapple."
    assert (attachment.name, attachment.sha256, attachment.text) == (
        "stdin",
        hashlib.sha256(text.encode()).hexdigest(),
        text,
    )
    again = Repl("--resume", "--ctx", "512", "-n", "4", env=model_env)
    assert "attached again: stdin" in " ".join(ANSI.sub("", again.child.before).split())
    assert again.exit() == 0
