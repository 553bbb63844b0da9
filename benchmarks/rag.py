"""Private RAG benchmarks: index throughput, retrieval latency at 10k/100k chunks for
each vector-search option, index size, recall@5 and the relevance-floor table.

    python benchmarks/rag.py                          # everything, starter model as embedder
    python benchmarks/rag.py --skip throughput,recall # only latency and size
    python benchmarks/rag.py --embed-model PATH.gguf  # another embedding GGUF for throughput/recall

Figures go to stdout; nothing is written to the repo. Latency runs use generated
chunks (Zipf-distributed words, random unit vectors) put straight into the index
schema, so they measure retrieval, not embedding: the query vector is fixed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures.rag.support import CORPUS, QUESTIONS  # noqa: E402
from localassist import rag  # noqa: E402
from localassist.rag.store import now  # noqa: E402


def median_ms(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return f"{statistics.median(ms):.2f} ms (min {ms[0]:.2f}, max {ms[-1]:.2f})"


def starter_path() -> Path:
    from localassist.models import bundled

    return bundled.starter_path(Path(tempfile.mkdtemp(prefix="rag-bench-")))


def load_embedder(path: Path | None, threads: int | None) -> rag.LlamaEmbedder:
    if path is None:
        return rag.load_llama_embedder(starter_path(), name="gemma-3-270m-starter", n_threads=threads)
    return rag.load_llama_embedder(path, n_threads=threads)


# -- throughput ------------------------------------------------------------------------


def throughput(embedder: rag.LlamaEmbedder, files: int) -> None:
    """Index a generated folder of Markdown notes, with the embedder and with BM25 only."""
    work = Path(tempfile.mkdtemp(prefix="rag-throughput-"))
    folder = work / "docs"
    folder.mkdir()
    rng = random.Random(7)
    words = _vocabulary()
    for i in range(files):
        sections = []
        for s in range(4):
            body = " ".join(rng.choice(words) for _ in range(rng.randint(60, 160)))
            sections.append(f"## Section {s}\n\n{body}.\n")
        (folder / f"note-{i:04}.md").write_text(f"# Note {i}\n\n" + "\n".join(sections))
    for label, emb in (("BM25 only", None), (f"with {embedder.model_id.split('@')[0]}", embedder)):
        with rag.create_index(work / "data", label.split()[0].lower(), folder) as index:
            report = index.sync(emb)
            info = index.info()
        share = report.embed_seconds / report.seconds if report.seconds else 0
        print(
            f"  {label}: {info.files} files, {info.chunks} chunks in {report.seconds:.1f} s = "
            f"{info.chunks / report.seconds:.1f} chunks/s; inside the embedding call: {share:.1%}; "
            f"index {info.size_bytes / 1e6:.2f} MB"
        )
    shutil.rmtree(work)


# -- latency ---------------------------------------------------------------------------


def _vocabulary() -> list[str]:
    rng = random.Random(1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(20000)]


def build_synthetic(data: Path, name: str, chunks: int, dim: int) -> rag.Index:
    """An index of ``chunks`` generated chunks of ~120 words, with random unit vectors."""
    import numpy as np

    words = _vocabulary()
    rng = np.random.default_rng(3)
    # Zipf-like word frequencies, like real text: a few common words, a long tail
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.1
    weights /= weights.sum()
    folder = data / f"{name}-folder"
    folder.mkdir(parents=True)
    index = rag.create_index(data, name, folder)
    db = index.db
    per_file = 100
    db.execute("BEGIN")
    for f in range(chunks // per_file):
        db.execute(
            "INSERT INTO files(path, size, mtime_ns, sha256, kind, indexed_at) VALUES (?, 0, 0, '', 'text', ?)",
            (f"gen/file-{f:05}.txt", now()),
        )
        file_id = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        ids = rng.choice(len(words), size=(per_file, 120), p=weights)
        vectors = rng.standard_normal((per_file, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = []
        for c in range(per_file):
            text = " ".join(words[i] for i in ids[c])
            h = hashlib.sha256(text.encode()).hexdigest()
            rows.append((file_id, c, text, c + 1, c + 1, 120, h))
        db.executemany(
            "INSERT INTO chunks(file_id, ordinal, text, line_start, line_end, token_count, text_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT INTO vectors(text_hash, vector) VALUES (?, ?)",
            [(r[-1], vectors[c].tobytes()) for c, r in enumerate(rows)],
        )
    db.executemany(
        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
        [("model_id", "synthetic"), ("dimension", str(dim)), ("chunker", "synthetic"), ("vectors_version", "v1")],
    )
    db.execute("COMMIT")
    db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('optimize')")
    return index


class FixedQuery:
    """An embedder that returns one fixed vector: retrieval time without embedding time."""

    def __init__(self, dim: int) -> None:
        import numpy as np

        self.model_id = "synthetic"
        self.dimension = dim
        self.max_tokens = 512
        self.vector = np.random.default_rng(9).standard_normal(dim).astype(np.float32).tolist()

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def embed_documents(self, texts):
        raise AssertionError("not used")

    def embed_query(self, text: str):
        return self.vector


def latency(sizes: list[int], dims: list[int], runs: int) -> None:
    import numpy as np

    words = _vocabulary()
    # content words: the few hundred most frequent generated words play the part of the
    # stopwords a real question loses before it reaches FTS5
    queries = [" ".join(random.Random(q).choices(words[200:5000], k=6)) for q in range(runs)]
    for dim in dims:
        for n in sizes:
            work = Path(tempfile.mkdtemp(prefix="rag-latency-"))
            started = time.perf_counter()
            index = build_synthetic(work, "synthetic", n, dim)
            built = time.perf_counter() - started
            print(f"\n  {n:,} chunks x {dim} dims (generated in {built:.0f} s):")
            embedder = FixedQuery(dim)
            from localassist.rag.vectors import load_matrix

            t = time.perf_counter()
            matrix = load_matrix(index)
            from_db = time.perf_counter() - t
            index._matrix = None
            t = time.perf_counter()
            matrix = load_matrix(index)
            np.asarray(matrix.data).sum()  # touch every page
            from_cache = time.perf_counter() - t
            print(
                f"    load vectors: from SQLite {from_db * 1000:.0f} ms (writes the cache); "
                f"from the .vec cache (mmap, all pages touched) {from_cache * 1000:.0f} ms"
            )
            q = np.asarray(embedder.vector, dtype=np.float32)
            q /= np.linalg.norm(q)
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                scores = matrix.data @ q
                top = np.argpartition(-scores, 49)[:50]
                top[np.argsort(-scores[top])]
                times.append(time.perf_counter() - t)
            print(f"    numpy brute force, float32 mmap (top 50): {median_ms(times)}")
            in_memory = np.ascontiguousarray(matrix.data)
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                scores = in_memory @ q
                np.argpartition(-scores, 49)[:50]
                times.append(time.perf_counter() - t)
            print(f"    numpy brute force, float32 in RAM (top 50): {median_ms(times)}")
            sqlite_vec(index, q, runs)
            other_libraries(in_memory, q, runs)
            times = []
            for query in queries:
                t = time.perf_counter()
                index.search(query, None, min_coverage=0)
                times.append(time.perf_counter() - t)
            print(f"    BM25 search (FTS5 top 50 + fusion + coverage), whole call: {median_ms(times)}")
            times = []
            for query in queries:
                t = time.perf_counter()
                index.search(query, embedder, min_coverage=0)
                times.append(time.perf_counter() - t)
            print(f"    hybrid search (BM25 + vectors + RRF + duplicates + coverage), whole call: {median_ms(times)}")
            info = index.info()
            fts = _fts_bytes(index.path)
            print(
                f"    on disk: database {info.path.stat().st_size / 1e6:.0f} MB (FTS5 {fts / 1e6:.0f} MB), "
                f"vector cache {index.path.with_suffix('.vec').stat().st_size / 1e6:.0f} MB"
            )
            index.close()
            shutil.rmtree(work)


def _fts_bytes(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'chunks_fts%'").fetchone()[0] or 0
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def other_libraries(matrix, q, runs: int) -> None:
    """faiss (exact inner product) and usearch (exact, and its HNSW graph), where installed."""
    try:
        import faiss
    except ImportError:
        print("    faiss: not installed (pip install faiss-cpu)")
    else:
        flat = faiss.IndexFlatIP(matrix.shape[1])
        flat.add(matrix)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            flat.search(q[None, :], 50)
            times.append(time.perf_counter() - t)
        print(f"    faiss IndexFlatIP, exact (top 50): {median_ms(times)}")
    try:
        from usearch.index import Index as UsearchIndex
        from usearch.index import search as usearch_exact
    except ImportError:
        print("    usearch: not installed (pip install usearch)")
        return
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        usearch_exact(matrix, q, 50, metric="ip", exact=True)
        times.append(time.perf_counter() - t)
    print(f"    usearch exact (top 50): {median_ms(times)}")
    t = time.perf_counter()
    graph = UsearchIndex(ndim=matrix.shape[1], metric="ip", dtype="f32")
    graph.add(None, matrix)
    built = time.perf_counter() - t
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        graph.search(q, 50)
        times.append(time.perf_counter() - t)
    print(f"    usearch HNSW, approximate (top 50): {median_ms(times)} (graph built in {built:.1f} s)")


def sqlite_vec(index: rag.Index, q, runs: int) -> None:
    """sqlite-vec's brute-force KNN, where it can be loaded at all."""
    try:
        import sqlite_vec
    except ImportError:
        print("    sqlite-vec: not installed (pip install sqlite-vec)")
        return
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        try:
            import apsw
        except ImportError:
            print("    sqlite-vec: this Python's sqlite3 cannot load extensions, and apsw is not installed")
            return
        db = apsw.Connection(str(index.path))
        db.enable_load_extension(True)
        db.load_extension(sqlite_vec.loadable_path())
        where = "through apsw (its own SQLite)"
    else:
        db = sqlite3.connect(index.path)
        db.enable_load_extension(True)
        sqlite_vec.load(db)
        where = "in sqlite3"
    dim = len(q)
    cursor = db.cursor()
    cursor.execute(f"CREATE VIRTUAL TABLE temp.vec USING vec0(embedding float[{dim}])")
    t = time.perf_counter()
    cursor.execute("INSERT INTO temp.vec(rowid, embedding) SELECT id, vector FROM vectors")
    loaded = time.perf_counter() - t
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        list(cursor.execute("SELECT rowid, distance FROM temp.vec WHERE embedding MATCH ? AND k = 50", (q.tobytes(),)))
        times.append(time.perf_counter() - t)
    print(f"    sqlite-vec vec0 {where} (top 50): {median_ms(times)} (table filled in {loaded:.1f} s)")
    db.close()


# -- recall and floor ------------------------------------------------------------------


def recall(embedder: rag.LlamaEmbedder | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="rag-recall-"))
    shutil.copytree(CORPUS, work / "docs")
    with rag.create_index(work / "data", "docs", work / "docs") as index:
        index.sync(embedder)
        for label, emb in (("BM25 only", None), ("hybrid", embedder)):
            if label == "hybrid" and embedder is None:
                continue
            found = 0
            for q in QUESTIONS["answerable"]:
                hits = index.search(q["question"], emb, min_coverage=0).hits
                found += any(h.path == q["path"] and q["answer"] in h.text for h in hits)
            print(f"  recall@5 {label}: {found}/{len(QUESTIONS['answerable'])}")
    shutil.rmtree(work)


def floor_table(embedder: rag.LlamaEmbedder | None) -> None:
    """Best coverage (and, with an embedder, best cosine) among the top 5 for each question."""
    work = Path(tempfile.mkdtemp(prefix="rag-floor-"))
    shutil.copytree(CORPUS, work / "docs")
    with rag.create_index(work / "data", "docs", work / "docs") as index:
        index.sync(embedder)
        rows = []
        questions = [("answerable", q["question"], q) for q in QUESTIONS["answerable"]]
        questions += [("unanswerable", q, None) for q in QUESTIONS["unanswerable"]]
        for kind, question, answer in questions:
            result = index.search(question, embedder, min_coverage=0)
            best = max((h.coverage for h in result.candidates), default=0.0)
            cosine = max((h.cosine for h in result.candidates if h.cosine is not None), default=float("nan"))
            hit = answer is not None and any(
                h.path == answer["path"] and answer["answer"] in h.text for h in result.candidates
            )
            rows.append((best, cosine, kind, "retrieved" if hit else ("missed" if answer else ""), question))
    print("  coverage  cosine")
    for best, cosine, kind, hit, question in sorted(rows):
        print(f"  {best:.2f}      {cosine:6.3f}  {kind:<12} {hit:<9} {question}")
    retrieved = sum(1 for r in rows if r[2] == "answerable" and r[3] == "retrieved")
    unanswerable = sum(1 for r in rows if r[2] == "unanswerable")
    for floor in (0.2, 0.25, 0.3, 0.35, 0.4):
        kept = sum(1 for r in rows if r[2] == "answerable" and r[3] == "retrieved" and r[0] >= floor)
        rejected = sum(1 for r in rows if r[2] == "unanswerable" and r[0] < floor)
        print(
            f"  coverage floor {floor:.2f}: answerable and retrieved: found {kept}/{retrieved}; "
            f"unanswerable: not found {rejected}/{unanswerable}"
        )
    if embedder is not None:
        for cosine_floor in (0.4, 0.45, 0.5):
            kept = sum(
                1
                for r in rows
                if r[2] == "answerable" and r[3] == "retrieved" and (r[0] >= 0.3 or r[1] >= cosine_floor)
            )
            rejected = sum(1 for r in rows if r[2] == "unanswerable" and r[0] < 0.3 and not r[1] >= cosine_floor)
            print(
                f"  coverage 0.30 or cosine {cosine_floor:.2f}: answerable and retrieved: found {kept}/{retrieved}; "
                f"unanswerable: not found {rejected}/{unanswerable}"
            )
    shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embed-model", type=Path, help="an embedding GGUF (default: the starter model)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--files", type=int, default=40, help="generated notes for the throughput run")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dims", default="384,640", help="vector sizes for the latency runs")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--skip", default="", help="comma-separated: throughput,latency,recall,floor")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(
        f"python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} cores; "
        f"sqlite3 can load extensions: {hasattr(sqlite3.Connection, 'enable_load_extension')}"
    )
    embedder = None
    if not {"throughput", "recall", "floor"} <= skip:
        embedder = load_embedder(args.embed_model, args.threads)
        print(f"embedder: {embedder.model_id} dim {embedder.dimension}, max {embedder.max_tokens} tokens")
    if "throughput" not in skip:
        print("\nindex throughput:")
        throughput(embedder, args.files)
    if "latency" not in skip:
        print("\nretrieval latency (query vector fixed, embedding time excluded):")
        latency([int(s) for s in args.sizes.split(",")], [int(d) for d in args.dims.split(",")], args.runs)
    if "recall" not in skip:
        print("\nrecall@5 on tests/fixtures/rag/questions.json:")
        recall(embedder)
    if "floor" not in skip:
        print("\nrelevance floor: best coverage (and cosine) among the top 5, per question:")
        floor_table(embedder if args.embed_model else None)


if __name__ == "__main__":
    main()
