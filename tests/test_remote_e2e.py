"""End to end: `localassist serve` started on 127.0.0.1 by the test, and the same
commands run once in-process and once against it with --base-url. At temperature 0 the
text must be the same. Every command runs in a fresh process, and every prompt is asked
once per process (a prompt asked twice in one process can break a near-tie differently,
see docs/design.md)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = pytest.mark.model
ENGINE = ["--threads", "1", "--ctx", "1024", "-T", "0", "-n", "12"]


class Served:
    """`localassist serve -m MODEL --port 0` in its own home; ``url`` once /health is ok."""

    def __init__(self, home: Path, model: Path) -> None:
        env = {**os.environ, "LOCALASSIST_HOME": str(home)}
        command = [sys.executable, "-m", "localassist", "serve", "-m", str(model), "--port", "0"]
        self.proc = subprocess.Popen(
            [*command, "--threads", "1", "--ctx", "1024"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: list[str] = []
        self.url = ""
        self._found = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if not self.url and (found := re.search(r"(http://127\.0\.0\.1:\d+)", line)):
                self.url = found.group(1)
                self._found.set()
        self._found.set()

    def wait_ready(self, timeout: float = 180) -> Served:
        self._found.wait(timeout)
        assert self.url, "".join(self.lines)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            assert self.proc.poll() is None, "".join(self.lines)
            time.sleep(0.2)
        raise AssertionError("serve never became ready: " + "".join(self.lines))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def served(starter_chat_path, tmp_path_factory):
    server = Served(tmp_path_factory.mktemp("serve-home"), starter_chat_path).wait_ready()
    yield server
    server.stop()


def both(served, starter_chat_path, *args: str, input: str | None = None) -> tuple[str, str]:
    """stdout of the command run in-process, then against the server; both must succeed."""
    local = run_cli(*args, "-m", str(starter_chat_path), *ENGINE, input=input)
    remote = run_cli(*args, "--base-url", served.url, *ENGINE, input=input)
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    return local.stdout, remote.stdout


def test_ask_gives_the_same_text_remote_as_in_process(served, starter_chat_path):
    local, remote = both(served, starter_chat_path, "ask", "Name three colours.")
    assert local.strip() and local == remote


def test_ask_remote_is_logged_and_shown_as_remote(served):
    result = run_cli("ask", "--base-url", served.url, *ENGINE, "--stats", "Name a tree.")
    assert result.returncode == 0, result.stderr
    assert "(remote)" in result.stderr
    logged = json.loads(run_cli("logs", "--json").stdout)
    assert logged[-1]["model"].endswith("(remote)") and logged[-1]["prompt"] == "Name a tree."


def test_chat_gives_the_same_text_remote_as_in_process(served, starter_chat_path):
    local, remote = both(served, starter_chat_path, "chat", input="Say hello to Ada.")
    assert local.strip() and local == remote


def test_summarize_gives_the_same_text_remote_as_in_process(served, starter_chat_path):
    text = (
        "The library will close for renovation from 3 to 17 March. Books can be returned at the town hall. "
        "The new reading room opens on 18 March with forty extra seats and a children's corner.\n"
    )
    local, remote = both(served, starter_chat_path, "summarize", "-", "--points", "2", input=text)
    assert local.strip() and local == remote


def test_ask_docs_gives_the_same_text_remote_as_in_process(served, starter_chat_path, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "trip.md").write_text("# Trip\n\nThe team offsite is in Lisbon on 4 June.\n\nBring a passport.\n")
    added = run_cli("index", "add", str(folder), "--name", "notes", "--no-embed")
    assert added.returncode == 0, added.stderr
    local, remote = both(served, starter_chat_path, "ask", "--docs", "notes", "Where is the team offsite?")
    assert local.strip() and local == remote


def test_ask_remote_is_not_refused_on_an_estimate_serve_counts_exactly(served, starter_chat_path):
    # prose the client's estimate puts at about twice its real size: over the 1,024-token
    # context by the estimate, well inside it by the tokenizer (the local run is the proof)
    from localassist.engine.token_estimate import estimate_messages

    prompt = "Summarize in one line: " + "the cat sat on the mat and looked at the door " * 50
    assert estimate_messages([prompt]) + 12 > 1024
    local = run_cli("ask", "-m", str(starter_chat_path), *ENGINE, prompt)
    remote = run_cli("ask", "--base-url", served.url, *ENGINE, "-v", prompt)
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    assert local.stdout.strip() and remote.stdout == local.stdout
    assert "tokens=exact" in remote.stderr and "may not fit" not in remote.stderr


def test_a_raw_completion_through_serve_that_begins_with_a_blank_line_is_not_empty(starter_model, tmp_path, greedy):
    # The starter opens a letter with a blank line after "Dear Sir,". The blank-line end used
    # to fire right there: in-process nothing was printed, and the client sent it to serve
    # as a stop, which ended the completion before any text (HTTP 200, empty text).
    prompt = "Dear Sir,"
    oracle = "".join(greedy(prompt, 12))  # llama.cpp's own greedy continuation, as -T 0 -n 12
    if not oracle.startswith("\n\n"):
        pytest.skip(f"on this CPU the starter does not open {prompt!r} with a blank line ({oracle[:20]!r})")
    begun = len(oracle) - len(oracle.lstrip())
    end = oracle.find("\n\n", begun)  # the blank-line end, after some text
    expected = oracle if end < 0 else oracle[:end]
    assert expected.strip()
    server = Served(tmp_path / "serve-home", starter_model).wait_ready()
    try:
        args = ("ask", "--raw", *ENGINE, prompt)
        local = run_cli(*args, "-m", str(starter_model))
        remote = run_cli(*args, "--base-url", server.url)
    finally:
        server.stop()
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    assert local.stdout.rstrip("\n") == expected.rstrip("\n")
    assert remote.stdout == local.stdout
