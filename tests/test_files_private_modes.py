"""Every folder localassist creates is 0700 and every file 0600, whatever command runs
first in a fresh LOCALASSIST_HOME and whatever the umask: one place (files.py) creates
them. Each test runs real commands with umask 022 and walks the whole tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from chatrepl import Repl
from fakehub import FakeFile, FakeHub, FakeRepo


@pytest.fixture(autouse=True)
def umask_022():
    """The usual umask: a folder or file made without an explicit mode comes out 0755/0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def loose(home: Path) -> list[str]:
    """Everything under ``home`` (and ``home`` itself) that is not 0700 (folder) or 0600 (file)."""
    found = []
    for path in [home, *sorted(home.rglob("*"))]:
        st = path.lstat()
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            found.append(f"{stat.filemode(st.st_mode)} {path.relative_to(home.parent)}")
    return found


@pytest.fixture
def notes(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# Lighthouses\n\nKeepers trimmed the wicks every night.\n")
    return folder


@pytest.fixture
def hub():
    fake = FakeHub().start()
    fake.add(FakeRepo("test/Tiny-GGUF", [FakeFile("tiny-Q4_K_M.gguf", b"GGUF" + bytes(5000))]))
    yield fake
    fake.stop()


FIRST_COMMANDS = {
    "index add": ["index", "add", "{notes}", "--no-embed"],
    "keys create": ["keys", "create", "alice"],
    "config set": ["config", "set", "temperature", "0.3"],
    "logs off": ["logs", "off"],
    "templates edit": ["templates", "edit", "mine"],
    "remote add": ["remote", "add", "box", "http://127.0.0.1:9"],
    "pull": ["pull", "test/Tiny-GGUF"],
}


@pytest.mark.parametrize("name", list(FIRST_COMMANDS))
def test_first_command_in_a_fresh_home_leaves_no_folder_or_file_readable_by_others(
    cli, isolated_home, notes, tmp_path, hub, name
):
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nexit 0\n")
    editor.chmod(0o755)
    env = {"EDITOR": str(editor), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
    result = cli(*[a.format(notes=notes) for a in FIRST_COMMANDS[name]], env=env)
    assert result.returncode == 0, result.stderr
    assert isolated_home.is_dir() or name == "pull"  # pull writes only to the Hugging Face cache
    if isolated_home.is_dir():
        assert loose(isolated_home) == []


@pytest.mark.model
def test_first_model_commands_in_a_fresh_home_leave_nothing_readable_by_others(cli, model_env, isolated_home, notes):
    from chatrepl import Repl

    # ask: the log, last use, GGUF header cache; ask -c: a KV snapshot; summarize: its notes
    assert cli("index", "add", str(notes), "--no-embed").returncode == 0  # data/ made by the index first
    for args in (
        ["ask", "-T", "0", "-n", "2", "Tell me about the keepers of lighthouses, please."],
        ["ask", "-c", "-T", "0", "-n", "2", "And the lamps?"],
        ["summarize", str(notes / "a.md"), "-n", "8"],
    ):
        result = cli(*args, env=model_env)
        assert result.returncode == 0, result.stderr
    repl = Repl("-n", "2", env=model_env)  # the chat prompt history, another snapshot
    repl.send("What did the keepers of lighthouses do all night?")
    assert repl.exit() == 0
    assert list((isolated_home / "cache" / "kv").rglob("*.kv")) and (isolated_home / "data" / "chat_history").exists()
    assert loose(isolated_home) == []


def test_folders_left_open_by_an_older_version_are_tightened_by_any_command(cli, isolated_home):
    for sub in ("config", "data", "cache"):
        (isolated_home / sub).mkdir(parents=True, mode=0o755)
    os.chmod(isolated_home, 0o700)
    assert cli("config", "show").returncode == 0
    assert loose(isolated_home) == []


# --- every file holding the user's text is 0600 in a 0700 folder


@pytest.mark.model
def test_chat_history_and_saved_sessions_are_private(model_env, isolated_home, tmp_path):
    repl = Repl("-n", "2", env=model_env)
    repl.send("a private thought")
    repl.send(f"/save {tmp_path / 'mine.json'}")
    assert repl.exit() == 0
    history = isolated_home / "data" / "chat_history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert stat.S_IMODE(history.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "mine.json").stat().st_mode) == 0o600
