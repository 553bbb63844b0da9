"""The context on a remote engine, against a scripted server on 127.0.0.1: an estimate
(a server that cannot count) may warn but never refuses, and an overflow the server
reports is a context overflow like a local one, so the memory policy handles it."""

from __future__ import annotations

import pytest

from conftest import run_cli
from fakeremote import FakeRemote, Reply, chunk, models, sse, usage_chunk
from localassist.assistant import SUMMARY_INSTRUCTION, Assistant
from localassist.conversation.memory import MemoryPolicy
from localassist.engine.remote import RemoteBackend
from localassist.engine.token_estimate import estimate_messages
from localassist.engine.types import Message, SamplingParams

# what `localassist serve` answers for a prompt over its context (server/wire.py)
SERVE_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 256 tokens. However, you requested 300 tokens "
        "(284 in the prompt, 16 for the completion). Please reduce the length of the prompt or max_tokens.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}


def answer(*pieces: str) -> Reply:
    return Reply(lines=sse(*(chunk(p) for p in pieces), chunk(finish="stop"), usage_chunk(9, len(pieces))))


@pytest.fixture
def counting_nothing():
    """A server that reports its context (256) but has no tokenizer endpoint: vLLM's dialect."""
    with FakeRemote() as remote:
        remote.route("GET", "/v1/models", Reply(json=models("m", owned_by="vllm", max_model_len=256)))
        yield remote


def test_an_estimate_over_the_context_warns_and_lets_the_server_decide(counting_nothing):
    # prose the estimate puts over the context; the real count (about half) is the server's to judge
    prompt = "Say whether this fits: " + " ".join(["the cat sat on the mat"] * 25)
    assert estimate_messages([prompt]) + 16 > 256
    counting_nothing.route("POST", "/v1/chat/completions", answer("It", " fits"))
    result = run_cli("ask", "--base-url", counting_nothing.url, "-n", "16", prompt)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "It fits\n"
    assert "may not fit" in result.stderr and "estimated" in result.stderr
    sent = counting_nothing.posted("/v1/chat/completions")
    assert len(sent) == 1 and sent[0]["messages"][-1]["content"] == prompt  # sent whole
    # and when the server does refuse, that is the refusal: exit 4, in its words
    counting_nothing.route("POST", "/v1/chat/completions", Reply(400, json=SERVE_OVERFLOW))
    refused = run_cli("ask", "--base-url", counting_nothing.url, "-n", "16", prompt)
    assert refused.returncode == 4 and "maximum context length is 256" in refused.stderr


def test_remote_context_overflow_is_a_context_overflow_so_summary_memory_falls_back(counting_nothing):
    """The summary policy drops the oldest exchanges when summarizing them does not fit
    either; a remote server's overflow must reach that fallback, not end the turn."""
    counting_nothing.route(
        "POST",
        "/v1/chat/completions",
        Reply(400, json=SERVE_OVERFLOW),  # the summary request
        answer("Blue"),  # the question, once the oldest exchanges are dropped
    )
    backend = RemoteBackend(counting_nothing.url)
    assistant = Assistant(backend, SamplingParams(temperature=0, max_tokens=16), memory=MemoryPolicy("summary"))
    history = []
    for topic in ("apples", "boats", "clouds"):
        history += [
            Message("user", f"Tell me about {topic}: " + "one two three four five " * 4),
            Message("assistant", "ok"),
        ]
    question = "What colour is the sky?"
    # the history fits the budget (256 - 16) alone; with the question it does not, so memory acts
    assert backend.count(history) <= 256 - 16 < backend.count([*history, Message("user", question)])
    assert assistant.restore(history) is None

    turn = assistant.send(question)
    assert "".join(turn.stream.text()) == "Blue"
    assert turn.notice is not None and "dropped" in turn.notice
    summary, asked = counting_nothing.posted("/v1/chat/completions")
    assert summary["messages"][0] == {"role": "system", "content": SUMMARY_INSTRUCTION}
    assert asked["messages"][-1] == {"role": "user", "content": question}
    assert len(asked["messages"]) < len(history) + 1  # the oldest exchanges went
    backend.close()
