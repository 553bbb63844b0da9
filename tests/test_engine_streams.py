"""The engine's stream contract on the real starter model: events that add up to Done,
usage that matches llama.cpp, cancel from any thread, and a backend shared by threads."""

from __future__ import annotations

import threading

import pytest

import chatformats
from chatformats import n_tokens
from localassist.engine.types import ChatRequest, Done, Message, SamplingParams, TextDelta
from localassist.errors import BackendError

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0, max_tokens=24)


def run_alone(backend, request: ChatRequest) -> str:
    return backend.chat(request).result().text


def test_two_threads_streaming_through_one_backend_get_what_each_gets_alone(backend):
    a = ChatRequest(prompt="1, 2, 3, 4,", sampling=GREEDY)
    b = ChatRequest(messages=(Message("user", "Name three colours of the rainbow."),), sampling=GREEDY)
    alone = {"a": run_alone(backend, a), "b": run_alone(backend, b)}
    assert alone["a"] != alone["b"]
    for _ in range(3):
        # both streams are created before either runs: the KV prefix must be decided when
        # each one starts, not when it was created
        streams = {"a": backend.chat(a), "b": backend.chat(b)}
        results: dict[str, str] = {}

        def consume(key: str, streams=streams, results=results) -> None:
            results[key] = "".join(streams[key].text())

        threads = [threading.Thread(target=consume, args=(key,)) for key in ("b", "a")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert results == alone


def test_interleaving_two_streams_in_one_thread_is_an_error_not_a_deadlock(backend):
    first = backend.chat(ChatRequest(prompt="1, 2, 3,", sampling=GREEDY))
    second = backend.chat(ChatRequest(prompt="a, b, c,", sampling=GREEDY))
    events = iter(first)
    next(events)
    with pytest.raises(BackendError, match="still streaming"):
        next(iter(second))
    first.cancel()
    assert first.result().finish_reason == "cancelled"
    assert run_alone(backend, ChatRequest(prompt="1, 2, 3,", sampling=GREEDY))  # the model is free again


def test_events_concatenate_to_done_and_usage_matches_llama_cpp(backend, vocab):
    sampling = SamplingParams(temperature=0, max_tokens=20)
    request = ChatRequest(messages=(Message("user", "Count to five."),), sampling=sampling)
    stream = backend.chat(request)
    events = list(stream)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    done = events[-1]
    assert isinstance(done, Done) and all(not isinstance(e, Done) for e in events[:-1])
    assert "".join(d.text for d in deltas) == done.text
    ids = [t for d in deltas for t in d.tokens]
    assert done.usage.completion_tokens == len(ids)
    # llama.cpp's own detokenizer gives back the text from the ids the events carried
    assert vocab.detokenize(ids).decode() == done.text or done.finish_reason == "stop"
    assert done.usage.prompt_tokens == n_tokens(vocab, chatformats.gemma([("user", "Count to five.")]))
    assert done.finish_reason in ("stop", "length")


def test_cancel_mid_stream_reports_cancelled_with_true_counts(backend, vocab):
    stream = backend.chat(ChatRequest(prompt="1, 2, 3, 4,", sampling=SamplingParams(temperature=0, max_tokens=200)))
    seen: list[int] = []
    text = ""
    for event in stream:
        if isinstance(event, TextDelta):
            seen += event.tokens
            text += event.text
        if len(seen) >= 5:
            stream.cancel()
    done = stream.result()
    assert done.finish_reason == "cancelled"
    assert done.completion_tokens == len(seen) and done.text == text
    assert vocab.detokenize(seen).decode() == text
    assert done.prompt_tokens == len(vocab.tokenize(b"1, 2, 3, 4,", add_bos=True, special=False))


def test_cancel_from_another_thread_stops_within_a_token(backend):
    stream = backend.chat(ChatRequest(prompt="1, 2, 3, 4,", sampling=SamplingParams(temperature=0, max_tokens=400)))
    counts: list[int] = []
    cancelled_at: list[int] = []

    def consume() -> None:
        for event in stream:
            if isinstance(event, TextDelta):
                counts.append(len(event.tokens))
                if sum(counts) >= 8 and not cancelled_at:
                    cancelled_at.append(sum(counts))
                    threading.Thread(target=stream.cancel).start()  # a disconnect, seen from elsewhere

    worker = threading.Thread(target=consume)
    worker.start()
    worker.join(timeout=120)
    done = stream.result()
    assert done.finish_reason == "cancelled"
    assert cancelled_at[0] <= done.completion_tokens <= cancelled_at[0] + 2
