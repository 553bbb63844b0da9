"""llama-server's token endpoints on ``localassist serve``: ``POST /tokenize``,
``/detokenize`` and ``/apply-template``, with llama-server's request and response shapes,
so a client (localassist's remote backend, or any llama-server client) counts a prompt
with the served model's own template and tokenizer instead of estimating it. Each takes
an optional ``model`` (serve may hold several); without it, the only chat model.

``/tokenize`` also takes ``messages`` instead of ``content`` (as vLLM's does): the ids of
the chat prompt exactly as the chat endpoint evaluates it. Applying the template and then
tokenizing the text cannot be exact for every message, since a message that holds
control-token text (a pasted ``<|im_end|>``) is evaluated as text, but the rendered
string no longer says which characters were message content.

Pure functions over a request body and a loaded backend; no HTTP here. Every call only
reads the vocabulary or renders the template, so it may run beside a generation.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localassist.engine.types import Backend, Message
from localassist.errors import LocalAssistError
from localassist.server import errors
from localassist.server.wire import _bool, _messages, _text


@dataclass(frozen=True)
class TokenizeRequest:
    model: str | None
    content: str
    messages: tuple[Message, ...] | None  # instead of content: the chat prompt's ids
    add_special: bool  # BOS (and EOS) as the model adds them
    parse_special: bool  # control-token text becomes the control token
    with_pieces: bool  # each id with its text


def _model(body: Mapping[str, Any]) -> str | None:
    value = body.get("model")
    return None if value is None else _text(value, "model", allow_empty=False)


def _no_tools(body: Mapping[str, Any]) -> None:
    if body.get("tools"):
        # the chat endpoint adapts tools to each template (some get them in the system
        # prompt): rendering them here would show a prompt the model never sees
        raise errors.not_supported("tools are not rendered by the token endpoints", "tools")


def parse_tokenize(body: Mapping[str, Any]) -> TokenizeRequest:
    messages = None
    if body.get("messages") is not None:
        _no_tools(body)
        messages = _messages(body["messages"])
    elif body.get("content") is None:
        raise errors.invalid(
            "content (the text to tokenize) or messages is required", "content", "missing_required_parameter"
        )
    return TokenizeRequest(
        _model(body),
        "" if messages is not None else _text(body["content"], "content"),
        messages,
        bool(_bool(body, "add_special")),  # llama-server's defaults: false, true, false
        _bool(body, "parse_special") is not False,
        bool(_bool(body, "with_pieces")),
    )


def parse_detokenize(body: Mapping[str, Any]) -> tuple[str | None, list[int]]:
    tokens = body.get("tokens")
    if not isinstance(tokens, list):
        raise errors.invalid("tokens must be an array of token ids", "tokens", "invalid_type")
    for i, token in enumerate(tokens):
        if isinstance(token, bool) or not isinstance(token, int):
            raise errors.invalid(f"tokens[{i}] must be an integer token id", f"tokens[{i}]", "invalid_type")
    return _model(body), tokens


def parse_apply_template(body: Mapping[str, Any]) -> tuple[str | None, tuple[Message, ...]]:
    _no_tools(body)
    return _model(body), _messages(body.get("messages"))


def choose(name: str | None, chat: Mapping[str, Backend], embed: Mapping[str, Backend]) -> tuple[str, Backend]:
    """The model a token endpoint works on: the one named (chat or embedding), else the
    only chat model (the only model, on a server of embeddings alone)."""
    if name is None:
        pool = chat or embed
        if len(pool) == 1:
            return next(iter(pool.items()))
        raise errors.invalid(
            f"model is required: this server serves {', '.join(sorted(pool))}", "model", "missing_required_parameter"
        )
    backend = chat.get(name) or embed.get(name)
    if backend is None:
        raise errors.model_not_found(name, sorted({*chat, *embed}))
    return name, backend


def _host(backend: Backend) -> Any:
    """The LocalBackend that holds the model (a BatchedBackend borrows its host's)."""
    return getattr(backend, "host", backend)


def _piece(llama_cpp: Any, vocab: Any, token: int) -> bytes:
    """The token's bytes, control tokens as their text (as llama-server shows them). A
    buffer of its own: the backend's is in use by the generation thread."""
    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    if n < 0:  # longer than the buffer: -n is the size needed
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    return buf.raw[:n]


def _shown(piece: bytes) -> str | list[int]:
    """A piece as llama-server sends it: text when it is valid UTF-8, else its bytes."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


def tokenize(backend: Backend, request: TokenizeRequest) -> dict[str, Any]:
    import llama_cpp

    host = _host(backend)
    llm = host.llm
    if request.messages is not None:
        try:
            ids = host.chat_tokens(request.messages)
        except LocalAssistError as exc:  # a chat template that refuses these messages
            raise errors.core_error(exc, "messages", generating=False) from None
    else:
        ids = host.tokenize(request.content, special=request.parse_special, add_bos=request.add_special)
    bos = llm.token_bos()
    if request.messages is None and request.add_special and len(ids) > 1 and ids[0] == ids[1] == bos:
        # a rendered chat prompt that starts with the BOS text (Llama 3) is sent with one
        # BOS, as the chat endpoint sends it; llama.cpp would add a second one here
        ids = ids[1:]
    if not request.with_pieces:
        return {"tokens": ids}
    vocab = llm._model.vocab
    return {"tokens": [{"id": t, "piece": _shown(_piece(llama_cpp, vocab, t))} for t in ids]}


def detokenize(backend: Backend, tokens: list[int]) -> dict[str, Any]:
    import llama_cpp

    vocab = _host(backend).llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    for i, token in enumerate(tokens):
        if not 0 <= token < n_vocab:  # llama.cpp would read past its vocabulary
            raise errors.invalid(f"tokens[{i}] is not a token id of this model (0 to {n_vocab - 1})", f"tokens[{i}]")
    text = b"".join(_piece(llama_cpp, vocab, t) for t in tokens)
    return {"content": text.decode("utf-8", "replace")}


def apply_template(backend: Backend, messages: tuple[Message, ...]) -> dict[str, Any]:
    try:
        return {"prompt": _host(backend).render(messages)}
    except LocalAssistError as exc:  # a chat template that refuses these messages
        raise errors.core_error(exc, "messages", generating=False) from None
