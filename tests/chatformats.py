"""Chat formats written out by hand from each model family's published prompt format.

They are the tests' oracle for what localassist sends: the expected prompt text is
built here, without Jinja and without localassist, and tokenized with llama.cpp's own
tokenizer (the ``vocab`` fixture). Messages are ``(role, content)`` pairs.
"""

from __future__ import annotations

Chat = list[tuple[str, str]]


def gemma(messages: Chat, bos: str = "<bos>") -> str:
    """Gemma (ai.google.dev/gemma/docs/core/prompt-structure): no system role, so the
    system prompt opens the first user turn; the assistant's role is "model"; contents
    are stripped, as Gemma's own template does."""
    system = ""
    if messages and messages[0][0] == "system":
        system, messages = messages[0][1].strip() + "\n\n", messages[1:]
    out = bos
    for i, (role, content) in enumerate(messages):
        who = "model" if role == "assistant" else "user"
        out += f"<start_of_turn>{who}\n{(system if i == 0 else '') + content.strip()}<end_of_turn>\n"
    return out + "<start_of_turn>model\n"


def chatml(messages: Chat) -> str:
    """ChatML (Qwen and most others): no BOS in the text."""
    body = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return body + "<|im_start|>assistant\n"


def llama3(messages: Chat, bos: str) -> str:
    """Llama 3: header ids around the role, a blank line, <|eot_id|> after each message."""
    body = "".join(
        f"<|start_header_id|>{role}<|end_header_id|>\n\n{content.strip()}<|eot_id|>" for role, content in messages
    )
    return bos + body + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def phi3(messages: Chat) -> str:
    """Phi-3: <|role|> on its own line, <|end|> after each message."""
    return "".join(f"<|{role}|>\n{content}<|end|>\n" for role, content in messages) + "<|assistant|>\n"


def tokens(vocab, text: str, *, bos: bool = False, special: bool = True) -> list[int]:
    """llama.cpp's tokenization (the ``vocab`` fixture) of ``text``; special=True reads chat
    markers such as <start_of_turn> as the single tokens they are."""
    return vocab.tokenize(text.encode("utf-8"), add_bos=bos, special=special)


def n_tokens(vocab, text: str, *, bos: bool = False, special: bool = True) -> int:
    return len(tokens(vocab, text, bos=bos, special=special))
