"""One SQLite database per index: files, chunks with their locators, an FTS5 table over
the chunk text (BM25), and the vectors as float32 blobs.

The database is the only source of truth. It lives at ``<data dir>/indexes/<name>.db``,
0600 in a 0700 folder; WAL mode lets searches read while a sync writes. Only one sync
runs at a time: it holds ``<name>.lock`` for its whole run (a second one waits, then
fails with :class:`IndexLockedError`), and commits file by file, so an interrupted run
leaves an index that answers for the files it finished and a next run that carries on.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from localassist.database import immediate, open_database
from localassist.files import FILE_MODE
from localassist.rag.errors import (
    DiskFullError,
    FolderGoneError,
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    InvalidIndexNameError,
    RagError,
)

if TYPE_CHECKING:
    from localassist.rag.embedder import Embedder
    from localassist.rag.search import SearchResult
    from localassist.rag.sync import Progress, Staleness, SyncReport
    from localassist.rag.vectors import Matrix

# What meta 'schema' says: the layout that release 0.2, which knew no migrations, reads. It
# checks this value on open, so a migration that changed the layout in a way 0.2 would
# misread would set a new one (here and in the index's meta).
SCHEMA_VERSION = "1"
INDEX_DIR = "indexes"
# what localassist.documents loads by its extension, plus plain-text ones
DEFAULT_GLOBS = ("*.md", "*.markdown", "*.txt", "*.rst", "*.pdf", "*.csv", "*.tsv", "*.html", "*.htm", "*.json")
DEFAULT_CHUNK_TOKENS = 256
DEFAULT_OVERLAP = 32
DEFAULT_TIMEOUT = 10.0  # seconds a writer waits for another one
TOKENIZER = "porter unicode61 remove_diacritics 2"  # FTS5: English stems, case and accents folded
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_INDEX_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,           -- relative to the indexed folder, with /
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    kind TEXT,                           -- the loader's kind; NULL when skipped
    skipped TEXT,                        -- why the file is not indexed (binary, empty, ...)
    indexed_at TEXT NOT NULL
);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    page INTEGER, page_label TEXT, line_start INTEGER, line_end INTEGER,
    row_start INTEGER, row_end INTEGER, section TEXT,
    token_count INTEGER NOT NULL,
    text_hash TEXT NOT NULL
);
CREATE INDEX chunks_file ON chunks(file_id);
CREATE INDEX chunks_hash ON chunks(text_hash);
-- one vector per distinct chunk text: identical chunks share it, an edit reuses it
CREATE TABLE vectors (id INTEGER PRIMARY KEY, text_hash TEXT NOT NULL UNIQUE, vector BLOB NOT NULL);
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='{tokenizer}'
);
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"""
MIGRATIONS = [("001_index", _INDEX_TABLES.format(tokenizer=TOKENIZER))]
# secure_delete: the text of removed chunks leaves the file; synchronous=NORMAL: in WAL
# mode, durable at checkpoints and never corrupt
PRAGMAS = ("journal_mode=WAL", "foreign_keys=ON", "secure_delete=ON", "synchronous=NORMAL")
# a 640-float vector (2.5 KB) fits once in a 4 KB page, three times in 8 KB: a third smaller
# (only takes effect before the first table, and before WAL)
NEW_FILE_PRAGMAS = ("page_size=8192", *PRAGMAS)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def indexes_dir(data_dir: Path) -> Path:
    return Path(data_dir) / INDEX_DIR


def index_path(data_dir: Path, name: str) -> Path:
    check_name(name)
    return indexes_dir(data_dir) / f"{name}.db"


def index_names(data_dir: Path) -> list[str]:
    """The names of the indexes in the data dir, from their files (nothing is opened)."""
    folder = indexes_dir(data_dir)
    return sorted(db.stem for db in folder.glob("*.db") if _NAME.fullmatch(db.stem)) if folder.is_dir() else []


def _not_found(data_dir: Path, name: str) -> str:
    names = index_names(data_dir)
    if not names:
        return f"no index named '{name}', and no indexes yet: `localassist index add FOLDER --name {name}`"
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return f"no index named '{name}'; the indexes are: {shown}"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidIndexNameError(
            f"invalid index name {name!r}: use 1–64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class IndexInfo:
    name: str
    path: Path  # the database file
    folder: Path
    globs: tuple[str, ...]
    model_id: str | None  # None: BM25 only
    model_source: str | None  # where the embedder said it was loaded from (a GGUF path), if it did
    dimension: int | None
    chunker: str
    created: str
    last_sync: str | None
    files: int  # indexed files
    skipped: int  # files seen but not indexed (binary, empty, unreadable)
    chunks: int
    vectors: int  # distinct chunk texts with a vector
    size_bytes: int  # database + WAL + vector cache on disk


class Index:
    """An open index. Use :func:`create_index` / :func:`open_index` to get one; close it
    (or use it as a context manager) when done."""

    def __init__(self, data_dir: Path, name: str, *, timeout: float = DEFAULT_TIMEOUT, _create: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.name = check_name(name)
        self.path = index_path(self.data_dir, name)
        self.timeout = timeout
        if not _create and not self.path.is_file():
            raise IndexNotFoundError(_not_found(self.data_dir, name))
        try:
            self.db = open_database(
                self.path,
                MIGRATIONS,
                pragmas=NEW_FILE_PRAGMAS if _create else PRAGMAS,
                timeout=timeout,
                check_same_thread=False,
                adopt=None if _create else self._adopt,
            )
            if not _create:
                try:
                    self._check_schema()
                except BaseException:
                    self.db.close()
                    raise
        except sqlite3.Error as error:
            raise self.explain(error) from None
        except OSError as error:
            raise RagError(f"cannot open index '{name}' ({self.path}): {error.strerror or error}") from None
        self._matrix: Matrix | None = None  # loaded on first vector search
        self._chunk_total: tuple[int, int] | None = None  # (PRAGMA data_version, count of chunks)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _adopt(self, db: sqlite3.Connection) -> int:
        """An index written by release 0.2 has no migrations table: its meta 'schema' is
        '1', which is migration 001 exactly, so it opens as it is, with no rebuild. A file
        without it is not an index, and is left untouched."""
        self._check_schema(db)
        return 1

    def _check_schema(self, db: sqlite3.Connection | None = None) -> None:
        """Refuse a file that is not a whole index of this layout: another database, one
        whose creation was cut short (no meta yet), or a newer layout."""
        try:
            version = _meta(db or self.db).get("schema")
        except sqlite3.DatabaseError:
            version = None
        if version != SCHEMA_VERSION:
            raise IndexCorruptError(
                f"{self.path} is not a localassist index of schema {SCHEMA_VERSION} (found {version!r}); "
                f"remove it and add the index again"
            )

    # -- errors and transactions ----------------------------------------------------

    def explain(self, error: sqlite3.Error) -> RagError:
        """One clear line for a SQLite error."""
        text = str(error)
        if "database or disk is full" in text or "disk I/O error" in text:
            return DiskFullError(
                f"index '{self.name}' could not be written ({text}): the disk is full or failing; it keeps "
                f"what was indexed before; free some space and run the sync again"
            )
        if "locked" in text or "busy" in text:
            return IndexLockedError(
                f"index '{self.name}' is locked by another process (waited {self.timeout:g} s); "
                f"try again when it finishes"
            )
        if "malformed" in text or "not a database" in text or "no such table" in text:
            return IndexCorruptError(
                f"index '{self.name}' ({self.path}) is damaged ({text}); remove it and add it again"
            )
        return RagError(f"index '{self.name}': {text}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (Ctrl-C included)."""
        try:
            with immediate(self.db) as db:
                yield db
            self._chunk_total = None
        except sqlite3.Error as error:
            raise self.explain(error) from None

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the index's writer lock: one sync at a time."""
        from filelock import FileLock, Timeout

        # 0600 like the index itself (filelock's default is 0644, fchmod'ed past the umask)
        lock = FileLock(str(self.path.with_suffix(".lock")), timeout=self.timeout, mode=FILE_MODE)
        try:
            lock.acquire()
        except Timeout:
            raise IndexLockedError(
                f"index '{self.name}' is being updated by another process (waited {self.timeout:g} s); "
                f"try again when it finishes"
            ) from None
        try:
            yield
        finally:
            lock.release()

    # -- meta ------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return _meta(self.db)

    def set_meta(self, db: sqlite3.Connection, **values: str) -> None:
        db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", list(values.items()))

    @property
    def folder(self) -> Path:
        return Path(self.meta()["folder"])

    @property
    def globs(self) -> tuple[str, ...]:
        return tuple(json.loads(self.meta()["globs"]))

    def check_folder(self) -> Path:
        folder = self.folder
        if not folder.is_dir():
            raise FolderGoneError(
                f"the folder of index '{self.name}' is gone: {folder}; put it back, or remove the index"
            )
        return folder

    def info(self) -> IndexInfo:
        try:
            meta = self.meta()
            files, skipped = self.db.execute(
                "SELECT count(*) FILTER (WHERE skipped IS NULL), count(*) FILTER (WHERE skipped IS NOT NULL) FROM files"
            ).fetchone()
            chunks = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
            vectors = self.db.execute("SELECT count(*) FROM vectors").fetchone()[0]
        except sqlite3.Error as error:
            raise self.explain(error) from None
        size = sum(p.stat().st_size for p in self.sidecars() if p.exists())
        return IndexInfo(
            name=self.name,
            path=self.path,
            folder=Path(meta["folder"]),
            globs=tuple(json.loads(meta["globs"])),
            model_id=meta.get("model_id") or None,
            model_source=meta.get("model_source") or None,
            dimension=int(meta.get("dimension") or 0) or None,
            chunker=meta.get("chunker", ""),
            created=meta.get("created", ""),
            last_sync=meta.get("last_sync") or None,
            files=files,
            skipped=skipped,
            chunks=chunks,
            vectors=vectors,
            size_bytes=size,
        )

    def sidecars(self) -> list[Path]:
        """The database and every file kept beside it."""
        return _files(self.path)

    # -- the work, in their own modules ----------------------------------------------

    def sync(
        self,
        embedder: Embedder | None,
        *,
        progress: Callable[[Progress], None] | None = None,
        rebuild: bool = False,
        batch_size: int = 16,
    ) -> SyncReport:
        """Bring the index up to date with its folder. See :func:`localassist.rag.sync.sync`."""
        from localassist.rag.sync import sync

        return sync(self, embedder, progress=progress, rebuild=rebuild, batch_size=batch_size)

    def staleness(self) -> Staleness:
        """Files changed, new and deleted since the last sync, by a stat walk only."""
        from localassist.rag.sync import staleness

        return staleness(self)

    def search(
        self,
        query: str,
        embedder: Embedder | None = None,
        *,
        k: int = 5,
        min_coverage: float | None = None,
        min_cosine: float | None = None,
    ) -> SearchResult:
        """Hybrid search. See :func:`localassist.rag.search.search`."""
        from localassist.rag.search import MIN_COVERAGE, search

        floor = MIN_COVERAGE if min_coverage is None else min_coverage
        return search(self, query, embedder, k=k, min_coverage=floor, min_cosine=min_cosine)


def create_index(
    data_dir: Path,
    name: str,
    folder: Path,
    globs: tuple[str, ...] | list[str] | None = None,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    timeout: float = DEFAULT_TIMEOUT,
) -> Index:
    """A new, empty index of ``folder`` (sync fills it). ``globs`` are matched against
    each file's path relative to the folder, from the right (``*.md`` at any depth,
    ``notes/*.md`` in any folder named notes)."""
    path = index_path(data_dir, name)
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise FolderGoneError(f"{folder} is not a folder")
    if chunk_tokens < 16:
        raise RagError(f"chunk size must be at least 16 tokens (got {chunk_tokens})")
    if not 0 <= overlap < chunk_tokens // 2:
        raise RagError(f"chunk overlap must be at least 0 and under half the chunk size (got {overlap})")
    patterns = tuple(globs) if globs else DEFAULT_GLOBS
    if path.exists():
        raise IndexExistsError(f"an index named '{name}' already exists; pick another name or remove it first")
    try:
        index = Index(data_dir, name, timeout=timeout, _create=True)  # its tables: the migrations
    except BaseException:
        for file in _files(path):
            file.unlink(missing_ok=True)
        raise
    try:
        with index.transaction() as db:
            index.set_meta(
                db,
                schema=SCHEMA_VERSION,
                name=name,
                folder=str(folder),
                globs=json.dumps(list(patterns)),
                model_id="",
                dimension="0",
                chunker="",
                chunk_tokens=str(chunk_tokens),
                overlap=str(overlap),
                created=now(),
                last_sync="",
                vectors_version="0",
            )
    except BaseException:
        index.close()
        for file in index.sidecars():
            file.unlink(missing_ok=True)
        raise
    return index


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    return {row["key"]: row["value"] for row in db.execute("SELECT key, value FROM meta")}


def _files(path: Path) -> list[Path]:
    """An index's database and every file kept beside it."""
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm"), path.with_suffix(".vec")]


def open_index(data_dir: Path, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> Index:
    """Open an existing index; :class:`IndexNotFoundError` when there is none."""
    return Index(data_dir, name, timeout=timeout)


def list_indexes(data_dir: Path) -> list[IndexInfo]:
    """Every index in the data dir, by name."""
    folder = indexes_dir(data_dir)
    if not folder.is_dir():
        return []
    infos = []
    for db in sorted(folder.glob("*.db")):
        if not _NAME.fullmatch(db.stem):
            continue
        with open_index(data_dir, db.stem) as index:
            infos.append(index.info())
    return infos


def remove_index(data_dir: Path, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Delete an index and every file beside it. Waits for a running sync to finish."""
    index = open_index(data_dir, name, timeout=timeout)
    try:
        with index.writer():
            index.close()
            for file in index.sidecars():
                file.unlink(missing_ok=True)
    finally:
        index.close()
    with suppress(OSError):
        os.unlink(index.path.with_suffix(".lock"))
