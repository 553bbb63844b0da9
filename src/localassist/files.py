"""Private files: the one place that creates localassist's directories and writes its files.

Everything localassist keeps can hold the user's text (the log, the chat input history,
saved sessions, the config file with its system prompt, last-used times), so every file
is 0600 and every directory localassist owns is 0700. Writes are atomic: a temporary
file in the same directory, flushed and fsynced, then ``os.replace``d over the target,
so a crash or a full disk leaves the old file or the new one, never half of one.
Files a user or the model names (a model, a document, a schema, a grammar, a chat
template, a transcript, a key file, the config file and templates, a file the files tool
reads) are opened only when they are regular files, through ``open_regular``: a FIFO or
a device would block or never end.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import sqlite3

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create the directory ``path`` and make it 0700.

    For directories localassist owns (config, data, cache dirs and folders inside them):
    an existing one is tightened to 0700 too. Missing parents are created 0700 as well
    (the XDG rule for a folder made to hold the user's data), so ``index add`` as the
    first command does not leave ``data/`` readable by others. Returns ``path``. Raises
    OSError."""
    _make_dirs(path)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def tighten_dirs(*paths: Path) -> None:
    """Make the directories among ``paths`` that exist 0700 (localassist's own config, data
    and cache dirs, which an older version made 0755); missing ones are left missing."""
    for path in paths:
        with contextlib.suppress(OSError):  # missing, or not ours to change
            if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
                os.chmod(path, DIR_MODE)


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` where every folder created is exactly 0700, whatever the umask; folders
    that exist are left as they are."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # made by another process meanwhile: its mode is its maker's
        os.chmod(folder, DIR_MODE)  # mkdir's mode is cut by the umask


def write_private_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, as a 0600 file.

    Missing parent directories are created 0700; an existing parent is left as it is
    (it may be the user's own folder, e.g. for ``/save ~/talk.md``): call
    ``private_dir`` first for a directory localassist owns. Raises OSError; the target
    is untouched then and no temporary file is left behind."""
    path = path.expanduser()
    _make_dirs(path.parent)
    # mkstemp creates the file 0600 whatever the umask, so the text is never readable by others
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_private_text(path: Path, text: str) -> None:
    """``write_private_bytes`` for text, encoded as UTF-8 (no newline translation)."""
    write_private_bytes(path, text.encode("utf-8"))


def create_private_file(path: Path) -> Path:
    """Make sure ``path`` exists and is 0600, keeping any content it has.

    For files that another library appends to or opens itself (prompt_toolkit's input
    history; SQLite's database, through ``connect_private``): create them private before
    handing them over, and tighten one left readable by an older version. A file that
    exists is never opened: closing any descriptor of a file drops every POSIX lock this
    process holds on it, which for a live SQLite database lets another process checkpoint
    and delete the WAL under its connections. The parent must exist. Returns ``path``.
    Raises OSError."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
    if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
        os.chmod(path, FILE_MODE)  # an older version's file, or a umask that cut 0600 further
    return path


def connect_private(path: Path, **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(path, **kwargs)`` for every store localassist keeps (the log, the
    folder indexes, the summary notes, the server's keys and calls): the database is made
    0600 in a 0700 folder before SQLite opens it, so the ``-wal`` and ``-shm`` files SQLite
    creates get its mode, and sidecars left readable by an older version are tightened.
    No descriptor of a database that exists is opened and closed here (see
    ``create_private_file``). Raises OSError and sqlite3.Error."""
    import sqlite3

    private_dir(path.parent)
    create_private_file(path)
    for sidecar in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(sidecar.stat().st_mode) != FILE_MODE:
                os.chmod(sidecar, FILE_MODE)
    return sqlite3.connect(path, **kwargs)


def check_regular(path: str | os.PathLike[str], mode: int) -> None:
    """Raise if ``mode`` (from a stat of ``path``) is not a regular file's: IsADirectoryError
    for a folder, NotRegularFileError for a FIFO, socket or device."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    raise NotRegularFileError(errno.EINVAL, f"{_kind(mode)}, not a regular file", os.fspath(path))


class NotRegularFileError(OSError):
    """A FIFO, socket or device where a file was expected: reading one can block forever."""


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a file"


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a file for reading in binary, only if it is a regular file (links followed).

    A FIFO given as a model or a document would block the open until some writer came,
    and a device would be read without end: they are refused from a stat, before the
    open (NotRegularFileError, an OSError; IsADirectoryError for a folder). The open
    itself does not wait (O_NONBLOCK), and the file opened is checked again, so a path
    swapped for a FIFO in between is refused too. Raises OSError."""
    check_regular(path, os.stat(path).st_mode)
    nonblock = getattr(os, "O_NONBLOCK", 0)  # POSIX only; elsewhere there are no FIFOs to open
    fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0))
    try:
        check_regular(path, os.fstat(fd).st_mode)
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file (``open_regular``). Raises OSError."""
    with open_regular(path) as fh:
        return fh.read()


def read_regular_text(path: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    """The text of a regular file (``open_regular``), as ``Path.read_text`` gives it
    (strict decoding, universal newlines). Raises OSError and UnicodeDecodeError."""
    with io.TextIOWrapper(open_regular(path), encoding=encoding) as fh:
        return fh.read()


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file (``tomllib``, or ``tomli`` before Python 3.11), only if it is a
    regular file (the config file, a template: a FIFO there would block every command).

    Raises OSError and ``TOMLDecodeError`` (exported here) for callers to word."""
    with open_regular(path) as fh:
        return tomllib.load(fh)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; not possible on every platform (Windows), so best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
