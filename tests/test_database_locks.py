"""Every SQLite store is opened through one helper (files.connect_private) that never opens
and closes a descriptor of a live database: closing any descriptor of a file drops every
POSIX lock the process holds on it, so a second connection opened in the same process
took away the first one's locks, and another process could then switch the journal mode
and delete the WAL under it. Checked with real databases and a real second process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Another process asks for the exclusive access a journal-mode change needs, without waiting.
PROBE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    print(db.execute("PRAGMA journal_mode=DELETE").fetchone()[0])
except sqlite3.OperationalError as exc:
    print("refused:", exc)
"""


def _log(home: Path):
    from localassist.conversation.log_store import LogStore

    store = LogStore(home / "logs.db")
    return store, store.path


def _index(home: Path):
    from localassist.rag.store import create_index, open_index

    folder = home / "notes"
    folder.mkdir(parents=True, exist_ok=True)
    index = (
        open_index(home, "notes") if (home / "indexes" / "notes.db").exists() else create_index(home, "notes", folder)
    )
    return index, index.path


def _summaries(home: Path):
    from localassist.documents.summary_cache import SummaryCache

    cache = SummaryCache.open(home)
    return cache, cache.path


def _server(home: Path):
    from localassist.server.keys import KeyStore

    store = KeyStore(home)
    return store, home / "server.db"


def _probe(path: Path) -> str:
    return subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=60
    ).stdout.strip()


@pytest.mark.parametrize("open_store", [_log, _index, _summaries, _server], ids=["log", "index", "summaries", "server"])
def test_opening_a_store_again_in_the_same_process_keeps_the_first_connections_locks(tmp_path, open_store):
    home = tmp_path / "data"
    first, path = open_store(home)
    assert _probe(path).startswith("refused:")  # the live connection holds the database
    second, _ = open_store(home)  # e.g. the key store beside the call log, a second LogStore
    try:
        assert _probe(path).startswith("refused:"), "the second open dropped the first connection's locks"
        assert Path(str(path) + "-wal").exists()
    finally:
        second.close()
        first.close()
