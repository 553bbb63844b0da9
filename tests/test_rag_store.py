"""The index database: where it lives, who may read it, and each error as one clear line
that leaves the index intact."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.rag.support import HashEmbedder, copy_corpus
from localassist.errors import ExitCode, exit_code_for
from localassist.rag import (
    DiskFullError,
    EmbedderError,
    FolderGoneError,
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    InvalidIndexNameError,
    create_index,
    list_indexes,
    open_index,
    remove_index,
)
from stderr_lines import only_our_lines


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return copy_corpus(tmp_path / "docs")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_index_files_are_private_and_the_database_is_in_wal_mode(folder, data):
    embedder = HashEmbedder()
    with create_index(data, "docs", folder) as index:
        index.sync(embedder)
        index.search("offsite budget", embedder)  # writes the vector cache
        assert index.path == data / "indexes" / "docs.db"
        assert mode(data / "indexes") == 0o700
        for name in ("docs.db", "docs.db-wal", "docs.db-shm", "docs.vec"):  # the WAL goes at close
            assert mode(data / "indexes" / name) == 0o600, name
    assert sqlite3.connect(data / "indexes" / "docs.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_schema_tables_and_meta_record_the_setup(folder, data):
    with create_index(data, "docs", folder, ["*.md"], chunk_tokens=128, overlap=16) as index:
        index.sync(HashEmbedder())
    db = sqlite3.connect(data / "indexes" / "docs.db")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table')")}
    assert {"meta", "files", "chunks", "vectors", "chunks_fts"} <= tables
    meta = dict(db.execute("SELECT key, value FROM meta"))
    assert meta["folder"] == str(folder.resolve()) and meta["globs"] == '["*.md"]'
    assert meta["model_id"] == "hash-bow-1" and meta["dimension"] == "64"
    assert meta["chunker"] == "documents-1 budget=128 overlap=16 count=model"
    assert meta["created"] and meta["last_sync"]
    row = db.execute("SELECT size, mtime_ns, sha256, kind FROM files WHERE path = 'handbook.md'").fetchone()
    source = folder / "handbook.md"
    import hashlib

    assert row == (
        source.stat().st_size,
        source.stat().st_mtime_ns,
        hashlib.sha256(source.read_bytes()).hexdigest(),
        "markdown",
    )
    vector = db.execute("SELECT vector FROM vectors LIMIT 1").fetchone()[0]
    assert len(vector) == 64 * 4  # float32


def test_unknown_index_name_is_a_one_line_error_with_exit_code_3(data):
    with pytest.raises(IndexNotFoundError) as caught:
        open_index(data, "nope")
    assert str(caught.value) == "no index named 'nope', and no indexes yet: `localassist index add FOLDER --name nope`"
    assert exit_code_for(caught.value) == ExitCode.NOT_FOUND
    assert not (data / "indexes" / "nope.db").exists()


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 65, "spa ce"])
def test_index_names_that_are_not_plain_file_names_are_refused(data, folder, name):
    with pytest.raises(InvalidIndexNameError):
        create_index(data, name, folder)
    assert not (data / "indexes").exists() or list((data / "indexes").iterdir()) == []


def test_creating_a_taken_name_is_refused_and_keeps_the_old_index(data, folder):
    with create_index(data, "docs", folder) as index:
        index.sync(None)
    with pytest.raises(IndexExistsError):
        create_index(data, "docs", folder)
    assert open_index(data, "docs").info().files == 8


def test_list_and_remove(data, folder):
    create_index(data, "b", folder).close()
    with create_index(data, "a", folder) as index:
        index.sync(None)
    infos = list_indexes(data)
    assert [i.name for i in infos] == ["a", "b"]
    assert infos[0].files == 8 and infos[0].chunks > 0 and infos[0].model_id is None and infos[1].last_sync is None
    remove_index(data, "a")
    assert [i.name for i in list_indexes(data)] == ["b"]
    assert sorted(p.name for p in (data / "indexes").iterdir()) == ["b.db"]
    with pytest.raises(IndexNotFoundError):
        remove_index(data, "a")


def test_a_gone_folder_is_a_clear_error_and_the_index_answers_when_it_is_back(data, folder, tmp_path):
    with create_index(data, "docs", folder) as index:
        index.sync(None)
    folder.rename(tmp_path / "away")
    with open_index(data, "docs") as index:
        with pytest.raises(FolderGoneError, match=f"the folder of index 'docs' is gone: {folder.resolve()}"):
            index.sync(None)
        with pytest.raises(FolderGoneError):
            index.staleness()
        with pytest.raises(FolderGoneError):  # none of its files is there to cite
            index.search("parental leave")
    (tmp_path / "away").rename(folder)
    with open_index(data, "docs") as index:
        assert index.search("parental leave").found


def test_a_file_that_is_not_an_index_is_reported_as_damaged(data):
    (data / "indexes").mkdir(parents=True)
    (data / "indexes" / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(IndexCorruptError, match="junk"):
        open_index(data, "junk")


def test_searching_with_another_embedding_model_is_an_error(data, folder):
    with create_index(data, "docs", folder) as index:
        index.sync(HashEmbedder("model-a"))
        with pytest.raises(EmbedderError, match="built with the embedding model model-a, not model-b"):
            index.search("budget", HashEmbedder("model-b"))
        result = index.search("offsite budget approved")  # no model: BM25, and it says so
        assert result.found and result.notices == [
            "no embedding model given (the index uses model-a): keyword (BM25) search only"
        ]


HOLD_WRITER = """
import sys, time
from localassist.rag import open_index
index = open_index({data!r}, "docs")
with index.writer():
    print("holding", flush=True)
    time.sleep(60)
"""

HOLD_SQLITE = """
import sqlite3, time
db = sqlite3.connect({path!r}, isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO meta(key, value) VALUES ('x', 'y')")
print("holding", flush=True)
time.sleep(60)
"""


def _hold(script: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_writer_waits_for_the_timeout_then_fails_clearly(data, folder):
    create_index(data, "docs", folder).close()
    holder = _hold(HOLD_WRITER.format(data=str(data)))
    try:
        with open_index(data, "docs", timeout=0.5) as index:
            started = time.monotonic()
            with pytest.raises(IndexLockedError) as caught:
                index.sync(None)
            assert 0.5 <= time.monotonic() - started < 5
            assert str(caught.value) == (
                "index 'docs' is being updated by another process (waited 0.5 s); try again when it finishes"
            )
            assert index.info().files == 0
    finally:
        holder.kill()
        holder.wait()
    with open_index(data, "docs") as index:  # the lock went with the process
        assert len(index.sync(None).added) == 8


def test_a_write_lock_held_in_sqlite_itself_also_ends_in_a_clear_error(data, folder):
    with create_index(data, "docs", folder) as index:
        index.sync(None)
    holder = _hold(HOLD_SQLITE.format(path=str(data / "indexes" / "docs.db")))
    try:
        with open_index(data, "docs", timeout=0.3) as index:
            assert index.search("parental leave").found  # WAL: reading goes on
            (folder / "new.md").write_text("# New\n\nfresh text\n")
            with pytest.raises(IndexLockedError, match=r"index 'docs' is locked by another process \(waited 0.3 s\)"):
                index.sync(None)
    finally:
        holder.kill()
        holder.wait()


def test_disk_full_is_one_line_and_the_index_keeps_what_it_had(data, folder):
    with create_index(data, "docs", folder) as index:
        index.sync(HashEmbedder())
        before = index.info()
        (folder / "big.md").write_text("".join(f"# Part {i}\n\n" + f"word{i} " * 200 + "\n\n" for i in range(200)))
        # SQLite's own quota: writes past it fail exactly as on a full disk (SQLITE_FULL)
        pages = index.db.execute("PRAGMA page_count").fetchone()[0]
        index.db.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(DiskFullError) as caught:
            index.sync(HashEmbedder())
        assert "\n" not in str(caught.value)
        assert str(caught.value).startswith("index 'docs' could not be written (database or disk is full)")
        after = index.info()
        assert (after.files, after.chunks, after.vectors) == (before.files, before.chunks, before.vectors)
        assert index.search("parental leave", HashEmbedder()).found
    with open_index(data, "docs") as index:  # a new connection, no quota: the next sync finishes
        assert index.sync(HashEmbedder()).added == ["big.md"]


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "budget.md").write_text("# Budget\n\nThe offsite budget was approved at 14,500 euros.\n")
    return folder


def test_index_sync_says_bm25_only_once_when_the_index_is_built(cli, corpus):
    added = cli("index", "add", str(corpus), "--name", "notes", "--no-embed")
    assert added.returncode == 0, added.stderr
    assert added.stderr.count("keyword (BM25) search only") == 1
    (corpus / "more.md").write_text("The venue is in Porto.\n")
    synced = cli("index", "sync", "notes")
    assert synced.returncode == 0, synced.stderr
    assert "BM25" not in synced.stderr and "1 new" in synced.stderr
    rebuilt = cli("index", "sync", "notes", "--rebuild")  # built again: said again
    assert rebuilt.stderr.count("keyword (BM25) search only") == 1


def test_unknown_index_name_lists_the_indexes_there_are(cli, corpus):
    none_yet = cli("index", "search", "notes", "budget")
    assert none_yet.returncode == 3
    [line] = only_our_lines(none_yet.stderr)
    assert "no indexes yet: `localassist index add FOLDER --name notes`" in line
    assert cli("index", "add", str(corpus), "--name", "notes", "--no-embed").returncode == 0
    assert cli("index", "add", str(corpus), "--name", "papers", "--no-embed").returncode == 0
    missing = cli("index", "sync", "note")
    assert missing.returncode == 3
    assert only_our_lines(missing.stderr) == [
        "localassist: error: no index named 'note'; the indexes are: notes, papers"
    ]
