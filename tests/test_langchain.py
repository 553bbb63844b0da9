"""LangChain contract tests: ChatLocalAssist (invoke, stream, batch, ainvoke, usage,
tool binding), LocalAssistEmbeddings and LocalAssistRetriever, on the real starter models
and a scripted remote. The oracle for text is the engine driven directly through a
second, separately loaded copy of the model (distinct prompts throughout: the same
prompt asked twice in one process can break a near-tie differently, see docs/design.md)."""

from __future__ import annotations

import asyncio
import json

import pytest

from fakeremote import FakeRemote, Reply, chunk, llama_server, sse, usage_chunk
from fixtures.rag.make_corpus import PLANTED
from fixtures.rag.support import copy_corpus

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from localassist.engine.types import ChatRequest, Message, SamplingParams
from localassist.integrations.langchain import (
    ChatLocalAssist,
    LocalAssistEmbeddings,
    LocalAssistRetriever,
    close_shared_backends,
)

N = 8  # tokens per answer: enough to compare, cheap on two shared cores


@pytest.fixture(scope="module")
def oracle(starter_chat_path):
    """The same model loaded separately and driven through the engine directly."""
    from localassist.engine.local import LoadOptions, LocalBackend

    backend = LocalBackend(starter_chat_path, "oracle", LoadOptions(ctx=1024, threads=1))

    def answer(*messages: Message):
        return backend.chat(
            ChatRequest(messages=messages, sampling=SamplingParams(temperature=0, max_tokens=N))
        ).result()

    yield answer
    backend.close()


@pytest.fixture(scope="module")
def llm(starter_chat_path):
    model = ChatLocalAssist(model=str(starter_chat_path), temperature=0, max_tokens=N, ctx=1024, threads=1)
    yield model
    close_shared_backends()


@pytest.mark.model
def test_invoke_gives_the_engines_text_and_usage(llm, oracle):
    message = llm.invoke("Name a colour.")
    expected = oracle(Message("user", "Name a colour."))
    assert isinstance(message, AIMessage) and message.content == expected.text
    assert message.usage_metadata["input_tokens"] == expected.prompt_tokens
    assert message.usage_metadata["output_tokens"] == expected.completion_tokens
    assert message.response_metadata["finish_reason"] == expected.finish_reason


@pytest.mark.model
def test_stream_yields_the_text_in_pieces_and_usage_last(llm, oracle):
    chunks = list(llm.stream([SystemMessage("Be brief."), HumanMessage("Name a fruit.")]))
    expected = oracle(Message("system", "Be brief."), Message("user", "Name a fruit."))
    assert len(chunks) > 2 and "".join(c.content for c in chunks) == expected.text
    assert chunks[-1].usage_metadata["output_tokens"] == expected.completion_tokens


@pytest.mark.model
def test_batch_answers_each_prompt_on_one_shared_model(llm, oracle):
    prompts = ["Name an animal.", "Name a city."]
    answers = llm.batch(prompts)
    assert [a.content for a in answers] == [oracle(Message("user", p)).text for p in prompts]


@pytest.mark.model
def test_ainvoke_and_astream_give_the_same_as_the_engine(llm, oracle):
    message = asyncio.run(llm.ainvoke("Name a planet."))
    assert message.content == oracle(Message("user", "Name a planet.")).text

    async def pieces() -> str:
        return "".join([c.content async for c in llm.astream("Name a star.")])

    assert asyncio.run(pieces()) == oracle(Message("user", "Name a star.")).text


@pytest.mark.model
def test_a_chain_of_prompt_model_and_parser_runs(llm, oracle):
    chain = ChatPromptTemplate.from_messages([("user", "Name a {thing}.")]) | llm | StrOutputParser()
    assert chain.invoke({"thing": "river"}) == oracle(Message("user", "Name a river.")).text


@pytest.mark.model
def test_two_chat_models_on_one_model_share_one_llama(starter_chat_path, monkeypatch):
    import llama_cpp

    loads = []
    real_init = llama_cpp.Llama.__init__

    def counting_init(self, *args, **kwargs):
        loads.append(kwargs.get("model_path"))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(llama_cpp.Llama, "__init__", counting_init)
    # ctx=768: load options no other test uses, so this model is not loaded yet
    first = ChatLocalAssist(model=str(starter_chat_path), temperature=0, max_tokens=2, ctx=768, threads=1)
    second = ChatLocalAssist(model=str(starter_chat_path), temperature=0.5, max_tokens=3, ctx=768, threads=1)
    first.invoke("Hi")
    second.invoke("Hello")
    assert first.engine() is second.engine() and len(loads) == 1


@pytest.mark.model
def test_a_chat_model_whose_backend_was_freed_opens_it_again(starter_chat_path):
    llm = ChatLocalAssist(model=str(starter_chat_path), temperature=0, max_tokens=2, ctx=640, threads=1)
    before = llm.engine()
    close_shared_backends()
    assert llm.engine() is not before and llm.invoke("Hi there").content is not None


@pytest.mark.model
def test_a_model_from_the_python_api_is_used_as_it_is(starter_chat_path):
    import localassist

    with localassist.load(str(starter_chat_path), ctx=1024, threads=1) as model:
        llm = ChatLocalAssist(backend=model.backend, temperature=0, max_tokens=2)
        assert llm.engine() is model.backend
        assert llm.invoke("Hey").response_metadata["model_name"] == model.backend.model_name


def test_importing_localassist_does_not_import_langchain():
    import subprocess
    import sys

    code = "import localassist, sys; print('langchain_core' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# --- tools, through a remote that answers with tool calls


def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


def tool_call_stream(arguments: str) -> Reply:
    first = {"index": 0, "id": "c1", "type": "function", "function": {"name": "add", "arguments": ""}}
    rest = {"index": 0, "function": {"arguments": arguments}}
    return Reply(lines=sse(chunk(tool_calls=[first]), chunk(tool_calls=[rest]), chunk(finish="tool_calls")))


def test_bind_tools_sends_openai_tools_and_parses_the_call():
    from langchain_core.utils.function_calling import convert_to_openai_tool

    with FakeRemote() as server:
        llama_server(server)
        server.route("POST", "/v1/chat/completions", tool_call_stream('{"a": 1, "b": 2}'))
        llm = ChatLocalAssist(base_url=server.url, temperature=0).bind_tools([add], tool_choice="add")
        message = llm.invoke("What is 1 + 2?")
        assert message.tool_calls == [{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}]
        body = server.posted("/v1/chat/completions")[0]
        assert body["tools"] == [convert_to_openai_tool(add)]
        assert body["tool_choice"] == {"type": "function", "function": {"name": "add"}}

        server.route(
            "POST", "/v1/chat/completions", Reply(lines=sse(chunk("3"), chunk(finish="stop"), usage_chunk(30, 1)))
        )
        reply = llm.invoke([HumanMessage("What is 1 + 2?"), message, ToolMessage("3", tool_call_id="c1", name="add")])
        assert reply.content == "3" and reply.usage_metadata["input_tokens"] == 30
        sent = server.posted("/v1/chat/completions")[1]["messages"]
        assert sent[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": json.dumps({"a": 1, "b": 2})}
        assert sent[2] == {"role": "tool", "content": "3", "tool_call_id": "c1", "name": "add"}


def test_streamed_tool_call_chunks_add_up_to_the_call_and_bad_json_is_an_invalid_call():
    with FakeRemote() as server:
        llama_server(server)
        server.route("POST", "/v1/chat/completions", tool_call_stream('{"a": 4, "b": 5}'))
        llm = ChatLocalAssist(base_url=server.url).bind_tools([add])
        total = None
        for piece in llm.stream("4 + 5?"):
            total = piece if total is None else total + piece
        assert total.tool_calls == [{"name": "add", "args": {"a": 4, "b": 5}, "id": "c1", "type": "tool_call"}]
        assert server.posted("/v1/chat/completions")[0]["tool_choice"] == "auto"

        server.route("POST", "/v1/chat/completions", tool_call_stream('{"a": 4,'))
        broken = llm.invoke("4 + 5 again?")
        assert broken.tool_calls == [] and broken.invalid_tool_calls[0]["name"] == "add"


@pytest.mark.model
def test_bind_tools_on_the_local_engine_gives_a_call_that_fits_the_schema(llm):
    import jsonschema
    from langchain_core.utils.function_calling import convert_to_openai_tool

    if not llm.engine().info().tools:
        pytest.skip("the local engine has no tool calling yet")
    bound = llm.bind_tools([add], tool_choice="required", max_tokens=40)
    message = bound.invoke("What is 1 + 2? Use the add tool.")
    assert [c["name"] for c in message.tool_calls] == ["add"]
    jsonschema.validate(message.tool_calls[0]["args"], convert_to_openai_tool(add)["function"]["parameters"])
    assert message.response_metadata["finish_reason"] == "tool_calls"


def test_leaving_a_stream_early_closes_the_connection():
    with FakeRemote() as server:
        llama_server(server)
        server.route("POST", "/v1/chat/completions", Reply(lines=sse(chunk("tick "), done=False), keep_streaming=True))
        for piece in ChatLocalAssist(base_url=server.url).stream("count"):
            assert piece.content == "tick "
            break
        assert server.disconnected.wait(5)


# --- embeddings and retrieval


@pytest.mark.model
def test_embeddings_are_the_engines_mean_pooled_vectors(starter_model):
    import numpy as np

    from localassist.engine.llama_load import new_llama

    embeddings = LocalAssistEmbeddings(model=str(starter_model), ctx=512, threads=1)
    try:
        got = embeddings.embed_documents(["red apples", "a cold river"])
        query = embeddings.embed_query("green pears")
    finally:
        close_shared_backends()
    oracle, _, _ = new_llama(
        model_path=str(starter_model),
        embedding=True,
        n_ctx=512,
        n_batch=512,
        n_ubatch=512,
        n_threads=1,
        n_threads_batch=1,
        verbose=False,
    )
    try:
        # the same calls, made on llama.cpp directly: a batch of two documents, then the query
        documents = oracle.embed(["red apples", "a cold river"], normalize=False)
        expected = [
            np.asarray(v, dtype=np.float32).mean(axis=0)
            for v in [*documents, oracle.embed("green pears", normalize=False)]
        ]
        for vector, oracle_vector in zip([*got, query], expected, strict=True):
            assert np.allclose(vector, oracle_vector, atol=1e-3)
    finally:
        oracle.close()


def test_retriever_returns_documents_with_page_lines_and_score(tmp_path):
    from localassist.rag import create_index

    folder = copy_corpus(tmp_path / "docs")
    data = tmp_path / "data"
    with create_index(data, "docs", folder) as index:
        index.sync(None)
    retriever = LocalAssistRetriever(index="docs", k=3, data_dir=str(data))

    pdf = retriever.invoke("When did the auditors sign off on the accounts?")[0]
    assert PLANTED in pdf.page_content
    assert (pdf.metadata["source"], pdf.metadata["page"], pdf.metadata["page_label"]) == ("report.pdf", 7, "7")
    assert pdf.metadata["file_path"] == str(folder / "report.pdf") and pdf.metadata["score"] > 0

    md = retriever.invoke("offsite budget approved euros")[0]
    lines = (folder / md.metadata["source"]).read_text().split("\n")
    fact = next(n for n, line in enumerate(lines, start=1) if "14,500 euros" in line)
    assert md.metadata["line_start"] <= fact <= md.metadata["line_end"]

    assert retriever.invoke("zebra quantum lighthouse xylophone") == []


def test_retriever_invoke_takes_k_for_one_search(tmp_path):
    # LangChain passes invoke's keyword arguments on; k was ignored, so invoke(q, k=2) gave 1.
    from localassist.errors import UsageError
    from localassist.rag import create_index

    folder = copy_corpus(tmp_path / "docs")
    data = tmp_path / "data"
    with create_index(data, "docs", folder) as index:
        index.sync(None)
    retriever = LocalAssistRetriever(index="docs", k=1, data_dir=str(data))
    assert len(retriever.invoke("offsite budget", k=2)) == 2
    assert len(retriever.invoke("offsite budget")) == 1
    with pytest.raises(UsageError, match="k must be a whole number of at least 1, not 0"):
        retriever.invoke("offsite budget", k=0)


def test_an_ai_message_whose_content_holds_a_tool_use_block_is_accepted():
    # Anthropic's format keeps the call in the content as well as in tool_calls: it was refused
    # as "content of type 'tool_use' is not supported".
    from localassist.engine.types import ToolCall
    from localassist.errors import UsageError
    from localassist.integrations.langchain import to_messages

    use = {"type": "tool_use", "id": "abc", "name": "add", "input": {"a": 1}}
    both = AIMessage(
        [{"type": "text", "text": "some text"}, use],
        tool_calls=[{"name": "add", "args": {"a": 1}, "id": "abc", "type": "tool_call"}],
    )
    (message,) = to_messages([both])
    assert message.content == "some text"
    assert message.tool_calls == (ToolCall("abc", "add", '{"a": 1}'),)  # once, not twice
    (only_in_content,) = to_messages([AIMessage([{**use, "id": "xyz", "input": {"a": 2}}])])
    assert only_in_content.tool_calls == (ToolCall("xyz", "add", '{"a": 2}'),)
    with pytest.raises(UsageError, match="content of type 'image' is not supported"):
        to_messages([AIMessage([{"type": "image", "url": "file:///x.png"}])])
