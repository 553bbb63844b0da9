"""The SQLite log, on real database files: migrations, FTS, exports, concurrency, damage."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from localassist.errors import UsageError
from localassist.generation import Completion, Timings
from localassist.store import LogError, LogStore, export_json, export_markdown


def completion(text: str, model: str = "m", finish: str = "stop") -> Completion:
    return Completion(text, model, finish, 10, 4, 5, Timings(0.5, 0.01, 100.0, 50.0, 0.2))


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
    assert s.migrations() == ["001_conversations_and_exchanges", "002_full_text_search"]
    s.close()
    again = LogStore(path)  # reopening applies nothing twice
    assert again.migrations() == ["001_conversations_and_exchanges", "002_full_text_search"]
    again.close()


def test_conversations_round_trip(store):
    cid = store.log_exchange(
        None,
        "Name three sorting algorithms",
        completion("merge, quick, heap"),
        {"temperature": 0.2},
        system="Be terse.",
    )
    store.log_exchange(cid, "Which is stable?", completion("merge sort", finish="interrupted"), {})
    other = store.log_exchange(None, "Unrelated", completion("ok"), {})
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
        store.recent(query='"unbalanced')


def test_exports(store):
    cid = store.log_exchange(None, "Hi", completion("Hello!"), {}, system="S")
    conv = store.conversation(cid)
    md = export_markdown(conv)
    assert md.startswith("# Hi") and "## You\n\nHi" in md and "## Assistant\n\nHello!" in md
    data = json.loads(export_json(conv))
    assert data["id"] == cid and data["exchanges"][0]["response"] == "Hello!"


def test_delete_one_and_all(store):
    a = store.log_exchange(None, "secret one", completion("x"), {})
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
        from localassist.store import LogStore
        from localassist.generation import Completion, Timings
        s = LogStore(__import__("pathlib").Path({str(path)!r}))
        for i in range(40):
            c = Completion(f"answer {{sys.argv[1]}}-{{i}}", "m", "stop", 1, 0, 1, Timings(0, 0, 0, 0, 0))
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
