"""Check what `localassist serve` sends against OpenAI's published OpenAPI schema
(``fixtures/openai-openapi``: a cut of openai/openai-openapi, unchanged; see its README).

``check(path, body)`` validates one response body of an operation (``"/chat/completions"``
...); ``check_chunk`` one frame of a stream; ``check_error`` an error body or error frame.
The schema is read as JSON Schema 2020-12, the dialect of OpenAPI 3.1, plus the one
OpenAPI 3.0 rule the file still uses: ``nullable: true`` also allows ``null``."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC = Path(__file__).parent / "fixtures" / "openai-openapi" / "openapi-subset.json"
URI = "urn:openai-openapi"


def _nullable(node: Any) -> Any:
    """``{..., "nullable": true}`` as 3.1 writes it: ``{"anyOf": [{...}, {"type": "null"}]}``."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") is True else out


@cache
def _registry() -> tuple[dict[str, Any], Registry]:
    spec = _nullable(json.loads(SPEC.read_text(encoding="utf-8")))
    return spec, Registry().with_resource(URI, Resource.from_contents(spec, default_specification=DRAFT202012))


def _validate(pointer: str, instance: Any) -> None:
    _, registry = _registry()
    validator = jsonschema.Draft202012Validator({"$ref": f"{URI}#{pointer}"}, registry=registry)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors) + f"\n{instance}"


def _response_pointer(path: str, method: str, media: str) -> str:
    spec, _ = _registry()
    operation = spec["paths"][path][method]
    assert media in operation["responses"]["200"]["content"], (path, media)
    escaped = path.replace("~", "~0").replace("/", "~1")
    return f"/paths/{escaped}/{method}/responses/200/content/{media.replace('/', '~1')}/schema"


def check(path: str, body: Any) -> None:
    """A 200 JSON body of ``path`` (``/chat/completions``, ``/models/{model}``, ...)."""
    method = "get" if path.startswith("/models") else "post"
    _validate(_response_pointer(path, method, "application/json"), body)


def check_chunk(path: str, chunk: Any) -> None:
    """One ``data:`` frame of a stream. The spec gives chat's stream its own schema; for
    ``/completions`` it says a chunk has the completion's shape (and OpenAI sends
    ``finish_reason: null`` until the last one, which that schema does not list)."""
    if "error" in chunk:
        check_error(chunk)
    elif path == "/chat/completions":
        _validate(_response_pointer(path, "post", "text/event-stream"), chunk)
    else:
        choices = chunk.get("choices")
        assert isinstance(choices, list) and all(isinstance(c, dict) for c in choices), chunk
        for c in choices:
            assert "finish_reason" in c, chunk
        last = {**chunk, "choices": [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in choices]}
        _validate(_response_pointer(path, "post", "application/json"), last)


def check_error(body: Any) -> None:
    _validate("/components/schemas/ErrorResponse", body)
