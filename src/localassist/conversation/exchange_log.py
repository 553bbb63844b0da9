"""Keeping the SQLite log equal to the conversation as it stands: each exchange is logged
as it finishes (after its answer was shown), /regen supersedes the answer it replaces,
/undo and /clear hide exchanges, /load replaces them with the transcript, /system is
recorded.

A log that cannot be written never costs an answer: the failure goes to ``on_error``
(the CLI prints one line) and the conversation carries on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from localassist.conversation.log_store import LogStore, StoredConversation, log_path
from localassist.engine.types import Done, Message
from localassist.errors import LocalAssistError, UsageError

T = TypeVar("T")


def open_log(data_dir: Path) -> LogStore:
    return LogStore(log_path(data_dir))


def load_conversation(data_dir: Path, conversation_id: str | None) -> StoredConversation:
    """The conversation to continue: ``conversation_id`` (a unique prefix), else the latest."""
    store = open_log(data_dir)
    try:
        cid = store.resolve_id(conversation_id) if conversation_id else store.latest_conversation_id()
        if cid is None:
            raise UsageError("there is no logged conversation to continue yet; ask something first")
        return store.conversation(cid)
    finally:
        store.close()


class ExchangeLog:
    """One conversation in the log, followed as it changes. ``enabled=False``: a no-op."""

    def __init__(
        self,
        data_dir: Path,
        enabled: bool = True,
        history: StoredConversation | None = None,
        on_error: Callable[[str], None] = lambda _message: None,
    ) -> None:
        self.data_dir = data_dir
        self.enabled = enabled
        self.on_error = on_error
        self.conversation_id = history.id if history else None
        # logged exchange ids in conversation order; None where logging failed (nothing to mark)
        self.ids: list[int | None] = [ex.id for ex in history.shown()] if history else []

    def _run(self, action: Callable[[LogStore], T], lost: str) -> T | None:
        if not self.enabled:
            return None
        try:
            store = open_log(self.data_dir)
            try:
                return action(store)
            finally:
                store.close()
        except LocalAssistError as exc:
            self.on_error(f"{exc} ({lost})")
            return None

    def exchange(
        self,
        prompt: str,
        done: Done,
        params: dict[str, Any],
        system: str | None,
        regenerated: bool = False,
        tool_calls: Sequence[Any] = (),
    ) -> None:
        replaces = self.ids.pop() if regenerated and self.ids else None
        cid = self.conversation_id
        logged = self._run(
            lambda store: store.log_exchange(
                cid, prompt, done, params, system, replaces=replaces if cid else None, tool_calls=tool_calls
            ),
            "the answer above was not logged",
        )
        if logged:
            self.conversation_id = logged.conversation_id
        self.ids.append(logged.exchange_id if logged else None)

    def undo(self) -> None:
        last = self.ids.pop() if self.ids else None
        if last is not None:
            self._run(lambda store: store.set_status([last], "undone"), "the log still shows that exchange")

    def clear(self) -> None:
        self.ids = []
        if cid := self.conversation_id:
            self._run(lambda store: store.clear(cid), "the log still shows the conversation")

    def system(self, text: str | None) -> None:
        if cid := self.conversation_id:
            self._run(lambda store: store.set_system(cid, text), "the log keeps the old system prompt")

    def replace_with(self, messages: Sequence[Message], model: str, system: str | None) -> None:
        cid = self.conversation_id
        imported = self._run(
            lambda store: store.log_imported(cid, list(messages), model=model, system=system),
            "the log does not show the loaded transcript",
        )
        if imported:
            self.conversation_id, self.ids = imported.conversation_id, list(imported.exchange_ids)
