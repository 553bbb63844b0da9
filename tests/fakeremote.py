"""A scripted inference server on 127.0.0.1 for the remote-backend tests: it answers
each route with the replies a test gives (JSON, raw bytes, SSE or NDJSON lines, delays,
a held connection) and records every request. It also serves as an HTTP proxy: a
request for ``http://10.0.0.5/...`` sent through it (HTTP_PROXY) is answered here, so
a test can use a non-loopback URL without any traffic leaving the machine."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    lines: list[str] | None = None  # streamed one by one, flushed, `delay` apart
    delay: float = 0.0
    stall: float = 0.0  # after the lines, keep the connection open this long without sending
    keep_streaming: bool = False  # after the lines, repeat the last one until the client goes
    hold_headers: bool = False  # send nothing at all until the client goes


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


class FakeRemote:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[Recorded] = []
        self.disconnected = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                owner._handle(self, "GET")

            def do_POST(self) -> None:
                owner._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, method: str, path: str, *replies: Reply) -> FakeRemote:
        """Answer ``method path`` with ``replies`` in turn; the last one repeats."""
        self.routes[(method, path)] = list(replies)
        return self

    def posted(self, path: str) -> list[Any]:
        return [r.json for r in self.requests if r.method == "POST" and r.path == path]

    def __enter__(self) -> FakeRemote:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(handler.path).path  # absolute-form when asked as a proxy
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw
        self.requests.append(Recorded(method, path, dict(handler.headers), payload))
        queue = self.routes.get((method, path))
        if not queue:
            self._send(handler, Reply(404, json={"error": {"message": f"no route {path}", "code": 404}}))
            return
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        self._send(handler, reply)

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        sock = handler.connection
        if reply.hold_headers:
            self._wait_for_close(sock, 10.0)
            return
        body = reply.body
        if reply.json is not None:
            body = json.dumps(reply.json).encode()
        handler.send_response(reply.status)
        content_type = "application/json" if reply.lines is None else "text/event-stream"
        headers = dict(reply.headers)
        handler.send_header("Content-Type", headers.pop("Content-Type", content_type))
        for key, value in headers.items():
            handler.send_header(key, value)
        if body is not None:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        try:
            if body is not None:
                handler.wfile.write(body)
            for line in reply.lines or []:
                handler.wfile.write(line.encode())
                handler.wfile.flush()
                time.sleep(reply.delay)
            if reply.keep_streaming and reply.lines:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    handler.wfile.write(reply.lines[-1].encode())
                    handler.wfile.flush()
                    time.sleep(0.02)
            if reply.stall:
                self._wait_for_close(sock, reply.stall)
        except (BrokenPipeError, ConnectionResetError):
            self.disconnected.set()

    def _wait_for_close(self, sock: socket.socket, seconds: float) -> None:
        """Send nothing; note when the client closes its end."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        self.disconnected.set()
                        return
                except OSError:
                    self.disconnected.set()
                    return


# --- what servers send


def sse(*payloads: Any, done: bool = True) -> list[str]:
    """``data: ...`` frames (dicts are JSON-encoded), then ``data: [DONE]``."""
    frames = [f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n" for p in payloads]
    return frames + (["data: [DONE]\n\n"] if done else [])


def chunk(content: str | None = None, finish: str | None = None, tool_calls: list | None = None) -> dict:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
    }


def usage_chunk(prompt: int, completion: int, cached: int | None = None) -> dict:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage}


def models(*ids: str, owned_by: str = "llamacpp", **extra: Any) -> dict:
    return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": owned_by, **extra} for i in ids]}


def ndjson(*objects: dict) -> list[str]:
    return [json.dumps(o) + "\n" for o in objects]


def llama_server(remote: FakeRemote, n_ctx: int = 2048, model: str = "qwen") -> FakeRemote:
    """Routes of a llama-server with one model: /v1/models, /props."""
    return remote.route("GET", "/v1/models", Reply(json=models(model))).route(
        "GET", "/props", Reply(json={"default_generation_settings": {"n_ctx": n_ctx}, "total_slots": 1})
    )


def ollama(remote: FakeRemote, ctx: int = 8192, model: str = "llama3.2:latest") -> FakeRemote:
    """Routes of an Ollama with one model: /api/version, /api/tags, /api/show."""
    remote.route("GET", "/api/version", Reply(json={"version": "0.12.6"}))
    remote.route("GET", "/v1/models", Reply(json=models(model, owned_by="library")))
    remote.route("GET", "/api/tags", Reply(json={"models": [{"name": model, "model": model}]}))
    show = {"model_info": {"general.architecture": "llama", "llama.context_length": ctx}, "parameters": "num_ctx 2048"}
    return remote.route("POST", "/api/show", Reply(json=show))


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
