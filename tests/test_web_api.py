"""The web chat's JSON API on a real `localassist serve` (no browser): what the page relies
on that a browser test would only see indirectly. Conversations in the same log as the
CLI's, regenerate and edit as the log records them, Stop logging the partial answer,
memory notices, uploads checked by content and deleted with their conversation (by the
page and by `logs rm`), the settings' ranges, and the call log of sign-ins."""

from __future__ import annotations

import http.client
import json
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

pytest.importorskip("starlette")

from serverproc import ServerProc, sse_frames

pytestmark = pytest.mark.model
FIXTURES = Path(__file__).parent / "fixtures" / "documents"
QUICK = {"temperature": 0, "max_tokens": 4}


class Page:
    """What the page does over HTTP: its cookie, its CSRF token, its Origin header."""

    def __init__(self, server: ServerProc) -> None:
        self.server = server
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.csrf: str | None = None

    def call(self, method: str, path: str, body: object = None, raw: bytes | None = None, **headers: str):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        head = {"Origin": self.server.url, "Content-Type": "application/json", **headers}
        if self.csrf:
            head["X-CSRF-Token"] = self.csrf
        req = urllib.request.Request(self.server.url + path, data=data, method=method, headers=head)
        try:
            with self.opener.open(req, timeout=120) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers

    def json(self, method: str, path: str, body: object = None, **headers: str):
        status, raw, _ = self.call(method, path, body, **headers)
        return status, json.loads(raw) if raw else None

    def session(self) -> dict:
        status, body = self.json("GET", "/web/api/session")
        assert status == 200, body
        self.csrf = body["csrf"]
        return body

    def chat(self, message: str, conversation: str | None = None, action: str = "send", **settings):
        body = {"conversation": conversation, "message": message, "action": action, "settings": {**QUICK, **settings}}
        status, raw, headers = self.call("POST", "/web/api/chat", body)
        assert status == 200, raw
        frames = [json.loads(f) for f in sse_frames(raw) if f != "[DONE]"]
        return headers["X-Conversation-Id"], frames


def notices(frames: list[dict]) -> list[str]:
    return [f["text"] for f in frames if f.get("object") == "localassist.notice"]


def text(frames: list[dict]) -> str:
    return "".join(
        c["delta"].get("content") or ""
        for f in frames
        if f.get("object") == "chat.completion.chunk"
        for c in f["choices"]
    )


def cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {"LOCALASSIST_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    import os

    return subprocess.run(
        [sys.executable, "-m", "localassist", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("web-api")


@pytest.fixture(scope="module")
def server(home, starter_chat_path):
    args = ["-m", str(starter_chat_path), "--ctx", "1024", "--threads", "2"]
    proc = ServerProc(home, args, env={"LOCALASSIST_WEB_UPLOAD_MB": "1"})
    yield proc.wait_ready()
    assert proc.stop() == 0, proc.stderr


@pytest.fixture
def page(server):
    p = Page(server)
    p.session()
    return p


def test_the_page_without_sign_in_is_the_machines_user_and_sees_the_clis_conversations(
    home, server, page, starter_chat_path
):
    question = ["a question from the CLI", "--max-tokens", "2", "--temperature", "0"]
    done = cli(home, "ask", "-m", str(starter_chat_path), "--ctx", "512", *question)
    assert done.returncode == 0, done.stderr
    status, body = page.json("GET", "/web/api/conversations?q=CLI")
    assert status == 200
    assert [c["title"] for c in body["data"]] == ["a question from the CLI"]


def test_regenerate_supersedes_and_edit_replaces_the_last_exchange_in_the_log(home, page):
    cid, _ = page.chat("first question")
    page.chat("", cid, action="regenerate")
    page.chat("an edited question", cid, action="edit")
    status, conv = page.json("GET", f"/web/api/conversations/{cid}")
    assert status == 200
    assert [m["content"] for m in conv["messages"] if m["role"] == "user"] == ["an edited question"]
    shown = json.loads(cli(home, "logs", "show", cid, "--all", "--format", "json").stdout)
    statuses = [(ex["prompt"], ex["status"]) for ex in shown["exchanges"]]
    assert statuses == [
        ("first question", "superseded"),
        ("first question", "undone"),
        ("an edited question", "active"),
    ]


def test_settings_are_checked_with_the_clis_ranges_and_kept_per_conversation(page):
    status, body = page.json("POST", "/web/api/chat", {"conversation": None, "message": "x", "settings": {"top_p": 3}})
    assert status == 400 and "top_p" in body["error"]["message"] and "between 0 and 1" in body["error"]["message"]
    cid, _ = page.chat("keep my settings", top_k=7, top_p=0.5, system="Be brief.")
    status, conv = page.json("GET", f"/web/api/conversations/{cid}")
    assert (conv["settings"]["top_k"], conv["settings"]["top_p"], conv["settings"]["system"]) == (7, 0.5, "Be brief.")
    status, _ = page.json("PATCH", f"/web/api/conversations/{cid}", {"title": "Renamed", "settings": {"top_k": 9}})
    assert status == 200
    status, conv = page.json("GET", f"/web/api/conversations/{cid}")
    assert (conv["title"], conv["settings"]["top_k"], conv["settings"]["top_p"]) == ("Renamed", 9, 0.5)


def test_memory_announces_the_exchanges_it_drops_to_fit_the_context(server, page):
    long = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)
    cid, frames = page.chat(long)
    assert frames[-1]["object"] == "localassist.timings" and frames[-1]["exchange_id"] is not None
    # almost the whole context kept for the answer: the first exchange no longer fits beside it
    resp, conn = stream(server, page, {"conversation": cid, "message": "And now?", "settings": {"max_tokens": 960}})
    got = b""
    while b"localassist.notice" not in got and b"[DONE]" not in got:
        got += resp.read1(4096)
    conn.close()  # the page's Stop: the long answer is not waited for
    notice = next(json.loads(f[6:]) for f in got.decode().split("\n\n") if "localassist.notice" in f)
    assert "dropped 1 oldest exchange" in notice["text"], notice


def stream(server: ServerProc, page: Page, body: dict) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    """A chat request read as it streams, as the page's fetch reads it."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    cookie = "; ".join(f"{c.name}={c.value}" for c in page.jar)
    headers = {"Content-Type": "application/json", "Origin": server.url, "X-CSRF-Token": page.csrf or ""}
    conn.request("POST", "/web/api/chat", json.dumps(body).encode(), {**headers, "Cookie": cookie})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    return resp, conn


def test_stop_logs_the_partial_answer_marked_cancelled_and_frees_the_worker(server, page):
    story = {
        "conversation": None,
        "message": "Write a very long story about a dragon.",
        "settings": {"max_tokens": 400},
    }
    resp, conn = stream(server, page, story)
    cid = resp.getheader("X-Conversation-Id")
    got = b""
    while got.count(b'"content":') < 6:  # a few tokens in, the page's Stop aborts the fetch
        got += resp.read1(4096)
    conn.sock.shutdown(2)
    conn.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, health = server.get("/health")
        status, conv = page.json("GET", f"/web/api/conversations/{cid}")  # 404 until the answer is logged
        answers = [m for m in conv["messages"] if m["role"] == "assistant"] if status == 200 else []
        if health["running"] == 0 and answers:
            break
        time.sleep(0.2)
    assert health["running"] == 0
    (answer,) = answers  # logged once
    assert answer["finish_reason"] == "cancelled"
    assert 0 < answer["usage"]["completion_tokens"] < 400


def test_uploads_are_checked_by_content_kept_private_and_deleted_with_the_conversation(home, server, page):
    pdf = (FIXTURES / "multipage.pdf").read_bytes()
    status, raw, _ = page.call("POST", "/web/api/conversations/new/files", raw=pdf, **{"X-Filename": "report.txt"})
    assert status == 415, raw  # a PDF is not text, whatever its name says
    status, raw, _ = page.call(
        "POST", "/web/api/conversations/new/files", raw=b"plain words", **{"X-Filename": "report.pdf"}
    )
    assert status == 415, raw
    status, raw, _ = page.call(
        "POST", "/web/api/conversations/new/files", raw=b"x" * (1024 * 1024 + 1), **{"X-Filename": "big.txt"}
    )
    assert status == 413, raw
    status, raw, _ = page.call("POST", "/web/api/conversations/new/files", raw=pdf, **{"X-Filename": "report.pdf"})
    assert status == 200, raw
    cid = json.loads(raw)["conversation"]
    folder = home / "data" / "web-files" / cid
    (kept,) = folder.iterdir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(kept.stat().st_mode) == 0o600
    status, _, _ = page.call("DELETE", f"/web/api/conversations/{cid}")
    assert status == 204 and not folder.exists()
    # deleted from the terminal, the conversation's uploads go too
    status, raw, _ = page.call("POST", "/web/api/conversations/new/files", raw=b"some notes", **{"X-Filename": "n.md"})
    cid = json.loads(raw)["conversation"]
    assert (home / "data" / "web-files" / cid).is_dir()
    done = cli(home, "logs", "rm", cid)
    assert done.returncode == 0, done.stderr
    assert not (home / "data" / "web-files" / cid).exists()
    status, _ = page.json("GET", f"/web/api/conversations/{cid}")
    assert status == 404


def test_bad_requests_are_one_clear_error_never_a_server_error(server, page):
    for body in (
        {"conversation": None, "message": ["a list"]},
        {"conversation": None, "message": "x", "action": "explode"},
        {"conversation": None, "message": "", "action": "send"},
        {"conversation": None, "message": "x", "settings": {"temperature": "hot"}},
        {"conversation": None, "message": "x", "settings": {"model": "no-such-model"}},
        {"conversation": None, "message": "x", "settings": {"tools": ["shell"]}},
        {"conversation": None, "message": "x", "action": "regenerate"},
        {"conversation": "../../etc", "message": "x"},
    ):
        status, answer = page.json("POST", "/web/api/chat", body)
        assert 400 <= status < 500, (body, status, answer)
        assert answer["error"]["message"], answer
    assert "Traceback" not in server.stderr


def test_sign_ins_and_refusals_are_in_the_call_log_never_the_password(tmp_path, starter_chat_path):
    done = cli(tmp_path, "users", "add", "ada", "--password-stdin", stdin="correct horse battery\n")
    assert done.returncode == 0, done.stderr
    proc = ServerProc(tmp_path, ["-m", str(starter_chat_path), "--ctx", "512"])
    try:
        proc.wait_ready()
        page = Page(proc)
        assert page.session()["signin_required"] is True
        status, body = page.json("GET", "/web/api/conversations")
        assert status == 401
        status, body = page.json("POST", "/web/api/signin", {"username": "ada", "password": "wrong password!"})
        assert status == 401 and body["error"]["message"] == "wrong username or password"
        status, body = page.json("POST", "/web/api/signin", {"username": "ada", "password": "correct horse battery"})
        assert status == 200 and body["user"] == "ada"
        page.csrf = body["csrf"]
        status, body = page.json("GET", "/web/api/conversations")
        assert status == 200 and body["data"] == []  # the machine user's conversations are not ada's
    finally:
        assert proc.stop() == 0, proc.stderr
    calls = json.loads(cli(tmp_path, "logs", "--server", "--json").stdout)
    signins = [(c["key_name"], c["endpoint"], c["status"]) for c in calls if c["endpoint"] == "web.signin"]
    assert signins == [("web:ada", "web.signin", 401), ("web:ada", "web.signin", 200)]
    db = (tmp_path / "data" / "server.db").read_bytes()
    assert b"correct horse" not in db and b"wrong password" not in db


def test_the_page_without_sign_in_answers_only_at_a_loopback_host(server):
    """DNS rebinding: a site whose name resolves to 127.0.0.1 is not this page's origin."""
    page = Page(server)
    status, body = page.json("GET", "/web/api/session", Host="evil.example:80")
    assert status == 403 and body["error"]["code"] == "host_not_allowed"
    page.session()  # at 127.0.0.1: a session
    status, body = page.json("GET", "/web/api/conversations", Host="evil.example:80")
    assert status == 403
    status, _ = page.json("GET", "/web/api/conversations", Host="localhost:1234")
    assert status == 200


def test_a_chat_given_up_while_it_waited_in_the_queue_leaves_nothing(server, page):
    _, before = page.json("GET", "/web/api/conversations")
    long = {"conversation": None, "message": "Write a very long story about a castle.", "settings": {"max_tokens": 300}}
    first, first_conn = stream(server, page, long)
    waiting, waiting_conn = stream(server, page, {"conversation": None, "message": "a question that waits"})
    waiting_id = waiting.getheader("X-Conversation-Id")
    waiting_conn.sock.shutdown(2)  # the page's Stop while the answer has not started
    waiting_conn.close()
    first_conn.sock.shutdown(2)
    first_conn.close()
    deadline = time.monotonic() + 20
    while server.get("/health")[1]["running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    _, after = page.json("GET", "/web/api/conversations")
    ids = {c["id"] for c in after["data"]} - {c["id"] for c in before["data"]}
    assert first.getheader("X-Conversation-Id") in ids  # the answer that started is kept, cut short
    assert waiting_id not in ids
    status, _ = page.json("GET", f"/web/api/conversations/{waiting_id}")
    assert status == 404


def test_a_broken_pdf_is_a_clear_400(page):
    status, raw, _ = page.call(
        "POST", "/web/api/conversations/new/files", raw=b"%PDF-1.4 not really", **{"X-Filename": "broken.pdf"}
    )
    assert status == 400, raw
    assert "broken.pdf" in json.loads(raw)["error"]["message"]


@pytest.fixture(scope="module")
def limited(tmp_path_factory, starter_chat_path):
    """A server that takes 3 requests a minute from each user."""
    home = tmp_path_factory.mktemp("web-limited")
    env = {"LOCALASSIST_SERVE_REQUESTS_PER_MINUTE": "3"}
    proc = ServerProc(home, ["-m", str(starter_chat_path), "--ctx", "1024"], env=env)
    yield proc.wait_ready()
    assert proc.stop() == 0, proc.stderr


def test_a_turn_refused_by_the_rate_limit_changes_nothing(limited):
    page = Page(limited)
    page.session()
    cid, _ = page.chat("one")
    page.chat("two", cid)
    page.chat("three", cid)
    for _attempt in range(3):  # the page retries a 429 by itself: each retry must change nothing
        status, body = page.json(
            "POST", "/web/api/chat", {"conversation": cid, "message": "edited", "action": "edit", "settings": QUICK}
        )
        assert status == 429, body
        status, body = page.json("POST", "/web/api/chat", {"conversation": None, "message": "new", "settings": QUICK})
        assert status == 429, body
    _, conv = page.json("GET", f"/web/api/conversations/{cid}")
    assert [m["content"] for m in conv["messages"] if m["role"] == "user"] == ["one", "two", "three"]
    _, listing = page.json("GET", "/web/api/conversations")
    assert [c["id"] for c in listing["data"]] == [cid]


def test_a_long_upload_summarized_to_fit_stops_when_its_client_goes(server, page):
    """Work run on the model's worker for a request (here the map calls that fit a long
    file) stops at its next token once its client is gone, freeing the queue."""
    text = "\n".join(f"Line {i}: the harbour master logged ship number {i * 7} at dawn." for i in range(400))
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    cookie = "; ".join(f"{c.name}={c.value}" for c in page.jar)
    headers = {"Origin": server.url, "X-CSRF-Token": page.csrf or "", "Cookie": cookie, "X-Filename": "log.txt"}
    conn.request("POST", "/web/api/conversations/new/files", text.encode(), headers)
    deadline = time.monotonic() + 30
    while server.get("/health")[1]["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # until the worker is summarizing it
    assert server.get("/health")[1]["running"] == 1
    conn.sock.shutdown(2)
    conn.close()
    gone = time.monotonic()
    while server.get("/health")[1]["running"] and time.monotonic() < gone + 20:
        time.sleep(0.1)
    assert server.get("/health")[1]["running"] == 0
    assert time.monotonic() - gone < 5  # one token and a prompt batch at most, not the whole map
