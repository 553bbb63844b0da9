"""The exchange log as the tests seed and read it, straight through LogStore."""

from __future__ import annotations

from pathlib import Path

from localassist.conversation.log_store import LogStore, StoredConversation, log_path
from localassist.engine.types import Done, Timings, Usage


def logged_conversation(home: Path, cid: str | None = None, include_hidden: bool = False) -> StoredConversation:
    """A logged conversation (the latest if no id) as the log holds it now."""
    store = LogStore(log_path(home / "data"))
    try:
        return store.conversation(cid or store.latest_conversation_id(), include_hidden=include_hidden)
    finally:
        store.close()


def seed_log(home: Path, exchanges: list[tuple[str, str]]) -> str:
    store = LogStore(log_path(home / "data"))
    cid = None
    for prompt, answer in exchanges:
        done = Done(answer, "starter", "stop", Usage(0, 0, 0), Timings(0, None, None, None, 0))
        cid = store.log_exchange(cid, prompt, done, {}).conversation_id
    store.close()
    return cid


def logged_count(home: Path) -> int:
    store = LogStore(log_path(home / "data"))
    try:
        return store.counts()[1]
    finally:
        store.close()
