"""Trust III (issue #19), items 24 and 25: every error is the project's one line, the
libraries underneath do not print past it, and the small rough edges of tools, index and logs.

Every test here failed on the code before the fix."""

from __future__ import annotations

from pathlib import Path

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
