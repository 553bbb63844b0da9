"""Serving several clients: aggregate tokens/s and time to first token at 1, 2, 4 and 8
concurrent streaming clients, for localassist `serve --parallel N` (continuous
batching), llama-server `-np N` and llama-cpp-python's own server, side by side.

    python benchmarks/serve_batching.py --llama-server /path/to/llama-server [--model starter]
        [--parallel 4] [--threads 2] [--clients 1,2,4,8] [--rounds 2] [--tokens 64]

All three servers load the same GGUF with the same threads, batch (512) and context per
sequence, and stay up together; the measurements are interleaved server by server, so a
machine that slows down slows all three. Each client sends its own prompt (a sequence
to continue, so every answer runs to --tokens) and streams the answer; a client sends
its next request as soon as the last one ends. Tokens are the servers' own usage counts
where they give them (else the streamed chunks). llama-cpp-python's server is skipped
when its extra (fastapi, sse-starlette, starlette-context) cannot be imported; put them
on --lcp-path.

At temperature 0 the script also compares every answer given under concurrency with
the answer to the same prompt with one client: batched decoding can change the last
bits of the logits (other kernel paths for a batch of several rows), and the table shows
how often that changed the text for each server.

Writes benchmarks/results/serve_batching.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPTS = [
    "1, 2, 3, 4, 5, 6, 7,",
    "2, 4, 6, 8, 10, 12,",
    "10, 20, 30, 40, 50,",
    "100, 101, 102, 103,",
    "5, 10, 15, 20, 25,",
    "3, 6, 9, 12, 15, 18,",
    "1000, 2000, 3000,",
    "7, 14, 21, 28, 35,",
]

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import repack_auto  # noqa: E402

# llama-server with the weight layout localassist's repack=auto picks (off on AMX Xeons, where it crashes)
NO_REPACK = () if repack_auto() else ("--no-repack",)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.name, self.port = name, port
        self.log_path = Path(tempfile.gettempdir()) / f"la-bench-server-{port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
            )
        self.model = ""

    def wait(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log_path.read_text(errors="replace")
                raise SystemExit(f"{self.name} exited: {log[-2000:]}")
            try:
                status, body = request("GET", self.port, "/v1/models")
                if status == 200:
                    self.model = json.loads(body)["data"][0]["id"]
                    status, _ = request("GET", self.port, "/health")
                    if status in (200, 404):  # llama-cpp-python's server has no /health
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.name} did not start in {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log_path.unlink(missing_ok=True)


def request(method: str, port: int, path: str, body: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, json.dumps(body) if body else None, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def stream(server: Server, prompt: str, tokens: int) -> dict:
    """One streamed completion: TTFT (first non-empty text), total time, text, tokens."""
    body = {
        "model": server.model,
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    reply = conn.getresponse()
    if reply.status != 200:
        raise RuntimeError(f"{server.name}: HTTP {reply.status}: {reply.read()[:300]!r}")
    first = None
    parts: list[str] = []
    chunks = 0
    usage = None
    for raw in reply:
        line = raw.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        data = json.loads(line[6:])
        if data.get("usage"):
            usage = data["usage"].get("completion_tokens")
        for choice in data.get("choices") or []:
            text = choice.get("text") or ""
            if text:
                if first is None:
                    first = time.perf_counter()
                parts.append(text)
                chunks += 1
    end = time.perf_counter()
    conn.close()
    return {
        "ttft": (first or end) - start,
        "total": end - start,
        "text": "".join(parts),
        "tokens": usage if usage is not None else chunks,
    }


def load(server: Server, clients: int, per_client: int, tokens: int) -> dict:
    results: list[list[dict]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            for j in range(per_client):  # every prompt is asked with one client too, for the text check
                prompt = PROMPTS[(j * clients + i) % len(PROMPTS)]
                results[i].append({**stream(server, prompt, tokens), "prompt": prompt})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    flat = [(i, r) for i, rs in enumerate(results) for r in rs]
    return {
        "wall_s": wall,
        "tokens": sum(r["tokens"] for _, r in flat),
        "ttfts": [r["ttft"] for _, r in flat],
        "texts": [(r["prompt"], r["text"]) for _, r in flat],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name or path [default: the starter model]")
    parser.add_argument("--llama-server", help="path to a llama-server binary (same llama.cpp version)")
    parser.add_argument("--lcp-path", help="extra sys.path entries for llama-cpp-python's server extra")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--ctx", type=int, default=1024, help="context per sequence")
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=8, help="requests per level and round (at least 1 a client)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--out", default=str(HERE / "results" / "serve_batching.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="la-serve-bench-"))
    os.environ.setdefault("LOCALASSIST_HOME", str(work / "home"))
    from localassist.models.resolve import resolve_model
    from localassist.settings import load_settings

    model = str(resolve_model(args.model, load_settings()).path)
    n, t = args.parallel, str(args.threads)
    servers: list[Server] = []
    port = free_port()
    servers.append(
        Server(
            f"localassist serve --parallel {n}",
            [
                *(sys.executable, "-m", "localassist", "serve", "-m", model, "--port", str(port)),
                *("--parallel", str(n), "--threads", t, "--ctx", str(args.ctx), "--batch", "512", "--max-queue", "64"),
            ],
            port,
        )
    )
    if args.llama_server:
        port = free_port()
        servers.append(
            Server(
                f"llama-server -np {n}",
                [
                    *(args.llama_server, "-m", model, "--port", str(port), "-np", str(n), "-c", str(args.ctx * n)),
                    *("-t", t, "-tb", t, "-b", "512", "-ub", "512", "-fa", "off", "--swa-full", "--no-webui"),
                    *("-ngl", "0", *NO_REPACK),
                ],
                port,
            )
        )
    lcp_env = {"PYTHONPATH": args.lcp_path} if args.lcp_path else {}
    probe = subprocess.run(
        [sys.executable, "-c", "import llama_cpp.server.app"], env={**os.environ, **lcp_env}, capture_output=True
    )
    if probe.returncode == 0:
        port = free_port()
        servers.append(
            Server(
                "llama-cpp-python server",
                [
                    *(sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port)),
                    *("--n_ctx", str(args.ctx), "--n_threads", t, "--n_threads_batch", t, "--n_batch", "512"),
                ],
                port,
                lcp_env,
            )
        )
    else:
        print("llama-cpp-python's server is not importable: skipped", file=sys.stderr)
    try:
        for server in servers:
            server.wait()
            stream(server, PROMPTS[0], 8)  # warm up
        levels = [int(c) for c in args.clients.split(",")]
        runs: dict[str, dict[int, list[dict]]] = {s.name: {c: [] for c in levels} for s in servers}
        for _ in range(args.rounds):
            for clients in levels:
                for server in servers:
                    per_client = max(1, args.requests // clients)
                    runs[server.name][clients].append(load(server, clients, per_client, args.tokens))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for name, by_level in runs.items():
        alone = {prompt: text for run in by_level.get(1, []) for prompt, text in run["texts"]}
        for clients, measured in by_level.items():
            tokens = sum(m["tokens"] for m in measured)
            wall = sum(m["wall_s"] for m in measured)
            ttfts = [x for m in measured for x in m["ttfts"]]
            texts = [pt for m in measured for pt in m["texts"]]
            same = sum(1 for prompt, text in texts if alone.get(prompt) == text)
            rows.append(
                {
                    "server": name,
                    "clients": clients,
                    "tokens_per_s": tokens / wall,
                    "per_round_tokens_per_s": [m["tokens"] / m["wall_s"] for m in measured],
                    "ttft_p50_s": statistics.median(ttfts),
                    "ttft_p99_s": percentile(ttfts, 0.99),
                    "requests": len(ttfts),
                    "completion_tokens": tokens,
                    "same_text_as_alone": f"{same}/{len(texts)}",
                }
            )

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"Machine: {machine}; model {Path(model).name}; threads {args.threads}; {args.tokens} tokens a request\n")
    print("| server | clients | aggregate t/s | TTFT p50 ms | TTFT p99 ms | requests | same text as 1 client |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['server']} | {r['clients']} | {r['tokens_per_s']:.1f} | {r['ttft_p50_s'] * 1000:.0f} "
            f"| {r['ttft_p99_s'] * 1000:.0f} | {r['requests']} | {r['same_text_as_alone']} |"
        )
    names = [s.name for s in servers]
    if len(names) > 1:
        print("\n| clients | " + " | ".join(f"localassist / {n}" for n in names[1:]) + " |")
        print("|---|" + "---|" * (len(names) - 1))
        by = {(r["server"], r["clients"]): r["tokens_per_s"] for r in rows}
        for clients in sorted({r["clients"] for r in rows}):
            ratios = [by[(names[0], clients)] / by[(other, clients)] for other in names[1:]]
            print(f"| {clients} | " + " | ".join(f"{x:.2f}x" for x in ratios) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "model": model, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
