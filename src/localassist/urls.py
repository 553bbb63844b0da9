"""Server URLs as the user gives them: checked, normalised, and whether they stay on this machine."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from localassist.errors import UsageError


def normalize_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]``, without a trailing ``/`` or ``/v1`` (both are
    accepted: endpoints are added as ``/v1/...``, ``/props``, ``/api/...``)."""
    text = url.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        host = None
    if parts.scheme not in ("http", "https") or not host:
        raise UsageError(f"not an http(s) URL: {url!r} (e.g. http://127.0.0.1:8080)")
    return text[: -len("/v1")] if text.endswith("/v1") else text


def is_loopback(url: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: traffic that never leaves the machine."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_elsewhere(url: str) -> bool:
    """Unencrypted HTTP to another machine: prompts cross the network in clear text."""
    return url.startswith("http://") and not is_loopback(url)
