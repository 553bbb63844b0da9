"""Hybrid retrieval: BM25 over FTS5 and cosine over the vectors, fused by reciprocal
rank fusion, near-duplicates collapsed, and "not found" when no hit reaches the
relevance floor.

The user's words never reach FTS5 as query syntax: the query is cut into words here
and each one is quoted, so ``NOT``, ``*``, ``"`` or ``col:`` in a question are just text.
"""

from __future__ import annotations

import math
import re
import sqlite3
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from localassist.documents import Locator
from localassist.rag.errors import EmbedderError
from localassist.rag.store import TOKENIZER
from localassist.rag.sync import check_file

if TYPE_CHECKING:
    from localassist.rag.embedder import Embedder
    from localassist.rag.store import Index

CANDIDATES = 50  # from each of BM25 and vectors, before fusion
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al. 2009)
DUPLICATE_COSINE = 0.98  # two chunks this close say the same thing: keep the better one
# The relevance floor. The result is "not found" unless one of the top k hits holds query
# terms that carry at least MIN_COVERAGE of the query's IDF weight, or (with vectors) has
# a cosine of at least the embedding model's floor. Both were read off the table that
# benchmarks/rag.py prints for tests/fixtures/rag/questions.json (34 answerable, 10
# unanswerable questions): coverage 0.3 leaves every unanswerable one out and keeps 30 of
# the 34 answerable ones (the unanswerable reach 0.27); with all-MiniLM-L6-v2 a cosine of
# 0.45 brings back 3 of the other 4 (0.54–0.59) while the unanswerable stay below 0.37.
# Cosines are on a different scale for every model, so models not measured get no cosine
# floor (the starter model's cosines do not separate the two sets at all).
MIN_COVERAGE = 0.3
COSINE_FLOORS = {"all-minilm-l6-v2": 0.45}  # lower-case model-name fragment -> floor


def cosine_floor_for(model_id: str) -> float | None:
    """The measured cosine floor for an embedding model (by its name), or None."""
    name = model_id.split("@", 1)[0].lower()
    return next((floor for fragment, floor in COSINE_FLOORS.items() if fragment in name), None)


_TERM = re.compile(r"[^\W_]+")
_MAX_TERMS = 32
_STOPWORD_TEXT = """
    a about above after again all am an and any are as at be because been before being below between both but by
    can could did do does doing down during each few for from further had has have having he her here hers him his
    how i if in into is it its itself just me more most my no nor not of off on once only or other our ours out over
    own same she should so some such than that the their theirs them then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your yours"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based, as cited: [rank]
    text: str
    path: str  # relative to the indexed folder
    locator: Locator  # 1-based page (and its label), line and row ranges, section
    score: float  # the fused (RRF) score
    bm25: float | None  # FTS5 bm25, higher is better; None when BM25 did not return it
    cosine: float | None  # None in BM25-only search or when vectors did not return it
    coverage: float  # share of the query terms' IDF weight found in the chunk, 0–1
    chunk_id: int
    text_hash: str
    duplicates: tuple[Locator, ...] = ()  # the same (or nearly the same) text elsewhere


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    mode: str  # "hybrid" or "bm25"
    notices: list[str] = field(default_factory=list)
    candidates: list[Hit] = field(default_factory=list)  # the top k before the relevance floor
    seconds: float = 0.0

    @property
    def found(self) -> bool:
        """False means: nothing in the index is relevant enough; say "not found"."""
        return bool(self.hits)


def query_terms(query: str) -> list[str]:
    """Words of the query, case-folded, without stopwords (unless that leaves none)."""
    words = list(dict.fromkeys(w.casefold() for w in _TERM.findall(query)))
    kept = [w for w in words if w not in STOPWORDS]
    return (kept or words)[:_MAX_TERMS]


def match_expression(terms: list[str]) -> str:
    """An FTS5 MATCH string that ORs the terms, each a quoted string (never syntax)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def search(
    index: Index,
    query: str,
    embedder: Embedder | None = None,
    *,
    k: int = 5,
    min_coverage: float = MIN_COVERAGE,
    min_cosine: float | None = None,
    candidates: int = CANDIDATES,
) -> SearchResult:
    """The ``k`` best chunks for ``query``. With no embedder (or an index built without
    one) it is BM25 alone, said in ``notices``. ``min_cosine`` defaults to the model's
    measured floor (:data:`COSINE_FLOORS`; none for other models); ``min_coverage=0``
    turns the relevance floor off. Files deleted since the last sync are never cited (their
    chunks are left out) and changed ones are named, both in ``notices``. Raises
    EmbedderError when the embedder is not the index's, or gives a query vector of another
    size, and FolderGoneError when the indexed folder is gone."""
    started = time.perf_counter()
    meta = index.meta()
    notices: list[str] = []
    model_id = meta.get("model_id") or ""
    cosine_floor = cosine_floor_for(model_id) if min_cosine is None else min_cosine
    use_vectors = bool(model_id) and embedder is not None
    if embedder is not None and model_id and embedder.model_id != model_id:
        raise EmbedderError(
            f"index '{index.name}' was built with the embedding model {model_id}, not {embedder.model_id}; "
            f"search it with that model, or sync it with this one (a full rebuild)"
        )
    if model_id and embedder is None:  # (a BM25-only index said so once, when it was built)
        notices.append(f"no embedding model given (the index uses {model_id}): keyword (BM25) search only")
    terms = query_terms(query)
    disk = _OnDisk(index.check_folder(), index.name)
    try:
        bm25 = _bm25(index.db, terms, candidates)
        vector_rank, cosines, matrix = ([], {}, None)
        if use_vectors and embedder is not None:
            vector_rank, cosines, matrix = _vector(index, embedder, query, candidates)
        fused = _fuse([list(bm25), vector_rank])
        ranked = _assemble(index.db, fused, bm25, cosines, matrix, k, disk)
        coverage = _coverage(index.db, terms, {hit.text_hash: hit.text for hit in ranked}, _chunk_total(index))
    except sqlite3.Error as error:
        raise index.explain(error) from None
    ranked = [replace(hit, coverage=coverage.get(hit.text_hash, 0.0)) for hit in ranked]
    found = any(hit.coverage >= min_coverage for hit in ranked) or (
        cosine_floor is not None and any((hit.cosine or -1.0) >= cosine_floor for hit in ranked)
    )
    notices += disk.notices(ranked if found else [])
    mode = "hybrid" if use_vectors else "bm25"
    return SearchResult(query, ranked if found else [], mode, notices, ranked, time.perf_counter() - started)


def _bm25(db: sqlite3.Connection, terms: list[str], n: int) -> dict[str, tuple[int, float]]:
    """text_hash -> (chunk id, bm25 with higher better), best first."""
    if not terms:
        return {}
    rows = db.execute(
        "SELECT c.id, c.text_hash, -bm25(chunks_fts) FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
        "WHERE chunks_fts MATCH ? ORDER BY bm25(chunks_fts) LIMIT ?",
        (match_expression(terms), n),
    ).fetchall()
    out: dict[str, tuple[int, float]] = {}
    for chunk_id, text_hash, score in rows:
        out.setdefault(text_hash, (chunk_id, score))
    return out


def _vector(index: Index, embedder: Embedder, query: str, n: int):
    import numpy as np

    from localassist.rag.vectors import load_matrix

    matrix = load_matrix(index)
    q = np.asarray(embedder.embed_query(query), dtype=np.float32)
    if q.shape != (matrix.data.shape[1],):
        raise EmbedderError(
            f"the embedding model gave a query vector of {q.shape[0]} dimensions; the index has {matrix.data.shape[1]}"
        )
    norm = float(np.linalg.norm(q))
    if norm == 0 or not len(matrix.ids):
        return [], {}, matrix
    q /= norm
    scores = matrix.data @ q
    m = min(n, len(scores))
    rows = np.argpartition(-scores, m - 1)[:m]
    rows = rows[np.argsort(-scores[rows], kind="stable")]
    ranking = [matrix.text_hash(int(row)) for row in rows]
    cosines = {h: float(scores[row]) for h, row in zip(ranking, rows, strict=True)}
    return ranking, cosines, matrix


def _fuse(rankings: list[list[str]]) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for position, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + position)
    return sorted(scores.items(), key=lambda item: -item[1])


class _OnDisk:
    """Whether the files behind the hits are still as indexed, asked of the file system at
    answer time: an index is only as fresh as its last sync, and a file deleted since
    must never be cited (its chunks are left out), nor a changed one cited silently."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        self.deleted: list[str] = []  # in the order met among the best hits
        self._state: dict[str, str] = {}

    def state(self, row: sqlite3.Row) -> str:
        """The file of a chunk row (its files columns joined): same, changed or deleted."""
        path = row["path"]
        if path not in self._state:
            self._state[path] = self._check(path, row)
        return self._state[path]

    def _check(self, path: str, row: sqlite3.Row) -> str:
        file = self.folder / path
        try:
            st = file.stat()
        except OSError:
            return "deleted"
        if not stat.S_ISREG(st.st_mode):
            return "deleted"
        try:  # sync's own test: touched is not changed (read only for a file among the hits)
            check = check_file(file, st, (row["file_size"], row["file_mtime_ns"], row["file_sha256"]))
        except OSError:  # gone, unreadable, or swapped for a FIFO since the stat
            return "deleted"
        return "changed" if check.state == "changed" else "same"

    def live(self, rows: list[sqlite3.Row]) -> list[sqlite3.Row]:
        """The rows whose file is still there; the others' paths are noted."""
        out = []
        for row in rows:
            if self.state(row) == "deleted":
                if row["path"] not in self.deleted:
                    self.deleted.append(row["path"])
            else:
                out.append(row)
        return out

    def notices(self, hits: list[Hit]) -> list[str]:
        sync = f"(run `localassist index sync {self.name}`)"
        lines = [
            f"{path} was deleted since the index was synced: its passages were left out {sync}" for path in self.deleted
        ]
        changed = dict.fromkeys(hit.path for hit in hits if self._state.get(hit.path) == "changed")
        lines += [
            f"{path} changed since the index was synced: its passages are from the version indexed and their "
            f"lines may have moved {sync}"
            for path in changed
        ]
        return lines


def _assemble(db, fused, bm25, cosines, matrix, k, disk: _OnDisk) -> list[Hit]:
    """The top k of the fused ranking with near-duplicates folded into the hit they repeat.
    Chunks of files deleted since the sync are left out: the same text in a file that is
    still there takes their place."""
    if not fused:
        return []
    hashes = [h for h, _ in fused]
    rows = _chunks_by_hash(db, hashes)
    matrix_row = _matrix_rows(db, matrix, hashes) if matrix is not None else {}
    kept: list[tuple[str, float]] = []
    kept_vectors: list[tuple[str, int]] = []  # (hash, matrix row) of kept hits that have a vector
    duplicates: dict[str, list[Locator]] = {}
    for h, score in fused:
        if h not in rows:  # removed by a sync since the vectors were read
            continue
        rows[h] = disk.live(rows[h])
        if not rows[h]:
            continue
        row = matrix_row.get(h)
        if row is not None and kept_vectors:
            sims = matrix.data[[r for _, r in kept_vectors]] @ matrix.data[row]
            best = int(sims.argmax())
            if float(sims[best]) >= DUPLICATE_COSINE:
                duplicates[kept_vectors[best][0]].extend(_locator(r) for r in rows[h])
                continue
        kept.append((h, score))
        duplicates[h] = [_locator(r) for r in rows[h][1:]]  # the identical text in other places
        if row is not None:
            kept_vectors.append((h, row))
        if len(kept) == k:
            break
    hits = []
    for rank, (h, score) in enumerate(kept, start=1):
        first = rows[h][0]
        hits.append(
            Hit(
                rank=rank,
                text=first["text"],
                path=first["path"],
                locator=_locator(first),
                score=score,
                bm25=bm25[h][1] if h in bm25 else None,
                cosine=cosines.get(h),
                coverage=0.0,
                chunk_id=first["id"],
                text_hash=h,
                duplicates=tuple(duplicates[h]),
            )
        )
    return hits


def _matrix_rows(db: sqlite3.Connection, matrix, hashes: list[str]) -> dict[str, int]:
    """text_hash -> row of the matrix, for the hashes that have a vector in it."""
    marks = ",".join("?" * len(hashes))
    pairs = db.execute(f"SELECT text_hash, id FROM vectors WHERE text_hash IN ({marks})", hashes).fetchall()
    if not pairs or not len(matrix.ids):
        return {}
    rows = matrix.rows_of([vector_id for _, vector_id in pairs])
    out = {}
    for (h, vector_id), row in zip(pairs, rows, strict=True):
        if row < len(matrix.ids) and int(matrix.ids[row]) == vector_id:  # not added after the matrix was read
            out[h] = int(row)
    return out


def _chunks_by_hash(db: sqlite3.Connection, hashes: list[str]) -> dict[str, list[sqlite3.Row]]:
    marks = ",".join("?" * len(hashes))
    out: dict[str, list[sqlite3.Row]] = {}
    for row in db.execute(
        "SELECT c.*, f.path, f.size AS file_size, f.mtime_ns AS file_mtime_ns, f.sha256 AS file_sha256 "
        f"FROM chunks c JOIN files f ON f.id = c.file_id WHERE c.text_hash IN ({marks}) "
        "ORDER BY f.path, c.ordinal",
        hashes,
    ):
        out.setdefault(row["text_hash"], []).append(row)
    return out


def _coverage(db: sqlite3.Connection, terms: list[str], texts: dict[str, str], total: int) -> dict[str, float]:
    """For each hit (by text hash): the IDF of the query terms it holds / the IDF of all
    of them. IDF as FTS5's bm25 computes it; a term found nowhere in the index weighs
    most, so a question about something the documents never mention scores low.

    Terms are matched as FTS5 sees them (stemmed, case- and accent-folded): the query and
    the hits go through the index's own tokenizer in a temporary FTS5 table, and document
    frequencies come from the index's vocabulary, one lookup per term."""
    if not terms or not texts:
        return {}
    _temp_tables(db)
    keys = list(texts)
    db.execute("DELETE FROM temp.rag_probe")
    db.executemany(
        "INSERT INTO temp.rag_probe(rowid, text) VALUES (?, ?)",
        [(0, " ".join(terms)), *((i + 1, texts[h]) for i, h in enumerate(keys))],
    )
    held: dict[int, set[str]] = {}
    for term, doc in db.execute("SELECT DISTINCT term, doc FROM temp.rag_probe_terms"):
        held.setdefault(doc, set()).add(term)
    db.execute("DELETE FROM temp.rag_probe")
    stems = sorted(held.get(0, ()))
    if not stems:
        return {}
    marks = ",".join("?" * len(stems))
    df = dict(db.execute(f"SELECT term, doc FROM temp.rag_vocab WHERE term IN ({marks})", stems).fetchall())
    idf = {t: math.log(1 + (total - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in stems}
    all_weight = sum(idf.values())
    return {h: sum(idf[t] for t in stems if t in held.get(i + 1, ())) / all_weight for i, h in enumerate(keys)}


def _chunk_total(index: Index) -> int:
    """count(*) of chunks walks the whole table (10 ms at 100k chunks), so it is kept
    until the database changes: PRAGMA data_version moves when another connection
    commits, and this connection's own commits (Index.transaction) drop it."""
    version = index.db.execute("PRAGMA data_version").fetchone()[0]
    if index._chunk_total is None or index._chunk_total[0] != version:
        index._chunk_total = (version, index.db.execute("SELECT count(*) FROM chunks").fetchone()[0])
    return index._chunk_total[1]


def _temp_tables(db: sqlite3.Connection) -> None:
    """Per connection: an FTS5 table with the index's tokenizer to cut text into its
    terms, its per-instance vocabulary, and the index's per-term document counts."""
    exists = db.execute("SELECT 1 FROM temp.sqlite_master WHERE name = 'rag_probe'").fetchone()
    if exists:
        return
    db.execute(f"CREATE VIRTUAL TABLE temp.rag_probe USING fts5(text, tokenize='{TOKENIZER}')")
    db.execute("CREATE VIRTUAL TABLE temp.rag_probe_terms USING fts5vocab(temp, rag_probe, 'instance')")
    db.execute("CREATE VIRTUAL TABLE temp.rag_vocab USING fts5vocab(main, chunks_fts, 'row')")


def _locator(row: sqlite3.Row) -> Locator:
    return Locator(
        path=row["path"],
        page=row["page"],
        page_label=row["page_label"],
        line_start=row["line_start"],
        line_end=row["line_end"],
        row_start=row["row_start"],
        row_end=row["row_end"],
        section=row["section"],
    )
