"""What committing each server call's row before its response ends costs: the time one
``CallLog.record(call)`` takes until its row is committed, one call at a time (a quiet
server) and from 8 threads at once (rows that arrive together share one transaction),
with the shipped ``synchronous=FULL`` (the WAL is fsynced at every commit) beside
``NORMAL`` (fsynced only at checkpoints: safe from kill -9, not from a power cut). No
model: only the SQLite file, in a temporary folder on the disk given (default: the
system's temporary folder).

    python benchmarks/calllog.py [--rows 300] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from localassist.server.calllog import Call, CallLog


def call(i: int) -> Call:
    return Call(time.time(), "bench", "chat.completions", 200, model="m", prompt_tokens=i, completion_tokens=8)


def one_at_a_time(log: CallLog, rows: int) -> list[float]:
    out = []
    for i in range(rows):
        t = time.perf_counter()
        log.record(call(i)).result()
        out.append((time.perf_counter() - t) * 1000)
    return out


def eight_at_once(log: CallLog, rows: int) -> tuple[list[float], float]:
    def one(i: int) -> float:
        t = time.perf_counter()
        log.record(call(i)).result()
        return (time.perf_counter() - t) * 1000

    t = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(one, range(rows)))
    return waits, rows / (time.perf_counter() - t)


def row(label: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"| {label} | {statistics.median(ms):.3f} | {p99:.3f} | {ms[-1]:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    print("| synchronous, clients | median ms | p99 ms | max ms |\n|---|---|---|---|")
    for mode in ("FULL", "NORMAL"):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            log = CallLog(Path(tmp))
            log.db.execute(f"PRAGMA synchronous={mode}")  # the writer thread's connection
            log.record(call(0)).result()  # the file exists and is warm
            print(row(f"{mode}, 1", one_at_a_time(log, args.rows)))
            waits, per_s = eight_at_once(log, args.rows)
            print(row(f"{mode}, 8 ({per_s:,.0f} rows/s)", waits))
            log.close()


if __name__ == "__main__":
    main()
