"""The small GGUF reader against the reference reader (the `gguf` package) on a real model."""

from __future__ import annotations

import shutil

import pytest

from localassist.errors import ModelInvalidError
from localassist.models.gguf_file import FILE_TYPES, GGML_TYPES, read_gguf, read_gguf_cached


@pytest.fixture(scope="module")
def reference(starter_model):
    gguf = pytest.importorskip("gguf")
    return gguf.GGUFReader(str(starter_model))


def _field(reader, key):
    field = reader.fields[key]
    return field.contents()


def test_metadata_matches_the_reference_reader(starter_model, reference):
    info = read_gguf(starter_model)
    assert info.architecture == _field(reference, "general.architecture") == "gemma3"
    assert info.context_length == _field(reference, "gemma3.context_length")
    assert info.block_count == _field(reference, "gemma3.block_count")
    assert info.metadata["general.file_type"] == _field(reference, "general.file_type")
    assert info.tensor_count == len(reference.tensors)
    assert info.parameters == sum(int(t.n_elements) for t in reference.tensors)
    assert info.quant == "Q4_K_M"
    assert info.chat_template is None
    assert info.data_end <= info.file_size


def test_type_tables_match_the_reference():
    gguf = pytest.importorskip("gguf")
    for type_id, (name, block, size) in GGML_TYPES.items():
        member = gguf.GGMLQuantizationType(type_id)
        assert member.name == name
        assert gguf.GGML_QUANT_SIZES[member] == (block, size)
    for ftype, name in FILE_TYPES.items():
        assert gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_").removeprefix("ALL_") == name


def test_not_a_gguf(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("hello, I am text pretending to be a model file")
    with pytest.raises(ModelInvalidError, match="not a GGUF"):
        read_gguf(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelInvalidError, match="not a GGUF"):
        read_gguf(path)


@pytest.mark.parametrize("keep", [100, 1_000_000])
def test_truncated_header(tmp_path, starter_model, keep):
    path = tmp_path / "cut.gguf"
    with starter_model.open("rb") as src:
        path.write_bytes(src.read(keep))
    with pytest.raises(ModelInvalidError, match="truncated"):
        read_gguf(path)


def test_truncated_tensor_data(tmp_path, starter_model):
    path = tmp_path / "cut.gguf"
    shutil.copyfile(starter_model, path)
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size - 4096)
    with pytest.raises(ModelInvalidError, match="header promises"):
        read_gguf(path)


def test_folder_and_missing(tmp_path):
    with pytest.raises(ModelInvalidError, match="folder"):
        read_gguf(tmp_path)
    with pytest.raises(ModelInvalidError, match="does not exist"):
        read_gguf(tmp_path / "nope.gguf")


def test_cached_header_equals_a_fresh_read_and_skips_the_parse(starter_model, tmp_path, monkeypatch):
    from localassist.models import gguf_file

    cache = tmp_path / "gguf"
    first = read_gguf_cached(starter_model, cache)
    assert first == read_gguf(starter_model)
    (entry,) = cache.iterdir()
    assert entry.stat().st_mode & 0o777 == 0o600

    def no_parse(*_args):
        raise AssertionError("parsed again although the file did not change")

    monkeypatch.setattr(gguf_file, "_parse", no_parse)
    assert read_gguf_cached(starter_model, cache) == first


def test_cached_header_of_a_file_truncated_since_is_not_used(starter_model, tmp_path):
    copy = tmp_path / "model.gguf"
    shutil.copyfile(starter_model, copy)
    cache = tmp_path / "gguf"
    read_gguf_cached(copy, cache)
    with copy.open("r+b") as fh:
        fh.truncate(copy.stat().st_size - 4096)
    with pytest.raises(ModelInvalidError, match="truncated"):
        read_gguf_cached(copy, cache)


def test_a_damaged_header_cache_entry_is_read_past(starter_model, tmp_path):
    cache = tmp_path / "gguf"
    first = read_gguf_cached(starter_model, cache)
    (entry,) = cache.iterdir()
    entry.write_bytes(b'{"format": 1, "identity": ')
    assert read_gguf_cached(starter_model, cache) == first
