"""Incremental sync: what is re-read, re-chunked and re-embedded, and what survives a kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.rag.support import HashEmbedder, copy_corpus
from localassist.rag import BM25_ONLY_NOTICE, EmbedderError, create_index, open_index

CORPUS_FILES = 8


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return copy_corpus(tmp_path / "docs")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def raw(index_db: Path) -> sqlite3.Connection:
    """An independent connection, to check the database without the code under test."""
    return sqlite3.connect(index_db)


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def test_first_sync_indexes_every_file_and_embeds_each_distinct_chunk_once(folder, data):
    embedder = HashEmbedder()
    with create_index(data, "docs", folder) as index:
        report = index.sync(embedder)
        assert sorted(report.added) == sorted(
            p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
        )
        db = raw(index.path)
        distinct = db.execute("SELECT count(DISTINCT text_hash) FROM chunks").fetchone()[0]
        assert len(embedder.texts) == distinct == len(set(embedder.texts))
        assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == distinct
        assert report.notices == []


def test_editing_one_section_re_embeds_only_that_chunk(folder, data):
    embedder = HashEmbedder()
    with create_index(data, "docs", folder) as index:
        index.sync(embedder)
        embedder.calls.clear()
        handbook = folder / "handbook.md"
        handbook.write_text(handbook.read_text().replace("28 days of paid", "30 days of paid"))
        bump_mtime(handbook)
        report = index.sync(embedder)
    assert report.updated == ["handbook.md"]
    assert report.unchanged == CORPUS_FILES - 1
    # the Holidays section is one chunk; the title and the other four sections keep their vectors
    assert len(embedder.texts) == 1 and "30 days of paid holiday" in embedder.texts[0]
    assert report.reused == 5


def test_a_touched_but_unchanged_file_is_not_reloaded_or_re_embedded(folder, data):
    embedder = HashEmbedder()
    with create_index(data, "docs", folder) as index:
        index.sync(embedder)
        embedder.calls.clear()
        bump_mtime(folder / "report.pdf")
        report = index.sync(embedder)
        assert index.staleness().stale is False
    assert embedder.calls == [] and report.updated == [] and report.unchanged == CORPUS_FILES


def test_deleted_file_leaves_no_chunks_fts_rows_or_vectors_and_is_never_returned(folder, data):
    embedder = HashEmbedder()
    with create_index(data, "docs", folder) as index:
        index.sync(embedder)
        assert index.search("sourdough flour starter", embedder).hits[0].path == "notes/sourdough.txt"
        (folder / "notes" / "sourdough.txt").unlink()
        report = index.sync(embedder)
        assert report.removed == ["notes/sourdough.txt"]
        result = index.search("sourdough flour starter", embedder, min_coverage=0)
        assert all(h.path != "notes/sourdough.txt" for h in result.candidates)
        assert not index.search("sourdough", embedder).found  # the only file with the word is gone
    db = raw(index.path)
    assert db.execute("SELECT count(*) FROM files WHERE path = 'notes/sourdough.txt'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM chunks WHERE text LIKE '%sourdough%'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'sourdough'").fetchone()[0] == 0
    orphans = "SELECT count(*) FROM vectors v WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.text_hash = v.text_hash)"
    assert db.execute(orphans).fetchone()[0] == 0


def test_switching_the_embedding_model_rebuilds_everything_with_a_reason(folder, data):
    with create_index(data, "docs", folder) as index:
        index.sync(HashEmbedder("hash-bow-1"))
        second = HashEmbedder("hash-bow-2")
        report = index.sync(second)
        assert report.rebuild_reason == "the embedding model changed from hash-bow-1 to hash-bow-2"
        assert report.notices == ["rebuilding the whole index: " + report.rebuild_reason]
        assert sorted(report.added) and len(report.added) == CORPUS_FILES
        assert index.info().model_id == "hash-bow-2"
    distinct = raw(index.path).execute("SELECT count(DISTINCT text_hash) FROM chunks").fetchone()[0]
    assert len(second.texts) == distinct


def test_a_changed_dimension_or_chunk_budget_also_rebuilds(folder, data):
    with create_index(data, "docs", folder) as index:
        index.sync(HashEmbedder(dimension=64))
        assert "dimension changed from 64 to 32" in index.sync(HashEmbedder(dimension=32)).rebuild_reason
        # a model with a smaller input limit means smaller chunks: a new chunker setup
        reason = index.sync(HashEmbedder(dimension=32, max_tokens=100)).rebuild_reason
        assert reason.startswith("the chunker changed from documents-1 budget=256") and "budget=100" in reason


def test_without_an_embedder_the_index_is_bm25_only_and_says_so_once(folder, data):
    with create_index(data, "docs", folder) as index:
        report = index.sync(None)
        assert report.notices == [BM25_ONLY_NOTICE]
        result = index.search("How long is parental leave?")
        assert result.mode == "bm25" and result.notices == []  # said once, at sync
        assert "16 weeks" in result.hits[0].text


def test_syncing_without_the_model_an_index_was_built_with_is_an_error_not_a_rebuild(folder, data):
    with create_index(data, "docs", folder) as index:
        index.sync(HashEmbedder())
        chunks = index.info().chunks
        with pytest.raises(EmbedderError, match="was built with the embedding model hash-bow-1, which was not given"):
            index.sync(None)
        assert index.info().chunks == chunks and index.info().model_id == "hash-bow-1"
        # asked for explicitly, it becomes keyword-only
        assert index.sync(None, rebuild=True).rebuild_reason == "rebuild requested"
        assert index.info().model_id is None and index.info().vectors == 0


def test_wrong_vector_size_from_the_embedder_is_an_error_and_writes_nothing(folder, data):
    class Liar(HashEmbedder):
        def embed_documents(self, texts):
            return [v[:10] for v in super().embed_documents(texts)]

    with create_index(data, "docs", folder) as index:
        with pytest.raises(EmbedderError, match=r"shape \(\d+, 10\), expected \(\d+, 64\)"):
            index.sync(Liar())
        assert index.info().chunks == 0


def test_staleness_is_a_stat_walk_counting_changed_new_and_deleted(folder, data):
    with create_index(data, "docs", folder) as index:
        index.sync(None)
        assert not index.staleness().stale
        (folder / "handbook.md").write_text("# Handbook\n\nRewritten.\n")
        bump_mtime(folder / "handbook.md")
        (folder / "new.md").write_text("# New\n\nA new file.\n")
        (folder / "inventory.csv").unlink()
        stale = index.staleness()
    assert (stale.changed, stale.new, stale.deleted) == (1, 1, 1)


def test_binary_and_empty_files_are_skipped_with_a_reason_and_not_retried(folder, data):
    (folder / "blob.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (folder / "empty.md").write_bytes(b"")
    with create_index(data, "docs", folder) as index:
        report = index.sync(None)
        reasons = dict(report.skipped)
        assert set(reasons) == {"blob.txt", "empty.md"}
        assert "binary" in reasons["blob.txt"] and reasons["empty.md"] == "is empty"
        assert len(report.added) == CORPUS_FILES
        assert index.info().skipped == 2
        again = index.sync(None)
        assert again.skipped == [] and again.unchanged == CORPUS_FILES + 2


def test_a_file_that_becomes_unloadable_loses_its_old_chunks(folder, data):
    with create_index(data, "docs", folder) as index:
        index.sync(None)
        (folder / "handbook.md").write_bytes(b"\x00\x01\x02binary now")
        bump_mtime(folder / "handbook.md")
        report = index.sync(None)
        assert [p for p, _ in report.skipped] == ["handbook.md"]
        assert not index.search("parental leave weeks").found


def test_hidden_files_and_folders_and_unmatched_globs_are_left_out(folder, data):
    (folder / ".git").mkdir()
    (folder / ".git" / "notes.md").write_text("# Secret\n\nzebracorn in a hidden folder\n")
    (folder / ".draft.md").write_text("# Draft\n\nzebracorn in a hidden file\n")
    (folder / "script.py").write_text("print('zebracorn')\n")
    with create_index(data, "docs", folder) as index:
        report = index.sync(None)
        assert len(report.added) == CORPUS_FILES
        assert not index.search("zebracorn").found
    with create_index(data, "md-only", folder, ["meetings/*.md"]) as index:
        assert sorted(index.sync(None).added) == [
            "meetings/2025-07-03.md",
            "meetings/2025-08-14.md",
            "meetings/2025-09-02.md",
        ]


def test_progress_reports_each_file_then_the_end(folder, data):
    seen = []
    with create_index(data, "docs", folder) as index:
        index.sync(HashEmbedder(), progress=seen.append)
    assert [p.files_done for p in seen] == list(range(CORPUS_FILES + 1))
    assert {p.files_total for p in seen} == {CORPUS_FILES}
    assert seen[0].path == "handbook.md" and seen[0].chunks == 0 and seen[-1].path is None
    assert seen[-1].chunks == seen[-1].embedded > 0  # no two chunks of the corpus are the same


KILLED_SYNC = """
import time
from fixtures.rag.support import HashEmbedder
from localassist.rag import create_index

class Slow(HashEmbedder):
    def embed_documents(self, texts):
        time.sleep(0.05)
        return super().embed_documents(texts)

index = create_index({data!r}, "docs", {folder!r})
def progress(p):
    print(p.files_done, flush=True)
index.sync(Slow(), progress=progress, batch_size=1)
print("finished", flush=True)
"""


def test_kill_9_mid_sync_leaves_a_usable_index_and_the_next_run_finishes(folder, data):
    for i in range(30):  # enough files that the kill lands in the middle
        (folder / f"extra/note-{i:02}.md").parent.mkdir(exist_ok=True)
        (folder / f"extra/note-{i:02}.md").write_text(f"# Note {i}\n\nThe code word of note {i} is word{i}x.\n")
    script = KILLED_SYNC.format(data=str(data), folder=str(folder))
    tests = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": tests}
    )
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if (line.strip().isdigit() and int(line) >= 12) or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    db = raw(data / "indexes" / "docs.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")  # raises if FTS disagrees
    done = db.execute("SELECT count(*) FROM files").fetchone()[0]
    assert 0 < done < CORPUS_FILES + 30
    assert (
        db.execute(
            "SELECT count(*) FROM files f WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.file_id = f.id)"
        ).fetchone()[0]
        == 0
    )
    assert (
        db.execute(
            "SELECT count(*) FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM vectors v WHERE v.text_hash = c.text_hash)"
        ).fetchone()[0]
        == 0
    )
    db.close()

    embedder = HashEmbedder()
    with open_index(data, "docs") as index:  # the lock died with the process
        assert index.search("note 0 code word", embedder).found  # usable before the re-run
        report = index.sync(embedder)
        assert report.unchanged == done and len(report.added) == CORPUS_FILES + 30 - done
        assert index.info().files == CORPUS_FILES + 30
        hit = index.search("code word of note 29", embedder).hits[0]
        assert hit.path == "extra/note-29.md" and "word29x" in hit.text


def test_an_index_synced_before_html_locators_cited_the_file_gets_them_at_the_next_sync(folder, data):
    (folder / "garden.html").write_text(
        "<html><body><h1>Garden</h1><p>Tomatoes go in in April.</p><h2>Pests</h2><p>Slugs on the lettuce.</p>"
        "</body></html>\n",
        encoding="utf-8",
    )
    embedder = HashEmbedder()
    with create_index(data, "docs", folder) as index:
        index.sync(embedder)
        garden = "file_id = (SELECT id FROM files WHERE path = 'garden.html')"
        with raw(index.path) as db:  # as an earlier version left it: lines of the text taken out of the HTML
            db.execute(f"UPDATE chunks SET line_start = line_start + 4, line_end = line_end + 4 WHERE {garden}")
            db.execute("DELETE FROM meta WHERE key = 'locators'")
        embedder.calls.clear()
        report = index.sync(embedder)
        assert (report.relocated, report.updated, embedder.calls) == (["garden.html"], [], [])  # vectors kept
        assert report.notices == ["read 1 HTML or JSON file again: their sources now cite lines of the file"]
        spans = raw(index.path).execute(f"SELECT DISTINCT line_start, line_end FROM chunks WHERE {garden}")
        assert spans.fetchall() == [(1, 1)]  # the file is one line
        assert index.sync(embedder).relocated == []  # once
