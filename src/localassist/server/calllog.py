"""The call log: one row per HTTP request to the API, in ``<data dir>/server.db``.

It records the key's name (never the key), model, endpoint, status and error code,
token counts, queue wait, time to first token and total time; the prompt and the
answer only when content logging is on. Rows are written by one background thread,
so a slow disk never holds up the event loop, and each row is committed (fsynced: the
connection is ``synchronous=FULL``) before its call's response ends: ``record`` returns
a future the response waits on, so neither a kill -9 nor a power cut loses a call a
client has seen answered. Rows that arrive together share one transaction (one fsync);
``close()`` writes what is left.
``recent`` reads newest first through the primary key (or an index per filter), so
listing stays fast however many rows there are.
"""

from __future__ import annotations

import queue
import sqlite3
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import Future, InvalidStateError
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from localassist.server.db import ServerDBError, connect


@dataclass
class Call:
    created: float
    key_name: str
    endpoint: str
    status: int
    model: str | None = None
    error_code: str | None = None
    stream: bool = False
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    queue_s: float | None = None
    ttft_s: float | None = None
    total_s: float | None = None
    client: str | None = None
    prompt: str | None = None
    answer: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = [f.name for f in fields(Call)]
_INSERT = f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


class CallLog:
    def __init__(self, data_dir: Path) -> None:
        self.db = connect(data_dir)
        self.db.execute("PRAGMA synchronous=FULL")  # an audit log: a committed row survives a power cut
        self._queue: queue.Queue[tuple[Call, Future[None]] | tuple[str, Any] | None] = queue.Queue()
        self.failed: str | None = None
        self._thread = threading.Thread(target=self._run, name="localassist-calllog", daemon=True)
        self._thread.start()

    def record(self, call: Call) -> Future[None]:
        """Queue the row; the future is done once it is committed (or failed to be: the
        warning is printed once, and serving goes on)."""
        done: Future[None] = Future()
        self._queue.put((call, done))
        return done

    def touch_keys(self, names: Iterable[str], when: float) -> None:
        self._queue.put(("touch", (list(names), when)))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        self.db.close()

    def _run(self) -> None:
        """The writer: nothing that happens to one batch (a failed write, a future its
        waiter cancelled) ends it, since every later response waits on it."""
        while True:
            item = self._queue.get()
            batch = [item]
            while True:  # whatever else is waiting goes in the same transaction
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = None in batch
            items = [b for b in batch if b is not None]
            try:
                self._write(items)
            except Exception as exc:  # whatever it is, say it once; serving goes on
                detail = str(exc) if isinstance(exc, sqlite3.Error) else f"{type(exc).__name__}: {exc}"
                if self.failed is None:
                    sys.stderr.write(f"localassist: warning: the call log cannot be written: {detail}\n")
                self.failed = detail
            finally:  # a response never waits for ever on its row
                for _, done in items:
                    if isinstance(done, Future):
                        _resolve(done)
            if stop:
                return

    def _write(self, batch: list[tuple[Call, Future[None]] | tuple[str, Any]]) -> None:
        if not batch:
            return
        db = self.db
        db.execute("BEGIN")
        try:
            for item in batch:
                if isinstance(item[0], Call):
                    db.execute(_INSERT, [getattr(item[0], c) for c in COLUMNS])
                else:
                    names, when = item[1]
                    db.executemany(
                        "UPDATE api_keys SET last_used = ? WHERE name = ? AND revoked IS NULL",
                        [(when, n) for n in names],
                    )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed BEGIN left none: its error is the one to report
                db.execute("ROLLBACK")
            raise


def _resolve(done: Future[None]) -> None:
    """Mark a row's future done, unless its waiter has cancelled it (a client that went
    away, uvicorn's shutdown timeout: ``asyncio.wrap_future`` passes the cancel on), which
    ``set_result`` would answer with InvalidStateError."""
    try:
        if done.set_running_or_notify_cancel():
            done.set_result(None)
    except (RuntimeError, InvalidStateError):  # already finished: nobody waits on it
        pass


def recent(
    data_dir: Path,
    count: int,
    *,
    key: str | None = None,
    model: str | None = None,
    status: int | None = None,
) -> list[Call]:
    """The ``count`` calls written last (optionally of one key, model or status), in order
    of arrival: rows are written when a call ends, so a long stream is written after
    calls that came later."""
    where, args = [], []
    for column, value in (("key_name", key), ("model", model), ("status", status)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM calls"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY id DESC LIMIT ?"
    )
    db = connect(data_dir)
    try:
        rows = db.execute(sql, [*args, count]).fetchall()
    except sqlite3.Error as exc:
        raise ServerDBError(f"cannot read the call log: {exc}") from None
    finally:
        db.close()
    return sorted((Call(**{c: row[c] for c in COLUMNS}) for row in reversed(rows)), key=lambda call: call.created)
