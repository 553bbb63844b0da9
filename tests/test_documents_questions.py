"""Questions over documents (`ask -f`) and documents in chat (`/file`): whole when they
fit, else the BM25 best excerpts that fit; sources from the chunks' locators."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import make_documents as make  # the fixtures' facts: planted word, page texts
import pytest

from localassist.attachments import attach_to_question
from localassist.documents import load, load_bytes
from localassist.documents.model import Locator
from localassist.documents.questions import BM25, Attached, Source, attach

FIXTURES = Path(__file__).parent / "fixtures" / "documents"


def test_bm25_matches_the_formula_worked_by_hand():
    index = BM25(["apple banana", "apple", "cherry pie"])
    # banana: n=3, df=1 -> idf = ln(1 + 2.5/1.5); doc 0: f=1, |d|=2, avgdl=5/3
    idf = math.log(1 + 2.5 / 1.5)
    expected = idf * 1 * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 2 / (5 / 3)))
    scores = index.scores("Where is the banana?")  # "where", "is", "the" are stop words
    assert scores[0] == pytest.approx(expected) and scores[1:] == [0.0, 0.0]
    assert index.scores("nothing here") == [0.0, 0.0, 0.0]


def test_sources_line_groups_places_per_file_and_drops_the_heading():
    sources = [
        Source(Locator("contract.pdf", page=12), 3.0),
        Source(Locator("notes.md", line_start=40, line_end=58, section="Intro > Terms"), 2.0),
        Source(Locator("contract.pdf", page=14), 1.0),
        Source(Locator("-", line_start=3, line_end=3), 0.5),
    ]
    line = Attached("", "excerpts", sources, 0, 4, 4).sources_line()
    assert line == "sources: contract.pdf p.12, p.14; notes.md L40–58; stdin L3"
    assert sources[1].as_dict() == {
        "source": "notes.md L40–58",
        "path": "notes.md",
        "line_start": 40,
        "line_end": 58,
        "section": "Intro > Terms",
        "score": 2.0,
    }


# --- with the model's tokenizer and context (no generation)


@pytest.fixture(scope="module")
def loaded(starter_model):
    from localassist.engine.local import LoadOptions, LocalBackend

    backend = LocalBackend(starter_model, "starter", LoadOptions(ctx=1024, threads=1))
    yield backend
    backend.close()


def assistant(backend, monkeypatch, n_ctx):
    from localassist.assistant import Assistant
    from localassist.engine.types import SamplingParams

    monkeypatch.setattr(backend, "n_ctx", n_ctx)
    return Assistant(backend, SamplingParams(temperature=0, max_tokens=8))


def ten_pages() -> bytes:
    pages = [[f"Page {n} is about harbor lanterns and copper signals, item {n}."] * 4 for n in range(1, 11)]
    pages[2].append(f"The code word is {make.PLANTED}.")
    return make.pdf(pages)


@pytest.mark.model
def test_documents_that_fit_go_in_whole_and_sources_name_the_matching_page(loaded, monkeypatch):
    helper = assistant(loaded, monkeypatch, 1024)
    document = load(FIXTURES / "multipage.pdf")
    attached = attach_to_question(helper, [document], f"Which page has {make.PLANTED}?")
    assert attached.mode == "whole"
    for number, lines in enumerate(make.PAGES, start=1):  # every page, marked, in order
        assert f"[page {number}]\n" + "\n".join(lines) in attached.text
    assert attached.text.rstrip().endswith(f"Which page has {make.PLANTED}?")
    assert [s.locator.page for s in attached.sources] == [3]
    helper.send(attached.text).stream.close()  # the engine's own check: it fits


@pytest.mark.model
def test_documents_too_big_are_answered_from_the_best_excerpts_that_fit(loaded, monkeypatch):
    helper = assistant(loaded, monkeypatch, 256)
    document = load_bytes(ten_pages(), "report.pdf")
    attached = attach_to_question(helper, [document], f"What is {make.PLANTED}?")
    assert attached.mode == "excerpts" and attached.used < attached.chunks
    assert [s.locator.page for s in attached.sources] == [3]  # the only excerpt with the word
    assert '<document source="report.pdf p.3">' in attached.text and make.PLANTED in attached.text
    assert "(" in attached.notice and "excerpts that match the question best" in attached.notice
    helper.send(attached.text).stream.close()
    # nothing matches: the excerpts that fit, from the start of the documents
    attached = attach_to_question(helper, [document], "Summarize this.")
    pages = [s.locator.page for s in attached.sources]
    assert pages[0] == 1 and pages == sorted(pages) and {s.score for s in attached.sources} == {0.0}


@pytest.mark.model
def test_ask_f_prints_the_answer_then_sources_on_stderr(cli, model_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("report.pdf").write_bytes(ten_pages())
    question = f"Where is {make.PLANTED}?"
    args = ["ask", "-f", "report.pdf", question, "--ctx", "256", "-n", "4", "-T", "0", "--threads", "1", "--no-log"]
    r = cli(*args, env=model_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "sources" not in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "localassist: sources: report.pdf p.3"
    out = json.loads(cli(*args, "--json", env=model_env).stdout)
    assert out["sources"][0]["page"] == 3 and out["sources"][0]["source"] == "report.pdf p.3"
    assert out["documents"]["mode"] == "excerpts"


@pytest.mark.model
def test_ask_f_dash_reads_a_piped_pdf_as_a_document_not_as_text(cli, model_env):
    """`cat report.pdf | ask -f - ...` was refused as "binary data": stdin was decoded as a
    text prompt before the PDF loader could see its bytes."""
    question = f"Where is {make.PLANTED}?"
    args = ["ask", "-f", "-", question, "--ctx", "256", "-n", "2", "-T", "0", "--threads", "1", "--no-log"]
    r = cli(*args, input=ten_pages(), env=model_env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "localassist: sources: stdin p.3"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-f", "missing.pdf", "q"], 3, "missing.pdf: no such file"),
        (["-f", str(FIXTURES / "encrypted.pdf"), "q"], 2, "is encrypted and needs a password"),
        (["-f", str(FIXTURES / "notes.md"), "--raw", "q"], 2, "cannot be combined with --raw"),
        (["-f", "-", "q"], 2, "stdin is empty"),
    ],
)
def test_ask_f_errors_are_one_line_and_nothing_on_stdout(cli, args, code, message):
    r = cli("ask", *args)
    assert (r.returncode, r.stdout) == (code, "")
    assert r.stderr.count("\n") == 1 and message in r.stderr


# --- /file in chat


@pytest.mark.model
def test_file_in_chat_pins_a_document_or_a_summary_of_one(loaded, monkeypatch, tmp_path):
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from localassist.assistant import Assistant
    from localassist.cli.env import Environment, using
    from localassist.cli.repl import Repl
    from localassist.engine.types import SamplingParams
    from localassist.settings import load_settings

    monkeypatch.setattr(loaded, "n_ctx", 512)
    monkeypatch.chdir(tmp_path)
    big = "".join(f"Line {i}: the harbor lantern signal number {i} was copper.\n" for i in range(1, 61))
    Path("big.txt").write_text(big, encoding="utf-8")
    session = Assistant(
        loaded, SamplingParams(temperature=0, max_tokens=8), explicit=frozenset({"max_tokens", "temperature"})
    )
    settings = load_settings({"history": False, "log": False})
    err = io.StringIO()
    with using(Environment(stdin=None, stdout=io.StringIO(), stderr=err)), create_pipe_input() as pipe:
        pipe.send_text(f"/file {FIXTURES / 'notes.md'}\r/file big.txt\r/file nowhere.txt\r\x04")
        Repl(session, settings, False, pt_input=pipe, pt_output=DummyOutput()).run()
    shown = " ".join(err.getvalue().split())  # rich wraps long lines at 80 columns
    assert f"attached {FIXTURES / 'notes.md'} (" in shown
    assert "Deep detail line." in session.conversation.system  # notes.md itself, whole
    assert "big.txt is " in shown and "attached a summary of it (covered 100%: " in shown
    assert '<document source="big.txt (summary)">' in session.conversation.system
    assert "Line 60:" not in session.conversation.system  # the summary, not the text
    assert session.used_tokens <= session.budget
    assert "nowhere.txt: no such file" in shown  # one line, and the REPL went on


def test_excerpts_notice_says_does_not_fit_for_one_document():
    """The notice read "contract.pdf (244 tokens) do not fit the context"."""
    document = load(FIXTURES / "multipage.pdf")
    words = lambda text: len(text.split())  # noqa: E731  (a stand-in tokenizer: the wording is under test)
    attached = attach([document], f"Where is {make.PLANTED}?", lambda text: 70 - words(text), words)
    assert attached.mode == "excerpts"
    assert re.search(r"multipage\.pdf \([\d,]+ tokens\) does not fit the context", attached.notice)
    two = attach([document, document], f"Where is {make.PLANTED}?", lambda text: 70 - words(text), words)
    assert ") do not fit the context" in two.notice
