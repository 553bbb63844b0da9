"""Map outputs kept in SQLite, so a re-run (or a change of only --points or --style)
does not redo the map, and a run stopped by Ctrl-C resumes where it stopped.

A note is stored under a key made of everything that decides it: the document's
sha256, the chunk's index and sha256, the model's identity, and a hash of the prompt
(template text, its parameters, the sampling). The file holds document text in the
form of notes, so it is 0600 in a 0700 folder, like every file localassist keeps.

Notes are the document's, not a conversation's: one set serves every ``summarize`` run
and every chat that attaches the same bytes. A document summarized for a conversation
(chat's ``/file``, only when the conversation is logged) is recorded in ``attached``, and
``logs rm`` deletes the notes of every such document that no conversation left in the
log has attached (``forget``), so deleting a conversation leaves no note of what its
documents said; notes made by ``summarize`` alone stay until the file is deleted.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from localassist.database import immediate, open_database
from localassist.errors import LocalAssistError

if TYPE_CHECKING:
    from localassist.engine.types import Backend

CACHE_FILE = "summaries.db"
# Release 0.2 and earlier made these tables at every open (IF NOT EXISTS; `attached` came
# after `notes`) and recorded nothing: the first migration keeps IF NOT EXISTS, so over a
# cache they wrote it adds only what is missing and every note stays.
MIGRATIONS = [
    (
        "001_notes_and_attached",
        """
CREATE TABLE IF NOT EXISTS notes (
    key TEXT PRIMARY KEY,
    document_sha256 TEXT NOT NULL,
    chunk_index INTEGER NOT NULL,
    chunk_sha256 TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attached (
    document_sha256 TEXT PRIMARY KEY,
    created REAL NOT NULL
);
""",
    ),
]
# secure_delete: deleted notes are zeroed, not left in free pages
PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "secure_delete=ON")


class CacheError(LocalAssistError):
    """The summary cache cannot be opened or written (the summary goes on without it)."""


def cache_key(document_sha256: str, chunk_index: int, chunk_sha256: str, model: str, prompt: str) -> str:
    parts = (document_sha256, str(chunk_index), chunk_sha256, model, prompt)
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def backend_fingerprint(backend: Backend) -> str:
    """What makes a backend's outputs its own: its model's name and chat template, plus,
    for a local file, its path, size and modification time (hashing gigabytes per run
    would cost more than the map it saves). Part of every cache key: it must not change."""
    info = backend.info()
    details = info.details or {}
    parts = [info.model, str(details.get("chat_template", ""))]
    path = details.get("path")
    if path:
        try:
            st = os.stat(path)
            parts += [str(path), str(st.st_size), str(st.st_mtime_ns)]
        except OSError:
            parts.append(str(path))
    return "|".join(parts)


class SummaryCache:
    """Notes by key. Every write commits at once: a run killed between two chunks keeps
    every note it finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = open_database(path, MIGRATIONS, pragmas=PRAGMAS, check_same_thread=False)
        except (sqlite3.Error, OSError) as error:
            raise CacheError(f"cannot open the summary cache {path}: {error}") from None

    @classmethod
    def open(cls, cache_dir: Path) -> SummaryCache:
        return cls(Path(cache_dir) / CACHE_FILE)

    def get(self, key: str) -> str | None:
        try:
            row = self.db.execute("SELECT text FROM notes WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as error:
            raise CacheError(f"cannot read the summary cache {self.path}: {error}") from None
        return row[0] if row else None

    def put(
        self, key: str, text: str, *, document: str, index: int, chunk: str, model: str, prompt: str, finish: str
    ) -> None:
        try:
            self.db.execute(
                "INSERT OR REPLACE INTO notes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, document, index, chunk, model, prompt, text, finish, time.time()),
            )
        except sqlite3.Error as error:
            raise CacheError(f"cannot write the summary cache {self.path}: {error}") from None

    def mark_attached(self, document: str) -> None:
        """Record that ``document`` (its sha256) is summarized for a conversation (``forget``)."""
        try:
            self.db.execute("INSERT OR IGNORE INTO attached VALUES (?, ?)", (document, time.time()))
        except sqlite3.Error as error:
            raise CacheError(f"cannot write the summary cache {self.path}: {error}") from None

    def forget(self, keep: set[str]) -> tuple[int, bool]:
        """``logs rm``: delete the notes of every document summarized for a conversation
        (``mark_attached``) whose sha256 is not in ``keep`` (the documents attached to the
        conversations left in the log), and leave no copy of them in the file: the file is
        vacuumed and its WAL checkpointed and truncated. Returns how many notes went, and
        whether another process holding the file open kept the WAL from being truncated."""
        try:
            marked = {row[0] for row in self.db.execute("SELECT document_sha256 FROM attached")}
            gone = sorted(marked - keep)
            removed = 0
            if gone:
                with immediate(self.db) as db:
                    for document in gone:
                        removed += db.execute("DELETE FROM notes WHERE document_sha256 = ?", (document,)).rowcount
                        db.execute("DELETE FROM attached WHERE document_sha256 = ?", (document,))
            if not removed:
                return 0, False
            self.db.execute("VACUUM")
            busy = bool(self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        except sqlite3.Error as error:
            raise CacheError(f"cannot delete from the summary cache {self.path}: {error}") from None
        return removed, busy

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM notes").fetchone()[0])

    def close(self) -> None:
        self.db.close()
