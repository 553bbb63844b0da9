"""Every error the API answers, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

What the server decides itself (a bad field, a missing key, a full queue, a time limit)
is answered where it is decided, with :class:`ApiError` and the helpers below. What the
core raises while a backend prepares or runs a generation is answered from one table,
``CORE_ERRORS``, keyed on the error's type: the first row the error is an instance of
gives the status, type, code and ``param``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localassist.errors import (
    AnswerInvalidError,
    ContextOverflowError,
    LocalAssistError,
    SchemaError,
    ToolsError,
    UsageError,
)


class ApiError(Exception):
    """An error answered in OpenAI's shape, with its HTTP status and headers."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def not_supported(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", "not_supported", param)


def context_message(prompt_tokens: int, max_tokens: int, n_ctx: int) -> str:
    return (
        f"This model's maximum context length is {n_ctx} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} for the completion). "
        "Please reduce the length of the prompt or max_tokens."
    )


def model_not_found(model: str, known: Sequence[str]) -> ApiError:
    return ApiError(
        404,
        f"The model {model!r} does not exist on this server; it serves: {', '.join(known) or 'none'}",
        "invalid_request_error",
        "model_not_found",
        "model",
    )


def internal_error() -> ApiError:
    """Anything unforeseen: never a traceback to the client (the server's log has it)."""
    return ApiError(500, "internal server error; see the server's log", "server_error", "internal_error")


def stopped(reason: str, timeout_s: float) -> ApiError:
    """A job the server or its client cancelled, by its ``stop_reason``."""
    if reason == "timeout":
        return ApiError(
            408,
            f"the request took longer than the server's time limit of {timeout_s:g} s (serve_timeout)",
            "timeout_error",
            "request_timeout",
            headers={"x-should-retry": "false"},
        )
    if reason == "shutdown":
        return ApiError(503, "the server is shutting down", "unavailable_error", "shutting_down")
    return ApiError(499, "the client closed the connection", "invalid_request_error", "client_disconnected")


# --- the core's errors


INPUT = "<input>"  # a row's param: the request field that holds the input (messages, prompt or input)


@dataclass(frozen=True)
class Row:
    status: int
    type: str
    code: str
    param: str | None
    message: Callable[[Any], str] = str
    before_generating: bool = False  # only while the request is prepared, before any token


CORE_ERRORS: tuple[tuple[type[Exception], Row], ...] = (
    (
        ContextOverflowError,
        Row(
            400,
            "invalid_request_error",
            "context_length_exceeded",
            INPUT,
            lambda e: context_message(e.prompt_tokens, e.max_tokens, e.n_ctx),
        ),
    ),
    (ToolsError, Row(400, "invalid_request_error", "invalid_value", "tools")),
    (SchemaError, Row(400, "invalid_request_error", "invalid_value", "response_format")),
    (UsageError, Row(400, "invalid_request_error", "invalid_value", INPUT)),
    # the model's JSON broke a keyword that is checked after generation
    (AnswerInvalidError, Row(500, "server_error", "answer_invalid", None)),
    # before the first token, any other error is about these messages (a chat template
    # that refuses them); while generating, it is the engine's: a 500, told in the log
    (LocalAssistError, Row(400, "invalid_request_error", "invalid_value", INPUT, before_generating=True)),
)


def core_error(exc: BaseException | None, input_param: str, *, generating: bool) -> ApiError:
    """The answer to ``exc``, raised by the core while preparing the request (``generating``
    False) or while running it; ``input_param`` names the field that holds the input."""
    for kind, row in CORE_ERRORS:
        if isinstance(exc, kind) and not (generating and row.before_generating):
            param = input_param if row.param == INPUT else row.param
            if generating and isinstance(exc, UsageError):
                param = None  # raised mid-answer, it is about no one field of the request
            return ApiError(row.status, row.message(exc), row.type, row.code, param)
    sys.stderr.write(f"localassist: error: generation failed: {type(exc).__name__}: {exc}\n")
    return ApiError(500, "the model failed while generating; see the server's log", "server_error", "engine_error")
