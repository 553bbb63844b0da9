"""Asking a folder index (service level): load the index's embedding model, check that
the index is current, retrieve, and put the hits in front of the chat model with
numbered, cited blocks. The sources shown to the user come from the hits' metadata,
never from the model's text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localassist.engine.types import Message
from localassist.errors import ModelNotAvailableError

if TYPE_CHECKING:
    from localassist.models.resolve import ResolvedModel
    from localassist.rag.embedder import BackendEmbedder
    from localassist.rag.store import IndexInfo
    from localassist.settings import Settings

EMBED_CTX = 512  # enough for a chunk and a query; a chat model's 8k context would cost memory for nothing


def load_embedder(settings: Settings, spec: str, *, loading: Callable[[str], Any] | None = None) -> BackendEmbedder:
    """The embedding model ``spec`` (a catalog name, a path, owner/repo...) as a RAG embedder."""
    from dataclasses import replace

    from localassist.backends import open_backend
    from localassist.models.catalog import lookup
    from localassist.models.resolve import resolve_model
    from localassist.rag.embedder import BackendEmbedder, embedding_model_id, prefixes_for

    try:
        resolved = resolve_model(spec, settings)
    except ModelNotAvailableError as exc:
        raise ModelNotAvailableError(f"the index's embedding model is missing: {exc}") from None
    embed_settings = replace(settings, ctx=settings.ctx or EMBED_CTX)  # a ctx the user set, else EMBED_CTX
    backend = open_backend(embed_settings, resolved, role="embedding", loading=loading)
    entry = lookup(spec)
    query, document = prefixes_for(f"{resolved.name} {entry.repo if entry else ''} {Path(resolved.path).name}")
    model_id = embedding_model_id(resolved.path, resolved.name, known_sha256(resolved), hash_unknown=False)
    return BackendEmbedder(backend, model_id, source=spec, query_prefix=query, document_prefix=document)


def known_sha256(resolved: ResolvedModel) -> str | None:
    """A model file's sha256 where it is known without reading the file: the HF cache
    names its blobs by it, a bundled model carries its own; else None."""
    blob = Path(resolved.path).resolve()
    if resolved.source == "hf-cache" and len(blob.name) == 64:
        return blob.name
    if resolved.source == "starter":
        from localassist.models import bundled

        return bundled.expected_sha256_of(Path(resolved.path))
    return None


def index_embedder(
    settings: Settings, info: IndexInfo, *, loading: Callable[[str], Any] | None = None
) -> BackendEmbedder | None:
    """The embedder an index was built with (None for a BM25-only index)."""
    if info.model_id is None:
        return None
    if not info.model_source:
        raise ModelNotAvailableError(f"index '{info.name}' does not record its embedding model; rebuild it")
    return load_embedder(settings, info.model_source, loading=loading)


@dataclass
class Retrieved:
    """What a question over an index found: the messages to send, the hits to cite."""

    messages: list[Message]
    hits: list[Any]
    notices: list[str] = field(default_factory=list)
    found: bool = True


class DocsSearch:
    """Questions over one index, its embedding model loaded once (chat asks every turn)."""

    def __init__(self, settings: Settings, index_name: str, *, loading: Callable[[str], Any] | None = None) -> None:
        from localassist.rag import open_index

        self.settings = settings
        self.name = index_name
        with open_index(settings.paths.data_dir, index_name) as index:  # fails now on an unknown name
            self.info = index.info()
        self._loading = loading
        self._embedder: BackendEmbedder | None = None
        self._loaded = False

    def embedder(self) -> BackendEmbedder | None:
        if not self._loaded:
            self._embedder = index_embedder(self.settings, self.info, loading=self._loading)
            self._loaded = True
        return self._embedder

    def search(self, question: str, *, k: int = 5, sync: bool = False) -> tuple[list[Any], list[str], bool]:
        """(hits, notices, found); says when the index is stale (or syncs it first)."""
        from localassist.rag import open_index

        notices: list[str] = []
        with open_index(self.settings.paths.data_dir, self.name) as index:
            stale = index.staleness()
            if stale.stale and sync:
                report = index.sync(self.embedder())
                notices += report.notices
                notices.append(
                    f"synced {self.name}: {len(report.added)} new, {len(report.updated)} changed, "
                    f"{len(report.removed)} removed"
                )
            elif stale.stale:
                changed = stale.changed + stale.new + stale.deleted
                notices.append(
                    f"{changed} file{'s' if changed != 1 else ''} changed since the last sync; "
                    f"run `localassist index sync {self.name}` (or ask with --sync)"
                )
            result = index.search(question, self.embedder(), k=k)
        return list(result.hits), notices + list(result.notices), result.found

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
            self._loaded = False


def retrieve(
    settings: Settings,
    index_name: str,
    question: str,
    *,
    k: int = 5,
    sync: bool = False,
    system: str | None = None,
    loading: Callable[[str], Any] | None = None,
) -> Retrieved:
    """Search ``index_name`` for ``question``: the messages to send and the hits to cite."""
    from localassist.rag import SYSTEM_PROMPT, user_prompt

    docs = DocsSearch(settings, index_name, loading=loading)
    try:
        hits, notices, found = docs.search(question, k=k, sync=sync)
    finally:
        docs.close()
    rules = SYSTEM_PROMPT if not system else f"{system}\n\n{SYSTEM_PROMPT}"
    messages = [Message("system", rules), Message("user", user_prompt(question, hits))]
    return Retrieved(messages, hits, notices, found)
