"""What remote engines send, read without any HTTP library: server-sent events, the
error bodies of every dialect (OpenAI, llama-server, vLLM old and new, Ollama, FastAPI)
mapped to localassist's errors, and a conservative token estimate for servers that
have no tokenizer endpoint.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from localassist.errors import (
    LocalAssistError,
    RemoteAuthError,
    RemoteContextOverflowError,
    RemoteError,
    RemoteRequestError,
    RemoteUnavailableError,
)

# --- server-sent events


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str | None, str]]:
    """(event name, data) per event: ``data:`` lines joined, ``:`` comments (pings)
    skipped. llama.cpp's old non-standard ``error:`` field comes out as an "error" event."""
    data: list[str] = []
    event: str | None = None
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            data, event = [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "error":
            yield "error", value
    if data:
        yield event, "\n".join(data)


# --- error bodies


@dataclass(frozen=True)
class ServerError:
    """One error as the server said it, whatever the dialect."""

    message: str
    type: str | None = None
    code: str | int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_error_body(body: Any) -> ServerError | None:
    """The error in a decoded JSON body, or None when the body is not an error."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):  # OpenAI (string code), llama-server (int code), vLLM >= 0.10.1
        return ServerError(str(error.get("message") or error), error.get("type"), error.get("code"), error)
    if isinstance(error, str):  # Ollama
        return ServerError(error)
    if body.get("object") == "error":  # vLLM before 0.10.1: the error at the top level
        return ServerError(str(body.get("message") or ""), body.get("type"), body.get("code"), body)
    if "detail" in body:  # FastAPI (llama-cpp-python's server): a string or validation errors
        detail = body["detail"]
        if isinstance(detail, list):
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        return ServerError(str(detail))
    return None


def parse_error_text(text: str) -> ServerError:
    """An error body as bytes came: JSON of any dialect, else its first line of text."""
    try:
        parsed = parse_error_body(json.loads(text))
    except ValueError:
        parsed = None
    if parsed is not None:
        return parsed
    first = text.strip().splitlines()[0] if text.strip() else ""
    return ServerError(first[:300])


_CONTEXT_WORDS = re.compile(
    r"context length|context size|context window|maximum context|exceeds the available context|"
    r"input length exceeds|prompt is too long|too many tokens|max_model_len",
    re.IGNORECASE,
)
_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error", "context_window_exceeded"}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def is_context_error(error: ServerError) -> bool:
    return (
        str(error.code) in _CONTEXT_CODES
        or str(error.type) in _CONTEXT_CODES
        or bool(_CONTEXT_WORDS.search(error.message))
    )


def error_for(status: int | None, error: ServerError, where: str, key_hint: str) -> LocalAssistError:
    """The localassist error for what a server said. ``status`` is the HTTP status, or
    None for an error sent inside a stream (then an int ``code`` stands in for it, as
    llama-server sends it). ``key_hint`` says how to fix a refused key."""
    if status is None and isinstance(error.code, int):
        status = error.code
    said = _one_line(error.message) or "no message"
    status_text = f"HTTP {status}" if status else "in the stream"
    kind = str(error.type or "")
    code = str(error.code or "")
    if is_context_error(error):
        numbers = ""
        prompt, n_ctx = error.extra.get("n_prompt_tokens"), error.extra.get("n_ctx")
        if isinstance(prompt, int) and isinstance(n_ctx, int):
            numbers = f" ({prompt:,} prompt tokens, context {n_ctx:,})"
        else:
            prompt = n_ctx = 0
        return RemoteContextOverflowError(
            f"input does not fit the context of {where}{numbers}: {said.rstrip('.')}. Shorten the input or lower "
            "--max-tokens",
            prompt_tokens=prompt,
            n_ctx=n_ctx,
        )
    if status in (401, 403) or kind in ("authentication_error", "permission_error") or code == "invalid_api_key":
        return RemoteAuthError(f"{where} refused the request ({status_text}: {said}); {key_hint}")
    if status == 404 or code == "model_not_found" or kind == "not_found_error":
        return RemoteUnavailableError(f"{where}: not found ({status_text}: {said})")
    if status in (429, 503) or kind in ("rate_limit_error", "unavailable_error"):
        return RemoteError(f"{where} is busy ({status_text}: {said}); try again later")
    if status in (400, 413, 422) or kind == "invalid_request_error":
        return RemoteRequestError(f"{where} refused the request ({status_text}: {said})")
    return RemoteError(f"{where} failed ({status_text}: {said})")


# --- counting without a tokenizer

# One piece per likely token or less: a word (with its leading space), a digit (many
# tokenizers split numbers into single digits), a run of whitespace, one ASCII symbol,
# one other character.
_PIECES = re.compile(r" ?[A-Z]?[a-z]+| ?[A-Z]+|\d|\s+|[\x21-\x7e]|.", re.DOTALL)
MESSAGE_OVERHEAD = 8  # role markers and separators a chat template adds per message
PROMPT_OVERHEAD = 8  # BOS, the assistant's opening


def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens ``text`` takes, for servers that cannot count:
    a word of n letters as n/3 tokens, every digit, symbol and run of whitespace as
    one, a non-ASCII character as its UTF-8 length less one (a CJK character 2, an
    emoji 3). Real tokenizers give fewer (tested against two of them), often far fewer:
    it budgets and warns, never cuts text, and refuses only for Ollama, which would clip
    a prompt that does not fit without saying so."""
    total = 0
    for piece in _PIECES.findall(text):
        if piece[-1].isascii() and piece[-1].islower():
            total += math.ceil(len(piece) / 2.5)
        elif piece[-1].isascii() and piece[-1].isupper():
            total += math.ceil(len(piece) / 2)
        elif piece.isspace():
            total += math.ceil(len(piece) / 4)
        elif piece.isascii():
            total += 1
        else:
            total += max(1, len(piece.encode("utf-8")) - 1)
    return total


def estimate_messages(contents: Sequence[str]) -> int:
    return PROMPT_OVERHEAD + sum(estimate_tokens(c) + MESSAGE_OVERHEAD for c in contents)
