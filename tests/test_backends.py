"""The one backend opener (backends.py): every role gets its load options from the settings."""

from __future__ import annotations

import pytest

from localassist.backends import plan_backend
from localassist.settings import load_settings


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALASSIST_HOME", str(tmp_path / "home"))
    return tmp_path


def test_an_embedding_model_is_never_given_the_chat_format(home, starter_model):
    # An embedding GGUF carries no chat template: `chat_format = gguf` in the config made
    # every index command fail once the index's embedder was opened like a chat model.
    settings = load_settings({"chat_format": "gguf", "flash_attn": "on", "batch": "1024"})
    embed = plan_backend(settings, str(starter_model), role="embedding")
    chat = plan_backend(settings, str(starter_model), role="chat")
    assert embed.options is not None and chat.options is not None
    assert embed.options.embedding and embed.options.chat_format is None
    assert chat.options.chat_format == "gguf" and not chat.options.embedding
    # the rest follows the settings for every role (the index's copy had drifted)
    assert (embed.options.flash_attn, embed.options.batch) == (chat.options.flash_attn, chat.options.batch)
    assert embed.options.header_cache == chat.options.header_cache
