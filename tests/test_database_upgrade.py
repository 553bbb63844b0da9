"""Databases written by release 0.2 (commit 15a56e7, before localassist.database) open with
this code as they are: no rebuild, no re-embedding, every row read back the same as 0.2's
own code read it. The files and what 0.2 read are in tests/fixtures/db-0.2 (its README
says how they were made)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from fixtures.rag.support import HashEmbedder
from localassist.conversation.log_store import LogStore, export_json
from localassist.documents.summary_cache import SummaryCache
from localassist.rag import IndexCorruptError, open_index
from localassist.server import calllog
from localassist.server.keys import KeyStore

FIXTURES = Path(__file__).parent / "fixtures" / "db-0.2"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A copy of 0.2's data dir (the fixtures stay as 0.2 wrote them)."""
    return Path(shutil.copytree(FIXTURES / "data", tmp_path / "data"))


def rows(path: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_the_log_opens_with_its_migrations_recognised_and_every_exchange(data):
    path = data / "logs.db"
    recorded = rows(path, "SELECT name, applied FROM _migrations ORDER BY name")
    store = LogStore(path)
    expected = EXPECTED["log"]
    assert store.migrations() == [*expected["migrations"], "007_owner_and_settings"]  # the web chat's columns
    after = rows(path, "SELECT name, applied FROM _migrations ORDER BY name")
    assert after[: len(recorded)] == recorded  # none run again
    for cid, conversation in expected["conversations"].items():
        exported = json.loads(export_json(store.conversation(cid, include_hidden=True), include_hidden=True))
        for exchange in exported["exchanges"]:
            assert exchange.pop("sources") == []  # a 0.2 answer was given no index sources
        assert exported == conversation
    assert list(store.counts()) == expected["counts"]
    assert [ex.id for ex in store.recent(query="Spain")] == expected["search"]
    store.close()


def test_the_server_db_opens_with_its_keys_and_calls(data):
    recorded = rows(data / "server.db", "SELECT name, applied FROM _migrations")
    keys = KeyStore(data)
    assert [r.as_dict() for r in keys.records()] == EXPECTED["server"]["keys"]
    keys.close()
    assert [c.as_dict() for c in calllog.recent(data, 10)] == EXPECTED["server"]["calls"]
    after = rows(data / "server.db", "SELECT name, applied FROM _migrations")
    assert after[: len(recorded)] == recorded  # none run again; the web chat's tables are added
    assert [name for name, _ in after[len(recorded) :]] == ["002_users_and_sessions"]


def test_the_server_db_gets_the_web_users_and_sessions_tables_and_keeps_its_keys(data):
    from localassist.web.accounts import Accounts

    keys_before = rows(data / "server.db", "SELECT * FROM api_keys ORDER BY id")
    accounts = Accounts(data)
    assert accounts.count() == 0
    accounts.add("ada", "a long password")
    token, _ = accounts.start_session("ada", "127.0.0.1", "test")
    assert accounts.verify("ada", "a long password") and accounts.session(token).user == "ada"
    accounts.close()
    assert rows(data / "server.db", "SELECT * FROM api_keys ORDER BY id") == keys_before
    tables = {r[0] for r in rows(data / "server.db", "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"api_keys", "calls", "users", "sessions"} <= tables


def test_the_summary_cache_opens_with_its_notes_and_still_forgets(data):
    cache = SummaryCache.open(data)
    for key, text in EXPECTED["summaries"]["notes"].items():
        assert cache.get(key) == text
    assert cache.count() == len(EXPECTED["summaries"]["notes"])
    assert [r[0] for r in cache.db.execute("SELECT name FROM _migrations")] == ["001_notes_and_attached"]
    assert cache.forget(set()) == (2, False)  # the 'attached' records 0.2 made still count
    cache.close()


def test_a_folder_index_opens_without_a_rebuild_or_re_embedding(data, tmp_path):
    folder = Path(shutil.copytree(FIXTURES / "folder", tmp_path / "folder"))
    path = data / "indexes" / "notes.db"
    # the index records the folder 0.2 indexed (a temporary one): point it at this copy
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = ? WHERE key = 'folder'", (str(folder),))
    raw.commit()
    raw.close()
    chunks = rows(path, "SELECT * FROM chunks ORDER BY id")
    vectors = rows(path, "SELECT * FROM vectors ORDER BY id")
    meta = dict(rows(path, "SELECT key, value FROM meta"))
    expected = EXPECTED["index"]

    embedder = HashEmbedder()
    with open_index(data, "notes") as index:
        info = index.info()
        assert (info.files, info.chunks, info.vectors) == (expected["files"], expected["chunks"], expected["vectors"])
        assert (info.model_id, info.dimension, info.chunker) == (
            expected["model_id"],
            expected["dimension"],
            expected["chunker"],
        )
        result = index.search(expected["query"], embedder, k=3)
        assert [[h.path, h.text] for h in result.hits] == expected["hits"]
        report = index.sync(embedder)  # the files are copies: touched, not changed
        assert report.rebuild_reason is None and not report.notices
        assert (report.added, report.updated, report.relocated, report.removed) == ([], [], [], [])
        assert report.embedded == report.chunks_written == 0 and embedder.calls == []
        assert [r[0] for r in index.db.execute("SELECT name FROM _migrations")] == ["001_index"]
    assert rows(path, "SELECT * FROM chunks ORDER BY id") == chunks
    assert rows(path, "SELECT * FROM vectors ORDER BY id") == vectors
    after = dict(rows(path, "SELECT key, value FROM meta"))
    assert after.pop("last_sync") and meta.pop("last_sync")
    assert after == meta and after["schema"] == "1"  # 0.2 can still open it
    assert rows(path, "PRAGMA page_size") == [(8192,)]


def test_a_file_that_is_no_index_is_refused_as_0_2_refused_it_and_left_untouched(data):
    path = data / "indexes" / "other.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE someone_elses (x)")
    raw.commit()
    raw.close()
    with pytest.raises(
        IndexCorruptError, match=re.escape("is not a localassist index of schema 1 (found None); remove it")
    ):
        open_index(data, "other")
    assert rows(path, "SELECT name FROM sqlite_master") == [("someone_elses",)]
