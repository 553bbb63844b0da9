"""API keys: named, stored as SHA-256 hashes (never the key), checked in constant time.

``localassist keys create NAME`` prints a new key once; the server database keeps its
hash, a short hint (``la-AbC…``), when it was created, last used and revoked, and
optional per-key limits. For containers, keys can also come from the environment
(``LOCALASSIST_API_KEYS``) or a file (``--key-file``, e.g. a Docker secret): one key per
line or comma-separated, ``name:key`` or a bare key, ``#`` lines are comments. Those
keys are hashed when the server starts and live only in its memory.

A key is 32 random bytes, so an unsalted SHA-256 is enough: there is no dictionary to
try. The lookup hashes what the client sent and compares it with every stored hash
using ``hmac.compare_digest``, never stopping early.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localassist.errors import UsageError
from localassist.server.db import ServerDBError, connect

KEY_PREFIX = "la-"
MIN_KEY_LENGTH = 16
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
ENV_KEYS = "LOCALASSIST_API_KEYS"
TOUCH_EVERY_S = 60.0  # last-use time is written at most once a minute per key


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def hint(key: str) -> str:
    return key[: len(KEY_PREFIX) + 4] + "…"


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"a key name is 1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit (got {name!r})"
        )
    return name


@dataclass(frozen=True)
class KeyRecord:
    name: str
    hint: str
    created: float | None = None
    last_used: float | None = None
    revoked: float | None = None
    requests_per_minute: int | None = None  # None: the serve_requests_per_minute setting
    tokens_per_minute: int | None = None
    source: str = "store"  # store | env | file

    @property
    def active(self) -> bool:
        return self.revoked is None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


ANONYMOUS = KeyRecord("anonymous", "", source="open")


class KeyStore:
    """The keys in ``<data dir>/server.db``."""

    def __init__(self, data_dir: Path) -> None:
        self.db = connect(data_dir)

    def close(self) -> None:
        self.db.close()

    def create(self, name: str, requests_per_minute: int | None = None, tokens_per_minute: int | None = None) -> str:
        """A new key named ``name``; returns the key itself (shown once, never stored)."""
        check_name(name)
        key = new_key()
        try:
            self.db.execute(
                "INSERT INTO api_keys (name, hash, hint, created, requests_per_minute, tokens_per_minute)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, key_hash(key), hint(key), time.time(), requests_per_minute, tokens_per_minute),
            )
        except sqlite3.IntegrityError:
            raise UsageError(
                f"a key named {name!r} exists already; revoke it first (`localassist keys revoke {name}`)"
            ) from None
        except sqlite3.DatabaseError as exc:
            raise ServerDBError(f"cannot store the key: {exc}") from None
        return key

    def records(self, include_revoked: bool = True) -> list[KeyRecord]:
        sql = "SELECT * FROM api_keys" + ("" if include_revoked else " WHERE revoked IS NULL") + " ORDER BY id"
        return [_record(row) for row in self.db.execute(sql)]

    def hashes(self) -> list[tuple[str, KeyRecord]]:
        return [(row["hash"], _record(row)) for row in self.db.execute("SELECT * FROM api_keys ORDER BY id")]

    def ever_had_keys(self) -> bool:
        """A key was created here at some time, revoked or not."""
        return self.db.execute("SELECT EXISTS (SELECT 1 FROM api_keys)").fetchone()[0] == 1

    def revoke(self, name: str) -> bool:
        cur = self.db.execute(
            "UPDATE api_keys SET revoked = ? WHERE name = ? AND revoked IS NULL", (time.time(), check_name(name))
        )
        return cur.rowcount > 0

    def touch(self, names: Iterable[str], when: float) -> None:
        self.db.executemany(
            "UPDATE api_keys SET last_used = ? WHERE name = ? AND revoked IS NULL", [(when, n) for n in names]
        )

    def data_version(self) -> int:
        """Changes when another connection (``keys create``/``revoke``) commits."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])


def _record(row: sqlite3.Row) -> KeyRecord:
    return KeyRecord(
        name=row["name"],
        hint=row["hint"],
        created=row["created"],
        last_used=row["last_used"],
        revoked=row["revoked"],
        requests_per_minute=row["requests_per_minute"],
        tokens_per_minute=row["tokens_per_minute"],
    )


def parse_key_lines(text: str, source: str) -> list[tuple[str, str]]:
    """``name:key`` or a bare key, one per line or comma-separated; ``#`` lines are comments.
    Bare keys are named ``<source>-1``, ``<source>-2`` ... in order."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        for item in line.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, key = item.partition(":")
            if not sep:
                name, key = f"{source}-{len(out) + 1}", item
            name, key = check_name(name.strip()), key.strip()
            if len(key) < MIN_KEY_LENGTH:
                raise UsageError(
                    f"the {source} key {name!r} is shorter than {MIN_KEY_LENGTH} characters: "
                    "use `localassist keys create` or a long random string"
                )
            out.append((name, key))
    return out


class Unauthorized(Exception):
    def __init__(self, reason: str) -> None:  # missing | invalid | revoked
        super().__init__(reason)
        self.reason = reason


class Keyring:
    """The keys the server accepts: the store's (reloaded when another process changes
    them, so `keys revoke` takes effect within a second) plus env/file keys.

    A ring is open (no key needed) only if it was started open, and only until it sees an
    active key: from then on every request needs one, and revoking the last key leaves a
    ring that refuses everyone, never an open one."""

    def __init__(
        self, store: KeyStore | None, extra: Iterable[tuple[str, str, str]] = (), open_access: bool = False
    ) -> None:
        """``extra``: (name, key, source) from the environment or a key file. ``open_access``:
        serve without keys while there are none (decided at start: see ``run.open_access``)."""
        self.store = store
        self._open = open_access
        self._extra = [(key_hash(key), KeyRecord(name, hint(key), source=source)) for name, key, source in extra]
        self._entries: list[tuple[bytes, KeyRecord]] = []
        self._version: int | None = None
        self._checked = 0.0
        self._touched: dict[str, float] = {}
        self._touch_pending: set[str] = set()
        self.reload()

    def reload(self) -> None:
        stored = self.store.hashes() if self.store is not None else []
        self._entries = [(bytes.fromhex(h), record) for h, record in [*stored, *self._extra]]
        if self.active:
            self._open = False  # for good: a ring that has had a key never opens again
        if self.store is not None:
            self._version = self.store.data_version()

    def _refresh(self) -> None:
        now = time.monotonic()
        if self.store is None or now - self._checked < 1.0:
            return
        self._checked = now
        if self.store.data_version() != self._version:
            self.reload()

    @property
    def active(self) -> bool:
        """At least one key is active."""
        return any(record.active for _, record in self._entries)

    @property
    def open(self) -> bool:
        """Requests need no key."""
        return self._open

    def check(self, presented: str | None) -> KeyRecord:
        self._refresh()
        if self._open:
            return ANONYMOUS
        # With every key revoked nothing below matches an active key: locked, never open.
        if not presented:
            raise Unauthorized("missing")
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: KeyRecord | None = None
        for stored, record in self._entries:  # every entry, no early exit
            if hmac.compare_digest(stored, digest):
                found = record
        if found is None:
            raise Unauthorized("invalid")
        if not found.active:
            raise Unauthorized("revoked")
        if found.source == "store" and time.time() - self._touched.get(found.name, 0.0) >= TOUCH_EVERY_S:
            self._touched[found.name] = time.time()
            self._touch_pending.add(found.name)
        return found

    def take_touches(self) -> set[str]:
        """Key names used since the last call whose last-use time is due to be written."""
        pending, self._touch_pending = self._touch_pending, set()
        return pending
