"""The web chat's conversations: the same SQLite log as ``ask`` and ``chat``, seen
through their owner.

A conversation's ``owner`` is the web user who made it; NULL is the machine's own user,
whose conversations ``ask`` and ``chat`` log. The page without sign-in (loopback, no
users) is that user, so it lists the CLI's conversations too; a signed-in user sees only
their own. Anything not one's own is "not found", never "forbidden": an id of someone
else's conversation tells nothing about it.

Deleting goes through ``delete_conversations`` (``logs rm``): secure delete, the KV
snapshots and the summary notes go too, and so do the conversation's uploaded files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localassist.conversation.exchange_log import delete_conversations, open_log
from localassist.conversation.log_store import LogError, LogStore, StoredConversation
from localassist.errors import ExitCode, LocalAssistError

UPLOADS = "web-files"  # under the data dir: <conversation id>/<sha256> per uploaded file


class ConversationNotFound(LocalAssistError):
    """No conversation of this user has that id (it may exist: it is not theirs)."""

    exit_code = ExitCode.NOT_FOUND


def uploads_dir(data_dir: Path, cid: str) -> Path:
    return data_dir / UPLOADS / cid


def check_owner(store: LogStore, cid: str, owner: str | None) -> dict[str, Any]:
    """The conversation's web settings, if ``cid`` is ``owner``'s; else ConversationNotFound."""
    found = store.owner_and_settings(cid) if _plausible(cid) else None
    if found is None or found[0] != owner:
        raise ConversationNotFound(f"no conversation {cid}")
    return found[1]


def _plausible(cid: str) -> bool:
    return 0 < len(cid) <= 64 and cid.isalnum()


def listing(store: LogStore, owner: str | None, query: str | None = None) -> list[dict[str, Any]]:
    return [
        {"id": r["id"], "title": r["title"], "model": r["model"], "updated": r["updated"]}
        for r in store.owned(owner, query or None)
    ]


def view(conv: StoredConversation, settings: dict[str, Any]) -> dict[str, Any]:
    """A conversation as the page shows it: its active exchanges as messages."""
    messages: list[dict[str, Any]] = []
    for ex in conv.shown():
        summary = isinstance(ex.params, dict) and "summarize" in ex.params  # Summarise's: not a chat turn
        messages.append({"role": "user", "content": ex.prompt, "exchange_id": ex.id, "summary": summary})
        messages.append(
            {
                "role": "assistant",
                "content": ex.response,
                "exchange_id": ex.id,
                "summary": summary,
                "finish_reason": ex.finish_reason,
                "usage": {"prompt_tokens": ex.prompt_tokens, "completion_tokens": ex.completion_tokens},
                "tokens_per_s": ex.generation_tps,
                "ttft_s": ex.ttft_s,
                "tool_calls": [
                    {"name": c.name, "arguments": c.arguments, "result": c.result, "is_error": c.is_error}
                    for c in ex.tool_calls
                ],
                "sources": list(ex.sources),
            }
        )
    attachments = [{"id": i, "name": a.name, "mode": a.mode} for i, a in enumerate(conv.attachments)]
    return {
        "id": conv.id,
        "title": conv.title,
        "model": conv.model,
        "settings": settings,
        "messages": messages,
        "attachments": attachments,
    }


def delete_one(data_dir: Path, cache_dir: Path, cid: str, owner: str | None) -> None:
    """``logs rm`` of ``owner``'s conversation ``cid`` (a full id), its uploads first. A
    delete done but whose old pages another reader still holds in the WAL (``logs rm``
    says to run it again) is done as far as the page is concerned: the next delete or
    checkpoint clears them."""
    shutil.rmtree(uploads_dir(data_dir, cid), ignore_errors=True)
    try:
        delete_conversations(data_dir, cache_dir, cid, forget_history=owner is None)
    except LogError:
        store = open_log(data_dir)
        try:
            if store.owner_and_settings(cid) is not None:
                raise
        finally:
            store.close()


def delete_owned(data_dir: Path, cache_dir: Path, owner: str) -> int:
    """Every conversation of web user ``owner`` (``users rm``); how many conversations went."""
    store = open_log(data_dir)
    try:
        ids = [r["id"] for r in store.owned(owner, limit=1_000_000)]
    finally:
        store.close()
    for cid in ids:
        delete_one(data_dir, cache_dir, cid, owner)
    return len(ids)


def sweep_uploads(data_dir: Path, kept: Callable[[], set[str]]) -> None:
    """Remove the uploads of conversations no longer in the log (``logs rm`` from the CLI).
    The folders are listed before the ids are read: a conversation's row is written
    before its first file, so a folder made meanwhile is never taken for a deleted one's."""
    root = data_dir / UPLOADS
    if not root.is_dir():
        return
    folders = list(root.iterdir())
    ids = kept()
    for folder in folders:
        if folder.name not in ids:
            shutil.rmtree(folder, ignore_errors=True)
