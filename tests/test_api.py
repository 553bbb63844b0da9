"""The Python API (`import localassist`) on the real starter model: ask, stream and chat agree, the
CLI's answers and defaults, options checked like flags, and an import that loads no llama.cpp."""

from __future__ import annotations

import sys

import pytest

import localassist
from localassist.engine.types import SamplingParams

# --- the Python API, as docs/python.md shows it


@pytest.fixture(scope="module")
def model(starter_model):
    loaded = localassist.load(str(starter_model), ctx=2048, threads=2)
    yield loaded
    loaded.close()


@pytest.mark.model
def test_python_api_ask_stream_and_chat_agree(model):
    """What the documented example (docs/python.md) relies on (tests/test_api_examples.py runs it as printed);
    nothing here depends on the text the model writes."""
    answer = model.ask("The capital of France is", max_tokens=8, temperature=0)
    assert answer.text and answer.completion_tokens <= 8
    # Both start from the same KV cache: an unrelated raw prompt first, so neither reuses more
    # than the BOS token. Reusing a longer prefix (the chat template's opening, kept from the
    # question above) evaluates the rest in another batch split, which rounds differently:
    # with repack off (an AMX machine) that turned "Hi-dimensional" into "Hi命ever".
    model.ask("1, 2, 3,", raw=True, max_tokens=2, temperature=0)
    pieces = list(model.stream([{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0))
    model.ask("1, 2, 3,", raw=True, max_tokens=2, temperature=0)
    alone = model.ask([{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0).text
    assert len(pieces) > 1 and "".join(pieces) == alone
    chat = model.chat(system="Be terse", max_tokens=6, temperature=0)
    first = chat.send("hello")
    second = chat.send("and again")
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert second.prompt_tokens > first.prompt_tokens + first.completion_tokens
    assert second.cached_tokens > 0  # the second turn reuses the first's prompt


@pytest.mark.model
def test_api_and_cli_give_byte_identical_answers(model, cli, model_env):
    for args, kwargs in (
        (["--raw", "The three primary colors are"], {"raw": True}),
        (["Name a fruit."], {}),
    ):
        result = cli("ask", "-T", "0", "-n", "16", "--no-log", *args, env=model_env)
        assert result.returncode == 0, result.stderr
        text = model.ask(args[-1], temperature=0, max_tokens=16, **kwargs).text
        assert result.stdout == text + ("" if text.endswith("\n") else "\n")


@pytest.mark.model
def test_python_api_has_the_clis_default_cap_and_base_model_stop(model, cli, model_env):
    from localassist.settings import load_settings

    defaults = model._sampling({})
    assert defaults == SamplingParams.from_settings(load_settings())  # what `ask` builds from no flags
    assert defaults.max_tokens == 512 and defaults.natural_end
    model.ask("1, 2, 3,", raw=True, max_tokens=2, temperature=0)  # not the same prompt twice in a row (KV reuse)
    prompt = "The three primary colors are"
    done = model.ask(prompt, raw=True, temperature=0)  # neither max_tokens nor stop
    result = cli("ask", "--raw", "-T", "0", "--no-log", prompt, env=model_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == done.text + ("" if done.text.endswith("\n") else "\n")
    assert done.finish_reason == "stop" and done.completion_tokens < defaults.max_tokens


@pytest.mark.model
def test_api_options_are_checked_like_flags(model):
    from localassist.errors import InvalidSettingError, UsageError

    with pytest.raises(InvalidSettingError, match="between 0 and 2"):
        model.ask("x", temperature=9)
    with pytest.raises(UsageError, match="unknown sampling option"):
        model.ask("x", colour="blue")


@pytest.mark.model
def test_import_localassist_does_not_load_llama_cpp():
    import subprocess

    code = "import sys, localassist; print('llama_cpp' in sys.modules, 'rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
