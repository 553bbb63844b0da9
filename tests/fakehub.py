"""A small Hugging Face hub on 127.0.0.1 for the tests: the endpoints huggingface_hub
uses to list a repo's files, resolve and download them (HEAD, ranged GET, the
X-Repo-Commit / X-Linked-Etag / X-Linked-Size headers) and search, with faults to
inject: a dropped connection, corrupted bytes, slow transfer, gated and missing repos,
a rejected token. A Range past the end of a file gets 416, as from a real server.
Every request is logged so tests can assert what went over the wire (or that nothing did)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class FakeFile:
    name: str
    data: bytes | None = None
    path: Path | None = None  # large files are served from disk
    drop_after: int | None = None  # first GET sends this many bytes, then cuts the connection
    corrupt: bool = False  # serve one flipped byte (the listed sha256 stays the true one)
    slow_after: int | None = None  # past this offset ~1 MB/s, so a test can interrupt midway
    hold: threading.Event | None = None  # a GET sends its first 64 KB, then waits for this to be set
    _sha: str | None = None

    def read(self) -> bytes:
        return self.data if self.data is not None else self.path.read_bytes()

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size

    @property
    def sha256(self) -> str:
        if self._sha is None:
            digest = hashlib.sha256()
            if self.data is not None:
                digest.update(self.data)
            else:
                with self.path.open("rb") as fh:
                    while block := fh.read(8 << 20):
                        digest.update(block)
            self._sha = digest.hexdigest()
        return self._sha


@dataclass
class FakeRepo:
    repo: str
    files: list[FakeFile]
    gated: bool = False
    downloads: int = 0
    likes: int = 0
    parameters: int | None = None
    commit: str = "a" * 40


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    server: ThreadingHTTPServer | None = None
    tokens: set[str] | None = None  # when set, a Bearer token not in it is refused (401), as the hub does

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo] = repo
        return repo

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._route(head=True)

            def do_GET(self) -> None:
                self._route(head=False)

            def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

            def _route(self, head: bool) -> None:
                url = urlparse(self.path)
                path = unquote(url.path)
                hub.requests.append((self.command, path, self.headers.get("Range")))
                auth = self.headers.get("Authorization") or ""
                if hub.tokens is not None and auth.startswith("Bearer ") and auth[7:] not in hub.tokens:
                    return self._json(401, {"error": "Invalid credentials in Authorization header"})
                if path == "/api/models":
                    return self._search(parse_qs(url.query))
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+?)(?:/revision/[^/]+)?", path):
                    return self._info(m.group(1))
                if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    return self._resolve(m.group(1), m.group(3), head)
                self._json(404, {"error": "not found"})

            def _repo_or_error(self, name: str) -> FakeRepo | None:
                repo = hub.repos.get(name)
                if repo is None:
                    self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return None
                if repo.gated:
                    self._json(401, {"error": "Access to this repo is restricted"}, {"X-Error-Code": "GatedRepo"})
                    return None
                return repo

            def _info(self, name: str) -> None:
                repo = self._repo_or_error(name)
                if repo is None:
                    return
                siblings = [
                    {
                        "rfilename": f.name,
                        "size": f.size,
                        "lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134},
                    }
                    for f in repo.files
                ]
                siblings.append({"rfilename": "README.md", "size": 12})
                self._json(
                    200,
                    {
                        "_id": "x",
                        "id": repo.repo,
                        "modelId": repo.repo,
                        "sha": repo.commit,
                        "private": False,
                        "gated": False,
                        "tags": ["gguf"],
                        "siblings": siblings,
                    },
                )

            def _search(self, query: dict[str, list[str]]) -> None:
                words = (query.get("search") or [""])[0].lower()
                limit = int((query.get("limit") or ["20"])[0])
                found = [r for r in hub.repos.values() if words in r.repo.lower()]
                found.sort(key=lambda r: -r.downloads)
                self._json(
                    200,
                    [
                        {
                            "_id": r.repo,
                            "id": r.repo,
                            "downloads": r.downloads,
                            "likes": r.likes,
                            "lastModified": "2026-10-01T12:00:00.000Z",
                            **({"gguf": {"total": r.parameters}} if r.parameters else {}),
                        }
                        for r in found[:limit]
                    ],
                )

            def _resolve(self, name: str, filename: str, head: bool) -> None:
                repo = self._repo_or_error(name)
                if repo is None:
                    return
                f = next((f for f in repo.files if f.name == filename), None)
                if f is None:
                    return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                data = f.read()
                if f.corrupt:
                    data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
                start = 0
                if rng := self.headers.get("Range"):
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                if start >= len(data) > 0:
                    self.send_response(416)  # Range Not Satisfiable
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{f.sha256}"')
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                self.send_header("X-Linked-Size", str(f.size))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                if f.drop_after is not None and not start:
                    self.wfile.write(body[: f.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                step = 1 << 16
                for i in range(0, len(body), step):
                    if i and f.hold is not None:
                        f.hold.wait(60)
                    self.wfile.write(body[i : i + step])
                    if f.slow_after is not None and start + i > f.slow_after:
                        time.sleep(0.06)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
