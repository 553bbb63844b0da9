"""The index with a real embedding model: the starter GGUF through llama-cpp-python,
standing in for an embedding model (it is a generative one: pooling NONE, so the
embedder mean-pools its per-token vectors)."""

from __future__ import annotations

import os
import shutil

import pytest

from fixtures.rag.make_corpus import PLANTED
from fixtures.rag.support import CORPUS, QUESTIONS
from localassist.rag import InputTooLongError, LlamaEmbedder, create_index, sources_footer

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def llm(starter_model):
    from localassist.engine.llama_load import new_llama

    model, _, _ = new_llama(
        model_path=str(starter_model), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, verbose=False
    )
    yield model
    model.close()


@pytest.fixture(scope="module")
def embedder(llm):
    return LlamaEmbedder(llm, "gemma-3-270m@test")


@pytest.fixture(scope="module")
def synced(tmp_path_factory, embedder):
    """The corpus indexed once with the real model, shared by the module's searches."""
    root = tmp_path_factory.mktemp("rag-real")
    folder = root / "docs"
    shutil.copytree(CORPUS, folder)
    index = create_index(root / "data", "docs", folder)
    report = index.sync(embedder)
    yield index, folder, report
    index.close()


def test_token_counts_are_llama_cpps_own(embedder, vocab):
    for text in ["hello world", "Ünïcödé — text\nwith lines", "<start_of_turn>user"]:
        assert embedder.count_tokens(text) == len(vocab.tokenize(text.encode(), add_bos=True, special=False))


def test_the_document_prefix_is_counted_and_embedded_with_the_text(llm, vocab):
    nomic_like = LlamaEmbedder(llm, "prefixed", query_prefix="search_query: ", document_prefix="search_document: ")
    text = "The offsite budget was approved."
    assert nomic_like.count_tokens(text) == len(vocab.tokenize(b"search_document: " + text.encode(), add_bos=True))
    plain = LlamaEmbedder(llm, "plain")
    assert nomic_like.embed_documents([text]) == plain.embed_documents(["search_document: " + text])
    assert nomic_like.embed_query(text) == plain.embed_query("search_query: " + text)


def test_llama_embed_would_cut_a_long_input_silently_so_the_embedder_refuses_it(llm, embedder, vocab):
    long = "word " * 700
    tokens = len(vocab.tokenize(long.encode(), add_bos=True, special=False))
    assert tokens > 512
    assert len(llm.embed(long)) == 512  # the hazard: llama-cpp-python keeps the first 512 tokens, says nothing
    with pytest.raises(InputTooLongError) as caught:
        embedder.embed_documents(["short", long])
    assert (caught.value.tokens, caught.value.limit) == (tokens, 512)
    assert str(caught.value) == f"the document chunk is {tokens:,} tokens, over the embedding model's limit of 512"
    with pytest.raises(InputTooLongError, match="the query is"):
        embedder.embed_query(long)


def test_dimension_is_the_models_embedding_length(llm, embedder):
    # llama.cpp's own reading of the GGUF header, not the embedder's n_embd() call
    assert embedder.dimension == int(llm.metadata["gemma3.embedding_length"]) == len(embedder.embed_query("hi"))


def test_pooling_none_is_the_mean_of_the_token_vectors(llm, embedder):
    import numpy as np

    assert llm.pooling_type() == 0  # LLAMA_POOLING_TYPE_NONE: one vector per token
    per_token = np.asarray(llm.embed("The offsite budget was approved."))
    assert per_token.shape[0] == len(llm.tokenize(b"The offsite budget was approved."))
    pooled = np.asarray(embedder.embed_documents(["The offsite budget was approved."])[0])
    assert np.allclose(pooled, per_token.mean(axis=0), atol=1e-5)


def test_real_index_embeds_every_chunk_and_stays_in_the_model_limit(synced, starter_model):
    index, _, report = synced
    info = index.info()
    assert info.model_id == "gemma-3-270m@test" and info.model_source == str(starter_model)
    assert report.embedded == info.vectors == info.chunks > 20
    assert info.dimension == 640 and info.chunker == "documents-1 budget=256 overlap=32 count=model"
    assert report.embed_seconds > 0


def test_hybrid_recall_at_5_with_the_starter_model(synced, embedder):
    # every other question: each query embedding costs the stand-in model 1–4 s here (it
    # computes its 262k-word output layer for every token); benchmarks/rag.py runs them all
    index, _, _ = synced
    sample = QUESTIONS["answerable"][::2]
    hits = sum(
        any(
            h.path == q["path"] and q["answer"] in h.text
            for h in index.search(q["question"], embedder, min_coverage=0).hits
        )
        for q in sample
    )
    assert hits >= len(sample) - 2  # measured: all 34 give 32/34, as BM25 alone does


def test_the_page_7_fact_is_cited_as_p7_with_the_real_model(synced, embedder):
    index, _, _ = synced
    result = index.search("When did the auditors sign off on the accounts?", embedder)
    assert result.mode == "hybrid"
    top = next(h for h in result.hits if PLANTED in h.text)
    assert top.locator.page == 7
    assert f"[{top.rank}] report.pdf p.7" in sources_footer(result.hits)


def test_unanswerable_questions_are_not_found_in_hybrid_mode_too(synced, embedder):
    index, _, _ = synced
    assert not any(index.search(q, embedder).found for q in QUESTIONS["unanswerable"][::3])


def test_editing_a_file_re_embeds_only_its_changed_chunk_with_the_real_model(tmp_path, embedder):
    folder = tmp_path / "docs"
    shutil.copytree(CORPUS / "notes", folder)
    with create_index(tmp_path / "data", "notes", folder) as index:
        index.sync(embedder)
        before = embedder.texts_embedded
        vendors = folder / "vendors.txt"
        vendors.write_text(vendors.read_text() + "\nThe window cleaner comes every second Monday.\n")
        st = vendors.stat()
        os.utime(vendors, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        report = index.sync(embedder)
        assert report.updated == ["vendors.txt"] and report.unchanged == 1
        assert embedder.texts_embedded - before == report.embedded == 1  # one chunk: the file is short
        hit = index.search("How often does the window cleaner come?", embedder).hits[0]
        assert "second Monday" in hit.text and hit.locator.line_end == len(vendors.read_text().splitlines())


def test_vector_cache_file_is_memory_mapped_on_the_next_load(synced, embedder):
    index, _, _ = synced
    cache = index.path.with_suffix(".vec")
    index.search("budget", embedder)
    assert cache.is_file()
    from localassist.rag.vectors import load_matrix

    index._matrix = None
    matrix = load_matrix(index)
    assert matrix.data.shape == (index.info().vectors, 640)
    assert type(matrix.data).__name__ == "memmap"  # read from the cache file, not SQLite
