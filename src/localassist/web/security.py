"""What every web response carries, and the checks every state-changing request passes.

The page is hand-written static files served from the package: the Content-Security-Policy
allows scripts, styles and connections to this origin only, no inline script and, through
Trusted Types 'none', no HTML parsed from strings at all (``innerHTML`` throws), so text
from a user or a model can only ever become text nodes.

A request that changes anything (POST, PATCH, DELETE) must come from this origin: its
``Origin`` (else ``Referer``) must be the server's own, ``Sec-Fetch-Site`` must not say
cross-site, and it must carry the session's CSRF token in ``X-CSRF-Token``. Cookies are
HttpOnly and SameSite=Strict as well; they are Secure (and ``__Host-`` named) when the
page is served over HTTPS, or behind a trusted TLS proxy that says so.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
SESSION_DAYS = 7


def secured(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def is_https(request: Request, trust_proxy: bool) -> bool:
    if request.url.scheme == "https":
        return True
    return trust_proxy and request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower() == "https"


def client_address(request: Request, trust_proxy: bool) -> str:
    """The client's address; behind a trusted proxy, the one it says it forwards for."""
    if trust_proxy:  # the last entry is the one the proxy added; those before it, the client wrote
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
        if forwarded:
            return forwarded[:64]
    return request.client.host if request.client else "-"


def cookie_name(secure: bool) -> str:
    # __Host-: the browser takes it only when Secure, from this host, for path / (no Domain)
    return "__Host-localassist" if secure else "localassist"


def session_cookie(response: Response, token: str, secure: bool) -> None:
    response.set_cookie(
        cookie_name(secure),
        token,
        max_age=SESSION_DAYS * 86400,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(cookie_name(secure), path="/", secure=secure, httponly=True, samesite="strict")


def same_origin(request: Request, trust_proxy: bool) -> bool:
    """Whether a state-changing request comes from a page of this server."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    host = request.headers.get("x-forwarded-host") if trust_proxy else None
    host = host or request.headers.get("host", "")
    scheme = "https" if is_https(request, trust_proxy) else "http"
    return parts.scheme == scheme and parts.netloc.lower() == host.lower()


def loopback_host(request: Request) -> bool:
    """Whether the Host the browser asked for is this machine's loopback name or address. A
    page without sign-in answers only such requests: a web page on another name that its
    DNS points at 127.0.0.1 (DNS rebinding) is then not this page's origin."""
    import ipaddress

    host = request.headers.get("host", "").strip()
    if host.startswith("["):  # [::1]:8080
        name = host[1 : host.find("]")] if "]" in host else ""
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def token_matches(sent: str | None, expected: str | None) -> bool:
    return bool(sent and expected) and hmac.compare_digest(sent.encode(), expected.encode())  # type: ignore[union-attr]
