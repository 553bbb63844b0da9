"""Private RAG: a folder indexed into one SQLite file (BM25 + vectors), searched by
hybrid retrieval, with helpers to put the hits in front of a model and cite them.

Importing this package imports no numpy, llama_cpp or pypdf; they load when an index
is synced or searched. Nothing here prints: notices come back as strings.
"""

from localassist.rag.answer import (
    NOT_FOUND,
    SYSTEM_PROMPT,
    CitationCheck,
    check_citations,
    cite_label,
    context_blocks,
    sources_footer,
    sources_json,
    user_prompt,
)
from localassist.rag.embedder import (
    Embedder,
    LlamaEmbedder,
    embedding_model_id,
    load_llama_embedder,
    prefixes_for,
)
from localassist.rag.errors import (
    DiskFullError,
    EmbedderError,
    FolderGoneError,
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    InputTooLongError,
    InvalidIndexNameError,
    RagError,
)
from localassist.rag.search import Hit, SearchResult
from localassist.rag.store import (
    DEFAULT_GLOBS,
    Index,
    IndexInfo,
    create_index,
    list_indexes,
    open_index,
    remove_index,
)
from localassist.rag.sync import BM25_ONLY_NOTICE, Progress, Staleness, SyncReport

__all__ = [
    "BM25_ONLY_NOTICE",
    "DEFAULT_GLOBS",
    "NOT_FOUND",
    "SYSTEM_PROMPT",
    "CitationCheck",
    "DiskFullError",
    "Embedder",
    "EmbedderError",
    "FolderGoneError",
    "Hit",
    "Index",
    "IndexCorruptError",
    "IndexExistsError",
    "IndexInfo",
    "IndexLockedError",
    "IndexNotFoundError",
    "InputTooLongError",
    "InvalidIndexNameError",
    "LlamaEmbedder",
    "Progress",
    "RagError",
    "SearchResult",
    "Staleness",
    "SyncReport",
    "check_citations",
    "cite_label",
    "context_blocks",
    "create_index",
    "embedding_model_id",
    "list_indexes",
    "load_llama_embedder",
    "open_index",
    "prefixes_for",
    "remove_index",
    "sources_footer",
    "sources_json",
    "user_prompt",
]
