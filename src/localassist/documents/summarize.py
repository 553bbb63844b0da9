"""Summaries of documents of any length, never clipped, with a coverage ledger.

Three strategies, every model call through ``Backend.chat``:

- **stuff**: everything fits one call (chosen by ``auto`` when it does);
- **map-reduce** (``auto`` otherwise): each chunk becomes notes that keep their
  locator; the notes are grouped under the budget and condensed level by level until
  they fit one final call (a depth cap, past which it fails loudly);
- **refine**: a running summary rewritten with each chunk in turn, for narrative text.

Budgets are computed, not guessed: the context minus the prompt as the backend counts
it once rendered, minus the answer's ``max_tokens``, minus a small safety margin for
how tokens join at the edges of the inserted text. Every chunk is counted by the
model's own tokenizer (see ``chunking``). Map outputs are cached (``summary_cache``)
so a re-run, or one with only another ``--points``/``--style``, skips the map, and a
run stopped by Ctrl-C resumes. Nothing here prints: progress goes to a callback.

On a remote server that cannot count tokens the counts are an estimate above the real
count: it plans (parts a little smaller than they could be, so more calls), but never
refuses. Where an exact count would stop the summary (exit 4), the estimate adds a
warning and the call is sent: the server, which counts, decides. Ollama is the exception
(it would clip a prompt that does not fit): there its estimate refuses as a count does.

    summarizer = Summarizer(backend, SummaryTemplates.load(config_dir), sampling)
    run = summarizer.start(summarizer.plan([load("report.pdf")]))
    for piece in run.stream.text(): ...
    done = run.finish()          # checks the ledger: every chunk went in
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from localassist.documents.chunking import chunk_document
from localassist.documents.model import STDIN, Chunk, Document, Locator
from localassist.documents.summary_cache import CacheError, SummaryCache, backend_fingerprint, cache_key
from localassist.engine.types import (
    Backend,
    ChatRequest,
    ChatStream,
    Done,
    Message,
    SamplingParams,
    TextDelta,
    server_decides,
)
from localassist.errors import DocumentBudgetError, LocalAssistError, UsageError

STRATEGIES = ("auto", "stuff", "map-reduce", "refine")
STYLES = ("bullets", "paragraph")
TEMPLATES = {
    "map": "summarize-map",
    "reduce": "summarize-reduce",
    "stuff": "summarize-stuff",
    "refine": "summarize-refine",
}
PROMPT_VERSION = "1"  # bump when the way prompts are built changes: cached notes are then redone
MARGIN = 16  # tokens: the inserted text may tokenize a little differently where it joins the prompt
MAX_DEPTH = 8  # reduce levels; each one divides the notes by at least 2, usually by 10 or more
MIN_CHUNK = 32  # tokens of text per call below which a summary is not worth starting
MIN_NOTES = 16  # tokens: the least the notes on a chunk may take
_LABEL_SLACK = 8  # tokens: the brackets and line break around a note's label


class CoverageError(LocalAssistError):
    """A chunk, page, row or line was left out: a bug, reported instead of a partial summary."""


# --- what the caller gives


@dataclass(frozen=True)
class SummaryOptions:
    points: int = 5
    style: str = "bullets"  # bullets | paragraph
    strategy: str = "auto"  # auto | stuff | map-reduce | refine
    margin: int = MARGIN
    max_depth: int = MAX_DEPTH
    max_tokens: int | None = None  # a cap on the final summary's length (chat's /file: what is left)

    def __post_init__(self) -> None:
        if not 1 <= self.points <= 100:
            raise UsageError(f"--points must be between 1 and 100 (got {self.points})")
        if self.style not in STYLES:
            raise UsageError(f"--style must be one of {', '.join(STYLES)} (got {self.style!r})")
        if self.strategy not in STRATEGIES:
            raise UsageError(f"--strategy must be one of {', '.join(STRATEGIES)} (got {self.strategy!r})")

    @property
    def shape(self) -> str:
        """How the summary should look, as the prompts' ``{shape}`` says it."""
        if self.style == "paragraph":
            return f"as one paragraph of about {self.points} sentence{'s' if self.points > 1 else ''}"
        if self.points == 1:
            return 'as 1 bullet point starting with "- "'
        return f'as {self.points} bullet points, one per line, each starting with "- "'


@dataclass(frozen=True)
class SummaryTemplates:
    """The four prompt templates; a user file of the same name shadows each built-in."""

    map: Any  # conversation.prompt_templates.Template
    reduce: Any
    stuff: Any
    refine: Any

    @classmethod
    def load(cls, config_dir: Path) -> SummaryTemplates:
        from localassist.conversation.prompt_templates import load_template

        loaded = {role: load_template(name, config_dir) for role, name in TEMPLATES.items()}
        for template in loaded.values():
            if not template.takes_input:
                raise UsageError(
                    f"template {template.name} ({template.path}) must contain {{input}}: the text goes there"
                )
        if "summary" not in loaded["refine"].params:
            raise UsageError(
                f"template {loaded['refine'].name} must contain {{summary}}: the summary so far goes there"
            )
        return cls(**loaded)


@dataclass(frozen=True)
class Progress:
    stage: str  # map | reduce | refine | summary
    done: int  # of this stage: chunks summarized (map, refine) or calls made (reduce)
    total: int
    tokens: int  # tokens generated so far, every stage
    engine_s: float  # seconds inside model calls so far
    cached: int  # chunks whose notes came from the cache


# --- what comes back


@dataclass
class Section:
    """What one map (or refine) call reads: consecutive chunks of one document, packed
    up to the chunk budget (small pages share a call), with their notes (map-reduce) or
    the summary after them (refine); stuff has one section per chunk and no notes."""

    index: int  # 0-based, across every document
    document: Document
    chunks: list[Chunk]
    first: int  # the index of its first chunk, across every document
    notes: str | None = None
    cached: bool = False

    @property
    def chunk_indexes(self) -> range:
        return range(self.first, self.first + len(self.chunks))

    @property
    def label(self) -> str:
        """``report.pdf p.3`` (one chunk, its heading too), ``report.pdf p.3–9`` (several)."""
        if len(self.chunks) == 1:
            return str(self.chunks[0].locator)
        return span_label([c.locator for c in self.chunks])

    @property
    def text(self) -> str:
        """The text the model reads: each chunk headed with where it is from when there
        are several, so notes can say which page or lines a point comes from."""
        return _joined(self.chunks)

    @property
    def tokens(self) -> int:
        return sum(c.tokens for c in self.chunks)

    @property
    def sha256(self) -> str:
        if len(self.chunks) == 1:
            return self.chunks[0].sha256
        return hashlib.sha256("".join(c.sha256 for c in self.chunks).encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index + 1,
            "source": self.label,
            "chunks": [self.first + 1, self.first + len(self.chunks)],  # 1-based, inclusive
            "locators": [{k: v for k, v in asdict(c.locator).items() if v is not None} for c in self.chunks],
            "tokens": self.tokens,
            "notes": self.notes,
            "cached": self.cached,
        }


@dataclass
class DocumentLedger:
    path: str
    kind: str
    chunks: int
    pages: int | None = None
    pages_without_text: list[int] | None = None  # PDFs only
    rows: int | None = None
    lines: int | None = None

    def units(self) -> str:
        if self.pages is not None:
            blank = f" ({len(self.pages_without_text)} without text)" if self.pages_without_text else ""
            return f"{self.pages} page{'s' if self.pages != 1 else ''}{blank}"
        if self.rows is not None:
            return f"{self.rows} row{'s' if self.rows != 1 else ''}"
        return f"{self.lines} line{'s' if self.lines != 1 else ''}"


@dataclass
class Ledger:
    """What went in: every chunk of every document, and the pages, rows or lines they
    hold. ``summarized`` are the chunk indexes whose text reached the model."""

    documents: list[DocumentLedger]
    summarized: set[int] = field(default_factory=set)

    @property
    def chunks(self) -> int:
        return sum(d.chunks for d in self.documents)

    @property
    def percent(self) -> float:
        return 100.0 * len(self.summarized) / self.chunks if self.chunks else 100.0

    def line(self) -> str:
        """``covered 100%: 212 chunks, 48 pages``"""
        n = self.chunks
        done = len(self.summarized)
        chunks = f"{n} chunk{'s' if n != 1 else ''}"
        head = f"covered {_percent(self.percent)}: " + (f"{done} of {chunks}" if done < n else chunks)
        if len(self.documents) == 1:
            return f"{head}, {self.documents[0].units()}"
        return f"{head} of {len(self.documents)} files: " + ", ".join(
            f"{_name(d.path)} {d.units()}" for d in self.documents
        )

    def check(self) -> None:
        missing = sorted(set(range(self.chunks)) - self.summarized)
        if missing:
            raise CoverageError(f"internal error: chunks {missing[:10]} were not summarized; the summary is incomplete")

    def as_dict(self) -> dict[str, Any]:
        return {
            "percent": round(self.percent, 2),
            "chunks": self.chunks,
            "chunks_summarized": len(self.summarized),
            "documents": [{k: v for k, v in asdict(d).items() if v is not None} for d in self.documents],
        }


@dataclass
class SummaryUsage:
    calls: int = 0  # model calls made (cached notes cost none)
    map_calls: int = 0
    map_cached: int = 0
    reduce_calls: int = 0
    reduce_levels: int = 0
    refine_calls: int = 0
    refine_cached: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    engine_s: float = 0.0  # wall time inside the backend's generation loops

    def add(self, done: Done) -> None:
        self.calls += 1
        self.prompt_tokens += done.prompt_tokens
        self.cached_prompt_tokens += done.cached_tokens
        self.completion_tokens += done.completion_tokens
        self.engine_s += done.timings.total_s

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["engine_s"] = round(self.engine_s, 3)
        out["total_tokens"] = self.prompt_tokens + self.completion_tokens
        return out


@dataclass
class Plan:
    strategy: str  # stuff | map-reduce | refine
    documents: list[Document]
    sections: list[Section]
    ledger: Ledger
    budget: int  # tokens of text per chunk
    facts: str | None = None  # CSV columns and counts, computed here


@dataclass
class SummaryRun:
    """The map and reduce are done; ``stream`` is the final call. Iterate it, then ``finish``."""

    summarizer: Summarizer
    plan: Plan
    stream: ChatStream
    _done: Done | None = None

    @property
    def usage(self) -> SummaryUsage:
        return self.summarizer.usage

    @property
    def ledger(self) -> Ledger:
        return self.plan.ledger

    def finish(self) -> Done:
        """The final call's result (after a Ctrl-C too); a whole summary has its ledger
        checked: every chunk went in."""
        if self._done is None:
            self._done = self.stream.result()
            self.summarizer.usage.add(self._done)
            if not self._done.cancelled:
                self.plan.ledger.check()
        return self._done


# --- the work


class Summarizer:
    def __init__(
        self,
        backend: Backend,
        templates: SummaryTemplates,
        sampling: SamplingParams | None = None,
        *,
        explicit: frozenset[str] = frozenset(),
        options: SummaryOptions | None = None,
        cache: SummaryCache | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        """``sampling``: the user's settings; each template's ``[options]`` apply on top,
        except for the parameters in ``explicit`` (the flags the user gave)."""
        self.backend = backend
        self.templates = templates
        self.base_sampling = sampling or SamplingParams()
        self.explicit = explicit
        self.options = options or SummaryOptions()
        self.cache = cache
        self.on_progress = on_progress
        self.server_decides = server_decides(backend)  # counts are an estimate: warn, never refuse
        self._estimate_warned = False
        self.usage = SummaryUsage()
        self.warnings: list[str] = []
        self.source = ""
        self._model_id = backend_fingerprint(backend) if cache is not None else ""
        self._tokens = 0
        self._cap: int | None = None
        self._label = ""

    # --- prompts and budgets

    def count_text(self, text: str) -> int:
        return len(self.backend.tokenize(text))

    def sampling_for(self, template: Any, *, final: bool = False) -> SamplingParams:
        from localassist.settings import parse_value

        changes = {
            key: parse_value(key, value, "config")
            for key, value in template.options.items()
            if key in SamplingParams.__dataclass_fields__ and key not in self.explicit
        }
        sampling = replace(self.base_sampling, **changes)
        if final and self.options.max_tokens is not None:
            sampling = replace(sampling, max_tokens=min(sampling.max_tokens, self.options.max_tokens))
        if template is self.templates.map and "max_tokens" not in self.explicit:
            sampling = replace(sampling, max_tokens=min(sampling.max_tokens, self._notes_cap()))
        return sampling

    def _notes_cap(self) -> int:
        """Notes take at most a quarter of what the map prompt leaves of the context (less
        two labels), so a small --ctx still holds a chunk, and two notes per condensing
        call; unless the user chose --max-tokens."""
        if self._cap is None:
            params = self._params(source=self._label)
            prompt = self.backend.count(self.messages(self.templates.map, "x", params))
            labels = 2 * (self.count_text(self._label) + _LABEL_SLACK)
            self._cap = max(MIN_NOTES, (self.backend.n_ctx - prompt - self.options.margin - labels) // 4)
        return self._cap

    def _params(self, **extra: str) -> dict[str, str]:
        o = self.options
        return {"points": str(o.points), "style": o.style, "shape": o.shape, "source": self.source, **extra}

    def messages(self, template: Any, text: str, params: dict[str, str]) -> list[Message]:
        values = {k: v for k, v in params.items() if k in template.params}
        system, shots, user = template.render(text, values)
        return [*([Message("system", system)] if system else []), *shots, Message("user", user)]

    def _room(self, template: Any, params: dict[str, str], sampling: SamplingParams, reserve: int = 0) -> int:
        """Tokens of text that fit ``template``'s {input}: the context minus the rendered
        prompt (counted by the backend around a one-character probe), the answer,
        ``reserve`` and the margin."""
        probe = "x"
        prompt = self.backend.count(self.messages(template, probe, params)) - self.count_text(probe)
        return self.backend.n_ctx - prompt - sampling.max_tokens - reserve - self.options.margin

    def _fits(self, messages: list[Message], sampling: SamplingParams) -> bool:
        """Exact: the real count of the rendered request, as the backend checks it."""
        return self.backend.count(messages) + sampling.max_tokens <= self.backend.n_ctx

    def _refuse(self, error: DocumentBudgetError, what: str) -> None:
        """Where an exact count stops the summary with ``error``: an estimate (a server that
        cannot count) only warns that ``what`` may not fit, once a summary (the first place
        it says so), and the summary goes on."""
        if not self.server_decides:
            raise error
        if not self._estimate_warned:
            self._estimate_warned = True
            self.warnings.append(
                f"{what} may not fit the context of {self.backend.n_ctx:,} tokens (estimated: the server cannot "
                "count them); sent anyway, the server decides"
            )

    def _too_small(self, room: int, template: Any, sampling: SamplingParams, need: int) -> DocumentBudgetError:
        return DocumentBudgetError(
            f"the context ({self.backend.n_ctx:,} tokens) leaves {max(room, 0):,} tokens for text after the "
            f"{template.name} prompt and {sampling.max_tokens:,} answer tokens; {need:,} are needed. "
            f"Raise --ctx or lower --max-tokens"
        )

    # --- planning: chunks, strategy, ledger (no model calls, only counting)

    def plan(self, documents: Sequence[Document]) -> Plan:
        documents = list(documents)
        if not documents:
            raise UsageError("nothing to summarize: give a file, or - for stdin")
        self.source = _names(documents)
        self._label = _probe_label(documents)  # as long as any chunk's label can be
        from localassist.documents.profile import csv_facts

        facts = "\n\n".join(csv_facts(d) for d in documents if d.kind == "csv") or None
        strategy = self.options.strategy
        if strategy in ("auto", "stuff"):
            plan = self._plan_stuff(documents, facts)
            if plan is not None:
                return plan
            if strategy == "stuff":
                self._refuse(
                    DocumentBudgetError(
                        f"{self.source} does not fit one call in a {self.backend.n_ctx:,}-token context; "
                        f"use --strategy map-reduce (or auto), or raise --ctx"
                    ),
                    f"{self.source} in one call (--strategy stuff)",
                )
                plan = self._plan_stuff(documents, facts, anyway=True)
                assert plan is not None
                return plan
            strategy = "map-reduce"
        if strategy == "map-reduce":
            template = self.templates.map
            sampling = self.sampling_for(template)
            budget = self._room(template, self._params(source=self._label), sampling)
            # a condensing call must hold at least two notes, or a level could never shrink them;
            # the final call at least one
            note = sampling.max_tokens + self.count_text(self._label) + _LABEL_SLACK
            final = self.templates.reduce
            for tpl, smp, need in ((template, sampling, 2 * note), (final, self.sampling_for(final, final=True), note)):
                room = self._room(tpl, self._params(source=self._label), smp)
                if room < need:
                    self._refuse(self._too_small(room, tpl, smp, need), f"the {tpl.name} prompt with its notes")
        else:  # refine: room for the summary so far as well
            template = self.templates.refine
            sampling = self.sampling_for(template)
            summary = max(sampling.max_tokens, self.sampling_for(self.templates.stuff).max_tokens)
            budget = self._room(template, self._params(summary="", part=self._label), sampling, reserve=summary)
        if budget < MIN_CHUNK:
            self._refuse(self._too_small(budget, template, sampling, MIN_CHUNK), f"the {template.name} prompt")
            budget = MIN_CHUNK
        chunks = [(d, chunk_document(d, budget, self.count_text)) for d in documents]
        return self._make_plan(strategy, chunks, budget, facts)

    def _plan_stuff(self, documents: list[Document], facts: str | None, *, anyway: bool = False) -> Plan | None:
        """The plan for one call, or None if it does not fit (``anyway``: the plan even then)."""
        template = self.templates.stuff
        sampling = self.sampling_for(template, final=True)
        limit = self.backend.n_ctx - sampling.max_tokens - self.options.margin
        if anyway:
            limit = max(MIN_CHUNK, limit)
        total = sum(self.count_text(p.text) for d in documents for p in d.pieces)
        if total > limit and not anyway:  # a quick no: the text alone is too long
            return None
        chunks = [(d, chunk_document(d, limit, self.count_text)) for d in documents]
        plan = self._make_plan("stuff", chunks, limit, facts)
        if not anyway and not self._fits(self.messages(template, self._stuff_text(plan), self._params()), sampling):
            return None
        return plan

    def _make_plan(
        self, strategy: str, chunks: list[tuple[Document, list[Chunk]]], budget: int, facts: str | None
    ) -> Plan:
        sections: list[Section] = []
        ledgers = []
        first = 0
        for document, doc_chunks in chunks:
            ledgers.append(_check_coverage(document, doc_chunks))
            for group in ([c] for c in doc_chunks) if strategy == "stuff" else self._pack(doc_chunks, budget):
                sections.append(Section(len(sections), document, group, first))
                first += len(group)
        return Plan(strategy, [d for d, _ in chunks], sections, Ledger(ledgers), budget, facts)

    def _pack(self, chunks: list[Chunk], budget: int) -> list[list[Chunk]]:
        """Consecutive chunks, as many per call as the budget holds (the joined text
        counted for real): a 100-page PDF of short pages is a few calls, not a hundred."""
        groups: list[list[Chunk]] = []
        current: list[Chunk] = []
        for chunk in chunks:
            trial = [*current, chunk]
            if current and (sum(c.tokens for c in trial) > budget or self.count_text(_joined(trial)) > budget):
                groups.append(current)
                trial = [chunk]
            current = trial
        if current:
            groups.append(current)
        return groups

    # --- running

    def start(self, plan: Plan) -> SummaryRun:
        """Run the map (or refine) and reduce steps; return the final call, not yet iterated.
        Ctrl-C stops between tokens: notes already made stay cached, KeyboardInterrupt goes on up."""
        if plan.strategy == "stuff":
            stream = self._final(plan, self.templates.stuff, self._stuff_text(plan), self._params())
            plan.ledger.summarized.update(i for s in plan.sections for i in s.chunk_indexes)
        elif plan.strategy == "map-reduce":
            self._map(plan)
            stream = self._reduce(plan)
        else:
            stream = self._refine(plan)
        return SummaryRun(self, plan, stream)

    def _stuff_text(self, plan: Plan) -> str:
        blocks = [f"[{s.label}]\n{s.text.strip()}" for s in plan.sections]
        return "\n\n".join(([plan.facts] if plan.facts else []) + blocks)

    def _map(self, plan: Plan) -> None:
        template = self.templates.map
        sampling = self.sampling_for(template)
        chunks = plan.ledger.chunks  # progress counts chunks, as the ledger does
        for section in plan.sections:
            self._report("map", section.first, chunks)
            params = self._params(source=section.label)
            key = self._key(section, section.sha256, template, params, sampling)
            notes = self._cached(key)
            if notes is not None:
                section.cached = True
                self.usage.map_cached += 1
            else:
                done = self._call(template, section.text, params, sampling, "map", section.first, chunks)
                self.usage.map_calls += 1
                notes = done.text.strip()
                self._store(key, notes, section, template, done)
            section.notes = notes
            plan.ledger.summarized.update(section.chunk_indexes)
        self._report("map", chunks, chunks)

    def _reduce(self, plan: Plan) -> ChatStream:
        """Group the notes under the budget and condense each group (with the map prompt)
        until all of them fit the final reduce call."""
        final = self.templates.reduce
        final_sampling = self.sampling_for(final, final=True)
        condense = self.templates.map
        sampling = self.sampling_for(condense)
        items = [_Notes(s.notes or "", [c.locator for c in s.chunks]) for s in plan.sections]
        level = 0
        while True:
            text = _notes_text(items, plan.facts)
            if self._fits(self.messages(final, text, self._params()), final_sampling):
                break
            if level == self.options.max_depth:
                self._refuse(
                    DocumentBudgetError(
                        f"the notes on {plan.ledger.chunks:,} chunks still do not fit one call after "
                        f"{self.options.max_depth} reduce levels; raise --ctx or lower --max-tokens "
                        "(nothing was clipped)"
                    ),
                    f"the notes on {plan.ledger.chunks:,} chunks after {level} reduce levels",
                )
                break
            groups = self._group(items, condense, sampling)
            if len(groups) >= len(items):
                need = 2 * max(self.count_text(i.block()) for i in items)
                self._refuse(
                    self._too_small(0, condense, sampling, need), f"the notes on {plan.ledger.chunks:,} chunks"
                )
                break
            level += 1
            condensed = []
            for number, group in enumerate(groups):
                self._report("reduce", number, len(groups))
                merged = _Notes("", [loc for item in group for loc in item.locators])
                messages = self._condense_messages(condense, group)
                done = self._run(messages, sampling, "reduce", number, len(groups))
                self.usage.reduce_calls += 1
                merged.text = done.text.strip()
                condensed.append(merged)
            self._report("reduce", len(groups), len(groups))
            items = condensed
        self.usage.reduce_levels = level
        return self._final(plan, final, text, self._params())

    def _group(self, items: list[_Notes], template: Any, sampling: SamplingParams) -> list[list[_Notes]]:
        """Consecutive notes, as many per call as fit: each group is checked with the real
        count of the request that will condense it."""
        groups: list[list[_Notes]] = []
        current: list[_Notes] = []
        for item in items:
            if current and not self._fits(self._condense_messages(template, [*current, item]), sampling):
                groups.append(current)
                current = []
            current.append(item)
            if len(current) == 1 and not self._fits(self._condense_messages(template, current), sampling):
                if self.server_decides:  # an estimate: let _reduce decide whether to go on
                    continue
                raise self._too_small(0, template, sampling, self.count_text(item.block()))
        groups.append(current)
        return groups

    def _condense_messages(self, template: Any, group: list[_Notes]) -> list[Message]:
        merged = span_label([loc for item in group for loc in item.locators])
        return self.messages(template, _notes_text(group, None), self._params(source=merged))

    def _refine(self, plan: Plan) -> ChatStream:
        first, refine = self.templates.stuff, self.templates.refine
        total = len(plan.sections)
        chunks = plan.ledger.chunks
        summary = ""
        for section in plan.sections:
            last = section.index == total - 1
            if section.index == 0:
                template, params = first, self._params()
            else:
                template, params = refine, self._params(summary=summary, part=section.label)
            text = section.text
            if last:
                plan.ledger.summarized.update(section.chunk_indexes)
                return self._final(plan, template, text, params)
            self._report("refine", section.first, chunks)
            sampling = self.sampling_for(template)
            state = hashlib.sha256(f"{section.sha256}\0{summary}".encode()).hexdigest()
            key = self._key(section, state, template, params, sampling)
            cached = self._cached(key)
            if cached is not None:
                section.cached = True
                self.usage.refine_cached += 1
                summary = cached
            else:
                done = self._call(template, text, params, sampling, "refine", section.first, chunks)
                self.usage.refine_calls += 1
                summary = done.text.strip()
                self._store(key, summary, section, template, done)
            section.notes = summary
            plan.ledger.summarized.update(section.chunk_indexes)
        raise AssertionError("unreachable: the last section returns")

    def _final(self, plan: Plan, template: Any, text: str, params: dict[str, str]) -> ChatStream:
        self._report("summary", 0, 1)
        sampling = self.sampling_for(template, final=True)
        return self.backend.chat(ChatRequest(messages=tuple(self.messages(template, text, params)), sampling=sampling))

    def _call(
        self,
        template: Any,
        text: str,
        params: dict[str, str],
        sampling: SamplingParams,
        stage: str,
        step: int,
        total: int,
    ) -> Done:
        return self._run(self.messages(template, text, params), sampling, stage, step, total)

    def _run(self, messages: list[Message], sampling: SamplingParams, stage: str, step: int, total: int) -> Done:
        """One model call run to its end. Ctrl-C cancels it (its partial text is dropped,
        never cached) and goes on up."""
        stream = self.backend.chat(ChatRequest(messages=tuple(messages), sampling=sampling))
        try:
            for event in stream:
                if isinstance(event, TextDelta):
                    self._tokens += len(event.tokens) or 1
                    self._report(stage, step, total)
        except KeyboardInterrupt:
            stream.cancel()
            self.usage.add(stream.result())
            raise
        done = stream.result()
        self.usage.add(done)
        if done.cancelled:  # cancelled by someone else (another thread): stop the same way
            raise KeyboardInterrupt
        return done

    def _report(self, stage: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            cached = self.usage.map_cached + self.usage.refine_cached
            self.on_progress(Progress(stage, done, total, self._tokens, self.usage.engine_s, cached))

    # --- the cache

    def _key(
        self, section: Section, state: str, template: Any, params: dict[str, str], sampling: SamplingParams
    ) -> str:
        if self.cache is None:
            return ""
        values = {k: v for k, v in params.items() if k in template.params}
        prompt = json.dumps(
            {
                "version": PROMPT_VERSION,
                "template": [template.name, template.system, template.prompt, template.examples],
                "params": values,
                "sampling": asdict(sampling),
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        prompt_hash = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        return cache_key(section.document.sha256, section.first, state, self._model_id, prompt_hash)

    def _cached(self, key: str) -> str | None:
        if self.cache is None:
            return None
        try:
            return self.cache.get(key)
        except CacheError as error:
            self._drop_cache(error)
            return None

    def _store(self, key: str, text: str, section: Section, template: Any, done: Done) -> None:
        if self.cache is None or done.cancelled:
            return
        try:
            self.cache.put(
                key,
                text,
                document=section.document.sha256,
                index=section.first,
                chunk=section.sha256,
                model=self._model_id,
                prompt=template.name,
                finish=done.finish_reason,
            )
        except CacheError as error:
            self._drop_cache(error)

    def _drop_cache(self, error: CacheError) -> None:
        self.warnings.append(f"{error}; going on without it")
        self.cache = None


# --- helpers


@dataclass
class _Notes:
    text: str
    locators: list[Locator]

    @property
    def label(self) -> str:
        return str(self.locators[0]) if len(self.locators) == 1 else span_label(self.locators)

    def block(self) -> str:
        return f"[{self.label}]\n{self.text or '(no notes)'}"


def _joined(chunks: Sequence[Chunk]) -> str:
    if len(chunks) == 1:
        return chunks[0].text
    return "\n\n".join(f"[{c.locator}]\n{c.text.strip()}" for c in chunks)


def _notes_text(items: Sequence[_Notes], facts: str | None) -> str:
    return "\n\n".join(([facts] if facts else []) + [item.block() for item in items])


def span_label(locators: Sequence[Locator]) -> str:
    """``report.pdf p.3–9``, ``notes.md L1–240``, ``sales.csv L2–81``: where a run of
    chunks comes from, per file."""
    by_path: dict[str, list[Locator]] = {}
    for locator in locators:
        by_path.setdefault(locator.path, []).append(locator)
    parts = []
    for path, locs in by_path.items():
        name = _name(path)
        pages = [x.page for x in locs if x.page is not None]
        rows = [r for x in locs for r in (x.row_start, x.row_end) if r is not None]
        lines = [n for x in locs for n in (x.line_start, x.line_end) if n is not None]
        if pages:
            parts.append(f"{name} {_range('p.', min(pages), max(pages))}")
        elif lines:  # CSV rows too: line 1 of a CSV is its header, so its lines are what a reader finds
            parts.append(f"{name} {_range('L', min(lines), max(lines))}")
        elif rows:
            parts.append(f"{name} {_range('rows ' if min(rows) != max(rows) else 'row ', min(rows), max(rows))}")
        else:
            parts.append(name)
    return ", ".join(parts)


def _range(prefix: str, a: int, b: int) -> str:
    return f"{prefix}{a}" if a == b else f"{prefix}{a}–{b}"


def _name(path: str) -> str:
    return "stdin" if path == STDIN else path


def _names(documents: Sequence[Document]) -> str:
    names = [_name(d.path) for d in documents]
    if len(names) == 1:
        return names[0]
    if len(names) <= 3:
        return ", ".join(names[:-1]) + " and " + names[-1]
    return f"{len(names)} documents"


def _probe_label(documents: Sequence[Document]) -> str:
    """A label at least as long as any section's: the longest piece label, plus room for
    the wider range (lines, pages, rows) a chunk, or a run of chunks, can span."""
    longest = max((str(p.locator) for d in documents for p in d.pieces), key=len)
    widest = max(max(d.lines or 0, d.pages or 0, d.rows or 0) for d in documents)
    return f"{longest}–{widest}"


def _percent(value: float) -> str:
    return "100%" if value >= 100 else f"{min(value, 99.9):.1f}%".replace(".0%", "%")


def _check_coverage(document: Document, chunks: list[Chunk]) -> DocumentLedger:
    """Every page with text, every CSV row, every non-blank line is in some chunk."""
    ledger = DocumentLedger(document.path, document.kind, len(chunks))
    name = _name(document.path)
    if document.kind == "pdf":
        # a PDF's pieces and chunks all have a page: the None filter is for the type checker
        with_text = {page for p in document.pieces if (page := p.locator.page) is not None}
        covered = {page for c in chunks if (page := c.locator.page) is not None}
        if with_text - covered:
            raise CoverageError(f"internal error: {name} pages {sorted(with_text - covered)} are in no chunk")
        ledger.pages = document.pages
        ledger.pages_without_text = sorted(set(range(1, (document.pages or 0) + 1)) - with_text)
        return ledger
    if document.kind == "csv":
        covered = set()
        for c in chunks:
            covered.update(range(c.locator.row_start or 0, (c.locator.row_end or 0) + 1))
        missing = set(range(1, (document.rows or 0) + 1)) - covered
        if missing:
            raise CoverageError(f"internal error: {name} rows {sorted(missing)[:10]} are in no chunk")
        ledger.rows = document.rows
        return ledger
    covered = set()
    for c in chunks:
        covered.update(range(c.locator.line_start or 0, (c.locator.line_end or 0) + 1))
    for piece in document.pieces:
        missing = piece.source_lines() - covered
        if missing:
            raise CoverageError(f"internal error: {name} line {min(missing)} is in no chunk")
    ledger.lines = document.lines
    return ledger
