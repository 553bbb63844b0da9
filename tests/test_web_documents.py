"""Documents in the web chat, in a real browser: an attached PDF answers with its page
cited, Summarise streams a summary with sources, and a question asked from an index
(`localassist index add`, BM25) lists the files it came from. One open loopback server
whose home holds the index serves the module."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import make_documents as make
import pytest

pytest.importorskip("starlette")

from browser import answers, expect, open_chat, send, set_field, start_server, stop_server, wait_answered

pytestmark = pytest.mark.model
MULTIPAGE = Path(make.__file__).parent / "multipage.pdf"  # make.PLANTED is on page 3 only
BUDGET = "The offsite budget was approved at 14,500 euros, covering travel and two nights of lodging."
LEAVE = "Parental leave is sixteen weeks at full pay, and it can be split into two blocks."


@pytest.fixture(scope="module")
def server(starter_chat_path, tmp_path_factory):
    home = tmp_path_factory.mktemp("web-docs")
    notes = tmp_path_factory.mktemp("notes")
    (notes / "meetings").mkdir()
    (notes / "meetings" / "2025-07-03.md").write_text(f"# Offsite\n\n## Budget\n\n{BUDGET}\n", encoding="utf-8")
    (notes / "handbook.txt").write_text(f"Handbook\n\n{LEAVE}\n", encoding="utf-8")
    added = subprocess.run(
        [sys.executable, "-m", "localassist", "index", "add", str(notes), "--name", "notes", "--no-embed"],
        capture_output=True,
        env={**os.environ, "LOCALASSIST_HOME": str(home), "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert added.returncode == 0, added.stderr.decode()
    proc = start_server(home, starter_chat_path)
    yield proc
    stop_server(proc)


def attach(page, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Attach").click()
    chooser.value.set_files(str(path))
    expect(page.locator(".chip")).to_contain_text(path.name)


def test_web_a_question_on_an_attached_pdf_cites_page_3(open_page, server):
    page = open_chat(open_page, server.url + "/").page
    attach(page, MULTIPAGE)
    expect(page).to_have_url(re.compile(r"#/c/"))
    set_field(page, "Max tokens", 8)
    send(page, f"Which page has the word {make.PLANTED}?")
    wait_answered(page)
    cited = answers(page).last.locator("ol.sources li").filter(has_text="p.3")
    expect(cited).to_have_count(1)
    expect(cited).to_contain_text("multipage.pdf")
    cited.get_by_role("button").click()
    expect(cited.locator("blockquote")).to_contain_text(make.PLANTED)


def test_web_summarise_streams_a_summary_with_its_pages(open_page, server):
    page = open_chat(open_page, server.url + "/").page
    set_field(page, "Max tokens", 8)
    attach(page, MULTIPAGE)
    page.get_by_role("button", name="Summarise").click()
    wait_answered(page)
    assert answers(page).last.locator(".content").inner_text().strip()
    cited = answers(page).last.locator("ol.sources li").filter(has_text="p.3")
    expect(cited).to_have_count(1)
    expect(cited).to_contain_text("multipage.pdf")


def test_web_a_question_from_an_index_lists_its_sources(open_page, server):
    page = open_chat(open_page, server.url + "/").page
    expect(page.get_by_label("Index").locator("option", has_text="notes")).to_have_count(1)
    page.get_by_label("Index").select_option("notes")
    set_field(page, "Max tokens", 8)
    send(page, "How much was the offsite budget?")
    wait_answered(page)
    sources = answers(page).last.locator("ol.sources li")
    expect(sources.first).to_contain_text("2025-07-03.md")
    sources.first.get_by_role("button").click()
    expect(sources.first.locator("blockquote")).to_contain_text("14,500 euros")
