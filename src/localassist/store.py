"""The conversation log: every exchange of `ask` and `chat`, in SQLite.

One row per exchange (the user's message, the answer, model, parameters, token
counts, timings), grouped into conversations. WAL mode and a busy timeout let
several processes write at once; versioned migrations are recorded in the database;
the file is created with mode 0600; full-text search uses FTS5.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localassist.errors import LocalAssistError, UsageError
from localassist.generation import Completion, Message

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_conversations_and_exchanges",
        """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            model TEXT NOT NULL,
            system TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        CREATE TABLE exchanges (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            created REAL NOT NULL,
            model TEXT NOT NULL,
            prompt TEXT NOT NULL,
            response TEXT NOT NULL,
            finish_reason TEXT NOT NULL,
            params TEXT NOT NULL,
            prompt_tokens INTEGER,
            cached_tokens INTEGER,
            completion_tokens INTEGER,
            ttft_s REAL,
            generation_tps REAL,
            total_s REAL
        );
        CREATE INDEX exchanges_by_conversation ON exchanges(conversation_id, id);
        """,
    ),
    (
        "002_full_text_search",
        """
        CREATE VIRTUAL TABLE exchanges_fts USING fts5(
            prompt, response, content='exchanges', content_rowid='id'
        );
        CREATE TRIGGER exchanges_ai AFTER INSERT ON exchanges BEGIN
            INSERT INTO exchanges_fts(rowid, prompt, response) VALUES (new.id, new.prompt, new.response);
        END;
        CREATE TRIGGER exchanges_ad AFTER DELETE ON exchanges BEGIN
            INSERT INTO exchanges_fts(exchanges_fts, rowid, prompt, response)
            VALUES ('delete', old.id, old.prompt, old.response);
        END;
        INSERT INTO exchanges_fts(exchanges_fts) VALUES ('rebuild');
        """,
    ),
]


class LogError(LocalAssistError):
    """The log database cannot be read or written (corrupt, locked, unwritable)."""


@dataclass(frozen=True)
class Exchange:
    id: int
    conversation_id: str
    created: float
    model: str
    prompt: str
    response: str
    finish_reason: str
    params: dict[str, Any]
    prompt_tokens: int | None
    cached_tokens: int | None
    completion_tokens: int | None
    ttft_s: float | None
    generation_tps: float | None
    total_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StoredConversation:
    id: str
    title: str
    model: str
    system: str | None
    created: float
    exchanges: list[Exchange]

    def messages(self) -> list[Message]:
        turns: list[Message] = []
        for ex in self.exchanges:
            turns.append(Message("user", ex.prompt))
            turns.append(Message("assistant", ex.response, interrupted=ex.finish_reason == "interrupted"))
        return turns


def new_id() -> str:
    """Random, so that a short prefix of it is enough to name a conversation."""
    return secrets.token_hex(6)


class LogStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise LogError(self._explain(exc)) from None
        except OSError as exc:
            raise LogError(f"cannot open the log database {path}: {exc.strerror or exc}") from None

    def _explain(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return f"the log database {self.path} is locked by another process ({text})"
        if "malformed" in text or "not a database" in text:
            return (
                f"the log database {self.path} is corrupt ({text}); move it away to start a new one, "
                "or turn logging off with `localassist logs off`"
            )
        return f"log database {self.path}: {text}"

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise LogError(self._explain(exc)) from None

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
        done = {row[0] for row in self.db.execute("SELECT name FROM _migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            with self._write() as db:
                # re-check inside the write lock: another process may have just applied it
                if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                    continue
                for statement in _statements(sql):
                    db.execute(statement)
                db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))

    def migrations(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM _migrations ORDER BY name")]

    def close(self) -> None:
        self.db.close()

    # --- writing

    def log_exchange(
        self,
        conversation_id: str | None,
        prompt: str,
        completion: Completion,
        params: dict[str, Any],
        system: str | None = None,
    ) -> str:
        """Record one exchange; a new conversation is started when ``conversation_id`` is None."""
        now = time.time()
        cid = conversation_id or new_id()
        t = completion.timings
        with self._write() as db:
            if conversation_id is None:
                db.execute(
                    "INSERT INTO conversations VALUES (?, ?, ?, ?, ?, ?)",
                    (cid, _title(prompt), completion.model, system, now, now),
                )
            else:
                db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, cid))
            db.execute(
                """INSERT INTO exchanges (conversation_id, created, model, prompt, response, finish_reason,
                   params, prompt_tokens, cached_tokens, completion_tokens, ttft_s, generation_tps, total_s)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    cid,
                    now,
                    completion.model,
                    prompt,
                    completion.text,
                    completion.finish_reason,
                    json.dumps(params, sort_keys=True),
                    completion.prompt_tokens,
                    completion.cached_tokens,
                    completion.completion_tokens,
                    t.ttft_s,
                    t.generation_tokens_per_s,
                    t.total_s,
                ),
            )
        return cid

    def delete(self, conversation_id: str) -> int:
        cid = self.resolve_id(conversation_id)
        with self._write() as db:
            n = db.execute("DELETE FROM exchanges WHERE conversation_id = ?", (cid,)).rowcount
            db.execute("DELETE FROM conversations WHERE id = ?", (cid,))
        return n

    def delete_all(self) -> int:
        with self._write() as db:
            n = db.execute("DELETE FROM exchanges").rowcount
            db.execute("DELETE FROM conversations")
        self.db.execute("VACUUM")  # deleted text must not linger in free pages
        return n

    # --- reading

    def _read(self, sql: str, args: tuple = (), search: bool = False) -> list[sqlite3.Row]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if search and "locked" not in str(exc):
                raise UsageError(f"bad search query ({exc}); see SQLite FTS5 query syntax") from None
            raise LogError(self._explain(exc)) from None
        except sqlite3.DatabaseError as exc:
            raise LogError(self._explain(exc)) from None

    def latest_conversation_id(self) -> str | None:
        rows = self._read("SELECT id FROM conversations ORDER BY updated DESC, rowid DESC LIMIT 1")
        return rows[0]["id"] if rows else None

    def resolve_id(self, prefix: str) -> str:
        """A conversation id from a unique prefix of it."""
        rows = self._read("SELECT id FROM conversations WHERE id LIKE ? || '%' LIMIT 2", (prefix,))
        if not rows:
            raise UsageError(f"no conversation {prefix!r}; `localassist logs` lists them")
        if len(rows) > 1:
            raise UsageError(f"{prefix!r} matches several conversations; give more of the id")
        return rows[0]["id"]

    def conversation(self, conversation_id: str) -> StoredConversation:
        cid = self.resolve_id(conversation_id)
        row = self._read("SELECT * FROM conversations WHERE id = ?", (cid,))[0]
        exchanges = [
            _exchange(r) for r in self._read("SELECT * FROM exchanges WHERE conversation_id = ? ORDER BY id", (cid,))
        ]
        return StoredConversation(row["id"], row["title"], row["model"], row["system"], row["created"], exchanges)

    def recent(
        self, limit: int = 10, query: str | None = None, conversation_id: str | None = None, model: str | None = None
    ) -> list[Exchange]:
        """The latest exchanges, newest last; ``query`` is FTS5 full-text search."""
        where, args = [], []
        if query:
            where.append("e.id IN (SELECT rowid FROM exchanges_fts WHERE exchanges_fts MATCH ?)")
            args.append(query)
        if conversation_id:
            where.append("e.conversation_id = ?")
            args.append(self.resolve_id(conversation_id))
        if model:
            where.append("e.model = ?")
            args.append(model)
        sql = "SELECT e.* FROM exchanges e"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.id DESC LIMIT ?"
        rows = self._read(sql, (*args, limit), search=bool(query))
        return [_exchange(r) for r in reversed(rows)]

    def counts(self) -> tuple[int, int]:
        conversations = self._read("SELECT count(*) FROM conversations")[0][0]
        exchanges = self._read("SELECT count(*) FROM exchanges")[0][0]
        return conversations, exchanges


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (triggers contain ';' inside BEGIN ... END)."""
    out, buf = [], ""
    for line in sql.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    return out


def _title(prompt: str) -> str:
    first = " ".join(prompt.split())
    return first[:60] + ("…" if len(first) > 60 else "")


def _exchange(row: sqlite3.Row) -> Exchange:
    return Exchange(
        row["id"],
        row["conversation_id"],
        row["created"],
        row["model"],
        row["prompt"],
        row["response"],
        row["finish_reason"],
        json.loads(row["params"]),
        row["prompt_tokens"],
        row["cached_tokens"],
        row["completion_tokens"],
        row["ttft_s"],
        row["generation_tps"],
        row["total_s"],
    )


def log_path(data_dir: Path) -> Path:
    return data_dir / "logs.db"


def export_markdown(conv: StoredConversation) -> str:
    lines = [
        f"# {conv.title}",
        "",
        f"- conversation: `{conv.id}`",
        f"- model: {conv.model}",
        f"- started: {time.strftime('%Y-%m-%d %H:%M', time.localtime(conv.created))}",
        "",
    ]
    if conv.system:
        lines += [f"**System:** {conv.system}", ""]
    for ex in conv.exchanges:
        lines += [
            "## You",
            "",
            ex.prompt.rstrip(),
            "",
            "## Assistant",
            "",
            ex.response.rstrip() + (" *(interrupted)*" if ex.finish_reason == "interrupted" else ""),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def export_json(conv: StoredConversation) -> str:
    return json.dumps(
        {
            "id": conv.id,
            "title": conv.title,
            "model": conv.model,
            "system": conv.system,
            "created": conv.created,
            "exchanges": [ex.as_dict() for ex in conv.exchanges],
        },
        indent=2,
        ensure_ascii=False,
    )
