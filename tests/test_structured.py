"""Schema- and grammar-constrained output from the real starter model."""

from __future__ import annotations

import json

import jsonschema
import pytest

from localassist.conversation.prompt_templates import load_template
from localassist.settings import load_settings

pytestmark = pytest.mark.model

SCHEMAS = {
    "object": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    "enum": {"type": "string", "enum": ["red", "green", "blue"]},
    "numbers": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 5},
}


@pytest.mark.parametrize("kind", SCHEMAS)
def test_output_parses_and_matches_the_schema(cli, model_env, kind, tmp_path):
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SCHEMAS[kind]))
    for schema_arg in (str(schema_file), json.dumps(SCHEMAS[kind])):
        result = cli(
            "ask",
            "Describe something as JSON.",
            "--json-schema",
            schema_arg,
            "-T",
            "0",
            "-n",
            "120",
            "--no-log",
            env=model_env,
        )
        assert result.returncode == 0, result.stderr
        value = json.loads(result.stdout)
        jsonschema.validate(value, SCHEMAS[kind])


def test_json_mode_carries_the_parsed_data(cli, model_env):
    result = cli(
        "ask",
        "A person",
        "--json-schema",
        json.dumps(SCHEMAS["object"]),
        "-T",
        "0",
        "-n",
        "120",
        "--json",
        env=model_env,
    )
    data = json.loads(result.stdout)
    jsonschema.validate(data["data"], SCHEMAS["object"])
    assert json.loads(data["text"]) == data["data"]


def test_extract_invoice_template(cli, model_env):
    invoice = "Invoice INV-77 from Bolt & Nut Co. Total: 12.50 EUR. Due date: 2025-01-31."
    result = cli("ask", "-t", "extract-invoice", "-T", "0", input=invoice, env=model_env)
    assert result.returncode == 0, result.stderr
    value = json.loads(result.stdout)
    # the whole schema the template ships (types, required keys), checked by jsonschema
    jsonschema.validate(value, load_template("extract-invoice", load_settings().paths.config_dir).schema)
    assert set(value) >= {"invoice_number", "total", "due_date"}


def test_grammar_file(cli, model_env, tmp_path):
    grammar = tmp_path / "yesno.gbnf"
    grammar.write_text('root ::= "yes" | "no"\n')
    result = cli("ask", "Is water wet?", "--grammar", str(grammar), "-T", "0", "-n", "8", env=model_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in ("yes", "no")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--json-schema", "{not json"], "not valid JSON"),
        (["--json-schema", '{"type": "nonsense"}'], "the JSON schema is not valid at /type"),
        (["--json-schema", "/no/such/schema.json"], "cannot read"),
        (["--grammar", "BAD"], "does not parse"),
        (["--json-schema", "{}", "--grammar", "x"], "cannot be combined"),
    ],
)
def test_bad_schema_or_grammar_is_a_usage_error(cli, model_env, tmp_path, args, fragment):
    if "BAD" in args:
        bad = tmp_path / "bad.gbnf"
        bad.write_text("root ::= ( oops\n")
        args = [str(bad) if a == "BAD" else a for a in args]
    result = cli("ask", "hi", *args, env=model_env)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and result.stderr.count("\n") == 1


def test_cut_off_json_is_an_error_not_half_a_json(cli, model_env):
    result = cli("ask", "A person", "--json-schema", json.dumps(SCHEMAS["object"]), "-T", "0", "-n", "3", env=model_env)
    assert result.returncode == 1
    assert "cut off at --max-tokens" in result.stderr


# --- never half a JSON on stdout


def test_structured_answer_cut_by_max_tokens_prints_nothing_on_stdout(cli, model_env):
    schema = (
        '{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]}'
    )
    result = cli("ask", "-T", "0", "-n", "3", "--json-schema", schema, "A person", env=model_env)
    assert result.returncode == 1 and "raise --max-tokens" in result.stderr
    assert result.stdout == ""
    whole = cli("ask", "-T", "0", "-n", "60", "--json-schema", schema, "A person", env=model_env)
    assert whole.returncode == 0, whole.stderr
    assert set(json.loads(whole.stdout)) == {"name", "age"}
