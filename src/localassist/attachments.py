"""Documents given to an assistant: ``ask -f`` fits them into the question's message
(``attach_to_question``), chat's ``/file`` pins one to the conversation's context
(``pin``). How documents are cut, ranked and fitted is documents/questions.py's job,
which knows nothing of the assistant; this module supplies the assistant's budget,
template, tokenizer and conversation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from localassist.conversation.log_store import Attachment
from localassist.documents.model import Document
from localassist.documents.questions import (
    MARGIN,
    MIN_EXCERPT,
    Attached,
    attach,
    document_block,
    document_text,
    name,
)
from localassist.engine.types import Backend, Message, server_decides
from localassist.errors import DocumentBudgetError

if TYPE_CHECKING:
    from localassist.assistant import Assistant


def attach_to_question(assistant: Assistant, documents: Sequence[Document], question: str) -> Attached:
    """``ask -f``: fit ``documents`` into the message that will ask ``question`` of
    ``assistant`` (after its template, with its conversation, under its budget). On a
    server that cannot count they go whole: the turn's memory notice says if the estimate
    puts the prompt over the context, and the server decides."""

    def room(text: str) -> int:
        if assistant.template is not None:
            _, _, text = assistant.template.render(text, assistant.template_params)
        messages = assistant.conversation.messages([Message("user", text)])
        return assistant.budget - assistant.backend.count(messages)

    backend = assistant.backend
    return attach(
        documents,
        question,
        room,
        lambda text: len(backend.tokenize(text)),
        estimated=estimate_reason(backend),
        server_decides=server_decides(backend),
    )


def estimate_reason(backend: Backend) -> str | None:
    """None where ``backend`` counts tokens exactly; else what the messages say of the estimate."""
    if getattr(backend, "exact_tokens", True):
        return None
    if server_decides(backend):
        return "estimated: the server cannot count them"
    return "estimated: Ollama cannot count them, and would clip a prompt that does not fit"


def pin(assistant: Assistant, document: Document, summarize: Callable[[Document, int], tuple[str, str]]) -> str | None:
    """``/file``: pin ``document`` to the conversation's context (the system prompt, which
    memory never drops; the log keeps it, so a resumed conversation has it again). If it
    does not fit what is left, ``summarize(document, max_tokens)`` gives a summary that
    does, and its coverage line; the returned notice says so. A quarter of the budget
    stays free for the conversation. On a server that cannot count (Ollama excepted) the
    document is pinned whole, whatever the estimate says: the notice then says it may not
    fit, and the server decides."""
    limit = assistant.attachment_limit
    source = name(document.path)
    estimated = estimate_reason(assistant.backend)

    def try_pin(mode: str, block: str) -> bool:
        return assistant.attach(Attachment(source, document.sha256, mode, block), limit=limit)

    if server_decides(assistant.backend):
        before = assistant.used_tokens
        assistant.attach(Attachment(source, document.sha256, "whole", document_block(source, document_text(document))))
        if assistant.used_tokens <= limit:
            return None
        return (
            f"attached {source} whole: about {assistant.used_tokens - before:,} tokens ({estimated}), more than "
            f"the {max(0, limit - before):,} the context seems to have left; the server decides"
        )
    if try_pin("whole", document_block(source, document_text(document))):
        return None
    tokens = len(assistant.backend.tokenize(document_text(document)))
    left = (
        limit
        - assistant.used_tokens
        - len(assistant.backend.tokenize(document_block(source + " (summary)", "")))
        - MARGIN
    )
    if left < MIN_EXCERPT:
        raise DocumentBudgetError(f"no room left to attach {source}: /clear the conversation, or raise --ctx")
    summary, coverage = summarize(document, left)
    if not try_pin("summary", document_block(f"{source} (summary)", summary)):
        raise DocumentBudgetError(f"even a summary of {source} does not fit what is left of the context")
    if estimated:
        return (
            f"{source} is about {tokens:,} tokens ({estimated}), more than the {left:,} left: attached a summary "
            f"of it ({coverage})"
        )
    return f"{source} is {tokens:,} tokens, more than the {left:,} left: attached a summary of it ({coverage})"
