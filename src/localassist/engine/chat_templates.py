"""Chat templates: the GGUF's own ``tokenizer.chat_template`` first, else a fallback.

Fallbacks are Jinja templates rendered by the same engine as GGUF templates, so a
model without a template (the starter model has none) still gets the turn format
its family was trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from localassist.errors import UsageError

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
        if override == "gguf":
            if not gguf_template:
                raise UsageError("--chat-format gguf: this model file has no chat template")
            return ChatTemplate("gguf", gguf_template)
        if override not in BUILTIN:
            names = ", ".join(["auto", "gguf", *BUILTIN])
            raise UsageError(f"--chat-format must be one of {names} (got {override!r})")
        return BUILTIN[override]
    if gguf_template:
        return ChatTemplate("gguf", gguf_template)
    return BUILTIN[_BY_ARCH.get(architecture, "chatml")]
