"""Summaries of documents with the real starter model at temperature 0 and a 512-token
context, so that map-reduce really happens: every page in the ledger, locators that
point where the text is, the cache skipping the map, Ctrl-C then resume, stdin, and
budgets that never let a request overflow."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import make_documents as make  # the fixtures' facts: planted word, page texts
import pytest

from localassist.documents import load, load_bytes
from localassist.documents.summarize import (
    Progress,
    Summarizer,
    SummaryOptions,
    SummaryTemplates,
)
from localassist.documents.summary_cache import CACHE_FILE, SummaryCache
from localassist.engine.types import ChatStream, SamplingParams, StreamState, TextDelta
from localassist.errors import DocumentBudgetError, UsageError
from localassist.settings import load_settings

FIXTURES = Path(__file__).parent / "fixtures" / "documents"

pytestmark = pytest.mark.model

WORDS = ["river", "stone", "harbor", "lantern", "meadow", "copper", "signal", "orchard", "thunder", "velvet"]


def page_lines(n: int) -> list[list[str]]:
    """n short pages of plain words; page 3 holds the planted word, no other page does."""
    pages = []
    for number in range(1, n + 1):
        words = [WORDS[(number * 7 + i) % len(WORDS)] for i in range(27)]
        lines = [f"Page {number} notes:", " ".join(words[:9]), " ".join(words[9:18]), " ".join(words[18:])]
        if number == 3:
            lines.append(f"The code word is {make.PLANTED}.")
        pages.append(lines)
    return pages


PAGES = 24


@pytest.fixture
def report(tmp_path, monkeypatch) -> Path:
    """A 24-page PDF in the current folder (short labels: ``report.pdf p.3``)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "report.pdf"
    path.write_bytes(make.pdf(page_lines(PAGES)))
    return Path("report.pdf")


@pytest.fixture(scope="module")
def loaded(starter_model):
    from localassist.engine.local import LoadOptions, LocalBackend

    backend = LocalBackend(starter_model, "starter", LoadOptions(ctx=512, threads=1))
    yield backend
    backend.close()


@pytest.fixture
def small(loaded, monkeypatch):
    """The starter (one thread: the machine is shared) with a 384-token context: the
    48-token notes on 24 pages do not fit one reduce call, so the reduce really
    recurses. The engine checks every request against this ``n_ctx`` as well."""
    monkeypatch.setattr(loaded, "n_ctx", 384)
    return loaded


class Counting:
    """The real backend, with every ``chat`` request recorded and checked against the
    context exactly as the engine counts it."""

    def __init__(self, backend):
        self.backend = backend
        self.requests = []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def chat(self, request):
        self.requests.append(request)
        assert self.backend.count(request.messages) + request.sampling.max_tokens <= self.backend.n_ctx
        return self.backend.chat(request)


# exactly max_tokens per call (no early stop), greedy: notes have a known size
FIXED = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True, stop=("\x00never",))
EXPLICIT = frozenset({"temperature", "max_tokens", "stop"})


def summarizer(backend, cache=None, sampling=FIXED, **options):
    templates = SummaryTemplates.load(load_settings().paths.config_dir)
    return Summarizer(backend, templates, sampling, explicit=EXPLICIT, options=SummaryOptions(**options), cache=cache)


def run_to_end(s, documents):
    plan = s.plan(documents)
    run = s.start(plan)
    done = run.finish()
    return plan, run, done


def test_map_reduce_covers_every_page_keeps_page_3_and_the_cache_skips_the_map(small, report, tmp_path):
    document = load(report)
    cache = SummaryCache(tmp_path / "cache" / CACHE_FILE)
    backend = Counting(small)
    progress: list[Progress] = []
    first = summarizer(backend, cache)
    first.on_progress = progress.append
    plan, run, done = run_to_end(first, [document])

    assert plan.strategy == "map-reduce" and done.finish_reason == "length"
    chunks = [c for s in plan.sections for c in s.chunks]
    assert [c.locator.page for c in chunks] == list(range(1, PAGES + 1))  # every page the generator wrote, 1-based
    assert 1 < len(plan.sections) < PAGES  # short pages share a map call
    ledger = run.ledger.as_dict()
    assert ledger["percent"] == 100.0 and ledger["chunks_summarized"] == ledger["chunks"] == PAGES
    assert ledger["documents"][0]["pages"] == PAGES
    assert run.ledger.line() == f"covered 100%: {PAGES} chunks, {PAGES} pages"
    planted = [c for c in chunks if make.PLANTED in c.text]
    assert [c.locator.page for c in planted] == [3]
    section = next(s for s in plan.sections if planted[0] in s.chunks).as_dict()
    assert section["source"] == f"report.pdf p.{section['locators'][0]['page']}–{section['locators'][-1]['page']}"
    assert {"path": "report.pdf", "page": 3} in section["locators"]
    assert "[report.pdf p.3]\nPage 3 notes:" in backend.requests[section["index"] - 1].messages[-1].content
    # the notes did not fit one call: condensed at least one level, then one final call
    usage = run.usage
    assert usage.map_calls == len(plan.sections) and usage.reduce_levels >= 1 and usage.reduce_calls >= 2
    assert len(backend.requests) == usage.calls == usage.map_calls + usage.reduce_calls + 1
    assert all(s.notes for s in plan.sections)
    assert [p.done for p in progress if p.stage == "map"][-1] == PAGES and progress[-1].stage == "summary"

    # only --points and --style change: every note comes from the cache, only reduce runs
    again = Counting(small)
    second = summarizer(again, cache, points=2, style="paragraph")
    plan2, run2, _ = run_to_end(second, [document])
    assert run2.usage.map_calls == 0 and run2.usage.map_cached == len(plan2.sections)
    assert [s.notes for s in plan2.sections] == [s.notes for s in plan.sections]
    assert len(again.requests) == run2.usage.reduce_calls + 1
    assert "about 2 sentences" in again.requests[-1].messages[-1].content

    # past the depth cap a summary fails loudly (the notes are cached: no model call at all)
    third = Counting(small)
    with pytest.raises(DocumentBudgetError, match="after 0 reduce levels"):
        run_to_end(summarizer(third, cache, max_depth=0), [document])
    assert third.requests == []
    cache.close()


class Validating(Counting):
    """Every request goes to the real engine's ``chat``, which tokenizes the rendered
    prompt and raises ContextOverflowError if it does not fit, but is not evaluated:
    the answer is a stand-in of exactly ``max_tokens`` words, so dozens of requests at
    many context sizes cost seconds on a shared 2-core machine, not minutes."""

    def chat(self, request):
        real = super().chat(request)  # the engine's own check, before any token
        real.close()
        n = request.sampling.max_tokens
        state = StreamState(self.backend.model_name, real.prompt_tokens)

        def produce(stream):
            state.parts.append(" note" * n)
            state.completion_tokens = n
            yield TextDelta(" note" * n)
            state.t_end = time.perf_counter()
            yield state.done("length")

        return ChatStream(state, produce)


def test_budgets_never_overflow_at_any_context(loaded, monkeypatch):
    """Text whose tokens join differently at every edge (CJK, emoji, digits, no spaces),
    every strategy and ``ask -f``, contexts from tiny to 700: each request fits, or the
    work is refused up front with the numbers, before any model call."""
    from localassist.assistant import Assistant
    from localassist.attachments import attach_to_question

    pieces = ["東京の天気", "🙂👩‍💻", "x1234567", "naïve café", "Ωμέγα", "tokenizer", "\n\n", "(a)"]
    text = "".join(pieces[(i * 5) % len(pieces)] + ("" if i % 3 else " ") for i in range(400))
    document = load_bytes(text.encode("utf-8"), "mixed.txt")
    sampling = SamplingParams(temperature=0, max_tokens=24, stop=("\x00never",))
    templates = SummaryTemplates.load(load_settings().paths.config_dir)
    refused, levels = [], set()
    for n_ctx in (128, 160, 200, 256, 333, 512, 700):
        monkeypatch.setattr(loaded, "n_ctx", n_ctx)  # the engine checks requests against this too
        for strategy in ("auto", "stuff", "map-reduce", "refine"):
            backend = Validating(loaded)
            options = SummaryOptions(strategy=strategy)
            s = Summarizer(backend, templates, sampling, explicit=EXPLICIT, options=options)
            try:
                plan, run, _ = run_to_end(s, [document])
            except DocumentBudgetError as error:
                assert "--ctx" in str(error) and backend.requests == []
                refused.append((n_ctx, strategy))
                continue
            assert run.ledger.percent == 100 and len(backend.requests) == run.usage.calls
            assert all(section.tokens <= plan.budget for section in plan.sections)
            levels.add(run.usage.reduce_levels)
        assistant = Assistant(loaded, sampling)
        try:
            attached = attach_to_question(assistant, [document], "Where is the café?")
        except DocumentBudgetError:
            refused.append((n_ctx, "ask -f"))
            continue
        assistant.send(attached.text).stream.close()  # the engine's check, no evaluation
    assert (128, "map-reduce") in refused and (700, "stuff") in refused
    assert not [r for r in refused if r[0] >= 256 and r[1] != "stuff"]
    assert max(levels) >= 2  # the small contexts needed reduce levels on top of each other


def test_refine_covers_every_chunk_in_order(small, report):
    backend = Counting(small)
    short = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=("\x00never",))
    plan, run, _ = run_to_end(summarizer(backend, sampling=short, strategy="refine"), [load(report)])
    assert plan.strategy == "refine" and run.ledger.percent == 100
    assert run.usage.refine_calls == len(plan.sections) - 1 and len(backend.requests) == len(plan.sections)
    # each request carries its own chunk, in document order, the running summary with it
    for section, request in zip(plan.sections, backend.requests, strict=True):
        assert section.text.strip() in request.messages[-1].content
    for i in range(1, len(plan.sections)):  # with where it is from, and the summary of what came before
        content = backend.requests[i].messages[-1].content
        assert plan.sections[i].label in content and plan.sections[i - 1].notes in content


# --- the CLI


def test_cli_summary_streams_to_stdout_and_reports_coverage_on_stderr(cli, model_env):
    r = cli("summarize", str(FIXTURES / "multipage.pdf"), "-T", "0", "-n", "4", "--threads", "1", env=model_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "covered" not in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "localassist: covered 100%: 5 chunks, 5 pages"


def test_cli_json_sections_carry_locators_and_the_csv_facts_come_from_the_data(cli, model_env):
    r = cli("summarize", str(FIXTURES / "sales.csv"), "--json", "-T", "0", "-n", "4", "--threads", "1", env=model_env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # the generator's rows: units = 3 * i for i in 1..40
    assert out["facts"].splitlines()[0].endswith("sales.csv: 40 rows, 4 columns")
    assert "- units: number, min 3, max 120, mean 61.5, sum 2,460" in out["facts"]
    assert out["coverage"]["documents"][0]["rows"] == 40 and out["coverage"]["percent"] == 100
    locators = [loc for s in out["sections"] for loc in s["locators"]]
    assert locators[0]["row_start"] == 1 and locators[-1]["row_end"] == 40
    assert "40 rows" in r.stderr


def test_cli_dash_reads_the_document_from_stdin(cli, model_env):
    text = "".join(f"commit {i}: changed line {i} of the parser\n" for i in range(1, 13))
    r = cli("summarize", "-", "--json", "-T", "0", "-n", "4", "--threads", "1", input=text, env=model_env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["strategy"] == "stuff"
    assert out["sections"][0]["locators"] == [{"path": "-", "line_start": 1, "line_end": 12}]
    assert r.stderr.strip().endswith("covered 100%: 1 chunk, 12 lines")


def test_ctrl_c_stops_with_130_and_a_rerun_resumes_from_the_cache(model_env, report, isolated_home):
    args = [sys.executable, "-m", "localassist", "summarize", str(report), "--strategy", "map-reduce"]
    args += ["--ctx", "256", "-T", "0", "-n", "8", "--threads", "1"]  # about 3 pages a map call: 8 calls
    db = isolated_home / "cache" / CACHE_FILE
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**_env(), **model_env})
    deadline = time.monotonic() + 240
    while _notes(db) < 2:  # some map calls are done and cached
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert out == b"" and "run the same command again to resume" in err.decode()
    assert "covered " in err.decode() and f" of {PAGES} chunks" in err.decode()
    stopped_at = _notes(db)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and stat.S_IMODE(db.parent.stat().st_mode) == 0o700

    again = subprocess.run([*args, "--json"], capture_output=True, env={**_env(), **model_env}, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    out = json.loads(again.stdout)
    usage, sections = out["usage"], out["sections"]
    assert usage["map_cached"] == stopped_at >= 2 and usage["map_calls"] == len(sections) - stopped_at >= 1
    assert [s["cached"] for s in sections] == [True] * stopped_at + [False] * (len(sections) - stopped_at)
    assert out["coverage"]["percent"] == 100


def _env():
    import os

    return dict(os.environ)


def _notes(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM notes").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.pdf"], 3, "missing.pdf: no such file"),
        ([str(FIXTURES / "encrypted.pdf")], 2, "encrypted.pdf is encrypted and needs a password"),
        ([str(FIXTURES / "scanned.pdf")], 2, "no extractable text in its 2 pages: it looks scanned"),
        ([str(FIXTURES / "empty.txt")], 2, "empty.txt is empty"),
        ([str(FIXTURES / "image.txt")], 2, "image.txt looks like a binary file, not text"),
        ([str(FIXTURES / "noise.dat")], 2, "noise.dat looks like a binary file, not text"),
        ([str(FIXTURES)], 2, "is a folder"),
        (["/proc/self/mem"], 2, "cannot read /proc/self/mem: Input/output error"),  # unreadable, even for root
        (["-"], 2, "stdin is empty"),
        (["-", "-"], 2, "can be given only once"),
        ([str(FIXTURES / "notes.md"), "--points", "0"], 2, "--points must be between 1 and 100"),
        ([str(FIXTURES / "notes.md"), "--style", "haiku"], 2, "--style must be one of bullets, paragraph"),
        ([str(FIXTURES / "notes.md"), "--strategy", "magic"], 2, "--strategy must be one of auto, stuff"),
    ],
)
def test_document_errors_are_one_line_with_an_exit_code_and_nothing_on_stdout(cli, args, code, message):
    r = cli("summarize", *args)  # no model is loaded before the documents are read
    assert (r.returncode, r.stdout) == (code, "")
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("localassist: error: ") and message in r.stderr


def test_a_binary_file_named_like_markdown_is_refused_by_content(cli, tmp_path):
    path = tmp_path / "report.md"
    path.write_bytes(bytes(range(256)) * 8)
    r = cli("summarize", str(path))
    assert (r.returncode, r.stdout) == (2, "") and "report.md looks like a binary file" in r.stderr


def test_context_too_small_is_a_clear_error_before_any_model_call(cli, model_env):
    r = cli(
        "summarize", str(FIXTURES / "notes.md"), "--ctx", "256", "-n", "200", "--strategy", "map-reduce", env=model_env
    )
    assert (r.returncode, r.stdout) == (4, "")
    assert "Raise --ctx or lower --max-tokens" in r.stderr and r.stderr.count("\n") == 1


def test_progress_bar_on_a_terminal_and_nothing_but_the_ledger_on_a_pipe(model_env, monkeypatch):
    from typer.testing import CliRunner

    from localassist.cli.app import app
    from localassist.cli.env import Environment, using

    for key, value in model_env.items():
        monkeypatch.setenv(key, value)
    args = [
        "summarize",
        str(FIXTURES / "half-scanned.pdf"),
        str(FIXTURES / "multipage.pdf"),
        "--strategy",
        "map-reduce",
    ]
    args += ["-T", "0", "-n", "2", "--threads", "1"]
    outputs = []
    for terminal in (True, False):
        stdout, stderr = io.StringIO(), io.StringIO()
        with using(Environment(stdin=None, stdout=stdout, stderr=stderr, stderr_isatty=terminal, width=100)):
            result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, stderr.getvalue()
        outputs.append(stderr.getvalue())
    on_terminal, on_pipe = outputs
    assert "chunk 6/6" in on_terminal and "tok/s" in on_terminal  # drawn (rich), then cleared
    name = str(FIXTURES / "half-scanned.pdf")
    assert on_pipe.splitlines() == [
        f"localassist: {name}: 2 of 3 pages have no extractable text: p.2–3",
        f"localassist: covered 100%: 6 chunks of 2 files: {name} 3 pages (2 without text), "
        f"{FIXTURES / 'multipage.pdf'} 5 pages",
    ]


def test_a_user_template_shadows_the_map_prompt_and_its_notes_are_cached_apart(loaded, tmp_path):
    config = load_settings().paths.config_dir
    document = load(FIXTURES / "notes.md")
    cache = SummaryCache(tmp_path / CACHE_FILE)

    def run(backend):
        s = Summarizer(
            backend,
            SummaryTemplates.load(config),
            FIXED,
            explicit=EXPLICIT,
            options=SummaryOptions(strategy="map-reduce"),
            cache=cache,
        )
        plan, run, _ = run_to_end(s, [document])
        return plan, run.usage

    builtin = Validating(loaded)
    plan, usage = run(builtin)
    assert usage.map_calls == len(plan.sections) == len(builtin.requests) - 1 - usage.reduce_calls
    assert builtin.requests[0].messages[-1].content.startswith("Write short notes on this part of ")
    user = config / "templates" / "summarize-map.toml"
    user.parent.mkdir(parents=True)
    user.write_text('prompt = """Jot down what {source} says:\n\n{input}"""\n', encoding="utf-8")
    mine = Validating(loaded)
    plan, usage = run(mine)
    assert usage.map_calls == len(plan.sections) and usage.map_cached == 0  # another prompt: other notes
    assert mine.requests[0].messages[-1].content.startswith(f"Jot down what {plan.sections[0].label} says:")
    user.write_text('prompt = "Notes on {source}, please."\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"summarize-map .* must contain \{input\}"):
        SummaryTemplates.load(config)
    cache.close()


def test_coverage_json_of_a_text_file_has_no_pages_without_text():
    """A text file's ledger in --json said "pages_without_text": [], as if it had pages."""
    from localassist.documents.chunking import chunk_document
    from localassist.documents.summarize import _check_coverage

    words = lambda text: len(text.split())  # noqa: E731  (any counter: the ledger's fields are under test)
    notes = load(FIXTURES / "notes.md")
    ledger = _check_coverage(notes, chunk_document(notes, 1000, words)).__dict__
    assert {k: v for k, v in ledger.items() if v is not None} == {
        "path": str(FIXTURES / "notes.md"),
        "kind": "markdown",
        "chunks": 7,  # the preamble and six headings, each its own piece
        "lines": 34,
    }
    scanned = load(FIXTURES / "half-scanned.pdf")
    assert _check_coverage(scanned, chunk_document(scanned, 1000, words)).pages_without_text == [2, 3]


def test_stats_line_says_1_model_call_not_1_model_calls():
    from types import SimpleNamespace

    from localassist.cli.summarize import stats_line

    fields = dict.fromkeys(
        ("map_calls", "map_cached", "reduce_calls", "reduce_levels", "refine_calls", "refine_cached"), 0
    )
    usage = SimpleNamespace(calls=1, prompt_tokens=10, completion_tokens=2, engine_s=0.1, **fields)
    assert "| 1 model call |" in stats_line("stuff", usage, 0.2) + " |"
    assert "2 model calls" in stats_line("stuff", SimpleNamespace(**{**vars(usage), "calls": 2}), 0.2)
