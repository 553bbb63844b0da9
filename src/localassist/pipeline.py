"""The one-shot pipeline of ``ask``: a ``Question`` (what the command line gave) is
``prepare``d against the settings before any model is loaded (a template, a schema, the
conversation to continue, the documents or the index to answer from: every mistake
fails here, cheaply), then ``start``ed on an ``Assistant``.

    prepared = prepare(settings, Question(instruction="Hello"))
    assistant = for_settings(open_backend(prepared.settings), prepared.settings)
    turn, notices = start(assistant, prepared)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from localassist.engine.types import Message, ResponseFormat
from localassist.errors import UsageError

if TYPE_CHECKING:
    from localassist.assistant import Assistant, Turn
    from localassist.conversation.log_store import StoredConversation
    from localassist.documents.model import Document
    from localassist.documents.questions import Attached
    from localassist.retrieval import Retrieved
    from localassist.settings import Settings


@dataclass(frozen=True)
class Question:
    """What `ask` was given, before any model work: the instruction (arguments), the
    piped input, a prompt template and its parameters, a schema or grammar for the
    answer, plain completion, and the conversation to continue ("" = the latest)."""

    instruction: str = ""
    piped: str | None = None
    template: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    json_schema: str | None = None  # a path or inline JSON
    grammar_file: str | None = None
    raw: bool = False
    conversation: str | None = None
    files: tuple[str, ...] = ()  # documents to ask about (`ask -f`); "-" is the piped stdin
    piped_data: bytes | None = None  # stdin's bytes, undecoded, when "-" is one of the files (a PDF too)
    docs: str | None = None  # a folder index to answer from (`ask --docs NAME`)
    top_k: int = 5
    sync_docs: bool = False


@dataclass
class Prepared:
    """A question resolved against the settings: the message to send, what goes before
    it, and the settings with the template's options and the conversation's model."""

    settings: Settings
    user_text: str
    shots: list[Message]
    schema: dict[str, Any] | None
    grammar: str | None
    history: StoredConversation | None  # the conversation continued (-c/--cid)
    raw: bool
    retrieved: Retrieved | None = None  # what --docs found
    documents: list[Document] = field(default_factory=list)  # loaded -f files
    attached: Attached | None = None  # the -f files as fitted into the message, once `start` has done it


def prepare(settings: Settings, question: Question, *, loading: Callable[[str], Any] | None = None) -> Prepared:
    """Everything that can fail before the chat model is loaded fails here (``--docs``
    retrieves here too: ``loading`` wraps the embedding model's load)."""
    from localassist.conversation.prompt import build_user_text

    documents, question = _documents(question)
    if question.docs is not None:
        return _prepare_docs(settings, question, question.docs, loading)

    shots: list[Message] = []
    schema = None
    if question.template:
        from localassist.conversation.prompt_templates import load_template

        tpl = load_template(question.template, settings.paths.config_dir)
        settings = tpl.apply_options(settings)
        piped = question.piped if question.piped and question.piped.strip() else None
        system, shots, user_text = tpl.render(piped or question.instruction, question.params)
        if piped and question.instruction:
            user_text = f"{user_text}\n\n{question.instruction}"
        if system and settings.sources.get("system") != "flag":
            settings = replace(settings, system=system)
        schema = tpl.schema
    else:
        if question.params:
            raise UsageError("-p/--param goes with -t/--template")
        user_text = build_user_text(question.instruction, question.piped, settings.input_template)
    if question.json_schema and question.grammar_file:
        raise UsageError("--json-schema and --grammar cannot be combined")
    grammar = None
    if question.json_schema:
        from localassist.engine.structured import load_schema

        schema = load_schema(question.json_schema)
    if schema is None and question.grammar_file:
        from localassist.engine.structured import load_grammar

        grammar = load_grammar(question.grammar_file)
    history = None
    if question.conversation is not None:
        if question.raw:
            raise UsageError("--raw is a plain completion with no conversation: it cannot be combined with -c/--cid")
        from localassist.conversation.exchange_log import load_conversation

        history = load_conversation(settings.paths.data_dir, question.conversation or None)
        if settings.sources.get("system") != "flag" and history.system:
            settings = replace(settings, system=history.system)
        if settings.sources.get("model") == "default":
            settings = replace(settings, model=_still_available(history.model, settings))
    return Prepared(settings, user_text, shots, schema, grammar, history, question.raw, documents=documents)


def _documents(question: Question) -> tuple[list[Document], Question]:
    """Load the -f files (``-``: the piped stdin, which is then not the input too)."""
    if not question.files:
        return [], question
    from localassist.documents import STDIN, load, load_bytes

    if question.raw:
        raise UsageError("-f/--file needs a chat answer: it cannot be combined with --raw")
    if getattr(question, "docs", None) is not None:
        raise UsageError("-f/--file and --docs cannot be combined: ask about files, or about an index")
    if question.files.count(STDIN) > 1:
        raise UsageError("-f - (stdin) can be given only once")
    documents: list[Document] = []
    for path in question.files:
        if path == STDIN:
            data = question.piped_data if question.piped_data is not None else question.piped
            if data is None:
                raise UsageError("-f - reads a document from stdin, but nothing was piped")
            documents.append(load_bytes(data.encode("utf-8") if isinstance(data, str) else data, STDIN))
        else:
            documents.append(load(path))
    return documents, (replace(question, piped=None, piped_data=None) if STDIN in question.files else question)


def _prepare_docs(settings: Settings, question: Question, index: str, loading: Callable[[str], Any] | None) -> Prepared:
    from localassist.conversation.prompt import build_user_text
    from localassist.retrieval import retrieve

    clash = [
        flag
        for flag, given in (
            ("--raw", question.raw),
            ("-t/--template", question.template),
            ("--json-schema", question.json_schema),
            ("--grammar", question.grammar_file),
            ("-c/--cid", question.conversation is not None),
        )
        if given
    ]
    if clash:
        raise UsageError(f"--docs answers from an index; it cannot be combined with {', '.join(clash)}")
    text = build_user_text(question.instruction, question.piped, settings.input_template)
    found = retrieve(
        settings,
        index,
        text,
        k=question.top_k,
        sync=question.sync_docs,
        system=settings.system,
        loading=loading,
    )
    settings = replace(settings, system=found.messages[0].content)
    return Prepared(settings, found.messages[1].content, [], None, None, None, False, found)


def _still_available(model: str, settings: Settings) -> str | None:
    """The conversation's model if it can still be resolved here, else the default."""
    from localassist.errors import LocalAssistError
    from localassist.models.resolve import resolve_model

    try:
        resolve_model(model, settings)
    except LocalAssistError:
        return None
    return model


def start(assistant: Assistant, prepared: Prepared) -> tuple[Turn, list[str]]:
    """Begin answering a prepared question; returns the turn and the memory notices."""
    if prepared.raw:
        return assistant.complete(prepared.user_text, grammar=prepared.grammar), []
    history = prepared.history.messages() if prepared.history else []
    notices: list[str | None] = []
    if prepared.history:  # the conversation's documents first, as they were
        notices += assistant.restore_attachments(prepared.history.attachments)
    notices.append(assistant.restore(prepared.shots + history))  # few-shot examples, then the conversation
    if prepared.history and prepared.settings.sources.get("system") == "flag" and assistant.log is not None:
        assistant.log.system(prepared.settings.system)  # -s on a continued conversation: its new system prompt
    response_format = ResponseFormat("json_schema", prepared.schema) if prepared.schema is not None else None
    text = prepared.user_text
    if prepared.documents:  # whole if they fit, else the excerpts that match the question best
        from localassist.attachments import attach_to_question

        prepared.attached = attach_to_question(assistant, prepared.documents, text)
        text = prepared.attached.text
        notices.append(prepared.attached.notice)
    turn = assistant.send(text, response_format=response_format, grammar=prepared.grammar)
    notices.append(turn.notice)
    return turn, [n for n in notices if n]
