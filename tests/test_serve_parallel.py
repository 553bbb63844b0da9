"""`localassist serve --parallel N`: a real server process answers N streaming requests at
once (continuous batching) while the queue and its 429 stay as they were."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.model


class Server:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localassist", "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **env},
        )
        self.url = ""
        deadline = time.monotonic() + 180
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            found = re.search(r"API at (http://[^ ]+?)/v1 ", raw.decode("utf-8", "replace"))
            if found:
                self.url = found.group(1)
                break
        assert self.url, "the server did not announce its address"
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as reply:
                    if json.load(reply)["status"] == "ok":
                        break
            except urllib.error.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the server did not load its model")

    @property
    def model(self) -> str:
        with urllib.request.urlopen(self.url + "/v1/models", timeout=5) as reply:
            return json.load(reply)["data"][0]["id"]

    def stream(self, prompt: str, max_tokens: int):
        """Yield the text chunks of a streamed /v1/completions answer."""
        body = json.dumps(
            {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
        ).encode()
        request = urllib.request.Request(self.url + "/v1/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as reply:
            for line in reply:
                line = line.strip()
                if line.startswith(b"data: {"):
                    choices = json.loads(line[6:])["choices"]
                    if choices and choices[0].get("text"):
                        yield choices[0]["text"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture
def server_env(starter_model, isolated_home):
    return {"LOCALASSIST_HOME": str(isolated_home), "LOCALASSIST_MODEL": str(starter_model), "HF_HUB_OFFLINE": "1"}


def _second_starts_before_first_ends(server: Server) -> bool:
    first = server.stream("1, 2, 3,", 16)
    next(first)
    second_started = threading.Event()
    first_ended_before_second: list[bool] = []

    def finish_first() -> None:
        for _ in first:
            pass
        first_ended_before_second.append(not second_started.is_set())

    reader = threading.Thread(target=finish_first)
    reader.start()
    second = server.stream("a, b, c,", 4)
    text = next(second)
    second_started.set()
    assert text.strip()
    for _ in second:
        pass
    reader.join(120)
    return not first_ended_before_second[0]


def test_parallel_server_answers_two_streams_at_once(server_env):
    server = Server(server_env, "--parallel", "2", "--threads", "2", "--ctx", "512")
    try:
        assert _second_starts_before_first_ends(server)
    finally:
        server.close()


def test_serial_server_answers_one_stream_at_a_time(server_env):
    """The same check against --parallel 1: it can fail, and does when nothing is batched."""
    server = Server(server_env, "--threads", "2", "--ctx", "512")
    try:
        assert not _second_starts_before_first_ends(server)
    finally:
        server.close()
