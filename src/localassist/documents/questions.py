"""Documents in a conversation: ``ask -f FILE`` and chat's ``/file`` (the assistant's
side of both is attachments.py; this module knows documents, a budget and a tokenizer).

If the documents fit, they go in whole, as plain text inside the user message (or the
pinned context), delimited by ``<document>`` tags; the engine tokenizes message content
as text, so nothing in a document can become a control token. If they do not fit, the
question is answered over the chunks that match it best by BM25 (an in-memory index of
the chunks, built per question) as many as the budget holds. The sources reported come
from those chunks' locators, never from the model's text.

On a remote server that cannot count tokens the counts are an estimate, above the real
count: it never cuts a document or refuses one there. The documents go whole (the memory
policy warns that the prompt may not fit) and the server, which counts, decides. Ollama is
the exception: it would clip a prompt that does not fit without an error, so there the
estimate fits documents as a count does, and every message says it is an estimate.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from localassist.documents.chunking import chunk_document
from localassist.documents.model import STDIN, Chunk, Document, Locator
from localassist.errors import DocumentBudgetError

MARGIN = 16  # tokens: text joins the prompt with a token or two of difference
MIN_EXCERPT = 32  # tokens: below this no excerpt is worth sending
MAX_EXCERPT = 512  # tokens: smaller excerpts are more specific, and more of them fit
MAX_SOURCES = 5  # sources named for a question over whole documents
RELATIVE = 0.5  # ... and only those scoring at least this share of the best one
_TERM = re.compile(r"[^\W_]+")
# words that say nothing about where an answer is (kept short: BM25's idf does the rest)
_STOPWORD_TEXT = """a an and are as at be by can did do does for from had has have how i if in is it its me my no not
    of on or our so that the their them then there these they this to was we were what when where which who why will
    with you your"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


# --- BM25 over chunks


def terms(text: str) -> list[str]:
    return [w for w in (t.lower() for t in _TERM.findall(text)) if w not in _STOPWORDS]


class BM25:
    """Okapi BM25 (k1 1.5, b 0.75) over a handful of texts, in memory."""

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(terms(t)) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        self.df: Counter[str] = Counter()
        for d in self.docs:
            self.df.update(d.keys())

    def idf(self, term: str) -> float:
        n, df = len(self.docs), self.df.get(term, 0)
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> list[float]:
        words = set(terms(query))
        out = []
        for d, length in zip(self.docs, self.lengths, strict=True):
            score = 0.0
            for w in words:
                f = d.get(w, 0)
                if f:
                    norm = f + self.k1 * (1 - self.b + self.b * length / (self.avg or 1))
                    score += self.idf(w) * f * (self.k1 + 1) / norm
            out.append(score)
        return out


# --- what a question gets


@dataclass(frozen=True)
class Source:
    locator: Locator
    score: float | None = None  # BM25; None for a document named whole

    @property
    def label(self) -> str:
        """``contract.pdf p.12``, ``notes.md L40–58``, ``sales.csv L4–10``."""
        return str(replace(self.locator, section=None))

    def as_dict(self) -> dict[str, Any]:
        where = {k: v for k, v in asdict(self.locator).items() if v is not None}
        return {"source": self.label, **where, "score": None if self.score is None else round(self.score, 4)}


@dataclass
class Attached:
    text: str  # the user message: the documents (or excerpts), then the question
    mode: str  # whole | excerpts
    sources: list[Source]
    tokens: int  # of all the documents' text
    chunks: int  # excerpts the documents were cut into (excerpts mode)
    used: int  # excerpts sent
    notice: str | None = None

    def sources_line(self) -> str:
        """``sources: contract.pdf p.12, p.14; notes.md L40–58``"""
        by_path: dict[str, list[str]] = {}
        for source in self.sources:
            path = name(source.locator.path)
            where = source.label[len(path) :].strip()
            places = by_path.setdefault(path, [])
            if where and where not in places:
                places.append(where)
        return "sources: " + "; ".join(f"{path} {', '.join(w)}".rstrip() for path, w in by_path.items())

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "excerpts": self.used, "of": self.chunks}


def name(path: str) -> str:
    return "stdin" if path == STDIN else path


def document_text(document: Document) -> str:
    """The whole text; PDF pages marked, so a model can say which page it read."""
    if document.kind == "pdf":
        return "\n\n".join(f"[page {p.locator.page}]\n{p.text.strip()}" for p in document.pieces)
    if document.kind == "csv":
        return (document.header or "") + "".join(p.text for p in document.pieces)
    return "".join(p.text for p in document.pieces)


def document_block(source: str, text: str) -> str:
    return f'<document source="{source}">\n{text.strip()}\n</document>'


def question_text(question: str, blocks: Sequence[str], whole: bool) -> str:
    intro = (
        "The user's documents:"
        if whole
        else "Excerpts from the user's documents, the parts that match the question best, each with where it is from:"
    )
    return f"{intro}\n\n" + "\n\n".join(blocks) + f"\n\n{question.strip()}"


def attach(
    documents: Sequence[Document],
    question: str,
    room: Callable[[str], int],
    count: Callable[[str], int],
    *,
    estimated: str | None = None,
    server_decides: bool = False,
) -> Attached:
    """The user message for ``question`` over ``documents``. ``room(text)`` is how many
    tokens would be left in the budget were ``text`` sent (negative: it does not fit);
    ``count`` counts plain text with the model's tokenizer. ``estimated``: the counts are
    an estimate, and why (said in every message). ``server_decides``: an estimate that
    may not cut or refuse: the documents go whole, whatever it says."""
    whole = [document_block(name(d.path), document_text(d)) for d in documents]
    total = sum(count(block) for block in whole)
    text = question_text(question, whole, whole=True)
    if server_decides or room(text) >= MARGIN:
        return Attached(text, "whole", _best_parts(documents, question, count), total, 0, 0)
    about, why = ("about ", f" ({estimated})") if estimated else ("", "")
    available = room(question_text(question, [], whole=False)) - MARGIN
    if available < MIN_EXCERPT:
        raise DocumentBudgetError(
            f"no room for any part of {_names(documents)}: the question, the conversation and --max-tokens "
            f"leave {about}{max(available, 0):,} tokens of the context{why}. Raise --ctx or lower --max-tokens"
        )
    size = max(MIN_EXCERPT, min(MAX_EXCERPT, available // 4))
    chunks = [c for d in documents for c in chunk_document(d, size, count)]
    scores = BM25([c.text for c in chunks]).scores(question)
    ranked = sorted(range(len(chunks)), key=lambda i: (-scores[i], i))
    matching = [i for i in ranked if scores[i] > 0] or list(range(len(chunks)))  # nothing matches: from the start
    chosen: list[int] = []
    used = 0
    for i in matching:
        cost = count(_excerpt(chunks[i])) + 2
        if used + cost <= available:
            chosen.append(i)
            used += cost
    while True:  # the sum of counts is an estimate: the real count of the message decides
        text = question_text(question, [_excerpt(chunks[i]) for i in sorted(chosen)], whole=False)
        if room(text) >= 0 or not chosen:
            break
        chosen.pop()  # the lowest ranked goes first
    if not chosen:
        raise DocumentBudgetError(f"no part of {_names(documents)} fits what is left of the context{why}; raise --ctx")
    sources = [Source(chunks[i].locator, scores[i]) for i in chosen]
    measured = f"{about}{total:,} tokens" + (f", {estimated}" if estimated else "")
    notice = (
        f"{_names(documents)} ({measured}) {'does' if len(documents) == 1 else 'do'} not fit the context: "
        f"answering from the {len(chosen)} of {len(chunks)} excerpts that match the question best"
    )
    return Attached(text, "excerpts", sources, total, len(chunks), len(chosen), notice)


def _excerpt(chunk: Chunk) -> str:
    return document_block(str(chunk.locator), chunk.text)


def best_chunks(documents: Sequence[Document], question: str, count: Callable[[str], int]) -> list[tuple[Chunk, float]]:
    """The parts of whole documents that match the question best: up to MAX_SOURCES, each
    scoring at least RELATIVE of the best; none when no word of the question is there."""
    chunks = [c for d in documents for c in chunk_document(d, MAX_EXCERPT, count)]
    scores = BM25([c.text for c in chunks]).scores(question)
    best = max(scores, default=0.0)
    ranked = [i for i in sorted(range(len(chunks)), key=lambda i: (-scores[i], i)) if scores[i] >= RELATIVE * best]
    return [(chunks[i], scores[i]) for i in ranked[:MAX_SOURCES]] if best > 0 else []


def _best_parts(documents: Sequence[Document], question: str, count: Callable[[str], int]) -> list[Source]:
    """For whole documents: the parts that match the question best, else each document as a whole."""
    best = best_chunks(documents, question, count)
    if best:
        return [Source(chunk.locator, score) for chunk, score in best]
    return [Source(Locator(d.path)) for d in documents]


def _names(documents: Sequence[Document]) -> str:
    names = [name(d.path) for d in documents]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
