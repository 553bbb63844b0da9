"""localassist against llama.cpp itself: decode, prompt processing, time to first token,
cold start and memory. Every figure is the median of --runs runs, with min and max.

    python benchmarks/run.py [--model PATH] [--threads T] [--runs 3] [--llama-bench PATH]

Writes benchmarks/results/run.json and prints a Markdown table. See benchmarks/README.md
for building llama-bench from the llama.cpp inside the installed llama-cpp-python.
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

HERE = Path(__file__).resolve().parent
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
DECODE_LENGTHS = (64, 512, 2048)
PROMPT_LENGTHS = (512, 2048)


def stats(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import llama_cpp

    gpu = "GPU offload build" if llama_cpp.llama_supports_gpu_offload() else "CPU-only build"
    python = platform.python_version()
    return f"{cpu}, {os.cpu_count()} CPUs, Python {python}, llama-cpp-python {llama_cpp.__version__}, {gpu}"


def load(model: str, threads: int, ctx: int = 4096, flash_attn: bool | None = None):
    from localassist.backends import open_backend
    from localassist.settings import load_settings

    return open_backend(load_settings({"threads": threads, "ctx": ctx, "flash_attn": flash_attn}), model)


def decode_localassist(backend, n: int) -> float:
    """tokens 2..n per second through the same streaming path ask and chat use."""
    from localassist.engine.types import ChatRequest, SamplingParams

    backend.llm.reset()
    stream = backend.chat(
        ChatRequest(prompt=COUNTING, sampling=SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))
    )
    for _event in stream:
        pass
    c = stream.result()
    assert c.completion_tokens == n, c
    return c.timings.generation_tokens_per_s


def decode_raw(backend, n: int) -> float:
    """A bare Llama.generate() loop on the same model object: the binding's floor.
    (generate() cannot ban EOS without a Python logits processor, which would slow it
    down; the counting prompt keeps going at temperature 0, and the run is checked.)"""
    llm = backend.llm
    tokens = llm.tokenize(COUNTING.encode(), add_bos=True)
    llm.reset()
    count = 0
    first = None
    for _tok in llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0):
        count += 1
        if count == 1:
            first = time.perf_counter()
        if count == n:
            break
    assert count == n, f"raw loop stopped at {count}"
    return (n - 1) / (time.perf_counter() - first)


def decode(backend, n: int, runs: int) -> dict[str, dict[str, float]]:
    """Both paths, interleaved run by run, so drift in the machine's speed hits both alike."""
    ours, raw = [], []
    for _ in range(runs):
        ours.append(decode_localassist(backend, n))
        raw.append(decode_raw(backend, n))
    return {"localassist": stats(ours), "raw generate()": stats(raw)}


def prompt_processing(backend, n: int, runs: int) -> dict[str, float]:
    """Prompt tokens per second for an n-token prompt (nothing cached)."""
    from localassist.engine.types import ChatRequest, SamplingParams

    text = " ".join(f"w{i}" for i in range(n * 2))
    tokens = backend.tokenize(text, add_bos=True)[:n]
    prompt = backend.llm.detokenize(tokens[1:]).decode("utf-8", "replace")
    samples = []
    for _ in range(runs):
        backend.llm.reset()
        request = ChatRequest(prompt=prompt, sampling=SamplingParams(temperature=0, max_tokens=1, ignore_eos=True))
        c = backend.chat(request).result()
        samples.append(c.prompt_tokens / c.timings.ttft_s)
    return stats(samples)


def chat_ttft(backend, turns: int, runs: int) -> dict[str, dict[str, float]]:
    from localassist.assistant import Assistant
    from localassist.engine.types import SamplingParams

    first, last, cached = [], [], []
    for _ in range(runs):
        backend.llm.reset()
        session = Assistant(backend, SamplingParams(temperature=0, max_tokens=32, seed=1))
        for turn in range(1, turns + 1):
            t = session.send(f"Question {turn:02d}: please describe, in a few short sentences, item {turn:02d}.")
            c = session.finish(t)
            if turn == 1:
                first.append(c.timings.ttft_s * 1000)
            if turn == turns:
                last.append(c.timings.ttft_s * 1000)
                cached.append(c.cached_tokens / c.prompt_tokens)
    return {"turn 1 ms": stats(first), f"turn {turns} ms": stats(last), "cached share at last turn": stats(cached)}


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        samples.append((time.perf_counter() - start) * 1000)
    return stats(samples)


MINIMAL = """
import sys, llama_cpp, llama_cpp.llama_cpp as low
# the same weight layout as localassist's repack=auto (argv[5]): on an AMX Xeon the repacked one
# crashes. Llama() reads its defaults from the low-level module, so that is where to set it.
defaults = low.llama_model_default_params
def model_params():
    params = defaults()
    params.use_extra_bufts = sys.argv[5] == "1"
    return params
low.llama_model_default_params = model_params
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=8192, n_batch=512, n_ubatch=512,
                      n_threads=int(sys.argv[3]), verbose=False)
tokens = llm.tokenize(sys.argv[2].encode(), add_bos=True)
out = []
for tok in llm.generate(tokens, temp=0.0):
    out.append(tok)
    if len(out) == int(sys.argv[4]):
        break
sys.stdout.write(llm.detokenize(out).decode("utf-8", "replace") + "\\n")
"""


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> float:
    """Peak resident memory of one child process, from its own rusage."""
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, cmd
    return usage.ru_maxrss / 1024


def cold_start(model: str, threads: int, runs: int, env: dict[str, str], workdir: Path) -> dict[str, dict]:
    exe = [sys.executable, "-m", "localassist"]
    script = workdir / "minimal.py"
    script.write_text(MINIMAL)
    ask = [*exe, "ask", "--raw", COUNTING, "-m", model, "-T", "0", "-n", "32", "--threads", str(threads), "--no-log"]
    subprocess.run(ask, check=True, capture_output=True, env=env)  # warm page cache and .pyc
    return {
        "localassist --help (ms)": timed([*exe, "--help"], runs, env),
        "python -c pass (ms)": timed([sys.executable, "-c", "pass"], runs, env),
        "localassist ask, 32 tokens (ms)": timed(ask, runs, env),
        "minimal llama_cpp script, 32 tokens (ms)": timed(
            [sys.executable, str(script), model, COUNTING, str(threads), "32", str(int(repack_auto()))], runs, env
        ),
    }


def repack_auto() -> bool:
    """localassist's repack=auto on this machine, so the tools it is compared with use the same weights."""
    import llama_cpp

    from localassist.engine.llama_load import decide_repack, system_info

    return decide_repack("auto", system_info(llama_cpp))[0]


def llama_bench(
    path: str,
    model: str,
    threads: int,
    runs: int,
    prompts: tuple[int, ...] = PROMPT_LENGTHS,
    gens: tuple[int, ...] = DECODE_LENGTHS,
    repack: tuple[bool, ...] | None = None,
) -> dict[str, dict[str, float]]:
    """llama-bench's pp/tg t/s, keyed `pp512`, `tg64` (with ` repack=on|off` when more than one
    layout is asked for); by default with the layout localassist's repack=auto picks."""
    layouts = repack if repack is not None else (repack_auto(),)
    out = subprocess.run(
        [
            *(path, "-m", model, "-t", str(threads), "-r", str(runs), "-o", "json", "-ngl", "0"),
            *("-p", ",".join(map(str, prompts)), "-n", ",".join(map(str, gens))),
            *("--repack", ",".join(str(int(r)) for r in layouts)),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    results = {}
    for row in json.loads(out):
        key = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        if len(layouts) > 1:
            key += f" repack={'on' if row['repack'] else 'off'}"
        results[key] = {"median": row["avg_ts"], "stddev": row["stddev_ts"]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name or path [default: the starter model]")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument(
        "--flash-attn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="force flash attention on/off [default: localassist's default]",
    )
    parser.add_argument("--llama-bench", help="path to a llama-bench binary (same llama.cpp version)")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: decode,pp,chat,cold,rss")
    parser.add_argument("--out", default=str(HERE / "results" / "run.json"))
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    home = Path(tempfile.mkdtemp(prefix="la-bench-"))
    os.environ["LOCALASSIST_HOME"] = str(home)
    env = {**os.environ}
    backend = load(args.model, args.threads, flash_attn=args.flash_attn)
    model_path = str(backend.path)
    report: dict = {
        "machine": machine(),
        "model": model_path,
        "threads": args.threads,
        "runs": args.runs,
        "flash_attn": backend.describe().get("flash_attn"),
    }

    if "decode" not in skip:
        report["decode t/s"] = {n: decode(backend, n, args.runs) for n in DECODE_LENGTHS}
    if "pp" not in skip:
        report["prompt t/s"] = {n: {"localassist": prompt_processing(backend, n, args.runs)} for n in PROMPT_LENGTHS}
    if "chat" not in skip:
        report["chat ttft"] = chat_ttft(backend, args.turns, args.runs)
    backend.close()
    if "cold" not in skip:
        report["cold start"] = cold_start(model_path, args.threads, max(args.runs, 5), env, home)
    if "rss" not in skip:
        ask = [sys.executable, "-m", "localassist", "ask", "--raw", COUNTING, "-m", model_path, "-n", "64", "--no-log"]
        chat_bench = [
            sys.executable,
            str(HERE / "chat_turns.py"),
            "--model",
            model_path,
            "--turns",
            str(args.turns),
            "--out",
            str(home / "chat.json"),
        ]
        report["peak RSS MB"] = {"ask (64 tokens)": peak_rss_mb(ask, env), f"chat after {args.turns} turns": None}
        subprocess.run(chat_bench, check=True, capture_output=True, env=env)
        report["peak RSS MB"][f"chat after {args.turns} turns"] = json.loads((home / "chat.json").read_text())[
            "peak_rss_mb"
        ]
    if args.llama_bench:
        bench = llama_bench(args.llama_bench, model_path, args.threads, args.runs)
        report["llama-bench"] = bench
        for n in DECODE_LENGTHS:
            if "decode t/s" in report and f"tg{n}" in bench:
                report["decode t/s"][n]["llama-bench tg"] = bench[f"tg{n}"]
        for n in PROMPT_LENGTHS:
            if "prompt t/s" in report and f"pp{n}" in bench:
                report["prompt t/s"][n]["llama-bench pp"] = bench[f"pp{n}"]

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(markdown(report))


def fmt(s: dict | None) -> str:
    if not s:
        return "-"
    if "min" in s:
        return f"{s['median']:.1f} ({s['min']:.1f}–{s['max']:.1f})"
    return f"{s['median']:.1f} ± {s['stddev']:.1f}"


def markdown(r: dict) -> str:
    lines = [f"Machine: {r['machine']}; threads {r['threads']}; median (min–max) of {r['runs']} runs", ""]
    if "decode t/s" in r:
        lines += [
            "| decode t/s | localassist stream | raw generate() | ratio | llama-bench tg | ratio |",
            "|---|---|---|---|---|---|",
        ]
        for n, row in r["decode t/s"].items():
            la, raw, lb = row["localassist"], row["raw generate()"], row.get("llama-bench tg")
            lines.append(
                f"| {n} tokens | {fmt(la)} | {fmt(raw)} | {la['median'] / raw['median']:.1%} | {fmt(lb)} | "
                + (f"{la['median'] / lb['median']:.1%} |" if lb else "- |")
            )
        lines.append("")
    if "prompt t/s" in r:
        lines += ["| prompt t/s | localassist | llama-bench pp | ratio |", "|---|---|---|---|"]
        for n, row in r["prompt t/s"].items():
            la, lb = row["localassist"], row.get("llama-bench pp")
            lines.append(
                f"| {n} tokens | {fmt(la)} | {fmt(lb)} | " + (f"{la['median'] / lb['median']:.1%} |" if lb else "- |")
            )
        lines.append("")
    if "chat ttft" in r:
        lines += ["| chat time to first token | ms |", "|---|---|"]
        for k, v in r["chat ttft"].items():
            shown = fmt(v) if "ms" in k else f"{v['median']:.1%}"
            lines.append(f"| {k} | {shown} |")
        keys = list(r["chat ttft"])
        lines += [
            f"| last / first | {r['chat ttft'][keys[1]]['median'] / r['chat ttft'][keys[0]]['median']:.2f}x |",
            "",
        ]
    if "cold start" in r:
        lines += ["| cold start | ms |", "|---|---|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in r["cold start"].items()]
        c = list(r["cold start"].values())
        lines += [f"| ask / minimal script | {c[2]['median'] / c[3]['median']:.2f}x |", ""]
    if "peak RSS MB" in r:
        lines += ["| peak RSS | MB |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in r["peak RSS MB"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
