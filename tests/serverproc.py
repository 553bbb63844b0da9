"""A real `localassist serve` process on 127.0.0.1 for the server tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


class ServerProc:
    def __init__(self, home: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.home = home
        full_env = {**os.environ, "LOCALASSIST_HOME": str(home), "HF_HUB_OFFLINE": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localassist", "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        self.stderr_lines: list[str] = []
        self._announced = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.stderr_lines.append(line)
            found = re.search(r"API at (http://[^ ]+?)/v1 ", line)
            if found and not self.url:
                self.url = found.group(1)
                self._announced.set()
        self._announced.set()

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def wait_ready(self, timeout: float = 180) -> ServerProc:
        """Until /health says ok; every earlier answer must be 503 "loading"."""
        self._announced.wait(timeout)
        assert self.url, f"server did not start: {self.stderr}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.get("/health")
            if status == 200:
                assert body["status"] == "ok"
                return self
            assert status == 503 and body["status"] == "loading", (status, body, self.stderr)
            assert self.proc.poll() is None, self.stderr
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout} s: {self.stderr}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        return self.request("GET", path, None, headers)

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        return status, json.loads(raw)

    def post(self, path: str, obj: object, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        return self.request(
            "POST", path, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        return self.proc.returncode


QWEN_TEMPLATE = str(Path(__file__).parent / "fixtures" / "tools" / "qwen2.5_chat_template.jinja")


def tool_server(model: Path, home: Path) -> Iterator[ServerProc]:
    """A module fixture's body: ``serve`` on the bundled instruct model with Qwen 2.5's tool
    template (SmolLM2's own has no tools), stopped cleanly after the module."""
    args = ["-m", str(model), "--chat-format", QWEN_TEMPLATE, "--threads", "1", "--ctx", "1024"]
    proc = ServerProc(home, args)
    yield proc.wait_ready()
    assert proc.stop() == 0, proc.stderr


def sse_frames(raw: bytes) -> list[str]:
    """The data payloads of an SSE body; anything but `data: ...` frames fails the test."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), text[-50:]
    frames = []
    for block in text[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block, repr(block)
        frames.append(block[len("data: ") :])
    return frames
