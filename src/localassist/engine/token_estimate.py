"""A conservative token count for remote servers that cannot count (no tokenizer
endpoint): an upper estimate that budgets and warns, never cuts text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# One piece per likely token or less: a word (with its leading space), a digit (many
# tokenizers split numbers into single digits), a run of whitespace, one ASCII symbol,
# one other character.
_PIECES = re.compile(r" ?[A-Z]?[a-z]+| ?[A-Z]+|\d|\s+|[\x21-\x7e]|.", re.DOTALL)
MESSAGE_OVERHEAD = 8  # role markers and separators a chat template adds per message
PROMPT_OVERHEAD = 8  # BOS, the assistant's opening


def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens ``text`` takes, for servers that cannot count:
    a word of n letters as n/3 tokens, every digit, symbol and run of whitespace as
    one, a non-ASCII character as its UTF-8 length less one (a CJK character 2, an
    emoji 3). Real tokenizers give fewer (tested against two of them), often far fewer:
    it budgets and warns, never cuts text, and refuses only for Ollama, which would clip
    a prompt that does not fit without saying so."""
    total = 0
    for piece in _PIECES.findall(text):
        if piece[-1].isascii() and piece[-1].islower():
            total += math.ceil(len(piece) / 2.5)
        elif piece[-1].isascii() and piece[-1].isupper():
            total += math.ceil(len(piece) / 2)
        elif piece.isspace():
            total += math.ceil(len(piece) / 4)
        elif piece.isascii():
            total += 1
        else:
            total += max(1, len(piece.encode("utf-8")) - 1)
    return total


def estimate_messages(contents: Sequence[str]) -> int:
    return PROMPT_OVERHEAD + sum(estimate_tokens(c) + MESSAGE_OVERHEAD for c in contents)
