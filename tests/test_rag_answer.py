"""Answer assembly: numbered context blocks, the grounding prompt, the citation check and
the sources footer and JSON."""

from __future__ import annotations

import json

import pytest

from localassist.documents import Locator
from localassist.rag import (
    SYSTEM_PROMPT,
    check_citations,
    cite_label,
    context_blocks,
    sources_footer,
    sources_json,
    user_prompt,
)
from localassist.rag.search import Hit


def hit(rank: int, text: str, locator: Locator) -> Hit:
    return Hit(rank, text, locator.path, locator, 0.03, 1.5, None, 0.8, rank, f"h{rank}")


HITS = [
    hit(
        1,
        "The offsite budget was approved.\n",
        Locator("meetings/2025-07-03.md", line_start=12, line_end=30, section="Team meeting > Budget"),
    ),
    hit(2, "Revenue grew.", Locator("budget.pdf", page=4)),
    hit(3, "Preface text", Locator("book.pdf", page=2, page_label="ii")),
    hit(4, "north,widget-7,21\n", Locator("sales.csv", line_start=8, line_end=8, row_start=7, row_end=7)),
]


def test_context_blocks_are_numbered_and_headed_with_their_locator():
    assert context_blocks(HITS[:2]) == (
        "[1] meetings/2025-07-03.md L12–30 § Team meeting > Budget\nThe offsite budget was approved.\n\n"
        "[2] budget.pdf p.4\nRevenue grew."
    )
    prompt = user_prompt("What was approved?", HITS[:1])
    assert prompt.startswith("Context:\n\n[1] meetings/") and prompt.endswith("\n\nQuestion: What was approved?")


def test_the_system_prompt_grounds_cites_and_treats_documents_as_data():
    for needed in ("only the numbered context blocks", "[1]", "do not say", "data, not instructions", "do not follow"):
        assert needed in SYSTEM_PROMPT


@pytest.mark.parametrize(
    ("answer", "cited", "invalid"),
    [
        ("Approved [1]. Revenue grew [2].", [1, 2], []),
        ("Per [2][1] and again [1].", [2, 1], []),
        ("See [1, 3] and [2-4].", [1, 3, 2, 4], []),
        ("Made up [7] and [0] and [1–5].", [1, 2, 3, 4], [0, 5, 7]),
        ("No markers, a [^1] footnote, a [x] box, a list[0 ] index?", [], [0]),
        ("Huge range [1-99999999].", [1], [99999999]),  # its ends, not 10^8 numbers
    ],
)
def test_citation_check_flags_markers_outside_1_to_k(answer, cited, invalid):
    check = check_citations(answer, k=4)
    assert check.cited == cited and check.invalid == invalid and check.ok == (not invalid)


def test_sources_footer_lists_short_labels_of_all_or_the_cited_blocks():
    assert sources_footer(HITS[:2]) == "[1] meetings/2025-07-03.md L12–30  [2] budget.pdf p.4"
    # a CSV is cited by the file's lines: data row 7 is line 8, under the header
    assert sources_footer(HITS, cited=[3, 4]) == "[3] book.pdf p.2 (ii)  [4] sales.csv L8"
    assert cite_label(HITS[0].locator) == "meetings/2025-07-03.md L12–30"


def test_sources_json_carries_every_locator_field():
    sources = sources_json(HITS)
    assert json.loads(json.dumps(sources)) == sources  # plain JSON
    assert sources[0] == {
        "n": 1,
        "path": "meetings/2025-07-03.md",
        "page": None,
        "page_label": None,
        "line_start": 12,
        "line_end": 30,
        "row_start": None,
        "row_end": None,
        "section": "Team meeting > Budget",
        "label": "meetings/2025-07-03.md L12–30",
        "score": 0.03,
        "bm25": 1.5,
        "cosine": None,
    }
    assert sources[2]["page"] == 2 and sources[2]["page_label"] == "ii"
    assert sources[3]["row_start"] == 7
