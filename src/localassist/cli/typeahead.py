"""Keys typed while an answer streams: kept for the next prompt, never drawn into the answer.

Between two prompts (an answer streaming, a command running) prompt_toolkit is not
reading, and a terminal in its normal mode echoes every key into the answer as it is
drawn, and edits the keys as a line of its own, turning Enter into a newline byte: an
Esc-Enter typed ahead reached the next prompt as Esc then Ctrl-J, which sends the line.
So for the whole chat, outside the prompt, the terminal neither echoes nor edits lines
(ECHO, ICANON, IEXTEN off) and leaves Enter as it is (ICRNL off); Ctrl-C still interrupts
(ISIG stays on), without discarding what was typed (NOFLSH). The keys wait in the
terminal's input queue, and the next prompt reads them as if they were typed there,
Esc-Enter included. prompt_toolkit saves the mode it finds and puts it back after each
prompt, so it comes back to this one.

A yes/no question asked between prompts (a tool's approval) is read as a line, in the
normal mode: the keys typed ahead are taken out of the queue first, so they cannot answer
it, and given to the next prompt.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Iterator

_held: _Held | None = None


class _Held:
    def __init__(self, fd: int, normal: list) -> None:
        self.fd = fd
        self.normal = normal
        self.quiet = [*normal[:6], list(normal[6])]
        import termios

        self.quiet[0] &= ~(termios.ICRNL | termios.INLCR | termios.IGNCR)
        self.quiet[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN)
        self.quiet[3] |= termios.NOFLSH  # Ctrl-C stops the answer, and keeps what was typed
        self.quiet[6][termios.VMIN], self.quiet[6][termios.VTIME] = 1, 0
        self.pending = b""  # keys taken out of the queue before a question, for the next prompt

    def set(self, attrs: list) -> None:
        import termios

        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)

    def drain(self) -> None:
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 4096)
            if not data:
                break
            self.pending += data


@contextlib.contextmanager
def held(fd: int | None) -> Iterator[None]:
    """Hold the keys typed on terminal ``fd`` between prompts (nothing when it is not one)."""
    global _held
    try:
        import termios

        normal = termios.tcgetattr(fd) if fd is not None and os.isatty(fd) else None
    except (ImportError, OSError, ValueError):  # Windows, a closed or odd stream
        normal = None
    if normal is None or fd is None or _held is not None:  # fd is None: normal is too
        yield
        return
    _held = _Held(fd, normal)
    _held.set(_held.quiet)
    try:
        yield
    finally:
        _held.set(_held.normal)
        _held = None


def take() -> str:
    """The keys taken out of the queue since the last prompt (before a question), as text."""
    if _held is None or not _held.pending:
        return ""
    data, _held.pending = _held.pending, b""
    return data.decode("utf-8", "surrogateescape")


@contextlib.contextmanager
def asking() -> Iterator[None]:
    """The terminal's normal mode for a question read as a line, with nothing typed ahead."""
    if _held is None:
        yield
        return
    held_now = _held
    with contextlib.suppress(OSError):
        held_now.drain()
    held_now.set(held_now.normal)
    try:
        yield
    finally:
        held_now.set(held_now.quiet)
