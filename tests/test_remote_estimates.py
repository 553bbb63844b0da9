"""A remote server that cannot count tokens (vLLM, a generic OpenAI server) gets the
client's estimate, which is above the real count (often twice it): the estimate may plan
and warn, but never cut text or refuse it, since only the server counts (issue #19 item
12). Documents (`ask -f`, `/file`, a resumed conversation's), the memory policy and
summaries, each against a scripted server on 127.0.0.1; and Ollama, which would clip a
prompt that does not fit without an error, still refused on its estimate.

Token counts that say a document really fits come from the `vocab` oracle: llama.cpp's
own tokenizer for the starter model."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli
from fakeremote import FakeRemote, Reply, chunk, models, ndjson, ollama, sse, usage_chunk
from localassist.assistant import Assistant
from localassist.attachments import pin
from localassist.conversation.log_store import Attachment
from localassist.conversation.memory import Conversation, MemoryPolicy, fit
from localassist.documents import load
from localassist.documents.questions import document_block, document_text
from localassist.engine.remote import RemoteBackend
from localassist.engine.token_estimate import estimate_messages, estimate_tokens
from localassist.engine.types import Message, SamplingParams
from localassist.errors import ContextOverflowError

CTX = 512  # the server's context
# prose the estimate puts at more than twice its real size on the starter's tokenizer
LOG = "".join(
    f"Entry {i}: the ferry left the harbour at noon and the crew checked the ropes on the deck.\n" for i in range(1, 13)
)
FACT = "The lighthouse keeper is called Ada Brook.\n"
QUESTION = "Who keeps the lighthouse?"


def answer(*pieces: str) -> Reply:
    return Reply(lines=sse(*(chunk(p) for p in pieces), chunk(finish="stop"), usage_chunk(9, len(pieces))))


def ollama_answer(text: str) -> Reply:
    return Reply(lines=ndjson({"message": {"content": text}, "done": True, "prompt_eval_count": 9, "eval_count": 1}))


@pytest.fixture
def counting_nothing():
    """A server that reports its context but has no tokenizer endpoint: vLLM's dialect."""
    with FakeRemote() as remote:
        remote.route("GET", "/v1/models", Reply(json=models("m", owned_by="vllm", max_model_len=CTX)))
        yield remote


@pytest.fixture
def document(tmp_path) -> Path:
    path = tmp_path / "harbour.txt"
    lines = LOG.splitlines(keepends=True)
    path.write_text("".join(lines[:6]) + FACT + "".join(lines[6:]), encoding="utf-8")
    return path


def real_tokens(vocab, text: str) -> int:
    return len(vocab.tokenize(text.encode(), add_bos=False, special=False))


@pytest.mark.model
def test_ask_f_on_a_server_that_cannot_count_sends_a_document_that_fits_whole(counting_nothing, document, vocab):
    text = document.read_text(encoding="utf-8")
    # the premise: over the context by the estimate, well inside it by the tokenizer
    assert estimate_tokens(text) + 16 > CTX
    assert real_tokens(vocab, text) + real_tokens(vocab, QUESTION) + 16 < CTX - 128  # 128: tags, chat template
    counting_nothing.route("POST", "/v1/chat/completions", answer("Ada", " Brook"))
    result = run_cli("ask", "--base-url", counting_nothing.url, "-n", "16", "-f", str(document), QUESTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Ada Brook\n"
    (sent,) = counting_nothing.posted("/v1/chat/completions")
    content = sent["messages"][-1]["content"]
    assert document_block(str(document), text) in content  # all of it, not excerpts
    assert "Excerpts" not in content
    warning = " ".join(result.stderr.split())
    assert "may not fit the context" in warning and "estimated" in warning and "the server decides" in warning
    assert "excerpts" not in warning
    assert "sources: " in warning  # answered from the whole document: its best-matching parts are named


def test_ask_f_on_ollama_still_refuses_on_its_estimate_and_says_why(document):
    with FakeRemote() as remote:
        ollama(remote, ctx=CTX)
        remote.route("POST", "/api/chat", ollama_answer("Ada Brook"))
        base = ("ask", "--base-url", remote.url, "-f", str(document), QUESTION)
        # no room for any excerpt beside the question and --max-tokens: refused, nothing sent
        refused = run_cli(*base, "-n", "440")
        assert refused.returncode == 4, refused.stderr
        assert refused.stdout == "" and remote.posted("/api/chat") == []
        said = " ".join(refused.stderr.split())
        assert f"no room for any part of {document}" in said
        assert "estimated: Ollama cannot count them, and would clip a prompt that does not fit" in said
        # room for excerpts: the estimate chooses them (sending it whole would be refused)
        excerpts = run_cli(*base, "-n", "16")
        assert excerpts.returncode == 0, excerpts.stderr
        assert "does not fit the context: answering from the" in excerpts.stderr
        assert "estimated: Ollama" in " ".join(excerpts.stderr.split())
        (sent,) = remote.posted("/api/chat")
        assert document.read_text(encoding="utf-8").strip() not in sent["messages"][-1]["content"]


def test_file_on_a_server_that_cannot_count_pins_the_document_whole(counting_nothing, document):
    backend = RemoteBackend(counting_nothing.url)
    assistant = Assistant(backend, SamplingParams(temperature=0, max_tokens=16))
    doc = load(str(document))
    # by the estimate it would not fit three quarters of the budget: it used to be summarized
    assert estimate_tokens(document_text(doc)) > assistant.attachment_limit

    def no_summary(*_: object) -> tuple[str, str]:
        raise AssertionError("a document that fits is summarized on an estimate")

    notice = pin(assistant, doc, no_summary)
    assert notice is not None and notice.startswith(f"attached {document} whole: about ")
    assert "estimated: the server cannot count them" in notice and notice.endswith("the server decides")
    assert [a.mode for a in assistant.attachments] == ["whole"]
    assert FACT.strip() in (assistant.conversation.system or "")
    backend.close()


def test_a_resumed_conversation_on_a_server_that_cannot_count_keeps_its_documents(counting_nothing, document):
    backend = RemoteBackend(counting_nothing.url)
    assistant = Assistant(backend, SamplingParams(temperature=0, max_tokens=16))
    text = document_block(str(document), document.read_text(encoding="utf-8"))
    attachment = Attachment(str(document), "0" * 64, "whole", text)
    lines = assistant.restore_attachments([attachment])
    assert assistant.attachments == [attachment]  # not left out on an estimate
    assert len(lines) == 1 and "may not fit the context now: attached again anyway; the server decides" in lines[0]
    backend.close()


def test_memory_on_an_estimate_keeps_the_history_and_lets_the_server_decide(counting_nothing):
    """The estimate put the new message alone over the budget, and the whole history was
    dropped before sending it "anyway": the estimate acting, not the server."""
    counting_nothing.route("POST", "/v1/chat/completions", answer("Blue"))
    backend = RemoteBackend(counting_nothing.url)
    assistant = Assistant(backend, SamplingParams(temperature=0, max_tokens=16), memory=MemoryPolicy("buffer"))
    history = [Message("user", "My favourite colour is blue."), Message("assistant", "Noted.")]
    question = LOG + "What is my favourite colour?"
    assert estimate_messages([question]) > CTX - 16  # over the budget alone, by the estimate
    assistant.restore(history)
    turn = assistant.send(question)
    assert "".join(turn.stream.text()) == "Blue"
    assert turn.notice is not None and "may not fit" in turn.notice and "the server decides" in turn.notice
    assert "dropped" not in turn.notice
    (sent,) = counting_nothing.posted("/v1/chat/completions")
    assert sent["messages"] == [*(m.as_openai() for m in history), {"role": "user", "content": question}]
    backend.close()


def test_memory_fit_with_estimates_keeps_what_the_window_keeps():
    words = lambda messages: sum(len(m.content.split()) for m in messages)  # noqa: E731
    turns = [m for i in range(3) for m in (Message("user", f"q{i}"), Message("assistant", f"a{i}"))]
    conversation = Conversation("sys", turns=turns)
    new = [Message("user", "word " * 50)]
    report = fit(conversation, new, 20, words, MemoryPolicy("window", 2), max_tokens=4, exact=False)
    assert [m.content for m in conversation.turns] == ["q1", "a1", "q2", "a2"]  # the window's, not fewer
    assert report.dropped_exchanges == 1 and "may not fit" in (report.notice() or "")
    with pytest.raises(ContextOverflowError):  # an exact count still refuses
        fit(conversation, new, 20, words, MemoryPolicy("buffer"), max_tokens=4)


def test_summarize_on_a_server_that_cannot_count_plans_on_the_estimate_but_never_refuses(counting_nothing, document):
    text = document.read_text(encoding="utf-8")
    counting_nothing.route("POST", "/v1/chat/completions", answer("- A ferry log."))
    # --strategy stuff on a document the estimate puts over the context: one call, whole
    stuffed = run_cli("summarize", str(document), "--base-url", counting_nothing.url, "--strategy", "stuff", "-n", "64")
    assert stuffed.returncode == 0, stuffed.stderr
    assert stuffed.stdout.strip() == "- A ferry log."
    (sent,) = counting_nothing.posted("/v1/chat/completions")
    assert all(line in sent["messages"][-1]["content"] for line in text.splitlines())
    said = " ".join(stuffed.stderr.split())
    assert "(--strategy stuff) may not fit the context of 512 tokens (estimated" in said
    assert "the server decides" in said and "covered 100%" in said
    # a --max-tokens the estimate says leaves no room for any text: warned, and summarized
    counting_nothing.requests.clear()
    tight = run_cli("summarize", str(document), "--base-url", counting_nothing.url, "-n", "440")
    assert tight.returncode == 0, tight.stderr
    said = " ".join(tight.stderr.split())
    assert said.count("may not fit the context of 512 tokens (estimated") == 1  # said once
    assert "covered 100%" in said
    calls = counting_nothing.posted("/v1/chat/completions")
    assert len(calls) > 1  # planned on the estimate: parts, then the notes on them
    sent_words = " ".join(c["messages"][-1]["content"] for c in calls).split()
    assert all(word in sent_words for word in text.split())
    assert FACT.strip() in " ".join(sent_words)


def test_summarize_on_ollama_still_refuses_on_its_estimate(document):
    with FakeRemote() as remote:
        ollama(remote, ctx=CTX)
        remote.route("POST", "/api/chat", ollama_answer("- A ferry log."))
        refused = run_cli("summarize", str(document), "--base-url", remote.url, "--strategy", "stuff", "-n", "64")
        assert refused.returncode == 4, refused.stderr
        assert "does not fit one call in a 512-token context" in refused.stderr
        assert remote.posted("/api/chat") == []
