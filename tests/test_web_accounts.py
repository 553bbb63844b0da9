"""The web chat's accounts (localassist.web.accounts) on real server.db files: scrypt hashes
that record their cost, unknown names checked against a dummy hash, sessions stored only as
token hashes that end on sign-out, password change, removal, 12 h idle and 7 days in all,
and the sign-in limiter. The suite hashes at 2^12 (conftest's LOCALASSIST_SCRYPT_LOG2N)."""

from __future__ import annotations

import base64
import stat
import threading
import time

import anyio
import pytest

from localassist.errors import ExitCode, InvalidSettingError, UsageError, exit_code_for
from localassist.web import accounts as acc
from localassist.web.accounts import Accounts, SignInLimiter, UserExistsError, UserNotFoundError


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def accounts(tmp_path, clock):
    store = Accounts(tmp_path / "data", clock=clock)
    yield store
    store.close()


def raw_db(tmp_path) -> bytes:
    return b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir() if p.name.startswith("server.db"))


# --- hashes


def test_a_hash_records_scrypt_and_its_cost_salt_and_key():
    stored = acc.hash_password("correct horse")
    name, log2n, r, p, salt, key = stored.split("$")
    assert (name, log2n, r, p) == ("scrypt", "12", "8", "1")  # 12: the suite's override
    assert len(base64.b64decode(salt, validate=True)) == 16
    assert len(base64.b64decode(key, validate=True)) == 32
    assert acc.hash_password("correct horse") != stored  # a new salt every time
    assert acc.check_hash("correct horse", stored)
    assert not acc.check_hash("correct horsE", stored)


def test_the_default_cost_is_owasps_minimum(monkeypatch):
    monkeypatch.delenv(acc.ENV_LOG2N)
    assert acc.log2n() == 17 and (acc.R, acc.P) == (8, 1)


def test_the_cost_override_is_checked(monkeypatch):
    for bad in ("9", "21", "x"):
        monkeypatch.setenv(acc.ENV_LOG2N, bad)
        with pytest.raises(InvalidSettingError, match="LOCALASSIST_SCRYPT_LOG2N must be an integer from 10 to 20"):
            acc.log2n()
    monkeypatch.setenv(acc.ENV_LOG2N, "10")
    assert acc.log2n() == 10


def test_the_cost_is_read_from_the_stored_hash_so_it_can_be_raised_later(monkeypatch):
    monkeypatch.setenv(acc.ENV_LOG2N, "10")
    old = acc.hash_password("a long password")
    monkeypatch.setenv(acc.ENV_LOG2N, "11")
    assert acc.hash_password("a long password").startswith("scrypt$11$")
    assert acc.check_hash("a long password", old)  # checked at 2^10, as it was made


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "bcrypt$12$8$1$AAAA$AAAA",
        "scrypt$12$8$1$not base64!$AAAA",
        "scrypt$40$8$1$AAAA$AAAA",
        "scrypt$x$8$1$$",
    ],
)
def test_a_malformed_hash_matches_nothing(stored):
    assert not acc.check_hash("a long password", stored)


def test_passwords_are_normalised_so_composed_and_decomposed_accents_match():
    stored = acc.hash_password("caf\u00e9 au lait")
    assert acc.check_hash("cafe\u0301 au lait", stored)


# --- users


def test_add_list_verify(accounts, clock):
    record = accounts.add("ada", "a long password")
    assert record.name == "ada" and record.created == clock.now
    assert accounts.count() == 1 and accounts.exists("ada")
    assert accounts.verify("ada", "a long password")
    assert not accounts.verify("ada", "a long passworD")
    assert not accounts.verify("bob", "a long password")
    assert [r.as_dict() for r in accounts.list()] == [
        {"name": "ada", "created": clock.now, "updated": clock.now, "last_sign_in": None}
    ]
    assert "hash" not in accounts.list()[0].as_dict()


def test_verify_async_runs_the_hash_off_the_event_loop(accounts, monkeypatch):
    accounts.add("ada", "a long password")
    on_main = []
    real = acc.check_hash

    def spy(password, stored):
        on_main.append(threading.current_thread() is threading.main_thread())
        return real(password, stored)

    monkeypatch.setattr(acc, "check_hash", spy)

    async def both():
        right = await accounts.verify_async("ada", "a long password")
        return right, await accounts.verify_async("ada", "wrong one"), await accounts.verify_async("bob", "x" * 9)

    assert anyio.run(both) == (True, False, False)
    assert on_main == [False, False, False]


def test_at_most_two_hashes_run_at_once(monkeypatch):
    running, peak = 0, 0
    lock = threading.Lock()
    real = acc.hashlib.scrypt

    def slow(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(acc.hashlib, "scrypt", slow)
    threads = [threading.Thread(target=acc.hash_password, args=("a long password",)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2


def test_an_unknown_name_is_checked_against_the_dummy_hash(accounts, monkeypatch):
    accounts.add("ada", "a long password")
    checked = []
    real = acc.check_hash
    monkeypatch.setattr(acc, "check_hash", lambda pw, stored: checked.append(stored) or real(pw, stored))
    assert not accounts.verify("nobody", "a long password")
    assert not accounts.verify("nobody", acc.dummy_hash())  # not even its own text opens it
    assert checked == [acc.dummy_hash(), acc.dummy_hash()]
    assert acc.dummy_hash().startswith("scrypt$12$8$1$")  # the same cost as a real user's
    assert not accounts.verify("local", "a long password")


def test_names_and_passwords_are_checked(accounts):
    for bad in ("", "-ada", "a b", "x" * 65, "ada/..", "local", "Local"):
        with pytest.raises(UsageError):
            accounts.add(bad, "a long password")
    with pytest.raises(UsageError, match="at least 8 characters"):
        accounts.add("ada", "short")
    with pytest.raises(UsageError, match="at most 1024 characters"):
        accounts.add("ada", "x" * 1025)
    accounts.add("a.b_c-d@e", "x" * 1024)
    assert accounts.count() == 1


def test_a_duplicate_is_a_usage_error_and_a_missing_user_is_not_found(accounts):
    accounts.add("ada", "a long password")
    with pytest.raises(UserExistsError) as exc:
        accounts.add("ada", "another password")
    assert exit_code_for(exc.value) == ExitCode.USAGE
    assert accounts.verify("ada", "a long password")  # unchanged
    for call in (lambda: accounts.remove("bob"), lambda: accounts.set_password("bob", "a long password")):
        with pytest.raises(UserNotFoundError) as missing:
            call()
        assert exit_code_for(missing.value) == ExitCode.NOT_FOUND


def test_passwd_changes_the_password_and_ends_that_users_sessions(accounts, clock):
    accounts.add("ada", "a long password")
    accounts.add("bob", "bobs password")
    ada = [accounts.start_session("ada", "127.0.0.1", "firefox")[0] for _ in range(2)]
    bob, _ = accounts.start_session("bob")
    clock.now += 5
    assert accounts.set_password("ada", "a new password") == 2
    assert [accounts.session(t) for t in ada] == [None, None]
    assert accounts.session(bob).user == "bob"
    assert accounts.verify("ada", "a new password") and not accounts.verify("ada", "a long password")
    assert accounts.list()[0].updated == clock.now


def test_rm_removes_the_user_and_ends_their_sessions(accounts):
    accounts.add("ada", "a long password")
    accounts.add("bob", "bobs password")
    token, _ = accounts.start_session("ada")
    bob, _ = accounts.start_session("bob")
    assert accounts.remove("ada") == 1
    assert accounts.session(token) is None and not accounts.verify("ada", "a long password")
    assert [r.name for r in accounts.list()] == ["bob"] and accounts.session(bob) is not None
    accounts.add("ada", "a long password")  # the name is free again, with no old session
    assert accounts.session(token) is None


# --- sessions


def test_a_session_is_found_by_its_token_and_records_the_sign_in(accounts, clock):
    accounts.add("ada", "a long password")
    token, csrf = accounts.start_session("ada", "10.0.0.2", "x" * 5000)
    assert len(token) >= 43 and len(csrf) >= 43 and token != csrf
    session = accounts.session(token)
    assert session == acc.Session("ada", csrf, clock.now, clock.now)
    assert accounts.list()[0].last_sign_in == clock.now
    assert accounts.session(token + "x") is None and accounts.session("") is None and accounts.session(None) is None
    assert accounts.session("y" * 10_000) is None
    row = accounts.db.execute("SELECT client, length(user_agent) FROM sessions").fetchone()
    assert tuple(row) == ("10.0.0.2", acc.MAX_USER_AGENT)


def test_only_the_hash_of_a_token_is_stored(accounts, tmp_path):
    accounts.add("ada", "a long password")
    token, _ = accounts.start_session("ada")
    accounts.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = raw_db(tmp_path)
    assert token.encode() not in raw
    assert acc.token_hash(token).encode() in raw
    assert b"a long password" not in raw


def test_sign_out_ends_only_that_session(accounts):
    accounts.add("ada", "a long password")
    one, _ = accounts.start_session("ada")
    two, _ = accounts.start_session("ada")
    assert accounts.end_session(one) is True
    assert accounts.end_session(one) is False
    assert accounts.session(one) is None and accounts.session(two) is not None
    assert accounts.end_sessions("ada") == 1 and accounts.session(two) is None


def test_a_session_unused_for_12_hours_has_ended_and_is_deleted(accounts, clock):
    accounts.add("ada", "a long password")
    token, _ = accounts.start_session("ada")
    clock.now += acc.IDLE_S - 1
    assert accounts.session(token) is not None  # used: the idle time starts again
    clock.now += acc.IDLE_S - 1
    assert accounts.session(token) is not None
    clock.now += acc.IDLE_S + 1
    assert accounts.session(token) is None
    assert accounts.db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0


def test_a_session_ends_after_7_days_however_much_it_is_used(accounts, clock):
    accounts.add("ada", "a long password")
    token, _ = accounts.start_session("ada")
    start = clock.now
    while clock.now + 3600 - start <= acc.ABSOLUTE_S:
        clock.now += 3600
        assert accounts.session(token) is not None
    clock.now = start + acc.ABSOLUTE_S + 1
    assert accounts.session(token) is None
    assert accounts.db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0


def test_last_seen_is_written_at_most_once_a_minute(accounts, clock):
    accounts.add("ada", "a long password")
    token, _ = accounts.start_session("ada")
    start = clock.now
    clock.now += 30
    assert accounts.session(token).last_seen == start
    clock.now += 30
    assert accounts.session(token).last_seen == start + 60
    stored = accounts.db.execute("SELECT last_seen FROM sessions").fetchone()[0]
    assert stored == start + 60


def test_prune_deletes_the_ended_sessions(accounts, clock):
    accounts.add("ada", "a long password")
    accounts.start_session("ada")
    clock.now += acc.IDLE_S + 1
    new, _ = accounts.start_session("ada")
    assert accounts.prune_sessions() == 1
    assert accounts.session(new) is not None


def test_the_files_are_private(accounts, tmp_path):
    accounts.add("ada", "a long password")
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.iterdir() if p.name.startswith("server.db")]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


def test_a_second_connection_sees_the_changes(accounts, tmp_path):
    other = Accounts(tmp_path / "data")  # `users passwd` while the server runs
    try:
        accounts.add("ada", "a long password")
        token, _ = accounts.start_session("ada")
        other.set_password("ada", "a new password")
    finally:
        other.close()
    assert accounts.session(token) is None and accounts.verify("ada", "a new password")


# --- the sign-in limiter


def test_five_failures_for_one_name_make_it_wait_until_the_window_frees():
    clock = Clock()
    limiter = SignInLimiter(clock=clock)
    for i in range(5):
        assert limiter.check("ada", f"10.0.0.{i}") is None
        limiter.failed("ada", f"10.0.0.{i}")
        clock.now += 10
    wait = limiter.check("ada", "10.0.0.9")
    assert wait == pytest.approx(acc.WINDOW_S - 50)
    assert limiter.check("ADA", "10.0.0.9") == wait  # names are counted case-blind
    assert limiter.check("bob", "10.0.0.9") is None  # another name, another address
    clock.now += wait - 1
    assert limiter.check("ada", None) == pytest.approx(1)
    clock.now += 1
    assert limiter.check("ada", None) is None  # the first failure left the window


def test_twenty_failures_from_one_address_make_it_wait():
    clock = Clock()
    limiter = SignInLimiter(clock=clock)
    for i in range(20):
        assert limiter.check(f"user{i}", "10.0.0.1") is None
        limiter.failed(f"user{i}", "10.0.0.1")
    assert limiter.check("someone", "10.0.0.1") == pytest.approx(acc.WINDOW_S)
    assert limiter.check("someone", "10.0.0.2") is None
    clock.now += acc.WINDOW_S
    assert limiter.check("someone", "10.0.0.1") is None
    assert len(limiter) == 0  # the window's end forgot them (read on check)


def test_a_success_clears_the_names_failures_but_not_the_addresss():
    limiter = SignInLimiter(clock=Clock(), max_address_failures=6)
    for _ in range(5):
        limiter.failed("ada", "10.0.0.1")
    assert limiter.check("ada", "10.0.0.2") is not None
    limiter.succeeded("ada", "10.0.0.1")
    assert limiter.check("ada", "10.0.0.2") is None
    limiter.failed("bob", "10.0.0.1")
    assert limiter.check("carol", "10.0.0.1") is not None  # 6 from the address


def test_the_limiter_keeps_a_bounded_number_of_entries():
    limiter = SignInLimiter(clock=Clock(), max_entries=100)
    for i in range(1000):
        limiter.failed(f"name{i}", f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100


def test_the_limiter_is_thread_safe():
    limiter = SignInLimiter(max_user_failures=10**6, max_address_failures=10**6)

    def hammer():
        for _ in range(500):
            limiter.failed("ada", "10.0.0.1")
            limiter.check("ada", "10.0.0.1")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(limiter._failures[("user", "ada")]) == 2000
