"""Chat templates: the GGUF's own ``tokenizer.chat_template`` first, else a fallback.

Fallbacks are Jinja templates rendered by the same engine as GGUF templates, so a
model without a template (the starter model has none) still gets the turn format
its family was trained on.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from localassist.engine.types import Message, ToolCall
from localassist.errors import BackendError, UsageError

GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_prefix = messages[0]['content'] | trim + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set first_prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ (first_prefix if loop.first else '') + (m['content'] | trim) }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
PHI3 = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class ChatTemplate:
    name: str  # "gguf" when the model's own template is used
    source: str  # Jinja text
    stops: tuple[str, ...] = ()


BUILTIN: dict[str, ChatTemplate] = {
    "gemma": ChatTemplate("gemma", GEMMA, ("<end_of_turn>",)),
    "chatml": ChatTemplate("chatml", CHATML, ("<|im_end|>",)),
    "llama3": ChatTemplate("llama3", LLAMA3, ("<|eot_id|>",)),
    "phi3": ChatTemplate("phi3", PHI3, ("<|end|>",)),
}
_BY_ARCH = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "llama": "llama3",
    "phi3": "phi3",
    "qwen2": "chatml",
    "qwen3": "chatml",
    "qwen2moe": "chatml",
}


def fallback_name(architecture: str) -> str:
    """The built-in format for a model family (what ``--chat-format`` should name)."""
    return _BY_ARCH.get(architecture, "chatml")


_PROBE, _PROBE_RESULT = "localassist_probe_tool", "localassist probe result"


def _template_dict(message: Message) -> dict[str, Any]:
    """A message as chat templates take it: OpenAI's shape, but a call's arguments as an
    object (templates write them with ``| tojson``; a JSON string would be quoted twice)."""
    out = message.as_openai()
    for call in out.get("tool_calls", ()):
        with contextlib.suppress(json.JSONDecodeError):  # not JSON: the template gets the text as it is
            call["function"]["arguments"] = json.loads(call["function"]["arguments"] or "{}")
    return out


# Private-use characters: a rendered template never contains them by itself.
_MARK = re.compile("\ue000(\\d+)\ue001")


def content_mark(index: int) -> str:
    """What message ``index``'s content is replaced by to find where the template puts it."""
    return f"\ue000{index}\ue001"


def split_marked(marked: str, contents: list[str]) -> list[tuple[str, bool]]:
    """Cut a template rendered with :func:`content_mark` placeholders into
    ``(text, is_content)`` pieces, the placeholders replaced by ``contents``.

    Template pieces may hold control tokens; content pieces are the user's (or the
    model's, or a document's) text and must be tokenized as plain text."""
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for match in _MARK.finditer(marked):
        if match.start() > pos:
            pieces.append((marked[pos : match.start()], False))
        pieces.append((contents[int(match.group(1))], True))
        pos = match.end()
    if pos < len(marked):
        pieces.append((marked[pos:], False))
    return pieces


def choose_template(gguf_template: str | None, architecture: str, override: str | None) -> ChatTemplate:
    """``override`` (--chat-format) > the GGUF's template > the family's fallback."""
    if override and override != "auto":
        if override.endswith((".jinja", ".j2")):
            return _template_file(override)
        if override == "gguf":
            if not gguf_template:
                raise UsageError("--chat-format gguf: this model file has no chat template")
            return ChatTemplate("gguf", gguf_template)
        if override not in BUILTIN:
            names = ", ".join(["auto", "gguf", *BUILTIN, "or a FILE.jinja"])
            raise UsageError(f"--chat-format must be one of {names} (got {override!r})")
        return BUILTIN[override]
    if gguf_template:
        return ChatTemplate("gguf", gguf_template)
    return BUILTIN[_BY_ARCH.get(architecture, "chatml")]


def _template_file(path: str) -> ChatTemplate:
    """``--chat-format FILE.jinja``: a model's template from its tokenizer_config.json, say."""
    from pathlib import Path

    from localassist.files import read_regular_text

    try:
        source = read_regular_text(Path(path).expanduser())  # a FIFO is refused, never waited on
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--chat-format {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if not source.strip():
        raise UsageError(f"--chat-format {path}: the file is empty")
    return ChatTemplate(f"file {Path(path).name}", source)


class TemplateRenderer:
    """Renders messages with one chat template (Jinja, as llama-cpp-python does), folds a
    system prompt into the first user turn for templates that refuse one, and says which
    parts of the result are the template's markup and which are message content."""

    def __init__(self, template: ChatTemplate, architecture: str, bos_text: str, eos_text: str) -> None:
        self.template = template
        self.architecture = architecture
        self._bos_text, self._eos_text = bos_text, eos_text
        self._formatter: Any = None
        self._folds_system: bool | None = None
        self._supports_tools: bool | None = None

    def _apply(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> str:
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=self.template.source, eos_token=self._eos_text, bos_token=self._bos_text
            )
        try:
            as_dicts = [_template_dict(m) for m in messages]
            return self._formatter(messages=as_dicts, tools=list(tools) if tools else None).prompt
        except Exception as exc:  # jinja2 raises many kinds; the template is data from the file
            suggestion = fallback_name(self.architecture)
            raise BackendError(
                f"the chat template ({self.template.name}) failed: {exc}; "
                f"try --chat-format {suggestion if suggestion != self.template.name else 'chatml'}, or --raw"
            ) from None

    @property
    def supports_tools(self) -> bool:
        """Whether the template renders ``tools`` and the tool role (Qwen2.5, Llama 3.1,
        Hermes, Mistral do; most small models' templates ignore both), found once by
        rendering a probe: a tool's name and a tool result must both reach the prompt."""
        if self._supports_tools is None:
            probe_tool = {"type": "function", "function": {"name": _PROBE, "description": "", "parameters": {}}}
            call = ToolCall("probe1234", _PROBE, "{}")
            try:
                offered = self._apply([Message("user", "u")], [probe_tool])
                answered = self._apply(
                    [
                        Message("user", "u"),
                        Message("assistant", "", tool_calls=(call,)),
                        Message("tool", _PROBE_RESULT, tool_call_id=call.id, name=_PROBE),
                    ],
                    [probe_tool],
                )
            except BackendError:
                self._supports_tools = False
            else:
                self._supports_tools = _PROBE in offered and _PROBE_RESULT in answered
        return self._supports_tools

    @property
    def folds_system(self) -> bool:
        """Whether the template refuses a system message (Gemma 2's raises), found once by
        rendering a probe; such templates get the system prompt in the first user turn."""
        if self._folds_system is None:
            try:
                self._apply([Message("system", "s"), Message("user", "u")])
                self._folds_system = False
            except BackendError:
                try:
                    self._apply([Message("user", "u")])
                except BackendError:
                    self._folds_system = False  # the template is broken anyway: report its own error
                else:
                    self._folds_system = True
        return self._folds_system

    def _fold(self, messages: Sequence[Message]) -> list[Message]:
        messages = list(messages)
        if not messages or messages[0].role != "system" or not self.folds_system:
            return messages
        system, rest = messages[0].content, messages[1:]
        if rest and rest[0].role == "user":
            return [replace(rest[0], content=f"{system}\n\n{rest[0].content}"), *rest[1:]]
        return [Message("user", system), *rest]

    def render(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> str:
        """The chat template applied to ``messages``, ending with the assistant's turn."""
        return self._apply(self._fold(messages), tools)

    def pieces(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> list[tuple[str, bool]]:
        """The rendered prompt as ``(text, is_content)`` pieces: what the template wrote
        (which may hold control tokens) and what the messages hold (which is data).

        Found by rendering once with a placeholder per message; when the template
        transforms content (``| trim``), the transformed content is used if it reproduces
        the real rendering, else the content as given (safe either way)."""
        messages = self._fold(messages)
        plain = self._apply(messages, tools)
        # Empty content stays empty: templates test it (``if message.content``) and a mark would change the text.
        marked = self._apply(
            [replace(m, content=content_mark(i) if m.content else "") for i, m in enumerate(messages)], tools
        )
        pieces: list[tuple[str, bool]] = []
        for transform in (lambda text: text, str.strip):
            pieces = split_marked(marked, [transform(m.content) for m in messages])
            if "".join(text for text, _ in pieces) == plain:
                break
        return pieces
