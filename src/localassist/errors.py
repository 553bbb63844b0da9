"""Domain errors and the one table that maps them to exit codes.

Every error carries a message written for the person at the terminal: what went
wrong and, where there is one, the command that fixes it. The CLI prints
``str(error)`` on one line and exits with ``exit_code_for(error)``.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; docs/exit-codes.md is generated from this enum."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3  # what was named (a model, a remote or its model, a document, an index) is not there
    CONTEXT_OVERFLOW = 4
    MODEL_INVALID = 5
    DOWNLOAD_FAILED = 6
    ACCESS_DENIED = 7
    ANSWER_INVALID = 8  # a structured answer that breaks its schema is never printed as a success
    INTERRUPTED = 130
    BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head -1` reports


class LocalAssistError(Exception):
    """Base of every error localassist reports to the user."""

    exit_code: ExitCode = ExitCode.ERROR


class UsageError(LocalAssistError):
    """Bad input from the user: a flag value, an empty prompt, an unknown key."""

    exit_code = ExitCode.USAGE


class InvalidSettingError(UsageError):
    """A setting (flag, env var or config file entry) has a value out of range."""

    def __init__(self, name: str, value: object, expected: str, source: str = "flag") -> None:
        where = {
            "flag": f"--{name.removeprefix('serve_').replace('_', '-')}",  # serve's flags drop the prefix
            "env": f"LOCALASSIST_{name.upper()}",
            "config": f"config key '{name}'",
        }.get(source, name)
        super().__init__(f"{where} must be {expected} (got {value!r})")
        self.name = name


class SchemaError(UsageError):
    """The answer's format cannot be used: a JSON schema that is not valid or asks for
    what the engine can neither enforce nor check, a ``response_format`` type not taken
    (the server answers it about ``response_format``)."""


class ToolsError(UsageError):
    """Tools that cannot be offered as given: a malformed entry, a ``tool_choice`` that
    names none of them, parameters that cannot be enforced, tools beside a schema for
    the answer (the server answers it about ``tools``)."""


class ConfigError(LocalAssistError):
    """The config file cannot be read or written."""


class ModelNotAvailableError(LocalAssistError):
    """The model the user named (or the default) is not on this machine."""

    exit_code = ExitCode.NOT_FOUND


class ModelInvalidError(LocalAssistError):
    """The file exists but is not a usable GGUF (wrong magic, truncated, unreadable)."""

    exit_code = ExitCode.MODEL_INVALID


class ContextOverflowError(LocalAssistError):
    """The prompt plus the requested output does not fit the context window."""

    exit_code = ExitCode.CONTEXT_OVERFLOW

    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int, message: str | None = None) -> None:
        super().__init__(
            message
            or f"input does not fit the context: {prompt_tokens:,} prompt tokens + "
            f"{max_tokens:,} max tokens > {n_ctx:,} context. Shorten the input, lower "
            f"--max-tokens, or raise --ctx (the model's training context is the limit)"
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx


class DownloadError(LocalAssistError):
    """A download could not finish: no network, a server error, a full disk, a bad checksum."""

    exit_code = ExitCode.DOWNLOAD_FAILED


class AccessDeniedError(LocalAssistError):
    """The hub refused access: a gated or private repo without a (valid) token."""

    exit_code = ExitCode.ACCESS_DENIED


class BackendError(LocalAssistError):
    """The inference engine failed while generating."""


class AnswerInvalidError(LocalAssistError):
    """The model's answer does not match the schema it was asked for (a keyword the
    grammar could not hold, or a remote engine that did not enforce it)."""

    exit_code = ExitCode.ANSWER_INVALID


class RemoteError(BackendError):
    """A remote engine failed: a server error, busy past the retries, a broken stream."""


class RemoteRequestError(RemoteError):
    """A remote engine refused the request as invalid (HTTP 400/422): a parameter it does not take."""

    exit_code = ExitCode.USAGE


class RemoteUnavailableError(RemoteError):
    """The remote named cannot be reached, or does not have the model named."""

    exit_code = ExitCode.NOT_FOUND


class RemoteAuthError(RemoteError):
    """A remote engine refused the API key (HTTP 401/403), or the key's variable is not set."""

    exit_code = ExitCode.ACCESS_DENIED


class RemoteContextOverflowError(ContextOverflowError):
    """The prompt does not fit a remote engine's context (said by the server, or refused
    beforehand because the server would clip it silently). A ContextOverflowError, so what
    handles an overflow (summary memory falling back to dropping) handles a remote one
    too; the counts are the server's where it sent them, else 0 (unknown)."""

    def __init__(self, message: str, prompt_tokens: int = 0, max_tokens: int = 0, n_ctx: int = 0) -> None:
        super().__init__(prompt_tokens, max_tokens, n_ctx, message)


class DocumentError(LocalAssistError):
    """A document cannot be used: binary, empty, encrypted, no text (scanned), unreadable, malformed."""

    exit_code = ExitCode.USAGE


class DocumentNotFoundError(DocumentError):
    """The document the user named does not exist."""

    exit_code = ExitCode.NOT_FOUND


class DocumentBudgetError(LocalAssistError):
    """A document cannot be worked through within the context: no room left for its text
    after the prompt and the answer, or a summary that would need more reduce levels
    than allowed. Nothing is ever clipped to make it fit."""

    exit_code = ExitCode.CONTEXT_OVERFLOW


def exit_code_for(error: BaseException) -> ExitCode:
    """The single place where an exception becomes a process exit code."""
    if isinstance(error, LocalAssistError):
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, BrokenPipeError):
        return ExitCode.BROKEN_PIPE
    return ExitCode.ERROR
