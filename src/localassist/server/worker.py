"""One inference worker per loaded model, behind a bounded FIFO queue.

A llama.cpp context runs one generation at a time, so each model gets one thread that
takes jobs in arrival order; a model served with ``--parallel N`` (a ``BatchedBackend``,
which decodes N sequences together) gets N threads, each running one job. Admission
is decided at once, on the event loop: when ``max_queue`` jobs are already waiting,
``submit`` raises :class:`QueueFull` with a retry delay estimated from the recent
average job time, and the client gets 429 instead of waiting without bound. A running
job is never interrupted for a newcomer.

A job's events cross from the worker thread to the event loop through an asyncio
queue (``loop.call_soon_threadsafe``). ``Job.cancel`` works from the loop at any time:
a job still waiting is dropped; a running one has its ``ChatStream`` cancelled, which
the engine notices before the next token or prompt batch. Either way its consumer is
told at once, so a response (a timeout, the end of a shutdown) never waits for the
engine: a long prompt batch can take many seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from localassist.engine.types import ChatStream, Done

RETRY_AFTER_MAX_S = 60.0  # the openai client honours Retry-After only up to 60 s


class QueueFull(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"queue full; retry after {retry_after:.1f} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Stopped:
    """The job ended without a Done from the engine: dropped while waiting, or failed."""

    reason: str  # cancelled | error
    error: BaseException | None = None


class Job:
    """Work for a model's thread. ``run`` executes there; ``emit`` hands results to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.enqueued = perf_counter()
        self.started: float | None = None
        self.finished: float | None = None
        self.stop_reason: str | None = None  # why it was cancelled: disconnect | timeout | shutdown
        self.abandoned = False  # shutdown stopped waiting for it while it ran
        self._state = "queued"  # queued | running | dropped | done
        self._lock = threading.Lock()
        self.on_drop: Callable[[Job], None] = lambda _job: None  # the worker frees its queue slot
        self._when_finished: list[Callable[[], object]] = []

    @property
    def queue_s(self) -> float:
        return (self.started or perf_counter()) - self.enqueued

    def emit(self, item: Any) -> None:
        """From the worker thread."""
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    def begin(self) -> bool:
        """Worker side: claim the job; False if it was dropped while waiting."""
        with self._lock:
            if self._state != "queued":
                return False
            self._state = "running"
            self.started = perf_counter()
            return True

    def end(self) -> None:
        with self._lock:
            self._state = "done"
            self.finished = perf_counter()
            callbacks, self._when_finished = self._when_finished, []
        for fn in callbacks:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(fn)

    def when_finished(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the loop once the worker is done with this job (at once if it is,
        or if the job was dropped before it started)."""
        with self._lock:
            pending = self._state in ("queued", "running")
            if pending:
                self._when_finished.append(fn)
        if not pending:
            fn()

    def abandon(self) -> None:
        """Shutdown stops waiting for this job (its model did not stop in time): the
        ``when_finished`` callbacks run now, on the loop, though the worker is still in it."""
        with self._lock:
            self.abandoned = True  # its stream is still in use: nobody else may touch it
            callbacks, self._when_finished = self._when_finished, []
        for fn in callbacks:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(fn)

    def cancel(self, reason: str) -> None:
        """From the loop: drop a waiting job or cancel a running one (the engine stops
        before its next token or prompt batch); either way its consumer gets ``Stopped``
        at once."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            dropped = self._state == "queued"
            if dropped:
                self._state = "dropped"
            running = self._state == "running"
        if dropped:
            self.on_drop(self)
        if running:
            self.interrupt()
        if dropped or running:
            self.events.put_nowait(Stopped("cancelled"))

    def interrupt(self) -> None:  # pragma: no cover - overridden
        pass

    def run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class StreamJob(Job):
    """Iterates one ``ChatStream`` on the worker thread; each event goes to the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stream: ChatStream) -> None:
        super().__init__(loop)
        self.stream = stream

    def interrupt(self) -> None:
        self.stream.cancel()

    def run(self) -> None:
        done: Done | None = None
        for event in self.stream:
            if isinstance(event, Done):
                done = event
            else:
                self.emit(event)
        self.emit(done if done is not None else self.stream.result())


class CallJob(Job):
    """Runs ``fn()`` on the worker thread (embeddings); the result or error goes to the loop.
    A cancel sets ``stopping``: work that can stop between steps (a summary's map calls)
    watches it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> None:
        super().__init__(loop)
        self.fn = fn
        self.stopping = threading.Event()

    def interrupt(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        self.emit(("result", self.fn()))


class ModelWorker:
    def __init__(self, name: str, max_queue: int, history: int = 20, concurrency: int = 1) -> None:
        self.name = name
        self.max_queue = max_queue
        self.concurrency = concurrency
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._queued: set[Job] = set()
        self._current: set[Job] = set()
        self._durations: deque[float] = deque(maxlen=history)
        self._promised = 0.0  # when the last refused client was told to come back
        self._threads = [
            threading.Thread(target=self._loop, name=f"localassist-worker-{name}-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def waiting(self) -> int:
        return len(self._queued)

    @property
    def running(self) -> int:
        return len(self._current)

    def average_job_s(self) -> float:
        return sum(self._durations) / len(self._durations) if self._durations else 1.0

    def submit(self, job: Job) -> None:
        """Queue ``job``, or raise :class:`QueueFull` at once when ``max_queue`` jobs wait."""
        with self._lock:
            if len(self._queued) >= self.max_queue:
                raise QueueFull(self._promise_slot())
            self._queued.add(job)
        job.on_drop = self._drop
        self._jobs.put(job)

    def _drop(self, job: Job) -> None:
        with self._lock:
            self._queued.discard(job)

    def _promise_slot(self) -> float:
        """Seconds until a refused client should come back. The queue drains in about
        (running + waiting) x the average job time; each client refused meanwhile is
        given the next slot after the last one promised, one average job apart, so a
        burst of refused clients comes back spread out instead of all at once."""
        now = perf_counter()
        avg = self.average_job_s()
        drained = now + avg * (len(self._queued) + self.running) / self.concurrency
        self._promised = max(drained, self._promised + avg)
        return min(RETRY_AFTER_MAX_S, max(0.1, self._promised - now))

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._queued.discard(job)
            if not job.begin():
                continue
            with self._lock:
                self._current.add(job)
            try:
                job.run()
            except BaseException as exc:  # the consumer answers it; the worker lives on
                if not isinstance(exc, Exception):
                    sys.stderr.write(f"localassist: worker {self.name}: {type(exc).__name__}\n")
                job.emit(Stopped("error", exc))
            finally:
                job.end()
                with self._lock:
                    self._current.discard(job)
                if job.started is not None and job.finished is not None and job.stop_reason is None:
                    self._durations.append(job.finished - job.started)

    def cancel_all(self, reason: str) -> None:
        """From the loop (shutdown): drop every waiting job and cancel the running ones."""
        pending: list[Job] = []
        stopping = 0
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stopping += 1
            else:
                pending.append(job)
        for _ in range(stopping):
            self._jobs.put(None)
        for job in pending:
            job.cancel(reason)
        with self._lock:
            running = list(self._current)
        for job in running:
            job.cancel(reason)

    def stop(self, timeout: float) -> bool:
        """End the threads once their jobs are over (a cancelled generation ends within a
        token or prompt batch), waiting at most ``timeout`` seconds in all. True when they
        all did: only then may the model be freed. Otherwise the jobs still running are
        abandoned (their calls are recorded now, without the tokens of a stream)."""
        deadline = perf_counter() + timeout
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - perf_counter()))
        stopped = not any(thread.is_alive() for thread in self._threads)
        if not stopped:
            with self._lock:
                running = list(self._current)
            for job in running:
                job.abandon()
        return stopped


def ceil_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
