"""Files the web chat takes: attached to a conversation as chat's ``/file`` pins them (whole
if they fit, else a summary that does), and summarized on request with the coverage
ledger and the pages or lines each part came from.

An uploaded file is kept, 0600 in a 0700 folder of its conversation (``web-files/<id>``),
only so that Summarise can read its pages again; it goes with the conversation.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localassist.errors import DocumentError
from localassist.web.conversations import uploads_dir

if TYPE_CHECKING:
    from localassist.conversation.log_store import Attachment, StoredConversation
    from localassist.documents.model import Document
    from localassist.documents.summarize import SummaryRun
    from localassist.engine.types import Backend, ChatStream, SamplingParams
    from localassist.web.turns import ChatSettings


def _save(data_dir: Path, cid: str, data: bytes) -> str:
    from localassist.files import write_private_bytes

    digest = hashlib.sha256(data).hexdigest()
    write_private_bytes(uploads_dir(data_dir, cid) / digest, data)
    return digest


def attach(
    backend: Backend,
    base: SamplingParams,
    chat: ChatSettings,
    conversation: StoredConversation | None,
    name: str,
    data: bytes,
    *,
    conversation_id: str,
    owner: str | None,
    data_dir: Path,
    config_dir: Path,
    stopping: threading.Event | None = None,
) -> tuple[int, str]:
    """Pin the file to the conversation (``conversation`` None: a new one, made under
    ``conversation_id`` once the file is pinned), then log it and keep the file; nothing
    is written when it cannot be pinned. Returns (its attachment number, the notice)."""
    from localassist.assistant import Assistant
    from localassist.attachments import pin
    from localassist.conversation.exchange_log import open_log
    from localassist.conversation.memory import MemoryPolicy
    from localassist.documents import load_bytes

    document = load_bytes(data, name)
    assistant = Assistant(
        backend, chat.sampling(base), system=chat.system or None, memory=MemoryPolicy.parse(chat.memory)
    )
    if conversation is not None:
        assistant.restore_attachments(conversation.attachments)
        assistant.restore(conversation.messages())

    def summarize_to_fit(doc: Document, max_tokens: int) -> tuple[str, str]:
        from localassist.documents.summarize import Summarizer, SummaryOptions, SummaryTemplates

        summarizer = Summarizer(
            backend,
            SummaryTemplates.load(config_dir),
            assistant.params,
            options=SummaryOptions(max_tokens=max_tokens),
            on_progress=_until(stopping),
        )
        plan = summarizer.plan([doc])
        done = summarizer.start(plan).finish()
        return done.text.strip(), plan.ledger.line()

    before = assistant.used_tokens
    notice = pin(assistant, document, summarize_to_fit)
    if notice is None:
        used = assistant.used_tokens
        notice = f"attached {name} ({used - before:,} tokens; {used:,}/{assistant.n_ctx:,} in use)"
    store = open_log(data_dir)
    try:
        if conversation is None:
            store.create_conversation(name, chat.model, chat.system or None, owner, chat.as_dict(), cid=conversation_id)
        store.log_attachment(conversation_id, assistant.attachments[-1])
        number = len(store.conversation(conversation_id).attachments) - 1
    finally:
        store.close()
    _save(data_dir, conversation_id, data)
    return number, "; ".join([*document.warnings, notice])


@dataclass
class Summary:
    run: SummaryRun
    conversation_id: str
    prompt: str
    params: dict[str, Any]
    notices: list[str] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stream(self) -> ChatStream:
        return self.run.stream


def start_summary(
    backend: Backend,
    base: SamplingParams,
    chat: ChatSettings,
    conversation: StoredConversation,
    attachment: Attachment,
    *,
    data_dir: Path,
    config_dir: Path,
    stopping: threading.Event | None = None,
) -> Summary:
    """Plan and map the attached file's summary (here, off the loop); the final call is
    ``Summary.stream``, run by the model's worker."""
    from localassist.documents import load_bytes
    from localassist.documents.summarize import Summarizer, SummaryTemplates

    path = uploads_dir(data_dir, conversation.id) / attachment.sha256
    try:
        data = path.read_bytes()
    except OSError:
        raise DocumentError(
            f"{attachment.name} was attached from a terminal, not uploaded: summarize it there"
        ) from None
    document = load_bytes(data, attachment.name)
    sampling = chat.sampling(base)
    summarizer = Summarizer(backend, SummaryTemplates.load(config_dir), sampling, on_progress=_until(stopping))
    plan = summarizer.plan([document])
    run = summarizer.start(plan)
    sources = []
    for n, section in enumerate(plan.sections, start=1):
        first, last = section.chunks[0].locator, section.chunks[-1].locator
        sources.append(
            {
                "n": n,
                "file": attachment.name,
                "page": first.page_label or first.page,
                "lines": _lines(first.line_start, last.line_end),
                "label": section.label,
                "text": (section.notes or section.text)[:600],
            }
        )
    notices = [*summarizer.warnings, plan.ledger.line()]
    params = {**sampling.record(), "summarize": attachment.name}  # marks the exchange as a summary
    return Summary(run, conversation.id, f"Summarise {attachment.name}", params, notices, sources)


def log_summary(summary: Summary, data_dir: Path) -> tuple[int | None, str | None]:
    """Record the summary (a stopped one too, marked) as an exchange of its conversation:
    (its id, None), or (None, why it could not be written)."""
    from localassist.conversation.exchange_log import open_log
    from localassist.errors import LocalAssistError

    done = summary.run.finish()
    try:
        store = open_log(data_dir)
        try:
            logged = store.log_exchange(
                summary.conversation_id, summary.prompt, done, summary.params, sources=summary.sources
            )
        finally:
            store.close()
    except LocalAssistError as exc:
        return None, str(exc)
    return logged.exchange_id, None


def uploaded(data_dir: Path, conversation: StoredConversation) -> list[Document]:
    """The conversation's attached files that were uploaded here (those pinned from a
    terminal have no file kept), loaded again for their pages and lines."""
    out = []
    for attachment in conversation.attachments:
        path = uploads_dir(data_dir, conversation.id) / attachment.sha256
        try:
            out.append(_parsed(str(path), path.stat().st_mtime_ns, attachment.name))
        except (OSError, DocumentError):
            continue
    return out


@functools.lru_cache(maxsize=16)
def _parsed(path: str, mtime_ns: int, name: str) -> Document:
    """A kept upload, parsed once (a PDF takes a while): every turn of its conversation cites it."""
    from localassist.documents import load_bytes

    return load_bytes(Path(path).read_bytes(), name)


def cited(documents: list[Document], question: str, backend: Backend) -> list[dict[str, Any]]:
    """The parts of the attached documents that match the question best, as the footnotes
    under its answer (the model was given the documents whole or summarized: these say
    where in them the answer is most likely from, as ``ask -f`` names its sources)."""
    from localassist.documents.questions import best_chunks

    out = []
    for n, (chunk, _score) in enumerate(best_chunks(documents, question, lambda t: len(backend.tokenize(t))), 1):
        loc = chunk.locator
        out.append(
            {
                "n": n,
                "file": loc.path,
                "page": loc.page_label or loc.page,
                "lines": _lines(loc.line_start, loc.line_end),
                "label": str(loc),
                "text": chunk.text[:600],
            }
        )
    return out


def _until(stopping: threading.Event | None) -> Callable[[Any], None] | None:
    """A summarizer's progress callback that stops it at its next token once ``stopping``
    is set (the summarizer cancels its call and keeps the notes it made, as on Ctrl-C)."""
    if stopping is None:
        return None

    def check(_progress: Any) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt

    return check


def _lines(start: int | None, end: int | None) -> str | None:
    if start is None:
        return None
    return str(start) if end in (None, start) else f"{start}-{end}"
