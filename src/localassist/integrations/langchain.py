"""LangChain on localassist: a chat model, embeddings and a retriever over the same core
the CLI uses, so every model localassist can run (a local GGUF, or a remote named as
``gpu-box:qwen2.5-32b`` or with ``base_url``) works in a chain, with the same settings.

    from localassist.integrations.langchain import ChatLocalAssist
    llm = ChatLocalAssist(model="starter-chat", temperature=0)
    llm.invoke("Hello")

A local model is loaded once per process and shared (a registry keyed by the resolved
file and its load options): two ``ChatLocalAssist`` objects on one model, or one made
with ``backend=localassist.load(...).backend``, never hold a second llama.cpp copy.
LangChain is imported only by this module (``import localassist`` does not need it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    UsageMetadata,
)
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from localassist.engine.types import (
    Backend,
    ChatRequest,
    Done,
    Message,
    SamplingParams,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from localassist.errors import AnswerInvalidError, UsageError

LOAD_OPTIONS = ("ctx", "threads", "batch", "gpu_layers", "flash_attn", "chat_format")
SAMPLING = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed", "max_tokens")

_SHARED: dict[tuple, Backend] = {}
_SHARED_LOCK = threading.Lock()


def shared_backend(
    model: str | None = None,
    *,
    embedding: bool = False,
    base_url: str | None = None,
    api_key_env: str | None = None,
    **load_options: Any,
) -> Backend:
    """The backend for ``model`` (resolved as ``-m`` is), opened once per process and
    shared: the key is the resolved file (or server and model) and the load options."""
    from localassist.settings import load_settings

    flags = {k: v for k, v in load_options.items() if v is not None}
    unknown = sorted(set(flags) - set(LOAD_OPTIONS))
    if unknown:
        raise UsageError(f"unknown load option {', '.join(unknown)}; options: {', '.join(LOAD_OPTIONS)}")
    settings = load_settings({**flags, "model": model, "base_url": base_url, "api_key_env": api_key_env})
    from localassist.backends import plan_backend

    plan = plan_backend(settings, model, role="embedding" if embedding else "chat")
    if plan.remote is not None:
        target = plan.remote
        key: tuple = ("remote", target.url, target.model, target.key_env, settings.ctx)
    else:
        assert plan.local is not None
        key = ("local", str(plan.local.path), plan.options)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = plan.open()
        return _SHARED[key]


def _still_shared(backend: Backend) -> bool:
    with _SHARED_LOCK:
        return any(b is backend for b in _SHARED.values())


def close_shared_backends() -> None:
    """Free every shared backend (models are otherwise kept until the process ends)."""
    with _SHARED_LOCK:
        backends = list(_SHARED.values())
        _SHARED.clear()
    for backend in backends:
        backend.close()


# --- messages both ways


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise UsageError(f"message content of type {kind!r} is not supported (text only)")
    return "".join(parts)


# Content blocks that hold a tool call, and the key of its arguments: Anthropic's
# ``tool_use`` and LangChain's standard ``tool_call``. The same call is usually in
# ``AIMessage.tool_calls`` as well; it is sent once.
CALL_BLOCKS = {"tool_use": "input", "tool_call": "args"}


def _assistant(m: AIMessage) -> Message:
    """An AIMessage: its text, and its calls from ``tool_calls`` and from call blocks in
    its content (Anthropic's format keeps them there)."""
    found = [(c.get("id"), c["name"], c["args"]) for c in m.tool_calls]
    content = m.content if isinstance(m.content, list) else [m.content]
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in CALL_BLOCKS and not any(block.get("id") == known for known, _, _ in found if known):
            found.append((block.get("id"), block["name"], block.get(CALL_BLOCKS[kind]) or {}))
    calls = tuple(ToolCall(key or f"call_{i}", name, json.dumps(args)) for i, (key, name, args) in enumerate(found))
    text = _text([b for b in content if not (isinstance(b, dict) and b.get("type") in CALL_BLOCKS)])
    return Message("assistant", text, tool_calls=calls)


def to_messages(messages: Sequence[BaseMessage]) -> tuple[Message, ...]:
    """LangChain messages as localassist's (tool calls and their ids kept)."""
    out = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append(Message("system", _text(m.content)))
        elif isinstance(m, HumanMessage):
            out.append(Message("user", _text(m.content)))
        elif isinstance(m, AIMessage):
            out.append(_assistant(m))
        elif isinstance(m, ToolMessage):
            out.append(Message("tool", _text(m.content), tool_call_id=m.tool_call_id, name=m.name))
        elif isinstance(m, ChatMessage) and m.role in ("system", "user", "assistant", "tool"):
            out.append(Message(m.role, _text(m.content)))
        else:
            raise UsageError(f"a {type(m).__name__} cannot be sent to a localassist model")
    return tuple(out)


def _tool_calls(done: Done) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tool_calls, invalid_tool_calls) as LangChain's AIMessage holds them."""
    valid, invalid = [], []
    for call in done.tool_calls:
        try:
            args = json.loads(call.arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments are not a JSON object")
            valid.append({"name": call.name, "args": args, "id": call.id, "type": "tool_call"})
        except ValueError as exc:
            invalid.append(
                {
                    "name": call.name,
                    "args": call.arguments,
                    "id": call.id,
                    "error": str(exc),
                    "type": "invalid_tool_call",
                }
            )
    return valid, invalid


def _usage(done: Done) -> UsageMetadata:
    # ignore: langchain-core marks output_token_details NotRequired with typing.NotRequired,
    # which mypy does not know when it checks for Python 3.10, so it reads the key as required
    return {  # type: ignore[typeddict-item]
        "input_tokens": done.prompt_tokens,
        "output_tokens": done.completion_tokens,
        "total_tokens": done.usage.total_tokens,
        "input_token_details": {"cache_read": done.cached_tokens},
    }


def _metadata(done: Done) -> dict[str, Any]:
    return {"model_name": done.model, "finish_reason": done.finish_reason, "timings": done.as_dict()["timings"]}


# --- the chat model


class ChatLocalAssist(BaseChatModel):
    """Any localassist model as a LangChain chat model.

    ``model``: what ``-m`` takes (a catalog name, a .gguf path, ``owner/repo:QUANT``, a
    remote ``NAME:MODEL``); None: the configured default. ``backend``: an already open
    backend to use instead (``localassist.load(...).backend``). Sampling fields left None
    come from the settings (env, config file), as on the command line."""

    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    ctx: int | None = None
    threads: int | None = None
    gpu_layers: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    backend: Any = Field(default=None, exclude=True)

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _opened: Any = PrivateAttr(default=None)
    _params: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "localassist"

    def engine(self) -> Backend:
        """The backend this model runs on (opened on first use, shared in the process)."""
        if self.backend is not None:
            return self.backend
        if self._opened is None or not _still_shared(self._opened):  # close_shared_backends() freed it
            self._opened = shared_backend(
                self.model,
                base_url=self.base_url,
                api_key_env=self.api_key_env,
                ctx=self.ctx,
                threads=self.threads,
                gpu_layers=self.gpu_layers,
            )
        return self._opened

    def _sampling(self, stop: list[str] | None) -> SamplingParams:
        if self._params is None:
            from localassist.settings import load_settings

            flags = {k: getattr(self, k) for k in SAMPLING if getattr(self, k) is not None}
            self._params = SamplingParams.from_settings(load_settings(flags))  # checked like flags
        params = self._params
        stops = [*(self.stop or []), *(stop or [])]
        if stops:
            params = replace(params, stop=tuple(stops), natural_end=False)
        return params

    @property
    def _identifying_params(self) -> dict[str, Any]:
        given = {k: getattr(self, k) for k in ("model", *SAMPLING, "base_url") if getattr(self, k) is not None}
        if self.backend is not None:
            given["model"] = self.backend.model_name
        return given

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> ChatRequest:
        tools = tuple(kwargs.pop("tools", None) or ())
        tool_choice = kwargs.pop("tool_choice", None) or "auto"
        sampling = self._sampling(stop)
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in SAMPLING}
        if overrides:
            from localassist.settings import parse_value

            sampling = replace(sampling, **{k: parse_value(k, v, "flag") for k, v in overrides.items()})
        if kwargs:
            raise UsageError(f"unknown option {', '.join(sorted(kwargs))} for ChatLocalAssist")
        return ChatRequest(messages=to_messages(messages), sampling=sampling, tools=tools, tool_choice=tool_choice)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stream = self.engine().chat(self._request(messages, stop, kwargs))
        try:
            for event in stream:
                if isinstance(event, TextDelta) and event.text and run_manager is not None:
                    run_manager.on_llm_new_token(event.text)
        except AnswerInvalidError:
            if not stream.result().tool_calls:
                raise
            # a call whose arguments break its schema: LangChain's invalid_tool_calls carry it
        except BaseException:
            stream.cancel()  # Ctrl-C or a failed callback: the engine stops generating
            stream.result()
            raise
        done = stream.result()
        valid, invalid = _tool_calls(done)
        message = AIMessage(
            content=done.text,
            tool_calls=valid,
            invalid_tool_calls=invalid,
            usage_metadata=_usage(done),
            response_metadata=_metadata(done),
        )
        info = {"finish_reason": done.finish_reason}
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stream = self.engine().chat(self._request(messages, stop, kwargs))
        try:
            try:
                for event in stream:
                    if isinstance(event, TextDelta) and event.text:
                        if run_manager is not None:
                            run_manager.on_llm_new_token(event.text)
                        yield ChatGenerationChunk(message=AIMessageChunk(content=event.text))
                    elif isinstance(event, ToolCallDelta):
                        piece = tool_call_chunk(name=event.name, args=event.arguments, id=event.id, index=event.index)
                        yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[piece]))
            except AnswerInvalidError:
                if not stream.result().tool_calls:
                    raise  # the chunks already carry the calls; LangChain finds the invalid ones
            done = stream.result()
        finally:
            stream.close()  # the consumer stopped early: generation stops too
        last = AIMessageChunk(
            content="", usage_metadata=_usage(done), response_metadata=_metadata(done), chunk_position="last"
        )
        yield ChatGenerationChunk(message=last, generation_info={"finish_reason": done.finish_reason})

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """Offer ``tools`` (LangChain tools, functions, pydantic models or OpenAI dicts);
        ``tool_choice``: "auto", "none", "required" (or "any", or True), or a tool's name."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = _tool_choice(tool_choice, formatted)
        return super().bind(tools=formatted, **kwargs)


def _tool_choice(choice: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    if choice is True or choice == "any":
        return "required"
    if choice in ("auto", "none", "required") or isinstance(choice, dict):
        return choice
    names = [t["function"]["name"] for t in tools]
    if isinstance(choice, str) and choice in names:
        return {"type": "function", "function": {"name": choice}}
    raise UsageError(f"tool_choice must be auto, none, required, any or a tool's name ({', '.join(names)})")


# --- embeddings


class LocalAssistEmbeddings(BaseModel, Embeddings):
    """Embeddings from a localassist model: an embedding GGUF run locally (loaded once,
    shared) or a remote's ``/v1/embeddings``. A text longer than the model takes is an
    error, never cut."""

    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    ctx: int | None = None
    threads: int | None = None
    backend: Any = Field(default=None, exclude=True)

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _shared: bool = PrivateAttr(default=False)

    def engine(self) -> Backend:
        if self.backend is None or (self._shared and not _still_shared(self.backend)):
            self._shared = True
            self.backend = shared_backend(
                self.model,
                embedding=True,
                base_url=self.base_url,
                api_key_env=self.api_key_env,
                ctx=self.ctx,
                threads=self.threads,
            )
        return self.backend

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.engine().embed(list(texts))

    def embed_query(self, text: str) -> list[float]:
        return self.engine().embed([text])[0]


# --- retriever over a folder index


class LocalAssistRetriever(BaseRetriever):
    """The best chunks of a localassist folder index (``localassist index add``), by its
    hybrid search (BM25 + the index's own embedding model, loaded once). Each Document's
    metadata: ``source`` (the path as cited, relative to the folder), ``file_path``,
    ``page`` (1-based), ``page_label``, ``line_start``, ``line_end``, ``section``,
    ``score``, ``rank``. Nothing relevant enough gives no documents."""

    index: str
    k: int = 5
    data_dir: str | None = None

    model_config = ConfigDict(arbitrary_types_allowed=True)
    _search: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def _docs(self) -> Any:
        with self._lock:
            if self._search is None:
                from localassist.retrieval import DocsSearch
                from localassist.settings import load_settings

                settings = load_settings()
                if self.data_dir is not None:
                    settings = replace(settings, paths=replace(settings.paths, data_dir=Path(self.data_dir)))
                self._search = DocsSearch(settings, self.index)
            return self._search

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, k: int | None = None
    ) -> list[Document]:
        """``k`` (``retriever.invoke(query, k=2)``) overrides the retriever's own for one search."""
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise UsageError(f"k must be a whole number of at least 1, not {k!r}")
        docs = self._docs()
        hits, _notices, found = docs.search(query, k=self.k if k is None else k)
        if not found:
            return []
        folder = docs.info.folder
        return [_document(hit, folder) for hit in hits]


def _document(hit: Any, folder: Path) -> Document:
    where = hit.locator
    page_label = where.page_label or (str(where.page) if where.page is not None else None)
    metadata = {
        "source": hit.path,
        "file_path": str(Path(folder) / hit.path),
        "page": where.page,
        "page_label": page_label,
        "line_start": where.line_start,
        "line_end": where.line_end,
        "section": where.section,
        "score": hit.score,
        "rank": hit.rank,
    }
    return Document(page_content=hit.text, metadata={k: v for k, v in metadata.items() if v is not None})
