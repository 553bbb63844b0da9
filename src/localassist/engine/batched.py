"""Continuous batching: several conversations decoded together in one llama.cpp context.

``BatchedBackend`` implements the same ``Backend`` protocol as ``LocalBackend`` but runs
up to ``parallel`` generations at once, the way llama-server's slots do. One scheduler
thread owns the context; every step it builds one ``llama_batch`` with the next token of
each sequence that is generating plus a chunk of the prompt of each sequence that is
still reading its prompt, calls ``llama_decode`` once, and samples each sequence from its
own row of logits with its own sampler chain (penalties, grammar, greedy or top-k/p).
A request that arrives while others generate joins the batch at the next step; its
prompt is read in chunks (``chunk`` tokens a step at most) so the running streams keep
getting a token every step. Each sequence has its own stop strings, detokenizer and
cancel. A finished sequence keeps its KV cells: the next request is put on the free
sequence that already holds the longest prefix of its prompt (a returning conversation),
and only the rest is evaluated.

Sequence ``s`` of the context is KV stream ``s`` (llama.cpp splits ``n_ctx`` evenly when
the cache is not unified), so every request has the model's per-sequence context, as a
``LocalBackend`` with the same ``ctx`` would. Streams are iterated by any threads,
concurrently: events cross from the scheduler through a queue per request.

Tokenization, chat templates, grammars and sampler chains come from a ``LocalBackend``
loaded on the same file (the "host"); requests this loop does not handle (tool calls,
which need two decoding phases) are run by the host, one at a time, on its own context.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

from localassist.engine.detokenize import IncrementalDetokenizer
from localassist.engine.local import LoadOptions, LocalBackend
from localassist.engine.structured import answer_check
from localassist.engine.types import (
    BackendInfo,
    ChatRequest,
    ChatStream,
    Event,
    Grammar,
    Message,
    SamplingParams,
    StreamState,
    TextDelta,
)
from localassist.errors import BackendError, ContextOverflowError, ModelInvalidError, UsageError

_END = object()


@dataclass(eq=False)
class _Job:
    stream: ChatStream
    tokens: list[int]
    params: SamplingParams
    stops: tuple[str, ...]
    grammar: Grammar | None
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    finished: threading.Event = field(default_factory=threading.Event)
    sampler: Any = None
    detok: IncrementalDetokenizer | None = None
    pending: list[int] = field(default_factory=list)  # sampled tokens whose text is not out yet

    @property
    def state(self) -> StreamState:
        return self.stream.state


@dataclass(eq=False)
class _Slot:
    """One sequence of the context: what its KV cells hold, and the job using it."""

    seq: int
    tokens: list[int] = field(default_factory=list)  # the tokens in its KV cache, in order
    job: _Job | None = None
    next_token: int | None = None  # sampled, to be evaluated at the next step (generating)
    logits_at: int = -1  # row of this step's batch whose logits are this sequence's
    taken: int = 0  # prompt tokens put in this step's batch
    last_used: float = 0.0

    @property
    def reading(self) -> bool:
        return self.job is not None and self.next_token is None

    @property
    def busy(self) -> _Job:
        """The job of a slot that has one (a step visits only those)."""
        assert self.job is not None
        return self.job


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class BatchedBackend:
    """Up to ``parallel`` generations at once in one llama.cpp context."""

    def __init__(
        self,
        path: Path,
        name: str | None = None,
        options: LoadOptions | None = None,
        parallel: int = 4,
        chunk: int | None = None,
    ) -> None:
        if parallel < 1:
            raise UsageError(f"parallel must be at least 1 (got {parallel})")
        self.host = LocalBackend(path, name, options)
        self.options = self.host.options
        self.model_name = self.host.model_name
        self.n_ctx = self.host.n_ctx  # per sequence
        self.parallel = parallel
        self.batch = self.host.batch
        self.chunk = max(1, min(chunk or self.batch, self.batch))
        import llama_cpp
        from llama_cpp._internals import LlamaContext

        self._llama_cpp = llama_cpp
        start = perf_counter()
        params = llama_cpp.llama_context_params.from_buffer_copy(self.host.llm.context_params)
        params.n_ctx = self.n_ctx * parallel
        params.n_seq_max = parallel
        params.kv_unified = False  # one KV stream per sequence: each gets n_ctx, as llama-server's slots do
        try:
            self._ctx = LlamaContext(model=self.host.llm._model, params=params, verbose=self.options.verbose)
        except ValueError as exc:
            self.host.close()
            raise ModelInvalidError(f"llama.cpp could not make a context for {parallel} sequences: {exc}") from None
        self._batch = llama_cpp.llama_batch_init(self.batch, 0, parallel)
        self.load_seconds = self.host.load_seconds + perf_counter() - start
        self._vocab = self.host.llm._model.vocab
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._slots = [_Slot(seq) for seq in range(parallel)]
        self._waiting: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # llama_decode calls (tests: streams really share steps)

    # --- what the host does

    @property
    def template(self):
        return self.host.template

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]:
        return self.host.tokenize(text, special=special, add_bos=add_bos)

    def count(self, messages: Sequence[Message]) -> int:
        return self.host.count(messages)

    def chat_tokens(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> list[int]:
        return self.host.chat_tokens(messages, tools)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.host.embed(texts)

    def info(self) -> BackendInfo:
        info = self.host.info()
        info.details["parallel"] = self.parallel
        return info

    # --- requests

    def chat(self, request: ChatRequest) -> ChatStream:
        """Prepare the prompt (errors are raised here, before any token) and return the
        stream; the request joins the running batch when the stream is first iterated."""
        if request.tools or any(m.role == "tool" or m.tool_calls for m in request.messages):
            return self.host.chat(request)  # tool calls: two decoding phases, run by the host
        if request.prompt is None and not request.messages:
            raise UsageError("nothing to generate from: no messages and no prompt")
        host = self.host
        grammar = host._grammar_for(request)
        tokens = host._prompt_tokens(request)
        if len(tokens) + request.sampling.max_tokens > self.n_ctx:
            raise ContextOverflowError(len(tokens), request.sampling.max_tokens, self.n_ctx)
        stops = host.stop_strings(request)
        state = StreamState(self.model_name, len(tokens), load_s=self.load_seconds)
        job = lambda stream: self._events(_Job(stream, tokens, request.sampling, stops, grammar))  # noqa: E731
        return ChatStream(state, job, answer_check(request))

    def _events(self, job: _Job) -> Generator[Event, None, None]:
        with self._cond:
            if self._closed:
                raise BackendError(f"{self.model_name} is closed")
            self._waiting.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="localassist-batch", daemon=True)
                self._thread.start()
            self._cond.notify()
        try:
            while True:
                item = job.events.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not job.finished.is_set():  # the consumer went away: stop it and wait for the scheduler to let go
                job.stream.cancel()
                with self._cond:
                    self._cond.notify()
                job.finished.wait()
        yield job.state.done()

    # --- the scheduler thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not any(s.job for s in self._slots):
                    self._cond.wait()
                if self._closed:
                    self._fail_all(BackendError(f"{self.model_name} was closed while answering"))
                    return
                self._admit()
            if any(s.job for s in self._slots):
                try:
                    self._step()
                except Exception as exc:  # a failed decode ends every running answer, not the server
                    self._fail_running(BackendError(f"llama.cpp failed while generating: {exc}"))

    def _admit(self) -> None:
        """Waiting jobs take free sequences, each the one holding the longest prefix of its prompt."""
        while self._waiting:
            job = self._waiting[0]
            if job.stream.cancelled:
                self._waiting.popleft()
                job.state.t_start = job.state.t_end = perf_counter()
                self._end(job, "cancelled")
                continue
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            self._waiting.popleft()
            slot = max(free, key=lambda s: (common_prefix(s.tokens, job.tokens), -s.last_used))
            reuse = min(common_prefix(slot.tokens, job.tokens), len(job.tokens) - 1)
            mem = self._ctx.memory
            if not self._llama_cpp.llama_memory_seq_rm(mem, slot.seq, reuse, -1):
                self._llama_cpp.llama_memory_seq_rm(mem, slot.seq, -1, -1)
                reuse = 0
            slot.tokens = job.tokens[:reuse]
            job.state.cached_tokens = reuse
            job.state.t_start = perf_counter()
            try:
                job.sampler = self.host._sampler(job.params, job.grammar)
            except Exception as exc:  # this request fails, the others go on
                job.events.put(BackendError(f"cannot sample this request: {exc}"))
                job.finished.set()
                continue
            job.detok = IncrementalDetokenizer(self._piece, job.stops)
            slot.job, slot.next_token = job, None

    def _step(self) -> None:
        """One llama_decode: the next token of every generating sequence, then prompt chunks."""
        batch = self._batch
        n = 0
        active = [s for s in self._slots if s.job is not None]
        for slot in active:
            slot.logits_at, slot.taken = -1, 0
            if slot.next_token is not None:
                self._put(n, slot.next_token, len(slot.tokens), slot.seq, True)
                slot.logits_at = n
                n += 1
        budget = self.batch - n
        for slot in sorted((s for s in active if s.reading), key=lambda s: s.busy.state.t_start):
            if budget <= 0:
                break
            tokens, done = slot.busy.tokens, len(slot.tokens)
            take = min(budget, self.chunk, len(tokens) - done)
            for i in range(take):
                last = done + i == len(tokens) - 1
                self._put(n, tokens[done + i], done + i, slot.seq, last)
                if last:
                    slot.logits_at = n
                n += 1
            slot.taken = take
            budget -= take
        batch.n_tokens = n
        code = self._llama_cpp.llama_decode(self._ctx.ctx, batch)
        self.steps += 1
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        now = perf_counter()
        for slot in active:
            if slot.next_token is not None:
                slot.tokens.append(slot.next_token)
            else:
                slot.tokens += slot.busy.tokens[len(slot.tokens) : len(slot.tokens) + slot.taken]
            slot.last_used = now
            if slot.busy.stream.cancelled:
                self._release(slot, "cancelled")
            elif slot.logits_at >= 0:
                self._sample(slot)

    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _sample(self, slot: _Slot) -> None:
        job = slot.busy
        assert job.detok is not None  # set when the job took its slot
        state, params = job.state, job.params
        token = job.sampler.sample(self._ctx, slot.logits_at)
        if state.t_first is None:
            state.t_first = perf_counter()
        if not params.ignore_eos and self.host.is_end_of_generation(token):
            self._release(slot, "stop")
            return
        state.completion_tokens += 1
        job.pending.append(token)
        text = job.detok.push(token)
        if text:
            state.parts.append(text)
            job.events.put(TextDelta(text, tuple(job.pending)))
            job.pending = []
        if job.detok.stopped:
            self._release(slot, "stop")
        elif state.completion_tokens >= params.max_tokens:
            self._release(slot, "length")
        else:
            slot.next_token = token

    def _release(self, slot: _Slot, reason: str) -> None:
        job = slot.busy
        slot.job, slot.next_token = None, None
        self._end(job, reason)

    def _end(self, job: _Job, reason: str) -> None:
        state = job.state
        if job.detok is not None:
            tail = job.detok.flush()
            if tail or job.pending:
                state.parts.append(tail)
                job.events.put(TextDelta(tail, tuple(job.pending)))
        if job.sampler is not None:
            job.sampler.close()
        state.finish_reason = reason
        state.t_end = perf_counter()
        job.events.put(_END)
        job.finished.set()

    def _fail_running(self, error: BaseException) -> None:
        for slot in self._slots:
            if slot.job is not None:
                job = slot.job
                slot.job, slot.next_token, slot.tokens = None, None, []
                self._llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot.seq, -1, -1)
                job.events.put(error)
                job.state.t_end = perf_counter()
                job.finished.set()

    def _fail_all(self, error: BaseException) -> None:
        self._fail_running(error)
        while self._waiting:
            job = self._waiting.popleft()
            job.events.put(error)
            job.finished.set()

    def _piece(self, token: int) -> bytes:
        """A token's text, with this thread's own buffer (the host's is used by other threads)."""
        piece = self._pieces.get(token)
        if piece is None:
            buf = self._piece_buf
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:
                self._piece_buf = buf = ctypes.create_string_buffer(-n)
                n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    # --- the end

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        self._llama_cpp.llama_batch_free(self._batch)
        self._ctx.close()
        self.host.close()
