"""No copy of a conversation's text is left on disk once it is deleted (`logs rm`), or
when it was never to be kept (`--no-log`, the server with content logging off).

A KV snapshot holds every token of the conversation it was saved for, so the check is
the one an intruder would make: read every file under LOCALASSIST_HOME for a unique word,
and decode the token list of every snapshot back to text with the model's own tokenizer.
The real CLI, the real REPL in a pseudo-terminal, a real server and the starter model."""

from __future__ import annotations

import json
import os
import stat
import struct
import sys
from pathlib import Path

import pexpect
import pytest

from logseed import logged_count, seed_log
from stderr_lines import only_our_lines

MAGIC = b"LAKVSNP1"  # engine/kv_snapshots.py: MAGIC | header length (u32) | header JSON | tokens (i32) | state


@pytest.fixture(scope="module")
def tokenizer(starter_model):
    from localassist.engine.llama_load import new_llama

    llm, _, _ = new_llama(model_path=str(starter_model), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def snapshot_text(path: Path, tokenizer) -> str:
    """The text a snapshot's tokens spell, read from the file as documented (not through
    the code under test)."""
    import numpy as np

    raw = path.read_bytes()
    assert raw.startswith(MAGIC), path
    (length,) = struct.unpack("<I", raw[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    header = json.loads(raw[start : start + length])
    tokens = np.frombuffer(raw, dtype="<i4", count=header["n_tokens"], offset=start + length)
    return tokenizer.detokenize([int(t) for t in tokens], special=True).decode("utf-8", "replace")


def traces(home: Path, word: str, tokenizer) -> list[str]:
    """Every file under ``home`` holding ``word``: in its bytes, or in its tokens (a snapshot)."""
    found = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        if word.encode() in path.read_bytes():
            found.append(str(path.relative_to(home)))
        elif path.suffix == ".kv" and word in snapshot_text(path, tokenizer):
            found.append(f"{path.relative_to(home)} (decoded)")
    return found


def snapshots(home: Path) -> list[Path]:
    return sorted((home / "cache" / "kv").rglob("*.kv"))


def ask(cli, model_env, *args: str) -> None:
    result = cli("ask", "-T", "0", "-n", "4", *args, env=model_env)
    assert result.returncode == 0, result.stderr


@pytest.mark.model
def test_logs_rm_leaves_no_kv_snapshot_or_history_line_holding_the_conversation(
    cli, model_env, isolated_home, tokenizer
):
    from chatrepl import Repl

    secret, kept = "quokkapin7731", "lighthousewick"
    repl = Repl("-n", "4", env=model_env)
    repl.send(f"My bank PIN is {secret}. Please remember it for me.")
    assert repl.exit() == 0
    ask(cli, model_env, f"Tell me about the {kept} of an old lighthouse and who trimmed it.")
    ask(cli, model_env, "-c", "And who kept the lamp lit?")

    found = traces(isolated_home, secret, tokenizer)
    assert "data/chat_history" in found and any(t.endswith("(decoded)") for t in found), found
    listed = json.loads(cli("logs", "--json", "-n", "50").stdout)
    (cid,) = {row["conversation_id"] for row in listed if secret in row["prompt"]}

    removed = cli("logs", "rm", cid)
    assert removed.returncode == 0, removed.stderr
    assert traces(isolated_home, secret, tokenizer) == []
    # only that conversation's state went: the other one still resumes from its snapshot
    assert [f for f in traces(isolated_home, kept, tokenizer) if f.endswith("(decoded)")]
    assert (isolated_home / "data" / "chat_history").read_text() == ""  # its one line went

    assert cli("logs", "rm", "--all", "--yes").returncode == 0
    assert traces(isolated_home, kept, tokenizer) == [] and snapshots(isolated_home) == []


@pytest.mark.model
def test_no_log_chat_and_ask_leave_no_file_holding_their_text(cli, model_env, isolated_home, tokenizer):
    from chatrepl import Repl

    ask(cli, model_env, "Tell me about the keepers of lighthouses and their long nights.")  # logged
    ask(cli, model_env, "-c", "--no-log", "My bank PIN is wombatpin4410. Remember it.")
    repl = Repl("-n", "4", "--no-log", env=model_env)
    repl.send("My door code is numbatcode2289. Please remember it for me.")
    assert repl.exit() == 0
    for word in ("wombatpin4410", "numbatcode2289"):
        assert traces(isolated_home, word, tokenizer) == [], word


@pytest.mark.model
def test_server_with_content_logging_off_leaves_no_file_holding_the_text(starter_model, tmp_path, tokenizer):
    from serverproc import ServerProc

    home = tmp_path / "serve-home"
    server = ServerProc(
        home,
        ["-m", str(starter_model), "--threads", "1", "--ctx", "1024"],
        env={"LOCALASSIST_SERVE_LOG_CONTENT": "false", "LOCALASSIST_MAX_TOKENS": "4"},
    ).wait_ready()
    try:
        for path, body in [
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": "My PIN is dingopin5512, keep it."}]}),
            ("/v1/completions", {"prompt": "My PIN is dingopin5512 and"}),
        ]:
            status, answer = server.post(path, {"model": "gemma-3-270m-q4_k_m", "max_tokens": 4, **body})
            assert status == 200, answer
    finally:
        assert server.stop() == 0, server.stderr
    assert (home / "data" / "server.db").exists()  # the call was logged, without its text
    assert traces(home, "dingopin5512", tokenizer) == []


def test_history_entries_that_sent_a_deleted_conversation_go_and_the_rest_stay_byte_for_byte(tmp_path):
    from localassist.conversation.input_history import forget

    def entry(second: int, *lines: str) -> str:  # as prompt_toolkit's FileHistory writes one
        return f"\n# 2026-01-01 10:00:{second:02}.000001\n" + "".join(f"+{line}\n" for line in lines)

    help_, two_lines = entry(0, "/help"), entry(1, "line one", "line two")
    pin, block, system = (
        entry(2, "My PIN is 4410"),
        entry(3, '"""', "my", "secret", '"""'),
        entry(4, "/system be secret"),
    )
    history = tmp_path / "chat_history"
    history.write_text(help_ + pin + two_lines + block + system)
    assert forget(history, {"My PIN is 4410", "my\nsecret", "/system be secret", "not typed"}) == 3
    assert history.read_text() == help_ + two_lines
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert forget(history, {"nothing here"}) == 0 and forget(tmp_path / "missing", {"x"}) == 0


def test_sweep_deletes_unclaimed_snapshots_and_unfinished_writes_only(tmp_path):
    from localassist.engine.kv_snapshots import sweep

    folder = tmp_path / "kv" / "0123abcd"
    folder.mkdir(parents=True)
    names = {"a" * 40 + ".kv", "b" * 40 + ".kv"}
    for name in names:
        (folder / name).write_bytes(b"state")
    (folder / ("." + "b" * 40 + ".kv.x1y2.tmp")).write_bytes(b"half")
    (folder / ("." + "a" * 40 + ".kv.z3w4.tmp")).write_bytes(b"half")
    (folder / "notes.txt").write_text("not a snapshot")
    gone = sweep(tmp_path / "kv", {"a" * 40 + ".kv"})
    assert (gone.entries, gone.bytes) == (1, 9)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["." + "a" * 40 + ".kv.z3w4.tmp", "a" * 40 + ".kv", "notes.txt"]
    )


def notes(home: Path) -> list[tuple[str, str]]:
    """(document sha256, text) of every summary note, read from the file as documented."""
    import sqlite3

    path = home / "cache" / "summaries.db"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT document_sha256, text FROM notes").fetchall()
    finally:
        db.close()


def big_document(path: Path, word: str) -> str:
    """A document far longer than a 512-token context, ``word`` on every line; its sha256."""
    import hashlib

    path.write_text("".join(f"Line {i}: the {word} lantern at pier {i} burns copper oil.\n" for i in range(1, 61)))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.model
def test_no_log_chat_attaching_a_large_document_writes_no_summary_notes(
    cli, model_env, isolated_home, tmp_path, tokenizer
):
    """`/file` of a document too long for the context summarizes it, and the map notes were
    written to cache/summaries.db even in `chat --no-log`."""
    from chatrepl import Repl

    big = tmp_path / "big.txt"
    big_document(big, "kiwizebra9931")
    repl = Repl("--ctx", "512", "-n", "8", "--no-log", env=model_env)
    shown = " ".join(repl.send(f"/file {big}").split())
    assert "attached a summary of it" in shown, shown  # the map really ran
    repl.send("Which oil do they burn?")
    assert repl.exit() == 0
    asked = cli("ask", "--no-log", "--ctx", "512", "-T", "0", "-n", "4", "-f", str(big), "Which oil?", env=model_env)
    assert asked.returncode == 0, asked.stderr
    assert notes(isolated_home) == []
    assert traces(isolated_home, "kiwizebra9931", tokenizer) == []


@pytest.mark.model
def test_logs_rm_leaves_no_summary_note_of_the_conversations_documents(
    cli, model_env, isolated_home, tmp_path, tokenizer
):
    """The notes made to summarize a document attached with `/file` stayed in
    cache/summaries.db after the conversation was deleted."""
    from chatrepl import Repl

    digest = big_document(tmp_path / "big.txt", "quollwick5521")
    repl = Repl("--ctx", "512", "-n", "8", env=model_env)
    assert "attached a summary of it" in " ".join(repl.send(f"/file {tmp_path / 'big.txt'}").split())
    repl.send("Which oil do they burn?")
    assert repl.exit() == 0
    assert {document for document, _ in notes(isolated_home)} == {digest}  # a logged chat keeps its notes
    listed = json.loads(cli("logs", "--json", "-n", "5").stdout)
    (cid,) = {row["conversation_id"] for row in listed}

    removed = cli("logs", "rm", cid)
    assert removed.returncode == 0, removed.stderr
    assert notes(isolated_home) == []
    assert traces(isolated_home, "quollwick5521", tokenizer) == []


def test_forget_deletes_the_notes_of_documents_summarized_for_conversations_no_longer_in_the_log(tmp_path):
    from localassist.documents.summary_cache import SummaryCache

    cache = SummaryCache.open(tmp_path)
    for document, word in [("gone", "wombatnote11"), ("kept", "dingonote22"), ("cli", "numbatnote33")]:
        cache.put(f"{document}-1", f"a note on {word}", document=document, index=0, chunk="c", model="m", prompt="p",
                  finish="stop")  # fmt: skip
    cache.mark_attached("gone")  # summarized for a conversation since deleted
    cache.mark_attached("kept")  # ... for one still in the log; "cli": by `summarize`, for none
    assert cache.forget({"kept"}) == (1, False)
    assert cache.get("gone-1") is None and cache.get("kept-1") and cache.get("cli-1")
    assert cache.forget({"kept"}) == (0, False)  # nothing left to delete
    cache.close()
    files = [p for p in tmp_path.iterdir() if p.name.startswith("summaries.db")]
    assert not any(b"wombatnote11" in p.read_bytes() for p in files), files
    assert any(b"dingonote22" in p.read_bytes() for p in files)


def test_logs_rm_all_asks_on_a_terminal_and_needs_yes_in_a_script(cli, isolated_home):
    seed_log(isolated_home, [("the password is quokka", "noted")])
    refused = cli("logs", "rm", "--all")  # stdin is not a terminal
    assert refused.returncode == 2
    assert only_our_lines(refused.stderr) == [
        "localassist: error: logs rm --all deletes every logged conversation; pass --yes to do it without a terminal"
    ]
    assert logged_count(isolated_home) == 1

    def rm_all_answering(answer: str) -> pexpect.spawn:
        child = pexpect.spawn(
            sys.executable, ["-m", "localassist", "logs", "rm", "--all"], env=dict(os.environ), encoding="utf-8"
        )
        child.expect_exact("Delete all 1 logged conversation(s), 1 exchange(s)? [y/N]", timeout=60)
        child.sendline(answer)
        child.expect(pexpect.EOF, timeout=60)
        child.close()
        return child

    declined = rm_all_answering("")  # Enter: the default, No
    assert declined.exitstatus == 0 and "nothing deleted" in declined.before
    assert logged_count(isolated_home) == 1
    accepted = rm_all_answering("y")
    assert accepted.exitstatus == 0 and "deleted 1 exchange(s)" in accepted.before
    assert logged_count(isolated_home) == 0
    seed_log(isolated_home, [("again", "yes")])
    assert cli("logs", "rm", "--all", "--yes").returncode == 0
    assert logged_count(isolated_home) == 0
