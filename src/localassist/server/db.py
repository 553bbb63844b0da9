"""The server's SQLite file, ``<data dir>/server.db``: API keys (hashes only), the call log and
the web chat's users and sessions (hashes only).

Kept apart from the conversation log (``logs.db``): a call log of a shared server grows
with every request of every client and has its own retention, and a key store must not
be deleted by ``logs rm --all``. Opened like every store (``localassist.database``): WAL
mode, a busy timeout and named migrations; the file and its sidecars are 0600 in a 0700 directory.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from localassist.database import open_database
from localassist.errors import LocalAssistError

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_api_keys_and_calls",
        """
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            hint TEXT NOT NULL,
            created REAL NOT NULL,
            last_used REAL,
            revoked REAL,
            requests_per_minute INTEGER,
            tokens_per_minute INTEGER
        );
        CREATE UNIQUE INDEX api_keys_active_name ON api_keys(name) WHERE revoked IS NULL;
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created REAL NOT NULL,
            key_name TEXT NOT NULL,
            model TEXT,
            endpoint TEXT NOT NULL,
            status INTEGER NOT NULL,
            error_code TEXT,
            stream INTEGER NOT NULL DEFAULT 0,
            finish_reason TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            queue_s REAL,
            ttft_s REAL,
            total_s REAL,
            client TEXT,
            prompt TEXT,
            answer TEXT
        );
        CREATE INDEX calls_by_key ON calls(key_name, id);
        CREATE INDEX calls_by_model ON calls(model, id);
        CREATE INDEX calls_by_status ON calls(status, id);
        """,
    ),
    (
        # the web chat's accounts (localassist.web.accounts): scrypt hashes, never a password;
        # sessions keyed by the SHA-256 of the cookie's token, never the token
        "002_users_and_sessions",
        """
        CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            hash TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            last_sign_in REAL
        );
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            csrf TEXT NOT NULL,
            created REAL NOT NULL,
            last_seen REAL NOT NULL,
            client TEXT,
            user_agent TEXT
        );
        CREATE INDEX sessions_by_user ON sessions(user);
        """,
    ),
]


class ServerDBError(LocalAssistError):
    """The server database cannot be read or written (corrupt, locked, unwritable)."""


def db_path(data_dir: Path) -> Path:
    return data_dir / "server.db"


def connect(data_dir: Path) -> sqlite3.Connection:
    """Open (creating and migrating) the server database; 0600, WAL, 30 s busy timeout."""
    path = db_path(data_dir)
    try:
        # synchronous=NORMAL: in WAL mode, durable at checkpoints and never corrupt
        pragmas = ("journal_mode=WAL", "synchronous=NORMAL")
        return open_database(path, MIGRATIONS, pragmas=pragmas, check_same_thread=False)
    except sqlite3.DatabaseError as exc:
        raise ServerDBError(f"server database {path}: {exc}") from None
    except OSError as exc:
        raise ServerDBError(f"cannot open the server database {path}: {exc.strerror or exc}") from None
