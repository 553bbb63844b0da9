"""Errors as the user sees them: every stderr line is the project's own."""

from __future__ import annotations


def only_our_lines(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert lines and all(line.startswith("localassist: ") for line in lines), stderr
    return lines
