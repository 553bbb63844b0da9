"""Incremental sync of an index with its folder.

A file whose size and mtime are unchanged is skipped without being read; one whose
bytes hash the same is only re-stamped. A changed file is loaded and chunked again,
and only chunk texts the index has no vector for are embedded (vectors are kept by the
hash of the chunk text, so an edit re-embeds the chunks it touched). Each file is
written in one transaction: its old chunks, FTS rows and no longer used vectors go with
the new ones, so an interrupted run leaves every file either as it was or as it is now.
A different embedding model, dimension or chunker rebuilds everything, with the reason.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from localassist.documents import chunk_document, load_bytes
from localassist.errors import DocumentError
from localassist.files import read_regular_bytes
from localassist.rag.errors import EmbedderError, RagError
from localassist.rag.store import now

if TYPE_CHECKING:
    from localassist.rag.embedder import Embedder
    from localassist.rag.store import Index

CHUNKER_VERSION = "documents-1"
# Locators of HTML and JSON chunks cite lines of the file since version 2 (before: lines of
# the text taken out of it). Their text is the same, so a sync re-reads only those files and
# their vectors are reused, instead of a full rebuild.
LOCATORS_VERSION = "2"
_RELOCATED_KINDS = ("html", "json")
BM25_ONLY_NOTICE = "no embedding model: the index uses keyword (BM25) search only"
# Without an embedding model, chunks are sized in words and punctuation marks: close
# enough to tokens for BM25, and the chunker records which counter it used.
_WORDS = re.compile(r"\w+|[^\w\s]")


def count_words(text: str) -> int:
    return len(_WORDS.findall(text))


@dataclass(frozen=True)
class Progress:
    """Reported before each file (``path`` set) and once at the end (``path`` None)."""

    files_done: int
    files_total: int
    chunks: int  # chunks written so far in this run
    embedded: int  # chunk texts embedded so far in this run
    path: str | None


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    relocated: list[str] = field(default_factory=list)  # unchanged, chunked again for new locators
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), new this run
    chunks_written: int = 0
    chunks_removed: int = 0
    embedded: int = 0  # chunk texts embedded
    reused: int = 0  # chunk texts of changed files whose vector was already there
    rebuild_reason: str | None = None
    notices: list[str] = field(default_factory=list)  # one line each, for the person
    seconds: float = 0.0
    embed_seconds: float = 0.0  # inside embed_documents


@dataclass(frozen=True)
class Staleness:
    changed: int
    new: int
    deleted: int

    @property
    def stale(self) -> bool:
        return bool(self.changed or self.new or self.deleted)


def walk(folder: Path, globs: Iterable[str]) -> dict[str, os.stat_result]:
    """Regular files under ``folder`` matching a glob, by POSIX path relative to it.
    Hidden files and folders are left out, and symlinked folders are not followed."""
    patterns = list(globs)
    found: dict[str, os.stat_result] = {}
    for root, dirs, files in os.walk(folder, onerror=None):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(root)
        for name in sorted(files):
            if name.startswith("."):
                continue
            rel = (base / name).relative_to(folder).as_posix()
            if not any(PurePosixPath(rel).match(p) for p in patterns):
                continue
            try:
                st = os.stat(base / name)
            except OSError:  # a dangling symlink, or gone since the listing
                continue
            if stat.S_ISREG(st.st_mode):
                found[rel] = st
    return found


def staleness(index: Index) -> Staleness:
    folder = index.check_folder()
    on_disk = walk(folder, index.globs)
    known = {row["path"]: row for row in index.db.execute("SELECT path, size, mtime_ns FROM files")}
    changed = sum(1 for path, st in on_disk.items() if path in known and _stamp(st) != (known[path][1], known[path][2]))
    return Staleness(
        changed=changed, new=len(on_disk.keys() - known.keys()), deleted=len(known.keys() - on_disk.keys())
    )


def _stamp(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class FileCheck:
    """A file on disk against what the index recorded of it (``check_file``)."""

    state: str  # "same": size and mtime as recorded (not read); "touched": read, the bytes as recorded; "changed"
    data: bytes | None = None  # the bytes read (touched, changed)
    sha256: str = ""


def check_file(file: Path, st: os.stat_result, recorded: tuple[int, int, str] | None) -> FileCheck:
    """Whether ``file`` (``st``: its stat) is as ``recorded`` (size, mtime_ns, sha256), the
    one test sync and search share: size and mtime alike, it is the same without being
    read; else its bytes decide (touched is not changed). ``recorded`` None: nothing to
    compare with, the bytes are read and it counts as changed. The read goes through
    ``read_regular_bytes``: a file swapped for a FIFO since the stat is refused, never
    waited on. Raises OSError."""
    if recorded is not None and _stamp(st) == recorded[:2]:
        return FileCheck("same")
    data = read_regular_bytes(file)
    sha = hashlib.sha256(data).hexdigest()
    return FileCheck("touched" if recorded is not None and sha == recorded[2] else "changed", data, sha)


def sync(
    index: Index,
    embedder: Embedder | None,
    *,
    progress: Callable[[Progress], None] | None = None,
    rebuild: bool = False,
    batch_size: int = 16,
) -> SyncReport:
    """Bring ``index`` up to date with its folder; see the module docstring.

    Raises FolderGoneError, IndexLockedError (another sync runs past the timeout),
    EmbedderError (no embedder for an index built with one, or a bad vector),
    DiskFullError. Files that cannot be loaded are reported in ``skipped``, not raised."""
    started = time.perf_counter()
    report = SyncReport()
    folder = index.check_folder()
    with index.writer():
        meta = index.meta()
        if embedder is None and meta.get("model_id") and not rebuild:
            raise EmbedderError(
                f"index '{index.name}' was built with the embedding model {meta['model_id']}, which was not "
                f"given; load it to sync, or rebuild the index without one"
            )
        job = _Job(index, embedder, report, batch_size)
        reason = "rebuild requested" if rebuild else _rebuild_reason(meta, job)
        has_files = index.db.execute("SELECT EXISTS(SELECT 1 FROM files)").fetchone()[0]
        if reason is not None or not meta.get("chunker"):
            if embedder is None:  # said when the index is built, not on every sync
                report.notices.append(BM25_ONLY_NOTICE)
            job.reset(wipe=has_files)
            if has_files and reason is not None:
                report.rebuild_reason = reason
                report.notices.append(f"rebuilding the whole index: {reason}")
        on_disk = walk(folder, index.globs)
        known = {row["path"]: row for row in index.db.execute("SELECT * FROM files")}
        gone = sorted(known.keys() - on_disk.keys())
        if gone:
            with index.transaction() as db:
                for path in gone:
                    report.chunks_removed += job.delete_file(db, known[path]["id"])
            report.removed = gone
        job.relocate = () if index.meta().get("locators") == LOCATORS_VERSION else _RELOCATED_KINDS
        total = len(on_disk)
        for done, (path, st) in enumerate(sorted(on_disk.items())):
            if progress:
                progress(Progress(done, total, report.chunks_written, report.embedded, path))
            job.file(folder, path, st, known.get(path))
        with index.transaction() as db:
            index.set_meta(db, last_sync=now(), locators=LOCATORS_VERSION)
        if report.relocated:
            count = len(report.relocated)
            report.notices.append(
                f"read {count} HTML or JSON file{'s' if count != 1 else ''} again: their sources now cite "
                f"lines of the file"
            )
        if progress:
            progress(Progress(total, total, report.chunks_written, report.embedded, None))
    report.seconds = time.perf_counter() - started
    return report


def _rebuild_reason(meta: dict[str, str], job: _Job) -> str | None:
    old_model, new_model = meta.get("model_id") or "", job.model_id
    if old_model != new_model:
        return f"the embedding model changed from {old_model or 'none'} to {new_model or 'none'}"
    if int(meta.get("dimension") or 0) != job.dimension:
        return f"the embedding dimension changed from {meta.get('dimension')} to {job.dimension}"
    if meta.get("chunker") and meta["chunker"] != job.chunker:
        return f"the chunker changed from {meta['chunker']} to {job.chunker}"
    return None


class _Job:
    def __init__(self, index: Index, embedder: Embedder | None, report: SyncReport, batch_size: int) -> None:
        meta = index.meta()
        self.index = index
        self.embedder = embedder
        self.report = report
        self.batch_size = max(1, batch_size)
        self.relocate: tuple[str, ...] = ()  # kinds whose chunks are made again even when unchanged
        self.model_id = embedder.model_id if embedder else ""
        self.dimension = int(embedder.dimension) if embedder else 0
        budget = int(meta["chunk_tokens"])
        self.overlap = int(meta["overlap"])
        if embedder is not None:
            budget = min(budget, int(embedder.max_tokens))
            self.count = embedder.count_tokens
            counter = "model"
        else:
            self.count = count_words
            counter = "words"
        if budget <= self.overlap * 2:
            raise RagError(f"the embedding model takes only {budget} tokens, too few for chunks of this index")
        self.budget = budget
        self.chunker = f"{CHUNKER_VERSION} budget={budget} overlap={self.overlap} count={counter}"

    def reset(self, *, wipe: bool) -> None:
        """Forget everything indexed (in one transaction) and record the new setup."""
        with self.index.transaction() as db:
            if wipe:
                db.execute("DELETE FROM chunks")
                db.execute("DELETE FROM files")
                db.execute("DELETE FROM vectors")
                db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
            self.index.set_meta(
                db,
                model_id=self.model_id,
                model_source=str(getattr(self.embedder, "source", "") or ""),
                dimension=str(self.dimension),
                chunker=self.chunker,
                vectors_version=os.urandom(8).hex(),
            )

    def delete_file(self, db: sqlite3.Connection, file_id: int) -> int:
        hashes = [r[0] for r in db.execute("SELECT DISTINCT text_hash FROM chunks WHERE file_id = ?", (file_id,))]
        removed = db.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,)).rowcount
        db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        self._drop_unused_vectors(db, hashes)
        return removed

    def _drop_unused_vectors(self, db: sqlite3.Connection, hashes: list[str]) -> None:
        dropped = 0
        for h in hashes:
            dropped += db.execute(
                "DELETE FROM vectors WHERE text_hash = ? AND NOT EXISTS (SELECT 1 FROM chunks WHERE text_hash = ?)",
                (h, h),
            ).rowcount
        if dropped:
            self.index.set_meta(db, vectors_version=os.urandom(8).hex())

    def file(self, folder: Path, path: str, st: os.stat_result, row: sqlite3.Row | None) -> None:
        report = self.report
        relocate = row is not None and row["kind"] in self.relocate
        recorded = None if row is None or relocate else (row["size"], row["mtime_ns"], row["sha256"])
        try:
            check = check_file(folder / path, st, recorded)  # swapped for a FIFO since the walk: refused
        except OSError as error:
            self._skip(path, st, row, "", f"cannot be read: {error.strerror or error}")
            return
        if check.state == "same":
            report.unchanged += 1
            return
        assert check.data is not None
        data, sha = check.data, check.sha256
        if check.state == "touched":
            assert row is not None
            with self.index.transaction() as db:
                db.execute(
                    "UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", (st.st_size, st.st_mtime_ns, row["id"])
                )
            report.unchanged += 1
            return
        try:
            document = load_bytes(data, path)
            chunks = chunk_document(document, self.budget, self.count, overlap=self.overlap)
        except DocumentError as error:
            self._skip(path, st, row, sha, _reason(str(error), path))
            return
        if not chunks:
            self._skip(path, st, row, sha, "has no text to index")
            return
        vectors = self._vectors_for([c.text for c in chunks], [c.sha256 for c in chunks])
        with self.index.transaction() as db:
            if row is not None:
                old_hashes = [r[0] for r in db.execute("SELECT text_hash FROM chunks WHERE file_id = ?", (row["id"],))]
                report.chunks_removed += db.execute("DELETE FROM chunks WHERE file_id = ?", (row["id"],)).rowcount
            else:
                old_hashes = []
            file_id = self._upsert_file(db, path, st, sha, document.kind, None)
            db.executemany(
                "INSERT INTO chunks(file_id, ordinal, text, page, page_label, line_start, line_end, row_start, "
                "row_end, section, token_count, text_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        file_id,
                        ordinal,
                        c.text,
                        c.locator.page,
                        c.locator.page_label,
                        c.locator.line_start,
                        c.locator.line_end,
                        c.locator.row_start,
                        c.locator.row_end,
                        c.locator.section,
                        c.tokens,
                        c.sha256,
                    )
                    for ordinal, c in enumerate(chunks)
                ],
            )
            if vectors:
                db.executemany("INSERT OR IGNORE INTO vectors(text_hash, vector) VALUES (?, ?)", vectors.items())
                self.index.set_meta(db, vectors_version=os.urandom(8).hex())
            self._drop_unused_vectors(db, sorted(set(old_hashes) - {c.sha256 for c in chunks}))
        report.chunks_written += len(chunks)
        if row is None:
            report.added.append(path)
        else:
            (report.relocated if relocate and row["sha256"] == sha else report.updated).append(path)

    def _vectors_for(self, texts: list[str], hashes: list[str]) -> dict[str, bytes]:
        """float32 blobs for the texts the index has no vector for yet, by text hash."""
        if self.embedder is None:
            return {}
        wanted: dict[str, str] = {}
        for text, h in zip(texts, hashes, strict=True):
            wanted.setdefault(h, text)
        have: set[str] = set()
        keys = list(wanted)
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            marks = ",".join("?" * len(part))
            have.update(
                r[0] for r in self.index.db.execute(f"SELECT text_hash FROM vectors WHERE text_hash IN ({marks})", part)
            )
        missing = [h for h in keys if h not in have]
        self.report.reused += len(keys) - len(missing)
        import numpy as np

        out: dict[str, bytes] = {}
        for i in range(0, len(missing), self.batch_size):
            part = missing[i : i + self.batch_size]
            started = time.perf_counter()
            raw = self.embedder.embed_documents([wanted[h] for h in part])
            self.report.embed_seconds += time.perf_counter() - started
            matrix = np.asarray(raw, dtype=np.float32)
            if matrix.shape != (len(part), self.dimension):
                raise EmbedderError(
                    f"the embedding model gave vectors of shape {matrix.shape}, expected "
                    f"({len(part)}, {self.dimension}): its dimension does not match the index"
                )
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            unit = matrix / np.where(norms == 0, 1, norms)  # unit vectors: cosine is a dot product
            for h, vector in zip(part, unit, strict=True):
                out[h] = vector.astype("<f4").tobytes()
            self.report.embedded += len(part)
        return out

    def _upsert_file(
        self, db: sqlite3.Connection, path: str, st: os.stat_result, sha: str, kind: str | None, skipped: str | None
    ) -> int:
        db.execute(
            "INSERT INTO files(path, size, mtime_ns, sha256, kind, skipped, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns, "
            "sha256 = excluded.sha256, kind = excluded.kind, skipped = excluded.skipped, "
            "indexed_at = excluded.indexed_at",
            (path, st.st_size, st.st_mtime_ns, sha, kind, skipped, now()),
        )
        return db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()[0]

    def _skip(self, path: str, st: os.stat_result, row: sqlite3.Row | None, sha: str, reason: str) -> None:
        """Remember the file as skipped (so an unchanged one is not tried again) and drop
        whatever an earlier version of it had in the index."""
        with self.index.transaction() as db:
            if row is not None:
                self.report.chunks_removed += self.delete_file(db, row["id"])
            self._upsert_file(db, path, st, sha, None, reason)
        self.report.skipped.append((path, reason))


def _reason(message: str, path: str) -> str:
    """A DocumentError message without the path it starts with (the report shows it)."""
    for prefix in (f"{path}: ", f"{path} "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message
