"""files: only the allowed folders can be listed, read or searched; every way out is refused."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time

import pytest

from localassist.errors import UsageError
from localassist.tools import ToolContext, run_tool
from localassist.tools import files as files_module
from localassist.tools.files import FilesTool, resolve_roots
from localassist.tools.runner import GRACE_S

SECRET = "the-secret-outside-the-root"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "notes"
    (root / "sub").mkdir(parents=True)
    (root / "todo.md").write_text("buy milk\ncall Alice\nfix the bike\n")
    (root / "sub" / "ideas.txt").write_text("Alice likes tea\nBob likes coffee\n")
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{SECRET}\nAlice\n")
    os.symlink(outside, root / "escape")  # a folder link pointing out of the root
    os.symlink(outside / "secret.txt", root / "innocent.txt")  # a file link pointing out
    return root, outside


def run(arguments, roots=(), **context):
    return run_tool(FilesTool(), arguments, ToolContext(roots=tuple(roots), **context))


def test_reads_and_lists_inside_the_root(tree):
    root, _ = tree
    assert run({"action": "read", "path": "todo.md"}, [root]).content == "buy milk\ncall Alice\nfix the bike\n"
    assert run({"action": "read", "path": str(root / "sub" / "ideas.txt")}, [root]).content.startswith("Alice")
    listing = run({"action": "list"}, [root]).content
    assert "sub/" in listing
    assert "todo.md (33 bytes)" in listing
    assert "escape@ (link)" in listing


@pytest.mark.parametrize(
    "path",
    [
        "../private/secret.txt",
        "sub/../../private/secret.txt",
        "escape/secret.txt",  # through the folder link
        "innocent.txt",  # the file link
        "/etc/passwd",
    ],
)
def test_paths_that_leave_the_root_are_refused(tree, path):
    root, _ = tree
    result = run({"action": "read", "path": path}, [root])
    assert result.is_error
    assert "outside the allowed folders" in result.content
    assert SECRET not in result.content


def test_an_absolute_path_outside_the_roots_is_refused_for_list_and_grep(tree):
    root, outside = tree
    assert "outside the allowed folders" in run({"action": "list", "path": str(outside)}, [root]).content
    result = run({"action": "grep", "pattern": "secret", "path": str(outside)}, [root])
    assert result.is_error and SECRET not in result.content


def test_grep_never_follows_links_out_of_the_root(tree):
    root, _ = tree
    result = run({"action": "grep", "pattern": "Alice"}, [root])
    assert not result.is_error
    assert result.content.splitlines() == [
        "todo.md:2: call Alice",
        "sub/ideas.txt:1: Alice likes tea",
        "2 matches in 2 files",
    ]
    assert SECRET not in run({"action": "grep", "pattern": "secret", "ignore_case": True}, [root]).content


def test_without_allowed_folders_the_tool_refuses_and_names_allow(tree):
    result = run({"action": "read", "path": "todo.md"})
    assert result.is_error
    assert "--allow" in result.content


def test_binary_and_non_utf8_files_are_refused_by_content(tree):
    root, _ = tree
    (root / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "latin1.txt").write_bytes("café".encode("latin-1"))
    assert "binary file" in run({"action": "read", "path": "image.txt"}, [root]).content
    assert "not UTF-8 text" in run({"action": "read", "path": "latin1.txt"}, [root]).content
    grep = run({"action": "grep", "pattern": "PNG"}, [root]).content
    assert grep.endswith("0 matches in 2 files (2 binary or large files skipped)")


def test_files_over_the_size_cap_are_refused(tree, monkeypatch):
    root, _ = tree
    monkeypatch.setattr(files_module, "MAX_READ_BYTES", 10)
    result = run({"action": "read", "path": "todo.md"}, [root])
    assert result.is_error
    assert "too large to read (33 bytes; at most 10)" in result.content


def test_read_a_range_of_lines(tree):
    root, _ = tree
    result = run({"action": "read", "path": "todo.md", "start_line": 2, "line_count": 1}, [root])
    assert result.content == "[todo.md: lines 2-2 of 3]\ncall Alice\n"


def test_grep_regex_and_the_match_cap_are_stated(tree):
    root, _ = tree
    (root / "log.txt").write_text("".join(f"line {n} error\n" for n in range(1, 301)))
    result = run({"action": "grep", "pattern": r"line \d+0 error", "regex": True, "path": "log.txt"}, [root])
    assert result.content.splitlines()[:2] == ["log.txt:10: line 10 error", "log.txt:20: line 20 error"]
    assert result.content.endswith("30 matches in 1 file")
    capped = run({"action": "grep", "pattern": "error", "max_matches": 5}, [root]).content.splitlines()
    assert len([line for line in capped if line.startswith("log.txt:")]) == 5
    assert capped[-2] == "[stopped at 5 matches; narrow the pattern or the path]"
    assert "bad regex" in run({"action": "grep", "pattern": "(", "regex": True}, [root]).content


def test_long_output_is_cut_to_the_budget_and_the_cut_is_stated(tree):
    root, _ = tree
    (root / "big.txt").write_text("x" * 50_000)
    result = run({"action": "read", "path": "big.txt"}, [root], output_budget=1_000)
    assert result.content == "x" * 1_000 + "\n[output cut: 1,000 of 50,000 characters shown]"


def test_several_roots_are_listed_and_searched(tree, tmp_path):
    root, _ = tree
    other = tmp_path / "work"
    other.mkdir()
    (other / "plan.md").write_text("Alice leads\n")
    listing = run({"action": "list"}, [root, other]).content
    assert listing == f"allowed folders:\n{root}/\n{other}/"
    assert run({"action": "read", "path": "plan.md"}, [root, other]).content == "Alice leads\n"
    assert f"{other / 'plan.md'}:1: Alice leads" in run({"action": "grep", "pattern": "Alice"}, [root, other]).content


def test_allow_folders_are_checked(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    assert resolve_roots([tmp_path, str(tmp_path)]) == (tmp_path.resolve(),)
    with pytest.raises(UsageError, match="no such folder"):
        resolve_roots([tmp_path / "missing"])
    with pytest.raises(UsageError, match="not a folder"):
        resolve_roots([tmp_path / "file.txt"])


# --- a pattern the model writes cannot hang the tool (issue #19, item 4)

CATASTROPHIC = r"(a+)+$"  # exponential on a backtracking engine: 2**40 ways to fail on "a" * 40 + "!"

GREP_IN_A_CHILD = """
import sys, time
from pathlib import Path
from localassist.tools import ToolContext, run_tool
from localassist.tools.files import FilesTool

root, timeout = Path(sys.argv[1]), float(sys.argv[2])
print("started", flush=True)
started = time.monotonic()
arguments = {"action": "grep", "pattern": sys.argv[3], "regex": True, "path": "poison.txt"}
result = run_tool(FilesTool(), arguments, ToolContext(roots=(root,), timeout_s=timeout))
print(f"{time.monotonic() - started:.2f}", result.is_error, repr(result.content), flush=True)
"""


def _poisoned(root):
    """A document a model might grep: lines that make a backtracking engine take exponential time."""
    (root / "poison.txt").write_text(("a" * 40 + "!\n") * 20 + "aaaa\n")


def _grep_child(root, timeout_s: float):
    return subprocess.Popen(
        [sys.executable, "-c", GREP_IN_A_CHILD, str(root), str(timeout_s), CATASTROPHIC],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_catastrophic_grep_regex_cannot_run_past_the_tool_timeout(tree):
    # A child process: on a backtracking engine the search held the interpreter lock, so the
    # runner's time limit never fired and the test itself would hang.
    root, _ = tree
    _poisoned(root)
    child = _grep_child(root, timeout_s=2)
    try:
        stdout, stderr = child.communicate(timeout=2 + GRACE_S + 20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail("the grep ran past its 2 s time limit")
    assert child.returncode == 0, stderr
    seconds, is_error, content = stdout.splitlines()[1].split(" ", 2)
    assert is_error == "False" and float(seconds) < 2
    assert ast.literal_eval(content).splitlines() == ["poison.txt:21: aaaa", "1 match in 1 file"]


def test_ctrl_c_stops_a_grep_on_a_catastrophic_regex(tree):
    root, _ = tree
    _poisoned(root)
    child = _grep_child(root, timeout_s=600)
    assert child.stdout.readline() == "started\n"
    time.sleep(1.0)  # inside the search, were it still running
    child.send_signal(signal.SIGINT)
    try:
        _, stderr = child.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail("Ctrl-C did not stop the grep")
    # Either the search was already over (linear time), or Ctrl-C ended it.
    assert child.returncode == 0 or "KeyboardInterrupt" in stderr, stderr


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [(r"(a)\1", r"invalid escape sequence: \1"), ("(?=a)", "invalid perl operator: (?="), ("(", "missing ): (")],
)
def test_grep_patterns_re2_cannot_run_are_a_clear_tool_error(tree, capfd, pattern, reason):
    root, _ = tree
    result = run({"action": "grep", "pattern": pattern, "regex": True}, [root])
    assert result.is_error
    assert result.content == (
        f"files: bad regex {pattern!r}: {reason} (the engine is RE2: no backreferences, lookahead or lookbehind)"
    )
    assert capfd.readouterr().err == ""  # RE2 keeps its own complaint to itself


def test_plain_grep_is_literal_and_ignore_case_works(tree):
    root, _ = tree
    (root / "prices.txt").write_text("a.b costs $5 (ish)\naxb\n")
    assert run({"action": "grep", "pattern": "a.b costs $5 (", "path": "prices.txt"}, [root]).content == (
        "prices.txt:1: a.b costs $5 (ish)\n1 match in 1 file"
    )
    found = run({"action": "grep", "pattern": "ALICE", "ignore_case": True, "path": "todo.md"}, [root]).content
    assert found == "todo.md:2: call Alice\n1 match in 1 file"
