"""Resuming a conversation in a new process: time to first token with a KV snapshot
(localassist's `chat --resume` / `ask -c` path) against evaluating the whole history
again, side by side, for conversations of about 1,000 / 3,000 / 6,000 prompt tokens.

    python benchmarks/resume.py [--model starter] [--threads 2] [--runs 3] [--sizes 1000,3000,6000]

For each size a conversation is built from the paragraphs of the README and docs/; its last answer is
generated with snapshots on (as a chat turn would be: the snapshot is written then), and
a follow-up question is asked by a fresh backend (a new process loads the model the same
way), once from the snapshot and once without one, interleaved run by run. The snapshot
folder is put back before every snapshot run, so every run restores the same file (warm
page cache). The answers are compared with the answer of the process that never stopped
(its live KV cache) and with the full re-evaluation.

Writes benchmarks/results/resume.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLLOW_UP = "Thank you. Now summarize the conversation so far in one sentence."


def paragraphs() -> list[str]:
    # the README's text, which now lives mostly in docs/ (the figures were measured on the old long README)
    pages = [HERE.parent / "README.md", *sorted((HERE.parent / "docs").glob("*.md"))]
    text = "\n\n".join(page.read_text(encoding="utf-8") for page in pages)
    parts = [" ".join(p.split()) for p in text.split("\n\n")]
    return [p for p in parts if len(p) > 200 and not p.startswith(("|", "```", "<!--"))]


def conversation(backend, target: int):
    """System prompt and exchanges of README paragraphs, up to about ``target`` tokens,
    ending with a user message."""
    from localassist.engine.types import Message

    texts = paragraphs()
    messages = [Message("system", "You are a helpful assistant. Answer briefly.")]
    i = 0
    while True:
        question = Message("user", f"What does this mean? {texts[i % len(texts)]}")
        if backend.count([*messages, question]) >= target - 40:
            return [*messages, question]
        messages += [question, Message("assistant", texts[(i + 1) % len(texts)])]
        i += 2


def open_backend(model: Path, args, kv: Path | None):
    from localassist.engine.local import LoadOptions, LocalBackend

    options = LoadOptions(ctx=args.ctx, threads=args.threads, kv_snapshots=kv, kv_cache_size=10 * 10**9)
    return LocalBackend(model, "bench", options)


def ask(backend, messages, max_tokens: int):
    from localassist.engine.types import ChatRequest, SamplingParams

    sampling = SamplingParams(temperature=0, max_tokens=max_tokens, seed=1)
    return backend.chat(ChatRequest(messages=tuple(messages), sampling=sampling)).result()


def stats(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def one_size(model: Path, args, target: int, work: Path) -> dict:
    from localassist.engine.kv_snapshots import usage
    from localassist.engine.types import Message

    kv, pristine = work / f"kv-{target}", work / f"kv-{target}.pristine"
    # the last turn of the conversation, answered by a process with snapshots on
    live = open_backend(model, args, kv)
    history = conversation(live, target)
    last = ask(live, history, args.answer_tokens)
    started = time.perf_counter()
    live._snapshots.flush()
    write_s = time.perf_counter() - started
    shutil.copytree(kv, pristine)
    resumed_messages = [*history, Message("assistant", last.text), Message("user", FOLLOW_UP)]
    live_answer = ask(live, resumed_messages, args.answer_tokens)  # the process that never stopped
    live.close()
    snapshot = usage(pristine)

    full, snap, texts = [], [], {"full": set(), "snapshot": set()}
    cached = evaluated = prompt = 0
    for _ in range(args.runs):
        cold = open_backend(model, args, None)
        done = ask(cold, resumed_messages, args.answer_tokens)
        cold.close()
        full.append(done.timings.ttft_s)
        texts["full"].add(done.text)

        shutil.rmtree(kv, ignore_errors=True)
        shutil.copytree(pristine, kv)
        warm = open_backend(model, args, kv)
        done = ask(warm, resumed_messages, args.answer_tokens)
        warm.close()
        snap.append(done.timings.ttft_s)
        texts["snapshot"].add(done.text)
        prompt, cached, evaluated = done.prompt_tokens, done.cached_tokens, done.prompt_tokens - done.cached_tokens
    return {
        "target": target,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "evaluated_tokens": evaluated,
        "full_ttft_s": stats(full),
        "snapshot_ttft_s": stats(snap),
        "ratio": statistics.median(snap) / statistics.median(full),
        "snapshot_bytes": snapshot.bytes,
        "background_write_s": round(write_s, 3),
        "same_text_as_live_process": texts["snapshot"] == {live_answer.text},
        "same_text_as_full_evaluation": texts["snapshot"] == texts["full"],
        "deterministic": len(texts["snapshot"]) == 1 and len(texts["full"]) == 1,
        "texts": {"live": live_answer.text, "snapshot": sorted(texts["snapshot"]), "full": sorted(texts["full"])},
    }


def ms(s: dict) -> str:
    return f"{s['median'] * 1000:,.0f} ({s['min'] * 1000:,.0f}–{s['max'] * 1000:,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name or path [default: the starter model]")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1000,3000,6000")
    parser.add_argument("--ctx", type=int, default=8192)
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--out", default=str(HERE / "results" / "resume.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="la-resume-"))
    os.environ.setdefault("LOCALASSIST_HOME", str(work / "home"))
    from localassist.models.resolve import resolve_model
    from localassist.settings import load_settings

    model = resolve_model(args.model, load_settings()).path
    rows = [one_size(model, args, int(size), work) for size in args.sizes.split(",")]
    shutil.rmtree(work, ignore_errors=True)

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"Machine: {machine}; model {model.name}; threads {args.threads}; ctx {args.ctx}; {args.runs} runs\n")
    print(
        "| conversation | evaluated with snapshot | TTFT, full re-evaluation (ms) | TTFT, from snapshot (ms) "
        "| ratio | snapshot | same answer as the live process | same as full re-evaluation |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['prompt_tokens']:,} tokens | {r['evaluated_tokens']} | {ms(r['full_ttft_s'])} "
            f"| {ms(r['snapshot_ttft_s'])} | {r['ratio']:.3f}x | {r['snapshot_bytes'] / 1e6:.1f} MB "
            f"| {'yes' if r['same_text_as_live_process'] else 'no'} "
            f"| {'yes' if r['same_text_as_full_evaluation'] else 'no'} |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine, "model": str(model), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
