"""Keeping the SQLite log equal to the conversation as it stands: each exchange is logged
as it finishes (after its answer was shown), /regen supersedes the answer it replaces,
/undo and /clear hide exchanges, /load replaces them with the transcript, /system is
recorded, and so is every document pinned to the context (/file, piped text): at once in
a conversation already logged, else with its first exchange.

A log that cannot be written never costs an answer: the failure goes to ``on_error``
(the CLI prints one line) and the conversation carries on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from localassist.conversation.log_store import Attachment, LogError, LogStore, StoredConversation, log_path
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


def delete_conversations(
    data_dir: Path, cache_dir: Path, conversation_id: str | None, *, forget_history: bool = True
) -> int:
    """``logs rm``: delete a conversation (a unique prefix of its id; None: every one) from
    the log, and the other copies of its text localassist keeps: its KV snapshots (with any
    no conversation in the log claims), the lines of chat's prompt history that sent its
    messages, the summary notes of the documents summarized for a conversation that no
    conversation left in the log has attached, and the files uploaded to it in the web
    chat. ``forget_history`` False: a web user's conversation, whose messages were never
    typed into this machine's chat history. Returns how many exchanges went. Raises
    LogError, UsageError."""
    from localassist.conversation.input_history import forget, history_path
    from localassist.engine.kv_snapshots import sweep

    store = open_log(data_dir)
    try:
        cid = store.resolve_id(conversation_id) if conversation_id is not None else None
        typed = store.typed(cid)
        late: LogError | None = None
        removed = 0
        try:
            removed = store.delete(cid) if cid else store.delete_all()
        except LogError as exc:
            if _still_there(store, cid):
                raise  # nothing was deleted
            late = exc  # deleted, but another process kept the WAL from being truncated
        sweep(cache_dir / "kv", store.claimed_snapshots())
        history = history_path(data_dir)
        try:
            forget(history, typed if forget_history else set())
        except OSError as exc:
            raise LogError(f"deleted from the log, but {history} was not rewritten: {exc.strerror or exc}") from None
        _forget_notes(cache_dir, store.attached_documents())
        from localassist.web.conversations import sweep_uploads  # files uploaded to the web chat

        sweep_uploads(data_dir, store.conversation_ids)
        if late is not None:
            raise late
        return removed
    finally:
        store.close()


def _forget_notes(cache_dir: Path, keep: set[str]) -> None:
    """The summary notes of documents summarized for a conversation that is no longer in
    the log (``SummaryCache.forget``); a cache never made stays unmade."""
    from localassist.documents.summary_cache import CACHE_FILE, CacheError, SummaryCache

    path = cache_dir / CACHE_FILE
    if not path.exists():
        return
    try:
        cache = SummaryCache(path)
        try:
            _, busy = cache.forget(keep)
        finally:
            cache.close()
    except CacheError as exc:
        raise LogError(f"deleted from the log, but not its documents' summary notes: {exc}") from None
    if busy:
        raise LogError(
            f"deleted, but another process is reading {path}: old copies of the notes may stay in "
            f"{path.name}-wal until it finishes; run the command again then"
        )


def _still_there(store: LogStore, conversation_id: str | None) -> bool:
    if conversation_id is None:
        return store.counts()[0] > 0
    try:
        store.resolve_id(conversation_id)
    except UsageError:
        return False
    return True


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
        self.pending: list[Attachment] = []  # attached before the conversation was in the log
        self.sources: list[dict[str, Any]] = []  # what the next answer is given from an index (web chat)

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
        pending = list(self.pending)
        logged = self._run(
            lambda store: store.log_exchange(
                cid,
                prompt,
                done,
                params,
                system,
                replaces=replaces if cid else None,
                tool_calls=tool_calls,
                attachments=pending,
                sources=self.sources,
            ),
            "the answer above was not logged",
        )
        self.sources = []
        if logged:
            self.conversation_id = logged.conversation_id
            self.pending = []
        self.ids.append(logged.exchange_id if logged else None)

    def attach(self, attachment: Attachment) -> None:
        if not self.enabled:
            return
        if cid := self.conversation_id:
            self._run(lambda store: store.log_attachment(cid, attachment), f"the log does not show {attachment.name}")
        else:
            self.pending.append(attachment)

    def snapshots(self, names: Sequence[str]) -> None:
        """Record the KV snapshot files saved for this conversation (LogStore.claim_snapshots).
        Quietly: the exchange's own line already told of a log that fails, and a snapshot
        left unclaimed is deleted by the next ``logs rm``."""
        if not (self.enabled and self.conversation_id):
            return
        with contextlib.suppress(LocalAssistError):
            store = open_log(self.data_dir)
            try:
                store.claim_snapshots(self.conversation_id, names)
            finally:
                store.close()

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
        pending = list(self.pending)
        imported = self._run(
            lambda store: store.log_imported(cid, list(messages), model=model, system=system, attachments=pending),
            "the log does not show the loaded transcript",
        )
        if imported:
            self.conversation_id, self.ids = imported.conversation_id, list(imported.exchange_ids)
            self.pending = []
