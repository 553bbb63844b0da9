"""Summarizing a ~100-page PDF: total time, the share of it inside llama.cpp, peak RSS.

    python benchmarks/documents.py                        # 100 pages, starter model, ctx 4096
    python benchmarks/documents.py --pages 20 --ctx 2048 --max-tokens 64 --threads 2

Each run is ``localassist summarize report.pdf --json`` in a fresh subprocess with its
own LOCALASSIST_HOME (an empty map cache), timed from outside; then the same command
again, to time a re-run that takes every note from the cache. The JSON's timings split
the run: reading the PDF, loading the model, chunking, and the time inside the model's
generation loops (``Done.timings.total_s`` of every ``Backend.chat`` stream, summed).
Everything else (Python start-up and imports, the budget arithmetic, the cache, the
stream) is what localassist itself costs. Peak RSS is the child's ``ru_maxrss``.

The PDF is written by tests/fixtures/documents/make_documents.py's ``pdf()``: English
sentences built from a fixed vocabulary, about 220 tokens a page. Nothing is written
to the repo.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "documents"))

import make_documents as make  # noqa: E402

SUBJECTS = ["The board", "Revenue", "The north region", "Our supplier", "The audit", "Customer churn", "The team"]
VERBS = ["rose by", "fell by", "was reviewed against", "stayed close to", "was reported at", "moved past"]
OBJECTS = ["the plan", "last year's figure", "the forecast", "the budget", "the target", "the first quarter"]


def report_pdf(pages: int, seed: int = 11) -> bytes:
    rng = random.Random(seed)
    texts = []
    for number in range(1, pages + 1):
        lines = [f"Section {number}: operations review"]
        for _ in range(11):
            n = rng.randint(2, 95)
            lines.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {n} percent of {rng.choice(OBJECTS)}.")
        texts.append(lines)
    return make.pdf(texts)


def run(args: argparse.Namespace, pdf: Path, home: Path) -> tuple[float, int, dict]:
    command = [sys.executable, "-m", "localassist", "summarize", str(pdf), "--json", "-T", "0"]
    command += ["--ctx", str(args.ctx), "-n", str(args.max_tokens), "--threads", str(args.threads)]
    if args.model:
        command += ["-m", args.model]
    env = {**os.environ, "LOCALASSIST_HOME": str(home)}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, env=env)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS)
        wall = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            sys.exit(f"summarize failed ({code}): {err.read().decode()}")
    return wall, usage.ru_maxrss, json.loads(out)  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--model", default=None, help="a model name or .gguf (default: the starter)")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="documents-bench-"))
    pdf = work / "report.pdf"
    pdf.write_bytes(report_pdf(args.pages))
    print(
        f"{args.pages}-page PDF ({pdf.stat().st_size / 1024:.0f} KiB), ctx {args.ctx}, -n {args.max_tokens}, "
        f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}"
    )
    rows = []
    for i in range(args.runs):
        home = work / f"home{i}"
        wall, rss, first = run(args, pdf, home)
        again, _, second = run(args, pdf, home)  # the map from the cache
        rows.append((wall, rss, first, again, second))
    walls = [r[0] for r in rows]
    wall, rss, first, again, second = sorted(rows, key=lambda r: r[0])[len(rows) // 2]
    t, u, c = first["timings"], first["usage"], first["coverage"]
    python_s = wall - t["read_s"] - t["load_s"] - t["chunk_s"] - t["engine_s"]
    print(f"coverage: {c['percent']}% of {c['chunks']} chunks, {c['documents'][0]['pages']} pages")
    print(
        f"strategy {first['strategy']}: {u['calls']} model calls (map {u['map_calls']}, reduce "
        f"{u['reduce_calls']} in {u['reduce_levels']} levels), prompt {u['prompt_tokens']:,} tokens "
        f"({u['cached_prompt_tokens']:,} from the KV cache), generated {u['completion_tokens']:,}"
    )
    print()
    print("| phase | seconds | share |")
    print("|---|---|---|")
    for name, seconds in [
        ("inside llama.cpp (every Backend.chat stream)", t["engine_s"]),
        ("loading the model", t["load_s"]),
        ("reading the PDF (pypdf)", t["read_s"]),
        ("chunking (token counts with the model's tokenizer)", t["chunk_s"]),
        ("Python start-up, imports, budgets, cache, output", python_s),
    ]:
        print(f"| {name} | {seconds:.1f} | {100 * seconds / wall:.1f}% |")
    spread = f" (min {min(walls):.1f}, max {max(walls):.1f})" if len(walls) > 1 else ""
    print(f"| **total, timed from outside** | **{wall:.1f}**{spread} | 100% |")
    print()
    print(f"peak RSS: {rss / 1024:.0f} MiB")
    s = second["usage"]
    print(
        f"re-run with the cache: {again:.1f} s, map {s['map_cached']} cached / {s['map_calls']} computed, "
        f"{s['calls']} model calls; median of {len(rows)} run(s): {statistics.median(walls):.1f} s"
    )


if __name__ == "__main__":
    main()
