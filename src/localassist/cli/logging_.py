"""Opening the log and recording exchanges from ask and chat: the answer is always
printed first, and a log that cannot be written costs a warning, never the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localassist.cli.console import error

if TYPE_CHECKING:
    from localassist.generation import Completion, SamplingParams
    from localassist.settings import Settings


def open_store(settings: Settings):
    from localassist.store import LogStore, log_path

    return LogStore(log_path(settings.paths.data_dir))


def params_record(params: SamplingParams) -> dict[str, Any]:
    return {k: v for k, v in params.__dict__.items() if k != "grammar" and v not in ((), None)} | (
        {"grammar": True} if params.grammar else {}
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
    """Log one exchange; return the conversation id (None when not logged)."""
    if not enabled:
        return cid
    from localassist.errors import LocalAssistError

    try:
        store = open_store(settings)
        try:
            return store.log_exchange(cid, prompt, completion, params_record(params), system)
        finally:
            store.close()
    except LocalAssistError as exc:
        error(f"{exc} (the answer above was not logged)")
        return None


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
