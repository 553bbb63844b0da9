"""What can go wrong with a document index, each as one line for the person at the terminal.

Every error leaves the index as it was after its last committed file: sync commits file
by file, so nothing here means a half-written index."""

from __future__ import annotations

from localassist.errors import ExitCode, LocalAssistError


class RagError(LocalAssistError):
    """Base of the document-index errors."""


class IndexNotFoundError(RagError):
    """No index of that name in the data dir."""

    exit_code = ExitCode.NOT_FOUND


class IndexExistsError(RagError):
    """``create`` was asked for a name that is taken."""

    exit_code = ExitCode.USAGE


class InvalidIndexNameError(RagError):
    """The name would not make a plain file name."""

    exit_code = ExitCode.USAGE


class FolderGoneError(RagError):
    """The indexed folder no longer exists (or is not a folder)."""

    exit_code = ExitCode.NOT_FOUND


class EmbedderError(RagError):
    """The embedding model is missing, does not match the index, or refused an input."""

    exit_code = ExitCode.NOT_FOUND


class InputTooLongError(EmbedderError):
    """A text is over the embedding model's input limit: it is refused, never cut."""

    exit_code = ExitCode.CONTEXT_OVERFLOW

    def __init__(self, tokens: int, limit: int, what: str = "text") -> None:
        super().__init__(f"the {what} is {tokens:,} tokens, over the embedding model's limit of {limit:,}")
        self.tokens = tokens
        self.limit = limit


class IndexLockedError(RagError):
    """Another process is writing the index and did not finish within the timeout."""


class DiskFullError(RagError):
    """The disk filled up while writing; the index keeps what was committed before."""


class IndexCorruptError(RagError):
    """The database file is not a readable index."""
