"""Incremental detokenization: unit cases, then the real tokenizer as the oracle."""

from __future__ import annotations

import pytest

from localassist.engine.detokenize import IncrementalDetokenizer


def run(pieces: list[bytes], stops=()) -> tuple[str, bool]:
    detok = IncrementalDetokenizer(lambda i: pieces[i], stops)
    out = []
    for i in range(len(pieces)):
        out.append(detok.push(i))
        if detok.stopped:
            break
    out.append(detok.flush())
    return "".join(out), detok.stopped


def test_multibyte_character_split_across_tokens_is_held_back():
    snowman = "☃".encode()  # 3 bytes
    detok = IncrementalDetokenizer(lambda i: [snowman[:1], snowman[1:2], snowman[2:]][i])
    assert detok.push(0) == ""
    assert detok.push(1) == ""
    assert detok.push(2) == "☃"


def test_stop_string_spanning_tokens():
    text, stopped = run([b"Hello ", b"wor", b"ld##", b"#", b" more"], stops=["###"])
    assert (text, stopped) == ("Hello world", True)


def test_partial_stop_prefix_is_released_when_it_does_not_complete():
    text, stopped = run([b"a#", b"#b", b"c"], stops=["###"])
    assert (text, stopped) == ("a##bc", False)


def test_partial_stop_at_the_end_is_flushed():
    assert run([b"end#", b"#"], stops=["###"]) == ("end##", False)


def test_nothing_after_stop():
    detok = IncrementalDetokenizer(lambda i: [b"x<END>", b"y"][i], ["<END>"])
    assert detok.push(0) == "x"
    assert detok.push(1) == ""
    assert detok.flush() == ""


def test_invalid_utf8_becomes_replacement_char_not_an_exception():
    assert run([b"ok\xff", b"!"])[0] == "ok\ufffd!"


# --- the real tokenizer as the oracle

TEXTS = [
    "plain ASCII, with punctuation; and numbers 12345.",
    "emoji 😀👍🏽 and a family 👨‍👩‍👧 in one line",
    "中文分词测试，日本語のテキスト、한국어 문장",
    "accents: café, naïve, Ærøskøbing — dashes “quotes”",
    "code:\n    def f(x):\n        return {x: [1, 2]}\n",
]


def _piece(llm, token: int) -> bytes:
    import ctypes

    import llama_cpp

    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(llm._model.vocab, token, buf, len(buf), 0, False)
    return buf.raw[:n]


@pytest.mark.parametrize("text", TEXTS)
def test_matches_full_detokenization(vocab, text):
    tokens = vocab.tokenize(text.encode(), add_bos=False, special=False)
    detok = IncrementalDetokenizer(lambda t: _piece(vocab, t))
    streamed = "".join(detok.push(t) for t in tokens) + detok.flush()
    assert streamed == vocab.detokenize(tokens).decode("utf-8")
    assert streamed == text


@pytest.mark.parametrize("stop", ["👍🏽", "日本語", "return {", "\n    def"])
def test_stop_strings_across_real_token_boundaries(vocab, stop):
    text = TEXTS[1] + TEXTS[2] + TEXTS[4]
    tokens = vocab.tokenize(text.encode(), add_bos=False, special=False)
    detok = IncrementalDetokenizer(lambda t: _piece(vocab, t), [stop])
    out = ""
    for t in tokens:
        out += detok.push(t)
        if detok.stopped:
            break
    out += detok.flush()
    assert detok.stopped
    assert out == text[: text.index(stop)]


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ([b"\n\n", b"Hi", b"\n\n", b"more"], ("\n\nHi", True)),  # the leading blank line is not the end
        ([b"\n", b"\n \n", b"Hi\n", b"\nmore"], ("\n\n \nHi", True)),
        ([b" \n\n", b"\n"], (" \n\n\n", False)),  # only whitespace: nothing ends it, all of it is shown
        ([b"Hi\n\n\n", b"more"], ("Hi", True)),
    ],
)
def test_the_blank_line_stop_applies_only_after_the_first_text(pieces, expected):
    from localassist.engine.detokenize import NATURAL_END

    assert run(pieces, stops=[NATURAL_END]) == expected


def test_a_blank_line_the_user_gave_as_a_stop_still_ends_at_once():
    assert run([b"\n\n", b"Hi"], stops=["\n\n"]) == ("", True)


# --- the earliest stop string in the text wins, whatever the order they were given in


def test_earliest_stop_string_wins_not_the_first_listed():
    assert run([b"xAyB"], ("B", "A"))[0] == "x"
    assert run([b"x", b"A", b"y", b"B"], ("B", "A"))[0] == "x"
    # spanning token boundaries, the longer stop listed first but ending later
    assert run([b"ab", b"<e", b"nd>c", b"STOP"], ("STOP", "<end>"))[0] == "ab"
