"""The Python API: the same models, rules and settings as the CLI, without a terminal.

Example::

    import localassist

    model = localassist.load("starter", ctx=2048)  # same resolution rules as -m
    answer = model.ask("The capital of France is", max_tokens=8, temperature=0).text
    pieces = list(model.stream([{"role": "user", "content": "Hi"}]))  # text as it is made
    chat = model.chat(system="Be terse")
    chat.send("hello")
    chat.send("and again")
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from localassist.assistant import Assistant, for_settings
from localassist.backends import open_backend
from localassist.engine.types import Backend, ChatRequest, Done, Message, ResponseFormat, SamplingParams
from localassist.errors import UsageError
from localassist.settings import SPECS, Settings, load_settings, parse_value

LOAD_OPTIONS = ("ctx", "threads", "batch", "gpu_layers", "flash_attn", "repack", "chat_format")
SAMPLING = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed", "max_tokens", "stop")
Prompt = str | Sequence[Message | Mapping[str, Any]]


def load(model: str | None = None, *, log: bool = False, **options: Any) -> Model:
    """Load ``model`` (a catalog name, a .gguf path, ``owner/repo[:QUANT]``; None: the
    configured default, else the starter). ``options`` are the CLI's engine and sampling
    flags by their setting names (``ctx``, ``threads``, ``gpu_layers``, ``temperature``,
    ``max_tokens`` ...), checked the same way; they beat env vars and the config file.
    ``log=True`` records exchanges in the conversation log like the CLI does."""
    unknown = sorted(set(options) - set(LOAD_OPTIONS) - set(SAMPLING) - {"system", "memory"})
    if unknown:
        raise UsageError(f"unknown option {', '.join(unknown)}; options: {', '.join((*LOAD_OPTIONS, *SAMPLING))}")
    settings = load_settings({"model": model, **options} if model else options)
    return Model(open_backend(settings), settings, log=log)


def _messages(prompt: Prompt) -> tuple[Message, ...]:
    if isinstance(prompt, str):
        return (Message("user", prompt),)
    out = []
    for item in prompt:
        if isinstance(item, Message):
            out.append(item)
        else:
            try:
                out.append(Message(str(item["role"]), str(item.get("content") or "")))
            except (KeyError, TypeError):
                raise UsageError("messages are Message objects or {'role': ..., 'content': ...} dicts") from None
    return tuple(out)


class Model:
    """A loaded model. ``close()`` (or a ``with`` block) frees it."""

    def __init__(self, backend: Backend, settings: Settings, log: bool = False) -> None:
        self.backend = backend
        self.settings = settings
        self.log = log

    @property
    def name(self) -> str:
        return self.backend.model_name

    @property
    def n_ctx(self) -> int:
        return self.backend.n_ctx

    def _sampling(self, overrides: Mapping[str, Any]) -> SamplingParams:
        unknown = sorted(set(overrides) - set(SAMPLING))
        if unknown:
            raise UsageError(f"unknown sampling option {', '.join(unknown)}; options: {', '.join(SAMPLING)}")
        checked = {k: parse_value(k, v, "flag") for k, v in overrides.items() if k in SPECS}
        params = SamplingParams.from_settings(self.settings)
        return replace(params, **checked, natural_end=params.natural_end and "stop" not in checked)

    def _request(
        self, prompt: Prompt, system: str | None, raw: bool, sampling: Mapping[str, Any], schema: Any = None
    ) -> ChatRequest:
        params = self._sampling(sampling)
        response_format = None
        if schema is not None:
            from localassist.engine.structured import prepared_schema

            prepared_schema(schema)  # a schema that cannot be honoured is refused here, before any token
            response_format = ResponseFormat("json_schema", schema)
        if raw:
            if not isinstance(prompt, str):
                raise UsageError("raw=True takes a string prompt")
            return ChatRequest(
                prompt=f"{system}\n\n{prompt}" if system else prompt, sampling=params, response_format=response_format
            )
        messages = _messages(prompt)
        system = system if system is not None else self.settings.system
        if system and not any(m.role == "system" for m in messages):
            messages = (Message("system", system), *messages)
        return ChatRequest(messages=messages, sampling=params, response_format=response_format)

    def ask(
        self,
        prompt: Prompt,
        *,
        system: str | None = None,
        raw: bool = False,
        json_schema: Any = None,
        **sampling: Any,
    ) -> Done:
        """Generate one answer and return it whole (``.text``, ``.finish_reason``, ``.usage``).
        With ``json_schema`` the answer is JSON constrained to it and validated: one that
        breaks it raises ``AnswerInvalidError``, never returns."""
        stream = self.backend.chat(self._request(prompt, system, raw, sampling, json_schema))
        try:
            return stream.result()
        except KeyboardInterrupt:
            stream.cancel()
            raise

    def stream(self, prompt: Prompt, *, system: str | None = None, raw: bool = False, **sampling: Any) -> Iterator[str]:
        """Generate one answer, yielding text as it comes. Closing the iterator (or
        breaking out of the loop) stops generation."""
        stream = self.backend.chat(self._request(prompt, system, raw, sampling))
        try:
            yield from stream.text()
        finally:
            stream.close()

    def chat(self, system: str | None = None, **sampling: Any) -> Chat:
        """A conversation with memory (the ``memory`` setting's policy), like the REPL's."""
        settings = self.settings if system is None else replace(self.settings, system=system)
        log = None
        if self.log:
            from localassist.conversation.exchange_log import ExchangeLog

            log = ExchangeLog(settings.paths.data_dir, settings.log)
        assistant = for_settings(self.backend, settings, log=log)
        assistant.base_params = self._sampling(sampling)
        return Chat(assistant)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as plain text (no control tokens, no BOS)."""
        return self.backend.tokenize(text)

    def count(self, prompt: Prompt) -> int:
        """Prompt tokens ``prompt`` takes once the chat template is applied."""
        return self.backend.count(_messages(prompt))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Chat:
    """A conversation: each ``send`` sees the earlier turns (fitted to the context)."""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant

    @property
    def messages(self) -> list[Message]:
        return list(self.assistant.conversation.messages())

    def send(self, text: str) -> Done:
        turn = self.assistant.send(text)
        try:
            return self.assistant.finish(turn)
        except KeyboardInterrupt:
            turn.cancel()
            self.assistant.finish(turn)
            raise

    def stream(self, text: str) -> Iterator[str]:
        turn = self.assistant.send(text)
        try:
            yield from turn.stream.text()
        finally:
            turn.cancel()
            self.assistant.finish(turn)
