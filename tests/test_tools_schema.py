"""One schema for "a call to any of these tools": it validates calls and llama.cpp turns it into a grammar."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from localassist.tools import resolve_tools
from tool_schemas import call_schema, calls_schema

FIXTURES = Path(__file__).parent / "fixtures" / "tools"


@pytest.fixture
def registry():
    return resolve_tools(f"all,{FIXTURES / 'user_tools.py'}")


def test_the_union_schema_accepts_each_tools_calls_and_rejects_mixed_ones(registry):
    schema = call_schema(registry)
    jsonschema.validate({"name": "calc", "arguments": {"expression": "1+1"}}, schema)
    jsonschema.validate({"name": "time", "arguments": {"action": "now", "zone": "UTC"}}, schema)
    jsonschema.validate({"name": "word_count", "arguments": {"text": "a b"}}, schema)
    for bad in (
        {"name": "calc", "arguments": {"action": "now"}},  # time's arguments under calc's name
        {"name": "nope", "arguments": {}},
        {"name": "calc"},
        {"name": "calc", "arguments": {"expression": "1"}, "extra": 1},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_llama_cpp_converts_the_union_schema_to_a_grammar(registry):
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    for schema in (
        call_schema(registry),
        call_schema(registry, "parameters"),
        calls_schema(registry, max_calls=3),
        call_schema(resolve_tools("calc")),
    ):
        grammar = json_schema_to_gbnf(json.dumps(schema))
        assert grammar.startswith("alternative-0 ::=") or "root ::=" in grammar
        assert '"\\"calc\\""' in grammar


@pytest.mark.model
def test_the_starter_model_constrained_by_the_grammar_writes_a_valid_call(starter_model):
    """llama.cpp's own grammar parser accepts the grammar, and sampling under it yields a call that validates."""
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from localassist.engine.llama_load import new_llama

    registry = resolve_tools("calc,time")
    schema = call_schema(registry)
    llm, _, _ = new_llama(model_path=str(starter_model), n_ctx=512, verbose=False)
    grammar = LlamaGrammar.from_string(json_schema_to_gbnf(json.dumps(schema)), verbose=False)
    out = llm.create_completion(
        'Tool call for the arithmetic 2+2 as JSON: {"name": "calc", "arguments": {"expression": "2+2"}}\nTool call: ',
        grammar=grammar,
        max_tokens=60,
        temperature=0,
    )
    call = json.loads(out["choices"][0]["text"])
    jsonschema.validate(call, schema)
    assert registry.get(call["name"]) is not None
