"""Conversation memory: what of a long conversation still goes to the model.

Tokens are counted with the model's own tokenizer on the rendered chat template
(``count`` is ``Backend.count``), except on a remote server that cannot count, where it
is a conservative estimate: then a prompt that seems too long is sent with a warning and
the server decides, since only an exact count may refuse. The budget is the context
window minus ``max_tokens``. The system prompt is never dropped.

Policies:
  buffer    every turn until the budget is reached, then the oldest exchanges go;
  window:K  the last K exchanges (then, if still too long, as buffer);
  summary   at the budget, older exchanges are replaced by a summary the model writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from localassist.engine.types import Message
from localassist.errors import ContextOverflowError, UsageError

Counter = Callable[[list[Message]], int]
Summarizer = Callable[[list[Message]], str]

SUMMARY_PREFIX = "Summary of the earlier conversation:"


@dataclass(frozen=True)
class MemoryPolicy:
    kind: str = "buffer"  # buffer | window | summary
    window: int = 0

    @classmethod
    def parse(cls, text: str) -> MemoryPolicy:
        from localassist.settings import parse_memory

        try:
            kind, _, size = parse_memory(text).partition(":")
        except ValueError:
            raise UsageError(f"memory must be buffer, window:K (K >= 1) or summary (got {text!r})") from None
        return cls(kind, int(size) if size else 0)

    def __str__(self) -> str:
        return f"window:{self.window}" if self.kind == "window" else self.kind


@dataclass
class Conversation:
    """The system prompt, an optional summary of dropped turns, and the turns."""

    system: str | None = None
    summary: str | None = None
    turns: list[Message] = field(default_factory=list)

    def messages(self, extra: list[Message] | None = None) -> list[Message]:
        system = self.system or ""
        if self.summary:
            system = f"{system}\n\n{SUMMARY_PREFIX}\n{self.summary}".strip()
        head = [Message("system", system)] if system else []
        return head + self.turns + (extra or [])

    def exchanges(self) -> list[list[Message]]:
        """Turns grouped as [user, assistant...] exchanges, oldest first."""
        groups: list[list[Message]] = []
        for message in self.turns:
            if message.role == "user" or not groups:
                groups.append([message])
            else:
                groups[-1].append(message)
        return groups


@dataclass(frozen=True)
class FitReport:
    """What ``fit`` did, for the one-line notice the REPL prints."""

    tokens: int
    dropped_exchanges: int = 0
    dropped_tokens: int = 0
    summarized_exchanges: int = 0
    may_not_fit: str | None = None  # an estimate over the context: sent anyway, the server decides

    def notice(self) -> str | None:
        if self.summarized_exchanges:
            return (
                f"summarized {self.summarized_exchanges} oldest "
                f"{'exchange' if self.summarized_exchanges == 1 else 'exchanges'} "
                f"({self.dropped_tokens:,} tokens) to fit the context"
            )
        if self.dropped_exchanges:
            dropped = (
                f"dropped {self.dropped_exchanges} oldest "
                f"{'exchange' if self.dropped_exchanges == 1 else 'exchanges'}, "
                f"{self.dropped_tokens:,} tokens, to fit the context"
            )
            return f"{dropped}; {self.may_not_fit}" if self.may_not_fit else dropped
        return self.may_not_fit


def _window(conversation: Conversation, size: int) -> int:
    """Keep the last ``size`` exchanges; return how many were dropped.

    LangChain's ``trim_messages`` does this counting in messages, starting on a
    human turn and keeping the system message apart.
    """
    from langchain_core.messages import AIMessage, HumanMessage, trim_messages

    exchanges = conversation.exchanges()
    if len(exchanges) <= size:
        return 0
    as_lc = [
        (HumanMessage if m.role == "user" else AIMessage)(content=m.content, id=str(i))
        for i, m in enumerate(conversation.turns)
    ]
    kept_lc = trim_messages(
        as_lc, max_tokens=2 * size, token_counter=len, strategy="last", start_on="human", allow_partial=False
    )
    first_kept = len(conversation.turns)
    if kept_lc:
        assert kept_lc[0].id is not None  # each message's id is its turn's index, set above
        first_kept = int(kept_lc[0].id)
    dropped = sum(1 for m in conversation.turns[:first_kept] if m.role == "user")
    conversation.turns = conversation.turns[first_kept:]
    return dropped


def fit(
    conversation: Conversation,
    new: list[Message],
    budget: int,
    count: Counter,
    policy: MemoryPolicy,
    summarize: Summarizer | None = None,
    max_tokens: int = 0,
    exact: bool = True,
) -> FitReport:
    """Shrink ``conversation`` (in place) so that it plus ``new`` fits ``budget`` tokens.

    ``exact`` False: ``count`` is an estimate above the real count (a server that cannot
    count). A prompt it puts over the budget even alone is not refused, and the history is
    not dropped for it either (what to drop would be the estimate's guess): it is kept as
    the policy's window left it, the report says it may not fit, and the server, which
    counts, decides."""
    before = count(conversation.messages(new))
    dropped = _window(conversation, policy.window) if policy.kind == "window" else 0
    tokens = count(conversation.messages(new)) if dropped else before
    if tokens <= budget:
        return FitReport(tokens, dropped, before - tokens if dropped else 0)

    alone = count(Conversation(conversation.system).messages(new))
    if alone > budget:
        if exact:
            raise ContextOverflowError(alone, max_tokens, budget + max_tokens)
        may_not_fit = (
            f"the input may not fit the context: about {tokens:,} prompt tokens (estimated: the server cannot "
            f"count them) + {max_tokens:,} max tokens > {budget + max_tokens:,} context; sent anyway, the server "
            "decides"
        )
        return FitReport(tokens, dropped, before - tokens if dropped else 0, may_not_fit=may_not_fit)

    exchanges = conversation.exchanges()
    if policy.kind == "summary" and summarize is not None and exchanges:
        # Summarize the older half and keep the recent exchanges verbatim; if that is not
        # enough, summarize everything (each summary costs a generation, so two tries at most).
        earlier = [Message("system", f"{SUMMARY_PREFIX}\n{conversation.summary}")] if conversation.summary else []
        for cut in sorted({max(1, len(exchanges) // 2), len(exchanges)}):
            old = [m for group in exchanges[:cut] for m in group]
            candidate = Conversation(conversation.system, None, [m for group in exchanges[cut:] for m in group])
            try:
                candidate.summary = summarize(earlier + old)
            except ContextOverflowError:  # too much to summarize in one go: drop instead
                tokens = budget + 1
                break
            tokens = count(candidate.messages(new))
            if tokens <= budget:
                break
        if tokens <= budget:
            conversation.summary, conversation.turns = candidate.summary, candidate.turns
            return FitReport(tokens, 0, before - tokens, summarized_exchanges=cut)
        # Summarizing did not make room: fall back to dropping the oldest exchanges.

    while conversation.turns and tokens > budget:
        exchanges = conversation.exchanges()
        conversation.turns = [m for group in exchanges[1:] for m in group]
        dropped += 1
        tokens = count(conversation.messages(new))
    if tokens > budget:  # the summary note is the last thing left to let go of
        conversation.summary = None
        tokens = count(conversation.messages(new))
    return FitReport(tokens, dropped, before - tokens)
