"""One web chat turn, on the same ``Assistant`` as ``chat``: the conversation is read back
from the log (its documents pinned again, fitted under its memory policy, which announces
what it dropped or summarized as the REPL does), the message is sent, regenerated or
edited, and the exchange is logged when the answer ends (a stopped one too, marked).

Nothing here knows HTTP: ``web/routes.py`` runs ``start`` off the event loop, streams the
turn's events from the model's worker, and calls ``finish`` at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localassist.errors import UsageError

if TYPE_CHECKING:
    from localassist.assistant import Assistant, Turn
    from localassist.conversation.exchange_log import ExchangeLog
    from localassist.conversation.log_store import StoredConversation
    from localassist.documents.model import Document
    from localassist.engine.types import Backend, Done, SamplingParams
    from localassist.tools.registry import ToolRegistry
    from localassist.web.state import SharedSearch

ACTIONS = ("send", "regenerate", "edit")
MEMORY_POLICIES = ("buffer", "window:4", "window:8", "window:16", "summary")
MAX_MESSAGE = 100_000  # characters: a message longer than this is refused, never cut


@dataclass(frozen=True)
class ChatSettings:
    """The sidebar's settings of one conversation; the same names, ranges and defaults as
    the CLI's flags (``settings.parse_value`` checks each)."""

    model: str
    temperature: float
    top_k: int
    top_p: float
    max_tokens: int
    system: str = ""
    memory: str = "buffer"
    index: str | None = None
    tools: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tools"] = list(self.tools)
        return out

    def changed(self, raw: Any, models: list[str], indexes: list[str], tools: tuple[str, ...]) -> ChatSettings:
        """These settings with ``raw``'s (what the page sent) checked and applied; unknown
        keys are ignored, a value out of range is a UsageError naming the range."""
        from localassist.settings import parse_value

        if raw is None:
            return self
        if not isinstance(raw, dict):
            raise UsageError("settings must be an object")
        new: dict[str, Any] = {}
        for key in ("temperature", "top_k", "top_p", "max_tokens"):
            if key in raw and raw[key] is not None:
                if isinstance(raw[key], bool) or not isinstance(raw[key], (int, float, str)):
                    raise UsageError(f"{key} must be a number")
                new[key] = parse_value(key, raw[key], "web")
        if "model" in raw and raw["model"] is not None:
            if raw["model"] not in models:
                wanted = str(raw["model"])[:80]
                raise UsageError(f"model {wanted!r} is not served here; choose one of {', '.join(models)}")
            new["model"] = raw["model"]
        if "system" in raw:
            system = raw["system"] or ""
            if not isinstance(system, str) or len(system) > MAX_MESSAGE:
                raise UsageError("system must be text of at most 100,000 characters")
            new["system"] = system
        if "memory" in raw and raw["memory"] is not None:
            from localassist.conversation.memory import MemoryPolicy

            new["memory"] = str(MemoryPolicy.parse(str(raw["memory"])))
        if "index" in raw:
            index = raw["index"] or None
            if index is not None and index not in indexes:
                raise UsageError(f"no index {str(index)[:80]!r} on this server")
            new["index"] = index
        if "tools" in raw:
            chosen = raw["tools"] or []
            if not isinstance(chosen, list) or any(t not in tools for t in chosen):
                allowed = ", ".join(tools) or "none"
                raise UsageError(f"tools must be a list of the tools this server allows ({allowed})")
            new["tools"] = tuple(dict.fromkeys(chosen))
        return replace(self, **new)

    def sampling(self, base: SamplingParams) -> SamplingParams:
        return replace(
            base, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, max_tokens=self.max_tokens
        )


def defaults(settings: Any, model: str) -> ChatSettings:
    return ChatSettings(
        model=model,
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        max_tokens=settings.max_tokens,
        system=settings.system or "",
        memory=settings.memory,
    )


@dataclass
class WebTurn:
    """A turn begun: nothing of it is in the log until ``finish``, which runs only for an
    answer that really started (a turn refused by the queue, or given up while it waited,
    leaves no trace: no conversation made, no settings saved, no exchange undone)."""

    assistant: Assistant
    turn: Turn
    log: ExchangeLog
    conversation_id: str
    notices: list[str] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    create: dict[str, Any] | None = None  # a new conversation: made at finish
    settings: dict[str, Any] | None = None  # an existing one's settings: saved at finish
    undone: int | None = None  # the exchange an edit replaces: marked at finish
    log_errors: list[str] = field(default_factory=list)


def start(
    backend: Backend,
    base: SamplingParams,
    chat: ChatSettings,
    conversation: StoredConversation | None,
    action: str,
    message: str,
    *,
    conversation_id: str,
    owner: str | None,
    data_dir: Path,
    docs: SharedSearch | None = None,
    registry: ToolRegistry | None = None,
    tool_roots: tuple[Path, ...] = (),
    attached: list[Document] | None = None,
) -> WebTurn | list[str]:
    """Begin the turn (off the event loop: it counts tokens, may summarize old turns and
    search an index); nothing is written yet. ``conversation`` None: a new one, to be
    made under ``conversation_id``. Returns the turn, or, when the index has nothing
    relevant enough, the notices that say so (no model is asked, as in the REPL)."""
    from localassist.assistant import Assistant
    from localassist.conversation.exchange_log import ExchangeLog
    from localassist.conversation.memory import MemoryPolicy

    if action not in ACTIONS:
        raise UsageError(f"action must be one of {', '.join(ACTIONS)}")
    if action != "regenerate" and (not message.strip() or len(message) > MAX_MESSAGE):
        raise UsageError("a message is 1 to 100,000 characters")
    log_errors: list[str] = []
    log = ExchangeLog(data_dir, history=conversation, on_error=log_errors.append)
    assistant = Assistant(
        backend, chat.sampling(base), system=chat.system or None, memory=MemoryPolicy.parse(chat.memory), log=log
    )
    notices: list[str] = []
    if conversation is not None:
        notices += assistant.restore_attachments(conversation.attachments)
        # reopened on every turn (the server keeps no session): fitted once, with the new
        # message, so the turn announces (once) what of the history its prompt leaves out
        assistant.restore(conversation.messages(), fit=False)
    if registry is not None and len(registry.names):
        from localassist.agent import Agent
        from localassist.tools.base import ToolContext

        # no approver: exec-class tools are refused, and the server offers none of them
        assistant.agent = Agent(registry, ToolContext(roots=tool_roots))
    undone = None
    if action == "regenerate":
        question = assistant.last_question().content
    else:
        if action == "edit":  # taken off here, marked undone in the log only at finish
            assistant.log = None
            assistant.undo()
            assistant.log = log
            undone = log.ids.pop() if log.ids else None
        question = message
    wrapped, sources = None, []
    if docs is not None:
        from localassist.rag import SYSTEM_PROMPT, user_prompt

        hits, found_notices, found = docs.search(question)
        notices += found_notices
        if not found:
            from localassist.rag import NOT_FOUND

            return [*notices, f"{NOT_FOUND} (nothing in {docs.name} is relevant enough; no model was asked)"]
        assistant.set_rules(SYSTEM_PROMPT)
        wrapped = user_prompt(question, hits)
        sources = [source(hit) for hit in hits]
    elif attached:  # a question on attached files: where in them the answer most likely is
        from localassist.web.documents import cited

        sources = cited(attached, question, backend)
    turn = assistant.regen(wrapped=wrapped) if action == "regenerate" else assistant.send(question, wrapped=wrapped)
    if turn.notice:
        notices.append(turn.notice)
    log.sources = sources
    web = WebTurn(assistant, turn, log, conversation_id, notices, sources, undone=undone, log_errors=log_errors)
    if conversation is None:
        web.create = {"title": message, "model": chat.model, "system": chat.system or None, "owner": owner}
    web.settings = chat.as_dict()
    return web


def finish(web: WebTurn) -> tuple[Done, int | None]:
    """Log the exchange, once its stream has ended (a stopped one too, marked): make its
    conversation if it is new, save its settings, mark the exchange an edit replaced.
    What cannot be written is in ``web.log_errors``; the answer is never lost for it.
    Returns the answer and its id in the log."""
    from localassist.conversation.exchange_log import open_log
    from localassist.errors import LocalAssistError

    try:
        store = open_log(web.log.data_dir)
        try:
            if web.create is not None:
                c = web.create
                store.create_conversation(
                    c["title"], c["model"], c["system"], c["owner"], web.settings or {}, cid=web.conversation_id
                )
            elif web.settings is not None:
                store.update_conversation(web.conversation_id, settings=web.settings)
            if web.undone is not None:
                store.set_status([web.undone], "undone")
        finally:
            store.close()
        web.log.conversation_id = web.conversation_id
    except LocalAssistError as exc:
        web.log_errors.append(str(exc))
        web.log.enabled = False  # not half a conversation: the answer is shown, and said to be unlogged
    # Assistant.finish would also count the conversation's tokens with the model: not here,
    # off the model's worker (and possibly while the server frees the model at shutdown).
    done = web.turn.stream.result()
    user, assistant = web.turn.user, web.assistant
    if user is not None:
        calls = getattr(web.turn.stream, "records", ())  # the tool calls behind the answer (agent.AgentStream)
        web.log.exchange(
            user.content, done, assistant.params.record(), assistant.user_system, web.turn.regenerated, calls
        )
    logged = web.log.enabled and not web.log_errors and web.log.ids and web.log.ids[-1]
    return done, logged or None


def source(hit: Any) -> dict[str, Any]:
    """One footnote under an answer from an index: [n] file p.3 lines 10-14, and its text."""
    from localassist.rag.answer import cite_label

    loc = hit.locator
    lines = None
    if loc.line_start is not None:
        lines = str(loc.line_start) if loc.line_end in (None, loc.line_start) else f"{loc.line_start}-{loc.line_end}"
    return {
        "n": hit.rank,
        "file": hit.path,
        "page": loc.page_label or loc.page,
        "lines": lines,
        "label": cite_label(loc),
        "text": hit.text[:600],
    }
