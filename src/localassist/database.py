"""The one way localassist keeps a SQLite database: the log, each folder index, the summary
notes and the server's keys and calls all open theirs here.

``open_database`` makes the file 0600 in a 0700 folder before SQLite opens it (through
``files.connect_private``, which never opens and closes a descriptor of a live database,
so no connection loses its locks), sets the store's pragmas and busy timeout, and brings
the schema up to date with the store's named migrations. Each migration is a whole SQL
script, applied once, in order, in its own ``BEGIN IMMEDIATE`` transaction together with
its row in ``_migrations`` (name, time applied): a second process opening the same file
waits for the lock and then finds it applied; a migration that fails leaves no trace.
A database written before its store recorded migrations is adopted: ``adopt`` says how
many of the first migrations it already holds, and those are recorded without being run.
Names recorded that a store does not know (a newer release's) are left alone.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from localassist.files import connect_private

# (name, SQL script): names sort in the order they are applied ("001_...", "002_...")
Migration = tuple[str, str]

TABLE = "_migrations"


def open_database(
    path: Path,
    migrations: Sequence[Migration],
    *,
    pragmas: Sequence[str] = ("journal_mode=WAL",),
    timeout: float = 30.0,
    check_same_thread: bool = True,
    adopt: Callable[[sqlite3.Connection], int] | None = None,
) -> sqlite3.Connection:
    """Open (creating it private) and migrate the database at ``path``, in autocommit mode
    (``isolation_level=None``: transactions are explicit) with ``sqlite3.Row`` rows.

    ``pragmas`` are run in order (``"journal_mode=WAL"``, ``"secure_delete=ON"``, ...);
    ``timeout`` is how long a statement waits for another writer. ``adopt``, for a file
    that has no migrations table yet, returns how many of ``migrations`` it already holds
    (under the write lock; whatever it raises is raised here). Raises OSError and
    sqlite3.Error for the store to word; the connection is closed then."""
    db = connect_private(path, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread)
    try:
        db.row_factory = sqlite3.Row
        for pragma in pragmas:
            db.execute(f"PRAGMA {pragma}")
        migrate(db, migrations, adopt=adopt)
    except BaseException:
        db.close()
        raise
    return db


def migrate(
    db: sqlite3.Connection,
    migrations: Sequence[Migration],
    *,
    adopt: Callable[[sqlite3.Connection], int] | None = None,
) -> None:
    """Apply the ``migrations`` not recorded in ``db`` yet, each once, in order (see the
    module's docstring). ``db`` must be in autocommit mode with no transaction open."""
    names = [name for name, _ in migrations]
    if len(set(names)) != len(names):
        raise ValueError(f"migration names repeat: {names}")
    done = applied(db)  # read without the write lock: a database up to date takes none
    if done is None:
        with immediate(db):
            if applied(db) is None:  # another process may have just made the table
                held = adopt(db) if adopt else 0
                db.execute(f"CREATE TABLE {TABLE} (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
                db.executemany(f"INSERT INTO {TABLE} VALUES (?, ?)", [(name, time.time()) for name in names[:held]])
        done = applied(db) or set()
    for name, script in migrations:
        if name in done:
            continue
        with immediate(db):
            # checked under the write lock: another process may have just applied it
            if db.execute(f"SELECT 1 FROM {TABLE} WHERE name = ?", (name,)).fetchone():
                continue
            for statement in statements(script):
                db.execute(statement)
            db.execute(f"INSERT INTO {TABLE} VALUES (?, ?)", (name, time.time()))


def applied(db: sqlite3.Connection) -> set[str] | None:
    """The names of the migrations recorded in ``db``; None when it has no migrations table."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)).fetchone():
        return None
    return {row[0] for row in db.execute(f"SELECT name FROM {TABLE}")}


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (the write lock from the start, so two writers never
    deadlock on an upgrade), rolled back on any exception, Ctrl-C included. A statement
    that SQLite rolled back itself (a full disk) leaves nothing to roll back: its own
    error is the one raised."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def statements(script: str) -> list[str]:
    """The statements of an SQL script, each whole, to run one by one inside a transaction
    (``executescript`` would commit the transaction first). A script is cut only after a
    ``;`` that ends a complete statement by SQLite's own reckoning
    (``sqlite3.complete_statement``), so a ``;`` inside a trigger's ``BEGIN … END``, a string
    or a comment stays where it is. Text after the last ``;`` is a statement of its own:
    an unfinished one fails when it runs, never silently dropped."""
    out: list[str] = []
    start = 0
    end = script.find(";")
    while end != -1:
        piece = script[start : end + 1]
        if sqlite3.complete_statement(piece):
            out.append(piece.strip())
            start = end + 1
        end = script.find(";", end + 1)
    rest = script[start:].strip()
    if rest:
        out.append(rest)
    return out
