"""A FIFO (or any file that is not a regular file) given as a model or a document is
refused with the documented exit code, from a stat, before it is opened: opening a FIFO
for reading waits for a writer that never comes, and a device is read without end."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from localassist.files import NotRegularFileError, read_regular_bytes


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
