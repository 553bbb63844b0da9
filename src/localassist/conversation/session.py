"""A chat session: one backend, one conversation, a memory policy, and the commands
the REPL offers on top (set, clear, regen, undo, save, load, model switch).

The REPL in ``cli/chat.py`` only reads lines and renders; every rule lives here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from localassist.conversation.memory import Conversation, FitReport, MemoryPolicy, fit
from localassist.engine.types import Backend, Completion, Message, SamplingParams, TextStream
from localassist.errors import UsageError
from localassist.settings import parse_value

SETTABLE = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "max_tokens", "seed", "system", "memory")
SUMMARY_INSTRUCTION = (
    "Summarize the conversation below in a few sentences. Keep names, numbers, decisions "
    "and open questions; write nothing else."
)


@dataclass
class Turn:
    """One exchange in progress: stream it, then ``finish`` it."""

    user: Message
    stream: TextStream
    notice: str | None


class ChatSession:
    def __init__(
        self,
        backend: Backend,
        params: SamplingParams,
        system: str | None = None,
        memory: MemoryPolicy | None = None,
        context: str | None = None,
        explicit: frozenset[str] = frozenset(),
    ) -> None:
        """``explicit``: the parameters the user gave as flags (and ``system`` when -s was
        given); a template's options and system prompt never override those."""
        self.backend = backend
        self.base_params = params
        self.explicit = set(explicit)
        self.memory = memory or MemoryPolicy()
        self.context = context
        self.conversation = Conversation(self._system_with_context(system))
        self.user_system = system
        self.last: Completion | None = None
        self.template = None
        self.template_params: dict[str, str] = {}
        self._system_before_template: str | None = None
        self._refresh_used()

    def _system_with_context(self, system: str | None) -> str | None:
        if not self.context:
            return system
        document = f"The user shared this document as context:\n<context>\n{self.context.rstrip()}\n</context>"
        return f"{system}\n\n{document}" if system else document

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

    def _refresh_used(self) -> None:
        """Tokens the conversation takes now. Templates such as Gemma's emit the system
        prompt with the first user turn, so an empty conversation is counted with an
        empty user turn to show what the system prompt and context really cost."""
        if self.conversation.turns:
            self.used_tokens = self.backend.count_tokens(self.conversation.messages())
        elif self.conversation.system:
            self.used_tokens = self.backend.count_tokens(self.conversation.messages([Message("user", "")]))
        else:
            self.used_tokens = 0

    @property
    def budget(self) -> int:
        return self.backend.n_ctx - self.params.max_tokens

    def _summarize(self, messages: list[Message]) -> str:
        transcript = "\n\n".join(f"{m.role}: {m.content}" for m in messages)
        stream = self.backend.stream(
            [Message("system", SUMMARY_INSTRUCTION), Message("user", transcript)],
            replace(self.params, temperature=0.2, max_tokens=min(256, self.params.max_tokens), stop=()),
        )
        return "".join(stream).strip()

    def _fit(self, new: list[Message]) -> FitReport:
        return fit(
            self.conversation,
            new,
            self.budget,
            self.backend.count_tokens,
            self.memory,
            summarize=self._summarize,
            max_tokens=self.params.max_tokens,
        )

    def use_template(self, template, params: dict[str, str] | None = None) -> None:
        """Send later messages through ``template`` (None: back to plain messages).

        Its system prompt replaces the current one, its sampling options apply, and its
        few-shot examples open the conversation when it is still empty."""
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

    def ask(self, text: str) -> Turn:
        """Start generating the answer to ``text`` (through the template, if one is on);
        the conversation is trimmed first if needed."""
        if self.template is not None:
            _, _, text = self.template.render(text, self.template_params)
        return self._answer(Message("user", text))

    def _answer(self, user: Message) -> Turn:
        report = self._fit([user])
        stream = self.backend.stream(self.conversation.messages([user]), self.params)
        return Turn(user, stream, report.notice())

    def restore(self, messages: list[Message]) -> str | None:
        """Reopen a conversation (``chat --resume``, ``ask -c``): its messages, fitted to
        the context under the memory policy; returns the policy's notice, if it acted."""
        self.conversation.turns = list(messages)
        notice = self._fit([]).notice() if messages else None
        self._refresh_used()
        return notice

    def finish(self, turn: Turn, interrupted: bool = False) -> Completion:
        """Record the exchange; an interrupted answer is kept, marked as such."""
        completion = turn.stream.completion()
        if interrupted:
            completion = replace(completion, finish_reason="interrupted")
        answer = Message("assistant", completion.text, interrupted=completion.finish_reason == "interrupted")
        self.conversation.turns += [turn.user, answer]
        self.last = completion
        self._refresh_used()
        return completion

    # --- commands

    def regen(self) -> Turn:
        """Drop the last answer and answer the same question again."""
        if len(self.conversation.turns) < 2 or self.conversation.turns[-1].role != "assistant":
            raise UsageError("nothing to regenerate yet")
        user = self.conversation.turns[-2]
        self.conversation.turns = self.conversation.turns[:-2]
        return self._answer(user)  # the message as sent: a template is not applied twice

    def undo(self) -> Message:
        """Drop the last exchange; return its question."""
        exchanges = self.conversation.exchanges()
        if not exchanges:
            raise UsageError("nothing to undo")
        self.conversation.turns = [m for group in exchanges[:-1] for m in group]
        self._refresh_used()
        return exchanges[-1][0]

    def clear(self) -> None:
        self.conversation = Conversation(self.conversation.system)
        self._refresh_used()

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

    def _set_system(self, text: str | None) -> None:
        self.user_system = text or None
        self.conversation.system = self._system_with_context(self.user_system)
        self._refresh_used()

    def switch_backend(self, backend: Backend) -> None:
        old, self.backend = self.backend, backend
        old.close()
        self._refresh_used()

    def show(self) -> dict[str, object]:
        return {
            "model": self.backend.model_name,
            "ctx": self.backend.n_ctx,
            "context used": f"{self.used_tokens:,}/{self.backend.n_ctx:,} tokens",
            "memory": str(self.memory),
            "system": self.user_system or "-",
            "exchanges": len(self.conversation.exchanges()),
            **{k: getattr(self.params, k) for k in SETTABLE if hasattr(self.params, k)},
        }

    # --- transcripts

    def save(self, path: Path) -> None:
        """Markdown for ``.md``, JSON (loadable with ``load``) for anything else."""
        if path.suffix.lower() in (".md", ".markdown"):
            text = transcript_markdown(self)
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
        from localassist.files import write_private_text

        try:
            write_private_text(path, text + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None

    def load(self, path: Path) -> int:
        """Restore a JSON transcript written by ``save``; return how many messages."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            messages = [
                Message(m["role"], m["content"], interrupted=bool(m.get("interrupted"))) for m in data["messages"]
            ]
        except FileNotFoundError:
            raise UsageError(f"{path} does not exist") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path} is not a transcript saved with /save FILE.json ({exc})") from None
        if any(m.role not in ("user", "assistant") for m in messages):
            raise UsageError(f"{path}: messages must have role user or assistant")
        self.conversation = Conversation(self._system_with_context(data.get("system")), data.get("summary"), messages)
        self.user_system = data.get("system")
        self._refresh_used()
        return len(messages)


def transcript_markdown(session: ChatSession) -> str:
    lines = [f"# Chat with {session.backend.model_name}", ""]
    if session.user_system:
        lines += [f"**System:** {session.user_system}", ""]
    if session.conversation.summary:
        lines += [f"**Summary of earlier turns:** {session.conversation.summary}", ""]
    for m in session.conversation.turns:
        who = "You" if m.role == "user" else "Assistant"
        lines += [f"## {who}", "", m.content.rstrip() + (" *(interrupted)*" if m.interrupted else ""), ""]
    return "\n".join(lines).rstrip()
