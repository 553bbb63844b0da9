"""Prometheus text exposition (format 0.0.4), written by hand: a few counters, gauges and
histograms need no client library. Updated from the event loop only."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out = []
        running = 0
        sep = "," if labels else ""
        for bound, n in zip([*self.buckets, float("inf")], self.counts, strict=True):
            running += n
            le = "+Inf" if bound == float("inf") else _num(bound)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {_num(self.sum)}", f"{name}_count{braces} {self.count}"]
        return out


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.ttft = Histogram((0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.decode_rate = Histogram((1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
        self.queue_wait = Histogram((0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.rejected_queue_full = 0

    def request(self, endpoint: str, status: int) -> None:
        self.requests[(endpoint, status)] += 1

    def generation(
        self, prompt_tokens: int, completion_tokens: int, ttft_s: float | None, rate: float | None, queue_s: float
    ) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        if rate is not None:
            self.decode_rate.observe(rate)
        self.queue_wait.observe(queue_s)

    def render(self, queues: Iterable[tuple[str, str, int, int]]) -> str:
        """``queues``: (model, kind, waiting, running) for every loaded model."""
        lines = [
            "# HELP localassist_requests_total HTTP requests by endpoint and status.",
            "# TYPE localassist_requests_total counter",
        ]
        for (endpoint, status), n in sorted(self.requests.items()):
            lines.append(f'localassist_requests_total{{endpoint="{_label(endpoint)}",status="{status}"}} {n}')
        lines += [
            "# HELP localassist_queue_depth Requests waiting for a model's worker.",
            "# TYPE localassist_queue_depth gauge",
        ]
        queues = list(queues)
        lines += [
            f'localassist_queue_depth{{model="{_label(m)}",kind="{kind}"}} {waiting}' for m, kind, waiting, _ in queues
        ]
        lines += [
            "# HELP localassist_requests_running Requests generating now (0 or 1 per model).",
            "# TYPE localassist_requests_running gauge",
        ]
        lines += [
            f'localassist_requests_running{{model="{_label(m)}",kind="{kind}"}} {running}'
            for m, kind, _, running in queues
        ]
        lines += [
            "# HELP localassist_queue_full_total Requests refused with 429 because the queue was full.",
            "# TYPE localassist_queue_full_total counter",
            f"localassist_queue_full_total {self.rejected_queue_full}",
            "# HELP localassist_tokens_total Tokens in (prompt) and out (completion).",
            "# TYPE localassist_tokens_total counter",
            f'localassist_tokens_total{{direction="in"}} {self.prompt_tokens}',
            f'localassist_tokens_total{{direction="out"}} {self.completion_tokens}',
            "# HELP localassist_time_to_first_token_seconds From arrival (queue wait included) to the first token.",
            "# TYPE localassist_time_to_first_token_seconds histogram",
            *self.ttft.lines("localassist_time_to_first_token_seconds"),
            "# HELP localassist_decode_tokens_per_second Generation speed of each request.",
            "# TYPE localassist_decode_tokens_per_second histogram",
            *self.decode_rate.lines("localassist_decode_tokens_per_second"),
            "# HELP localassist_queue_wait_seconds Time from admission to the worker starting the request.",
            "# TYPE localassist_queue_wait_seconds histogram",
            *self.queue_wait.lines("localassist_queue_wait_seconds"),
        ]
        return "\n".join(lines) + "\n"
