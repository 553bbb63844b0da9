"""The web chat in a real browser: Debian's chromium driven by Playwright's sync API (no
pytest-playwright, no `playwright install`), and `localassist serve` processes to point it at.

A pytest plugin (tests/conftest.py names it): its fixtures `browser` and `open_page` are
everywhere, and Playwright is imported only when a test asks for them.
Browser tests are plain sync tests: Playwright's sync API cannot run inside an asyncio loop.

The page runs under a strict CSP (no inline script, Trusted Types 'none'), so:
- `page.wait_for_function("...")` cannot be used (it evals a string, which the CSP refuses);
  wait with `expect(locator)` or poll from Python instead;
- `bypass_csp` is never set: a CSP violation is a console error, and every page opened
  through `open_page` fails its test at teardown on any console error, uncaught page
  error, dialog (alert/confirm) or 5xx answer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from serverproc import ServerProc

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "is_mobile": True, "has_touch": True}
# the password hash's cost, lowered for tests (each sign-in and `users add` costs one hash)
FAST_HASH = {"LOCALASSIST_SCRYPT_LOG2N": "12"}
ENGINE = ["--threads", "1", "--ctx", "1024"]
# Chromium's own line for a 4xx answer the test provoked on purpose; 5xx fail through `responses`
# read at import: each test's environment has the LOCALASSIST_ variables removed (conftest)
REQUIRE_BROWSER = os.environ.get("LOCALASSIST_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("LOCALASSIST_CHROMIUM")  # a browser elsewhere than PATH's chromium
EXPECTED_HTTP_ERROR = "Failed to load resource: the server responded with a status of 4"


def chromium_path() -> str | None:
    found = CHROMIUM or shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


class _Shared:
    """One Playwright driver and one browser for the whole run (the sync API allows one
    driver per thread)."""

    playwright: Any = None
    browser: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls.browser is None:
            executable = chromium_path()
            if executable is None:
                why = "chromium is not installed (apt-get install chromium; .ci/run does it)"
                if REQUIRE_BROWSER:
                    pytest.fail(f"LOCALASSIST_REQUIRE_BROWSER=1 but {why}")
                pytest.skip(why)
            sync_api = pytest.importorskip("playwright.sync_api")
            cls.playwright = sync_api.sync_playwright().start()
            cls.browser = cls.playwright.chromium.launch(executable_path=executable, headless=True)
        return cls.browser

    @classmethod
    def close(cls) -> None:
        if cls.browser is not None:
            cls.browser.close()
            cls.playwright.stop()
            cls.browser = cls.playwright = None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    yield _Shared.get()
    _Shared.close()


@dataclass
class Watched:
    """A page and what went wrong on it."""

    page: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert not self.errors, self.errors


def watch(page: Any) -> Watched:
    watched = Watched(page)

    def on_console(msg: Any) -> None:
        if msg.type == "error" and not msg.text.startswith(EXPECTED_HTTP_ERROR):
            watched.errors.append(f"console: {msg.text}")

    def on_dialog(dialog: Any) -> None:
        watched.errors.append(f"dialog {dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_response(response: Any) -> None:
        if response.status >= 500:
            watched.errors.append(f"{response.status} from {response.request.method} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: watched.errors.append(f"page error: {exc}"))
    page.on("dialog", on_dialog)
    page.on("response", on_response)
    page.on("request", lambda request: watched.requests.append(request.url))
    return watched


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Watched]]:
    """`open_page(**context_options)`: a page in a fresh context (its own cookies: one per
    user), watched; every page's errors are asserted empty at teardown."""
    opened: list[tuple[Any, Watched]] = []

    def new(**options: Any) -> Watched:
        options.setdefault("viewport", DESKTOP)
        context = browser.new_context(**options)
        context.set_default_timeout(30_000)
        watched = watch(context.new_page())
        opened.append((context, watched))
        return watched

    yield new
    for context, _ in opened:
        context.close()
    for _, watched in opened:
        watched.check()


def expect(locator: Any) -> Any:
    """Playwright's `expect`, waiting up to 30 s by default (the starter model shares 2 CPUs)."""
    from playwright.sync_api import expect as pw_expect

    pw_expect.set_options(timeout=30_000)
    return pw_expect(locator)


# --- servers ---------------------------------------------------------------------------


def add_user(home: Path, name: str, password: str) -> None:
    env = {**os.environ, "LOCALASSIST_HOME": str(home), "HF_HUB_OFFLINE": "1", **FAST_HASH}
    done = subprocess.run(
        [sys.executable, "-m", "localassist", "users", "add", name, "--password-stdin"],
        input=password.encode(),
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()


def start_server(
    home: Path,
    model: Path,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    users: dict[str, str] | None = None,
) -> ServerProc:
    """`serve` on `model` with sign-in when `users` (name: password) are given, sampling at
    temperature 0 and a few tokens unless the page asks for more."""
    home.mkdir(parents=True, exist_ok=True)
    for name, password in (users or {}).items():
        add_user(home, name, password)
    settings = {"LOCALASSIST_TEMPERATURE": "0", "LOCALASSIST_MAX_TOKENS": "8", **FAST_HASH, **(env or {})}
    return ServerProc(home, ["-m", str(model), *ENGINE, *args], settings).wait_ready()


def stop_server(proc: ServerProc) -> None:
    code = proc.stop()
    assert code == 0, proc.stderr


def cli_json(home: Path, *args: str) -> Any:
    """A `localassist ... --json` command's answer, run on a server's home."""
    import json

    env = {**os.environ, "LOCALASSIST_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "localassist", *args], capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


# --- the page ---------------------------------------------------------------------------


def open_chat(open_page: Callable[..., Watched], url: str, **options: Any) -> Watched:
    """A watched page on the web chat at `url`, once it has started (the message box shows:
    before that the controls are not wired up yet)."""
    watched = open_page(**options)
    watched.page.goto(url)
    expect(watched.page.get_by_role("textbox", name="Message")).to_be_visible()
    return watched


def sign_in(page: Any, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def set_field(page: Any, label: str, value: float | int | str) -> None:
    """Set every control named `label` (a slider and the number box beside it, say) the way
    a user's input would: the value, then input and change events. Playwright cannot
    `fill` a range input."""
    controls = page.get_by_label(label, exact=True)
    assert controls.count() >= 1, f"no control labelled {label!r}"
    for i in range(controls.count()):
        controls.nth(i).evaluate(
            "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true}));"
            " el.dispatchEvent(new Event('change', {bubbles: true})); }",
            str(value),
        )


def send(page: Any, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    page.get_by_role("button", name="Send").click()


def answers(page: Any) -> Any:
    return page.locator(".message.assistant")


def wait_answered(page: Any, count: int = 1, timeout: float = 60_000) -> None:
    """Until `count` answers are complete: each has its usage line and Stop is gone."""
    expect(page.locator(".usage")).to_have_count(count, timeout=timeout)
    expect(page.get_by_role("button", name="Stop")).to_be_hidden(timeout=timeout)


def poll(check: Callable[[], Any], timeout: float = 20, every: float = 0.1) -> Any:
    """`check()`'s first truthy value, tried until `timeout` seconds; the last value if none."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def seed_conversation(home: Path, owner: str | None, prompt: str, answer: str) -> str:
    """A conversation of `owner` (None: the open server's, the machine user's) holding one
    exchange, written straight into the server's log: a model answer a test chooses."""
    from localassist.conversation.log_store import LogStore, log_path
    from localassist.engine.types import Done, Timings, Usage

    store = LogStore(log_path(home / "data"))
    try:
        cid = store.create_conversation(prompt[:40], "starter", None, owner, {})
        done = Done(answer, "starter", "stop", Usage(3, 5, 8), Timings(0, None, None, None, 0))
        store.log_exchange(cid, prompt, done, {"temperature": 0.0})
        return cid
    finally:
        store.close()
