"""Which models are remote: ``NAME:MODEL`` for a remote the user added (or a built-in
name for a server on this machine), or anything with ``--base-url``. Nothing here
touches the network; a name resolves only to a server the user named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localassist.settings import Settings

# built-in names for engines on this machine; `remote add` with the same name replaces one
BUILTIN_REMOTES: dict[str, tuple[str, str | None]] = {
    "ollama": ("http://127.0.0.1:11434", "ollama"),
    "llama-server": ("http://127.0.0.1:8080", None),
}


@dataclass(frozen=True)
class RemoteTarget:
    """A model on a server: the remote's name (None for ``--base-url``), its URL, the
    server's model id (None: its only one), the API key's variable, the engine if known."""

    name: str | None
    url: str
    model: str | None
    key_env: str | None = None
    kind: str | None = None


def remote_target(spec: str | None, settings: Settings, *, base_url: bool = True) -> RemoteTarget | None:
    """The remote ``spec`` names, or None for a local model. With ``--base-url`` (unless
    ``base_url`` is False) every model is on that server, and ``spec`` is its model id."""
    if base_url and (url := getattr(settings, "base_url", None)):
        return RemoteTarget(None, url, spec or None, settings.api_key_env)
    if not spec or spec.endswith(" (remote)"):  # a log's model column is not a name to send to
        return None
    from localassist.models.catalog import lookup

    if lookup(spec):
        return None
    name, _, model = spec.partition(":")
    remotes = getattr(settings, "remotes", {}) or {}
    if name in remotes:
        remote = remotes[name]
        return RemoteTarget(name, remote.url, model or None, settings.api_key_env or remote.key_env)
    if name in BUILTIN_REMOTES:
        url, kind = BUILTIN_REMOTES[name]
        return RemoteTarget(name, url, model or None, settings.api_key_env, kind)
    return None


def named_remote(name: str, settings: Settings) -> RemoteTarget:
    """A remote by its name or URL (``models --remote``)."""
    from localassist.errors import UsageError

    if "://" in name:
        from localassist.urls import normalize_url

        return RemoteTarget(None, normalize_url(name), None, settings.api_key_env)
    target = remote_target(name + ":", settings) if name not in ("", None) else None
    if target is None:
        known = sorted({*BUILTIN_REMOTES, *(settings.remotes or {})})
        raise UsageError(f"no remote named '{name}' (known: {', '.join(known)}); add one with `localassist remote add`")
    return target
