"""Per-key limits: requests per minute and tokens per minute, over a sliding 60 s window.

A request is admitted when the key has made fewer than its requests/minute in the last
60 s and, for tokens/minute, when the tokens it used in the window plus this request's
prompt fit (a request alone larger than the limit is admitted into an empty window, or
it could never run). Tokens are counted when a call ends: prompt plus completion.
A refusal says when to retry: when enough of the window has expired.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 60.0


class _Usage:
    __slots__ = ("requests", "tokens")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()

    def expire(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW_S:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW_S:
            self.tokens.popleft()


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._usage: dict[str, _Usage] = {}
        self._lock = threading.Lock()

    def admit(self, key: str, requests_per_minute: int, tokens_per_minute: int, prompt_tokens: int) -> float | None:
        """None when admitted (and counted); else the seconds to wait before retrying.
        A limit of 0 is no limit."""
        with self._lock:
            now = self.clock()
            usage = self._usage.setdefault(key, _Usage())
            usage.expire(now)
            if requests_per_minute and len(usage.requests) >= requests_per_minute:
                oldest = usage.requests[len(usage.requests) - requests_per_minute]
                return _seconds(oldest + WINDOW_S - now)
            if tokens_per_minute and usage.tokens:
                used = sum(n for _, n in usage.tokens)
                if used + prompt_tokens > tokens_per_minute:
                    need = used + prompt_tokens - tokens_per_minute
                    freed = 0
                    for when, n in usage.tokens:  # wait until enough old tokens leave the window
                        freed += n
                        if freed >= need:
                            return _seconds(when + WINDOW_S - now)
                    return _seconds(usage.tokens[-1][0] + WINDOW_S - now)
            usage.requests.append(now)
            return None

    def used(self, key: str, tokens: int) -> None:
        if tokens <= 0:
            return
        with self._lock:
            self._usage.setdefault(key, _Usage()).tokens.append((self.clock(), tokens))


def _seconds(wait: float) -> float:
    return max(0.001, math.ceil(wait * 1000) / 1000)
