"""Time to first token across a growing chat: turn 1 vs turn N with the same size of
new message each turn. With a byte-stable prompt prefix llama.cpp evaluates only the
new tokens, so TTFT should barely grow.

    python benchmarks/chat_turns.py [--model PATH] [--turns 20] [--answer-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", default="benchmarks/results/chat_turns.json")
    args = parser.parse_args()

    os.environ.setdefault("LOCALASSIST_HOME", tempfile.mkdtemp(prefix="la-bench-"))
    from localassist.assistant import Assistant
    from localassist.backends import open_backend
    from localassist.engine.types import SamplingParams
    from localassist.settings import load_settings

    flags = {"threads": args.threads} if args.threads else {}
    backend = open_backend(load_settings(flags), args.model)
    session = Assistant(backend, SamplingParams(temperature=0, max_tokens=args.answer_tokens, seed=1))
    rows = []
    for turn in range(1, args.turns + 1):
        question = (
            f"Question {turn:02d}: please describe, in a few short sentences, item number {turn:02d} of the list."
        )
        c = session.finish(session.send(question))
        rows.append(
            {
                "turn": turn,
                "prompt_tokens": c.prompt_tokens,
                "cached_tokens": c.cached_tokens,
                "evaluated_tokens": c.prompt_tokens - c.cached_tokens,
                "ttft_ms": round(c.timings.ttft_s * 1000, 1),
                "generation_tps": c.timings.generation_tokens_per_s,
            }
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    first, last = rows[0], rows[-1]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"Machine: {machine}; model {backend.model_name}; threads {backend.threads}\n")
    print("| turn | prompt tokens | cached | evaluated | TTFT ms | gen t/s |\n|---|---|---|---|---|---|")
    for r in rows:
        if r["turn"] in (1, 2, 5, 10, 15, args.turns):
            print(
                f"| {r['turn']} | {r['prompt_tokens']} | {r['cached_tokens']} | {r['evaluated_tokens']} "
                f"| {r['ttft_ms']} | {r['generation_tps']} |"
            )
    ratio = last["ttft_ms"] / first["ttft_ms"]
    print(f"\nTTFT turn {args.turns} / turn 1: {ratio:.2f}x; peak RSS {peak_mb:.0f} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"machine": machine, "rows": rows, "ttft_ratio": ratio, "peak_rss_mb": peak_mb}, indent=2)
    )
    backend.close()


if __name__ == "__main__":
    main()
