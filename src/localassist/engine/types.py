"""The one contract every front end (ask, chat, the server, documents, RAG, tools) and
every backend (llama.cpp in-process, a remote OpenAI-compatible engine) share.

It speaks OpenAI's vocabulary: a :class:`ChatRequest` of messages (roles system, user,
assistant, tool; tool calls and their ids), tools, a response format or grammar, and
sampling; and a :class:`ChatStream` of events: :class:`TextDelta`, :class:`ToolCallDelta`,
then one :class:`Done` with ``finish_reason`` in ``stop | length | tool_calls |
cancelled``, usage and timings. ``ChatStream.cancel()`` stops generation from any
thread (Ctrl-C, a closed pipe and a disconnected HTTP client all use it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from localassist.settings import Settings

FINISH_REASONS = ("stop", "length", "tool_calls", "cancelled")
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for, as a stream and an OpenAI message carry it: ``arguments``
    is JSON text, checked only when the call is run (``tools.ToolInvocation`` is a call
    with its arguments decoded)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant | tool
    content: str = ""
    interrupted: bool = False  # an answer cut short (kept, and marked)
    tool_calls: tuple[ToolCall, ...] = ()  # assistant: the calls it made
    tool_call_id: str | None = None  # tool: the call this is the result of
    name: str | None = None  # tool: the tool's name

    def as_openai(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int = -1
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # benchmarks: generate exactly max_tokens
    # No stop strings were given: a base model (or a raw completion) ends at the first blank
    # line after some text, since it rarely emits EOS and would otherwise ramble on to max_tokens.
    natural_end: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SamplingParams:
        """From a ``Settings`` (duck-typed: the engine does not depend on settings)."""
        return cls(
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            min_p=settings.min_p,
            repeat_penalty=settings.repeat_penalty,
            seed=settings.seed,
            max_tokens=settings.max_tokens,
            stop=tuple(settings.stop),
            natural_end=settings.sources.get("stop", "default") == "default",
        )

    def record(self) -> dict[str, Any]:
        """The values worth logging (defaults and empties left out)."""
        internal = ("ignore_eos", "natural_end")
        return {k: v for k, v in asdict(self).items() if k not in internal and v not in ((), None)}


@dataclass(frozen=True)
class ResponseFormat:
    """OpenAI's ``response_format``: ``json_object`` (any JSON) or ``json_schema``."""

    type: str  # text | json_object | json_schema
    schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class GuidedGrammar:
    """A grammar for llguidance (compiled from a JSON schema or a tool-call format); a
    plain ``str`` grammar is GBNF for llama.cpp's own sampler."""

    text: str


Grammar = str | GuidedGrammar


@dataclass(frozen=True)
class ChatRequest:
    """Everything one generation needs. ``prompt`` (a plain completion, no chat template)
    or ``messages``; a ``grammar`` (GBNF) or a ``response_format`` constrains the answer."""

    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = False  # off by default, as in llama-server: small models repeat a call
    response_format: ResponseFormat | None = None
    grammar: str | None = None

    @property
    def raw(self) -> bool:
        return self.prompt is not None


# --- events


@dataclass(frozen=True)
class TextDelta:
    text: str
    tokens: tuple[int, ...] = ()  # the token ids that produced it (local engines)


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call, keyed by ``index``: id and name once, then argument text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    load_s: float
    ttft_s: float | None
    prompt_tokens_per_s: float | None
    generation_tokens_per_s: float | None
    total_s: float


@dataclass(frozen=True)
class Done:
    """The last event: the whole answer, why it ended, what it cost."""

    text: str
    model: str
    finish_reason: str  # stop | length | tool_calls | cancelled
    usage: Usage
    timings: Timings
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def prompt_tokens(self) -> int:
        return self.usage.prompt_tokens

    @property
    def cached_tokens(self) -> int:
        return self.usage.cached_tokens

    @property
    def completion_tokens(self) -> int:
        return self.usage.completion_tokens

    @property
    def cancelled(self) -> bool:
        return self.finish_reason == "cancelled"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "cached_prompt_tokens": self.cached_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "timings": asdict(self.timings),
        }
        if self.tool_calls:
            out["tool_calls"] = [asdict(c) for c in self.tool_calls]
        return out


Event = TextDelta | ToolCallDelta | Done


@dataclass
class StreamState:
    """What a producing generator has done so far, so a stream stopped at any point
    (the end, cancel, Ctrl-C, a closed pipe) still yields an honest :class:`Done`."""

    model: str
    prompt_tokens: int
    cached_tokens: int = 0
    load_s: float = 0.0
    completion_tokens: int = 0
    parts: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    t_start: float = field(default_factory=perf_counter)
    t_first: float | None = None
    t_end: float | None = None

    def done(self, finish_reason: str | None = None) -> Done:
        end = self.t_end or perf_counter()
        evaluated = self.prompt_tokens - self.cached_tokens
        prompt_s = (self.t_first - self.t_start) if self.t_first else None
        gen_s = (end - self.t_first) if self.t_first else None
        reason = finish_reason or self.finish_reason or "cancelled"
        return Done(
            text="".join(self.parts),
            model=self.model,
            finish_reason=reason,
            usage=Usage(self.prompt_tokens, self.cached_tokens, self.completion_tokens),
            timings=Timings(
                load_s=round(self.load_s, 4),
                ttft_s=round(prompt_s, 4) if prompt_s is not None else None,
                prompt_tokens_per_s=round(evaluated / prompt_s, 2) if prompt_s else None,
                generation_tokens_per_s=(
                    round((self.completion_tokens - 1) / gen_s, 2) if gen_s and self.completion_tokens > 1 else None
                ),
                total_s=round(end - self.t_start, 4),
            ),
            tool_calls=tuple(self.tool_calls),
        )


class ChatStream:
    """Iterate for events; the last one is a :class:`Done`. ``cancel()`` may be called
    from any thread: the producer stops before its next token. After any stop (the
    end, cancel, an exception such as Ctrl-C in the consumer) ``result()`` gives the
    :class:`Done` for what was really generated."""

    def __init__(
        self,
        state: StreamState,
        produce: Callable[[ChatStream], Generator[Event, None, None]],  # a generator: close() ends it
        check: Callable[[Done], None] | None = None,
    ) -> None:
        self.state = state
        self._cancel = threading.Event()
        self._events = produce(self)
        self._done: Done | None = None
        self._check = check  # a structured answer's validation: raises before its Done

    @property
    def model(self) -> str:
        return self.state.model

    @property
    def prompt_tokens(self) -> int:
        return self.state.prompt_tokens

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[Event]:
        for event in self._events:
            if isinstance(event, Done):
                self._done = event  # what was generated, even when the check below refuses it
                if self._check is not None and event.finish_reason in ("stop", "tool_calls"):
                    self._check(event)  # an answer that breaks its schema never ends as a success
            yield event

    def text(self) -> Iterator[str]:
        """Just the text pieces."""
        for event in self:
            if isinstance(event, TextDelta) and event.text:
                yield event.text

    def close(self) -> None:
        """Stop for good (the consumer went away): the producer's cleanup runs now."""
        self._cancel.set()
        self._events.close()

    def result(self) -> Done:
        """The final event; iterates what is left (nothing, if cancelled or broken off)."""
        if self._done is None:
            if self.state.t_end is None and not self.cancelled:
                for _ in self:
                    pass
            if self._done is None:
                self.close()
                self._done = self.state.done("cancelled")
        return self._done


def collect(stream: ChatStream) -> Done:
    """Run a stream to its end; Ctrl-C cancels it (and is re-raised)."""
    try:
        return stream.result()
    except KeyboardInterrupt:
        stream.cancel()
        stream.result()
        raise


# --- backends


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is and can do."""

    model: str
    n_ctx: int
    remote: bool = False
    tools: bool = False
    grammar: bool = True
    embeddings: bool = False
    embedding_dimension: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # for -v and /show


class Backend(Protocol):
    """What ask, chat, documents, RAG and the server need from an inference engine."""

    model_name: str
    n_ctx: int
    load_seconds: float

    def chat(self, request: ChatRequest) -> ChatStream: ...

    def tokenize(self, text: str, *, special: bool = False) -> list[int]: ...

    def count(self, messages: Sequence[Message]) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def info(self) -> BackendInfo: ...

    def close(self) -> None: ...


def server_decides(backend: Backend) -> bool:
    """Whether ``backend``'s token counts are only an estimate that may plan and warn but
    never cut text or refuse (a remote server that cannot count: it counts, and decides).
    False for exact counts, and for Ollama, which would clip a prompt that does not fit
    without an error, so its estimate refuses as a count does."""
    return not getattr(backend, "exact_tokens", True) and not getattr(backend, "clips_silently", False)
