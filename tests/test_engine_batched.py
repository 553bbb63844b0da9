"""Continuous batching (engine/batched.py) on the real starter model: several streams in
one llama.cpp context, each with its own answer, sampler, grammar, stop strings and cancel."""

from __future__ import annotations

import json
import threading
import time

import pytest

from localassist.engine.types import ChatRequest, Message, ResponseFormat, SamplingParams, TextDelta

pytestmark = pytest.mark.model

# Prompts whose continuations cannot be confused with one another: an answer that took a
# token from another sequence's row of logits would show it at once. What each continues
# with comes from the `greedy` oracle, on this machine.
SEQUENCES = ("1, 2, 3, 4, 5, 6,", "Monday, Tuesday, Wednesday,", "a, b, c, d, e, f,", "January, February, March,")


@pytest.fixture(scope="module")
def expected(greedy) -> dict[str, str]:
    """Each prompt's first two greedy tokens, from llama.cpp alone."""
    return {p: "".join(greedy(p, 2)) for p in SEQUENCES}


@pytest.fixture(scope="module")
def batched(starter_model):
    from localassist.engine.batched import BatchedBackend
    from localassist.engine.local import LoadOptions

    backend = BatchedBackend(starter_model, "starter", LoadOptions(ctx=1024, threads=2), parallel=4, chunk=64)
    yield backend
    backend.close()


def raw(prompt: str, max_tokens: int = 6, **sampling) -> ChatRequest:
    return ChatRequest(prompt=prompt, sampling=SamplingParams(temperature=0, max_tokens=max_tokens, **sampling))


def run_together(backend, requests: list[ChatRequest]) -> list:
    """Start every stream, then iterate each in its own thread."""
    streams = [backend.chat(r) for r in requests]
    results: list = [None] * len(streams)
    errors: list[BaseException] = []

    def consume(i: int) -> None:
        try:
            results[i] = streams[i].result()
        except BaseException as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def test_concurrent_streams_each_continue_their_own_prompt(batched, expected):
    steps = batched.steps
    done = run_together(batched, [raw(p, 6) for p in SEQUENCES])
    assert len(set(expected.values())) == len(SEQUENCES)  # no two alike: a mix-up would show
    for prompt, answer in zip(SEQUENCES, done, strict=True):
        assert answer.text.startswith(expected[prompt]), (prompt, answer.text)
        assert answer.completion_tokens == 6 and answer.finish_reason == "length"
    # decoded together: about 6 steps for 4 x 6 tokens, not 24
    assert batched.steps - steps <= 6 + 4


def test_batched_answers_start_as_the_answers_alone(batched, backend):
    """The first tokens equal a single-sequence LocalBackend's. Later ones may differ:
    llama.cpp computes a batch of 4 rows with other kernel paths than a batch of 1, so
    the logits differ slightly (llama-server's slots do the same; see docs/performance.md)."""
    requests = [raw(p, 3) for p in SEQUENCES]
    alone = [backend.chat(r).result().text for r in requests]
    together = [d.text for d in run_together(batched, requests)]
    assert together == alone


def test_cancelling_one_stream_leaves_the_others_running(batched):
    requests = [raw(p, 40, ignore_eos=True) for p in SEQUENCES]
    streams = [batched.chat(r) for r in requests]
    results: dict[int, object] = {}
    victim = 1

    def consume(i: int) -> None:
        seen = 0
        for event in streams[i]:
            if isinstance(event, TextDelta):
                seen += len(event.tokens)
                if i == victim and seen >= 3:
                    streams[i].cancel()
        results[i] = streams[i].result()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results[victim].finish_reason == "cancelled"
    assert 3 <= results[victim].completion_tokens < 10
    for i in set(results) - {victim}:
        assert (results[i].finish_reason, results[i].completion_tokens) == ("length", 40)


def test_closing_a_stream_early_cancels_it(batched):
    stream = batched.chat(raw("1, 2, 3,", 40, ignore_eos=True))
    for event in stream:
        if isinstance(event, TextDelta):
            break
    stream.close()
    done = stream.result()
    assert done.finish_reason == "cancelled" and done.completion_tokens < 40
    # the sequence is free again: a new request runs to its end
    assert batched.chat(raw("a, b, c,", 4)).result().finish_reason == "length"


def test_grammar_constrained_request_batched_with_free_ones_stays_valid(batched, expected):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    constrained = ChatRequest(
        messages=(Message("user", "Describe a person as JSON."),),
        sampling=SamplingParams(temperature=0, max_tokens=60),
        response_format=ResponseFormat("json_schema", schema),
    )
    free = [raw(p, 30, ignore_eos=True) for p in list(SEQUENCES)[:3]]
    done = run_together(batched, [*free, constrained])
    assert done[-1].finish_reason == "stop", done[-1]
    jsonschema.validate(json.loads(done[-1].text), schema)
    for prompt, answer in zip(SEQUENCES[:3], done[:3], strict=True):
        assert answer.text.startswith(expected[prompt]), (prompt, answer.text)  # the grammar did not leak into them


def test_stop_strings_are_per_stream(batched, greedy):
    pieces = greedy("1, 2, 3, 4,", 3)
    before, stop = "".join(pieces[:2]), pieces[2]  # the third token's text stops one stream only
    assert stop.strip() and stop not in before + stop[:-1], pieces
    a, b = run_together(batched, [raw("1, 2, 3, 4,", 20, stop=(stop,)), raw("1, 2, 3, 4,", 8)])
    assert a.text == before and a.finish_reason == "stop"
    assert b.text.startswith(before + stop) and b.finish_reason == "length"


def test_newcomer_joins_the_running_batch_and_its_prompt_is_read_in_chunks(batched):
    """A long prompt arriving mid-answer is read 64 tokens a step, while the running stream
    keeps getting a token every step."""
    timeline: list[tuple[str, float]] = []
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 40  # ~400 tokens
    running = batched.chat(raw("1, 2, 3,", 60, ignore_eos=True))
    late = batched.chat(raw(long_prompt + "1, 2, 3,", 3))

    def consume(name: str, stream) -> None:
        for event in stream:
            if isinstance(event, TextDelta):
                timeline.append((name, time.perf_counter()))

    first = threading.Thread(target=consume, args=("running", running))
    first.start()
    while sum(1 for name, _ in timeline if name == "running") < 5:
        time.sleep(0.01)
    joined = time.perf_counter()
    second = threading.Thread(target=consume, args=("late", late))
    second.start()
    first.join(120)
    second.join(120)
    late_first = min(t for name, t in timeline if name == "late")
    running_after = [t for name, t in timeline if name == "running" and t > joined]
    assert late_first < max(running_after)  # it joined the batch, it did not wait for the end
    during_prompt = [t for t in running_after if t < late_first]
    assert len(during_prompt) >= 4  # ~400 prompt tokens / 64 a step: the stream went on meanwhile
    assert late.result().prompt_tokens > 300


def test_returning_conversation_reuses_its_sequence(batched):
    first = ChatRequest(
        messages=(Message("user", "Tell me about the sea and the ships on it."),),
        sampling=SamplingParams(temperature=0, max_tokens=8),
    )
    answer = batched.chat(first).result()
    run_together(batched, [raw(p, 4) for p in SEQUENCES[:2]])  # others use other sequences meanwhile
    follow = ChatRequest(
        messages=(*first.messages, Message("assistant", answer.text), Message("user", "And the harbours?")),
        sampling=SamplingParams(temperature=0, max_tokens=4),
    )
    again = batched.chat(follow).result()
    prompt = batched.chat_tokens(first.messages)
    kept = len(prompt) + answer.completion_tokens - (1 if answer.finish_reason == "length" else 0)
    assert again.cached_tokens == kept


def test_streams_of_one_backend_interleave_in_one_thread(batched, greedy):
    """No lock is held across a stream: one thread can step through two at once."""
    a, b = batched.chat(raw("1, 2, 3,", 5)), batched.chat(raw("a, b, c,", 5))
    ia, ib = iter(a), iter(b)
    next(ia), next(ib), next(ia), next(ib)
    assert a.result().text.startswith(greedy("1, 2, 3,", 1)[0])
    assert b.result().text.startswith(greedy("a, b, c,", 1)[0])


def test_context_overflow_is_refused_before_any_token(batched):
    from localassist.errors import ContextOverflowError

    with pytest.raises(ContextOverflowError):
        batched.chat(raw("word " * 900, 200))
