"""Chunking against the starter model's real tokenizer: every chunk fits the budget,
nothing is lost, and locators (pages, lines, rows) point where the text really is."""

from __future__ import annotations

import csv
import hashlib
import itertools
import random
import re
from pathlib import Path

import make_documents as make  # the fixtures' facts: planted word, pages
import pytest

from localassist.documents import chunk_document, load, load_bytes, split_spans
from localassist.errors import DocumentError

FIXTURES = Path(__file__).parent / "fixtures" / "documents"

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def count(starter_model):
    """Token count by the starter model's own tokenizer (vocabulary only, no weights)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(starter_model), vocab_only=True, verbose=False)
    return lambda text: len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


_WORDS = ["café", "naïve", "東京", "日本語の文章", "🙂", "👩‍💻", "Ωμέγα", "x", "the", "tokenizer", "1234567", "(a)"]


# runs of these with no space to cut at, where tokens do not add up ("sf" and "dv" are
# 1 token each, "sfdv" is 3)
_GIBBERISH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'-.,é京🙂"


def random_text(rng: random.Random) -> str:
    """Prose-like text with the awkward parts: long runs with no space to cut at,
    CJK, emoji, runs of spaces and blank lines, tabs."""
    parts = []
    for _ in range(rng.randrange(20, 400)):
        roll = rng.random()
        if roll < 0.55:
            parts.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randrange(1, 12))))
        elif roll < 0.7:
            parts.append(rng.choice(_WORDS))
        elif roll < 0.75:
            parts.append("".join(rng.choice(_GIBBERISH) for _ in range(rng.randrange(30, 200))))
        elif roll < 0.85:
            parts.append(rng.choice([".", ",", ";", "!", "?"]))
        else:
            parts.append(rng.choice(["\n", "\n\n", "\n\n\n", "   ", "\t", " \n "]))
        parts.append(" " if rng.random() < 0.8 else "")
    return "".join(parts)


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("seed", range(12))
def test_every_chunk_fits_the_budget_by_the_real_tokenizer_and_the_chunks_tile_the_text(count, seed):
    rng = random.Random(seed)
    text = random_text(rng)
    for budget in (3, 7, 16, 50, 200):
        spans = split_spans(text, budget, count)
        for span in spans:
            piece = text[span.start : span.end]
            assert count(piece) == span.tokens <= budget, (budget, piece)
            assert piece.strip()
        # in order, and only whitespace between them: the chunks hold all of the text's content
        edges = [0, *(x for span in spans for x in (span.start, span.end)), len(text)]
        gaps = [text[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True)]
        assert all(not gap.strip() for gap in gaps), (budget, gaps)
        assert squeeze("".join(text[s.start : s.end] for s in spans)) == squeeze(text)


@pytest.mark.parametrize("seed", range(4))
def test_overlapping_chunks_still_fit_and_reach_back_into_the_previous_chunk(count, seed):
    text = random_text(random.Random(100 + seed))
    budget, overlap = 48, 12
    spans = split_spans(text, budget, count, overlap=overlap)
    assert all(count(text[s.start : s.end]) == s.tokens <= budget for s in spans)
    pairs = list(itertools.pairwise(spans))
    assert all(a.start < b.start and a.end < b.end for a, b in pairs)
    assert all(b.start <= a.end or not text[a.end : b.start].strip() for a, b in pairs)
    assert len(pairs) > 3 and sum(b.start < a.end for a, b in pairs) >= len(pairs) // 2
    # overlap only moves starts back: the cut points are those of chunks of budget - overlap
    base = split_spans(text, budget - overlap, count)
    assert [s.end for s in spans] == [s.end for s in base]
    assert all(s.start <= b.start for s, b in zip(spans, base, strict=True))


def test_a_character_bigger_than_the_budget_is_an_error_not_an_oversized_chunk(count):
    wide = next(c for c in "𓀀𝔘ꙮ𒀀𐎀" if count(c) > 1)
    with pytest.raises(DocumentError, match=f"a 1-token chunk cannot hold even {wide!r}"):
        split_spans(wide * 3, 1, count)


@pytest.mark.parametrize(("budget", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_impossible_budget_or_overlap_is_refused(count, budget, overlap):
    with pytest.raises(ValueError, match="chunk"):
        split_spans("some text", budget, count, overlap=overlap)


def test_pdf_chunks_never_span_two_pages_and_the_planted_word_is_on_page_3(count):
    document = load(FIXTURES / "multipage.pdf")
    whole = chunk_document(document, 1000, count)
    assert [c.locator.page for c in whole] == [1, 2, 3, 4, 5]
    small = chunk_document(document, 8, count)
    assert len(small) > 5
    for chunk in small:
        assert chunk.tokens == count(chunk.text) <= 8
        assert chunk.text.strip() in "\n".join(make.PAGES[chunk.locator.page - 1])
    assert {c.locator.page for c in small if make.PLANTED in c.text} == {3}


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


@pytest.mark.parametrize("budget", [6, 25, 400])
def test_chunk_line_ranges_are_where_the_chunk_text_is_in_the_file(count, tmp_path, budget):
    rng = random.Random(budget)
    path = tmp_path / "long.txt"
    path.write_text(random_text(rng) + "\n\n" + random_text(rng), encoding="utf-8")
    for source in (path, FIXTURES / "notes.md"):
        file_text = source.read_text(encoding="utf-8")
        chunks = chunk_document(load(source), budget, count)
        cursor = 0
        for chunk in chunks:
            at = file_text.index(chunk.text, cursor)  # no overlap: chunks come in file order
            cursor = at + len(chunk.text)
            first = at + len(chunk.text) - len(chunk.text.lstrip())
            last = at + len(chunk.text.rstrip()) - 1
            expected = (line_of(file_text, first), line_of(file_text, last))
            assert (chunk.locator.line_start, chunk.locator.line_end) == expected


def test_markdown_chunks_keep_their_section(count):
    chunks = chunk_document(load(FIXTURES / "notes.md"), 10, count)
    (detail,) = [c for c in chunks if "Deep detail" in c.text]
    assert detail.locator.section == "Intro > Setup > Details"
    assert all(c.locator.section == "Intro > Setup" for c in chunks if "shell comment" in c.text)


def test_csv_chunks_repeat_the_header_fit_the_budget_and_hold_each_row_once(count):
    path = FIXTURES / "sales.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        records = list(csv.reader(fh))
    chunks = chunk_document(load(path), 60, count)
    assert len(chunks) > 3
    next_row = 1
    for chunk in chunks:
        assert chunk.tokens == count(chunk.text) <= 60
        parsed = list(csv.reader(chunk.text.splitlines(keepends=True)))
        assert parsed[0] == records[0]
        start, end = chunk.locator.row_start, chunk.locator.row_end
        assert start == next_row
        assert parsed[1:] == records[start : end + 1]
        next_row = end + 1
    assert next_row == len(records)
    assert str(chunks[0].locator) == f"{path} L2–{chunks[0].locator.row_end + 1}"  # lines: the header is line 1


def test_a_csv_row_too_big_for_the_budget_is_split_with_the_header_on_every_part(count):
    rng = random.Random(5)
    note = " ".join("".join(rng.choice("abcdefgh") for _ in range(6)) for _ in range(150))
    data = f"id,note\n1,short\n2,{note}\n3,short again\n".encode()
    chunks = chunk_document(load_bytes(data, "big.csv"), 40, count)
    parts = [c for c in chunks if c.locator.row_start == 2]
    assert len(parts) > 2
    assert all(c.locator.row_end == 2 and c.text.startswith("id,note\n") for c in parts)
    assert all(c.tokens == count(c.text) <= 40 for c in chunks)
    assert "".join(c.text[len("id,note\n") :] for c in parts) == f"2,{note}\n"
    assert [c.locator.row_start for c in chunks if c.locator.row_start != 2] == [1, 3]


def test_csv_header_bigger_than_the_budget_is_an_error(count):
    header = ",".join(f"column_{i}" for i in range(30))
    with pytest.raises(DocumentError, match="CSV header alone is"):
        chunk_document(load_bytes(f"{header}\n1\n".encode(), "wide.csv"), 20, count)


def test_chunk_hash_is_the_sha256_of_its_text(count):
    (chunk,) = chunk_document(load(FIXTURES / "bom.txt"), 100, count)
    assert chunk.sha256 == hashlib.sha256(chunk.text.encode("utf-8")).hexdigest()
    assert chunk.path == str(FIXTURES / "bom.txt")
