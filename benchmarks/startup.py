"""Start-up cost: `localassist --help`, and `localassist ask` end to end against a
minimal script that imports llama_cpp, loads the same model and generates the same
tokens. Each figure is the median of --runs runs (min and max beside it).

    python benchmarks/startup.py --runs 7 [--model PATH] [--tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MINIMAL = """
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=8192, n_batch=512, n_ubatch=512,
                      n_threads=int(sys.argv[3]), verbose=False)
tokens = llm.tokenize(sys.argv[2].encode(), add_bos=True)
out = []
for i, tok in enumerate(llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05)):
    out.append(tok)
    if len(out) == int(sys.argv[4]):
        break
sys.stdout.write(llm.detokenize(out).decode("utf-8", "replace") + "\\n")
"""

PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        samples.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(samples), "min_ms": min(samples), "max_ms": max(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF path [default: the starter model]")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="benchmarks/results/startup.json")
    args = parser.parse_args()

    env = {**os.environ, "LOCALASSIST_HOME": tempfile.mkdtemp(prefix="la-bench-")}
    model = args.model
    if model is None:
        from localassist.starter import starter_path

        model = str(starter_path(Path(env["LOCALASSIST_HOME"]) / "cache"))
    exe = [sys.executable, "-m", "localassist"]
    script = Path(env["LOCALASSIST_HOME"]) / "minimal.py"
    script.write_text(MINIMAL)
    # warm the page cache and .pyc files once, so every variant is measured warm
    subprocess.run(
        [*exe, "ask", "--raw", PROMPT, "-m", model, "-T", "0", "-n", "2"], check=True, capture_output=True, env=env
    )
    results = {
        "localassist --help": timed([*exe, "--help"], args.runs, env),
        "python -c pass (interpreter alone)": timed([sys.executable, "-c", "pass"], args.runs, env),
        f"localassist ask ({args.tokens} tokens)": timed(
            [
                *exe,
                "ask",
                "--raw",
                PROMPT,
                "-m",
                model,
                "-T",
                "0",
                "-n",
                str(args.tokens),
                "--threads",
                str(args.threads),
            ],
            args.runs,
            env,
        ),
        f"minimal llama_cpp script ({args.tokens} tokens)": timed(
            [sys.executable, str(script), model, PROMPT, str(args.threads), str(args.tokens)], args.runs, env
        ),
    }
    ask_key, minimal_key = list(results)[2], list(results)[3]
    ratio = results[ask_key]["median_ms"] / results[minimal_key]["median_ms"]
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"Machine: {machine}; median of {args.runs} runs, warm cache\n")
    print("| what | median ms | min | max |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['median_ms']:.0f} | {r['min_ms']:.0f} | {r['max_ms']:.0f} |")
    print(f"\nask / minimal script: {ratio:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "results": results, "ask_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
