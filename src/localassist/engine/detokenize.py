"""Incremental detokenization with stop strings, O(1) work per token.

llama-cpp-python's streaming completion re-detokenizes every generated token at
every step and scans stop strings over the whole text, which slows long answers.
Here each token's bytes go through an incremental UTF-8 decoder (a character split
across tokens is held back until complete) and stop strings are checked only on the
short tail that could still begin one.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence


class AfterText(str):
    """A stop string that ends an answer only once the answer has some non-whitespace text.

    The blank line a base model's completion stops at is one: a completion (or an answer
    after a tool result) that begins with blank lines has not ended before it started.
    """

    __slots__ = ()


# Where a base model's completion (and any raw one) stops when no stop string is given: the
# first blank line after some text. It rarely emits an end-of-sequence token.
NATURAL_END = AfterText("\n\n")


class IncrementalDetokenizer:
    def __init__(self, token_bytes: Callable[[int], bytes], stops: Sequence[str] = ()) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""
        self._has_text = False  # some non-whitespace text was shown
        self.stopped = False

    def push(self, token: int) -> str:
        """Feed one token; return the text that is now safe to show."""
        if self.stopped:
            return ""
        return self.push_text(self._decoder.decode(self._token_bytes(token)))

    def push_text(self, text: str) -> str:
        """Feed text that is already decoded (a remote server's); return what is safe to show."""
        if self.stopped:
            return ""
        self._pending += text
        if not self._stops:
            out, self._pending = self._pending, ""
            return out
        # The earliest match in the text wins, whatever the order the stops were given in.
        found = [i for i in (self._find(stop) for stop in self._stops) if i >= 0]
        if found:
            self.stopped = True
            out, self._pending = self._pending[: min(found)], ""
            return out
        keep = self._partial_stop_len()
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        self._has_text = self._has_text or bool(out.strip())
        return out

    def _find(self, stop: str) -> int:
        """Where ``stop`` begins in the pending text (-1: nowhere it may end the answer)."""
        start = 0
        if isinstance(stop, AfterText) and not self._has_text:
            start = next((i + 1 for i, c in enumerate(self._pending) if not c.isspace()), -1)
            if start < 0:
                return -1
        return self._pending.find(stop, start)

    def _partial_stop_len(self) -> int:
        """Length of the longest tail of the pending text that begins a stop string."""
        for size in range(min(self._hold, len(self._pending)), 0, -1):
            tail = self._pending[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0

    def flush(self) -> str:
        """The held-back text once generation ends (an unfinished stop string is shown)."""
        if self.stopped:
            return ""
        out = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return out
