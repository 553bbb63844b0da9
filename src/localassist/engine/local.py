"""The local backend: a GGUF model run in-process by llama.cpp (llama-cpp-python).

``llama_cpp`` is imported here and only here, when a command needs a model. The
generation loop is our own over llama.cpp's context (not ``create_completion``): it
detokenizes incrementally, checks stop strings on the tail only, and reuses the KV
cache's common prefix, so only new prompt tokens are evaluated.

One ``LocalBackend`` may be shared by threads: every generation holds the backend's
lock from its first token to its last, and the cached prefix is measured when the
generation starts, not when the stream was created, so a stream started in between
can never evaluate its suffix on top of another prompt's KV cache.
"""

from __future__ import annotations

import ctypes
import random
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from localassist.engine.chat_templates import ChatTemplate, TemplateRenderer, choose_template
from localassist.engine.cpu import physical_cores, usable_cpus
from localassist.engine.detokenize import NATURAL_END, IncrementalDetokenizer
from localassist.engine.llama_log import LLAMA_LOG, LOAD_LOCK
from localassist.engine.structured import answer_check, response_format_grammar
from localassist.engine.tool_calls import ToolPlan
from localassist.engine.types import (
    BackendInfo,
    ChatRequest,
    ChatStream,
    Event,
    Grammar,
    GuidedGrammar,
    Message,
    SamplingParams,
    StreamState,
    TextDelta,
    ToolCallDelta,
)
from localassist.errors import BackendError, ContextOverflowError, ModelInvalidError, ToolsError, UsageError
from localassist.models.gguf_file import GGUFInfo, read_gguf_cached

if TYPE_CHECKING:
    from localassist.settings import Settings

DEFAULT_CTX_CAP = 8192
_RUN_CACHE_SIZE = 4096


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: everything ``LocalBackend`` needs from the settings."""

    ctx: int | None = None  # None: the model's training context, capped at DEFAULT_CTX_CAP
    threads: int | None = None  # None: physical cores
    batch: int = 512
    gpu_layers: str = "auto"  # auto | all | N
    flash_attn: bool = False
    repack: str = "auto"  # auto | on | off: llama.cpp's extra buffer types (engine/llama_load.py)
    chat_format: str | None = None
    embedding: bool = False
    verbose: bool = False  # llama.cpp's own log on stderr
    kv_snapshots: Path | None = None  # a folder: save conversations' KV state there and resume from it
    kv_cache_size: int = 2 * 10**9  # the folder's cap in bytes
    header_cache: Path | None = None  # a folder: remember GGUF headers there (models/gguf_file.py)

    @classmethod
    def from_settings(
        cls, settings: Settings, verbose: bool = False, embedding: bool = False, snapshots: bool = False
    ) -> LoadOptions:
        return cls(
            ctx=settings.ctx,
            threads=settings.threads,
            batch=settings.batch,
            gpu_layers=settings.gpu_layers,
            flash_attn=settings.flash_attn,
            repack=settings.repack,
            chat_format=None if embedding else settings.chat_format,  # embedding GGUFs carry no chat template
            embedding=embedding,
            verbose=verbose,
            kv_snapshots=settings.paths.cache_dir / "kv" if snapshots and settings.kv_cache_size > 0 else None,
            kv_cache_size=settings.kv_cache_size,
            header_cache=settings.paths.cache_dir / "gguf",
        )


def resolve_gpu_layers(value: str, gpu_supported: bool) -> int:
    """auto = every layer when this llama.cpp build can offload, else none."""
    if value == "auto":
        return -1 if gpu_supported else 0
    if value == "all":
        return -1
    return int(value)


class LocalBackend:
    """A loaded GGUF model. ``close()`` frees it."""

    def __init__(self, path: Path, name: str | None = None, options: LoadOptions | None = None) -> None:
        options = options or LoadOptions()
        self.options = options
        self.gguf: GGUFInfo = read_gguf_cached(path, options.header_cache)  # fails fast on a bad or truncated file
        self.model_name = name or str(path)
        self.path = path
        import llama_cpp

        from localassist.engine.llama_load import new_llama

        if not options.verbose:
            LLAMA_LOG.install(llama_cpp)
        self._llama_cpp = llama_cpp
        self.gpu_supported = bool(llama_cpp.llama_supports_gpu_offload())
        self.gpu_layers = resolve_gpu_layers(options.gpu_layers, self.gpu_supported)
        train_ctx = self.gguf.context_length or 4096
        self.n_ctx = options.ctx or min(train_ctx, DEFAULT_CTX_CAP)
        self.threads = options.threads or physical_cores()
        self.batch = max(options.batch, self.n_ctx) if options.embedding else options.batch
        template: ChatTemplate = choose_template(self.gguf.chat_template, self.gguf.architecture, options.chat_format)
        start = perf_counter()
        with LOAD_LOCK:
            LLAMA_LOG.start_load()
            try:
                self.llm, self.repack, self.repack_reason = new_llama(
                    repack=options.repack,
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    n_batch=self.batch,
                    n_ubatch=self.batch,
                    n_threads=self.threads,
                    n_threads_batch=max(self.threads, usable_cpus()),
                    n_gpu_layers=self.gpu_layers,
                    use_mmap=True,
                    flash_attn=options.flash_attn,
                    embedding=options.embedding,
                    verbose=options.verbose,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                reason = LLAMA_LOG.reason() or str(exc)
                raise ModelInvalidError(f"llama.cpp could not load {path}: {reason}") from None
            # What llama.cpp did, not what was asked: None when its log was not captured (-v).
            self.offloaded = LLAMA_LOG.offloaded if not options.verbose else None
            self.weight_buffers = tuple(dict.fromkeys(LLAMA_LOG.weight_buffers)) if not options.verbose else None
        self.load_seconds = perf_counter() - start
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread generating now
        self._vocab = self.llm._model.vocab
        self._piece_buf = ctypes.create_string_buffer(256)
        self._piece_cache: dict[int, bytes] = {}
        self._run_cache: dict[str, list[int]] = {}
        self._bos = self.llm.token_bos()
        self._add_bos = bool(self.llm._model.add_bos_token())
        self.renderer = TemplateRenderer(
            template,
            self.gguf.architecture,
            bos_text=self._token_bytes(self._bos, special=True).decode("utf-8", "replace"),
            eos_text=self._token_bytes(self.llm.token_eos(), special=True).decode("utf-8", "replace"),
        )
        self._grammars_checked: set[str] = set()
        self._snapshots = None  # KV snapshots on disk (kv_snapshots.py), when the options name a folder
        if options.kv_snapshots is not None and not options.embedding:
            from localassist.engine.kv_snapshots import for_backend

            self._snapshots = for_backend(self)
        self._marker_ids: set[int] | None = None

    @property
    def template(self) -> ChatTemplate:
        return self.renderer.template

    @property
    def is_base_model(self) -> bool:
        """A GGUF without a chat template is taken for a base (completion) model."""
        return self.gguf.chat_template is None

    # --- tokens

    def _token_bytes(self, token: int, special: bool = False) -> bytes:
        if not special and token in self._piece_cache:
            return self._piece_cache[token]
        buf = self._piece_buf
        n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:  # piece longer than the buffer: grow it once
            self._piece_buf = buf = ctypes.create_string_buffer(-n)
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        piece = buf.raw[:n]
        if not special:
            self._piece_cache[token] = piece
        return piece

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``; ``special`` parses control-token text (template markup only)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def render(self, messages: Sequence[Message]) -> str:
        return self.renderer.render(messages)

    def _is_control(self, token: int) -> bool:
        llama_cpp = self._llama_cpp
        attr = llama_cpp.llama_vocab_get_attr(self._vocab, token)
        return bool(attr & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN))

    def _template_fragments(self, text: str) -> list[str | int]:
        """Split template text at the control tokens llama.cpp finds in it."""
        out: list[str | int] = []
        pos = 0
        for token in self.tokenize(text, special=True):
            if not self._is_control(token):
                continue
            marker = self._token_bytes(token, special=True).decode("utf-8", "replace")
            at = text.find(marker, pos)
            if not marker or at < 0:
                continue
            out += [text[pos:at], token]
            pos = at + len(marker)
        out.append(text[pos:])
        return out

    def _run_tokens(self, run: str) -> list[int]:
        """A text run between control tokens, tokenized once: a growing chat renders the
        same runs again each turn, so only new ones cost a tokenizer call."""
        tokens = self._run_cache.get(run)
        if tokens is None:
            if len(self._run_cache) >= _RUN_CACHE_SIZE:
                self._run_cache.clear()
            tokens = self._run_cache[run] = self.tokenize(run)
        return tokens

    def chat_tokens(self, messages: Sequence[Message], tools: Sequence[dict] | None = None) -> list[int]:
        """Tokens of the rendered chat: control tokens only where the template wrote them.

        A message containing "<end_of_turn>" or "<|im_end|>" is tokenized as those
        characters, never as the control token (which would let pasted text end a turn
        or forge one). Text runs between control tokens are tokenized whole, exactly as
        llama.cpp tokenizes the rendered string, so benign prompts get the same tokens."""
        if not messages:  # nothing to render (templates index messages[0])
            return [self._bos] if self._add_bos else []
        fragments: list[str | int] = []
        for text, is_content in self.renderer.pieces(messages, tools):
            fragments += [text] if is_content else self._template_fragments(text)
        tokens: list[int] = []
        run = ""
        for fragment in [*fragments, -1]:
            if isinstance(fragment, str):
                run += fragment
                continue
            if run:
                tokens += self._run_tokens(run)
                run = ""
            if fragment >= 0:
                tokens.append(fragment)
        if self._add_bos and (not tokens or tokens[0] != self._bos):
            tokens.insert(0, self._bos)
        return tokens

    def count(self, messages: Sequence[Message]) -> int:
        """Prompt tokens of ``messages`` as ``chat`` would send them (template, BOS)."""
        return len(self.chat_tokens(messages))

    def _prompt_tokens(self, request: ChatRequest) -> list[int]:
        if request.prompt is not None:
            return self.tokenize(request.prompt, add_bos=True)
        return self.chat_tokens(request.messages, request.tools or None)

    # --- tools

    def _tool_input(self, request: ChatRequest) -> tuple[ChatRequest, ToolPlan | None, tuple[str, ...]]:
        """The request as this template takes it, how a call is generated (None: no calls),
        and stop strings it adds.

        A template with a tool format gets the tools and the tool messages as they are; any
        other gets the ReAct instructions in its system prompt and tool results folded into
        user turns. ``tool_choice`` none renders no tools and allows no call."""
        from localassist.engine import tool_calls as tc
        from localassist.tools.parsing import REACT_ACTION, detect_format

        fmt = detect_format(self.template.source) if self.renderer.supports_tools else "react"
        messages = list(request.messages)
        folded = fmt == "react" and any(m.role == "tool" or m.tool_calls for m in messages)
        if folded:
            messages = tc.fold_tool_messages(messages)
        if not request.tools or request.tool_choice == "none":
            # Earlier rounds' "Action:" lines are in the prompt and a model with no tools left
            # copies them: stop there, or a call that is never run would end the answer.
            return replace(request, messages=tuple(messages), tools=()), None, (REACT_ACTION,) if folded else ()
        if request.grammar is not None or (request.response_format and request.response_format.type != "text"):
            raise ToolsError("tools cannot be combined with a grammar or a JSON schema for the answer")
        specs = tc.tool_specs(request.tools)
        chosen, forced = tc.chosen_specs(specs, request.tool_choice)
        grammar = tc.call_grammar(tc.FORMATS[fmt], chosen, request.parallel_tool_calls)
        tools = request.tools
        if fmt == "react":
            system = messages[0].content if messages and messages[0].role == "system" else None
            messages, tools = tc.with_system(messages, tc.react_system(system, specs)), ()
        return replace(request, messages=tuple(messages), tools=tools), ToolPlan(tc.FORMATS[fmt], forced, grammar), ()

    def _marker_bytes(self, token: int) -> bytes:
        """A token's text, shown even when it is a control token if it is a tool-call marker
        (``<|python_tag|>`` is one in Llama 3's vocabulary)."""
        if self._marker_ids is None:
            from localassist.engine.tool_calls import MARKER_TOKENS

            found = (self.tokenize(marker, special=True) for marker in MARKER_TOKENS)
            self._marker_ids = {ids[0] for ids in found if len(ids) == 1}
        return self._token_bytes(token, special=token in self._marker_ids)

    def stop_strings(self, request: ChatRequest) -> tuple[str, ...]:
        params = request.sampling
        stops = params.stop
        if not stops and params.natural_end and (request.raw or self.is_base_model):
            stops = (NATURAL_END,)
        if request.raw:
            return stops
        return tuple(dict.fromkeys((*stops, *self.template.stops)))

    # --- grammars

    def check_grammar(self, grammar: str) -> None:
        """Parse ``grammar`` with llama.cpp before use: llama-cpp-python would otherwise add
        a NULL sampler for a bad grammar and crash the process."""
        if grammar in self._grammars_checked:
            return
        from localassist.engine.structured import parse_grammar

        parse_grammar(self._llama_cpp, self._vocab, grammar)
        self._grammars_checked.add(grammar)

    def _grammar_for(self, request: ChatRequest) -> Grammar | None:
        if request.grammar is not None:
            self.check_grammar(request.grammar)
            return request.grammar
        if request.response_format is not None and request.response_format.type != "text":
            return response_format_grammar(request.response_format)
        return None

    # --- generation

    def chat(self, request: ChatRequest) -> ChatStream:
        """Prepare the prompt (errors are raised here, before any token) and return the
        stream; generation starts when the stream is iterated."""
        if request.prompt is None and not request.messages:
            raise UsageError("nothing to generate from: no messages and no prompt")
        plan: ToolPlan | None = None
        tool_stops: tuple[str, ...] = ()
        check = answer_check(request)
        if request.prompt is None:
            request, plan, tool_stops = self._tool_input(request)
        elif request.tools:
            raise UsageError("tools need a chat (messages), not a raw prompt")
        grammar = self._grammar_for(request)
        tokens = self._prompt_tokens(request)
        max_tokens = request.sampling.max_tokens
        if len(tokens) + max_tokens > self.n_ctx:
            raise ContextOverflowError(len(tokens), max_tokens, self.n_ctx)
        stops = (*self.stop_strings(request), *tool_stops)
        state = StreamState(self.model_name, len(tokens), load_s=self.load_seconds)
        return ChatStream(
            state, lambda stream: self._generate(stream, tokens, request.sampling, stops, grammar, plan), check
        )

    def _cached_prefix(self, tokens: list[int]) -> int:
        """How many prompt tokens are already in llama.cpp's KV cache (at least one is
        re-evaluated, to get fresh logits)."""
        common = 0
        for a, b in zip(self.llm._input_ids, tokens, strict=False):
            if a != b:
                break
            common += 1
        return min(common, len(tokens) - 1)

    def _sampler(self, params: SamplingParams, grammar: Grammar | None):
        """The llama.cpp sampler chain: penalties, grammar, then greedy or top-k/top-p/min-p/temp.
        A GBNF grammar (``--grammar``) is llama.cpp's own sampler; a JSON schema or a tool
        call is an llguidance grammar applied by :class:`GrammarSampler`."""
        from llama_cpp._internals import LlamaSampler

        sampler = LlamaSampler()
        n_vocab = self.llm.n_vocab()
        if params.ignore_eos:
            eog = {t for t in (self.llm.token_eos(), self.llm._model.token_eot()) if t >= 0}
            sampler.add_logit_bias(n_vocab, {t: float("-inf") for t in eog})
        if params.repeat_penalty != 1.0:
            sampler.add_penalties(n_vocab, 64, params.repeat_penalty, 0.0, 0.0)
        chosen: Any = sampler
        if isinstance(grammar, GuidedGrammar):
            from localassist.engine.constrained import GrammarSampler

            greedy = params.temperature == 0
            chosen = GrammarSampler(sampler, self.guidance_tokenizer(), grammar.text, n_vocab, greedy)
        elif grammar:
            from llama_cpp.llama_grammar import LlamaGrammar

            sampler.add_grammar(self.llm._model, LlamaGrammar.from_string(grammar, verbose=False))
        if params.temperature == 0:
            sampler.add_greedy()
        else:
            if params.top_k > 0:
                sampler.add_top_k(params.top_k)
            sampler.add_top_p(params.top_p, 1)
            sampler.add_min_p(params.min_p, 1)
            sampler.add_temp(params.temperature)
            seed = params.seed if params.seed >= 0 else random.randint(0, 2**32 - 1)
            sampler.add_dist(seed)
        return chosen

    def prepare_guidance(self) -> None:
        """Build the grammar engine's tokenizer in the background (a server does this at
        start, so its first schema does not wait ~2 s for a 262k vocabulary)."""
        self._guidance_thread = threading.Thread(target=self.guidance_tokenizer, name="guidance-tokenizer", daemon=True)
        self._guidance_thread.start()

    def guidance_tokenizer(self) -> Any:
        """llguidance's view of this model's vocabulary (built on first use, then kept)."""
        from localassist.engine.constrained import tokenizer_for

        return tokenizer_for(self.llm._model)

    def _generate(
        self,
        stream: ChatStream,
        tokens: list[int],
        params: SamplingParams,
        stops: tuple[str, ...],
        grammar: Grammar | None,
        plan: ToolPlan | None = None,
    ) -> Generator[Event, None, None]:
        state = stream.state
        if self._owner == threading.get_ident():
            # the lock would wait for ourselves: two streams of one model interleaved in one thread
            raise BackendError("another answer of this model is still streaming in this thread: finish or cancel it")
        with self._lock:
            self._owner = threading.get_ident()
            try:
                if plan is None:
                    yield from self._decode(stream, state, tokens, params, stops, grammar)
                else:
                    yield from self._decode_tools(stream, state, tokens, params, stops, plan)
                if self._snapshots is not None:  # the conversation's KV state, written in the background
                    self._snapshots.save(self.llm)
            finally:
                self._owner = None
        yield state.done()

    def _decode(
        self,
        stream: ChatStream,
        state: StreamState,
        tokens: list[int],
        params: SamplingParams,
        stops: tuple[str, ...],
        grammar: Grammar | None,
        token_bytes: Callable[[int], bytes] | None = None,
    ) -> Generator[TextDelta, None, None]:
        """Evaluate the prompt past the cached prefix, then sample and evaluate one token at
        a time until an end-of-generation token, a stop string, max_tokens or cancel."""
        llm = self.llm
        detok = IncrementalDetokenizer(token_bytes or self._token_bytes, stops)
        sampler = self._sampler(params, grammar)
        state.t_start = perf_counter()
        try:
            if self._snapshots is not None:  # a longer prefix saved by an earlier process, if any
                self._snapshots.restore(llm, tokens)
            reuse = self._cached_prefix(tokens)
            if reuse > 0 and llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
                llm.n_tokens = reuse
            else:  # nothing cached, or a model whose cache cannot be cut: start over
                llm.reset()
                reuse = 0
            state.cached_tokens = reuse
            for start in range(reuse, len(tokens), self.batch):  # a cancel lands between batches
                if stream.cancelled:
                    state.finish_reason = "cancelled"
                    return
                llm.eval(tokens[start : start + self.batch])
            ctx = llm._ctx
            is_eog = self.is_end_of_generation
            check_eog = not params.ignore_eos
            pending: list[int] = []
            while True:
                if stream.cancelled:
                    state.finish_reason = "cancelled"
                    break
                token = sampler.sample(ctx, -1)
                if state.t_first is None:
                    state.t_first = perf_counter()
                if check_eog and is_eog(token):
                    state.finish_reason = "stop"
                    break
                state.completion_tokens += 1
                pending.append(token)
                text = detok.push(token)
                if text:
                    state.parts.append(text)
                    yield TextDelta(text, tuple(pending))
                    pending = []
                if detok.stopped:
                    state.finish_reason = "stop"
                    break
                if state.completion_tokens >= params.max_tokens:
                    state.finish_reason = "length"
                    break
                llm.eval((token,))
            tail = detok.flush()
            if tail or pending:
                state.parts.append(tail)
                yield TextDelta(tail, tuple(pending))
        finally:
            sampler.close()
            state.t_end = perf_counter()

    def _decode_tools(
        self,
        stream: ChatStream,
        state: StreamState,
        tokens: list[int],
        params: SamplingParams,
        stops: tuple[str, ...],
        plan: ToolPlan,
    ) -> Generator[TextDelta | ToolCallDelta, None, None]:
        """Stream the answer until a tool call's marker, then put the marker in the prompt and
        generate the call under the plan's grammar (a forced call starts there). The marker
        and the call never reach the text: they come out as ``ToolCallDelta`` events."""
        from localassist.engine.tool_calls import CallSplitter, CallWatcher

        shown: list[str] = []
        try:
            content, marker = "", plan.fmt.prefill
            if not plan.forced:
                watcher = CallWatcher(plan.fmt.name)
                answer = self._decode(stream, state, tokens, params, (*stops, *plan.stops), None, self._marker_bytes)
                try:
                    for delta in answer:
                        text = watcher.push(delta.text)
                        if text:
                            shown.append(text)
                            yield TextDelta(text, delta.tokens)
                        if watcher.start is not None:
                            break
                finally:
                    answer.close()
                    state.t_end = None  # the generation goes on
                if watcher.start is None:
                    if tail := watcher.flush():
                        shown.append(tail)
                        yield TextDelta(tail)
                    return
                content, marker = watcher.content, watcher.marker()
            call_tokens = [*tokens, *self.tokenize(content), *self.tokenize(marker, special=True)]
            left = params.max_tokens - state.completion_tokens
            if stream.cancelled or left <= 0 or len(call_tokens) + left > self.n_ctx:
                state.finish_reason = "cancelled" if stream.cancelled else "length"
                return
            started, cached = state.t_start, state.cached_tokens
            splitter = CallSplitter(plan.fmt)
            call = self._decode(stream, state, call_tokens, params, (), plan.grammar, self._marker_bytes)
            try:
                for delta in call:
                    yield from splitter.feed(delta.text)
            finally:
                call.close()
                if not plan.forced:  # the answer's prompt and timing, not the call's continuation
                    state.t_start, state.cached_tokens = started, cached
            state.tool_calls = list(splitter.calls)
            if splitter.calls and state.finish_reason == "stop":
                state.finish_reason = "tool_calls"
        finally:
            state.parts[:] = shown

    # --- embeddings

    @property
    def embedding_limit(self) -> int:
        """The longest input ``embed`` takes: a whole sequence must fit one micro-batch."""
        return min(self.n_ctx, self.batch)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text (per-token outputs of a model without pooling, such as a
        chat model used as a stand-in, are averaged). A text longer than
        ``embedding_limit`` is an error: llama-cpp-python's ``Llama.embed`` would keep
        only its beginning."""
        if not self.options.embedding:
            raise BackendError(f"{self.model_name} was loaded for generation, not embeddings")
        limit = self.embedding_limit
        for text in texts:
            n = len(self.tokenize(text, add_bos=True))  # exactly the call Llama.embed makes
            if n > limit:
                raise BackendError(
                    f"an input of {n:,} tokens is longer than the {limit:,} the embedding model takes at once; "
                    "split it (or raise --ctx up to the model's context)"
                )
        if not texts:
            return []
        with self._lock:
            raw = self.llm.embed(list(texts), normalize=False, truncate=False)
        return [_pooled(vector) for vector in raw]

    # --- reports

    def offload_report(self) -> str:
        """Layers on the GPU as llama.cpp reported them at load, not as requested."""
        if not self.gpu_supported:
            return "0 (this llama.cpp build is CPU-only)"
        if self.offloaded is not None:
            return f"{self.offloaded[0]}/{self.offloaded[1]}"
        requested = "all" if self.gpu_layers < 0 else str(self.gpu_layers)
        return f"{requested} requested (llama.cpp's own log above says how many it offloaded)"

    def info(self) -> BackendInfo:
        return BackendInfo(
            model=self.model_name,
            n_ctx=self.n_ctx,
            remote=False,
            tools=True,
            grammar=True,
            embeddings=self.options.embedding,
            embedding_dimension=int(self.llm.n_embd()) if self.llm is not None else None,
            details={
                "model": self.model_name,
                "path": str(self.path),
                "backend": "llama.cpp " + ("GPU offload" if self.gpu_supported else "CPU only"),
                "gpu_layers": self.offload_report(),
                "ctx": self.n_ctx,
                "threads": self.threads,
                "batch": self.batch,
                "flash_attn": self.options.flash_attn,
                "repack": f"{'on' if self.repack else 'off'} ({self.repack_reason})",
                **({"weights": "+".join(self.weight_buffers)} if self.weight_buffers else {}),
                "chat_template": self.template.name,
                "load_s": round(self.load_seconds, 3),
            },
        )

    def describe(self) -> dict[str, object]:
        return self.info().details

    def close(self) -> None:
        if (snapshots := getattr(self, "_snapshots", None)) is not None:
            snapshots.flush()  # a snapshot being written is finished, not lost
        llm = getattr(self, "llm", None)
        building = getattr(self, "_guidance_thread", None)
        if building is not None:
            building.join()  # it reads the vocabulary: never free the model under it
        if llm is not None:
            from localassist.engine.constrained import forget_tokenizer

            forget_tokenizer(llm._model)
            with self._lock:
                llm.close()
                self.llm = None


def _pooled(vector: Sequence[Any]) -> list[float]:
    if vector and isinstance(vector[0], (list, tuple)):
        width = len(vector[0])
        return [sum(row[i] for row in vector) / len(vector) for i in range(width)]
    return [float(x) for x in vector]
