"""The Assistant (chat session) with the real model: memory across turns, KV reuse, commands, transcripts."""

from __future__ import annotations

import json

import pytest

import chatformats
from chatformats import n_tokens
from localassist.assistant import Assistant
from localassist.conversation.memory import MemoryPolicy
from localassist.engine.types import Message, SamplingParams
from localassist.errors import InvalidSettingError, UsageError

pytestmark = pytest.mark.model


@pytest.fixture
def session(backend):
    return Assistant(backend, SamplingParams(temperature=0, max_tokens=12), system="You are terse.")


def answer(session, text, interrupt_after=None):
    turn = session.send(text)
    pieces = []
    for piece in turn.stream.text():
        pieces.append(piece)
        if interrupt_after is not None and len(pieces) >= interrupt_after:
            turn.cancel()
            break
    return session.finish(turn)


def test_follow_up_turns_evaluate_only_new_tokens(session, vocab):
    first = answer(session, "Name a fruit.")
    second = answer(session, "And the second one?")
    # turn 2 reuses turn 1's prompt and answer from the KV cache
    assert second.cached_tokens >= first.prompt_tokens + first.completion_tokens - 2
    assert second.prompt_tokens > first.prompt_tokens + first.completion_tokens
    third = answer(session, "And a third?")
    assert third.cached_tokens >= second.prompt_tokens + second.completion_tokens - 2
    chat = [("system", "You are terse.")]
    for question, done in (("Name a fruit.", first), ("And the second one?", second), ("And a third?", third)):
        chat += [("user", question), ("assistant", done.text)]
    assert session.used_tokens == n_tokens(vocab, chatformats.gemma(chat))


def test_the_model_sees_the_conversation(session, vocab):
    first = answer(session, "My name is Zoltan.")
    second = answer(session, "What is my name?")
    # what was sent is the whole conversation in Gemma's turns, counted by llama.cpp
    chat = [
        ("system", "You are terse."),
        ("user", "My name is Zoltan."),
        ("assistant", first.text),
        ("user", "What is my name?"),
    ]
    assert second.prompt_tokens == n_tokens(vocab, chatformats.gemma(chat))
    assert len(session.conversation.exchanges()) == 2


def test_regen_undo_clear(session):
    answer(session, "Hello")
    story = answer(session, "Tell me a story")
    regen = session.regen()
    assert regen.user.content == "Tell me a story"
    "".join(regen.stream.text())
    again = session.finish(regen)
    # the same question again, not a new one after the old answer: the same prompt
    assert again.prompt_tokens == story.prompt_tokens
    assert [m.content for m in session.conversation.turns if m.role == "user"] == ["Hello", "Tell me a story"]
    assert session.undo().content == "Tell me a story"
    assert len(session.conversation.turns) == 2
    session.clear()
    assert session.conversation.turns == [] and session.conversation.system == "You are terse."
    with pytest.raises(UsageError):
        session.regen()
    with pytest.raises(UsageError):
        session.undo()


def test_interrupted_answer_is_kept_and_marked(session):
    # the REPL stops reading the stream on Ctrl-C (tested for real in test_chat_repl); here, after 3 pieces
    turn = session.send("List the numbers from 1 to 300, separated by commas.")
    stream = turn.stream.text()
    shown = "".join(next(stream) for _ in range(3))
    turn.cancel()
    completion = session.finish(turn)
    assert completion.finish_reason == "cancelled"
    last = session.conversation.turns[-1]
    assert last.role == "assistant" and last.interrupted and shown and last.content == shown


def test_set_validates_like_flags(session):
    assert session.set("temperature", "0.5") == 0.5 and session.params.temperature == 0.5
    assert session.set("max-tokens", "64") == 64
    assert str(session.set("memory", "window:3")) == "window:3"
    session.set("system", "Be brief.")
    assert session.conversation.system == "Be brief."
    with pytest.raises(InvalidSettingError, match="between 0 and 2"):
        session.set("temperature", "9")
    with pytest.raises(UsageError, match="/set takes one of"):
        session.set("colour", "blue")


def test_save_and_load_round_trip(session, tmp_path):
    answer(session, "First question")
    answer(session, "List the numbers from 1 to 300, separated by commas.", interrupt_after=2)
    path = tmp_path / "talk.json"
    session.save(path)
    data = json.loads(path.read_text())
    assert data["system"] == "You are terse." and len(data["messages"]) == 4
    assert data["messages"][-1]["interrupted"] is True
    md = tmp_path / "talk.md"
    session.save(md)
    assert "## You" in md.read_text() and "*(interrupted)*" in md.read_text()

    other = Assistant(session.backend, session.params, memory=MemoryPolicy())
    assert other.load(path) == 4
    assert other.conversation.turns == session.conversation.turns
    assert other.conversation.system == "You are terse."
    with pytest.raises(UsageError, match="not a transcript"):
        other.load(md)
    with pytest.raises(UsageError, match="does not exist"):
        other.load(tmp_path / "missing.json")


def test_piped_context_is_pinned_in_the_system_prompt(backend):
    session = Assistant(backend, SamplingParams(temperature=0, max_tokens=8), context="Paris is in France.")
    assert "Paris is in France." in session.conversation.system
    session.set_system("Answer in French.")
    assert session.conversation.system.startswith("Answer in French.")
    assert "Paris is in France." in session.conversation.system
    session.clear()
    assert "Paris is in France." in session.conversation.system


def test_summary_policy_with_the_model_writing_the_summary(backend):
    session = Assistant(backend, SamplingParams(temperature=0, max_tokens=600), memory=MemoryPolicy("summary"))
    # budget = 1024 - 600 = 424 tokens: a few long exchanges overflow it
    for i in range(6):
        session.conversation.turns += [
            Message("user", f"Fact {i}: the sky is " + "blue " * 40),
            Message("assistant", "Noted. " * 10),
        ]
    turn = session.send("What colour did I mention?")
    assert turn.notice and turn.notice.startswith("summarized")
    assert session.conversation.summary
    assert turn.stream.prompt_tokens <= session.budget  # what is sent fits: summary + recent turns
    assert len(session.conversation.exchanges()) < 6
