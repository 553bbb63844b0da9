"""Opening a model, the one way every front end does it (ask, chat, the server, the
Python API, LangChain, the index commands): resolve what the user named, build the
load options from the settings, then load the file here (one answer at a time, or
continuous batching for the server) or connect to the server it is on, and record the
use of a local file (``localassist models`` shows it).

    backend = open_backend(settings, "starter", loading=spinner)

Two steps where a caller needs the model resolved before it is loaded: ``plan_backend``
resolves (the server resolves every model before it binds its socket; LangChain shares
one backend per resolved file and options), ``BackendPlan.open`` loads.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # imported lazily: `localassist --help` must not pay for the engine
    from localassist.engine.local import LoadOptions
    from localassist.engine.remote import RemoteBackend
    from localassist.engine.types import Backend
    from localassist.models.remotes import RemoteTarget
    from localassist.models.resolve import ResolvedModel
    from localassist.settings import Settings

Role = Literal["chat", "embedding", "batched"]  # batched: chat with continuous batching (serve --parallel N)
Loading = Callable[[str], AbstractContextManager[Any]]


def _quiet(_name: str) -> AbstractContextManager[Any]:
    return nullcontext()


@dataclass(frozen=True)
class BackendPlan:
    """A model resolved, not loaded yet: a local file with its load options, or a model
    on a server. ``label`` is what ``loading`` is given (the model's name, or the URL)."""

    settings: Settings
    role: Role
    label: str
    local: ResolvedModel | None = None
    options: LoadOptions | None = None
    remote: RemoteTarget | None = None

    def open(self, *, loading: Loading | None = None, notify: Callable[[str], None] | None = None) -> Backend:
        """Load (or connect); ``loading(label)`` wraps it (the CLI shows a spinner there).
        ``notify`` gets a remote's one-line notices (retries, an unknown context, plain HTTP)."""
        loading = loading or _quiet
        if self.remote is not None:
            with loading(self.label):
                return connect_remote(self.remote, self.settings, notify=notify)
        assert self.local is not None and self.options is not None
        from localassist.models.last_used import record_use

        with loading(self.label):
            if self.role == "batched":  # N answers share one context (serve --parallel N)
                from localassist.engine.batched import BatchedBackend

                backend: Backend = BatchedBackend(
                    self.local.path, self.local.name, self.options, parallel=self.settings.serve_parallel
                )
            else:
                from localassist.engine.local import LocalBackend

                backend = LocalBackend(self.local.path, self.local.name, self.options)
        record_use(self.settings.paths.data_dir, self.local.path)
        return backend


def plan_backend(
    settings: Settings,
    spec: str | ResolvedModel | None = None,
    *,
    role: Role = "chat",
    verbose: bool = False,
    snapshots: bool = False,
) -> BackendPlan:
    """Resolve ``spec`` (None: the configured default; a ``ResolvedModel``: taken as it
    is) without loading anything. A remote model (``NAME:MODEL``, ``--base-url``) is
    planned as a connection. ``verbose``: llama.cpp's own log on stderr; ``snapshots``:
    save the conversation's KV state after each answer and resume from it in a later
    process (chat, ``ask -c``)."""
    from localassist.models.resolve import ResolvedModel, resolve_model

    if isinstance(spec, ResolvedModel):
        resolved = spec
    else:
        from localassist.models.remotes import remote_target

        wanted = spec if spec is not None else settings.model
        if getattr(settings, "base_url", None) and wanted == settings.model and settings.sources.get("model") != "flag":
            wanted = None  # with --base-url only -m names the server's model, not a configured default
        if (target := remote_target(wanted, settings)) is not None:
            return BackendPlan(settings, role, wanted or target.url, remote=target)
        resolved = resolve_model(spec if spec is not None else settings.model, settings)
    from localassist.engine.local import LoadOptions

    options = LoadOptions.from_settings(settings, verbose=verbose, embedding=role == "embedding", snapshots=snapshots)
    return BackendPlan(settings, role, resolved.name, local=resolved, options=options)


def open_backend(
    settings: Settings,
    spec: str | ResolvedModel | None = None,
    *,
    role: Role = "chat",
    verbose: bool = False,
    loading: Loading | None = None,
    snapshots: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Backend:
    """Resolve ``spec`` and load it (or connect to it): ``plan_backend``, then ``open``."""
    plan = plan_backend(settings, spec, role=role, verbose=verbose, snapshots=snapshots)
    return plan.open(loading=loading, notify=notify)


def connect_remote(
    target: RemoteTarget,
    settings: Settings,
    *,
    notify: Callable[[str], None] | None = None,
    choose_model: bool = True,
) -> RemoteBackend:
    """A backend on a remote engine; the context size is passed only when the user set
    one, else the server's own is asked for. ``choose_model=False``: only connect, to
    list what the server offers (``models --remote``)."""
    from localassist.engine.remote import RemoteBackend

    return RemoteBackend(
        target.url,
        target.model,
        name=target.name,
        key_env=target.key_env,
        kind=target.kind,
        ctx=settings.ctx if settings.sources.get("ctx") not in (None, "default") else None,
        notify=notify,
        choose_model=choose_model,
    )
