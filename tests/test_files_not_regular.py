"""A FIFO (or any file that is not a regular file) named by the user or the model (a
model, a document, a schema, a grammar, a chat template, a transcript, a key file, the
config file, a template, a file the files tool reads) is refused with the documented exit
code, from a stat, before it is opened: opening a FIFO for reading waits for a writer that
never comes, and a device is read without end."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from localassist.files import NotRegularFileError, read_regular_bytes

FIFO_REFUSED = "a FIFO (named pipe), not a regular file"


def unblocked(fifo: Path, call, seconds: float = 20):
    """``call()``'s result, or a failure if it is still waiting on ``fifo`` after ``seconds``:
    the FIFO is then opened for writing and closed, so the blocked reader sees its end and
    the thread finishes instead of hanging the test run."""
    box: dict = {}

    def target():
        try:
            box["result"] = call()
        except BaseException as exc:  # handed back to the test
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # the reader waiting in open() gets EOF
        worker.join(seconds)
        pytest.fail(f"waited on the FIFO {fifo} instead of refusing it")
    if "error" in box:
        raise box["error"]
    return box["result"]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe.gguf"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "args, code",
    [
        (["info", "{fifo}"], 5),
        (["ask", "-m", "{fifo}", "hello"], 5),
        (["index", "add", "{folder}", "--embed-model", "{fifo}"], 5),
        (["ask", "-f", "{fifo}", "what is this?"], 2),
        (["summarize", "{fifo}"], 2),
    ],
    ids=["info", "ask -m", "index add --embed-model", "ask -f", "summarize"],
)
def test_fifo_given_as_a_model_or_document_is_refused_instead_of_blocking_forever(
    cli, model_env, fifo, tmp_path, args, code
):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("some notes\n")
    argv = [a.format(fifo=fifo, folder=folder) for a in args]
    try:
        result = cli(*argv, env=model_env, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`localassist {' '.join(argv)}` waited on the FIFO instead of refusing it")
    assert result.returncode == code, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr  # one line, no traceback
    assert (
        result.stderr.startswith("localassist: error: ") and "a FIFO (named pipe), not a regular file" in result.stderr
    )
    assert result.stdout == ""


def test_character_device_as_a_model_is_refused(cli):
    result = cli("info", os.devnull, timeout=60)
    assert result.returncode == 5
    assert "a character device, not a regular file" in result.stderr


def test_read_regular_bytes_reads_files_and_refuses_everything_else(tmp_path, fifo):
    file = tmp_path / "a.txt"
    file.write_bytes(b"text\x00bytes")
    assert read_regular_bytes(file) == b"text\x00bytes"
    link = tmp_path / "link.txt"
    link.symlink_to(file)
    assert read_regular_bytes(link) == b"text\x00bytes"  # a link to a file is that file
    with pytest.raises(NotRegularFileError, match="FIFO"):
        read_regular_bytes(fifo)
    with pytest.raises(IsADirectoryError):
        read_regular_bytes(tmp_path)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        with pytest.raises(NotRegularFileError, match="socket"):
            read_regular_bytes(tmp_path / "sock")
    with pytest.raises(FileNotFoundError):
        read_regular_bytes(tmp_path / "missing")


@pytest.mark.parametrize(
    "args, code",
    [
        (["ask", "--json-schema", "{fifo}", "hello"], 2),
        (["ask", "--grammar", "{fifo}", "hello"], 2),
        (["ask", "--chat-format", "{jinja}", "hello"], 2),
        (["ask", "--tools", "{py}", "hello"], 2),
        (["ask", "-t", "piped", "hello"], 2),
        (["templates", "show", "piped"], 2),
        (["serve", "--key-file", "{fifo}"], 2),
        (["config", "show"], 1),
    ],
    ids=[
        "--json-schema",
        "--grammar",
        "--chat-format FILE.jinja",
        "--tools FILE.py",
        "template",
        "templates show",
        "serve --key-file",
        "config file",
    ],
)
def test_fifo_named_as_a_schema_grammar_chat_template_tools_template_key_or_config_file_is_refused_instead_of_blocking(
    cli, model_env, isolated_home, tmp_path, args, code
):
    """Each of these files was opened blindly: the command waited forever on a FIFO."""
    paths = {"fifo": tmp_path / "pipe.json", "jinja": tmp_path / "pipe.jinja", "py": tmp_path / "pipe.py"}
    for path in paths.values():
        os.mkfifo(path)
    templates = isolated_home / "config" / "templates"
    templates.mkdir(parents=True)
    os.mkfifo(templates / "piped.toml")
    if args[0] == "config":
        os.mkfifo(isolated_home / "config" / "config.toml")
    argv = [a.format(**paths) for a in args]
    try:
        result = cli(*argv, env=model_env, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`localassist {' '.join(argv)}` waited on the FIFO instead of refusing it")
    assert result.returncode == code, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr  # one line, no traceback
    assert result.stderr.startswith("localassist: error: ") and FIFO_REFUSED in result.stderr, result.stderr
    assert result.stdout == ""


def test_fifo_among_the_templates_is_listed_as_broken_instead_of_blocking_templates_list(cli, isolated_home):
    templates = isolated_home / "config" / "templates"
    templates.mkdir(parents=True)
    os.mkfifo(templates / "piped.toml")
    try:
        result = cli("templates", "list", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("`localassist templates list` waited on the FIFO among the templates")
    assert result.returncode == 0, result.stderr
    row = " ".join(next(line for line in result.stdout.splitlines() if line.startswith("piped")).split())
    assert FIFO_REFUSED in row, row
    assert "summarize" in result.stdout  # the other templates are listed as ever


@pytest.mark.model
def test_fifo_given_to_load_in_chat_is_refused_and_the_chat_goes_on(model_env, tmp_path):
    import pexpect

    from chatrepl import PROMPT_READY, Repl

    fifo = tmp_path / "talk.json"
    os.mkfifo(fifo)
    repl = Repl("-n", "4", "--no-log", env=model_env)
    repl.child.timeout = 60
    try:
        shown = " ".join(repl.send(f"/load {fifo}").split())
    except pexpect.TIMEOUT:
        repl.child.close(force=True)
        pytest.fail("/load waited on the FIFO instead of refusing it")
    assert FIFO_REFUSED in shown, shown
    repl.child.sendline("/show")  # the REPL went on
    repl.child.expect_exact(PROMPT_READY)
    assert repl.exit() == 0


def test_files_tool_read_of_a_path_swapped_for_a_fifo_is_a_tool_error_not_a_hang(tmp_path, monkeypatch):
    """The files tool looked (is_file) and then opened: a FIFO put in place in between, or
    any caller of ``read_text``, blocked the tool's thread for good. Here the look is made
    to see a file, as it would have a moment before the swap."""
    from localassist.tools import ToolContext, run_tool
    from localassist.tools.files import FilesTool, read_text

    root = tmp_path / "notes"
    root.mkdir()
    fifo = root / "todo.md"
    os.mkfifo(fifo)
    with pytest.raises(Exception, match="FIFO"):
        unblocked(fifo, lambda: read_text(fifo))

    real_is_file = Path.is_file
    monkeypatch.setattr(Path, "is_file", lambda self: self == fifo or real_is_file(self))
    context = ToolContext(roots=(root,), timeout_s=30)
    result = unblocked(fifo, lambda: run_tool(FilesTool(), {"action": "read", "path": "todo.md"}, context))
    assert result.is_error and FIFO_REFUSED in result.content, result.content


def test_stale_check_of_an_indexed_file_swapped_for_a_fifo_says_deleted_instead_of_blocking(tmp_path, monkeypatch):
    """The answer-time check (is the cited file as indexed?) read a changed file with
    ``read_bytes``: a FIFO in its place since the stat blocked the answer."""
    from localassist.rag.search import _OnDisk

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "real.md").write_text("a file as it was when stat'ed, changed since the sync\n")
    fifo = folder / "a.md"
    os.mkfifo(fifo)
    real_stat = Path.stat
    monkeypatch.setattr(Path, "stat", lambda self, **kw: real_stat(folder / "real.md" if self == fifo else self, **kw))
    row = {"path": "a.md", "file_size": 1, "file_mtime_ns": 1, "file_sha256": "0" * 64}
    assert unblocked(fifo, lambda: _OnDisk(folder, "notes").state(row)) == "deleted"


def test_read_regular_text_reads_like_read_text_and_refuses_a_fifo(tmp_path, fifo):
    from localassist.files import read_regular_text

    file = tmp_path / "a.jinja"
    file.write_bytes("caf\u00e9\r\nline two\r\n".encode())
    assert read_regular_text(file) == file.read_text(encoding="utf-8") == "caf\u00e9\nline two\n"
    with pytest.raises(NotRegularFileError, match="FIFO"):
        read_regular_text(fifo)
