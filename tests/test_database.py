"""localassist.database, the one way every store opens its SQLite file: private modes, the
pragmas asked for, and named migrations applied once, in order, whole, under the write
lock, with a failed one leaving no trace. The stores' own behaviour is in their tests;
databases written by release 0.2 opening without a rebuild is in test_database_upgrade.py."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from localassist.database import applied, open_database, statements

BASE = [
    ("001_items", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"),
    ("002_runs", "CREATE TABLE runs (migration TEXT NOT NULL); INSERT INTO runs VALUES ('002');"),
]
# a trigger's body holds ';' (as do the string and the comment): split on ';' it breaks
TRIGGER = (
    "003_audit",
    """
    CREATE TABLE audit (item INTEGER, note TEXT);
    -- one row per insert; the note says so; really
    CREATE TRIGGER items_audit AFTER INSERT ON items BEGIN
        INSERT INTO audit VALUES (new.id, 'added; by trigger');
        UPDATE audit SET note = note || '!' WHERE item = new.id;
    END;
    INSERT INTO runs VALUES ('003')
    """,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(db: sqlite3.Connection) -> list[str]:
    return [row[0] for row in db.execute("SELECT name FROM _migrations ORDER BY rowid")]


def test_the_file_is_0600_in_a_0700_folder_with_its_sidecars(tmp_path):
    path = tmp_path / "data" / "inner" / "store.db"
    db = open_database(path, BASE)
    db.execute("INSERT INTO items (name) VALUES ('x')")
    assert mode(tmp_path / "data") == mode(path.parent) == 0o700
    for name in ("store.db", "store.db-wal", "store.db-shm"):
        assert mode(path.parent / name) == 0o600, name
    db.close()


def test_a_file_left_readable_by_an_older_version_is_tightened(tmp_path):
    path = tmp_path / "store.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)
    open_database(path, BASE).close()
    assert mode(path) == 0o600


def test_the_pragmas_asked_for_are_set_and_rows_are_by_name(tmp_path):
    pragmas = ("journal_mode=WAL", "foreign_keys=ON", "secure_delete=ON", "synchronous=NORMAL")
    db = open_database(tmp_path / "store.db", BASE, pragmas=pragmas, timeout=7)
    got = [db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "foreign_keys", "secure_delete")]
    assert got == ["wal", 1, 1]
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 7000
    assert db.isolation_level is None and not db.in_transaction  # autocommit: transactions are explicit
    assert db.execute("SELECT 1 AS one").fetchone()["one"] == 1
    db.close()


def test_migrations_are_applied_once_in_order_and_a_new_one_later(tmp_path):
    path = tmp_path / "store.db"
    db = open_database(path, BASE)
    assert names(db) == ["001_items", "002_runs"]
    db.close()
    db = open_database(path, BASE)  # nothing runs again
    assert [r[0] for r in db.execute("SELECT migration FROM runs")] == ["002"]
    db.close()
    db = open_database(path, [*BASE, TRIGGER])  # the next release: only the new one runs
    assert names(db) == ["001_items", "002_runs", "003_audit"]
    assert [r[0] for r in db.execute("SELECT migration FROM runs")] == ["002", "003"]
    db.close()


def test_a_migration_with_a_trigger_runs_whole(tmp_path):
    db = open_database(tmp_path / "store.db", [*BASE, TRIGGER])
    db.execute("INSERT INTO items (name) VALUES ('pen')")
    assert [tuple(r) for r in db.execute("SELECT * FROM audit")] == [(1, "added; by trigger!")]
    db.close()


def test_statements_cut_only_where_sqlite_says_a_statement_ends():
    got = statements(TRIGGER[1])
    assert len(got) == 3
    assert got[1].startswith("-- one row per insert; the note") and got[1].endswith("END;")  # a comment goes with
    assert "CREATE TRIGGER items_audit" in got[1]  # the statement after it
    assert got[2] == "INSERT INTO runs VALUES ('003')"  # the last one needs no ';'
    assert statements("SELECT ';'; SELECT 2;") == ["SELECT ';';", "SELECT 2;"]
    assert statements("  \n") == []


def test_a_failed_migration_leaves_no_trace_and_runs_again_next_time(tmp_path):
    path = tmp_path / "store.db"
    broken = ("003_broken", "CREATE TABLE half (x); INSERT INTO no_such_table VALUES (1);")
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        open_database(path, [*BASE, broken])
    raw = sqlite3.connect(path)
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "half" not in tables  # rolled back with the migration's record
    assert names(raw) == ["001_items", "002_runs"]  # those before it stay applied
    raw.close()
    db = open_database(path, [*BASE, ("003_broken", "CREATE TABLE half (x);")])  # fixed
    assert names(db)[-1] == "003_broken"
    db.close()


def test_an_unfinished_last_statement_fails_rather_than_being_dropped(tmp_path):
    cut = ("003_cut", "CREATE TABLE t (x); CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN DELETE FROM t;")
    with pytest.raises(sqlite3.OperationalError):
        open_database(tmp_path / "store.db", [*BASE, cut])
    assert "003_cut" not in applied(sqlite3.connect(tmp_path / "store.db"))


def test_a_database_older_than_its_migrations_table_is_adopted_not_rebuilt(tmp_path):
    path = tmp_path / "store.db"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.executescript(BASE[0][1] + "INSERT INTO items (name) VALUES ('kept');")
    raw.close()
    seen = []

    def adopt(db: sqlite3.Connection) -> int:
        seen.append(db.in_transaction)  # asked under the write lock
        return 1  # items is migration 001

    db = open_database(path, BASE, adopt=adopt)
    assert seen == [True]
    assert names(db) == ["001_items", "002_runs"]
    assert [r[0] for r in db.execute("SELECT name FROM items")] == ["kept"]
    db.close()
    open_database(path, BASE, adopt=lambda db: pytest.fail("adopted twice")).close()


def test_a_refused_adoption_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "store.db"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("CREATE TABLE someone_elses (x)")
    raw.close()

    class NotOurs(Exception):
        pass

    def refuse(db: sqlite3.Connection) -> int:
        raise NotOurs("not a database of this store")

    with pytest.raises(NotOurs):
        open_database(path, BASE, adopt=refuse)
    raw = sqlite3.connect(path)
    assert [r[0] for r in raw.execute("SELECT name FROM sqlite_master")] == ["someone_elses"]
    raw.close()


def test_a_newer_releases_migrations_are_left_alone(tmp_path):
    path = tmp_path / "store.db"
    open_database(path, [*BASE, TRIGGER]).close()
    db = open_database(path, BASE)  # an older release opens it
    assert names(db) == ["001_items", "002_runs", "003_audit"]
    db.close()


def test_repeated_names_are_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="repeat"):
        open_database(tmp_path / "store.db", [BASE[0], BASE[0]])


# Each process opens the same new file at the same moment (a file they all wait on) with a
# slow first migration; every migration must still run exactly once.
OPENER = """
import sys, time
from pathlib import Path
from localassist.database import open_database
path, go = Path(sys.argv[1]), Path(sys.argv[2])
slow = "CREATE TABLE filler (x); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) "
slow += "INSERT INTO filler SELECT x FROM c; CREATE TABLE runs (migration TEXT); INSERT INTO runs VALUES ('001');"
migrations = [("001_slow", slow), ("002_next", "INSERT INTO runs VALUES ('002');")]
while not go.exists():
    time.sleep(0.005)
db = open_database(path, migrations)
print(db.execute("SELECT count(*) FROM runs").fetchone()[0])
db.close()
"""


def test_concurrent_openers_apply_each_migration_once(tmp_path):
    path, go = tmp_path / "data" / "store.db", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", OPENER, str(path), str(go)], stdout=subprocess.PIPE, text=True)
        for _ in range(5)
    ]
    go.touch()
    outputs = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 5
    assert outputs == ["2"] * 5  # each saw both migrations applied
    db = sqlite3.connect(path)
    assert db.execute("SELECT migration FROM runs ORDER BY rowid").fetchall() == [("001",), ("002",)]
    assert db.execute("SELECT count(*) FROM filler").fetchone() == (200000,)
    assert names(db) == ["001_slow", "002_next"]
    db.close()
