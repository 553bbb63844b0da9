"""Structured output through `localassist serve`, as the official `openai` client uses it:
``response_format`` JSON schemas (strict or not), ``chat.completions.parse`` with nested
Pydantic models (``$defs``/``$ref``), a schema the engine cannot honour (HTTP 400 naming
the keyword), an answer that breaks a keyword only checked afterwards (an error, never a
success), and a forced tool call whose parameters use ``$defs``/``$ref``.

The server runs the bundled instruct model (SmolLM2 135M, starter-chat) under Qwen2.5's
tool template, as tests/test_serve_tools.py does; greedy, a few dozen tokens."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from jsonschema import Draft202012Validator

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
pydantic = pytest.importorskip("pydantic")

from serverproc import tool_server  # noqa: E402

pytestmark = pytest.mark.model


class Point(pydantic.BaseModel):
    x: int = pydantic.Field(ge=0, le=9)
    y: int = pydantic.Field(ge=0, le=9)


class Segment(pydantic.BaseModel):
    start: Point
    end: Point
    style: Literal["solid", "dashed"]


POINT = {
    "type": "object",
    "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}, "y": {"type": "integer"}},
    "required": ["x", "y"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def server(starter_chat_path, tmp_path_factory):
    yield from tool_server(starter_chat_path, tmp_path_factory.mktemp("serve-home"))


@pytest.fixture(scope="module")
def client(server):
    # no retries: a 500 is an answer here, not a hiccup to repeat
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model(client):
    return client.models.list().data[0].id


def validates(schema, value) -> None:
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
    assert errors == [], (value, errors)


def no_repeated_keys(pairs):
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"a key repeats: {names}"
    return dict(pairs)


@pytest.mark.parametrize("strict", [True, False])
def test_response_format_json_schema(client, model, strict):
    answer = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "A point on a grid, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "point", "strict": strict, "schema": POINT}},
        temperature=0,
        max_tokens=60,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop", choice
    value = json.loads(choice.message.content, object_pairs_hook=no_repeated_keys)
    validates(POINT, value)


def test_parse_with_nested_pydantic_models(client, model):
    from openai.lib._pydantic import to_strict_json_schema

    schema = to_strict_json_schema(Segment)
    assert "$defs" in schema and schema["properties"]["start"] == {"$ref": "#/$defs/Point"}  # what is sent
    completions = client.chat.completions if hasattr(client.chat.completions, "parse") else client.beta.chat.completions
    answer = completions.parse(
        model=model,
        messages=[{"role": "user", "content": "A line segment between two grid points."}],
        response_format=Segment,
        temperature=0,
        max_tokens=80,
    )
    message = answer.choices[0].message
    assert isinstance(message.parsed, Segment), message
    assert isinstance(message.parsed.start, Point) and isinstance(message.parsed.end, Point)
    validates(schema, json.loads(message.content))


@pytest.mark.parametrize(
    ("schema", "names"),
    [
        ({"$ref": "http://x"}, "'$ref' at /$ref"),
        ({"type": "object", "properties": {"a": {"$dynamicRef": "#n"}}}, "'$dynamicRef' at /properties/a/$dynamicRef"),
        ({"type": "string", "minLength": -1}, "not valid at /minLength"),
    ],
)
def test_a_schema_the_engine_cannot_honour_is_a_400_naming_the_keyword(client, model, schema, names):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Anything."}],
            response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": schema}},
            max_tokens=8,
        )
    assert err.value.status_code == 400
    error = err.value.body
    assert names in error["message"], error
    assert error["param"] == "response_format", error
    assert error["type"] == "invalid_request_error"


def test_an_answer_that_breaks_a_keyword_checked_afterwards_is_an_error(client, model):
    """`not` is only checked afterwards, and every boolean breaks this one: the server
    answers an error, never the invalid JSON as a success."""
    schema = {"type": "boolean", "not": {"type": "boolean"}}
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Yes or no?"}],
            response_format={"type": "json_schema", "json_schema": {"name": "never", "schema": schema}},
            temperature=0,
            max_tokens=8,
        )
    assert err.value.status_code == 500
    error = err.value.body
    assert error["code"] == "answer_invalid", error
    assert error["message"].startswith("the answer does not match the schema: at /"), error


def test_a_streamed_answer_that_breaks_its_schema_ends_in_an_error(client, model):
    schema = {"type": "boolean", "not": {"type": "boolean"}}
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Yes or no?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "never", "schema": schema}},
        temperature=0,
        max_tokens=8,
        stream=True,
    )
    with pytest.raises(openai.APIError) as err:
        for _ in stream:
            pass
    assert "does not match the schema" in str(err.value), err.value


class Address(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=12)
    zip: str = pydantic.Field(pattern=r"^[0-9]{5}$")


class Shipment(pydantic.BaseModel):
    to: Address
    weight_kg: int = pydantic.Field(ge=1, le=50)
    speed: Literal["standard", "express"]


def test_a_forced_tool_call_with_defs_and_refs_gets_arguments_that_validate(client, model):
    parameters = Shipment.model_json_schema()
    assert "$defs" in parameters and parameters["properties"]["to"] == {"$ref": "#/$defs/Address"}
    tool = {
        "type": "function",
        "function": {"name": "ship", "description": "Ship a parcel.", "parameters": parameters},
    }
    answer = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Ship 3 kg to Paris, zip 75001, express."}],
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "ship"}},
        temperature=0,
        max_tokens=80,
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls
    assert call.function.name == "ship"
    arguments = json.loads(call.function.arguments, object_pairs_hook=no_repeated_keys)
    validates(parameters, arguments)
    assert isinstance(Shipment.model_validate(arguments).to, Address)
