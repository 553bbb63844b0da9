"""Private files: the one place that creates localassist's directories and writes its files.

Everything localassist keeps can hold the user's text (the log, the chat input history,
saved sessions, the config file with its system prompt, last-used times), so every file
is 0600 and every directory localassist owns is 0700. Writes are atomic: a temporary
file in the same directory, flushed and fsynced, then ``os.replace``d over the target,
so a crash or a full disk leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create the directory ``path`` (and missing parents) and make it 0700.

    For directories localassist owns (config, data, cache dirs and folders inside them):
    an existing one is tightened to 0700 too. Missing parents get the default mode.
    Returns ``path``. Raises OSError."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def write_private_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, as a 0600 file.

    The parent directory is created 0700 when it is missing; an existing parent is left
    as it is (it may be the user's own folder, e.g. for ``/save ~/talk.md``): call
    ``private_dir`` first for a directory localassist owns. Raises OSError; the target
    is untouched then and no temporary file is left behind."""
    path = path.expanduser()
    if not path.parent.is_dir():
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
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

    For files that another library appends to or opens itself (SQLite's database,
    prompt_toolkit's input history): create them private before handing them over, and
    tighten one left readable by an older version. The parent must exist. Returns
    ``path``. Raises OSError."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, FILE_MODE))
    if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
        os.chmod(path, FILE_MODE)
    return path


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file (``tomllib``, or ``tomli`` before Python 3.11).

    Raises OSError and ``TOMLDecodeError`` (exported here) for callers to word."""
    with path.open("rb") as fh:
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
