"""The embedding side of an index: a small protocol, and its implementation on llama.cpp.

Any object with these attributes and methods is an embedder; the index never cares how
vectors are made. ``model_id`` names the model exactly (a changed id means every vector
must be made again), ``max_tokens`` is a hard limit: an input over it is an error,
because llama-cpp-python's ``Llama.embed`` silently cuts inputs at the batch size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from localassist.rag.errors import EmbedderError, InputTooLongError

if TYPE_CHECKING:
    import llama_cpp

    from localassist.engine.types import Backend


@runtime_checkable
class Embedder(Protocol):
    """What the index needs from an embedding model.

    ``count_tokens`` counts a text as ``embed_documents`` would feed it to the model
    (prefix and special tokens included), so a chunk the chunker fits to ``max_tokens``
    by it is never cut. Vectors need not be normalised: the index normalises them. An
    optional ``source`` attribute (the model file) is recorded in the index's meta."""

    model_id: str
    dimension: int
    max_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


# Query/document prefixes the models were trained with, by a lower-case fragment of the
# model's name. Models not listed get none.
PREFIXES: dict[str, tuple[str, str]] = {
    "nomic-embed": ("search_query: ", "search_document: "),
    "bge-": ("Represent this sentence for searching relevant passages: ", ""),
    "e5-": ("query: ", "passage: "),
    "snowflake-arctic-embed": ("Represent this sentence for searching relevant passages: ", ""),
    "mxbai-embed": ("Represent this sentence for searching relevant passages: ", ""),
}


def prefixes_for(model_name: str) -> tuple[str, str]:
    """(query prefix, document prefix) for a model name; ("", "") for unknown models."""
    lowered = model_name.lower()
    for fragment, pair in PREFIXES.items():
        if fragment in lowered:
            return pair
    return "", ""


def embedding_model_id(
    path: str | os.PathLike[str], name: str | None = None, sha256: str | None = None, *, hash_unknown: bool = True
) -> str:
    """The ``model_id`` an index records for its embedding model (a changed id means
    every vector is made again): ``name@sha256:size``. Give ``sha256`` where it is known
    (the model cache has it): hashing a large file takes a while. ``hash_unknown=False``:
    an unknown sha256 is not computed, the file's modification time stands in for it
    (``name@size:mtime_ns``; what the CLI's indexes record for a file it cannot name by
    its hash). The strings are stored in indexes: they must never change."""
    file = Path(path)
    stat = file.stat()
    if sha256 is None and not hash_unknown:
        return f"{name or file.stem}@{stat.st_size}:{stat.st_mtime_ns}"
    if sha256 is None:
        from localassist.files import open_regular

        digest = hashlib.sha256()
        with open_regular(file) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        sha256 = digest.hexdigest()
    return f"{name or file.stem}@{sha256}:{stat.st_size}"


class _PrefixedEmbedder:
    """What both embedders share: the model's query/document prefixes, and every input
    counted and refused when over ``max_tokens`` before one vector is made."""

    query_prefix: str
    document_prefix: str
    max_tokens: int
    calls: int  # embed calls made (one per batch), for tests and progress
    texts_embedded: int

    def _count(self, full: str) -> int:
        raise NotImplementedError

    def _vectors(self, inputs: list[str]) -> list[list[float]]:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        return self._count(self.document_prefix + text)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._embed([self.document_prefix + t for t in texts], "document chunk")

    def embed_query(self, text: str) -> list[float]:
        return self._embed([self.query_prefix + text], "query")[0]

    def _embed(self, inputs: list[str], what: str) -> list[list[float]]:
        for full in inputs:
            n = self._count(full)
            if n > self.max_tokens:
                raise InputTooLongError(n, self.max_tokens, what)
        if not inputs:
            return []
        self.calls += 1
        self.texts_embedded += len(inputs)
        return self._vectors(inputs)


class LlamaEmbedder(_PrefixedEmbedder):
    """An :class:`Embedder` over a ``llama_cpp.Llama`` created with ``embedding=True``.

    Models whose GGUF sets a pooling type (embedding models: nomic, bge, MiniLM) give one
    vector per input; for the rest (pooling NONE, as with a generative model used as a
    stand-in) llama.cpp gives a vector per token and they are mean-pooled here. Every
    input is counted first and refused when over ``max_tokens`` (the smallest of n_ctx,
    n_batch and n_ubatch: ``Llama.embed`` cuts at n_batch, and llama.cpp needs a whole
    sequence in one micro-batch for pooling)."""

    def __init__(
        self, llm: llama_cpp.Llama, model_id: str, *, query_prefix: str = "", document_prefix: str = ""
    ) -> None:
        if not llm.context_params.embeddings:
            raise EmbedderError("the embedding model was loaded without embedding=True")
        self.llm = llm
        self.model_id = model_id
        self.dimension = int(llm.n_embd())
        self.max_tokens = int(min(llm.n_ctx(), llm.n_batch, llm.context_params.n_ubatch))
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.source = str(llm.model_path)  # recorded in the index, to say which file to load again
        self.calls = 0  # embed calls made (one per batch), for tests and progress
        self.texts_embedded = 0

    def _count(self, full: str) -> int:
        # exactly the tokenize call Llama.embed makes (add_bos=True, special=False)
        return len(self.llm.tokenize(full.encode("utf-8")))

    def _vectors(self, inputs: list[str]) -> list[list[float]]:
        return [_pool(vector) for vector in self.llm.embed(inputs, normalize=False, truncate=False)]

    def close(self) -> None:
        self.llm.close()


def _pool(vector: Sequence[Any]) -> list[float]:
    """One vector per input: per-token outputs (pooling NONE) are averaged."""
    if vector and isinstance(vector[0], (list, tuple)):
        import numpy as np

        return np.asarray(vector, dtype=np.float32).mean(axis=0).tolist()
    return list(vector)


class BackendEmbedder(_PrefixedEmbedder):
    """An :class:`Embedder` over any localassist ``Backend`` with embeddings (a local
    model loaded with ``LoadOptions(embedding=True)``, or a remote engine): what the CLI
    and the server use. ``source`` is the model as the user named it, so the index can
    load the same model again."""

    def __init__(
        self,
        backend: Backend,
        model_id: str,
        *,
        source: str | None = None,
        query_prefix: str = "",
        document_prefix: str = "",
    ) -> None:
        info = backend.info()
        if not info.embeddings:
            raise EmbedderError(f"{info.model} was not loaded for embeddings")
        self.backend = backend
        self.model_id = model_id
        self.source = source
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.max_tokens = int(getattr(backend, "embedding_limit", info.n_ctx))
        self.dimension = int(info.embedding_dimension or len(backend.embed(["dimension probe"])[0]))
        self.calls = 0
        self.texts_embedded = 0

    def _count(self, full: str) -> int:
        return len(self.backend.tokenize(full)) + 2  # + the special tokens the embedding call adds (BOS; CLS+SEP)

    def _vectors(self, inputs: list[str]) -> list[list[float]]:
        return self.backend.embed(inputs)

    def close(self) -> None:
        self.backend.close()


def load_llama_embedder(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    sha256: str | None = None,
    n_ctx: int = 512,
    n_threads: int | None = None,
    query_prefix: str | None = None,
    document_prefix: str | None = None,
    repack: str = "auto",
) -> LlamaEmbedder:
    """Load a GGUF as an embedder; prefixes default to the model family's (see PREFIXES);
    ``repack`` as the setting (engine/llama_load.py)."""
    if not Path(path).is_file():
        raise EmbedderError(f"embedding model not found: {os.fspath(path)}")
    from localassist.engine.llama_load import new_llama

    try:
        llm, _, _ = new_llama(
            repack=repack,
            model_path=os.fspath(path),
            embedding=True,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            # embedding runs as a batch: llama.cpp uses n_threads_batch for it (default: every
            # core), and its spinning threads slow it 10-70x on a machine whose cores are busy
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as error:
        raise EmbedderError(f"cannot load the embedding model {os.fspath(path)}: {error}") from None
    label = name or str(llm.metadata.get("general.name") or Path(path).stem)
    query, document = prefixes_for(label + " " + Path(path).name)
    return LlamaEmbedder(
        llm,
        embedding_model_id(path, label, sha256),
        query_prefix=query if query_prefix is None else query_prefix,
        document_prefix=document if document_prefix is None else document_prefix,
    )
