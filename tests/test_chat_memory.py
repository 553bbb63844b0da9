"""Memory policies, counted with the real tokenizer on the real chat template."""

from __future__ import annotations

import pytest

import chatformats
from chatformats import n_tokens
from localassist.conversation.memory import Conversation, MemoryPolicy, fit
from localassist.engine.types import Message
from localassist.errors import ContextOverflowError, UsageError

pytestmark = pytest.mark.model


def conversation(n: int, system: str | None = "You are terse.") -> Conversation:
    turns = []
    for i in range(n):
        turns += [
            Message("user", f"Question {i}: tell me about topic number {i}, please."),
            Message("assistant", f"Answer {i}: topic {i} is interesting for reasons " + "and more " * 8),
        ]
    return Conversation(system, None, turns)


def test_counts_are_exact_tokens_of_the_rendered_template(backend, vocab):
    messages = conversation(2).messages()
    # the oracle: Gemma's turns written out by hand, tokenized by llama.cpp
    expected = chatformats.gemma([(m.role, m.content) for m in messages])
    assert backend.chat_tokens(messages) == chatformats.tokens(vocab, expected)  # the very tokens, not only as many
    assert backend.count(messages) == n_tokens(vocab, expected)
    assert backend.count(messages) != n_tokens(vocab, expected, special=False)  # markers are single tokens


@pytest.mark.parametrize("text", ["buffer", "window:3", "summary"])
def test_policy_names_round_trip(text):
    assert str(MemoryPolicy.parse(text)) == text


@pytest.mark.parametrize("text", ["window:0", "window:x", "lru", ""])
def test_bad_policy_is_a_usage_error(text):
    with pytest.raises(UsageError, match="buffer, window:K"):
        MemoryPolicy.parse(text)


def test_buffer_keeps_everything_that_fits(backend):
    conv = conversation(3)
    report = fit(conv, [Message("user", "next")], 1000, backend.count, MemoryPolicy())
    assert len(conv.turns) == 6 and report.notice() is None


def test_buffer_drops_oldest_exchanges_and_pins_the_system_prompt(backend):
    conv = conversation(10)
    new = [Message("user", "And the last question?")]
    full = backend.count(conv.messages(new))
    budget = full // 2
    report = fit(conv, new, budget, backend.count, MemoryPolicy())
    assert report.tokens <= budget
    assert report.tokens == backend.count(conv.messages(new))
    assert report.dropped_exchanges >= 4
    # no more than needed: keeping the newest dropped exchange as well would not fit
    last_dropped = conversation(10).exchanges()[report.dropped_exchanges - 1]
    assert backend.count(Conversation(conv.system, None, last_dropped + conv.turns).messages(new)) > budget
    assert report.dropped_tokens == full - report.tokens
    assert conv.system == "You are terse."
    assert conv.messages(new)[0] == Message("system", "You are terse.")
    assert conv.turns[0].content.startswith(f"Question {report.dropped_exchanges}:")  # oldest went first
    assert conv.turns[-1].content.startswith("Answer 9")
    assert f"dropped {report.dropped_exchanges} oldest exchanges" in report.notice()


def test_window_keeps_the_last_k_exchanges(backend):
    conv = conversation(6)
    report = fit(conv, [Message("user", "next")], 10_000, backend.count, MemoryPolicy.parse("window:2"))
    assert [m.content[:10] for m in conv.turns] == ["Question 4", "Answer 4: ", "Question 5", "Answer 5: "]
    assert report.dropped_exchanges == 4 and report.notice().startswith("dropped 4 oldest exchanges")


def test_summary_replaces_old_turns_with_a_note(backend):
    conv = conversation(8)
    new = [Message("user", "What did we cover?")]
    budget = backend.count(conv.messages(new)) * 2 // 3
    seen: list[list[Message]] = []

    def summarize(messages: list[Message]) -> str:
        seen.append(messages)
        return "We covered topics " + ", ".join(m.content.split(":")[0] for m in messages if m.role == "user")

    report = fit(conv, new, budget, backend.count, MemoryPolicy("summary"), summarize)
    assert report.tokens <= budget
    assert report.summarized_exchanges >= 1
    assert conv.summary and conv.summary.startswith("We covered topics Question 0")
    system = conv.messages(new)[0]
    assert system.role == "system" and system.content.startswith("You are terse.")
    assert "Summary of the earlier conversation" in system.content
    assert "summarized" in report.notice()
    assert seen[0][0].content.startswith("Question 0")


def test_a_message_that_cannot_fit_alone_is_a_clear_error(backend):
    conv = conversation(2)
    huge = [Message("user", "word " * 600)]
    with pytest.raises(ContextOverflowError, match="does not fit the context"):
        fit(conv, huge, 300, backend.count, MemoryPolicy(), max_tokens=100)
    assert len(conv.turns) == 4  # nothing was dropped for a hopeless message
