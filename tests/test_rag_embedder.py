"""The embedder side that needs no model: prefixes per model family and the model id."""

from __future__ import annotations

import hashlib

import pytest

from fixtures.rag.support import HashEmbedder
from localassist.errors import ExitCode, exit_code_for
from localassist.rag import (
    Embedder,
    EmbedderError,
    create_index,
    embedding_model_id,
    load_llama_embedder,
    prefixes_for,
)


@pytest.mark.parametrize(
    ("name", "prefixes"),
    [
        ("nomic-embed-text-v1.5.Q4_K_M.gguf", ("search_query: ", "search_document: ")),
        ("bge-small-en-v1.5-q8_0", ("Represent this sentence for searching relevant passages: ", "")),
        ("multilingual-e5-small", ("query: ", "passage: ")),
        ("all-MiniLM-L6-v2", ("", "")),
        ("gemma-3-270m", ("", "")),
    ],
)
def test_query_and_document_prefixes_follow_the_model_family(name, prefixes):
    assert prefixes_for(name) == prefixes


def test_model_identity_is_name_sha256_and_size(tmp_path):
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    assert embedding_model_id(model) == f"tiny@{digest}:2564"
    assert embedding_model_id(model, "tiny-embed", sha256="ab" * 32) == f"tiny-embed@{'ab' * 32}:2564"
    # the CLI's indexes never hash a file whose sha256 is unknown: size and mtime stand in (stored in indexes)
    mtime = model.stat().st_mtime_ns
    assert embedding_model_id(model, "tiny-embed", hash_unknown=False) == f"tiny-embed@2564:{mtime}"
    assert embedding_model_id(model, "tiny-embed", "ab" * 32, hash_unknown=False) == f"tiny-embed@{'ab' * 32}:2564"


def test_the_fake_embedder_satisfies_the_protocol():
    assert isinstance(HashEmbedder(), Embedder)


def test_a_missing_embedding_model_is_one_clear_line_with_exit_code_3(tmp_path):
    with pytest.raises(EmbedderError) as caught:
        load_llama_embedder(tmp_path / "nomic-embed-text.gguf")
    assert str(caught.value) == f"embedding model not found: {tmp_path / 'nomic-embed-text.gguf'}"
    assert exit_code_for(caught.value) == ExitCode.NOT_FOUND


def test_a_query_vector_of_another_dimension_is_refused(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nThe quokka budget.\n")
    with create_index(tmp_path / "data", "dims", folder) as index:
        index.sync(HashEmbedder(dimension=64))
        with pytest.raises(EmbedderError, match="query vector of 32 dimensions; the index has 64"):
            index.search("quokka", HashEmbedder(dimension=32))


def test_importing_the_package_loads_no_heavy_library():
    import subprocess
    import sys

    heavy = ("numpy", "llama_cpp", "pypdf", "langchain_text_splitters", "filelock")
    code = f"import sys, localassist.rag; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
