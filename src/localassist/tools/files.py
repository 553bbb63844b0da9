"""``files``: list, read and grep files, only under the folders the user allowed (``--allow``).

Every path the model gives is resolved (``..`` and symlinks followed) and must land inside an
allowed root, so ``../``, absolute paths elsewhere and symlinks pointing out are all refused.
Binary files are refused by content (a NUL byte, or bytes that are not UTF-8).

``grep`` matches with RE2 (``google-re2``), whose time is linear in the text: the model writes
the pattern, possibly copied from a document, and a backtracking engine such as Python's ``re``
takes exponential time on ``(a+)+$`` while holding the interpreter lock, so neither the time
limit nor Ctrl-C could stop it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from localassist.errors import UsageError
from localassist.files import NotRegularFileError, open_regular
from localassist.tools.base import Safety, Tool, ToolContext, ToolError, ToolResult

MAX_READ_BYTES = 1_000_000
MAX_LIST_ENTRIES = 500
DEFAULT_MATCHES = 50
MAX_MATCHES = 200
MAX_LINE_CHARS = 300  # a grep hit shows at most this much of its line
SNIFF_BYTES = 8192
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache"})


def resolve_roots(paths: Iterable[str | Path]) -> tuple[Path, ...]:
    """The ``--allow`` folders, resolved; a missing folder or a file is a usage error."""
    roots: list[Path] = []
    for value in paths:
        root = Path(value).expanduser().resolve()
        if not root.is_dir():
            raise UsageError(f"--allow {value}: {'not a folder' if root.exists() else 'no such folder'}")
        if root not in roots:
            roots.append(root)
    return tuple(roots)


def locate(path: str, roots: tuple[Path, ...]) -> Path:
    """``path`` resolved inside one of ``roots``; relative paths are tried against each root in order."""
    if not roots:
        raise ToolError("no folders are allowed; the user can allow one with --allow DIR")
    given = Path(path).expanduser()
    candidates = [given.resolve()] if given.is_absolute() else [(root / given).resolve() for root in roots]
    inside = [c for c in candidates if any(c.is_relative_to(root) for root in roots)]
    if not inside:
        raise ToolError(f"{path}: outside the allowed folders ({', '.join(map(str, roots))})")
    for candidate in inside:
        if candidate.exists():
            return candidate
    raise ToolError(f"{path}: no such file or folder")


def read_text(path: Path) -> str:
    """The file's text; ``ToolError`` for binary, non-UTF-8 or oversized files, and for
    anything that is not a regular file (a FIFO would block the read: it is refused from a
    stat, before the open, even one swapped in since the caller looked)."""
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_READ_BYTES:
                raise ToolError(
                    f"{path.name} is too large to read ({size:,} bytes; at most {MAX_READ_BYTES:,}); use grep"
                )
            data = fh.read(MAX_READ_BYTES + 1)
    except NotRegularFileError as exc:
        raise ToolError(f"{path.name} is {exc.strerror}; only regular files can be read") from None
    if len(data) > MAX_READ_BYTES:  # grew since the stat
        raise ToolError(f"{path.name} is too large to read (over {MAX_READ_BYTES:,} bytes); use grep")
    if b"\0" in data[:SNIFF_BYTES]:
        raise ToolError(f"{path.name} is a binary file; only text files can be read")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ToolError(f"{path.name} is not UTF-8 text; only text files can be read") from None


def compile_pattern(pattern: str, *, regex: bool, ignore_case: bool) -> Any:
    """``pattern`` compiled by RE2 (as literal text unless ``regex``); ``ToolError`` saying why it cannot be."""
    import re2

    options = re2.Options()
    options.literal = not regex
    options.case_sensitive = not ignore_case
    options.log_errors = False  # RE2 would write its complaint on stderr; the model gets it instead
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):  # the binding passes RE2's message on as bytes
            reason = reason.decode("utf-8", "replace")
        raise ToolError(
            f"bad regex {pattern!r}: {reason} (the engine is RE2: no backreferences, lookahead or lookbehind)"
        ) from None


class FilesTool(Tool):
    name = "files"
    description = (
        "Read the user's files, only inside the folders they allowed. action=list: the entries of a folder "
        "(no path: the allowed folders); read: a text file (optionally from start_line, line_count lines); "
        "grep: lines matching pattern (plain text, or with regex=true an RE2 regular expression: no "
        "backreferences or lookaround) in a file or under a folder, as path:line: text."
    )
    parameters = {  # noqa: RUF012
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["list", "read", "grep"]},
            "path": {"type": "string", "description": "relative to an allowed folder, or absolute inside one"},
            "pattern": {"type": "string", "description": "grep: the text or regex to find"},
            "regex": {"type": "boolean", "description": "grep: pattern is a regular expression"},
            "ignore_case": {"type": "boolean"},
            "start_line": {"type": "integer", "minimum": 1, "description": "read: first line (1-based)"},
            "line_count": {"type": "integer", "minimum": 1, "description": "read: how many lines"},
            "max_matches": {"type": "integer", "minimum": 1, "maximum": MAX_MATCHES},
        },
        "required": ["action"],
        "additionalProperties": False,
    }
    safety = Safety.READ

    def run(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        roots = tuple(root.resolve() for root in context.roots)
        if not roots:
            raise ToolError("no folders are allowed; the user can allow one with --allow DIR")
        action = arguments["action"]
        if action == "list":
            return ToolResult(self._list(arguments.get("path"), roots))
        if action == "read":
            if not arguments.get("path"):
                raise ToolError("action 'read' needs 'path'")
            return ToolResult(self._read(arguments, roots))
        if action == "grep":
            return ToolResult(self._grep(arguments, roots, context))
        raise ToolError(f"unknown action {action!r}; one of: list, read, grep")

    def _list(self, path: str | None, roots: tuple[Path, ...]) -> str:
        if not path and len(roots) > 1:
            return "allowed folders:\n" + "\n".join(f"{root}/" for root in roots)
        folder = locate(path or str(roots[0]), roots)
        if not folder.is_dir():
            raise ToolError(f"{path}: not a folder")
        entries = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower()))
        lines = [f"{folder}/ ({len(entries)} entries)"]
        for entry in entries[:MAX_LIST_ENTRIES]:
            if entry.is_symlink():
                lines.append(f"{entry.name}@ (link)")
            elif entry.is_dir():
                lines.append(f"{entry.name}/")
            else:
                lines.append(f"{entry.name} ({_size(entry)})")
        if len(entries) > MAX_LIST_ENTRIES:
            lines.append(f"[{len(entries) - MAX_LIST_ENTRIES:,} more entries not shown]")
        return "\n".join(lines)

    def _read(self, arguments: dict[str, Any], roots: tuple[Path, ...]) -> str:
        path = locate(arguments["path"], roots)
        if path.is_dir():
            raise ToolError(f"{arguments['path']} is a folder; use action=list")
        if not path.is_file():  # a FIFO or device would block the read
            raise ToolError(f"{arguments['path']} is not a regular file")
        text = read_text(path)
        if "start_line" not in arguments and "line_count" not in arguments:
            return text
        lines = text.splitlines(keepends=True)
        start = arguments.get("start_line", 1)
        count = arguments.get("line_count", len(lines))
        chosen = lines[start - 1 : start - 1 + count]
        if not chosen:
            return f"[{path.name} has {len(lines):,} lines; nothing from line {start:,}]"
        return f"[{path.name}: lines {start:,}-{start + len(chosen) - 1:,} of {len(lines):,}]\n" + "".join(chosen)

    def _grep(self, arguments: dict[str, Any], roots: tuple[Path, ...], context: ToolContext) -> str:
        pattern = arguments.get("pattern")
        if not pattern:
            raise ToolError("action 'grep' needs 'pattern'")
        matcher = compile_pattern(
            pattern, regex=bool(arguments.get("regex")), ignore_case=bool(arguments.get("ignore_case"))
        )
        starts = [locate(arguments["path"], roots)] if arguments.get("path") else list(roots)
        limit = min(arguments.get("max_matches", DEFAULT_MATCHES), MAX_MATCHES)
        hits: list[str] = []
        skipped = searched = 0
        stopped = ""
        for path in _walk(starts, roots):
            if context.expired():
                stopped = f"[search stopped at the time limit after {searched:,} files]"
                break
            try:
                text = read_text(path)
            except (ToolError, OSError):
                skipped += 1
                continue
            searched += 1
            for number, line in enumerate(text.splitlines(), 1):
                if matcher.search(line):
                    if len(hits) == limit:
                        stopped = f"[stopped at {limit} matches; narrow the pattern or the path]"
                        break
                    hits.append(f"{_display(path, roots)}:{number}: {line[:MAX_LINE_CHARS]}")
            if stopped:
                break
        summary = f"{_count(len(hits), 'match', 'matches')} in {_count(searched, 'file', 'files')}"
        if skipped:
            summary += f" ({_count(skipped, 'binary or large file', 'binary or large files')} skipped)"
        return "\n".join([*hits, stopped, summary] if stopped else [*hits, summary])


def _walk(starts: list[Path], roots: tuple[Path, ...]) -> Iterator[Path]:
    """Files under ``starts`` whose resolved path stays inside the roots; symlinked folders are not entered."""
    for start in starts:
        if start.is_file():
            yield start
            continue
        for folder, dirs, names in os.walk(start):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            for name in sorted(names):
                path = Path(folder, name)
                resolved = path.resolve()
                if resolved.is_file() and any(resolved.is_relative_to(root) for root in roots):
                    yield resolved if path.is_symlink() else path


def _count(number: int, one: str, many: str) -> str:
    return f"{number:,} {one if number == 1 else many}"


def _display(path: Path, roots: tuple[Path, ...]) -> str:
    if len(roots) == 1 and path.is_relative_to(roots[0]):
        return str(path.relative_to(roots[0]))
    return str(path)


def _size(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return "unreadable"
    if size < 1024:
        return f"{size:,} bytes"
    return f"{size / 1024:,.1f} KB" if size < 1024 * 1024 else f"{size / (1024 * 1024):,.1f} MB"
