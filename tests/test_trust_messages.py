"""Trust III (issue #19), items 24 and 25: every error is the project's one line, the
libraries underneath do not print past it, and the small rough edges of tools, index and logs.

Every test here failed on the code before the fix."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pexpect
import pytest

from fakehub import FakeFile, FakeHub, FakeRepo

FIXTURES = Path(__file__).parent / "fixtures"


def only_our_lines(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert lines and all(line.startswith("localassist: ") for line in lines), stderr
    return lines


# --- 24: usage errors, pypdf's and huggingface_hub's lines


@pytest.mark.parametrize(
    ("args", "said", "not_said"),
    [
        (["ask", "--bogus", "hi"], "unknown option --bogus for `localassist ask`", ["--docs", "--verbose"]),
        (["ask", "--temprature", "0", "hi"], "did you mean --temperature?", []),
        (["logs", "rm", "--al"], "did you mean --all?", []),
        (["bogus"], "unknown command 'bogus'", ["logs"]),
        (["chta"], "did you mean `localassist chat`?", []),
        (["index", "lsit"], "did you mean `localassist index list`?", []),
        (["ask", "hi", "--temperature", "warm"], "'warm' is not a valid float", []),
        (["pull"], "missing argument", []),
    ],
)
def test_usage_errors_are_one_line_naming_the_closest_real_option(cli, args, said, not_said):
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    [line] = only_our_lines(result.stderr)  # not Click's usage, hint and "Error:" lines
    assert line.startswith("localassist: error: ") and said in line, line
    assert "Possible options" not in line and "Usage:" not in line
    for unrelated in not_said:
        assert unrelated not in line
    assert result.stdout == ""


def test_closest_option_is_a_real_near_miss_or_nothing():
    from localassist.cli.usage import closest

    options = ["--temperature", "--template", "--top-k", "--docs", "--verbose", "-T", "-v"]
    assert closest("--temprature", options) == "--temperature"
    assert closest("--verb", options) == "--verbose"  # the only option it begins
    assert closest("--temp", options) is None  # begins two: no guess
    assert closest("--bogus", options) is None
    assert closest("-x", options) is None
    assert closest("bogus", ["ask", "chat", "logs", "pull"]) is None
    assert closest("lgos", ["ask", "chat", "logs", "pull"]) == "logs"


def truncated_pdf(tmp_path: Path, cut: int) -> Path:
    data = (FIXTURES / "documents" / "multipage.pdf").read_bytes()
    path = tmp_path / "truncated.pdf"
    path.write_bytes(data[: len(data) - cut])
    return path


def test_truncated_pdf_is_one_line_without_pypdfs_own(cli, tmp_path):
    path = truncated_pdf(tmp_path, cut=1132)  # half of it: no cross-reference table left
    result = cli("summarize", str(path))
    assert result.returncode == 2, result.stderr
    [line] = only_our_lines(result.stderr)  # pypdf printed "EOF marker not found" first
    assert line == f"localassist: error: {path} is not a readable PDF: Stream has ended unexpectedly"
    shown = cli("summarize", str(path), "-v")
    assert "localassist: pypdf: EOF marker not found" in only_our_lines(shown.stderr)


def test_pdf_that_pypdf_repairs_says_so_in_the_projects_words(tmp_path):
    from localassist.documents import load

    document = load(truncated_pdf(tmp_path, cut=3))  # "%%EOF" cut short: pypdf reads it all the same
    assert document.pages == 5
    assert any("is damaged (EOF marker seems truncated)" in warning for warning in document.warnings)
    whole = load(FIXTURES / "documents" / "multipage.pdf")
    assert whole.warnings == [] and [p.text for p in whole.pieces] == [p.text for p in document.pieces]


def test_resumed_download_prints_no_huggingface_hub_lines(cli):
    hub = FakeHub().start()
    try:
        # huggingface_hub writes in 10 MB chunks and resumes from the last one written
        data = bytes(range(256)) * 48_000  # 12.3 MB
        hub.add(FakeRepo("test/Drop-GGUF", [FakeFile("drop-Q4_K_M.gguf", data, drop_after=11_000_000)]))
        hub.add(FakeRepo("test/Again-GGUF", [FakeFile("again-Q4_K_M.gguf", data, drop_after=11_000_000)]))
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
        result = cli("pull", "test/Drop-GGUF", env=env)
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()).read_bytes() == data
        gets = [r for m, p, r in hub.requests if m == "GET" and p.endswith("drop-Q4_K_M.gguf")]
        assert len(gets) == 2  # the connection dropped and the download went on
        only_our_lines(result.stderr)  # not "Error while downloading ... Trying to resume download..."
        shown = cli("pull", "test/Again-GGUF", "-v", env=env)
        assert shown.returncode == 0, shown.stderr
        assert any(
            line.startswith("localassist: huggingface_hub: Error while downloading") and "Trying to resume" in line
            for line in only_our_lines(shown.stderr)
        )
    finally:
        hub.stop()


# --- 25: tools list, index notices and names, logs rm --all, chat --resume


def test_tools_list_fits_a_120_column_terminal_and_keeps_every_word():
    from localassist.cli import tools_cmd
    from localassist.cli.env import Environment, using
    from localassist.tools import resolve_tools

    def listed(**terminal) -> list[str]:
        buf = io.StringIO()
        with using(Environment(stdin=None, stdout=buf, stderr=io.StringIO(), **terminal)):
            tools_cmd.list_tools(tools=None, as_json=False)
        return buf.getvalue().splitlines()

    shown = listed(stdout_isatty=True, width=120)
    assert max(len(line) for line in shown) <= 120
    words = " ".join(shown).split()
    for tool in resolve_tools(["all"]):
        for word in tool.description.split():
            assert word in words, (tool.name, word)  # wrapped, never cut
    piped = listed(stdout_isatty=False)  # a pipe: one line per tool, for grep
    assert len(piped) == 1 + len(resolve_tools(["all"]))


@pytest.fixture
def corpus(tmp_path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "budget.md").write_text("# Budget\n\nThe offsite budget was approved at 14,500 euros.\n")
    return folder


def test_index_sync_says_bm25_only_once_when_the_index_is_built(cli, corpus):
    added = cli("index", "add", str(corpus), "--name", "notes", "--no-embed")
    assert added.returncode == 0, added.stderr
    assert added.stderr.count("keyword (BM25) search only") == 1
    (corpus / "more.md").write_text("The venue is in Porto.\n")
    synced = cli("index", "sync", "notes")
    assert synced.returncode == 0, synced.stderr
    assert "BM25" not in synced.stderr and "1 new" in synced.stderr
    rebuilt = cli("index", "sync", "notes", "--rebuild")  # built again: said again
    assert rebuilt.stderr.count("keyword (BM25) search only") == 1


def test_unknown_index_name_lists_the_indexes_there_are(cli, corpus):
    none_yet = cli("index", "search", "notes", "budget")
    assert none_yet.returncode == 3
    [line] = only_our_lines(none_yet.stderr)
    assert "no indexes yet: `localassist index add FOLDER --name notes`" in line
    assert cli("index", "add", str(corpus), "--name", "notes", "--no-embed").returncode == 0
    assert cli("index", "add", str(corpus), "--name", "papers", "--no-embed").returncode == 0
    missing = cli("index", "sync", "note")
    assert missing.returncode == 3
    assert only_our_lines(missing.stderr) == [
        "localassist: error: no index named 'note'; the indexes are: notes, papers"
    ]


def seed_log(home: Path, exchanges: list[tuple[str, str]]) -> str:
    from localassist.conversation.log_store import LogStore, log_path
    from localassist.engine.types import Done, Timings, Usage

    store = LogStore(log_path(home / "data"))
    cid = None
    for prompt, answer in exchanges:
        done = Done(answer, "starter", "stop", Usage(0, 0, 0), Timings(0, None, None, None, 0))
        cid = store.log_exchange(cid, prompt, done, {}).conversation_id
    store.close()
    return cid


def logged_count(home: Path) -> int:
    from localassist.conversation.log_store import LogStore, log_path

    store = LogStore(log_path(home / "data"))
    try:
        return store.counts()[1]
    finally:
        store.close()


def test_logs_rm_all_asks_on_a_terminal_and_needs_yes_in_a_script(cli, isolated_home):
    seed_log(isolated_home, [("the password is quokka", "noted")])
    refused = cli("logs", "rm", "--all")  # stdin is not a terminal
    assert refused.returncode == 2
    assert only_our_lines(refused.stderr) == [
        "localassist: error: logs rm --all deletes every logged conversation; pass --yes to do it without a terminal"
    ]
    assert logged_count(isolated_home) == 1

    def rm_all_answering(answer: str) -> pexpect.spawn:
        child = pexpect.spawn(
            sys.executable, ["-m", "localassist", "logs", "rm", "--all"], env=dict(os.environ), encoding="utf-8"
        )
        child.expect_exact("Delete all 1 logged conversation(s), 1 exchange(s)? [y/N]", timeout=60)
        child.sendline(answer)
        child.expect(pexpect.EOF, timeout=60)
        child.close()
        return child

    declined = rm_all_answering("")  # Enter: the default, No
    assert declined.exitstatus == 0 and "nothing deleted" in declined.before
    assert logged_count(isolated_home) == 1
    accepted = rm_all_answering("y")
    assert accepted.exitstatus == 0 and "deleted 1 exchange(s)" in accepted.before
    assert logged_count(isolated_home) == 0
    seed_log(isolated_home, [("again", "yes")])
    assert cli("logs", "rm", "--all", "--yes").returncode == 0
    assert logged_count(isolated_home) == 0


@pytest.mark.model
def test_chat_resume_shows_the_last_exchange(model_env, isolated_home):
    from test_chat_repl import ANSI, Repl

    answer = "\n".join(f"line {i} of the answer" for i in range(1, 31))
    cid = seed_log(isolated_home, [("First question?", "First answer."), ("What is a quokka?\nIn one line.", answer)])
    repl = Repl("--resume", "-n", "2", env=model_env)
    shown = ANSI.sub("", repl.child.before)
    assert f"resumed {cid}: 2 exchanges" in shown
    assert ">>> What is a quokka?\n... In one line." in shown
    assert "line 30 of the answer" in shown and "line 19 of the answer" in shown  # its last 12 lines
    assert "line 18 of the answer" not in shown and "First answer." not in shown
    assert f"(18 lines above; `localassist logs show {cid}` shows it all)" in shown
    assert repl.exit() == 0
