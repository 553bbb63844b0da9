"""`localassist serve` beside llama-server and llama-cpp-python's server: time to first
token, per-request decode speed and aggregate tokens/s at 1, 4 and 8 concurrent
streaming clients, then overload (more clients than the queue holds).

Every server gets the same model, threads, context and batch, one generation at a time
(llama-server with -np 1; llama-cpp-python's server serialises anyway), and the same
requests: streaming /v1/completions of a counting prompt that runs to max_tokens at
temperature 0, each client with its own prompts. Only 127.0.0.1 is ever contacted.

    python benchmarks/serve.py --llama-server /path/to/llama-server --lcpp-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import repack_auto

# llama-server with the weight layout localassist's repack=auto picks (off on AMX Xeons, where it crashes)
NO_REPACK = () if repack_auto() else ("--no-repack",)

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, command: list[str], port: int, model_id: str, env: dict | None = None) -> None:
        self.name, self.port, self.model_id = name, port, model_id
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=self.log, env={**os.environ, **(env or {})})

    def wait(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"{self.name} exited: {self.log.read()[-2000:].decode(errors='replace')}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 200 and self.name.startswith(
                    "llama-cpp"
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.name} not ready in {timeout} s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def one_request(server: Server, prompt: str, max_tokens: int) -> dict:
    body = {"model": server.model_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    first = last = None
    pieces = 0
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=600) as resp:
        if resp.status_code != 200:
            resp.read()
            return {"status": resp.status_code, "total": time.perf_counter() - t0}
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                now = time.perf_counter()
                first = first or now
                last = now
                pieces += 1
    end = time.perf_counter()
    return {
        "status": 200,
        "ttft": (first or end) - t0,
        "decode": (pieces - 1) / (last - first) if first and last and last > first else None,
        "tokens": max_tokens,  # the counting prompt runs to max_tokens (checked below by pieces)
        "pieces": pieces,
        "total": end - t0,
    }


def prompts(n: int, offset: int) -> list[str]:
    # distinct per request: no request benefits from another's KV cache beyond the first token
    return [", ".join(str(offset + 37 * i + k) for k in range(6)) + "," for i in range(n)]


def run_level(server: Server, clients: int, per_client: int, max_tokens: int, offset: int) -> dict:
    todo = prompts(clients * per_client, offset)

    def client(i: int) -> list[dict]:
        return [one_request(server, p, max_tokens) for p in todo[i::clients]]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(client, range(clients)) for r in rs]
    wall = time.perf_counter() - start
    ok = [r for r in results if r["status"] == 200]
    return {
        "clients": clients,
        "requests": len(results),
        "ok": len(ok),
        "ttft_median_s": statistics.median(r["ttft"] for r in ok),
        "decode_median_tps": statistics.median(r["decode"] for r in ok if r["decode"]),
        "aggregate_tps": sum(r["tokens"] for r in ok) / wall,
        "short_answers": sum(1 for r in ok if r["pieces"] < max_tokens * 0.8),
    }


def overload(server: Server, clients: int, max_tokens: int, offset: int) -> dict:
    """``clients`` requests at once, no retries: accepted ones' latency, refusals."""
    todo = prompts(clients, offset)
    barrier = threading.Barrier(clients)

    def client(p: str) -> dict:
        barrier.wait()
        return one_request(server, p, max_tokens)

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, todo))
    ok = sorted(r["total"] for r in results if r["status"] == 200)
    p99 = ok[min(len(ok) - 1, round(0.99 * (len(ok) - 1)))] if ok else None
    return {
        "clients": clients,
        "accepted": len(ok),
        "refused_429": sum(1 for r in results if r["status"] == 429),
        "other": sorted({r["status"] for r in results if r["status"] not in (200, 429)}),
        "latency_p50_s": statistics.median(ok) if ok else None,
        "latency_p99_s": p99,
        "job_s": statistics.median(ok[:1]) if ok else None,
    }


def start(kind: str, args: argparse.Namespace, port: int) -> Server:
    model = str(args.model)
    if kind == "localassist":
        home = tempfile.mkdtemp(prefix="la-bench-")
        cmd = [
            sys.executable,
            "-m",
            "localassist",
            "serve",
            "-m",
            model,
            "--port",
            str(port),
            "--threads",
            str(args.threads),
            "--ctx",
            str(args.ctx),
            "--batch",
            "512",
            "--max-queue",
            str(args.max_queue),
        ]
        return Server(kind, cmd, port, Path(model).stem, {"LOCALASSIST_HOME": home, "HF_HUB_OFFLINE": "1"})
    if kind == "llama-server":
        cmd = [
            args.llama_server,
            "-m",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-t",
            str(args.threads),
            "-tb",
            str(args.threads),
            "-c",
            str(args.ctx),
            "-b",
            "512",
            "-ub",
            "512",
            "-np",
            "1",
            "-ngl",
            "0",
            *NO_REPACK,
        ]
        return Server(kind, cmd, port, "model")
    cmd = [
        args.lcpp_python,
        "-m",
        "llama_cpp.server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(args.threads),
        "--n_threads_batch",
        str(args.threads),
        "--n_ctx",
        str(args.ctx),
        "--n_batch",
        "512",
        "--n_gpu_layers",
        "0",
        "--interrupt_requests",
        "False",
    ]
    return Server("llama-cpp-python", cmd, port, Path(model).stem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="a .gguf (default: the starter model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=3, help="requests each client sends in turn")
    parser.add_argument("--levels", default="1,4,8")
    parser.add_argument("--runs", type=int, default=2, help="turns per server; the table shows medians")
    parser.add_argument("--max-queue", type=int, default=2)
    parser.add_argument("--overload", type=int, default=12, help="clients at once in the overload run (0: skip)")
    parser.add_argument("--llama-server", help="path to llama-server built from llama-cpp-python's vendor/llama.cpp")
    parser.add_argument("--lcpp-python", help="a python with llama-cpp-python's server extra installed")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = parser.parse_args()
    if args.model is None:
        from localassist.models import bundled

        args.model = bundled.starter_path(Path(tempfile.mkdtemp()))
    kinds = (
        ["localassist"]
        + (["llama-server"] if args.llama_server else [])
        + (["llama-cpp-python"] if args.lcpp_python else [])
    )
    levels = [int(x) for x in args.levels.split(",")]
    report: dict = {
        "model": str(args.model),
        "threads": args.threads,
        "ctx": args.ctx,
        "max_tokens": args.max_tokens,
        "runs": {kind: [] for kind in kinds},
    }
    # the servers take turns, run after run: this machine's load drifts, and turns share it out
    for run in range(args.runs):
        for n, kind in enumerate(kinds):
            server = start(kind, args, free_port())
            offset = 100_000 * run + 10_000 * n
            try:
                server.wait()
                one_request(server, "0, 1, 2,", 8)  # warm-up: page the weights in
                rows = [run_level(server, c, args.per_client, args.max_tokens, offset + 1000 * c) for c in levels]
                over = overload(server, args.overload, args.max_tokens, offset + 9000) if args.overload else None
            finally:
                server.stop()
            report["runs"][kind].append({"levels": rows, "overload": over})
            print(f"run {run + 1} {kind}: {json.dumps(report['runs'][kind][-1])}", file=sys.stderr)
    for kind in kinds:  # the median of the runs, metric by metric
        runs = report["runs"][kind]
        report[kind] = {
            "levels": [
                {key: statistics.median(r["levels"][i][key] for r in runs) for key in runs[0]["levels"][i]}
                for i in range(len(levels))
            ],
            "overload": {
                key: (
                    statistics.median(r["overload"][key] for r in runs)
                    if key != "other"
                    else sorted({s for r in runs for s in r["overload"][key]})
                )
                for key in runs[0]["overload"]
            }
            if args.overload
            else None,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report, kinds, levels)


def print_table(report: dict, kinds: list[str], levels: list[int]) -> None:
    base = report["localassist"]["levels"]
    print(
        "| clients | server | TTFT median | decode t/s (median per request) | aggregate t/s | localassist as % of it |"
    )
    print("|---|---|---|---|---|---|")
    for i, c in enumerate(levels):
        for kind in kinds:
            row = report[kind]["levels"][i]
            ratio = (
                ""
                if kind == "localassist"
                # TTFT: their time / ours (above 100%: ours is faster); rates: ours / theirs
                else (
                    f"TTFT {row['ttft_median_s'] / base[i]['ttft_median_s']:.0%}, "
                    f"decode {base[i]['decode_median_tps'] / row['decode_median_tps']:.0%}, "
                    f"aggregate {base[i]['aggregate_tps'] / row['aggregate_tps']:.0%}"
                )
            )
            print(
                f"| {c} | {kind} | {row['ttft_median_s'] * 1000:.0f} ms | {row['decode_median_tps']:.1f} | "
                f"{row['aggregate_tps']:.1f} | {ratio} |"
            )
    print()
    print("| overload | server | accepted | 429 | other | p50 latency | p99 latency |")
    print("|---|---|---|---|---|---|---|")
    for kind in kinds:
        o = report[kind]["overload"]
        if o:
            print(
                f"| {o['clients']} at once | {kind} | {o['accepted']} | {o['refused_429']} | {o['other'] or '-'} | "
                f"{o['latency_p50_s']:.2f} s | {o['latency_p99_s']:.2f} s |"
            )


if __name__ == "__main__":
    main()
