"""The web chat's defences, in a real browser and over raw HTTP: sign-in (wrong password,
rate limit, sign out), one user never reaching another's conversations, CSRF and Origin
checks, the CSP and a same-origin page of at most 150 KB, markup shown as text, and the
429 retry line. One loopback server with two users (so sign-in is required) serves most
of the module."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("starlette")

from browser import (
    answers,
    expect,
    open_chat,
    seed_conversation,
    send,
    set_field,
    sign_in,
    start_server,
    stop_server,
    wait_answered,
)

pytestmark = pytest.mark.model
USERS = {"ada": "lovelace-1815", "bob": "babbage-1791", "carol": "shannon-1916"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
XSS = ['<img src=x onerror="alert(1)">', "<script>alert(2)</script>", "[click](javascript:alert(3))"]


@pytest.fixture(scope="module")
def server(starter_chat_path, tmp_path_factory):
    proc = start_server(tmp_path_factory.mktemp("web-users"), starter_chat_path, users=USERS)
    yield proc
    stop_server(proc)


def signed_in(open_page, server, user, **options):
    watched = open_page(**options)
    watched.page.goto(server.url + "/")
    sign_in(watched.page, user, USERS[user])
    expect(watched.page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(watched.page.get_by_role("textbox", name="Message")).to_be_visible()
    return watched


def directives(policy: str) -> dict[str, str]:
    pairs = (d.strip().split(None, 1) for d in policy.split(";") if d.strip())
    return {p[0]: p[1] if len(p) > 1 else "" for p in pairs}


def session(page, server) -> dict:
    resp = page.request.get(server.url + "/web/api/session")
    assert resp.status == 200, resp.text()
    return resp.json()


def conversation_id(page) -> str:
    expect(page).to_have_url(re.compile(r"#/c/[^/?#]+$"))
    return page.url.rsplit("#/c/", 1)[1]


def short_answer(page, text: str) -> str:
    set_field(page, "Max tokens", 3)
    send(page, text)
    wait_answered(page)
    return conversation_id(page)


def assert_error(resp, status: int) -> None:
    assert resp.status == status, (resp.status, resp.text())
    body = resp.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str), body


def test_web_signin_wrong_password_is_refused_right_one_works_and_sign_out_ends_it(open_page, server):
    page = open_page().page
    page.goto(server.url + "/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert session(page, server)["user"] is None
    sign_in(page, "ada", "not-her-password")
    expect(page.get_by_role("alert")).to_have_text("wrong username or password")
    expect(page.get_by_role("textbox", name="Message")).to_be_hidden()
    sign_in(page, "ada", USERS["ada"])
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_text("ada", exact=True)).to_be_visible()
    signed = session(page, server)
    assert signed["user"] == "ada" and signed["csrf"], signed
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_role("textbox", name="Message")).to_be_hidden()
    assert session(page, server)["user"] is None
    # the old session is gone for good: a reload still asks to sign in
    page.reload()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_web_the_next_user_on_a_shared_browser_starts_blank(open_page, server):
    page = signed_in(open_page, server, "ada").page
    page.get_by_label("System prompt").fill("Ada's private instructions")
    short_answer(page, "Ada's question on a shared computer")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.url == server.url + "/"
    sign_in(page, "bob", USERS["bob"])
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()
    expect(page.get_by_label("System prompt")).to_have_value("")
    expect(page.locator(".message")).to_have_count(0)
    expect(page.get_by_text("Ada's question on a shared computer")).to_have_count(0)


def test_web_a_user_never_reaches_another_users_conversations(open_page, server):
    ada = signed_in(open_page, server, "ada").page
    cid = short_answer(ada, "Ada's secret plan is the analytical engine.")
    bob = signed_in(open_page, server, "bob").page
    # bob's list is empty, and the search finds nothing of ada's
    listed = bob.request.get(server.url + "/web/api/conversations").json()
    assert listed == {"data": []}, listed
    found = bob.request.get(server.url + "/web/api/conversations?q=analytical").json()
    assert found == {"data": []}, found
    expect(bob.locator("#conv-list li")).to_have_count(0)
    # ada's conversation is a 404 to bob, to read, change or delete
    url = f"{server.url}/web/api/conversations/{cid}"
    csrf = {"X-CSRF-Token": session(bob, server)["csrf"], "Origin": server.url, "Content-Type": "application/json"}
    assert_error(bob.request.get(url), 404)
    assert_error(bob.request.patch(url, data=json.dumps({"title": "mine"}), headers=csrf), 404)
    assert_error(bob.request.delete(url, headers=csrf), 404)
    chat = {"conversation": cid, "message": "hi", "settings": {"max_tokens": 2}, "action": "send"}
    assert_error(bob.request.post(server.url + "/web/api/chat", data=json.dumps(chat), headers=csrf), 404)
    # and the page shows bob none of it
    bob.goto(f"{server.url}/#/c/{cid}")
    expect(bob.get_by_role("button", name="Sign out")).to_be_visible()
    expect(bob.get_by_text("analytical engine")).to_have_count(0)
    # ada still has it, unchanged
    mine = ada.request.get(url)
    assert mine.status == 200 and mine.json()["messages"][0]["content"].startswith("Ada's secret plan"), mine.text()


def test_web_state_changes_need_the_csrf_token_and_a_same_origin(open_page, server):
    page = signed_in(open_page, server, "ada").page
    csrf = session(page, server)["csrf"]
    chat = json.dumps({"conversation": None, "message": "hi", "settings": {"max_tokens": 2}, "action": "send"})
    url = server.url + "/web/api/chat"
    before = page.request.get(server.url + "/web/api/conversations").json()
    assert_error(page.request.post(url, data=chat, headers={"Content-Type": "application/json"}), 403)
    wrong = {"Content-Type": "application/json", "X-CSRF-Token": csrf + "x"}
    assert_error(page.request.post(url, data=chat, headers=wrong), 403)
    foreign = {"Content-Type": "application/json", "X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert_error(page.request.post(url, data=chat, headers=foreign), 403)
    cross = {"Content-Type": "application/json", "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
    assert_error(page.request.post(url, data=chat, headers=cross), 403)
    # sign-in takes no token, but a foreign origin is refused all the same
    signin = json.dumps({"username": "ada", "password": USERS["ada"]})
    evil = {"Content-Type": "application/json", "Origin": "https://evil.example"}
    assert_error(page.request.post(server.url + "/web/api/signin", data=signin, headers=evil), 403)
    # nothing above started a conversation; the same request with the token does
    assert page.request.get(server.url + "/web/api/conversations").json() == before
    ok = page.request.post(url, data=chat, headers={**foreign, "Origin": server.url})
    assert ok.status == 200, ok.text()
    assert ok.headers["content-type"].startswith("text/event-stream")
    assert ok.text().rstrip().endswith("data: [DONE]")


def test_web_page_has_the_csp_loads_only_same_origin_and_at_most_150_kb(open_page, server):
    watched = open_page()
    page = watched.page
    sizes: dict[str, int] = {}
    page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body())))
    first = page.goto(server.url + "/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    headers = first.headers
    policy = directives(headers["content-security-policy"])
    for name, value in directives(CSP).items():
        assert policy.get(name) == value, (name, headers["content-security-policy"])
    # anything more only narrows it: never a wildcard, another host or an 'unsafe-' source
    for name, value in policy.items():
        assert set(value.split()) <= {"'self'", "'none'", "data:", "'script'"}, (name, value)
    assert headers.get("x-content-type-options") == "nosniff", headers
    assert watched.requests, "no request seen"
    foreign = [u for u in watched.requests if not (u.startswith(server.url + "/") or u.startswith("data:"))]
    assert not foreign, foreign
    page.wait_for_load_state("networkidle")
    assert sum(sizes.values()) <= 150 * 1024, sizes
    # signed in, the chat adds only same-origin API calls
    sign_in(page, "ada", USERS["ada"])
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()
    foreign = [u for u in watched.requests if not (u.startswith(server.url + "/") or u.startswith("data:"))]
    assert not foreign, foreign


def test_web_markup_in_messages_and_answers_is_shown_as_text(open_page, server):
    cid = seed_conversation(server.home, "ada", "Show me markup.", "Here:\n\n" + "\n\n".join(XSS) + "\n\nEnd.")
    watched = signed_in(open_page, server, "ada")
    page = watched.page
    page.goto(f"{server.url}/#/c/{cid}")
    answer = answers(page).first
    expect(answer).to_contain_text("End.")
    for text in XSS[:2]:
        expect(answer).to_contain_text(text)
    # typed by the user: the bubble shows exactly what was typed
    typed = " ".join(XSS)
    set_field(page, "Max tokens", 2)
    send(page, typed)
    expect(page.locator(".message.user .content").last).to_have_text(typed)
    wait_answered(page, count=2)
    log = page.get_by_role("log")
    expect(log.locator("img")).to_have_count(0)
    expect(log.locator("script")).to_have_count(0)
    expect(log.locator("a[href^='javascript'], [onerror]")).to_have_count(0)
    page.reload()
    expect(page.locator(".message.user .content").last).to_have_text(typed)
    expect(log.locator("img")).to_have_count(0)
    assert not watched.errors  # no alert() fired (dialogs are recorded), no CSP report


def test_web_sign_in_is_rate_limited_after_repeated_failures(open_page, server):
    """Last in the module: the failures count against this client's address too."""
    page = open_page().page
    page.goto(server.url + "/")
    statuses = []
    for _ in range(8):
        with page.expect_response(lambda r: r.url.endswith("/web/api/signin")) as answered:
            sign_in(page, "carol", "guess")
        statuses.append(answered.value.status)
        if statuses[-1] == 429:
            break
        expect(page.get_by_role("alert")).to_have_text("wrong username or password")
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, statuses
    assert int(answered.value.headers["retry-after"]) > 0
    expect(page.get_by_role("alert")).to_contain_text(re.compile(r"too many sign-in attempts; try again in \d+ s"))
    # while limited, even the right password is refused
    sign_in(page, "carol", USERS["carol"])
    expect(page.get_by_role("alert")).to_contain_text("too many sign-in attempts")
    expect(page.get_by_role("textbox", name="Message")).to_be_hidden()


def test_web_busy_server_shows_the_retry_countdown(open_page, starter_chat_path, tmp_path):
    """A 429 before the stream (here the per-minute request limit) shows "busy, retrying in
    N s" counting down, and the page resends by itself."""
    proc = start_server(tmp_path / "busy", starter_chat_path, env={"LOCALASSIST_SERVE_REQUESTS_PER_MINUTE": "1"})
    try:
        page = open_chat(open_page, proc.url + "/").page
        set_field(page, "Max tokens", 2)
        send(page, "One.")
        wait_answered(page)
        send(page, "Two.")
        retry = page.locator(".retry[role=status]")
        expect(retry).to_have_text(re.compile(r"busy, retrying in \d+ s"))
        first = int(re.search(r"\d+", retry.inner_text()).group())
        expect(retry).not_to_have_text(f"busy, retrying in {first} s", timeout=3000)  # it counts down
        page.get_by_role("button", name="Stop").click()
        expect(retry).to_have_count(0)
    finally:
        stop_server(proc)
