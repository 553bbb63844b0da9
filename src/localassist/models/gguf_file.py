"""A small, dependency-free GGUF header reader.

``models``, ``info`` and model resolution must stay fast and must not import
numpy or llama_cpp, so instead of ``gguf.GGUFReader`` this reads the header
(metadata key/values and tensor infos) through ``mmap`` and checks that the
tensor data the header promises is really in the file, which catches truncated
downloads before llama.cpp ever sees them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localassist.errors import ModelInvalidError
from localassist.files import NotRegularFileError, check_regular, open_regular, write_private_bytes

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# value type id -> struct format for scalars
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")

# ggml tensor type id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

# general.file_type (llama_ftype) -> the quant name people use in file names
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}

# Arrays longer than this (token lists, merges) are skipped, only their length is kept.
_MAX_KEPT_ARRAY = 64


@dataclass(frozen=True)
class ArrayInfo:
    """A large metadata array that was skipped; only its length is kept."""

    length: int


@dataclass
class GGUFInfo:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensor_count: int
    parameters: int
    file_size: int
    data_end: int
    tensor_types: dict[str, int] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def context_length(self) -> int | None:
        value = self.arch_value("context_length")
        return int(value) if value is not None else None

    @property
    def block_count(self) -> int | None:
        value = self.arch_value("block_count")
        return int(value) if value is not None else None

    @property
    def quant(self) -> str:
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int) and file_type in FILE_TYPES:
            return FILE_TYPES[file_type]
        # No file_type key: name it after the most common tensor type.
        if self.tensor_types:
            return max(self.tensor_types, key=self.tensor_types.__getitem__)
        return "unknown"

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return str(value) if value else None


class _Cursor:
    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def need(self, size: int) -> None:
        if size < 0 or self.pos + size > len(self.buf):
            raise ModelInvalidError(
                f"{self.path} is truncated: the GGUF header ends early at byte {len(self.buf):,}; "
                f"download the file again"
            )

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        self.need(size)
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.unpack("Q")
        self.need(length)
        raw = bytes(self.buf[self.pos : self.pos + length])
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.unpack("Q")
        self.need(length)
        self.pos += length

    def skip_strings(self, count: int) -> None:
        # vocabularies hold 100k+ strings: a tight loop with locals, bounds checked once
        buf, pos, read_len, end = self.buf, self.pos, _U64.unpack_from, len(self.buf)
        for _ in range(count):
            if pos + 8 > end:
                self.pos = pos
                self.need(8)
            pos += 8 + read_len(buf, pos)[0]
        self.pos = pos
        self.need(0)

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.unpack("I")
            count = self.unpack("Q")
            if count <= _MAX_KEPT_ARRAY:
                return [self.value(item_type) for _ in range(count)]
            if item_type in _SCALAR:
                size = struct.calcsize("<" + _SCALAR[item_type]) * count
                self.need(size)
                self.pos += size
            elif item_type == _STRING:
                self.skip_strings(count)
            else:
                for _ in range(count):
                    self.value(item_type)
            return ArrayInfo(count)
        raise ModelInvalidError(f"{self.path} has an unknown GGUF value type {vtype}")


def read_gguf(path: str | Path) -> GGUFInfo:
    """Read a GGUF file's header; raise ModelInvalidError for anything unusable."""
    path = Path(path)
    try:
        with open_regular(path) as fh:  # a FIFO would block the open: refused from a stat first
            size = os.fstat(fh.fileno()).st_size
            if size < 24:
                magic = fh.read(4)
                if magic != GGUF_MAGIC:
                    raise ModelInvalidError(f"{path} is not a GGUF model file")
                raise ModelInvalidError(f"{path} is truncated ({size} bytes); download it again")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse(memoryview(mm), path, size)
    except IsADirectoryError:
        raise ModelInvalidError(f"{path} is a folder, not a GGUF file") from None
    except FileNotFoundError:
        raise ModelInvalidError(f"{path} does not exist") from None
    except PermissionError:
        raise ModelInvalidError(f"{path} is not readable (permission denied)") from None
    except NotRegularFileError as exc:
        raise ModelInvalidError(f"{path} is {exc.strerror}; pass a GGUF file") from None
    except OSError as exc:
        raise ModelInvalidError(f"cannot read {path}: {exc.strerror or exc}") from None


_HEADER_CACHE_FORMAT = 1


def read_gguf_cached(path: str | Path, cache_dir: Path | None) -> GGUFInfo:
    """``read_gguf``, remembered per file in ``cache_dir`` (None: no cache).

    Walking a 262k-string vocabulary to reach the tensor table costs ~70 ms on every
    load. An entry is keyed by the file's identity (resolved path, inode, size,
    modification and change times), so a file replaced, grown or truncated is parsed,
    and checked, again; an unreadable entry is ignored."""
    path = Path(path)
    if cache_dir is None:
        return read_gguf(path)
    try:
        st = path.stat()
        check_regular(path, st.st_mode)
        identity = f"{path.resolve()}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    except OSError:
        return read_gguf(path)  # says what is wrong with the path
    entry = cache_dir / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"
    try:
        data = json.loads(entry.read_bytes())
        if data["format"] == _HEADER_CACHE_FORMAT and data["identity"] == identity:
            return GGUFInfo(
                path,
                data["version"],
                {key: _from_json(value) for key, value in data["metadata"].items()},
                data["tensor_count"],
                data["parameters"],
                data["file_size"],
                data["data_end"],
                data["tensor_types"],
            )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    info = read_gguf(path)
    record = {
        "format": _HEADER_CACHE_FORMAT,
        "identity": identity,
        "version": info.version,
        "metadata": {key: _to_json(value) for key, value in info.metadata.items()},
        "tensor_count": info.tensor_count,
        "parameters": info.parameters,
        "file_size": info.file_size,
        "data_end": info.data_end,
        "tensor_types": info.tensor_types,
    }
    with contextlib.suppress(OSError):  # a read-only cache costs only the time
        write_private_bytes(entry, json.dumps(record).encode())
    return info


def _to_json(value: Any) -> Any:
    if isinstance(value, ArrayInfo):
        return {"skipped_array": value.length}  # GGUF values are never objects: no clash
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        return ArrayInfo(int(value["skipped_array"]))
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


def _parse(buf: memoryview, path: Path, size: int) -> GGUFInfo:
    cur = _Cursor(buf, path)
    try:
        if bytes(buf[:4]) != GGUF_MAGIC:
            raise ModelInvalidError(f"{path} is not a GGUF model file (bad magic bytes)")
        cur.pos = 4
        version = cur.unpack("I")
        if version not in (2, 3):
            raise ModelInvalidError(f"{path} uses GGUF version {version}; only 2 and 3 are supported")
        tensor_count = cur.unpack("Q")
        kv_count = cur.unpack("Q")
        if kv_count > 1_000_000 or tensor_count > 10_000_000:
            raise ModelInvalidError(f"{path} has a corrupt GGUF header")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = cur.string()
            metadata[key] = cur.value(cur.unpack("I"))
        parameters = 0
        data_extent = 0
        tensor_types: dict[str, int] = {}
        for _ in range(tensor_count):
            cur.skip_string()
            n_dims = cur.unpack("I")
            if n_dims > 8:
                raise ModelInvalidError(f"{path} has a corrupt tensor table")
            elements = 1
            for _ in range(n_dims):
                elements *= cur.unpack("Q")
            ggml_type = cur.unpack("I")
            offset = cur.unpack("Q")
            parameters += elements
            known = GGML_TYPES.get(ggml_type)
            if known:
                name, block, block_bytes = known
                tensor_types[name] = tensor_types.get(name, 0) + elements
                data_extent = max(data_extent, offset + elements // block * block_bytes)
            else:
                data_extent = max(data_extent, offset)
    finally:
        buf.release()
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    data_start = (cur.pos + alignment - 1) // alignment * alignment
    data_end = data_start + data_extent
    if data_end > size:
        raise ModelInvalidError(
            f"{path} is truncated: {size:,} bytes on disk, the header promises {data_end:,}; download the file again"
        )
    return GGUFInfo(path, version, metadata, tensor_count, parameters, size, data_end, tensor_types)
