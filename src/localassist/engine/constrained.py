"""Sampling under an llguidance grammar inside llama.cpp's sampler chain.

The grammar's token mask (computed by llguidance in Rust, ~0.05 ms a token) is applied
by a custom sampler at the place the GBNF grammar sampler used to take: after penalties,
before top-k/top-p/temperature/greedy. The candidates that survive are moved to the front
of llama.cpp's candidate array and the array is shortened to them, so the samplers after
it work on the allowed tokens only instead of the whole vocabulary (262k for the starter).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from localassist.errors import BackendError

_TOKENIZERS: dict[int, Any] = {}
_TOKENIZERS_LOCK = threading.Lock()


def tokenizer_for(model: Any) -> Any:
    """llguidance's view of a loaded llama.cpp model's vocabulary, built once per model
    (about a second for a 262k vocabulary) and kept while the model is loaded."""
    key = id(model)
    with _TOKENIZERS_LOCK:
        found = _TOKENIZERS.get(key)
        if found is None or found[0] is not model:
            found = (model, _build_tokenizer(model.vocab))
            _TOKENIZERS[key] = found
        return found[1]


def _build_tokenizer(vocab: Any) -> Any:
    """Each token's bytes as llama.cpp renders them (control tokens marked with a 0xFF
    prefix, as llguidance expects), and every end-of-generation token as an end: a chat
    model ends its answer with its end-of-turn token, not only with EOS."""
    import llama_cpp
    from llguidance import LLTokenizer

    size = 256
    buffer = ctypes.create_string_buffer(size)
    to_piece, get_attr = llama_cpp.llama_token_to_piece, llama_cpp.llama_vocab_get_attr
    is_eog = llama_cpp.llama_vocab_is_eog
    control, user = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL, llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    pieces: list[bytes] = []
    ends: list[int] = []
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        n = to_piece(vocab, token, buffer, size, 0, True)
        if n < 0:  # a longer piece than the buffer: grow it once
            size = -n
            buffer = ctypes.create_string_buffer(size)
            n = to_piece(vocab, token, buffer, size, 0, True)
        piece = buffer.raw[:n]
        attr = get_attr(vocab, token)
        if attr & control or (attr & user and piece.startswith(b"<") and piece.endswith(b">")):
            piece = b"\xff" + piece
        pieces.append(piece)
        if is_eog(vocab, token):
            ends.append(token)
    tokenize = ctypes.cast(llama_cpp.llama_cpp._lib.llama_tokenize, ctypes.c_void_p).value
    # ignore: the compiled module has from_llamacpp, its stub (_lib.pyi) leaves it out; llguidance's own
    # llamacpp.py ignores it the same way
    return LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
        tokens=pieces, vocab_ptr=vocab, tokenize_fptr=tokenize, eos_token=ends or llama_cpp.llama_vocab_eos(vocab)
    )


def forget_tokenizer(model: Any) -> None:
    with _TOKENIZERS_LOCK:
        _TOKENIZERS.pop(id(model), None)


class GrammarSampler:
    """A llama.cpp sampler chain with an llguidance matcher in it. ``sample`` returns the
    chosen token and advances the matcher; the grammar's error, if any, is raised there
    (an exception cannot cross llama.cpp's C callback).

    With greedy decoding the best token is checked first and the mask is computed only
    when the grammar refuses it (as llama.cpp's own sampler does): the answer is the same,
    and the usual token costs one argmax. Otherwise the allowed tokens are moved to the
    front of the candidate array when they are few, or the others set to -inf when many."""

    def __init__(self, chain: Any, tokenizer: Any, grammar: str, n_vocab: int, greedy: bool) -> None:
        from llguidance import LLMatcher

        self.matcher = LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise BackendError(f"the grammar engine refused the grammar: {self.matcher.get_error()}")
        self.n_vocab = n_vocab
        self.greedy = greedy
        self._mask = np.zeros((n_vocab + 31) // 32, dtype=np.int32)
        self._error: BaseException | None = None
        self.chain = chain
        chain.add_custom(self._apply)

    def _apply(self, cur_p: Any) -> None:
        try:
            self._restrict(cur_p.contents)
        except BaseException as exc:
            self._error = exc

    def _restrict(self, cur: Any) -> None:
        matcher = self.matcher
        n = int(cur.size)
        data = np.ctypeslib.as_array(cur.data, shape=(n,))
        if self.greedy:
            best = int(data["id"][int(data["logit"].argmax())])
            if matcher.validate_tokens([best]) == 1:
                return  # greedy picks it: the grammar allows it
        matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        if matcher.is_error():
            raise BackendError(f"the grammar engine failed: {matcher.get_error()}")
        in_order = n == self.n_vocab and data[0]["id"] == 0 and data[n - 1]["id"] == n - 1
        words = np.flatnonzero(self._mask)
        if words.size == 0:
            raise BackendError("the grammar allows no token here")
        if in_order and words.size * 4 < self._mask.size:
            # few allowed: expand only the mask words that have a bit set
            bits = np.unpackbits(self._mask[words].view(np.uint8), bitorder="little").reshape(words.size, 32)
            word, bit = np.nonzero(bits)
            allowed = words[word] * 32 + bit
            allowed = allowed[allowed < n]
            data[: allowed.size] = data[allowed]
            cur.size = allowed.size
        else:
            flat = np.unpackbits(self._mask.view(np.uint8), bitorder="little")
            keep = flat[:n] if in_order else flat[data["id"]]
            np.copyto(data["logit"], -np.inf, where=keep == 0)
        cur.selected = -1
        cur.sorted = False

    def sample(self, ctx: Any, idx: int) -> int:
        token = self.chain.sample(ctx, idx)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if not self.matcher.consume_token(token):
            raise BackendError(f"the grammar engine rejected its own token: {self.matcher.get_error()}")
        return token

    def close(self) -> None:
        self.chain.close()
