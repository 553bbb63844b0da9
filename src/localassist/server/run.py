"""The server process: keys and the bind rule, model resolution, the listening socket,
then uvicorn with a graceful SIGTERM.

Order matters for clear failures: keys are gathered and the bind rule checked first
(exit 2), models are resolved next (exit 3, without loading anything), then the socket
is bound (a port in use is one line, exit 1), and only then does uvicorn start; the
models load in the background while ``/health`` answers 503 ``loading``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localassist.errors import LocalAssistError, UsageError
from localassist.files import read_regular_text
from localassist.server.keys import ENV_KEYS, KeyStore, parse_key_lines

if TYPE_CHECKING:
    from localassist.engine.types import Backend
    from localassist.models.resolve import ResolvedModel
    from localassist.settings import Settings

# Encoder architectures: a model of one of these given with -m is served for embeddings.
EMBEDDING_ARCHITECTURES = {
    "bert",
    "nomic-bert",
    "nomic-bert-moe",
    "jina-bert-v2",
    "jina-bert-v3",
    "t5encoder",
    "modern-bert",
    "neo-bert",
}


class ServeError(LocalAssistError):
    """The server cannot start: the address is in use, or not ours to bind."""


@dataclass
class ServeOptions:
    models: list[str] = field(default_factory=list)  # -m: chat models (encoders are taken for embeddings)
    embed: list[str] = field(default_factory=list)  # --embed: loaded for embeddings
    verbose: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def gather_keys(key_file: str | None) -> list[tuple[str, str, str]]:
    """Keys from ``LOCALASSIST_API_KEYS`` and the key file, as (name, key, source)."""
    out = [(n, k, "env") for n, k in parse_key_lines(os.environ.get(ENV_KEYS, ""), "env")]
    if key_file:
        path = Path(key_file).expanduser()
        try:
            text = read_regular_text(path)  # a FIFO is refused, never waited on
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        out += [(n, k, "file") for n, k in parse_key_lines(text, "file")]
    return out


def open_access(auth: str, host: str, active: bool, ever: bool, web_users: bool = False) -> bool:
    """Whether the server starts open (no key needed), decided once, at start; a running
    server never becomes open (see ``Keyring``). ``auth`` is the ``serve_auth`` setting;
    ``active``: a key is active; ``ever``: the key store has held a key, revoked or not.
    Open needs a loopback address and no active key, and either ``auth=open`` or
    ``auth=auto`` on a store that never held a key: once keys were used, revoking them
    all must not open the server, not even after a restart. ``web_users``: the web chat has
    users, so a server on another address is for them: it starts with the API locked
    (every API call needs a key, and none is active yet) rather than refusing to start."""
    if auth == "open" and not is_loopback(host):
        raise UsageError(f"--auth open serves without API keys, so only on a loopback address, not on {host}")
    if auth == "open" and active:
        raise UsageError(
            "--auth open serves without API keys, but a key is active: revoke every key first "
            "(`localassist keys list`), or leave out --auth open"
        )
    if not active and not is_loopback(host) and not web_users:
        raise UsageError(
            f"refusing to listen on {host} without API keys: anyone who can reach this machine could use the model. "
            "Create a key with `localassist keys create NAME` (or set LOCALASSIST_API_KEYS / --key-file), "
            "or listen on 127.0.0.1"
        )
    return not active and is_loopback(host) and (auth == "open" or (auth == "auto" and not ever))


def plan_models(settings: Settings, options: ServeOptions) -> list[tuple[ResolvedModel, str]]:
    """Resolve every model (no loading): (ResolvedModel, kind). Names must be unique per kind."""
    from localassist.models.gguf_file import read_gguf
    from localassist.models.resolve import resolve_model

    def resolve(spec: str | None) -> ResolvedModel:
        resolved = resolve_model(spec, settings)
        # a path is served under its file's stem: the id is typed by clients, and a path
        # would show them the server's file system
        return replace(resolved, name=resolved.path.stem) if resolved.source == "path" else resolved

    plan: list[tuple[ResolvedModel, str]] = []
    chat_specs: list[str | None] = [*options.models] or [None]  # None: the configured default model
    for spec in chat_specs:
        resolved = resolve(spec)
        kind = "embedding" if read_gguf(resolved.path).architecture in EMBEDDING_ARCHITECTURES else "chat"
        plan.append((resolved, kind))
    plan += [(resolve(spec), "embedding") for spec in options.embed]
    seen: set[tuple[str, str]] = set()
    for resolved, kind in plan:
        if (resolved.name, kind) in seen:
            raise UsageError(f"{resolved.name} is given twice as a {kind} model")
        seen.add((resolved.name, kind))
    return plan


def loader(
    settings: Settings, plan: list[tuple[ResolvedModel, str]], verbose: bool
) -> Callable[[], list[tuple[str, Backend, str]]]:
    def load() -> list[tuple[str, Backend, str]]:
        from localassist.backends import Role, open_backend

        out = []
        for resolved, kind in plan:
            role: Role = "embedding"
            if kind == "chat":  # --parallel N: continuous batching, N answers share one context
                role = "batched" if settings.serve_parallel > 1 else "chat"
            backend = open_backend(settings, resolved, role=role, verbose=verbose)
            if kind == "chat":  # the grammar engine's view of the vocabulary, before the first schema asks
                host: Any = getattr(backend, "host", backend)  # a batched backend's model is its host
                host.prepare_guidance()
            out.append((resolved.name, backend, kind))
        return out

    return load


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def log_content(setting: str, host: str) -> bool:
    return setting == "true" or (setting == "auto" and is_loopback(host))


def serve(settings: Settings, options: ServeOptions, announce: Callable[[str], None]) -> None:
    """Run until SIGTERM/SIGINT. Raises the load error if a model failed to load."""
    from localassist.engine.types import SamplingParams

    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise ServeError("the server needs its extra: pip install 'localassist[server]'") from None
    keys_extra = gather_keys(settings.serve_key_file)
    store = KeyStore(settings.paths.data_dir)
    from localassist.server.keys import Keyring

    host, port = settings.serve_host, settings.serve_port
    active = bool(keys_extra or store.records(include_revoked=False))
    from localassist.web.accounts import Accounts

    accounts = Accounts(settings.paths.data_dir) if settings.web else None
    web_users = accounts is not None and accounts.count() > 0
    access = open_access(settings.serve_auth, host, active, store.ever_had_keys(), web_users)
    keyring = Keyring(store, keys_extra, access)
    plan = plan_models(settings, options)
    sock = bind(host, port)

    import uvicorn

    from localassist.server.app import create_app
    from localassist.server.calllog import CallLog
    from localassist.server.connections import protocol_class
    from localassist.server.state import DRAIN_S, ServeConfig, ServerState

    content = log_content(settings.serve_log_content, host)
    config = ServeConfig(
        max_queue=settings.serve_max_queue,
        timeout_s=settings.serve_timeout,
        grace_s=settings.serve_grace,
        max_body=settings.serve_max_body_mb * 1024 * 1024,
        log_content=content,
        requests_per_minute=settings.serve_requests_per_minute,
        tokens_per_minute=settings.serve_tokens_per_minute,
        read_timeout_s=settings.serve_read_timeout,
        defaults=SamplingParams.from_settings(settings),
    )
    state = ServerState(config, keyring, CallLog(settings.paths.data_dir), loader(settings, plan, options.verbose))
    if accounts is not None:
        from localassist.web.state import WebState

        state.web = WebState(settings, accounts, is_loopback(host))
        state.web.accounts.prune_sessions()
    app = create_app(state)
    protocol = protocol_class(config.read_timeout_s)
    state.drop_connections = protocol.abort_all
    uv_config = uvicorn.Config(
        app,
        http=protocol,
        lifespan="on",
        loop="asyncio",
        log_level="info" if options.verbose else "warning",
        access_log=options.verbose,
        # a last resort only: the app ends every response at the grace period and drops the
        # connections still open DRAIN_S later, so uvicorn never has to cancel a task
        timeout_graceful_shutdown=math.ceil(config.grace_s) + DRAIN_S + 5,
        server_header=False,
        # X-Forwarded-* are the web chat's to trust or not (web_trusted_proxy), never uvicorn's:
        # by default it would take them from any client on loopback
        proxy_headers=False,
    )
    server = _Server(uv_config, state)
    state.on_fatal = lambda: setattr(server, "should_exit", True)
    actual = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    names = ", ".join(f"{r.name}" + (" (embeddings)" if k == "embedding" else "") for r, k in plan)
    auth = "API key required"
    if keyring.open:
        auth = "open: no key needed until one is created"
    elif not keyring.active:
        auth = "API key required; none is active: create one with `localassist keys create NAME`"
    base = f"http://{shown}:{actual}"
    web = "web chat off (web = false)"
    if state.web is not None:
        users = state.web.accounts.count()
        web = f"web chat at {base}/"
        if users:
            web += f" (sign-in: {users} user{'s' * (users != 1)})"
        elif not state.web.loopback:
            web += " (sign-in needed, and no user yet: create one with `localassist users add NAME`)"
        else:
            web += " (no sign-in: loopback and no users)"
    announce(
        f"serving {names}: {web}  API at {base}/v1 ({auth}; queue {config.max_queue} per model; "
        f"content logging {'on' if content else 'off'})"
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        store.close()
    if state.load_error is not None:
        raise state.load_error


class _Server:
    """uvicorn's Server, with SIGTERM as a graceful stop that exits 0: new requests get
    503, running ones may finish within the grace period, then they are cancelled.
    (uvicorn re-raises the signal after shutting down, which would exit 143.)"""

    def __new__(cls, config: Any, state: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                state.begin_shutdown()
                if sig == signal.SIGTERM:
                    self.should_exit = True
                    return
                super().handle_exit(sig, frame)

        return Server(config)
