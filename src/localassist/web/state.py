"""What the web chat keeps while the server runs: who may sign in, the sign-in limiter,
the sessions of the page without sign-in, the indexes it answers from, and the tools
the operator allowed it.

Sign-in follows the API keys' rule: on a loopback address with no web user defined the
page needs none (it is the machine's own user, who sees the CLI's conversations too);
once a user exists, or on any other address, every request needs a signed-in session.
The rule is read at each request, so the first ``users add`` locks a running server.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from localassist.server.errors import ApiError
from localassist.server.keys import KeyRecord
from localassist.web import security
from localassist.web.accounts import LOCAL_USER, Accounts, SignInLimiter

if TYPE_CHECKING:
    from localassist.retrieval import DocsSearch
    from localassist.settings import Settings

LOCAL_SESSIONS = 1000  # sessions of the page without sign-in kept (the oldest go first)


@dataclass(frozen=True)
class WebUser:
    name: str  # shown on the page
    owner: str | None  # in the log: None is the machine's own user
    key: KeyRecord  # the queue, the rate limits and the call log see the user as this key
    csrf: str
    token: str


class SharedSearch:
    """One index's search shared by every web turn: one at a time, since its embedding
    model is one llama.cpp context (and loads once, on first use)."""

    def __init__(self, docs: DocsSearch) -> None:
        self.docs = docs
        self.name = docs.name
        self._lock = threading.Lock()

    def search(self, question: str) -> tuple[list[Any], list[str], bool]:
        with self._lock:
            return self.docs.search(question)

    def close(self) -> None:
        with self._lock:
            self.docs.close()


@dataclass(eq=False)
class WebState:
    settings: Settings
    accounts: Accounts
    loopback: bool
    limiter: SignInLimiter = field(default_factory=SignInLimiter)
    local: OrderedDict[str, str] = field(default_factory=OrderedDict)  # token -> csrf, no sign-in needed
    docs: dict[str, SharedSearch] = field(default_factory=dict)
    docs_lock: threading.Lock = field(default_factory=threading.Lock)
    signing_in: set[str] = field(default_factory=set)  # (name, address) pairs being checked now

    @property
    def trust_proxy(self) -> bool:
        return self.settings.web_trusted_proxy

    @property
    def tools(self) -> tuple[str, ...]:
        return tuple(t for t in self.settings.web_tools if t != "shell")

    @property
    def tool_roots(self) -> tuple[Path, ...]:
        return tuple(Path(r).expanduser() for r in self.settings.web_tool_roots)

    @property
    def upload_limit(self) -> int:
        return self.settings.web_upload_mb * 1024 * 1024

    @property
    def data_dir(self) -> Path:
        return self.settings.paths.data_dir

    def in_flight(self, address: str | None) -> int:
        """Sign-ins being checked now from ``address``."""
        return sum(1 for pair in self.signing_in if pair.rsplit(" ", 1)[-1] == address)

    def signin_required(self) -> bool:
        # behind a proxy, "loopback" is the proxy: whoever reaches it must sign in
        return not self.loopback or self.trust_proxy or self.accounts.count() > 0

    def check_host(self, request: Request) -> None:
        """The page without sign-in answers only requests made to a loopback name."""
        if not security.loopback_host(request):
            raise ApiError(
                403,
                "this server's web chat needs no sign-in, so it answers only at localhost or 127.0.0.1",
                "permission_error",
                "host_not_allowed",
            )

    def indexes(self) -> list[str]:
        from localassist.rag.store import index_names

        return index_names(self.data_dir)

    def secure(self, request: Request) -> bool:
        return security.is_https(request, self.trust_proxy)

    def token(self, request: Request) -> str | None:
        return request.cookies.get(security.cookie_name(self.secure(request)))

    def user(self, request: Request) -> WebUser:
        """The user this request comes from; 401 when it must sign in (again)."""
        token = self.token(request)
        if not self.signin_required():
            self.check_host(request)
            csrf = self.local.get(token) if token else None
            if token is None or csrf is None:
                raise ApiError(401, "the page's session has ended: reload the page", "authentication_error", "reload")
            return WebUser(LOCAL_USER, None, KeyRecord(f"web:{LOCAL_USER}", "", source="web"), csrf, token)
        session = self.accounts.session(token) if token else None
        if session is None or token is None:
            raise ApiError(401, "sign in to continue", "authentication_error", "signin_required")
        return WebUser(
            session.user, session.user, KeyRecord(f"web:{session.user}", "", source="web"), session.csrf, token
        )

    def local_session(self, request: Request) -> tuple[str, str]:
        """The page without sign-in: its cookie token and CSRF token (made on first sight)."""
        self.check_host(request)
        token = self.token(request)
        if token and token in self.local:
            return token, self.local[token]
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.local[token] = csrf
        while len(self.local) > LOCAL_SESSIONS:
            self.local.popitem(last=False)
        return token, csrf

    def docs_search(self, name: str) -> SharedSearch:
        """The index's search, kept open (its embedding model loads once); off the loop."""
        from localassist.retrieval import DocsSearch

        with self.docs_lock:
            if name not in self.docs:
                self.docs[name] = SharedSearch(DocsSearch(self.settings, name))
            return self.docs[name]

    def close(self) -> None:
        for docs in self.docs.values():
            docs.close()
        self.docs.clear()
        self.accounts.close()
