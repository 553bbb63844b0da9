"""Types shared by every backend and every front end (ask, chat, server).

A backend turns a prompt (chat messages, or raw text with ``--raw``) into a
:class:`TextStream`: an iterator of text pieces that, once exhausted or
interrupted, yields a :class:`Completion` with usage and timings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from time import perf_counter
from typing import Protocol

from localassist.settings import Settings


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant
    content: str
    interrupted: bool = False  # an answer cut short by Ctrl-C (kept, and marked)


Prompt = list[Message] | str  # str = raw completion, no chat template


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
    grammar: str | None = None  # GBNF; the sampler can only produce text it accepts
    ignore_eos: bool = False  # benchmarks: generate exactly max_tokens
    # No stop strings were given: a base model (or a raw completion) ends at a blank line,
    # since it rarely emits EOS and would otherwise ramble on to max_tokens.
    natural_end: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SamplingParams:
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


@dataclass(frozen=True)
class Timings:
    load_s: float
    ttft_s: float | None
    prompt_tokens_per_s: float | None
    generation_tokens_per_s: float | None
    total_s: float


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    finish_reason: str  # stop | length | interrupted
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    timings: Timings

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "cached_prompt_tokens": self.cached_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
            "timings": asdict(self.timings),
        }


@dataclass
class TextStream:
    """Iterate for text pieces; ``completion()`` afterwards, also after an interrupt.

    The producing generator updates the counters as it goes, so whatever stopped the
    iteration (the end, Ctrl-C, a closed pipe) the completion reflects what was really
    generated and shown.
    """

    model: str
    prompt_tokens: int
    cached_tokens: int
    load_s: float
    source: Iterator[str] | None = None
    parts: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    finish_reason: str | None = None
    t_start: float = field(default_factory=perf_counter)
    t_first: float | None = None
    t_end: float | None = None

    def __iter__(self) -> Iterator[str]:
        assert self.source is not None
        for piece in self.source:
            self.parts.append(piece)
            yield piece

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def completion(self) -> Completion:
        end = self.t_end or perf_counter()
        evaluated = self.prompt_tokens - self.cached_tokens
        prompt_s = (self.t_first - self.t_start) if self.t_first else None
        gen_s = (end - self.t_first) if self.t_first else None
        return Completion(
            text=self.text,
            model=self.model,
            finish_reason=self.finish_reason or "interrupted",
            prompt_tokens=self.prompt_tokens,
            cached_tokens=self.cached_tokens,
            completion_tokens=self.completion_tokens,
            timings=Timings(
                load_s=round(self.load_s, 4),
                ttft_s=round(prompt_s, 4) if prompt_s is not None else None,
                prompt_tokens_per_s=round(evaluated / prompt_s, 2) if prompt_s else None,
                generation_tokens_per_s=(
                    round((self.completion_tokens - 1) / gen_s, 2) if gen_s and self.completion_tokens > 1 else None
                ),
                total_s=round(end - self.t_start, 4),
            ),
        )


class Backend(Protocol):
    """What ask, chat, documents and the server need from an inference engine."""

    model_name: str
    n_ctx: int
    load_seconds: float

    def count_tokens(self, prompt: Prompt) -> int: ...

    def stream(self, prompt: Prompt, params: SamplingParams) -> TextStream: ...

    def describe(self) -> dict[str, object]: ...

    def close(self) -> None: ...
