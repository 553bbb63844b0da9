"""The SQLite log, on real database files: migrations, FTS, exports, concurrency, damage."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap

import pytest

from localassist.conversation.log_store import MIGRATIONS, LogError, LogStore, export_json, export_markdown
from localassist.database import statements
from localassist.engine.types import Done, Message, Timings, Usage
from localassist.errors import UsageError

MIGRATED = [
    "001_conversations_and_exchanges",
    "002_full_text_search",
    "003_exchange_status_system_imported",
    "004_tool_calls",
    "005_attachments",
    "006_kv_snapshots",
    "007_owner_and_settings",
]


def completion(text: str, model: str = "m", finish: str = "stop") -> Done:
    return Done(text, model, finish, Usage(10, 4, 5), Timings(0.5, 0.01, 100.0, 50.0, 0.2))


@pytest.fixture
def store(tmp_path):
    s = LogStore(tmp_path / "logs.db")
    yield s
    s.close()


def test_new_database_is_private_wal_and_migrated(tmp_path):
    path = tmp_path / "data" / "logs.db"
    s = LogStore(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.migrations() == MIGRATED
    s.close()
    again = LogStore(path)  # reopening applies nothing twice
    assert again.migrations() == MIGRATED
    again.close()


def test_conversations_round_trip(store):
    cid, _ = store.log_exchange(
        None,
        "Name three sorting algorithms",
        completion("merge, quick, heap"),
        {"temperature": 0.2},
        system="Be terse.",
    )
    store.log_exchange(cid, "Which is stable?", completion("merge sort", finish="interrupted"), {})
    other, _ = store.log_exchange(None, "Unrelated", completion("ok"), {})
    assert store.latest_conversation_id() == other
    conv = store.conversation(cid[:8])
    assert conv.system == "Be terse." and conv.title == "Name three sorting algorithms"
    messages = conv.messages()
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[-1].interrupted and messages[1].content == "merge, quick, heap"
    assert conv.exchanges[0].params == {"temperature": 0.2}
    assert conv.exchanges[0].prompt_tokens == 10 and conv.exchanges[0].generation_tps == 50.0


def test_full_text_search_and_filters(store):
    store.log_exchange(None, "Tell me about sorting", completion("quicksort is fast"), {})
    store.log_exchange(None, "Tell me about graphs", completion("dijkstra finds paths", model="other"), {})
    assert [r.prompt for r in store.recent(query="sorting")] == ["Tell me about sorting"]
    assert [r.response for r in store.recent(query="dijkstra")] == ["dijkstra finds paths"]
    assert [r.model for r in store.recent(model="other")] == ["other"]
    assert len(store.recent(limit=1)) == 1 and store.recent(limit=1)[0].prompt.endswith("graphs")
    with pytest.raises(UsageError, match="bad search query"):
        store.recent(query='"unbalanced', fts=True)


def test_exports(store):
    cid, _ = store.log_exchange(None, "Hi", completion("Hello!"), {}, system="S")
    conv = store.conversation(cid)
    md = export_markdown(conv)
    assert md.startswith("# Hi") and "## You\n\nHi" in md and "## Assistant\n\nHello!" in md
    data = json.loads(export_json(conv))
    assert data["id"] == cid and data["exchanges"][0]["response"] == "Hello!"


def test_delete_one_and_all(store):
    a, _ = store.log_exchange(None, "secret one", completion("x"), {})
    store.log_exchange(None, "two", completion("y"), {})
    assert store.delete(a) == 1
    assert store.recent(query="secret") == []
    with pytest.raises(UsageError, match="no conversation"):
        store.conversation(a)
    assert store.delete_all() == 1
    assert store.counts() == (0, 0)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "logs.db"
    script = textwrap.dedent(f"""
        import sys
        from localassist.conversation.log_store import LogStore
        from localassist.engine.types import Done, Timings, Usage
        s = LogStore(__import__("pathlib").Path({str(path)!r}))
        for i in range(40):
            c = Done(f"answer {{sys.argv[1]}}-{{i}}", "m", "stop", Usage(1, 0, 1), Timings(0, 0, 0, 0, 0))
            s.log_exchange(None, f"prompt {{sys.argv[1]}}-{{i}}", c, {{}})
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    s = LogStore(path)
    assert s.counts() == (160, 160)
    assert len(s.recent(limit=500, query="answer")) == 160
    s.close()


def test_corrupt_database_is_a_clear_error(tmp_path):
    path = tmp_path / "logs.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(LogError, match="corrupt"):
        LogStore(path)


def test_locked_database_is_a_clear_error(tmp_path):
    path = tmp_path / "logs.db"
    LogStore(path).close()
    holder = LogStore(path)
    holder.db.execute("BEGIN EXCLUSIVE")
    other = LogStore(path)
    other.db.execute("PRAGMA busy_timeout = 100")
    with pytest.raises(LogError, match="locked"):
        other.log_exchange(None, "p", completion("r"), {})
    holder.db.execute("ROLLBACK")
    other.log_exchange(None, "p", completion("r"), {})
    assert other.counts() == (1, 1)


def test_permissions_are_kept_private_after_writes(tmp_path):
    path = tmp_path / "logs.db"
    s = LogStore(path)
    s.log_exchange(None, "p", completion("r"), {})
    s.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# --- issue #9: what the log keeps, finds and hides


def _files_holding(path, word: bytes) -> list[str]:
    """Which of the database's files (main, -wal, -shm) hold ``word`` anywhere in their bytes."""
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return [f.name for f in files if f.exists() and word in f.read_bytes()]


@pytest.mark.parametrize("how", ["logs rm ID", "logs rm --all"])
def test_deleted_text_is_not_left_in_the_database_files(tmp_path, how):
    path = tmp_path / "logs.db"
    s = LogStore(path)
    for i in range(40):
        s.log_exchange(None, f"filler question {i}", completion(f"filler answer {i}"), {})
    s.log_exchange(None, "remember xylophonequartz please", completion("noted zebracadabra"), {})
    secret = s.latest_conversation_id()
    s.log_exchange(secret, "xylophonequartz again", completion("zebracadabra again"), {})
    s.log_exchange(None, "a later question", completion("a later answer"), {})
    # another process has the log open (a chat, say): its WAL stays, with every page written
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT count(*) FROM exchanges").fetchall() == [(43,)]
    assert _files_holding(path, b"xylophonequartz")  # the check can see the text before

    removed = s.delete(secret[:6]) if how == "logs rm ID" else s.delete_all()

    assert removed == (2 if how == "logs rm ID" else 43)
    for word in (b"xylophonequartz", b"zebracadabra"):
        assert _files_holding(path, word) == [], word
    reader.close()
    s.close()
    for word in (b"xylophonequartz", b"zebracadabra"):
        assert _files_holding(path, word) == [], word
    again = LogStore(path)  # what is left is intact and still searchable
    assert len(again.recent(limit=100, query="filler")) == (40 if how == "logs rm ID" else 0)
    assert again.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again.db.execute("INSERT INTO exchanges_fts(exchanges_fts) VALUES ('integrity-check')")
    again.close()


def test_logs_rm_all_command_leaves_no_text_in_the_files(cli, isolated_home):
    path = isolated_home / "data" / "logs.db"
    s = LogStore(path)
    s.log_exchange(None, "the password is quokkaplatypus", completion("quokkaplatypus noted"), {})
    s.close()
    assert _files_holding(path, b"quokkaplatypus")
    result = cli("logs", "rm", "--all", "--yes")
    assert result.returncode == 0, result.stderr
    assert _files_holding(path, b"quokkaplatypus") == []


SEARCH_WORDS = ["gpt-4", "2025-07-03", "main.py", "C++", "don't", "parallel-marker-1", "key:value", 'say "hi"']


def test_search_words_with_hyphens_dots_colons_and_quotes_find_their_exchange(store):
    prompts = {word: f"question about {word} here" for word in SEARCH_WORDS}
    for prompt in prompts.values():
        store.log_exchange(None, prompt, completion("an answer"), {})
    for word, prompt in prompts.items():
        assert [r.prompt for r in store.recent(limit=50, query=word)] == [prompt], word


def test_search_phrases_prefixes_and_raw_fts_option(store):
    store.log_exchange(None, "the quick brown fox", completion("jumps"), {})
    store.log_exchange(None, "brown and quick dogs", completion("sleep"), {})
    assert len(store.recent(query="quick brown")) == 2  # every word, anywhere
    assert [r.prompt for r in store.recent(query='"quick brown"')] == ["the quick brown fox"]
    assert len(store.recent(query="qui*")) == 2
    assert [r.prompt for r in store.recent(query="quick NOT dogs", fts=True)] == ["the quick brown fox"]
    assert store.recent(query="quick NOT dogs") == []  # plain: "not" is a word that must appear
    with pytest.raises(UsageError, match="nothing to search for"):
        store.recent(query='   ""  ')


def test_conversation_prefix_is_not_a_like_pattern(store, cli, isolated_home):
    store.log_exchange(None, "only one", completion("x"), {})
    cid = store.latest_conversation_id()
    for pattern in ("%", "_", cid[:3] + "%", "_" * len(cid)):
        with pytest.raises(UsageError, match="no conversation"):
            store.resolve_id(pattern)
    with pytest.raises(UsageError, match="give a conversation id"):
        store.resolve_id("")
    assert store.resolve_id(cid[:4]) == cid
    s = LogStore(isolated_home / "data" / "logs.db")
    s.log_exchange(None, "only one", completion("x"), {})
    s.close()
    shown = cli("logs", "show", "%")
    assert shown.returncode == 2 and "no conversation '%'" in shown.stderr


def test_log_files_are_0600_in_a_0700_directory(tmp_path):
    old = os.umask(0)  # the modes must not depend on the umask
    try:
        data = tmp_path / "data"
        data.mkdir()
        os.chmod(data, 0o755)
        path = data / "logs.db"
        path.touch()
        os.chmod(path, 0o644)  # left readable by an older version
        (data / "logs.db-wal").touch()
        os.chmod(data / "logs.db-wal", 0o644)
        fresh = tmp_path / "fresh" / "logs.db"
        stores = [LogStore(path), LogStore(fresh)]
        for s in stores:
            s.log_exchange(None, "private words", completion("private answer"), {})
    finally:
        os.umask(old)
    for p in (path, fresh):  # the stores are still open: -wal and -shm exist
        modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in p.parent.iterdir()}
        assert modes == {"logs.db": 0o600, "logs.db-wal": 0o600, "logs.db-shm": 0o600}
        assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    for s in stores:
        s.close()


# --- the log mirrors what chat shows (/regen, /undo, /clear, /load, /system)


def test_old_database_gains_status_and_keeps_exchanges_active(tmp_path):
    path = tmp_path / "logs.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
    for name, sql in MIGRATIONS[:2]:  # a log written by the previous release
        for statement in statements(sql):
            db.execute(statement)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (name,))
    db.execute("INSERT INTO conversations VALUES ('abc123', 'Hi', 'm', 'Be terse.', 1, 1)")
    db.execute(
        "INSERT INTO exchanges (conversation_id, created, model, prompt, response, finish_reason, params) "
        "VALUES ('abc123', 1, 'm', 'Hi', 'Hello', 'stop', '{}')"
    )
    db.close()
    s = LogStore(path)
    assert s.migrations() == MIGRATED
    (ex,) = s.conversation("abc").exchanges
    assert (ex.status, ex.system, ex.imported) == ("active", "Be terse.", False)
    assert [r.prompt for r in s.recent(query="hello")] == ["Hi"]
    s.close()


def test_regen_supersedes_the_old_answer_in_the_log(store):
    cid, first = store.log_exchange(None, "Q1", completion("A1"), {})
    _, second = store.log_exchange(cid, "Q2", completion("A2 bad"), {})
    logged = store.log_exchange(cid, "Q2", completion("A2 good"), {}, replaces=second)
    assert logged.conversation_id == cid and logged.exchange_id > second
    conv = store.conversation(cid)
    assert [(m.role, m.content) for m in conv.messages()] == [
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
        ("assistant", "A2 good"),
    ]
    assert "A2 bad" not in export_markdown(conv) and "A2 bad" not in export_json(conv)
    assert [r.response for r in store.recent()] == ["A1", "A2 good"]
    everything = store.conversation(cid, include_hidden=True)
    assert [(e.id, e.status) for e in everything.exchanges] == [
        (first, "active"),
        (second, "superseded"),
        (logged.exchange_id, "active"),
    ]
    assert "## Assistant *(superseded)*\n\nA2 bad" in export_markdown(everything, include_hidden=True)
    assert [e["status"] for e in json.loads(export_json(everything, include_hidden=True))["exchanges"]] == [
        "active",
        "superseded",
        "active",
    ]
    assert [r.status for r in store.recent(include_hidden=True)] == ["active", "superseded", "active"]
    with pytest.raises(LogError, match="no exchange"):  # and nothing is written then
        store.log_exchange(cid, "Q3", completion("A3"), {}, replaces=first + 1000)
    assert store.counts() == (1, 3)


def test_undo_and_clear_hide_exchanges_from_resume(store):
    cid, a = store.log_exchange(None, "Q1", completion("A1"), {})
    _, b = store.log_exchange(cid, "Q2", completion("A2"), {})
    assert store.set_status([b], "undone") == 1
    assert [m.content for m in store.conversation(cid).messages()] == ["Q1", "A1"]
    _, c = store.log_exchange(cid, "Q3", completion("A3"), {})
    assert store.clear(cid) == 2
    assert store.conversation(cid).messages() == []
    _, d = store.log_exchange(cid, "Q4", completion("A4"), {})
    assert [m.content for m in store.conversation(cid).messages()] == ["Q4", "A4"]
    hidden = store.conversation(cid, include_hidden=True)
    assert [(e.id, e.status) for e in hidden.exchanges] == [
        (a, "cleared"),
        (b, "undone"),
        (c, "cleared"),
        (d, "active"),
    ]
    assert [m.content for m in hidden.messages(include_hidden=True)][:2] == ["Q1", "A1"]
    assert store.set_status([], "undone") == 0
    with pytest.raises(ValueError, match="status must be one of"):
        store.set_status([a], "deleted")


def test_system_prompt_changes_are_kept_per_exchange(store):
    cid, _ = store.log_exchange(None, "Q1", completion("A1"), {}, system="Be terse.")
    store.set_system(cid, "Answer in French.")
    store.log_exchange(cid, "Q2", completion("R2"), {}, system="Answer in French.")
    conv = store.conversation(cid)
    assert conv.system == "Answer in French."  # what a resume uses
    assert [e.system for e in conv.exchanges] == ["Be terse.", "Answer in French."]
    md = export_markdown(conv)
    marks = ("**System:** Be terse.", "You\n\nQ1", "**System:** Answer in French.", "You\n\nQ2")
    order = [md.index(text) for text in marks]
    assert order == sorted(order)
    store.set_system(cid, None)
    assert store.conversation(cid).system is None
    with pytest.raises(LogError, match="no longer in the log"):
        store.set_system("feedfacecafe", "x")


def test_load_replaces_the_logged_conversation_with_the_transcript(store):
    cid, old = store.log_exchange(None, "before the load", completion("old answer"), {})
    transcript = [
        Message("user", "loaded question"),
        Message("assistant", "loaded answer", interrupted=True),
        Message("user", "asked twice"),
        Message("user", "second ask"),
        Message("assistant", "final answer"),
        Message("assistant", "an extra answer"),
        Message("user", "left unanswered"),
    ]
    imported = store.log_imported(cid, transcript, model="m2", system="Loaded system")
    assert imported.conversation_id == cid and len(imported.exchange_ids) == 5
    conv = store.conversation(cid)
    assert conv.messages() == transcript  # exactly what chat shows after /load
    assert conv.system == "Loaded system"
    assert all(e.imported and e.system == "Loaded system" for e in conv.exchanges)
    assert all(e.prompt_tokens is None and e.ttft_s is None and e.params == {} for e in conv.exchanges)
    first = store.conversation(cid, include_hidden=True).exchanges[0]
    assert (first.id, first.status) == (old, "cleared")
    md = export_markdown(conv)
    assert "loaded answer *(interrupted)*" in md and "## Assistant\n\nan extra answer" in md
    fresh = store.log_imported(None, transcript[:2], model="m2")
    assert store.conversation(fresh.conversation_id).title == "loaded question"
    with pytest.raises(ValueError, match="user and assistant"):
        store.log_imported(cid, [Message("system", "no")], model="m2")


def test_logging_into_a_deleted_conversation_is_an_error_not_a_resurrection(store):
    cid, _ = store.log_exchange(None, "Q1", completion("A1"), {})
    store.delete(cid)
    with pytest.raises(LogError, match="no longer in the log"):
        store.log_exchange(cid, "Q2", completion("A2"), {})
    assert store.counts() == (0, 0)


def test_logs_command_lists_active_exchanges_and_all_with_their_status(cli, isolated_home):
    s = LogStore(isolated_home / "data" / "logs.db")
    cid, _ = s.log_exchange(None, "kept question", completion("kept answer"), {})
    _, undone = s.log_exchange(cid, "undone question", completion("undone answer"), {})
    s.set_status([undone], "undone")
    s.close()
    listed = cli("logs")
    assert listed.returncode == 0 and "kept question" in listed.stdout and "undone question" not in listed.stdout
    everything = cli("logs", "--all")
    assert "STATUS" in everything.stdout and "undone" in everything.stdout.split("undone question")[0]
    found = cli("logs", "-q", "parallel-marker-1")
    assert found.returncode == 0 and "no logged exchanges match" in found.stderr
    shown = cli("logs", "show", cid, "--all")
    assert "## You *(undone)*" in shown.stdout
