"""The errors remote engines send, read without any HTTP library: the error bodies of
every dialect (OpenAI, llama-server, vLLM old and new, Ollama, FastAPI) mapped to
localassist's errors, each with its exit code. (``server/wire.py`` is the other side:
what ``localassist serve`` itself sends.)
"""

from __future__ import annotations

import json
import re
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
