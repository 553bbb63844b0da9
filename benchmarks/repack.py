"""What `--repack off` costs: decode and prompt speed with llama.cpp's extra buffer types
(repacked weights) on and off, through localassist's own path, interleaved run by run,
beside `llama-bench --repack 1` / `--repack 0` from the same llama.cpp when given.

`repack=auto` turns repacking off only where llama.cpp reports AMX_INT8 = 1 (its AMX
kernels crash there, llama.cpp issue #20824); this measures what a non-AMX machine
would give up if it were off there too.

    python benchmarks/repack.py [--model PATH] [--threads T] [--runs 5] [--llama-bench PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import HERE, decode_localassist, llama_bench, machine, stats


def load(model: str, threads: int, repack: str):
    from localassist.engine.local import LoadOptions, LocalBackend

    return LocalBackend(Path(model), "bench", LoadOptions(ctx=4096, threads=threads, repack=repack))


def prompt_tps(backend, n: int) -> float:
    """Prompt tokens per second for an n-token prompt, nothing cached."""
    from localassist.engine.types import ChatRequest, SamplingParams

    tokens = backend.tokenize(" ".join(f"w{i}" for i in range(n * 2)), add_bos=True)[:n]
    backend.llm.reset()
    text = backend.llm.detokenize(tokens[1:]).decode("utf-8", "replace")
    done = backend.chat(ChatRequest(prompt=text, sampling=SamplingParams(temperature=0, max_tokens=1))).result()
    return done.prompt_tokens / done.timings.ttft_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .gguf path [default: the starter model]")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--llama-bench", help="path to a llama-bench binary (same llama.cpp version)")
    parser.add_argument("--out", default=str(HERE / "results" / "repack.json"))
    args = parser.parse_args()
    if args.model is None:
        from localassist.models import bundled

        args.model = str(bundled.starter_path(Path.home() / ".cache" / "localassist-bench"))
    backends = {r: load(args.model, args.threads, r) for r in ("on", "off")}
    report: dict = {"machine": machine(), "model": args.model, "threads": args.threads}
    for r, b in backends.items():
        report[f"repack={r}"] = b.info().details["repack"] + f", weights in {b.info().details.get('weights')}"
    rows: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.runs):  # interleaved: drift in the machine's speed hits both alike
        for r, b in backends.items():
            for n in (64, 256):
                rows.setdefault(f"decode {n} t/s", {}).setdefault(r, []).append(decode_localassist(b, n))
            rows.setdefault("prompt 512 t/s", {}).setdefault(r, []).append(prompt_tps(b, 512))
    table = {name: {r: stats(v) for r, v in by.items()} for name, by in rows.items()}
    report["localassist"] = table
    if args.llama_bench:
        report["llama-bench"] = llama_bench(
            args.llama_bench, args.model, args.threads, args.runs, (512,), (64, 256), repack=(True, False)
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"{report['machine']}, {args.threads} threads, {Path(args.model).name}")
    print("| localassist | repack on | repack off | off/on |\n|---|---|---|---|")
    for name, by in table.items():
        on, off = by["on"]["median"], by["off"]["median"]
        print(f"| {name} | {on:.1f} | {off:.1f} | {off / on:.2f} |")
    if args.llama_bench:
        lb = report["llama-bench"]
        print("| llama-bench | repack on | repack off | off/on |\n|---|---|---|---|")
        for test in ("tg64", "tg256", "pp512"):
            on, off = lb[f"{test} repack=on"]["median"], lb[f"{test} repack=off"]["median"]
            print(f"| {test} t/s | {on:.1f} | {off:.1f} | {off / on:.2f} |")


if __name__ == "__main__":
    main()
