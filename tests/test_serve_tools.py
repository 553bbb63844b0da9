"""Tool calls through `localassist serve`, as the official `openai` client receives them.

The server runs SmolLM2 (starter-chat) under Qwen2.5's tool template (``--chat-format``),
and a forced tool choice makes the model call. The oracle for the call is the same model
asked the same way in this process; the server only relays the call, never runs it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")

import openai_schema  # noqa: E402
from localassist.engine.types import ChatRequest, Message, SamplingParams  # noqa: E402
from localassist.tools.registry import resolve_tools  # noqa: E402
from serverproc import QWEN_TEMPLATE, sse_frames, tool_server  # noqa: E402

pytestmark = pytest.mark.model
FIXTURES = Path(__file__).parent / "fixtures" / "tools"
TOOLS = resolve_tools(str(FIXTURES / "agent_tools.py")).specs()  # multiply(a: int, b: int)
NAMED = {"type": "function", "function": {"name": "multiply"}}


@pytest.fixture(scope="module")
def server(starter_chat_path, tmp_path_factory):
    yield from tool_server(starter_chat_path, tmp_path_factory.mktemp("serve-home"))


@pytest.fixture(scope="module")
def oracle(starter_chat_path):
    """The call the model makes when asked in-process (each test asks a different question)."""
    from localassist.engine.local import LoadOptions, LocalBackend

    backend = LocalBackend(starter_chat_path, "oracle", LoadOptions(ctx=1024, threads=1, chat_format=QWEN_TEMPLATE))

    def call(question: str, tool_choice) -> tuple[str, str]:
        request = ChatRequest(
            messages=(Message("user", question),),
            sampling=SamplingParams(temperature=0, max_tokens=60),
            tools=tuple(TOOLS),
            tool_choice=tool_choice,
        )
        (only,) = backend.chat(request).result().tool_calls
        return only.name, only.arguments

    yield call
    backend.close()


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none")


def model_name(server) -> str:
    return client(server).models.list().data[0].id


def test_non_streamed_tool_calls_in_openai_shape(server, oracle):
    question = "What is 17 times 23?"
    answer = client(server).chat.completions.create(
        model=model_name(server),
        messages=[{"role": "user", "content": question}],
        tools=TOOLS,
        tool_choice="required",
        temperature=0,
        max_tokens=60,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and len(call.id) == 29
    assert (call.function.name, call.function.arguments) == oracle(question, "required")
    jsonschema.validate(json.loads(call.function.arguments), TOOLS[0]["function"]["parameters"])


def test_streamed_tool_call_deltas_by_index_through_the_client(server, oracle):
    question = "Multiply 6 by 7."
    stream = client(server).chat.completions.create(
        model=model_name(server),
        messages=[{"role": "user", "content": question}],
        tools=TOOLS,
        tool_choice=NAMED,
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    ids, names, arguments, finish = [], [], "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for piece in delta.tool_calls or ():
            assert piece.index == 0
            if piece.id:
                ids.append(piece.id)
                names.append(piece.function.name)
            arguments += piece.function.arguments or ""
        assert not delta.content
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert len(ids) == 1 and len(names) == 1  # id and name once
    assert (names[0], arguments) == oracle(question, NAMED)


def test_the_raw_stream_frames_have_openais_tool_call_fields(server):
    body = {
        "model": model_name(server),
        "messages": [{"role": "user", "content": "Compute 12 times 12."}],
        "tools": TOOLS,
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 60,
        "stream": True,
    }
    import urllib.request

    request = urllib.request.Request(
        server.url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        frames = sse_frames(response.read())
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    for chunk in chunks:
        openai_schema.check_chunk("/chat/completions", chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    first_call = next(d["tool_calls"][0] for d in deltas if "tool_calls" in d)
    assert set(first_call) == {"index", "id", "type", "function"}
    assert first_call["type"] == "function" and first_call["function"]["name"] == "multiply"
    assert first_call["function"]["arguments"] == ""
    later = [d["tool_calls"][0] for d in deltas if "tool_calls" in d][1:]
    assert later and all(set(p) == {"index", "function"} and set(p["function"]) == {"arguments"} for p in later)
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}


def test_a_tool_result_goes_back_and_the_model_answers(server):
    """The round trip a client agent makes: the call, its result as a tool message, an answer."""
    api = client(server)
    name = model_name(server)
    messages = [{"role": "user", "content": "What is 3 times 5?"}]
    first = api.chat.completions.create(
        model=name, messages=messages, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=60
    )
    call = first.choices[0].message.tool_calls[0]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "15"},
    ]
    second = api.chat.completions.create(
        model=name, messages=messages, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=20
    )
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.tool_calls is None and second.choices[0].message.content


def test_bad_tools_are_named_400s(server):
    api = client(server)
    name = model_name(server)
    for kwargs, param in [
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
    ]:
        with pytest.raises(openai.BadRequestError) as err:
            api.chat.completions.create(model=name, messages=[{"role": "user", "content": "x"}], **kwargs)
        assert err.value.body["param"] == param
