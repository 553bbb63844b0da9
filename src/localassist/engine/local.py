"""The local backend: a GGUF model run in-process by llama.cpp (llama-cpp-python).

``llama_cpp`` is imported here and only here, when a command needs a model.
Generation drives ``Llama.generate()`` directly instead of ``create_completion``:
the loop detokenizes incrementally, checks stop strings on the tail only, and keeps
llama.cpp's KV-cache prefix reuse (only new prompt tokens are evaluated).
"""

from __future__ import annotations

import ctypes
import os
import random
import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from time import perf_counter
from typing import Any

from localassist.engine.chat_templates import ChatTemplate, choose_template, content_mark, fallback_name, split_marked
from localassist.engine.detokenize import IncrementalDetokenizer
from localassist.engine.types import Message, Prompt, SamplingParams, TextStream
from localassist.errors import BackendError, ContextOverflowError, ModelInvalidError, UsageError
from localassist.models.gguf_file import GGUFInfo, read_gguf
from localassist.models.resolve import ResolvedModel
from localassist.settings import Settings

DEFAULT_CTX_CAP = 8192
NATURAL_END = "\n\n"  # where a base model's completion stops when no stop string is given
# ggml's log levels (ggml.h): 3 warnings, 4 errors, 5 the continuation of the previous line
_WARN, _ERROR, _CONT = 3, 4, 5
_OFFLOAD_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")


class _LlamaLog:
    """llama.cpp's log, kept off the terminal (unless -v) but remembered: the last
    warnings and errors explain a failed load, and the offload line says how many
    layers really went to the GPU. Installed once per process; llama.cpp may call it
    from any thread, so it takes a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tail: deque[tuple[int, str]] = deque(maxlen=40)
        self.offloaded: tuple[int, int] | None = None
        self._keeping = False
        self._callback: Any = None  # kept referenced: llama.cpp holds a raw pointer to it

    def install(self, llama_cpp: Any) -> None:
        with self.lock:
            if self._callback is None:

                @llama_cpp.llama_log_callback
                def _callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
                    self._record(level, text.decode("utf-8", "replace"))

                self._callback = _callback
            llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _record(self, level: int, text: str) -> None:
        with self.lock:
            if found := _OFFLOAD_RE.search(text):
                self.offloaded = (int(found.group(1)), int(found.group(2)))
            if level == _CONT and self._keeping and self.tail:
                kept_level, kept = self.tail[-1]
                self.tail[-1] = (kept_level, kept + text.rstrip("\n"))
                return
            self._keeping = level in (_WARN, _ERROR)
            if self._keeping and text.strip():
                self.tail.append((level, text.strip()))

    def reason(self) -> str | None:
        """The first error since the load began (the cause; later ones say "failed to
        load"), without llama.cpp's function-name prefix; else the last warning."""
        with self.lock:
            lines = list(self.tail)
        errors = [text for level, text in lines if level == _ERROR]
        line = errors[0] if errors else (lines[-1][1] if lines else None)
        return re.sub(r"^\w+: ", "", line) if line else None

    def start_load(self) -> None:
        with self.lock:
            self.tail.clear()
            self.offloaded = None


_LOG = _LlamaLog()
_LOAD_LOCK = threading.Lock()  # one load at a time, so the log lines read after it are its own


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, e.g. under taskset or a
    container's cpuset), not every CPU of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores this process may use (llama-cpp-python defaults to cpu_count // 2)."""
    usable = usable_cpus()
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            physical = core = ""
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    core = value.strip()
                    cores.add((physical, core))
    except OSError:
        pass
    if not cores and hasattr(os, "sysconf"):
        try:
            import subprocess

            out = subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True, timeout=2).stdout
            return max(1, min(int(out.strip()), usable))
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return max(1, min(len(cores) or usable, usable))


def resolve_gpu_layers(value: str, gpu_supported: bool) -> int:
    """auto = every layer when this llama.cpp build can offload, else none."""
    if value == "auto":
        return -1 if gpu_supported else 0
    if value == "all":
        return -1
    return int(value)


class LocalBackend:
    """A loaded GGUF model. Construct it once per process; ``close()`` frees it."""

    def __init__(self, model: ResolvedModel, settings: Settings, verbose: bool = False) -> None:
        self.info: GGUFInfo = read_gguf(model.path)  # fails fast on a bad or truncated file
        self.model_name = model.name
        self.path = model.path
        self.template: ChatTemplate = choose_template(
            self.info.chat_template, self.info.architecture, settings.chat_format
        )
        import llama_cpp

        if not verbose:
            _LOG.install(llama_cpp)
        self.verbose = verbose
        self._llama_cpp = llama_cpp
        self.gpu_supported = bool(llama_cpp.llama_supports_gpu_offload())
        self.gpu_layers = resolve_gpu_layers(settings.gpu_layers, self.gpu_supported)
        train_ctx = self.info.context_length or 4096
        self.n_ctx = settings.ctx or min(train_ctx, DEFAULT_CTX_CAP)
        self.threads = settings.threads or physical_cores()
        self.batch = settings.batch
        self.flash_attn = settings.flash_attn
        start = perf_counter()
        with _LOAD_LOCK:
            _LOG.start_load()
            try:
                self.llm = llama_cpp.Llama(
                    model_path=str(model.path),
                    n_ctx=self.n_ctx,
                    n_batch=self.batch,
                    n_ubatch=self.batch,
                    n_threads=self.threads,
                    n_threads_batch=max(self.threads, usable_cpus()),
                    n_gpu_layers=self.gpu_layers,
                    use_mmap=True,
                    flash_attn=settings.flash_attn,
                    verbose=verbose,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                reason = _LOG.reason() or str(exc)
                raise ModelInvalidError(f"llama.cpp could not load {model.path}: {reason}") from None
            # What llama.cpp did, not what was asked: None when its log was not captured (-v).
            self.offloaded = _LOG.offloaded if not verbose else None
        self.load_seconds = perf_counter() - start
        self._vocab = self.llm._model.vocab
        self._piece_buf = ctypes.create_string_buffer(256)
        self._piece_cache: dict[int, bytes] = {}
        self._bos = self.llm.token_bos()
        self._add_bos = bool(self.llm._model.add_bos_token())
        self._eos_text = self._token_bytes(self.llm.token_eos(), special=True).decode("utf-8", "replace")
        self._bos_text = self._token_bytes(self._bos, special=True).decode("utf-8", "replace")
        self._formatter: Any = None
        self._folds_system: bool | None = None

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

    def tokenize(self, text: str, *, special: bool, add_bos: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def _formatter_for_template(self):
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(
                template=self.template.source, eos_token=self._eos_text, bos_token=self._bos_text
            )
        return self._formatter

    def _apply_template(self, messages: list[Message]) -> str:
        try:
            formatter = self._formatter_for_template()
            return formatter(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
        except Exception as exc:  # jinja2 raises many kinds; the template is data from the file
            suggestion = fallback_name(self.info.architecture)
            raise BackendError(
                f"the chat template ({self.template.name}) failed: {exc}; "
                f"try --chat-format {suggestion if suggestion != self.template.name else 'chatml'}, or --raw"
            ) from None

    @property
    def folds_system(self) -> bool:
        """Whether the template refuses a system message (Gemma 2's raises), found once by
        rendering a probe; such templates get the system prompt in the first user turn."""
        if self._folds_system is None:
            try:
                self._apply_template([Message("system", "s"), Message("user", "u")])
                self._folds_system = False
            except BackendError:
                try:
                    self._apply_template([Message("user", "u")])
                except BackendError:
                    self._folds_system = False  # the template is broken anyway: report its own error
                else:
                    self._folds_system = True
        return self._folds_system

    def _template_messages(self, messages: list[Message]) -> list[Message]:
        if not messages or messages[0].role != "system" or not self.folds_system:
            return messages
        system, rest = messages[0].content, messages[1:]
        if rest and rest[0].role == "user":
            return [replace(rest[0], content=f"{system}\n\n{rest[0].content}"), *rest[1:]]
        return [Message("user", system), *rest]

    def render(self, messages: list[Message]) -> str:
        """The chat template applied to ``messages``, ending with the assistant's turn."""
        return self._apply_template(self._template_messages(messages))

    def render_pieces(self, messages: list[Message]) -> list[tuple[str, bool]]:
        """The rendered prompt as ``(text, is_content)`` pieces: what the template wrote
        (which may hold control tokens) and what the messages hold (which is data).

        Found by rendering once with a placeholder per message; when the template
        transforms content (``| trim``), the transformed content is used if it reproduces
        the real rendering, else the content as given (safe either way)."""
        messages = self._template_messages(messages)
        plain = self._apply_template(messages)
        marked = self._apply_template([replace(m, content=content_mark(i)) for i, m in enumerate(messages)])
        pieces: list[tuple[str, bool]] = []
        for transform in (lambda text: text, str.strip):
            pieces = split_marked(marked, [transform(m.content) for m in messages])
            if "".join(text for text, _ in pieces) == plain:
                break
        return pieces

    def _is_control(self, token: int) -> bool:
        llama_cpp = self._llama_cpp
        attr = llama_cpp.llama_token_get_attr(self._vocab, token)
        return bool(attr & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN))

    def _template_fragments(self, text: str) -> list[str | int]:
        """Split template text at the control tokens llama.cpp finds in it."""
        out: list[str | int] = []
        pos = 0
        for token in self.tokenize(text, special=True, add_bos=False):
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

    def chat_tokens(self, messages: list[Message]) -> list[int]:
        """Tokens of the rendered chat: control tokens only where the template wrote them.

        A message containing "<end_of_turn>" or "<|im_end|>" is tokenized as those
        characters, never as the control token (which would let pasted text end a turn
        or forge one). Text runs between control tokens are tokenized whole, exactly as
        llama.cpp tokenizes the rendered string, so benign prompts get the same tokens."""
        if not messages:  # nothing to render (templates index messages[0])
            return [self._bos] if self._add_bos else []
        fragments: list[str | int] = []
        for text, is_content in self.render_pieces(messages):
            fragments += [text] if is_content else self._template_fragments(text)
        tokens: list[int] = []
        run = ""
        for fragment in [*fragments, -1]:
            if isinstance(fragment, str):
                run += fragment
                continue
            if run:
                tokens += self.tokenize(run, special=False, add_bos=False)
                run = ""
            if fragment >= 0:
                tokens.append(fragment)
        if self._add_bos and (not tokens or tokens[0] != self._bos):
            tokens.insert(0, self._bos)
        return tokens

    def prompt_tokens(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenize(prompt, special=False, add_bos=True)
        return self.chat_tokens(prompt)

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self.prompt_tokens(prompt))

    @property
    def is_base_model(self) -> bool:
        """A GGUF without a chat template is taken for a base (completion) model."""
        return self.info.chat_template is None

    def stop_strings(self, prompt: Prompt, params: SamplingParams) -> tuple[str, ...]:
        stops = params.stop
        if not stops and params.natural_end and (isinstance(prompt, str) or self.is_base_model):
            stops = (NATURAL_END,)
        if isinstance(prompt, str):
            return stops
        return tuple(dict.fromkeys((*stops, *self.template.stops)))

    # --- generation

    def check_grammar(self, grammar: str) -> None:
        """Parse ``grammar`` with llama.cpp before use: llama-cpp-python would otherwise add
        a NULL sampler for a bad grammar and crash the process."""
        import tempfile

        llama_cpp = self._llama_cpp
        # llama.cpp's grammar parser writes its complaint straight to fd 2: catch it and
        # use it as the message instead of letting it spill onto the terminal.
        with tempfile.TemporaryFile() as captured:
            saved = os.dup(2)
            os.dup2(captured.fileno(), 2)
            try:
                sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode("utf-8"), b"root")
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            complaint = " ".join(captured.read().decode("utf-8", "replace").split())
        if not sampler:
            raise UsageError(f"the grammar does not parse: {complaint or 'parse error'}")
        llama_cpp.llama_sampler_free(sampler)

    def stream(self, prompt: Prompt, params: SamplingParams) -> TextStream:
        if params.grammar:
            self.check_grammar(params.grammar)
        tokens = self.prompt_tokens(prompt)
        if len(tokens) + params.max_tokens > self.n_ctx:
            raise ContextOverflowError(len(tokens), params.max_tokens, self.n_ctx)
        cached = self._cached_prefix(tokens)
        stream = TextStream(self.model_name, len(tokens), cached, self.load_seconds)
        stream.source = self._generate(stream, tokens, params, self.stop_strings(prompt, params))
        return stream

    def _cached_prefix(self, tokens: list[int]) -> int:
        """How many prompt tokens are already in llama.cpp's KV cache (at least one is
        re-evaluated, to get fresh logits)."""
        common = 0
        for a, b in zip(self.llm._input_ids, tokens, strict=False):
            if a != b:
                break
            common += 1
        return min(common, len(tokens) - 1)

    def _sampler(self, params: SamplingParams):
        """The llama.cpp sampler chain: penalties, grammar, then greedy or top-k/top-p/min-p/temp."""
        from llama_cpp._internals import LlamaSampler

        sampler = LlamaSampler()
        n_vocab = self.llm.n_vocab()
        if params.ignore_eos:
            eog = {t for t in (self.llm.token_eos(), self.llm._model.token_eot()) if t >= 0}
            sampler.add_logit_bias(n_vocab, {t: float("-inf") for t in eog})
        if params.repeat_penalty != 1.0:
            sampler.add_penalties(n_vocab, 64, params.repeat_penalty, 0.0, 0.0)
        if params.grammar:
            from llama_cpp.llama_grammar import LlamaGrammar

            sampler.add_grammar(self.llm._model, LlamaGrammar.from_string(params.grammar, verbose=False))
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
        return sampler

    def _generate(
        self, stream: TextStream, tokens: list[int], params: SamplingParams, stops: tuple[str, ...]
    ) -> Iterator[str]:
        """Evaluate the prompt (only past the cached prefix), then sample and evaluate one
        token at a time. A loop of our own instead of ``Llama.generate``: same KV-cache
        reuse, but a sampler chain we build (EOS suppression for benchmarks, grammar
        checked beforehand) and no per-token work beyond llama.cpp's."""
        llm = self.llm
        detok = IncrementalDetokenizer(self._token_bytes, stops)
        sampler = self._sampler(params)
        stream.t_start = perf_counter()
        try:
            reuse = stream.cached_tokens
            if reuse > 0 and llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
                llm.n_tokens = reuse
            else:  # nothing cached, or a model whose cache cannot be cut: start over
                llm.reset()
                stream.cached_tokens = reuse = 0
            llm.eval(tokens[reuse:])
            ctx = llm._ctx
            is_eog = self.is_end_of_generation
            check_eog = not params.ignore_eos
            while True:
                token = sampler.sample(ctx, -1)
                if stream.t_first is None:
                    stream.t_first = perf_counter()
                if check_eog and is_eog(token):
                    stream.finish_reason = "stop"
                    break
                stream.completion_tokens += 1
                text = detok.push(token)
                if text:
                    yield text
                if detok.stopped:
                    stream.finish_reason = "stop"
                    break
                if stream.completion_tokens >= params.max_tokens:
                    stream.finish_reason = "length"
                    break
                llm.eval((token,))
            tail = detok.flush()
            if tail:
                yield tail
        finally:
            sampler.close()
            stream.t_end = perf_counter()

    def offload_report(self) -> str:
        """Layers on the GPU as llama.cpp reported them at load, not as requested."""
        if not self.gpu_supported:
            return "0 (this llama.cpp build is CPU-only)"
        if self.offloaded is not None:
            return f"{self.offloaded[0]}/{self.offloaded[1]}"
        requested = "all" if self.gpu_layers < 0 else str(self.gpu_layers)
        return f"{requested} requested (llama.cpp's own log above says how many it offloaded)"

    def describe(self) -> dict[str, object]:
        return {
            "model": self.model_name,
            "path": str(self.path),
            "backend": "llama.cpp " + ("GPU offload" if self.gpu_supported else "CPU only"),
            "gpu_layers": self.offload_report(),
            "ctx": self.n_ctx,
            "threads": self.threads,
            "batch": self.batch,
            "flash_attn": self.flash_attn,
            "chat_template": self.template.name,
            "load_s": round(self.load_seconds, 3),
        }

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None


def load_backend(model: ResolvedModel, settings: Settings, verbose: bool = False) -> LocalBackend:
    return LocalBackend(model, settings, verbose=verbose)
