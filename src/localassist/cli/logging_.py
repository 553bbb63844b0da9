"""Opening the log and recording exchanges from ask and chat: the answer is always
printed first, and a log that cannot be written costs a warning, never the answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from localassist.cli.console import error

if TYPE_CHECKING:
    from localassist.conversation.log_store import Logged, LogStore
    from localassist.engine.types import Completion, SamplingParams
    from localassist.settings import Settings

T = TypeVar("T")


def open_store(settings: Settings) -> LogStore:
    from localassist.conversation.log_store import LogStore, log_path

    return LogStore(log_path(settings.paths.data_dir))


def with_log(settings: Settings, enabled: bool, action: Callable[[LogStore], T], lost: str) -> T | None:
    """Run ``action`` on the open log and return its result; None when logging is off or
    the log cannot be written, which costs one error line on stderr ending in ``(lost)``,
    never an exception: the answer is already on the screen."""
    if not enabled:
        return None
    from localassist.errors import LocalAssistError

    try:
        store = open_store(settings)
        try:
            return action(store)
        finally:
            store.close()
    except LocalAssistError as exc:
        error(f"{exc} ({lost})")
        return None


def params_record(params: SamplingParams) -> dict[str, Any]:
    return {k: v for k, v in params.__dict__.items() if k != "grammar" and v not in ((), None)} | (
        {"grammar": True} if params.grammar else {}
    )


def record_exchange(
    settings: Settings,
    enabled: bool,
    cid: str | None,
    prompt: str,
    completion: Completion,
    params: SamplingParams,
    system: str | None,
    replaces: int | None = None,
) -> Logged | None:
    """Log one exchange after its answer was printed (``LogStore.log_exchange``); return the
    conversation and exchange ids, or None when logging is off or failed (one error line)."""
    return with_log(
        settings,
        enabled,
        lambda store: store.log_exchange(cid, prompt, completion, params_record(params), system, replaces=replaces),
        "the answer above was not logged",
    )


def record(
    settings: Settings,
    enabled: bool,
    cid: str | None,
    prompt: str,
    completion: Completion,
    params: SamplingParams,
    system: str | None,
) -> str | None:
    """``record_exchange`` for callers that need only the conversation id: ``cid`` as it was
    when logging is off, None when the exchange could not be logged."""
    if not enabled:
        return cid
    logged = record_exchange(settings, enabled, cid, prompt, completion, params, system)
    return logged.conversation_id if logged else None


def load_history(settings: Settings, cid: str | None):
    """The conversation to continue: ``cid`` (a unique prefix), else the latest one;
    returns it and the settings with its system prompt unless --system was given."""
    from dataclasses import replace

    from localassist.errors import UsageError

    store = open_store(settings)
    try:
        conversation_id = store.resolve_id(cid) if cid else store.latest_conversation_id()
        if conversation_id is None:
            raise UsageError("there is no logged conversation to continue yet; ask something first")
        history = store.conversation(conversation_id)
    finally:
        store.close()
    if settings.sources.get("system") != "flag" and history.system:
        settings = replace(settings, system=history.system)
    return history, settings
