"""KV snapshots: a conversation resumed in a new process evaluates only its new tokens,
continues exactly as the live process would have, and never trusts a snapshot that does
not match (another model or context, another prompt, a corrupted or truncated file)."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from imports import loaded_by
from localassist.engine.types import ChatRequest, Message, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12)
FIRST = (
    Message("system", "You are a helpful assistant who answers in full sentences."),
    Message("user", "Tell me about lighthouses: who kept them, how the lamps worked, and why ships needed them."),
)
FOLLOW_UP = Message("user", "And what replaced the keepers?")


def _open(model: Path, kv: Path | None, **options):
    from localassist.engine.local import LoadOptions, LocalBackend

    return LocalBackend(model, "m", LoadOptions(**{"ctx": 1024, "threads": 2, **options}, kv_snapshots=kv))


def _ask(backend, messages):
    return backend.chat(ChatRequest(messages=tuple(messages), sampling=GREEDY)).result()


def _second(first_answer: str) -> list[Message]:
    return [*FIRST, Message("assistant", first_answer), FOLLOW_UP]


@pytest.fixture(params=["starter", "starter-chat"])
def model(request, starter_model) -> Path:
    """Gemma 3 (sliding-window attention: a snapshot is usable only whole) and SmolLM2 (a
    plain KV cache: a snapshot can be cut back to the shared prefix)."""
    return starter_model if request.param == "starter" else request.getfixturevalue("starter_chat_path")


@pytest.fixture(scope="module")
def live_answers(starter_model, tmp_path_factory):
    """What a process that never stopped answers, per model: turn 1, then turn 2 on top of
    its KV cache (the oracle for a resumed process)."""
    cache: dict[Path, tuple] = {}

    def answers(model: Path):
        if model not in cache:
            live = _open(model, None)
            first = _ask(live, FIRST)
            second = _ask(live, _second(first.text))
            prompt1 = live.chat_tokens(FIRST)
            prompt2 = live.chat_tokens(_second(first.text))
            live.close()
            cache[model] = (first, second, prompt1, prompt2)
        return cache[model]

    return answers


def _snapshot_files(kv: Path) -> list[Path]:
    return sorted(kv.rglob("*.kv"))


def _save_turn_one(model: Path, kv: Path):
    first_process = _open(model, kv)
    first = _ask(first_process, FIRST)
    first_process.close()  # waits for the background write
    return first


# --- the round trip


@pytest.mark.model
def test_resumed_process_evaluates_only_new_tokens_and_answers_as_the_live_process(model, live_answers, tmp_path):
    first, live_second, prompt1, prompt2 = live_answers(model)
    kv = tmp_path / "kv"
    assert _save_turn_one(model, kv).text == first.text
    assert len(_snapshot_files(kv)) == 1

    resumed_process = _open(model, kv)
    resumed = _ask(resumed_process, _second(first.text))
    resumed_process.close()

    # the KV cache after turn 1 holds its prompt and every answer token that was fed back
    # (all of them when it ended on end-of-turn; all but the last when max_tokens cut it)
    kept = len(prompt1) + first.completion_tokens - (1 if first.finish_reason == "length" else 0)
    assert prompt2[: len(prompt1)] == prompt1
    assert resumed.cached_tokens == kept
    assert resumed.prompt_tokens - resumed.cached_tokens == len(prompt2) - kept  # only the new tokens
    assert resumed.text == live_second.text
    assert resumed.text  # a real answer, not an empty one that would match anything


@pytest.mark.model
def test_without_a_snapshot_the_new_process_evaluates_everything(starter_model, live_answers, tmp_path):
    first, _, _, prompt2 = live_answers(starter_model)
    cold = _open(starter_model, tmp_path / "kv")
    done = _ask(cold, _second(first.text))
    cold.close()
    assert (done.prompt_tokens, done.cached_tokens) == (len(prompt2), 0)


# --- snapshots that must not be trusted


def _full_evaluation(model: Path, messages) -> str:
    fresh = _open(model, None)
    try:
        return _ask(fresh, messages).text
    finally:
        fresh.close()


def _resume_after(model: Path, kv: Path, first_text: str, caplog) -> tuple:
    caplog.set_level(logging.DEBUG, logger="localassist.kv_snapshots")
    resumed_process = _open(model, kv)
    done = _ask(resumed_process, _second(first_text))
    resumed_process.close()
    return done, caplog.text


@pytest.mark.model
@pytest.mark.parametrize(
    ("damage", "note"),
    [
        (lambda data: data[:-1000], "truncated"),
        (lambda data: data[:-5000] + bytes([data[-5000] ^ 0xFF]) + data[-4999:], "corrupted"),
        (lambda data: data[:20], "skipped"),
        (lambda data: b"\0" * len(data), "not a snapshot file"),
    ],
    ids=["truncated", "one-flipped-byte", "cut-in-the-header", "zeroed"],
)
def test_damaged_snapshot_falls_back_to_full_evaluation(starter_model, live_answers, tmp_path, caplog, damage, note):
    first, _, _, prompt2 = live_answers(starter_model)
    kv = tmp_path / "kv"
    _save_turn_one(starter_model, kv)
    (path,) = _snapshot_files(kv)
    path.write_bytes(damage(path.read_bytes()))

    done, logged = _resume_after(starter_model, kv, first.text, caplog)
    assert (done.prompt_tokens, done.cached_tokens) == (len(prompt2), 0)
    assert done.text == _full_evaluation(starter_model, _second(first.text))
    assert note in logged
    assert not path.exists()  # a bad file is removed, not tried again on every resume


@pytest.mark.model
def test_snapshot_of_another_conversation_is_not_used(starter_model, live_answers, tmp_path):
    first, _, _, _ = live_answers(starter_model)
    kv = tmp_path / "kv"
    _save_turn_one(starter_model, kv)
    other = [Message("system", "You answer in French."), *FIRST[1:], Message("assistant", first.text), FOLLOW_UP]
    process = _open(starter_model, kv)
    done = _ask(process, other)
    process.close()
    assert done.cached_tokens == 0
    assert done.text == _full_evaluation(starter_model, other)


@pytest.mark.model
def test_snapshot_made_for_another_context_is_not_used(starter_model, live_answers, tmp_path, caplog):
    first, _, _, prompt2 = live_answers(starter_model)
    kv = tmp_path / "kv"
    _save_turn_one(starter_model, kv)
    (made,) = _snapshot_files(kv)

    # another context size: another folder, so nothing to find
    bigger = _open(starter_model, kv, ctx=2048)
    assert _ask(bigger, _second(first.text)).cached_tokens == 0
    bigger.close()

    # the same file put into that other context's folder is refused by its header
    for path in _snapshot_files(kv):
        if path.parent != made.parent:
            path.unlink()
    other_dir = next(p for p in kv.iterdir() if p != made.parent)
    (other_dir / made.name).write_bytes(made.read_bytes())
    caplog.set_level(logging.DEBUG, logger="localassist.kv_snapshots")
    bigger = _open(starter_model, kv, ctx=2048)
    done = _ask(bigger, _second(first.text))
    bigger.close()
    assert (done.prompt_tokens, done.cached_tokens) == (len(prompt2), 0)
    assert "made for another model or context" in caplog.text


def test_context_key_changes_with_the_model_file_and_the_context_settings(tmp_path):
    from localassist.engine.kv_snapshots import SnapshotStore, context_identity

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 100)

    def key(**settings):
        return SnapshotStore(tmp_path / "kv", context_identity(model, **settings), 10**9).key

    base = key(n_ctx=1024, n_batch=512, flash_attn=False, gpu_layers=0)
    assert base == key(n_ctx=1024, n_batch=512, flash_attn=False, gpu_layers=0)
    for changed in ({"n_ctx": 2048}, {"n_batch": 1024}, {"flash_attn": True}, {"gpu_layers": -1}):
        settings = {"n_ctx": 1024, "n_batch": 512, "flash_attn": False, "gpu_layers": 0, **changed}
        assert key(**settings) != base, changed
    model.write_bytes(b"GGUF" + b"\1" * 101)  # another model at the same path
    assert key(n_ctx=1024, n_batch=512, flash_attn=False, gpu_layers=0) != base


# --- files, cap, settings


def _fake_store(root: Path, cap: int = 10**9):
    from localassist.engine.kv_snapshots import SnapshotStore

    return SnapshotStore(root, {"model": "fake"}, cap)


def _write_fake(store, tokens: list[int], size: int) -> Path:
    import numpy as np

    return store._write(np.asarray(tokens, dtype="<i4"), memoryview(bytes(size)))


def test_snapshot_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = _write_fake(_fake_store(tmp_path / "kv"), list(range(40)), 1000)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "kv").stat().st_mode) == 0o700


@pytest.mark.model
def test_saved_snapshot_is_private(starter_model, tmp_path):
    old = os.umask(0o022)
    try:
        _save_turn_one(starter_model, tmp_path / "kv")
    finally:
        os.umask(old)
    (path,) = _snapshot_files(tmp_path / "kv")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_cap_evicts_the_least_recently_used_first(tmp_path):
    store = _fake_store(tmp_path / "kv", cap=10**9)
    paths = [_write_fake(store, [i] * 40, 10_000) for i in range(1, 4)]
    size = paths[0].stat().st_size
    for age, path in zip((300, 200, 100), paths, strict=True):  # 1 oldest ... 3 newest
        os.utime(path, ns=(10**18 - age * 10**9,) * 2)
    os.utime(paths[0])  # snapshot 1 was just used (a restore touches it)
    store.cap = 3 * size + size // 2
    fourth = _write_fake(store, [4] * 40, 10_000)
    assert [p.exists() for p in (*paths, fourth)] == [True, False, True, True]  # 2 was the least recently used


def test_new_snapshot_replaces_the_one_it_extends(tmp_path):
    store = _fake_store(tmp_path / "kv")
    turn1 = _write_fake(store, list(range(40)), 100)
    other = _write_fake(store, [7] * 40, 100)  # another conversation
    turn2 = _write_fake(store, list(range(60)), 100)  # the same conversation, one turn on
    assert (turn1.exists(), other.exists(), turn2.exists()) == (False, True, True)


def test_kv_cache_size_setting(tmp_path, monkeypatch):
    from localassist.engine.local import LoadOptions
    from localassist.errors import InvalidSettingError
    from localassist.settings import load_settings, parse_value

    assert parse_value("kv_cache_size", "2GB", "flag") == 2_000_000_000
    assert parse_value("kv_cache_size", "500 MiB", "flag") == 500 * 2**20
    assert parse_value("kv_cache_size", "0", "flag") == 0
    for bad in ("-1", "lots", "1.5", "2 XB"):
        with pytest.raises(InvalidSettingError):
            parse_value("kv_cache_size", bad, "flag")
    settings = load_settings()
    assert settings.kv_cache_size == 2 * 10**9
    assert LoadOptions.from_settings(settings, snapshots=True).kv_snapshots == settings.paths.cache_dir / "kv"
    assert LoadOptions.from_settings(settings).kv_snapshots is None  # one-off answers keep no state
    monkeypatch.setenv("LOCALASSIST_KV_CACHE_SIZE", "0")
    assert LoadOptions.from_settings(load_settings(), snapshots=True).kv_snapshots is None


# --- the CLI


def _kept(answer: dict) -> int:
    """Tokens in the KV cache after an answer: its prompt and the answer tokens fed back
    (all but the last when max_tokens cut it)."""
    usage = answer["usage"]
    return usage["prompt_tokens"] + usage["completion_tokens"] - (1 if answer["finish_reason"] == "length" else 0)


def _ask_json(cli, env, *args):
    result = cli("ask", "-T", "0", "-n", "8", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.model
def test_ask_continue_in_a_new_process_starts_from_the_snapshot(cli, model_env, isolated_home):
    first = _ask_json(cli, model_env, "Tell me about a cat named Tom who lives in Paris.")
    assert first["usage"]["cached_prompt_tokens"] == 0
    second = _ask_json(cli, model_env, "-c", "What did Tom eat for breakfast?")
    assert second["usage"]["cached_prompt_tokens"] == 0  # plain `ask` keeps no state: this one evaluates all
    third = _ask_json(cli, model_env, "-c", "Where did Tom sleep?")
    assert third["usage"]["cached_prompt_tokens"] == _kept(second)

    stats = cli("ask", "-T", "0", "-n", "4", "--stats", "-c", "And his friends?", env=model_env)
    assert stats.returncode == 0, stats.stderr
    assert f"({_kept(third)} cached)" in stats.stderr

    shown = json.loads(cli("cache", "--json", env=model_env).stdout)
    assert shown["entries"] == 1 and shown["bytes"] > 0  # each exchange replaced the one it extended


@pytest.mark.model
def test_chat_resume_in_a_new_process_starts_from_the_snapshot(model_env):
    from chatrepl import Repl, stats

    repl = Repl("-n", "8", env=model_env)
    repl.send("Tell me about a dog named Rex.")
    before = stats(repl)
    assert repl.exit() == 0

    resumed = Repl("-n", "8", "--resume", env=model_env)
    resumed.send("What does Rex like to eat?")
    after = stats(resumed)
    assert resumed.exit() == 0
    cut = 1 if before["answer"] == 8 else 0  # cut by -n 8: the last token was not fed back
    assert after["cached"] == before["prompt"] + before["answer"] - cut
    assert after["prompt"] > after["cached"]


def test_cache_command_shows_and_clears_the_snapshots(cli, isolated_home):
    store = _fake_store(isolated_home / "cache" / "kv")
    paths = [_write_fake(store, [i] * 40, 5000) for i in (1, 2)]
    shown = cli("cache", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["entries"], data["bytes"]) == (2, sum(p.stat().st_size for p in paths))
    assert data["cap_bytes"] == 2 * 10**9

    table = cli("cache")
    assert "entries  2" in table.stdout

    cleared = cli("cache", "clear")
    assert cleared.returncode == 0
    assert "removed 2 snapshots" in cleared.stderr
    assert not any(p.exists() for p in paths)
    assert json.loads(cli("cache", "--json").stdout)["entries"] == 0


def test_cache_command_stays_light():
    for args in (["cache"], ["cache", "clear"]):
        loaded, output = loaded_by(args, ("llama_cpp", "numpy"))
        assert loaded == [], (args, output)
