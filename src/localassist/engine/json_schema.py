"""JSON Schema for constrained generation: what is enforced while generating, what is
only checked afterwards, and what is refused.

The grammar engine is llguidance (see docs/design.md, Structured output, for the measurement
that chose it). Before a schema reaches it, :func:`prepare_schema`

- checks the schema against its metaschema (a bad schema is refused with its pointer);
- rewrites keywords llguidance lacks into ones it has, where the rewrite is exact:
  ``dependentRequired`` (an ``anyOf`` per dependency), ``propertyNames`` with a pattern
  or a list of names (``patternProperties`` / ``properties`` with
  ``additionalProperties: false``), ``uniqueItems`` over a small finite item set (the
  ``enum`` of every distinct sequence), ``oneOf`` whose branches cannot overlap (an
  ``anyOf``), integral floats where an integer is expected (``minLength: 2.0``), and every
  local ``$ref`` (JSON-pointer escapes, percent-encoding, ``$anchor``) to a plain name
  under ``$defs``, so recursion and refs inside nested schemas resolve;
- leaves out of the grammar the keywords a grammar cannot express (``not``, ``if``,
  ``contains``, ``uniqueItems`` over open item sets, overlapping ``oneOf``...): those are
  *checked afterwards*, against the user's own schema;
- refuses what it cannot honour either way (references outside the schema, ``$dynamicRef``).

:func:`validate` checks every answer against the user's schema, formats included, so an
answer that breaks its schema is never returned as a success.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from localassist.errors import AnswerInvalidError, SchemaError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions  # a stub-only TypedDict: nothing to import at run time

# formats llguidance enforces while generating and the validator checks afterwards
GENERATED_FORMATS = frozenset(
    {"date", "time", "date-time", "duration", "uuid", "email", "uri", "ipv4", "ipv6", "hostname"}
)
# formats whose fine print the grammar does not hold (leap years and leap seconds, IDNA
# labels and lengths): written to the format's shape, the rest checked afterwards
FORMATS_DETAILS_AFTER = frozenset({"date", "date-time", "time", "hostname"})
# keywords a grammar cannot hold: generation goes on without them, the answer is checked
CHECKED_AFTER = frozenset(
    {
        "not",
        "if",
        "then",
        "else",
        "contains",
        "minContains",
        "maxContains",
        "dependentSchemas",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
REFUSED = {
    "$dynamicRef": "$dynamicRef is not supported; use $ref to a definition under $defs",
    "$recursiveRef": "$recursiveRef is not supported; use $ref to a definition under $defs",
}
_INTEGER_KEYWORDS = (
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minContains",
    "maxContains",
)
# keywords that leave an object open (or combine it with another schema): no closing then
_OPEN_KEYWORDS = frozenset(
    {
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "unevaluatedProperties",
        "minProperties",
        "maxProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "$ref",
        "dependentRequired",
        "dependentSchemas",
        "if",
        "not",
    }
)
_OBJECT_KEYWORDS = frozenset(
    {"properties", "patternProperties", "additionalProperties", "required", "allOf", "anyOf", "oneOf"}
)
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "propertyNames",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
_TYPES_OF = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    type(None): "null",
    list: "array",
    dict: "object",
}
SAFE_INTEGER = 2**53 - 1
MAX_UNIQUE_SEQUENCES = 2000  # uniqueItems over an enum becomes the enum of its sequences up to this many
MAX_DEPENDENCIES = 4  # dependentRequired entries rewritten per object (each doubles the branches)
# JSON the grammar writes: one line, the separators of json.dumps
JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class SchemaRefusedError(SchemaError):
    """A schema the engine can neither enforce nor check; names the keyword and its pointer."""

    def __init__(self, pointer: str, keyword: str, reason: str) -> None:
        self.pointer, self.keyword = pointer or "/", keyword
        super().__init__(f"schema keyword {keyword!r} at {self.pointer}: {reason}")


@dataclass(frozen=True)
class PreparedSchema:
    """A schema ready for generation: the user's schema (validation uses it), the schema
    the grammar is compiled from, and what only the check afterwards covers."""

    schema: Any
    generation: Any
    checked_after: tuple[tuple[str, str], ...]  # (pointer, keyword)
    annotations: tuple[tuple[str, str], ...]  # formats no engine checks: (pointer, format)
    grammar: str  # llguidance's grammar for ``generation``

    @property
    def exact(self) -> bool:
        """Every keyword is enforced while generating: a complete answer cannot break it."""
        return not self.checked_after

    def validate(self, value: Any) -> None:
        validate(self.schema, value)


def prepare_schema(schema: Any) -> PreparedSchema:
    """Check, rewrite and compile ``schema``; raises :class:`SchemaRefusedError` (or
    ``SchemaError`` for a schema that breaks its metaschema) before any token is generated."""
    if schema is True:
        return prepare_schema({})
    if schema is False:
        raise SchemaRefusedError("/", "false", "the schema false accepts nothing")
    if not isinstance(schema, dict):
        raise SchemaError("a JSON schema must be an object or a boolean")
    _check_metaschema(schema)
    rewriter = _Rewriter(schema)
    generation = rewriter.rewrite(schema, "")
    if rewriter.defs:
        generation = {**generation, "$defs": rewriter.defs}
        generation.pop("definitions", None)
    grammar = _compile(generation, where=rewriter)
    return PreparedSchema(schema, generation, tuple(rewriter.checked_after), tuple(rewriter.annotations), grammar)


# --- validation


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses a repeated key (Python keeps the last one silently; the
    grammar cannot forbid repeats among keys the schema does not list)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                name = json.dumps(key, ensure_ascii=False)
                raise AnswerInvalidError(
                    f"the answer does not match the schema: the key {name} appears twice in one object"
                )
            out[key] = value
        return out

    return json.loads(text, object_pairs_hook=pairs)


def validate(schema: Any, value: Any) -> None:
    """Raise :class:`AnswerInvalidError` naming the first place ``value`` breaks ``schema``."""
    error = first_error(schema, value)
    if error is not None:
        raise AnswerInvalidError(f"the answer does not match the schema: {error}")


def first_error(schema: Any, value: Any) -> str | None:
    error = next(iter(sorted(_validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return None
    where = "/" + "/".join(_escape(str(p)) for p in error.absolute_path)
    return f"at {where}: {error.message}"


def _validator(schema: Any) -> Any:
    """jsonschema's validator for ``schema``, with the formats this engine claims (and only
    those: any other format is an annotation) and ``multipleOf`` in decimal arithmetic, as
    the grammar does it (19.99 is a multiple of 0.01; binary floats say it is not)."""
    from jsonschema import validators
    from jsonschema.validators import Draft202012Validator, validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    checked = validators.extend(cls, {"multipleOf": _multiple_of, "pattern": _pattern})
    from referencing import Registry

    return checked(schema, format_checker=_format_checker(), registry=Registry())  # never fetch a $ref


def _exact(number: float) -> Fraction:
    """A JSON number as the exact decimal it was written as (0.1 is 1/10, not a binary float)."""
    return Fraction(number) if isinstance(number, int) else Fraction(repr(number))


def _multiple_of(validator: Any, step: Any, instance: Any, schema: Any) -> Any:
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "number") or isinstance(instance, bool):
        return
    ok = _exact(instance) % _exact(step) == 0
    if not ok:
        yield ValidationError(f"{json.dumps(instance)} is not a multiple of {json.dumps(step)}")


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """A pattern Python's ``re`` cannot read (ECMA-262's ``\\p{Letter}``) is held by the
    grammar alone: llguidance compiled it, so every answer matches it."""
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "string"):
        return
    try:
        found = re.search(pattern, instance)
    except re.error:
        return
    if not found:
        yield ValidationError(f"{json.dumps(instance, ensure_ascii=False)} does not match {json.dumps(pattern)}")


@lru_cache(maxsize=1)
def _format_checker() -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    base = Draft202012Validator.FORMAT_CHECKER
    checker = FormatChecker(formats=())
    for name in GENERATED_FORMATS - {"time", "date-time", "hostname"}:
        if name in base.checkers:
            func, raises = base.checkers[name]
            checker.checks(name, raises)(func)
    checker.checks("date-time")(_date_time)
    checker.checks("time")(_time)
    checker.checks("hostname")(_hostname)
    return checker


_TIME = re.compile(r"(\d\d):(\d\d):(\d\d)(\.\d+)?([Zz]|([+-])(\d\d):(\d\d))\Z")


def _time(value: object) -> bool:
    """RFC 3339 full-time, leap seconds included (23:59:60 in UTC, shifted by the offset)."""
    if not isinstance(value, str):
        return True
    found = _TIME.match(value)
    if not found:
        return False
    hour, minute, second = (int(found.group(i)) for i in (1, 2, 3))
    offset = 0
    if found.group(6):
        off_h, off_m = int(found.group(7)), int(found.group(8))
        if off_h > 23 or off_m > 59:
            return False
        offset = (off_h * 60 + off_m) * (1 if found.group(6) == "+" else -1)
    if hour > 23 or minute > 59 or second > 60:
        return False
    return second < 60 or (hour * 60 + minute - offset) % 1440 == 23 * 60 + 59


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    date, sep, time = value.partition("T") if "T" in value else value.partition("t")
    if not sep:
        return False
    from datetime import date as Date

    try:
        Date.fromisoformat(date)
    except ValueError:
        return False
    return len(date) == 10 and _time(time)


def _hostname(value: object) -> bool:
    """RFC 1123 host names, and A-labels (``xn--``) that really decode as IDNA."""
    if not isinstance(value, str):
        return True
    from fqdn import FQDN

    if not value or not FQDN(value, min_labels=1).is_valid:
        return False
    import idna

    for label in value.rstrip(".").split("."):
        if label[:4].lower() == "xn--":
            try:
                idna.decode(label)
            except idna.IDNAError:
                return False
    return True


def _check_metaschema(schema: dict[str, Any]) -> None:
    from jsonschema.validators import Draft202012Validator, validator_for

    cls = validator_for(schema, default=Draft202012Validator)
    # no format checks on the schema itself: its patterns are ECMA-262 regexes (\p{L}), not Python's
    error = next(iter(cls(cls.META_SCHEMA).iter_errors(schema)), None)
    if error is not None:
        where = "/" + "/".join(_escape(str(p)) for p in error.absolute_path)
        raise SchemaError(f"the JSON schema is not valid at {where}: {error.message}")


# --- the rewrite


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class _Rewriter:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.defs: dict[str, Any] = {}
        self.ref_names: dict[str, str] = {}  # target pointer -> name under $defs
        self.checked_after: list[tuple[str, str]] = []
        self.annotations: list[tuple[str, str]] = []
        self.pointers: dict[str, list[str]] = {}  # keyword -> pointers where it appears (for refusals)
        self.anchors = dict(self._anchors(root, ""))

    def _anchors(self, node: Any, ptr: str) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("$anchor"), str):
                yield node["$anchor"], ptr
            for key, child in node.items():
                if key in ("const", "enum", "examples", "default"):
                    continue
                yield from self._anchors(child, f"{ptr}/{_escape(key)}")
        elif isinstance(node, list):
            for i, child in enumerate(node):
                yield from self._anchors(child, f"{ptr}/{i}")

    def rewrite(self, node: Any, ptr: str, merged: bool = False) -> Any:
        """``node`` for the grammar. ``merged``: the node is combined with another schema
        (a branch of allOf/anyOf/oneOf, a $ref target beside other keywords), so its
        object stays open for the other's properties."""
        if node is True:
            return {}
        if not isinstance(node, dict):
            return node  # False stays: a subschema nothing matches
        out: dict[str, Any] = {}
        for key, value in node.items():
            self.pointers.setdefault(key, []).append(ptr)
            here = f"{ptr}/{_escape(key)}"
            if key in REFUSED:
                raise SchemaRefusedError(here, key, REFUSED[key])
            if key in CHECKED_AFTER:
                self.checked_after.append((ptr or "/", key))
                continue
            if key == "$id" and ptr:
                raise SchemaRefusedError(
                    here, key, "a nested $id (a second resource with its own base) is not supported; use $defs"
                )
            if key in ("$defs", "definitions", "$id", "$schema", "$anchor", "$comment", "$vocabulary"):
                continue  # definitions are reached through $ref and hoisted; identifiers are not needed
            if key == "$ref":
                out[key] = self._ref(value, here, merged or bool(set(node) & _OBJECT_KEYWORDS))
            elif key in _INTEGER_KEYWORDS and isinstance(value, float):
                out[key] = int(value)  # the metaschema allows 2.0; the engine wants 2
            elif key == "pattern" and isinstance(value, str) and not _regex_compiles(value):
                if not _python_regex(value):
                    raise SchemaRefusedError(here, key, f"the pattern {value!r} can be neither enforced nor checked")
                self.checked_after.append((ptr or "/", "pattern"))  # look-arounds, backreferences
            elif key == "patternProperties" and (bad := [k for k in value if not _regex_everywhere(k)]):
                raise SchemaRefusedError(
                    here,
                    key,
                    f"the pattern {bad[0]!r} cannot be enforced (look-arounds and backreferences are not supported)",
                )
            elif key == "format":
                if value in GENERATED_FORMATS:
                    out[key] = value
                    if value in FORMATS_DETAILS_AFTER:  # the grammar writes the shape; the rest is checked
                        self.checked_after.append((ptr or "/", f"format: {value}"))
                else:
                    self.annotations.append((ptr or "/", str(value)))
            elif key in _SCHEMA_MAPS:
                out[key] = {name: self.rewrite(sub, f"{here}/{_escape(name)}") for name, sub in value.items()}
            elif key in _SCHEMA_LISTS:
                out[key] = [self.rewrite(sub, f"{here}/{i}", merged=True) for i, sub in enumerate(value)]
            elif key == "items" and isinstance(value, list):  # draft 7 and 2019-09: a tuple
                out["prefixItems"] = [self.rewrite(sub, f"{here}/{i}") for i, sub in enumerate(value)]
                if "additionalItems" in node:
                    out["items"] = self.rewrite(node["additionalItems"], f"{ptr}/additionalItems")
            elif key == "additionalItems":
                if not isinstance(node.get("items"), list):
                    continue  # without a tuple of items it means nothing
            elif key in _SCHEMA_ONE:
                out[key] = self.rewrite(value, here)
            else:
                out[key] = copy.deepcopy(value)
        if not merged and not set(node) & _OPEN_KEYWORDS:
            out = self._closed(out)
        out = self._numbers(out, ptr)
        out = self._property_counts(out, ptr)
        out = self._dependent_required(out, ptr)
        out = self._property_names(out, ptr)
        out = self._unique_items(out, ptr)
        out = self._one_of(out, ptr)
        return out

    # $ref: every local target becomes a plain name under $defs
    def _ref(self, ref: Any, here: str, merged: bool) -> str:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise SchemaRefusedError(
                here, "$ref", f"{ref!r} points outside the schema; put the definition under $defs and use '#/$defs/…'"
            )
        fragment = unquote(ref[1:])
        if fragment and not fragment.startswith("/"):
            if fragment not in self.anchors:
                raise SchemaRefusedError(here, "$ref", f"no $anchor named {fragment!r} in the schema")
            pointer = self.anchors[fragment]
        else:
            pointer = fragment
        if pointer not in self.ref_names:
            target = self._resolve(pointer, here)
            name = f"r{len(self.ref_names)}"
            self.ref_names[pointer] = name
            self.defs[name] = {}  # reserved first: a recursive ref finds its name
            self.defs[name] = self.rewrite(target, pointer, merged)
        return f"#/$defs/{self.ref_names[pointer]}"

    def _resolve(self, pointer: str, here: str) -> Any:
        node: Any = self.root
        for raw in pointer.split("/")[1:] if pointer else []:
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise SchemaRefusedError(here, "$ref", f"'#{pointer}' does not resolve in this schema")
        return node

    def _after(self, out: dict[str, Any], ptr: str, keyword: str) -> dict[str, Any]:
        self.checked_after.append((ptr or "/", keyword))
        out.pop(keyword, None)
        return out

    @staticmethod
    def _closed(out: dict[str, Any]) -> dict[str, Any]:
        """An object that lists its properties and says nothing of others is written with the
        listed ones only (as llama.cpp's converter does; ``additionalProperties: true`` opens
        it): still valid, and a small model does not invent fields until --max-tokens."""
        if not isinstance(out.get("properties"), dict):
            return out
        properties = dict(out["properties"])
        for name in out.get("required", ()):
            properties.setdefault(name, {})
        return {**out, "properties": properties, "additionalProperties": False}

    def _numbers(self, out: dict[str, Any], ptr: str) -> dict[str, Any]:
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(out.get(key), (int, float)) and abs(out[key]) > SAFE_INTEGER:
                self._after(out, ptr, key)  # past what the engine's range regex can hold
        step = out.get("multipleOf")
        if isinstance(step, (int, float)) and len(repr(step).strip("-0.").replace(".", "")) > 15:
            self._after(out, ptr, "multipleOf")
        kinds = out.get("type")
        if (kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds)) and "enum" not in out:
            # an integer with no bound is written within ±(2**53 - 1), what every JSON reader holds
            # exactly; without it a small model writes digits until --max-tokens
            if "minimum" not in out and "exclusiveMinimum" not in out:
                out["minimum"] = -SAFE_INTEGER
            if "maximum" not in out and "exclusiveMaximum" not in out:
                out["maximum"] = SAFE_INTEGER
        return out

    def _property_counts(self, out: dict[str, Any], ptr: str) -> dict[str, Any]:
        """min/maxProperties: the engine holds them only when every listed property is required."""
        counted = "minProperties" in out or "maxProperties" in out
        if counted and not set(out.get("properties", {})) <= set(out.get("required", ())):
            for key in ("minProperties", "maxProperties"):
                if key in out:
                    self._after(out, ptr, key)
        return out

    def _dependent_required(self, out: dict[str, Any], ptr: str) -> dict[str, Any]:
        deps = out.get("dependentRequired")
        if deps is None:
            return out
        if len(deps) > MAX_DEPENDENCIES:
            return self._after(out, ptr, "dependentRequired")
        out.pop("dependentRequired")
        required = set(out.get("required", ()))
        clauses = []
        for name, needs in deps.items():
            present = {"required": [name, *needs]}
            if name in required:  # always present: its dependencies are always required
                clauses.append(present)
            else:
                clauses.append({"anyOf": [{"properties": {name: False}}, present]})
        if clauses:
            out["allOf"] = [*out.get("allOf", ()), *clauses]
        return out

    def _property_names(self, out: dict[str, Any], ptr: str) -> dict[str, Any]:
        names = out.get("propertyNames")
        if names is None:
            return out
        if names == {}:
            out.pop("propertyNames")
            return out
        if not isinstance(names, dict) or "patternProperties" in out:
            return self._after(out, ptr, "propertyNames")
        extra = out.get("additionalProperties", {})
        properties = dict(out.get("properties", {}))
        keys = set(names) - {"type", "title", "description"}
        if keys == {"pattern"}:
            pattern = names["pattern"]
            try:
                compiled = re.compile(pattern)
            except re.error:
                return self._after(out, ptr, "propertyNames")
            for name in properties:
                if not compiled.search(name):
                    properties[name] = False
            out["patternProperties"] = {pattern: extra}
        elif keys in ({"enum"}, {"const"}) and all(isinstance(n, str) for n in names.get("enum", [names.get("const")])):
            allowed = names.get("enum", [names.get("const")])
            for name in properties:
                if name not in allowed:
                    properties[name] = False
            for name in allowed:
                properties.setdefault(name, extra)
        else:
            return self._after(out, ptr, "propertyNames")
        out.pop("propertyNames")
        out["properties"] = properties
        out["additionalProperties"] = False
        return out

    def _unique_items(self, out: dict[str, Any], ptr: str) -> dict[str, Any]:
        if "uniqueItems" not in out:
            return out
        if out["uniqueItems"] is not True:
            out.pop("uniqueItems")
            return out
        values = _finite_values(out.get("items"))
        if values is None or "prefixItems" in out:
            return self._after(out, ptr, "uniqueItems")
        low = out.get("minItems", 0)
        high = min(out.get("maxItems", len(values)), len(values))
        sequences = (
            [list(seq) for n in range(low, high + 1) for seq in itertools.permutations(values, n)]
            if sum(_permutations(len(values), n) for n in range(low, high + 1)) <= MAX_UNIQUE_SEQUENCES
            else None
        )
        if sequences is None:
            return self._after(out, ptr, "uniqueItems")
        for key in ("uniqueItems", "items", "minItems", "maxItems"):
            out.pop(key, None)
        if "enum" in out:
            sequences = [s for s in sequences if any(_json_equal(s, e) for e in out["enum"])]
        out["enum"] = sequences
        return out

    def _one_of(self, out: dict[str, Any], ptr: str) -> dict[str, Any]:
        branches = out.pop("oneOf", None)
        if branches is None:
            return out
        if not _disjoint(branches):  # exactly one is checked afterwards; the grammar takes any
            self.checked_after.append((ptr or "/", "oneOf"))
        if "anyOf" in out:  # anyOf and oneOf side by side: both must hold
            out["allOf"] = [*out.get("allOf", ()), {"anyOf": branches}]
        else:
            out["anyOf"] = branches
        return out


def _python_regex(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _regex_everywhere(pattern: str) -> bool:
    """A property-name pattern must be read alike by the grammar and the validator."""
    try:
        re.compile(pattern)
    except re.error:
        return False
    return _regex_compiles(pattern)


def _regex_compiles(pattern: str) -> bool:
    from llguidance import LLMatcher

    failed, _ = LLMatcher.validate_grammar_with_warnings(LLMatcher.grammar_from_regex(pattern))
    return not failed


def _permutations(k: int, n: int) -> int:
    result = 1
    for i in range(n):
        result *= k - i
    return result


def _finite_values(items: Any) -> list[Any] | None:
    """The values an item schema allows, when it is a small finite set (enum, const, boolean)."""
    if not isinstance(items, dict) or not set(items) <= {"const", "enum", "type", "title", "description"}:
        return None
    if "type" in items and items["type"] != "boolean":
        return None  # an enum beside a type: not a plain finite set
    if "const" in items:
        return [items["const"]]
    if "enum" in items and len(items["enum"]) <= 8:
        unique: list[Any] = []
        for value in items["enum"]:
            if not any(_json_equal(value, seen) for seen in unique):
                unique.append(value)
        return unique
    if items.get("type") == "boolean" and set(items) <= {"type", "title", "description"}:
        return [False, True]
    return None


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema has it: 1 equals 1.0, true is not 1, objects ignore key order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _types(branch: Any) -> set[str] | None:
    """The JSON types a branch can match, when it says so plainly."""
    if not isinstance(branch, dict):
        return None
    if "const" in branch or "enum" in branch:
        kinds = {_TYPES_OF.get(type(v), "?") for v in branch.get("enum", [branch.get("const")])}
        return kinds | {"integer", "number"} if kinds & {"integer", "number"} else kinds  # 2 == 2.0
    kind = branch.get("type")
    if kind is None:
        return None
    kinds = {kind} if isinstance(kind, str) else set(kind)
    if "number" in kinds:
        kinds.add("integer")
    return kinds


def _discriminator(branch: Any) -> dict[str, Any]:
    """Required properties with a const value: what tells object branches apart."""
    if not isinstance(branch, dict):
        return {}
    props = branch.get("properties", {})
    return {
        name: props[name]["const"]
        for name in branch.get("required", ())
        if isinstance(props.get(name), dict) and "const" in props[name]
    }


def _disjoint(branches: list[Any]) -> bool:
    """True when no value can match two branches (so oneOf is anyOf): their plain types do
    not overlap, their const/enum values differ, or a required const property tells them apart."""
    for a, b in itertools.combinations(branches, 2):
        if a is False or b is False:
            continue
        ta, tb = _types(a), _types(b)
        if ta is not None and tb is not None and not (ta & tb):
            continue
        va = a.get("enum", [a["const"]] if "const" in a else None) if isinstance(a, dict) else None
        vb = b.get("enum", [b["const"]] if "const" in b else None) if isinstance(b, dict) else None
        if va is not None and vb is not None and not any(_json_equal(x, y) for x in va for y in vb):
            continue
        da, db = _discriminator(a), _discriminator(b)
        if ta == tb == {"object"} and any(
            name in db and not _json_equal(value, db[name]) for name, value in da.items()
        ):
            continue
        return False
    return True


# --- compiling


_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[(.*?)\]")


def _compile(generation: Any, where: _Rewriter | None = None) -> str:
    from llguidance import LLMatcher

    grammar = LLMatcher.grammar_from_json_schema(json.dumps(generation), defaults=JSON_OPTIONS)
    failed, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        message = " ".join(messages[0].split())
        names = _UNIMPLEMENTED.search(message)
        keyword = json.loads(f"[{names.group(1)}]")[0] if names else _keyword_in(message)
        pointers = where.pointers.get(keyword, []) if where is not None else []
        raise SchemaRefusedError(pointers[0] if pointers else "/", keyword, f"cannot be enforced: {message}")
    return grammar


_KEYWORDS_BY_LENGTH = sorted(
    {
        *_SCHEMA_MAPS,
        *_SCHEMA_LISTS,
        *_SCHEMA_ONE,
        *_INTEGER_KEYWORDS,
        "enum",
        "const",
        "type",
        "required",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "pattern",
        "format",
        "$ref",
    },
    key=len,
    reverse=True,
)


def _keyword_in(message: str) -> str:
    """The keyword an engine message is about (the longest one it names)."""
    if "patternProperty" in message:
        return "patternProperties"
    for keyword in _KEYWORDS_BY_LENGTH:
        if re.search(rf"(?<![A-Za-z$]){re.escape(keyword)}(?![A-Za-z])", message):
            return keyword
    return "false" if "false" in message else "schema"
