"""The application service: one model, one conversation, and every rule ask, chat,
documents and the server share — prompt templates and few-shot examples, a schema or
grammar for the answer, the conversation and its memory policy, the context budget,
and the log. Front ends build the input, render the events, and map errors; nothing
here reads or writes the terminal. (The one-shot ``ask`` pipeline is pipeline.py;
opening the model, backends.py.)

    assistant = Assistant(backend, SamplingParams(temperature=0))
    turn = assistant.send("Hello")
    for piece in turn.stream.text(): ...
    done = assistant.finish(turn)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localassist.conversation.exchange_log import ExchangeLog
from localassist.conversation.log_store import Attachment
from localassist.conversation.memory import Conversation, FitReport, MemoryPolicy, fit
from localassist.engine.types import Backend, ChatRequest, ChatStream, Done, Message, ResponseFormat, SamplingParams
from localassist.errors import UsageError
from localassist.settings import Settings, parse_value

if TYPE_CHECKING:
    from localassist.agent import Agent

SETTABLE = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "max_tokens", "seed", "system", "memory")
SUMMARY_INSTRUCTION = (
    "Summarize the conversation below in a few sentences. Keep names, numbers, decisions "
    "and open questions; write nothing else."
)


@dataclass
class Turn:
    """One exchange in progress: iterate ``stream`` (or ``stream.text()``), then
    ``Assistant.finish`` it. ``user`` is None for a plain completion."""

    user: Message | None
    stream: ChatStream
    notice: str | None = None
    regenerated: bool = False
    prompt: str = ""  # what is logged as the question: the message, or the completion's prompt

    def cancel(self) -> None:
        self.stream.cancel()


class Assistant:
    def __init__(
        self,
        backend: Backend,
        sampling: SamplingParams | None = None,
        system: str | None = None,
        memory: MemoryPolicy | None = None,
        context: str | None = None,
        explicit: frozenset[str] = frozenset(),
        log: ExchangeLog | None = None,
    ) -> None:
        """``explicit``: the parameters the user gave as flags (and ``system`` when -s was
        given); a template's options and system prompt never override those. ``context``:
        a document pinned in the system prompt (piped into chat), logged as ``stdin``."""
        self.backend = backend
        self.base_params = sampling or SamplingParams()
        self.explicit = set(explicit)
        self.memory = memory or MemoryPolicy()
        # documents pinned to the context (piped into chat, /file), in order; logged, resumed
        self.attachments: list[Attachment] = []
        self.rules: str | None = None
        self.log = log
        self.agent: Agent | None = None  # --tools: answers may call tools
        self.conversation = Conversation(self._system_with_context(system))
        self.user_system = system
        self.last: Done | None = None
        self.template: Any = None
        self.template_params: dict[str, str] = {}
        self._system_before_template: str | None = None
        if context:
            self.attach(Attachment("stdin", hashlib.sha256(context.encode("utf-8")).hexdigest(), "whole", context))
        else:
            self._refresh_used()

    # --- state

    @property
    def context(self) -> str | None:
        """The text of the attached documents, as the system prompt holds it."""
        text = None
        for attachment in self.attachments:
            text = f"{text.rstrip()}\n\n{attachment.text}" if text else attachment.text
        return text

    @property
    def attachment_limit(self) -> int:
        """Tokens the conversation may take with a new attachment: a quarter of the budget
        stays free for the turns to come."""
        return self.budget - max(64, self.budget // 4)

    def _system_with_context(self, system: str | None) -> str | None:
        parts = [system] if system else []
        if self.rules:
            parts.append(self.rules)
        if self.context:
            parts.append(f"The user shared this document as context:\n<context>\n{self.context.rstrip()}\n</context>")
        return "\n\n".join(parts) or None

    def set_rules(self, rules: str | None) -> None:
        """Instructions of a mode (answering from documents) added to the system prompt;
        not the user's system prompt, and not logged as one."""
        self.rules = rules
        self.conversation.system = self._system_with_context(self.user_system)
        self._refresh_used()

    @property
    def params(self) -> SamplingParams:
        """The effective sampling parameters: explicit flag or /set > template option > setting."""
        if self.template is None:
            return self.base_params
        changes = {
            key: parse_value(key, value, "config")
            for key, value in self.template.options.items()
            if key in SamplingParams.__dataclass_fields__ and key not in self.explicit
        }
        return replace(self.base_params, **changes)

    @property
    def n_ctx(self) -> int:
        return self.backend.n_ctx

    @property
    def budget(self) -> int:
        return self.backend.n_ctx - self.params.max_tokens

    def _refresh_used(self) -> None:
        """Tokens the conversation takes now. Templates such as Gemma's emit the system
        prompt with the first user turn, so an empty conversation is counted with an
        empty user turn to show what the system prompt and context really cost."""
        if self.conversation.turns:
            self.used_tokens = self.backend.count(self.conversation.messages())
        elif self.conversation.system:
            self.used_tokens = self.backend.count(self.conversation.messages([Message("user", "")]))
        else:
            self.used_tokens = 0

    def _summarize(self, messages: list[Message]) -> str:
        transcript = "\n\n".join(f"{m.role}: {m.content}" for m in messages)
        request = ChatRequest(
            messages=(Message("system", SUMMARY_INSTRUCTION), Message("user", transcript)),
            sampling=replace(self.params, temperature=0.2, max_tokens=min(256, self.params.max_tokens), stop=()),
        )
        return self.backend.chat(request).result().text.strip()

    def _fit(self, new: list[Message]) -> FitReport:
        return fit(
            self.conversation,
            new,
            self.budget,
            self.backend.count,
            self.memory,
            summarize=self._summarize,
            max_tokens=self.params.max_tokens,
            # a remote server that cannot count gets estimates: those may warn, never refuse
            exact=getattr(self.backend, "exact_tokens", True),
        )

    # --- turns

    def send(
        self,
        text: str,
        *,
        response_format: ResponseFormat | None = None,
        grammar: str | None = None,
        wrapped: str | None = None,
    ) -> Turn:
        """Start answering ``text`` (through the template, if one is on); the conversation is
        fitted to the context first. Errors (overflow, a bad grammar) are raised here.
        ``wrapped``: what this turn sends instead of ``text`` (retrieved context around the
        question); the conversation keeps ``text``, so old context does not pile up."""
        if self.template is not None:
            _, _, text = self.template.render(text, self.template_params)
        return self._answer(Message("user", text), response_format, grammar, wrapped=wrapped)

    def _answer(
        self,
        user: Message,
        response_format: ResponseFormat | None = None,
        grammar: str | None = None,
        regenerated: bool = False,
        wrapped: str | None = None,
    ) -> Turn:
        sent = replace(user, content=wrapped) if wrapped is not None else user
        report = self._fit([sent])
        request = ChatRequest(
            messages=tuple(self.conversation.messages([sent])),
            sampling=self.params,
            response_format=response_format,
            grammar=grammar,
        )
        stream = self.agent.stream(self.backend, request) if self.agent is not None else self.backend.chat(request)
        return Turn(user, stream, report.notice(), regenerated, user.content)

    def complete(self, prompt: str, *, grammar: str | None = None) -> Turn:
        """A plain completion of ``prompt``: no chat template, no conversation (the system
        prompt, if any, goes first as text)."""
        text = f"{self.user_system}\n\n{prompt}" if self.user_system else prompt
        stream = self.backend.chat(ChatRequest(prompt=text, sampling=self.params, grammar=grammar))
        return Turn(None, stream, prompt=prompt)

    def finish(self, turn: Turn) -> Done:
        """Record the exchange (in the conversation and the log) once its stream is over;
        a cancelled answer is kept, marked. Call it after a Ctrl-C too."""
        done = turn.stream.result()
        self.last = done
        if turn.user is None:
            if self.log is not None:
                self.log.exchange(turn.prompt, done, self.params.record(), self.user_system)
            self._log_snapshots(self.backend)
            return done
        answer = Message("assistant", done.text, interrupted=done.cancelled)
        self.conversation.turns += [turn.user, answer]
        self._refresh_used()
        if self.log is not None:
            calls = getattr(turn.stream, "records", ())  # the tool calls behind the answer (agent.AgentStream)
            self.log.exchange(turn.user.content, done, self.params.record(), self.user_system, turn.regenerated, calls)
        self._log_snapshots(self.backend)
        return done

    def _log_snapshots(self, backend: Backend) -> None:
        """Record with the conversation the KV snapshots ``backend`` saved since the last
        time (local engines; the memory policy's summaries included): each holds the
        conversation's every token, so deleting the conversation must delete them."""
        from localassist.engine.kv_snapshots import saved_by

        names = saved_by(backend)
        if names and self.log is not None:
            self.log.snapshots(names)

    def restore(self, messages: list[Message], *, fit: bool = True) -> str | None:
        """Reopen a conversation (``chat --resume``, ``ask -c``): its messages, fitted to
        the context under the memory policy; returns the policy's notice, if it acted.
        ``fit`` False: as they are, for the next ``send`` to fit (and announce) with its
        message (the web chat, which reopens the conversation on every turn)."""
        self.conversation.turns = list(messages)
        notice = self._fit([]).notice() if messages and fit else None
        self._refresh_used()
        return notice

    def attach(self, attachment: Attachment, *, limit: int | None = None, log: bool = True) -> bool:
        """Pin a document to the context (the system prompt, which the memory policy never
        drops) and log it with the conversation (``log``: False for one restored from the
        log). With ``limit``, only if the conversation then takes at most that many tokens:
        False, and nothing changed, if it would take more."""
        self.attachments.append(attachment)
        self._set_system(self.user_system)
        if limit is not None and self.used_tokens > limit:
            self.attachments.pop()
            self._set_system(self.user_system)
            return False
        if log and self.log is not None:
            self.log.attach(attachment)
        return True

    def restore_attachments(self, attachments: Sequence[Attachment]) -> list[str]:
        """Pin a resumed conversation's documents again, as logged (the text the model was
        given, not the file as it is now), each if it fits as ``/file`` would pin it; one
        line for each that does not, saying it was left out. On a server that cannot count
        (Ollama excepted) an estimate leaves nothing out: the line says it may not fit."""
        from localassist.engine.types import server_decides

        lines = []
        for attachment in attachments:
            before = self.used_tokens
            self.attach(attachment, log=False)
            if self.used_tokens <= self.attachment_limit:
                continue
            tokens = self.used_tokens - before  # what /file said it took
            if server_decides(self.backend):
                lines.append(
                    f"{attachment.name} ({attachment.mode}, about {tokens:,} tokens, estimated: the server cannot "
                    f"count them) may not fit the context now: attached again anyway; the server decides"
                )
                continue
            self.attachments.pop()
            self._set_system(self.user_system)
            lines.append(
                f"{attachment.name} was attached to this conversation ({attachment.mode}, {tokens:,} tokens) but "
                f"does not fit the context now ({max(0, self.attachment_limit - before):,} tokens left for "
                f"documents): it was left out"
            )
        return lines

    # --- commands

    def use_template(self, template: Any, params: dict[str, str] | None = None) -> None:
        """Send later messages through ``template`` (None: back to plain messages).

        Its options apply where the user gave no flag, its system prompt replaces the
        current one unless the user set one, and its few-shot examples open the
        conversation when it is still empty."""
        if template is not None:
            system, shots, _ = template.render("check", dict(params or {}))  # fails now on missing params
        if self.template is not None and "system" not in self.explicit:
            self._set_system(self._system_before_template)  # the previous template's prompt goes with it
        self.template, self.template_params = template, dict(params or {})
        if template is None:
            return
        self._system_before_template = self.user_system
        if system and "system" not in self.explicit:
            self._set_system(system)
        if not self.conversation.turns:
            self.conversation.turns = list(shots)
        self._refresh_used()

    def last_question(self) -> Message:
        if len(self.conversation.turns) < 2 or self.conversation.turns[-1].role != "assistant":
            raise UsageError("nothing to regenerate yet")
        return self.conversation.turns[-2]

    def regen(self, wrapped: str | None = None) -> Turn:
        """Drop the last answer and answer the same question again (the message as sent:
        a template is not applied twice)."""
        user = self.last_question()
        self.conversation.turns = self.conversation.turns[:-2]
        return self._answer(user, regenerated=True, wrapped=wrapped)

    def undo(self) -> Message:
        """Drop the last exchange; return its question."""
        exchanges = self.conversation.exchanges()
        if not exchanges:
            raise UsageError("nothing to undo")
        self.conversation.turns = [m for group in exchanges[:-1] for m in group]
        self._refresh_used()
        if self.log is not None:
            self.log.undo()
        return exchanges[-1][0]

    def clear(self) -> None:
        self.conversation = Conversation(self.conversation.system)
        self._refresh_used()
        if self.log is not None:
            self.log.clear()

    def set(self, name: str, value: str) -> object:
        """``/set``: validated exactly like the flag of the same name."""
        name = name.replace("-", "_")
        if name not in SETTABLE:
            raise UsageError(f"/set takes one of {', '.join(SETTABLE)} (got {name!r})")
        if name == "memory":
            self.memory = MemoryPolicy.parse(value)
            return self.memory
        if name == "system":
            self.set_system(value)
            return value
        parsed = parse_value(name, value, "chat")
        self.base_params = replace(self.base_params, **{name: parsed})
        self.explicit.add(name)  # typed by the user: a template's option no longer overrides it
        return parsed

    def set_system(self, text: str | None) -> None:
        """``/system``: the user's own system prompt, which a template does not override."""
        self.explicit.add("system")
        self._set_system(text)
        if self.log is not None:
            self.log.system(self.user_system)

    def _set_system(self, text: str | None) -> None:
        self.user_system = text or None
        self.conversation.system = self._system_with_context(self.user_system)
        self._refresh_used()

    def switch_backend(self, backend: Backend) -> None:
        old, self.backend = self.backend, backend
        self._log_snapshots(old)
        old.close()
        self._refresh_used()

    def show(self) -> dict[str, object]:
        info = self.backend.info()
        return {
            "model": info.model + (" (remote)" if info.remote else ""),
            "ctx": info.n_ctx,
            "context used": f"{self.used_tokens:,}/{info.n_ctx:,} tokens",
            "memory": str(self.memory),
            "system": self.user_system or "-",
            "exchanges": len(self.conversation.exchanges()),
            **{k: getattr(self.params, k) for k in SETTABLE if hasattr(self.params, k)},
        }

    # --- transcripts

    def save(self, path: Path) -> None:
        """Markdown for ``.md``, JSON (loadable with ``load``) for anything else; 0600."""
        from localassist.files import write_private_text

        if path.suffix.lower() in (".md", ".markdown"):
            text = self.markdown()
        else:
            text = json.dumps(
                {
                    "version": 1,
                    "model": self.backend.model_name,
                    "system": self.user_system,
                    "summary": self.conversation.summary,
                    "memory": str(self.memory),
                    "messages": [
                        {"role": m.role, "content": m.content, **({"interrupted": True} if m.interrupted else {})}
                        for m in self.conversation.turns
                    ],
                },
                indent=2,
                ensure_ascii=False,
            )
        try:
            write_private_text(path.expanduser(), text.rstrip("\n") + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None

    def load(self, path: Path) -> int:
        """Restore a JSON transcript written by ``save``; return how many messages."""
        from localassist.files import read_regular_text

        try:
            text = read_regular_text(path)  # a FIFO is refused, never waited on
        except FileNotFoundError:
            raise UsageError(f"{path} does not exist") from None
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path} is not a transcript saved with /save FILE.json ({exc})") from None
        try:
            data = json.loads(text)
            messages = [
                Message(str(m["role"]), str(m["content"]), interrupted=bool(m.get("interrupted")))
                for m in data["messages"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path} is not a transcript saved with /save FILE.json ({exc})") from None
        if any(m.role not in ("user", "assistant") for m in messages):
            raise UsageError(f"{path}: messages must have role user or assistant")
        system = data.get("system") if isinstance(data.get("system"), str) else None
        self.conversation = Conversation(self._system_with_context(system), data.get("summary"), messages)
        self.user_system = system
        self._refresh_used()
        if self.log is not None:
            self.log.replace_with(messages, self.backend.model_name, self.user_system)
        return len(messages)

    def markdown(self) -> str:
        from localassist.conversation.transcript import Block, markdown

        blocks = [Block("system", self.user_system)] if self.user_system else []
        if self.conversation.summary:
            blocks.append(Block("summary", self.conversation.summary))
        for m in self.conversation.turns:
            text = m.content.rstrip() + (" *(interrupted)*" if m.interrupted else "")
            blocks.append(Block("user" if m.role == "user" else "assistant", text))
        return markdown(f"Chat with {self.backend.model_name}", [], blocks)


def for_settings(backend: Backend, settings: Settings, **kwargs: Any) -> Assistant:
    """An assistant with the settings' sampling, system prompt and memory policy; the
    flags the user gave are explicit (a template does not override them)."""
    explicit = frozenset(k for k, source in settings.sources.items() if source == "flag")
    return Assistant(
        backend,
        SamplingParams.from_settings(settings),
        system=settings.system,
        memory=MemoryPolicy.parse(settings.memory),
        explicit=explicit,
        **kwargs,
    )
