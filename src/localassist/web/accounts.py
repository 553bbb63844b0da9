"""The web chat's accounts: users with scrypt-hashed passwords, server-side sessions and a
sign-in limiter. ``localassist users`` manages the users; ``serve`` signs them in.

Everything lives in ``<data dir>/server.db`` (``localassist.server.db``), tables ``users``
and ``sessions`` (migration ``002_users_and_sessions``):

- A password is stored as ``scrypt$<log2 N>$<r>$<p>$<salt b64>$<key b64>`` (stdlib
  ``hashlib.scrypt``, no dependency; OWASP's minimum N=2^17, r=8, p=1: 128 MiB and about
  0.7 s a hash). The parameters are read back from the string, so raising them later
  leaves the old hashes valid. A name that is not a user is checked against a dummy hash
  of the same cost, so how long a sign-in takes does not tell which names exist.
- A session is a random token in the browser's cookie; the table keeps only its SHA-256,
  with the CSRF token, when it started and was last seen. It ends at sign-out, after 12 h
  unused or 7 days in all, and when its user's password changes or the user is removed.
- ``SignInLimiter`` counts failed sign-ins per name and per client address in memory.

Nothing here prints or imports typer/rich; errors are ``localassist.errors`` classes.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
import unicodedata
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localassist.database import immediate
from localassist.errors import ExitCode, InvalidSettingError, LocalAssistError, UsageError
from localassist.server.db import ServerDBError, connect

# --- names and passwords

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")  # as API key names (server/keys.py)
LOCAL_USER = "local"  # what the page shows when no sign-in is needed: never a real user's name
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


class UserExistsError(UsageError):
    """``users add`` was given a name that is taken."""


class UserNotFoundError(LocalAssistError):
    """No user of that name (``users rm``, ``users passwd``)."""

    exit_code = ExitCode.NOT_FOUND


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"a user name is 1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit (got {name!r})"
        )
    if name.lower() == LOCAL_USER:
        raise UsageError(f"{name!r} is reserved (the page shows it when no sign-in is needed): pick another name")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"a password is at least {MIN_PASSWORD} characters (got {len(password)})")
    if len(password) > MAX_PASSWORD:
        raise UsageError(f"a password is at most {MAX_PASSWORD} characters (got {len(password)})")
    return password


# --- scrypt

LOG2N = 17
R = 8
P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MAXMEM = 2**28  # 256 MiB: OpenSSL's default (32 MiB) refuses N=2^17, r=8 (128 MiB)
# Exists so the test suite runs fast (tests/conftest.py sets 12): every hash made while it is
# set costs 2^LOG2N instead of 2^17. Hashes record their cost, so a user added with it set
# still signs in without it.
ENV_LOG2N = "LOCALASSIST_SCRYPT_LOG2N"
LOG2N_RANGE = (10, 20)
# Bounds on what a stored hash may ask for (the file is ours, but a bad row must fail, not
# allocate gigabytes): room to raise the defaults later.
STORED_LIMITS = {"log2n": (1, 22), "r": (1, 32), "p": (1, 16)}

# Each hash at the default cost takes 128 MiB beside a loaded model: at most two at a time,
# whichever thread (verify_async's workers, the CLI) computes them.
HASH_SLOTS_N = 2
HASH_SLOTS = threading.BoundedSemaphore(HASH_SLOTS_N)
_hash_limiters: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # loop -> CapacityLimiter


def log2n() -> int:
    """The cost of new hashes: 17, or the test suite's ``LOCALASSIST_SCRYPT_LOG2N``."""
    raw = os.environ.get(ENV_LOG2N)
    if raw is None or not raw.strip():
        return LOG2N
    low, high = LOG2N_RANGE
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not low <= value <= high:
        raise InvalidSettingError("scrypt_log2n", raw, f"an integer from {low} to {high}", source="env")
    return value


def _encode(password: str) -> bytes:
    # NFKC: the same password typed on keyboards (or systems) that compose accents
    # differently is the same password (NIST SP 800-63B 5.1.1.2)
    return unicodedata.normalize("NFKC", password).encode("utf-8", "surrogatepass")


def _scrypt(password: str, salt: bytes, log2n: int, r: int, p: int, length: int) -> bytes:
    n = 1 << log2n
    maxmem = max(MAXMEM, 128 * r * (n + p + 2) + 4096)  # what OpenSSL needs, for raised costs
    with HASH_SLOTS:
        return hashlib.scrypt(_encode(password), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


def hash_password(password: str) -> str:
    """``scrypt$<log2 N>$<r>$<p>$<salt b64>$<key b64>`` for ``password`` (not checked: see
    ``check_password``), at the current cost."""
    cost = log2n()
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, cost, R, P, KEY_BYTES)
    return "$".join(["scrypt", str(cost), str(R), str(P), _b64(salt), _b64(key)])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    """(log2 N, r, p, salt, key) of a stored hash; None if it is not one this code can check."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        log2n_, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except ValueError:
        return None
    for value, (low, high) in zip((log2n_, r, p), STORED_LIMITS.values(), strict=True):
        if not low <= value <= high:
            return None
    if not salt or not key:
        return None
    return log2n_, r, p, salt, key


def check_hash(password: str, stored: str) -> bool:
    """``password`` matches ``stored`` (compared in constant time); False for a malformed hash."""
    parsed = parse_hash(stored)
    if parsed is None or len(password) > MAX_PASSWORD:
        return False
    cost, r, p, salt, key = parsed
    return hmac.compare_digest(_scrypt(password, salt, cost, r, p, len(key)), key)


_dummy: dict[int, str] = {}
_dummy_lock = threading.Lock()


def dummy_hash() -> str:
    """A hash no password is known to match, at the current cost: what an unknown name is
    checked against, so it takes as long as a real one. Made once per cost."""
    cost = log2n()
    with _dummy_lock:
        if cost not in _dummy:
            _dummy[cost] = hash_password(secrets.token_urlsafe(32))
        return _dummy[cost]


# --- the store

IDLE_S = 12 * 3600.0  # a session unused this long has ended
ABSOLUTE_S = 7 * 86400.0  # and any session this old
SEEN_EVERY_S = 60.0  # last_seen is written at most once a minute per session
MAX_TOKEN = 256  # longer cookies are not ours: not even hashed
MAX_CLIENT = 200
MAX_USER_AGENT = 512


@dataclass(frozen=True)
class UserRecord:
    name: str
    created: float
    updated: float
    last_sign_in: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    created: float
    last_seen: float


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class Accounts:
    """The users and sessions in ``<data dir>/server.db``. ``clock``: seconds since the epoch
    (tests move it). One connection, usable from any thread (calls are serialised)."""

    def __init__(self, data_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.db = connect(data_dir)
        self.clock = clock
        self._lock = threading.RLock()

    def close(self) -> None:
        self.db.close()

    def _write(self, *statements: tuple[str, tuple[Any, ...]]) -> int:
        """Run ``statements`` (SQL, args) in one transaction; how many rows the first changed."""
        try:
            with self._lock, immediate(self.db):
                changed = -1
                for sql, args in statements:
                    count = self.db.execute(sql, args).rowcount
                    changed = count if changed < 0 else changed
                return changed
        except sqlite3.DatabaseError as exc:
            raise ServerDBError(f"cannot update the users and sessions: {exc}") from None

    def _hash_of(self, name: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT hash FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row["hash"])

    # users

    def exists(self, name: str) -> bool:
        return self._hash_of(name) is not None

    def require(self, name: str) -> None:
        """UserNotFoundError unless ``name`` is a user (asked before prompting for a password)."""
        if not self.exists(name):
            raise UserNotFoundError(f"no user named {name!r} (`localassist users list` shows them)")

    def check_new_name(self, name: str) -> None:
        """UsageError unless ``name`` may be added: well formed, not reserved, not taken."""
        check_name(name)
        if self.exists(name):
            raise _exists(name)

    def add(self, name: str, password: str) -> UserRecord:
        """A new user; UserExistsError if the name is taken, UsageError for a bad name or password."""
        check_name(name)
        stored = hash_password(check_password(password))
        now = self.clock()
        try:
            with self._lock:
                self.db.execute(
                    "INSERT INTO users (name, hash, created, updated) VALUES (?, ?, ?, ?)", (name, stored, now, now)
                )
        except sqlite3.IntegrityError:
            raise _exists(name) from None
        except sqlite3.DatabaseError as exc:
            raise ServerDBError(f"cannot store the user: {exc}") from None
        return UserRecord(name, now, now)

    def set_password(self, name: str, password: str) -> int:
        """Change ``name``'s password and end all their sessions (how many are returned).
        UserNotFoundError if there is no such user."""
        stored = hash_password(check_password(password))
        with self._lock:
            self.require(name)
            # one transaction: a cookie never outlives the password it was signed in with
            return self._write(
                ("DELETE FROM sessions WHERE user = ?", (name,)),
                ("UPDATE users SET hash = ?, updated = ? WHERE name = ?", (stored, self.clock(), name)),
            )

    def remove(self, name: str) -> int:
        """Remove ``name`` and end all their sessions (how many are returned).
        UserNotFoundError if there is no such user. Their web conversations are the log's
        (``localassist.web.conversations.delete_owned``)."""
        with self._lock:
            self.require(name)
            return self._write(
                ("DELETE FROM sessions WHERE user = ?", (name,)), ("DELETE FROM users WHERE name = ?", (name,))
            )

    def count(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def verify(self, name: str, password: str) -> bool:
        """``password`` is ``name``'s. An unknown name costs a hash too (against ``dummy_hash``)."""
        return _verify(password, self._hash_of(name))

    async def verify_async(self, name: str, password: str) -> bool:
        """``verify`` with the hash in a worker thread, so the server's event loop keeps
        streaming while it runs (at most two hashes at once: ``HASH_SLOTS``)."""
        import asyncio

        import anyio
        import anyio.to_thread

        loop = asyncio.get_running_loop()
        if loop not in _hash_limiters:  # one per event loop (the server has one)
            _hash_limiters[loop] = anyio.CapacityLimiter(HASH_SLOTS_N)
        stored = await anyio.to_thread.run_sync(self._hash_of, name)
        # its own two threads: sign-ins waiting for a slot never hold the threads that
        # every other request's work runs on
        return await anyio.to_thread.run_sync(_verify, password, stored, limiter=_hash_limiters[loop])

    # sessions

    def start_session(self, user: str, client: str | None = None, user_agent: str | None = None) -> tuple[str, str]:
        """A new session for ``user`` (signed in just now): (token for the cookie, CSRF token).
        Only the token's hash is stored. Records the user's last sign-in."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock()
        self._write(
            (
                "INSERT INTO sessions (token_hash, user, csrf, created, last_seen, client, user_agent)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    token_hash(token),
                    user,
                    csrf,
                    now,
                    now,
                    None if client is None else client[:MAX_CLIENT],
                    None if user_agent is None else user_agent[:MAX_USER_AGENT],
                ),
            ),
            ("UPDATE users SET last_sign_in = ? WHERE name = ?", (now, user)),
        )
        return token, csrf

    def session(self, token: str | None) -> Session | None:
        """The live session of a cookie's token, or None (unknown, or ended: an expired one is
        deleted here). Notes it as seen (written at most once a minute)."""
        if not token or len(token) > MAX_TOKEN:
            return None
        key = token_hash(token)
        now = self.clock()
        with self._lock:
            row = self.db.execute(
                "SELECT user, csrf, created, last_seen FROM sessions WHERE token_hash = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            if now - row["last_seen"] > IDLE_S or now - row["created"] > ABSOLUTE_S:
                self._write(("DELETE FROM sessions WHERE token_hash = ?", (key,)))
                return None
            last_seen = row["last_seen"]
            if now - last_seen >= SEEN_EVERY_S:
                self._write(("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", (now, key)))
                last_seen = now
        return Session(row["user"], row["csrf"], row["created"], last_seen)

    def end_session(self, token: str | None) -> bool:
        """Sign-out: the session is gone (False if there was none)."""
        if not token or len(token) > MAX_TOKEN:
            return False
        return self._write(("DELETE FROM sessions WHERE token_hash = ?", (token_hash(token),))) > 0

    def end_sessions(self, user: str) -> int:
        """End every session of ``user``; how many there were."""
        return self._write(("DELETE FROM sessions WHERE user = ?", (user,)))

    def prune_sessions(self) -> int:
        """Delete every ended session (e.g. when the server starts); how many."""
        now = self.clock()
        return self._write(
            ("DELETE FROM sessions WHERE last_seen < ? OR created < ?", (now - IDLE_S, now - ABSOLUTE_S))
        )

    def list(self) -> builtins.list[UserRecord]:
        """Every user, oldest first (never the hash)."""
        with self._lock:
            rows = self.db.execute("SELECT name, created, updated, last_sign_in FROM users ORDER BY id").fetchall()
        return [UserRecord(r["name"], r["created"], r["updated"], r["last_sign_in"]) for r in rows]


def _verify(password: str, stored: str | None) -> bool:
    # the dummy is made (once per cost) here, in the worker thread when called from verify_async
    ok = check_hash(password, stored if stored is not None else dummy_hash())
    return ok and stored is not None


def _exists(name: str) -> UserExistsError:
    return UserExistsError(
        f"a user named {name!r} exists already (`localassist users passwd {name}` changes the password)"
    )


# --- sign-in limiter

WINDOW_S = 15 * 60.0
MAX_USER_FAILURES = 5
MAX_ADDRESS_FAILURES = 20
MAX_ENTRIES = 10_000
MAX_KEY = 128  # a name longer than any user's is still counted, under its first characters


class SignInLimiter:
    """Failed sign-ins per name and per client address over a sliding 15-minute window, in
    memory. After 5 failures for one name, or 20 from one address, ``check`` says how long
    to wait: until enough of them leave the window. Thread-safe; at most ``max_entries``
    names and addresses are tracked (the least recently failed are forgotten first), so a
    flood of made-up names cannot grow it without bound."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = WINDOW_S,
        max_user_failures: int = MAX_USER_FAILURES,
        max_address_failures: int = MAX_ADDRESS_FAILURES,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.clock = clock
        self.window_s = window_s
        self.limits = {"user": max_user_failures, "address": max_address_failures}
        self.max_entries = max_entries
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _keys(self, user: str | None, address: str | None) -> builtins.list[tuple[str, str]]:
        keys = []
        if user:
            keys.append(("user", user[:MAX_KEY].casefold()))
        if address:
            keys.append(("address", address[:MAX_KEY]))
        return keys

    def _live(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _sweep(self, now: float) -> None:
        # entries are in the order of their last failure: forget those wholly out of the window
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times and times[-1] > now - self.window_s:
                break
            del self._failures[key]

    def check(self, user: str | None, address: str | None) -> float | None:
        """Seconds to wait before ``user`` may try again from ``address``; None: try now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            self._sweep(now)
            for key in self._keys(user, address):
                times = self._live(key, now)
                limit = self.limits[key[0]]
                if times is not None and len(times) >= limit:
                    # free again once the count drops below the limit
                    wait = max(wait, times[len(times) - limit] + self.window_s - now)
        return wait if wait > 0 else None

    def failed(self, user: str | None, address: str | None) -> None:
        now = self.clock()
        with self._lock:
            self._sweep(now)
            for key in self._keys(user, address):
                times = self._live(key, now)
                if times is None:
                    times = self._failures[key] = deque()
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_entries:
                self._failures.popitem(last=False)

    def succeeded(self, user: str | None, address: str | None) -> None:
        """A right password: ``user``'s failures are forgotten (the address's stay)."""
        with self._lock:
            for key in self._keys(user, None):
                self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)
