"""Documents for summarize, ask -f and RAG: loaders that keep where every piece of
text came from, and a chunker that fits chunks to a token budget exactly.

Importing this package imports no LangChain, pypdf or llama_cpp: the loaders and the
chunker import them when they run.
"""

from localassist.documents.chunking import CountTokens, Span, chunk_document, split_spans
from localassist.documents.loaders import KINDS, detect_kind, load, load_bytes
from localassist.documents.model import STDIN, Chunk, Document, Locator, Piece

__all__ = [
    "KINDS",
    "STDIN",
    "Chunk",
    "CountTokens",
    "Document",
    "Locator",
    "Piece",
    "Span",
    "chunk_document",
    "detect_kind",
    "load",
    "load_bytes",
    "split_spans",
]
