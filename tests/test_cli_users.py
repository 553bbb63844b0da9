"""`localassist users` as a user's shell runs it: add, list (--json), passwd, rm with the
password from --password-stdin or asked twice on a terminal; every error one line on stderr
with its exit code, never a traceback."""

from __future__ import annotations

import json
import os
import sys

import pexpect
import pytest

from localassist.web.accounts import Accounts


def accounts(home):
    return Accounts(home / "data")


def one_error_line(result, code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("localassist: error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for word in words:
        assert word in lines[0], lines[0]


def test_add_list_passwd_rm(cli, isolated_home):
    result = cli("users", "add", "ada", "--password-stdin", input="a long password\n")
    assert result.returncode == 0, result.stderr
    assert "added user 'ada'" in result.stderr and "asks everyone to sign in" in result.stderr
    assert result.stdout == ""
    assert cli("users", "add", "bob", "--password-stdin", input="  spaces kept \t\n").returncode == 0

    store = accounts(isolated_home)
    assert store.verify("ada", "a long password") and store.verify("bob", "  spaces kept \t")
    token, _ = store.start_session("ada", "127.0.0.1", "test")
    store.close()

    listed = cli("users", "list")
    assert listed.returncode == 0
    assert listed.stdout.split("\n")[0].split() == ["NAME", "CREATED", "PASSWORD", "CHANGED", "LAST", "SIGN-IN"]
    assert [line.split()[0] for line in listed.stdout.strip().split("\n")[1:]] == ["ada", "bob"]
    as_json = json.loads(cli("users", "list", "--json").stdout)
    assert [u["name"] for u in as_json] == ["ada", "bob"]
    assert set(as_json[0]) == {"name", "created", "updated", "last_sign_in"}
    assert as_json[0]["last_sign_in"] is not None and as_json[1]["last_sign_in"] is None
    assert "scrypt" not in listed.stdout + json.dumps(as_json)

    changed = cli("users", "passwd", "ada", "--password-stdin", input="a new password\r\n")
    assert changed.returncode == 0, changed.stderr
    assert "changed the password of 'ada' (signed out of 1 session)" in changed.stderr
    store = accounts(isolated_home)
    assert store.verify("ada", "a new password") and not store.verify("ada", "a long password")
    assert store.session(token) is None
    store.close()

    removed = cli("users", "rm", "ada")
    assert removed.returncode == 0, removed.stderr
    assert removed.stderr.strip() == "localassist: removed user 'ada' (0 conversations deleted)"
    assert [u["name"] for u in json.loads(cli("users", "list", "--json").stdout)] == ["bob"]


def test_rm_deletes_that_users_web_conversations_and_no_one_elses(cli, isolated_home):
    from localassist.conversation.log_store import LogStore, log_path
    from localassist.engine.types import Done, Timings, Usage

    for name in ("ada", "bob"):
        assert cli("users", "add", name, "--password-stdin", input="a long password\n").returncode == 0
    store = LogStore(log_path(isolated_home / "data"))
    owned = {}
    for owner in ("ada", "ada", "bob", None):
        cid = store.create_conversation(f"{owner}'s question", "m", None, owner, {})
        store.log_exchange(
            cid,
            f"{owner}'s question",
            Done("an answer", "m", "stop", Usage(0, 0, 0), Timings(0, None, None, None, 0)),
            {},
        )
        owned.setdefault(owner, []).append(cid)
    store.close()

    refused = cli("users", "rm", "ada")  # no terminal: --yes must say it
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "localassist: error: users rm ada deletes their 2 web conversation(s) too; "
        "pass --yes to do it without a terminal"
    )
    removed = cli("users", "rm", "ada", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert removed.stderr.strip() == "localassist: removed user 'ada' (2 conversations deleted)"
    store = LogStore(log_path(isolated_home / "data"))
    left = store.conversation_ids()
    store.close()
    assert left == {*owned["bob"], *owned[None]}
    assert b"ada's question" not in (isolated_home / "data" / "logs.db").read_bytes()


def test_an_empty_list_says_how_to_add(cli):
    result = cli("users", "list")
    assert result.returncode == 0 and result.stdout == ""
    assert "localassist users add NAME" in result.stderr
    assert json.loads(cli("users", "list", "--json").stdout) == []


def test_a_short_or_long_password_is_refused(cli, isolated_home):
    one_error_line(cli("users", "add", "ada", "--password-stdin", input="short\n"), 2, "at least 8 characters")
    one_error_line(cli("users", "add", "ada", "--password-stdin", input=""), 2, "at least 8 characters")
    one_error_line(cli("users", "add", "ada", "--password-stdin", input="x" * 1025 + "\n"), 2, "at most 1024")
    one_error_line(cli("users", "add", "ada", "--password-stdin", input=b"\xff" * 9 + b"\n"), 2, "not UTF-8")
    assert json.loads(cli("users", "list", "--json").stdout) == []


def test_only_the_first_line_of_stdin_is_the_password(cli, isolated_home):
    assert cli("users", "add", "ada", "--password-stdin", input="a long password\nmore\n").returncode == 0
    store = accounts(isolated_home)
    assert store.verify("ada", "a long password")
    store.close()


def test_a_duplicate_is_refused_before_the_password_is_read(cli, isolated_home):
    assert cli("users", "add", "ada", "--password-stdin", input="a long password\n").returncode == 0
    # no --password-stdin and no terminal: the duplicate is still what is reported
    one_error_line(cli("users", "add", "ada"), 2, "'ada' exists already", "users passwd ada")
    one_error_line(cli("users", "add", "ada", "--password-stdin", input="another password\n"), 2, "exists already")
    store = accounts(isolated_home)
    assert store.verify("ada", "a long password")
    store.close()


@pytest.mark.parametrize("name", ["local", "-x", "a b", "x" * 65])
def test_bad_or_reserved_names_are_refused(cli, name):
    one_error_line(cli("users", "add", name, "--password-stdin", input="a long password\n"), 2)


def test_a_missing_user_exits_3(cli):
    one_error_line(cli("users", "rm", "nobody"), 3, "no user named 'nobody'", "users list")
    one_error_line(cli("users", "passwd", "nobody"), 3, "no user named 'nobody'")
    one_error_line(cli("users", "passwd", "nobody", "--password-stdin", input="a long password\n"), 3)


def test_no_terminal_and_no_password_stdin_says_to_use_it(cli, isolated_home):
    one_error_line(cli("users", "add", "ada"), 2, "--password-stdin")
    assert cli("users", "add", "ada", "--password-stdin", input="a long password\n").returncode == 0
    one_error_line(cli("users", "passwd", "ada"), 2, "--password-stdin")


def spawn(*args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable, ["-m", "localassist", *args], env=dict(os.environ), encoding="utf-8", timeout=60
    )


def test_on_a_terminal_the_password_is_asked_twice_and_not_echoed(isolated_home):
    child = spawn("users", "add", "ada")
    child.expect_exact("Password for ada: ")
    child.sendline("a long password")
    child.expect_exact("Repeat for confirmation: ")
    child.sendline("not the same one")
    child.expect_exact("do not match")
    child.expect_exact("Password for ada: ")
    child.sendline("a long password")
    child.expect_exact("Repeat for confirmation: ")
    child.sendline("a long password")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "a long password" not in child.before and "added user 'ada'" in child.before
    store = accounts(isolated_home)
    assert store.verify("ada", "a long password")
    store.close()


def test_password_stdin_on_a_terminal_is_refused(isolated_home):
    child = spawn("users", "add", "ada", "--password-stdin")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert "--password-stdin reads a pipe" in child.before and "Traceback" not in child.before
