"""Loaders: every piece of text keeps where it came from (1-based pages, lines and rows),
bad files are clear errors. Fixtures are real files made by tests/fixtures/documents/make_documents.py."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import make_documents as make  # the fixtures' facts: planted word, pages, labels
import pytest

from localassist.documents import Locator, load, load_bytes
from localassist.errors import DocumentError, DocumentNotFoundError, exit_code_for
from stderr_lines import only_our_lines

FIXTURES = Path(__file__).parent / "fixtures" / "documents"


def fixture(name: str) -> str:
    return str(FIXTURES / name)


# --- PDF ---------------------------------------------------------------------------


def test_pdf_pages_are_1_based_and_the_planted_word_is_on_page_3():
    document = load(fixture("multipage.pdf"))
    assert document.kind == "pdf"
    assert document.pages == len(make.PAGES) == 5
    holding = [piece for piece in document.pieces if make.PLANTED in piece.text]
    assert [piece.locator.page for piece in holding] == [3]
    assert str(holding[0].locator) == f"{fixture('multipage.pdf')} p.3"
    assert [piece.locator.page for piece in document.pieces] == [1, 2, 3, 4, 5]
    assert all(piece.locator.page_label is None for piece in document.pieces)  # labels equal the numbers


def test_pdf_pages_agree_with_langchain_pypdfloader_shifted_to_1_based():
    with warnings.catch_warnings():  # langchain-community warns that it is being sunset
        warnings.simplefilter("ignore")
        from langchain_community.document_loaders import PyPDFLoader

        theirs = PyPDFLoader(fixture("multipage.pdf")).load()
    ours = load(fixture("multipage.pdf")).pieces
    assert [doc.metadata["page"] + 1 for doc in theirs] == [piece.locator.page for piece in ours]
    assert [doc.page_content.strip() for doc in theirs] == [piece.text.strip() for piece in ours]


def test_pdf_page_labels_are_kept_where_they_differ_from_the_number():
    document = load(fixture("labels.pdf"))
    # /PageLabels in make.py: roman i, ii for the first two pages, then decimal from 1
    assert [(p.locator.page, p.locator.page_label) for p in document.pieces] == [
        (1, "i"),
        (2, "ii"),
        (3, "1"),
        (4, "2"),
    ]
    assert str(document.pieces[0].locator) == f"{fixture('labels.pdf')} p.1 (i)"


def test_pdf_read_from_stdin_bytes_is_recognised_by_its_content():
    data = (FIXTURES / "multipage.pdf").read_bytes()
    document = load_bytes(data)
    assert document.kind == "pdf" and document.path == "-"
    assert document.sha256 == hashlib.sha256(data).hexdigest()
    page = next(p for p in document.pieces if make.PLANTED in p.text)
    assert str(page.locator) == "stdin p.3"


def test_scanned_pdf_is_an_error_that_says_it_has_no_text():
    with pytest.raises(DocumentError, match=r"no extractable text in its 2 pages.*scanned.*OCR") as caught:
        load(fixture("scanned.pdf"))
    assert exit_code_for(caught.value) == 2


def test_pdf_with_some_image_only_pages_warns_which_pages():
    document = load(fixture("half-scanned.pdf"))
    assert [p.locator.page for p in document.pieces] == [1]
    assert document.pages == 3
    assert any("2 of 3 pages have no extractable text: p.2–3" in w for w in document.warnings)


def test_encrypted_pdf_is_an_error_that_asks_for_the_password():
    with pytest.raises(DocumentError, match="encrypted and needs a password") as caught:
        load(fixture("encrypted.pdf"))
    assert exit_code_for(caught.value) == 2


def test_pdf_encrypted_with_an_empty_user_password_is_read():
    document = load(fixture("owner-only.pdf"))
    assert [p.text.strip() for p in document.pieces] == ["\n".join(lines) for lines in make.PAGES[:2]]


def test_file_named_pdf_that_is_not_one_is_a_clear_error():
    with pytest.raises(DocumentError, match=r"report\.pdf is not a readable PDF"):
        load_bytes(b"just some text\n", "report.pdf")


# --- text and Markdown ---------------------------------------------------------------


def test_markdown_sections_have_breadcrumbs_and_the_heading_lines():
    path = FIXTURES / "notes.md"
    lines = path.read_text(encoding="utf-8").split("\n")
    document = load(path)
    assert document.kind == "markdown"
    assert document.lines == len(lines) - 1  # the file ends with a newline
    got = [(p.locator.section, p.locator.line_start, p.locator.line_end) for p in document.pieces]
    # by hand from the fixture: the code fence's "# this is a shell comment" is not a heading
    assert got == [
        (None, 1, 1),
        ("Intro", 3, 5),
        ("Intro > Setup", 7, 16),
        ("Intro > Setup > Details", 18, 20),
        ("Intro > Usage", 22, 24),
        ("Appendix", 26, 29),
        ("Appendix > Notes", 31, 34),
    ]
    for piece in document.pieces:
        start, end = piece.locator.line_start, piece.locator.line_end
        assert piece.text.strip() == "\n".join(lines[start - 1 : end]).strip()
    assert str(document.pieces[2].locator) == f"{path} L7–16 § Intro > Setup"


def test_markdown_heading_on_line_1_front_matter_and_closing_hashes():
    text = "---\ntitle: x\n---\n# Top #\nbody\n\n## C# notes\nmore\n"
    document = load_bytes(text.encode(), "doc.md")
    got = [(p.locator.section, p.locator.line_start, p.locator.line_end) for p in document.pieces]
    # the front matter's closing --- under "title: x" is not a setext heading
    assert got == [(None, 1, 3), ("Top", 4, 5), ("Top > C# notes", 7, 8)]


def test_text_file_is_one_piece_covering_every_line(tmp_path):
    path = tmp_path / "plain.log"  # an extension with no loader of its own: read as text
    path.write_text("\n\nfirst real line\nsecond\n\nlast\n\n\n", encoding="utf-8")
    document = load(path)
    assert document.kind == "text" and document.lines == 8
    (piece,) = document.pieces
    assert (piece.locator.line_start, piece.locator.line_end) == (3, 6)


def test_crlf_line_ends_count_as_one_line_each(tmp_path):
    path = tmp_path / "dos.txt"
    path.write_bytes(b"one\r\ntwo\r\nthree\r\n")
    (piece,) = load(path).pieces
    assert piece.text == "one\ntwo\nthree\n"
    assert (piece.locator.line_start, piece.locator.line_end) == (1, 3)


# --- encodings and binary --------------------------------------------------------------


def test_utf8_bom_is_stripped():
    document = load(fixture("bom.txt"))
    assert document.pieces[0].text.startswith("First line after the BOM\n")
    assert document.encoding == "utf-8-sig" and document.warnings == []
    assert document.sha256 == hashlib.sha256((FIXTURES / "bom.txt").read_bytes()).hexdigest()


def test_utf16_with_a_bom_is_read():
    document = load(fixture("utf16.txt"))
    assert document.pieces[0].text == "UTF-16 text: caf\u00e9\nline two\n"


def test_cp1252_text_is_read_with_a_warning_returned_not_printed(capsys):
    document = load(fixture("cp1252.txt"))
    expected = (FIXTURES / "cp1252.txt").read_bytes().decode("cp1252")
    assert document.pieces[0].text == expected
    assert "\u20ac5" in expected and document.encoding == "cp1252"
    assert document.warnings == [f"{fixture('cp1252.txt')} is not valid UTF-8 (byte 3); read it as cp1252"]
    assert capsys.readouterr() == ("", "")


def test_latin1_is_the_last_fallback(tmp_path):
    path = tmp_path / "odd.txt"
    path.write_bytes(b"byte \x81 undefined in cp1252\n")  # 0x81 has no cp1252 character
    document = load(path)
    assert document.encoding == "latin-1"
    assert document.pieces[0].text == "byte \x81 undefined in cp1252\n"


@pytest.mark.parametrize("name", ["image.txt", "noise.dat"])
def test_binary_files_are_refused_by_content_not_extension(name):
    with pytest.raises(DocumentError, match="looks like a binary file") as caught:
        load(fixture(name))
    assert exit_code_for(caught.value) == 2


def test_binary_stdin_is_refused():
    with pytest.raises(DocumentError, match=r"^stdin looks like a binary file, not text \(it contains NUL bytes\)"):
        load_bytes(b"abc\x00def")


def test_unknown_extension_that_decodes_is_text(tmp_path):
    path = tmp_path / "notes.weird"
    path.write_text("plain words\n", encoding="utf-8")
    assert load(path).kind == "text"


@pytest.mark.parametrize("data", [b"", b"  \n\t\n"])
def test_empty_file_is_an_error(tmp_path, data):
    path = tmp_path / "empty.txt"
    path.write_bytes(data)
    with pytest.raises(DocumentError, match="empty"):
        load(path)
    with pytest.raises(DocumentError, match=r"^stdin is empty"):
        load_bytes(data)


def test_empty_fixture_file_is_an_error():
    with pytest.raises(DocumentError, match=r"empty\.txt is empty"):
        load(fixture("empty.txt"))


def test_missing_file_is_not_found_with_exit_code_3(tmp_path):
    missing = tmp_path / "nope.pdf"
    with pytest.raises(DocumentNotFoundError, match=f"^{re.escape(str(missing))}: no such file$") as caught:
        load(missing)
    assert exit_code_for(caught.value) == 3


def test_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DocumentError, match="is a folder") as caught:
        load(tmp_path)
    assert exit_code_for(caught.value) == 2


def test_unknown_kind_is_refused():
    with pytest.raises(DocumentError, match="unknown document kind 'docx'"):
        load_bytes(b"text", "x.txt", kind="docx")


# --- CSV, HTML, JSON -------------------------------------------------------------------


def test_csv_rows_are_numbered_from_1_after_the_header_with_their_own_text():
    path = FIXTURES / "sales.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        records = list(csv.reader(fh))
    document = load(path)
    assert document.kind == "csv" and document.rows == len(records) - 1 == 40
    assert document.header == "region,product,units,note\n"
    for piece in document.pieces:
        (parsed,) = list(csv.reader(piece.text.splitlines(keepends=True)))
        assert parsed == records[piece.locator.row_start]  # records[0] is the header
        assert piece.locator.row_start == piece.locator.row_end
    quoted = document.pieces[11]  # row 12 holds a field with a newline: two file lines
    assert (quoted.locator.row_start, quoted.locator.line_start, quoted.locator.line_end) == (12, 13, 14)


def test_csv_locators_name_the_file_lines_not_data_row_numbers():
    from localassist.documents import chunk_document

    path = FIXTURES / "sales.csv"
    lines = path.read_text(encoding="utf-8").split("\n")
    document = load(path)
    for piece in document.pieces:
        # "row 1" would send a reader to the header: line 1 in an editor and in a spreadsheet
        label = str(piece.locator).removeprefix(f"{path} ")
        start, _, end = label.removeprefix("L").partition("–")
        cited = "\n".join(lines[int(start) - 1 : int(end or start)]) + "\n"
        assert cited == piece.text, label
    assert str(document.pieces[0].locator) == f"{path} L2"
    chunks = chunk_document(document, 20, count_words)  # words: two a row
    assert len(chunks) > 3
    for chunk in chunks:
        start, end = chunk.locator.line_start, chunk.locator.line_end
        assert str(chunk.locator) == f"{path} L{start}–{end}"
        assert chunk.text == lines[0] + "\n" + "\n".join(lines[start - 1 : end]) + "\n"  # the header, then those lines


def test_csv_with_only_a_header_is_an_error():
    with pytest.raises(DocumentError, match="header row but no data rows"):
        load_bytes(b"a,b,c\n", "t.csv")


def test_semicolon_csv_is_sniffed():
    document = load_bytes(b"name;city\nAda;London\nAlan;Wilmslow\n", "people.csv")
    assert document.rows == 2 and document.pieces[1].text == "Alan;Wilmslow\n"


def test_html_becomes_text_with_heading_sections_and_no_scripts():
    document = load(fixture("page.html"))
    text = "".join(piece.text for piece in document.pieces)
    assert text == (
        "Fixture page\n\n"
        "# Main title\n\n"
        "First paragraph with bold and a line break in the source & an entity.\n\n"
        "## Section two\n\n"
        "- apple\n- banana\n\n"
        "Closing paragraph.\n"
    )
    # by hand from the fixture: the title is on line 2, <h1> on 5, <h2> on 8, the last <p> on 10
    got = [(p.locator.section, p.locator.line_start, p.locator.line_end) for p in document.pieces]
    assert got == [(None, 2, 2), ("Main title", 5, 7), ("Main title > Section two", 8, 10)]
    assert document.lines == 11  # of the file, not of the text taken out of it


_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> set[str]:
    return {w.casefold() for w in _WORD.findall(text)}


def marks(text: str) -> set[str]:
    """Words and JSON brackets: what a line of the source shares with a chunk taken from it."""
    return words(text) | set(re.findall(r"[{}\[\]]", text))


def assert_cites_source_lines(path: Path, chunks) -> None:
    """The oracle is the file itself: the cited lines hold every word of the chunk, and the
    first and the last cited line each hold one of its words or brackets (no padding)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    for chunk in chunks:
        start, end = chunk.locator.line_start, chunk.locator.line_end
        assert 1 <= start <= end <= len(lines), (str(chunk.locator), chunk.text)
        cited = lines[start - 1 : end]
        assert words(chunk.text) <= words("\n".join(cited)), (str(chunk.locator), chunk.text)
        assert marks(cited[0]) & marks(chunk.text) and marks(cited[-1]) & marks(chunk.text), str(chunk.locator)


def count_words(text: str) -> int:
    return len(text.split())


def test_html_locators_point_at_source_lines_not_extracted_text(tmp_path):
    from localassist.documents import chunk_document

    one_line = tmp_path / "garden.html"
    one_line.write_text(
        "<html><head><title>Garden notes</title></head><body><h1>Garden</h1>"
        "<p>The tomatoes were planted in April along the south fence.</p><h2>Watering</h2>"
        "<p>Water the beds every second morning before nine.</p><p>The rain barrel holds two hundred litres.</p>"
        "<h2>Pests</h2><ul><li>Slugs on the lettuce</li><li>Aphids on the roses</li></ul></body></html>\n",
        encoding="utf-8",
    )
    wrapped = tmp_path / "wrapped.html"
    wrapped.write_text(
        "<!doctype html>\n<html>\n<head>\n<title>Orchard log</title>\n<style>p { margin: 0 }</style>\n</head>\n"
        "<body>\n\n<h1>\n  Orchard\n</h1>\n"
        "<p>The pear trees\n   were pruned in\n   February, after the frost,\n   and again in\n   late June.</p>\n"
        "<table><tr><td>apples</td>\n<td>forty crates</td></tr>\n<tr><td>plums</td><td>nine crates</td></tr></table>\n"
        "<pre>ladder  3 m\nshears  2</pre>\n\n\n"
        "<h2>Bees</h2><p>Two hives</p><p>by the wall.</p>\n</body>\n</html>\n",
        encoding="utf-8",
    )
    for path in (one_line, wrapped, FIXTURES / "page.html"):
        chunks = chunk_document(load(path), 6, count_words)
        assert len(chunks) > 3
        assert_cites_source_lines(path, chunks)
    assert {str(c.locator).split(" § ")[0] for c in chunk_document(load(one_line), 6, count_words)} == {
        f"{one_line} L1"  # one long line: every chunk says that line
    }


def test_json_is_pretty_printed_and_its_locators_are_the_source_lines():
    document = load(fixture("data.json"))
    expected = json.dumps(json.loads((FIXTURES / "data.json").read_text()), indent=2, ensure_ascii=False) + "\n"
    (piece,) = document.pieces
    assert piece.text == expected
    assert (piece.locator.line_start, piece.locator.line_end) == (1, 1)  # the file is one line
    assert "caf\u00e9" in piece.text and document.lines == 1


def test_json_locators_point_at_source_lines_not_pretty_printed_text(tmp_path):
    from localassist.documents import chunk_document

    path = tmp_path / "orders.json"
    path.write_text(
        '{\n    "orders": [\n        {"id": 1, "item": "lantern", "note": "left at the gate"},\n'
        '        {"id": 2, "item": "kettle",\n         "note": "signed by\\nthe neighbour"}\n    ],\n'
        '    "shop": {"name": "Hollow Oak", "town": "Ashby"}, "tags": ["tin", "copper", "brass"]\n}\n',
        encoding="utf-8",
    )
    chunks = chunk_document(load(path), 6, count_words)
    assert len(chunks) > 3
    assert_cites_source_lines(path, chunks)
    minified = tmp_path / "min.json"
    minified.write_text(json.dumps(json.loads(path.read_text()), separators=(",", ":")), encoding="utf-8")
    chunks = chunk_document(load(minified), 6, count_words)
    assert len(chunks) > 3 and {(c.locator.line_start, c.locator.line_end) for c in chunks} == {(1, 1)}


def test_invalid_json_says_where():
    with pytest.raises(DocumentError, match=r"bad\.json is not valid JSON: .*\(line 2, column 7\)"):
        load_bytes(b'{"a": 1,\n "b": }\n', "bad.json")


def test_duplicate_json_keys_are_a_warning_and_the_text_is_read_as_written():
    document = load_bytes(b'{"a": 1,\n "a": 2}', "dup.json")
    assert document.warnings == ["dup.json repeats JSON keys ('a'); JSON readers keep only the last value of each"]
    # pretty-printing would keep only the last value, so the text is the file's own
    assert document.pieces[0].text == '{"a": 1,\n "a": 2}'
    assert (document.pieces[0].locator.line_start, document.pieces[0].locator.line_end) == (1, 2)


# --- locators and imports ----------------------------------------------------------------


def test_locator_strings():
    assert str(Locator("report.pdf", page=12)) == "report.pdf p.12"
    assert str(Locator("report.pdf", page=3, page_label="iii")) == "report.pdf p.3 (iii)"
    assert str(Locator("notes.md", line_start=40, line_end=58)) == "notes.md L40–58"
    assert str(Locator("notes.md", line_start=7, line_end=7, section="Intro > Setup")) == "notes.md L7 § Intro > Setup"
    assert str(Locator("sales.csv", row_start=1, row_end=50, line_start=2, line_end=51)) == "sales.csv L2–51"
    assert str(Locator("sales.csv", row_start=1, row_end=50)) == "sales.csv rows 1–50"  # no lines known
    assert str(Locator("-", line_start=1, line_end=2)) == "stdin L1–2"


def test_importing_documents_imports_no_langchain_pypdf_or_llama_cpp():
    code = (
        "import sys, localassist.documents\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('langchain_text_splitters', 'langchain_core', 'langchain_community', 'pypdf', 'llama_cpp')]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def truncated_pdf(tmp_path: Path, cut: int) -> Path:
    data = (FIXTURES / "multipage.pdf").read_bytes()
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
    whole = load(FIXTURES / "multipage.pdf")
    assert whole.warnings == [] and [p.text for p in whole.pieces] == [p.text for p in document.pieces]
