"""The conversation log: every exchange of `ask` and `chat`, in SQLite.

One row per exchange (the user's message, the answer, model, parameters, token
counts, timings), grouped into conversations. WAL mode and a busy timeout let
several processes write at once; named migrations are recorded in the database;
the file is created with mode 0600 in a 0700 directory (``localassist.database``);
full-text search uses FTS5.

The log mirrors what the chat shows: every exchange has a ``status``. ``active`` ones
are the conversation as it stands; ``/regen`` marks the old answer ``superseded``,
``/undo`` marks the exchange ``undone``, ``/clear`` and ``/load`` mark the earlier ones
``cleared``. Reading, resuming and exporting show only active exchanges unless asked.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from localassist.conversation.transcript import CUT_SHORT, Block
from localassist.database import immediate, open_database
from localassist.engine.types import Done, Message
from localassist.errors import LocalAssistError, UsageError

STATUSES = ("active", "superseded", "undone", "cleared")

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
    (
        # Exchanges written before this migration are taken as active, under the system
        # prompt their conversation has now (the only one recorded for them).
        "003_exchange_status_system_imported",
        """
        ALTER TABLE exchanges ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
            CHECK (status IN ('active', 'superseded', 'undone', 'cleared'));
        ALTER TABLE exchanges ADD COLUMN system TEXT;
        ALTER TABLE exchanges ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
        UPDATE exchanges SET system = (SELECT c.system FROM conversations c WHERE c.id = exchanges.conversation_id);
        """,
    ),
    (
        # The tool calls behind an answer (`--tools`): what was called, with what, whether the
        # user approved it, what came back (cut to LOGGED_RESULT_CHARS) and how long it took.
        "004_tool_calls",
        """
        CREATE TABLE tool_calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            exchange_id INTEGER NOT NULL REFERENCES exchanges(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            call_id TEXT NOT NULL,
            name TEXT NOT NULL,
            arguments TEXT NOT NULL,
            approval TEXT NOT NULL,
            result TEXT NOT NULL,
            is_error INTEGER NOT NULL,
            seconds REAL
        );
        CREATE INDEX tool_calls_by_exchange ON tool_calls(exchange_id, id);
        """,
    ),
    (
        # Documents pinned to a conversation's context (chat's /file, text piped into chat):
        # what the model was given, so that a resume gives it again and `logs show` shows it.
        # after_exchange: the last exchange logged before it (NULL: before the first one).
        "005_attachments",
        """
        CREATE TABLE attachments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            after_exchange INTEGER,
            created REAL NOT NULL,
            name TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            mode TEXT NOT NULL,
            text TEXT NOT NULL
        );
        CREATE INDEX attachments_by_conversation ON attachments(conversation_id, id);
        """,
    ),
    (
        # The KV snapshot files (engine/kv_snapshots.py, by file name) saved for a conversation:
        # each holds its every token, so deleting the conversation deletes them too.
        "006_kv_snapshots",
        """
        CREATE TABLE kv_snapshots (
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            PRIMARY KEY (conversation_id, name)
        ) WITHOUT ROWID;
        """,
    ),
    (
        # The web chat (`serve`): whose conversation it is (NULL: the machine's own user, as
        # for every conversation of `ask` and `chat`) and its sidebar settings, as JSON; and
        # the sources an answer from an index was given (JSON), shown again on reload.
        "007_owner_and_settings",
        """
        ALTER TABLE conversations ADD COLUMN owner TEXT;
        ALTER TABLE conversations ADD COLUMN settings TEXT;
        ALTER TABLE exchanges ADD COLUMN sources TEXT;
        CREATE INDEX conversations_by_owner ON conversations(owner, updated);
        """,
    ),
]
# secure_delete: deleted rows are overwritten with zeros rather than left in free pages
PRAGMAS = ("journal_mode=WAL", "foreign_keys=ON", "secure_delete=ON")
LOGGED_RESULT_CHARS = 4000


class LogError(LocalAssistError):
    """The log database cannot be read or written (corrupt, locked, unwritable)."""


@dataclass(frozen=True)
class StoredToolCall:
    """One tool call behind an answer, as logged (``result`` cut to LOGGED_RESULT_CHARS)."""

    step: int
    call_id: str
    name: str
    arguments: str
    approval: str
    result: str
    is_error: bool
    seconds: float | None


@dataclass(frozen=True)
class Attachment:
    """A document pinned to a conversation's context: ``name`` as shown (the path given, or
    ``stdin``), the sha256 of what was read (the file's bytes; piped text as UTF-8),
    ``mode`` ``whole`` or ``summary``, and ``text``, exactly what went into the context.
    As logged, also when it was attached: after which exchange, and the time."""

    name: str
    sha256: str
    mode: str
    text: str
    after_exchange: int | None = None
    created: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
    status: str = "active"  # one of STATUSES
    system: str | None = None  # the system prompt in effect for this exchange
    imported: bool = False  # restored from a transcript (/load): no timings
    tool_calls: tuple[StoredToolCall, ...] = ()  # in the order they ran
    sources: tuple[dict[str, Any], ...] = ()  # what an answer from an index was given (sources_json)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["tool_calls"] = [dict(call.__dict__) for call in self.tool_calls]
        out["sources"] = list(self.sources)
        return out

    def messages(self) -> list[Message]:
        """The exchange as chat messages. An imported transcript may hold a question
        without an answer, or an answer without a question: only what was there."""
        out = []
        if self.finish_reason != "unprompted":
            out.append(Message("user", self.prompt))
        if self.finish_reason != "unanswered":
            out.append(Message("assistant", self.response, interrupted=self.finish_reason in CUT_SHORT))
        return out


@dataclass(frozen=True)
class StoredConversation:
    id: str
    title: str
    model: str
    system: str | None
    created: float
    exchanges: list[Exchange]  # as loaded: only active ones unless include_hidden was asked for
    attachments: list[Attachment] = field(default_factory=list)  # in the order they were attached

    def shown(self, include_hidden: bool = False) -> list[Exchange]:
        return list(self.exchanges) if include_hidden else [ex for ex in self.exchanges if ex.status == "active"]

    def messages(self, include_hidden: bool = False) -> list[Message]:
        """The conversation as chat shows it: the active exchanges' messages, oldest first."""
        return [m for ex in self.shown(include_hidden) for m in ex.messages()]


class Logged(NamedTuple):
    """What ``log_exchange`` wrote."""

    conversation_id: str
    exchange_id: int


class Imported(NamedTuple):
    """What ``log_imported`` wrote: the exchange ids in transcript order."""

    conversation_id: str
    exchange_ids: list[int]


def new_id() -> str:
    """Random, so that a short prefix of it is enough to name a conversation."""
    return secrets.token_hex(6)


class LogStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = open_database(path, MIGRATIONS, pragmas=PRAGMAS)
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
            with immediate(self.db) as db:
                yield db
        except sqlite3.Error as exc:
            raise LogError(self._explain(exc)) from None

    def migrations(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM _migrations ORDER BY name")]

    def close(self) -> None:
        self.db.close()

    # --- writing

    def log_exchange(
        self,
        conversation_id: str | None,
        prompt: str,
        completion: Done,
        params: dict[str, Any],
        system: str | None = None,
        *,
        replaces: int | None = None,
        tool_calls: Sequence[Any] = (),
        attachments: Sequence[Attachment] = (),
        sources: Sequence[dict[str, Any]] = (),
    ) -> Logged:
        """Record one exchange, active, under the system prompt in effect (``system``), with
        the tool calls behind it (objects with StoredToolCall's attributes, in order) and the
        ``attachments`` made before it that are not logged yet.

        ``conversation_id`` None starts a new conversation whose system prompt is ``system``;
        otherwise it is a full id that must still be in the log. ``replaces`` is the id of
        the exchange this one regenerates (/regen): it becomes ``superseded`` in the same
        transaction. Raises LogError."""
        now = time.time()
        cid = conversation_id or new_id()
        t = completion.timings
        with self._write() as db:
            _touch(db, cid, conversation_id is None, prompt, completion.model, system, now)
            superseded = "UPDATE exchanges SET status = 'superseded' WHERE id = ? AND conversation_id = ?"
            if replaces is not None and not db.execute(superseded, (replaces, cid)).rowcount:
                raise LogError(f"conversation {cid} has no exchange {replaces} to replace")
            _attach(db, cid, attachments, now)
            exchange_id = _insert(
                db,
                conversation_id=cid,
                created=now,
                model=completion.model,
                prompt=prompt,
                response=completion.text,
                finish_reason=completion.finish_reason,
                params=json.dumps(params, sort_keys=True),
                prompt_tokens=completion.prompt_tokens,
                cached_tokens=completion.cached_tokens,
                completion_tokens=completion.completion_tokens,
                ttft_s=t.ttft_s,
                generation_tps=t.generation_tokens_per_s,
                total_s=t.total_s,
                system=system,
                sources=json.dumps(list(sources)) if sources else None,
            )
            for call in tool_calls:
                result = call.result
                if len(result) > LOGGED_RESULT_CHARS:
                    cut = f"[logged: the first {LOGGED_RESULT_CHARS:,} of {len(result):,} characters]"
                    result = f"{result[:LOGGED_RESULT_CHARS]}\n{cut}"
                db.execute(
                    "INSERT INTO tool_calls (exchange_id, step, call_id, name, arguments, approval, result, is_error,"
                    " seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        exchange_id,
                        call.step,
                        call.call_id,
                        call.name,
                        call.arguments,
                        call.approval,
                        result,
                        int(call.is_error),
                        call.seconds,
                    ),
                )
        return Logged(cid, exchange_id)

    def log_attachment(self, conversation_id: str, attachment: Attachment) -> None:
        """Record a document pinned to the conversation (a full id) now. Raises LogError."""
        with self._write() as db:
            _touch(db, conversation_id, False, "", "", None, time.time())
            _attach(db, conversation_id, [attachment], time.time())

    def claim_snapshots(self, conversation_id: str, names: Iterable[str]) -> None:
        """Record KV snapshot files (their names) as holding the conversation (a full id).
        Raises LogError."""
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO kv_snapshots (conversation_id, name) VALUES (?, ?)",
                [(conversation_id, name) for name in names],
            )

    def typed(self, conversation_id: str | None) -> set[str]:
        """What chat's prompt history may hold of a conversation (a full id; None: of every
        one): its messages, and ``/system TEXT`` for each of its system prompts."""
        where, args = ("WHERE conversation_id = ?", (conversation_id,)) if conversation_id else ("", ())
        rows = self._read(f"SELECT prompt, system FROM exchanges {where}", args)
        where, args = ("WHERE id = ?", (conversation_id,)) if conversation_id else ("", ())
        systems = {row[0] for row in self._read(f"SELECT system FROM conversations {where}", args)}
        systems |= {row["system"] for row in rows}
        return {row["prompt"] for row in rows} | {f"/system {text}" for text in systems if text}

    def claimed_snapshots(self) -> set[str]:
        """The KV snapshot file names the conversations in the log claim."""
        return {row[0] for row in self._read("SELECT DISTINCT name FROM kv_snapshots")}

    def attached_documents(self) -> set[str]:
        """The sha256 of every document attached to a conversation in the log."""
        return {row[0] for row in self._read("SELECT DISTINCT sha256 FROM attachments")}

    def set_status(self, exchange_ids: Iterable[int], status: str) -> int:
        """Mark exchanges ``active``, ``superseded`` (/regen), ``undone`` (/undo) or ``cleared``;
        return how many rows exist among ``exchange_ids``. Raises ValueError for another status."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)} (got {status!r})")
        ids = list(exchange_ids)
        if not ids:
            return 0
        with self._write() as db:
            marks = ", ".join("?" * len(ids))
            return db.execute(f"UPDATE exchanges SET status = ? WHERE id IN ({marks})", (status, *ids)).rowcount

    def clear(self, conversation_id: str) -> int:
        """/clear: every active exchange of the conversation (a full id) becomes ``cleared``; return how many."""
        with self._write() as db:
            return _clear(db, conversation_id)

    def set_system(self, conversation_id: str, system: str | None) -> None:
        """/system: the conversation's current system prompt (None: none), the one a resume uses.
        Exchanges keep the one they were logged under. Raises LogError for an unknown id."""
        with self._write() as db:
            if not db.execute(
                "UPDATE conversations SET system = ?, updated = ? WHERE id = ?", (system, time.time(), conversation_id)
            ).rowcount:
                raise LogError(f"conversation {conversation_id} is no longer in the log")

    def create_conversation(
        self,
        title: str,
        model: str,
        system: str | None,
        owner: str | None,
        settings: dict[str, Any],
        cid: str | None = None,
    ) -> str:
        """A new, empty conversation of ``owner`` (the web chat's: exchanges follow with
        ``log_exchange``), under ``cid`` if given (a ``new_id()``). Raises LogError."""
        cid, now = cid or new_id(), time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO conversations (id, title, model, system, created, updated, owner, settings)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, _title(title) or "New chat", model, system, now, now, owner, json.dumps(settings)),
            )
        return cid

    def update_conversation(
        self, cid: str, *, title: str | None = None, settings: dict[str, Any] | None = None
    ) -> None:
        """Rename a conversation (a full id) or store its web settings. Raises LogError."""
        with self._write() as db:
            if title is not None:
                db.execute("UPDATE conversations SET title = ? WHERE id = ?", (_title(title) or "Untitled", cid))
            if settings is not None:
                db.execute("UPDATE conversations SET settings = ? WHERE id = ?", (json.dumps(settings), cid))

    def log_imported(
        self,
        conversation_id: str | None,
        messages: Sequence[Message],
        *,
        model: str,
        system: str | None = None,
        attachments: Sequence[Attachment] = (),
    ) -> Imported:
        """/load: the conversation becomes the transcript ``messages`` (user and assistant roles).

        In one transaction: the conversation's active exchanges become ``cleared`` (a new
        conversation is started when ``conversation_id`` is None), its system prompt becomes
        ``system``, and the messages are logged as active exchanges marked imported, with no
        token counts or timings. A question without an answer, or an answer without a
        question, is kept as it is (``StoredConversation.messages()`` gives back exactly
        ``messages``); ``attachments`` not logged yet go before them. Raises ValueError for
        another role, LogError."""
        pairs = _pairs(messages)
        now = time.time()
        cid = conversation_id or new_id()
        title = next((prompt for prompt, _, finish in pairs if finish != "unprompted"), "(imported transcript)")
        with self._write() as db:
            _touch(db, cid, conversation_id is None, title, model, system, now)
            _clear(db, cid)
            _attach(db, cid, attachments, now)
            db.execute("UPDATE conversations SET system = ? WHERE id = ?", (system, cid))
            ids = [
                _insert(
                    db,
                    conversation_id=cid,
                    created=now,
                    model=model,
                    prompt=prompt,
                    response=response,
                    finish_reason=finish,
                    params="{}",
                    system=system,
                    imported=1,
                )
                for prompt, response, finish in pairs
            ]
        return Imported(cid, ids)

    def delete(self, conversation_id: str) -> int:
        """Delete a conversation (a unique prefix of its id) and leave no trace of its text
        in the file; return how many exchanges it had."""
        cid = self.resolve_id(conversation_id)
        with self._write() as db:
            n = db.execute("DELETE FROM exchanges WHERE conversation_id = ?", (cid,)).rowcount
            db.execute("DELETE FROM conversations WHERE id = ?", (cid,))
            # The delete trigger only adds tombstones to the full-text index: the words stay
            # in its old segments. Rebuilding writes the index afresh from what is left.
            db.execute("INSERT INTO exchanges_fts(exchanges_fts) VALUES ('rebuild')")
            db.execute("INSERT INTO exchanges_fts(exchanges_fts) VALUES ('optimize')")
        self._vacuum()
        return n

    def delete_all(self) -> int:
        """Delete every conversation and leave no trace of their text in the file."""
        with self._write() as db:
            n = db.execute("DELETE FROM exchanges").rowcount
            db.execute("DELETE FROM conversations")
            db.execute("INSERT INTO exchanges_fts(exchanges_fts) VALUES ('delete-all')")
        self._vacuum()
        return n

    def _vacuum(self) -> None:
        """After a delete: rewrite the file without free pages, then copy the WAL into it and
        truncate the WAL, which otherwise keeps old copies of the deleted pages.

        FTS5's own 'secure-delete' option (SQLite >= 3.42) is not used: a table with it set
        cannot be read by older SQLite, and Python's bundled SQLite is often older (3.40 here)."""
        try:
            self.db.execute("VACUUM")
            busy = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            raise LogError(self._explain(exc)) from None
        if busy:
            raise LogError(
                f"deleted, but another process is reading {self.path}: old copies of the text may stay in "
                f"{self.path.name}-wal until it finishes; run the command again then"
            )

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
        """A conversation id from a unique prefix of it (compared as text: no LIKE wildcards)."""
        if not prefix:
            raise UsageError("give a conversation id; `localassist logs` lists them")
        rows = self._read("SELECT id FROM conversations WHERE substr(id, 1, ?) = ? LIMIT 2", (len(prefix), prefix))
        if not rows:
            raise UsageError(f"no conversation {prefix!r}; `localassist logs` lists them")
        if len(rows) > 1:
            raise UsageError(f"{prefix!r} matches several conversations; give more of the id")
        return rows[0]["id"]

    def conversation(self, conversation_id: str, include_hidden: bool = False) -> StoredConversation:
        """A conversation as chat shows it (its active exchanges), or every exchange with its status."""
        cid = self.resolve_id(conversation_id)
        row = self._read("SELECT * FROM conversations WHERE id = ?", (cid,))[0]
        only_active = "" if include_hidden else " AND status = 'active'"
        rows = self._read(f"SELECT * FROM exchanges WHERE conversation_id = ?{only_active} ORDER BY id", (cid,))
        exchanges = self._with_tool_calls([_exchange(r) for r in rows])
        attachments = [
            Attachment(a["name"], a["sha256"], a["mode"], a["text"], a["after_exchange"], a["created"])
            for a in self._read("SELECT * FROM attachments WHERE conversation_id = ? ORDER BY id", (cid,))
        ]
        return StoredConversation(
            row["id"], row["title"], row["model"], row["system"], row["created"], exchanges, attachments
        )

    def recent(
        self,
        limit: int = 10,
        query: str | None = None,
        conversation_id: str | None = None,
        model: str | None = None,
        include_hidden: bool = False,
        fts: bool = False,
    ) -> list[Exchange]:
        """The latest active exchanges (every one with ``include_hidden``), newest last.

        ``query`` is plain words, all of which must appear (``"a phrase"`` in double quotes,
        ``word*`` for a prefix); with ``fts`` it is passed to FTS5 as query syntax."""
        where, args = [], []
        if query:
            where.append("e.id IN (SELECT rowid FROM exchanges_fts WHERE exchanges_fts MATCH ?)")
            args.append(query if fts else fts_query(query))
        if conversation_id:
            where.append("e.conversation_id = ?")
            args.append(self.resolve_id(conversation_id))
        if model:
            where.append("e.model = ?")
            args.append(model)
        if not include_hidden:
            where.append("e.status = 'active'")
        sql = "SELECT e.* FROM exchanges e"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.id DESC LIMIT ?"
        rows = self._read(sql, (*args, limit), search=bool(query))
        return self._with_tool_calls([_exchange(r) for r in reversed(rows)])

    def _with_tool_calls(self, exchanges: list[Exchange]) -> list[Exchange]:
        if not exchanges:
            return exchanges
        ids = [ex.id for ex in exchanges]
        rows = self._read(
            f"SELECT * FROM tool_calls WHERE exchange_id IN ({', '.join('?' * len(ids))}) ORDER BY id", tuple(ids)
        )
        calls: dict[int, list[StoredToolCall]] = {}
        for r in rows:
            calls.setdefault(r["exchange_id"], []).append(
                StoredToolCall(
                    r["step"],
                    r["call_id"],
                    r["name"],
                    r["arguments"],
                    r["approval"],
                    r["result"],
                    bool(r["is_error"]),
                    r["seconds"],
                )
            )
        return [replace(ex, tool_calls=tuple(calls[ex.id])) if ex.id in calls else ex for ex in exchanges]

    def owned(self, owner: str | None, query: str | None = None, limit: int = 200) -> list[sqlite3.Row]:
        """``owner``'s conversations (None: the machine user's, as ``ask`` and ``chat`` log
        them), newest first: id, title, model, updated. ``query``: plain words found in an
        active exchange (as ``recent``'s), or text in the title (any case, any script)."""
        listing = (
            "SELECT id, title, model, updated FROM conversations WHERE owner IS ? ORDER BY updated DESC, rowid DESC"
        )
        if not query:
            return self._read(listing + " LIMIT ?", (owner, limit))
        said = "SELECT DISTINCT e.conversation_id FROM exchanges e WHERE e.status = 'active' AND e.id IN"
        said += " (SELECT rowid FROM exchanges_fts WHERE exchanges_fts MATCH ?)"
        found = {r[0] for r in self._read(said, (fts_query(query),), search=True)}
        needle = query.strip().casefold()  # SQLite's lower() folds ASCII only
        return [r for r in self._read(listing, (owner,)) if r["id"] in found or needle in r["title"].casefold()][:limit]

    def listed(self, cid: str) -> sqlite3.Row | None:
        """One conversation (a full id) as ``owned`` lists it."""
        rows = self._read("SELECT id, title, model, updated FROM conversations WHERE id = ?", (cid,))
        return rows[0] if rows else None

    def conversation_ids(self) -> set[str]:
        return {r[0] for r in self._read("SELECT id FROM conversations")}

    def owner_and_settings(self, cid: str) -> tuple[str | None, dict[str, Any]] | None:
        """Whose conversation ``cid`` (a full id) is, and its web settings; None: no such one."""
        rows = self._read("SELECT owner, settings FROM conversations WHERE id = ?", (cid,))
        if not rows:
            return None
        return rows[0]["owner"], json.loads(rows[0]["settings"] or "{}")

    def counts(self) -> tuple[int, int]:
        conversations = self._read("SELECT count(*) FROM conversations")[0][0]
        exchanges = self._read("SELECT count(*) FROM exchanges")[0][0]
        return conversations, exchanges


_TERM = re.compile(r'"([^"]*)"|(\S+)')


def fts_query(text: str) -> str:
    """Plain search words as an FTS5 query that cannot be a syntax error.

    Every word must appear (AND); each is quoted as an FTS5 string (its own double quotes
    doubled), so ``gpt-4``, ``main.py``, ``C++`` or ``don't`` are words, not operators or
    column names. ``"two words"`` in double quotes must appear as that phrase; a trailing
    ``*`` makes a word a prefix (``sort*``). Raises UsageError when nothing is left."""
    terms = []
    for phrase, word in _TERM.findall(text):
        if phrase.strip():
            terms.append(_fts_string(phrase))
        elif word.endswith("*") and word.strip("*"):
            terms.append(_fts_string(word.rstrip("*")) + "*")
        elif word:
            terms.append(_fts_string(word))
    if not terms:
        raise UsageError(f"nothing to search for in {text!r}")
    return " AND ".join(terms)


def _fts_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _touch(
    db: sqlite3.Connection, cid: str, new: bool, first_prompt: str, model: str, system: str | None, now: float
) -> None:
    """Start the conversation, or note that it was used; a conversation deleted meanwhile
    (``logs rm`` in another terminal) is an error, never silently brought back."""
    if new:
        db.execute(
            "INSERT INTO conversations (id, title, model, system, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (cid, _title(first_prompt), model, system, now, now),
        )
    elif not db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, cid)).rowcount:
        raise LogError(f"conversation {cid} is no longer in the log")


def _insert(db: sqlite3.Connection, **values: Any) -> int:
    columns = ", ".join(values)
    marks = ", ".join("?" * len(values))
    row_id = db.execute(f"INSERT INTO exchanges ({columns}) VALUES ({marks})", tuple(values.values())).lastrowid
    assert row_id is not None  # an INSERT always sets it
    return row_id


def _attach(db: sqlite3.Connection, cid: str, attachments: Sequence[Attachment], now: float) -> None:
    if not attachments:
        return
    after = db.execute("SELECT max(id) FROM exchanges WHERE conversation_id = ?", (cid,)).fetchone()[0]
    db.executemany(
        "INSERT INTO attachments (conversation_id, after_exchange, created, name, sha256, mode, text)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(cid, after, now, a.name, a.sha256, a.mode, a.text) for a in attachments],
    )


def _clear(db: sqlite3.Connection, cid: str) -> int:
    return db.execute(
        "UPDATE exchanges SET status = 'cleared' WHERE conversation_id = ? AND status = 'active'", (cid,)
    ).rowcount


def _pairs(messages: Sequence[Message]) -> list[tuple[str, str, str]]:
    """Transcript messages as (prompt, response, finish_reason) exchanges. finish_reason is
    'imported' or 'cancelled' for an answered question, 'unanswered' for a question with
    no answer after it, 'unprompted' for an answer with no question before it."""
    out: list[tuple[str, str, str]] = []
    question: str | None = None
    for m in messages:
        if m.role == "user":
            if question is not None:
                out.append((question, "", "unanswered"))
            question = m.content
        elif m.role == "assistant":
            if question is None:
                out.append(("", m.content, "unprompted"))
            else:
                out.append((question, m.content, "cancelled" if m.interrupted else "imported"))
            question = None
        else:
            raise ValueError(f"a transcript holds user and assistant messages, not {m.role!r}")
    if question is not None:
        out.append((question, "", "unanswered"))
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
        row["status"],
        row["system"],
        bool(row["imported"]),
        sources=tuple(json.loads(row["sources"])) if row["sources"] else (),
    )


def log_path(data_dir: Path) -> Path:
    return data_dir / "logs.db"


def export_markdown(conv: StoredConversation, include_hidden: bool = False) -> str:
    """The conversation as chat shows it; with ``include_hidden``, every exchange, the
    hidden ones marked with their status. A system prompt changed midway is shown where it changed."""
    from localassist.conversation.transcript import CUT_SHORT, Block, markdown

    facts = [
        f"conversation: `{conv.id}`",
        f"model: {conv.model}",
        f"started: {time.strftime('%Y-%m-%d %H:%M', time.localtime(conv.created))}",
    ]
    shown = conv.shown(include_hidden)
    system = shown[0].system if shown else conv.system
    blocks = [Block("system", system)] if system else []
    pending = list(conv.attachments)
    for ex in shown:
        while pending and (pending[0].after_exchange or 0) < ex.id:  # attached before this exchange
            blocks.append(_attachment_block(pending.pop(0)))
        if ex.system != system:
            system = ex.system
            blocks.append(Block("system", system or ""))
        mark = None if ex.status == "active" else ex.status
        if ex.finish_reason != "unprompted":
            blocks.append(Block("user", ex.prompt, mark))
        for call in ex.tool_calls:
            blocks.append(Block("tool", _tool_call_text(call), mark))
        if ex.finish_reason != "unanswered":
            cut = " *(interrupted)*" if ex.finish_reason in CUT_SHORT else ""
            blocks.append(Block("assistant", ex.response.rstrip() + cut, mark))
    blocks += [_attachment_block(a) for a in pending]
    return markdown(conv.title, facts, blocks)


def _attachment_block(attachment: Attachment) -> Block:
    return Block("attachment", attachment.text, f"{attachment.name} ({attachment.mode}, sha256 {attachment.sha256})")


def _tool_call_text(call: StoredToolCall) -> str:
    seconds = f", {call.seconds:.2f} s" if call.seconds is not None else ""
    status = ", error" if call.is_error else ""
    head = f"`{call.name}` {call.arguments} (step {call.step}, approval: {call.approval}{status}{seconds})"
    return head + "\n\n" + "\n".join(f"    {line}" for line in call.result.splitlines() or [""])


def export_json(conv: StoredConversation, include_hidden: bool = False) -> str:
    """The conversation's active exchanges (every one with ``include_hidden``), each with its status."""
    return json.dumps(
        {
            "id": conv.id,
            "title": conv.title,
            "model": conv.model,
            "system": conv.system,
            "created": conv.created,
            "exchanges": [ex.as_dict() for ex in conv.shown(include_hidden)],
            "attachments": [a.as_dict() for a in conv.attachments],
        },
        indent=2,
        ensure_ascii=False,
    )
