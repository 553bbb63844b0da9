"""Private files (issue #9): every file holding the user's text is 0600 in a 0700 directory,
written atomically, whatever the umask. Checked on real files with os.stat."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from localassist.files import (
    TOMLDecodeError,
    create_private_file,
    load_toml,
    private_dir,
    write_private_bytes,
    write_private_text,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """umask 0: a file or directory created without an explicit mode comes out world-writable."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_private_dir_is_0700_new_or_existing(tmp_path, open_umask):
    fresh = private_dir(tmp_path / "a" / "b")
    assert mode(fresh) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    assert mode(private_dir(loose)) == 0o700


def test_private_write_replaces_the_file_atomically_as_0600(tmp_path, open_umask):
    target = tmp_path / "notes.md"
    target.write_text("old text")
    os.chmod(target, 0o644)
    write_private_text(target, "new text: 日本語\n")
    assert target.read_bytes() == "new text: 日本語\n".encode()
    assert mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]  # no temporary file left
    os.chmod(tmp_path, 0o755)  # the user's own folder: left as it is
    write_private_bytes(tmp_path / "sub" / "blob.bin", b"\x00\x01")
    assert mode(tmp_path) == 0o755
    assert mode(tmp_path / "sub") == 0o700 and mode(tmp_path / "sub" / "blob.bin") == 0o600


def test_failed_private_write_keeps_the_old_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "talk.json"
    target.mkdir()  # os.replace cannot put a file over a directory
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        write_private_text(target, "{}")
    assert (target / "inside").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.json"]


def test_create_private_file_keeps_content_and_tightens_the_mode(tmp_path, open_umask):
    history = tmp_path / "chat_history"
    create_private_file(history)
    assert history.read_bytes() == b"" and mode(history) == 0o600
    history.write_text("+what I typed\n")
    os.chmod(history, 0o666)
    create_private_file(history)
    assert history.read_text() == "+what I typed\n" and mode(history) == 0o600


def test_config_templates_and_last_used_are_0600_in_0700_dirs(isolated_home, open_umask):
    from localassist.conversation.prompt_templates import editable_path
    from localassist.models.last_used import last_used, record_use
    from localassist.settings import app_paths, set_config_value

    set_config_value("system", "my private system prompt")
    paths = app_paths()
    assert mode(paths.config_file) == 0o600 and mode(paths.config_file.parent) == 0o700
    assert load_toml(paths.config_file) == {"system": "my private system prompt"}

    record_use(paths.data_dir, Path("/models/x.gguf"))
    assert mode(paths.data_dir / "last_used.json") == 0o600 and mode(paths.data_dir) == 0o700
    assert list(last_used(paths.data_dir)) == ["/models/x.gguf"]

    template = editable_path("translate", paths.config_dir)
    assert template.read_text().startswith("description")
    assert mode(template) == 0o600 and mode(template.parent) == 0o700


def test_load_toml_reads_and_reports_bad_toml(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('a = 1\n[b]\nc = "d"\n')
    assert load_toml(good) == {"a": 1, "b": {"c": "d"}}
    bad = tmp_path / "bad.toml"
    bad.write_text("a = \n")
    with pytest.raises(TOMLDecodeError):
        load_toml(bad)
    with pytest.raises(OSError):
        load_toml(tmp_path / "missing.toml")
