"""Vector search without a SQLite extension: the float32 vectors in one numpy matrix,
searched by brute force (one matrix-vector product).

Python's sqlite3 often cannot load extensions (no ``enable_load_extension``), so
sqlite-vec is not an option everywhere, and where it loads (through apsw) its vec0
scan was 5–8x slower than numpy at 100k chunks (benchmarks/rag.py). Reading 100k blobs
out of SQLite takes over a second, so the matrix is cached beside the database in
``<name>.vec`` and memory-mapped; the cache carries the ``vectors_version`` the
database had when it was written, and is rewritten when the vectors changed since.
The database stays the source of truth: the cache can be deleted at any time.
"""

from __future__ import annotations

import json
import struct
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from localassist.files import write_private_bytes

if TYPE_CHECKING:
    import numpy as np

    from localassist.rag.store import Index

_MAGIC = b"LAVEC2\0\0"
_ALIGN = 64


@dataclass
class Matrix:
    version: str
    ids: np.ndarray  # int64 vectors.id, ascending; row i of data is vector ids[i]
    hashes: np.ndarray  # uint8 (n, 32): the sha256 digest of row i's chunk text
    data: np.ndarray  # float32 (n, dim), unit rows

    def rows_of(self, vector_ids: list[int]) -> np.ndarray:
        import numpy as np

        return np.searchsorted(self.ids, np.asarray(vector_ids, dtype=np.int64))

    def text_hash(self, row: int) -> str:
        return self.hashes[row].tobytes().hex()


def load_matrix(index: Index) -> Matrix:
    """The index's vectors, from memory, the cache file, or (rebuilding the cache) SQLite."""
    version = index.meta().get("vectors_version", "")
    cached = index._matrix
    if cached is not None and cached.version == version:
        return cached
    path = index.path.with_suffix(".vec")
    matrix = _read(path, version)
    if matrix is None:
        matrix = _from_database(index)
        with suppress(OSError):  # read-only or full disk: search from memory this time
            write_private_bytes(path, _encode(matrix))
    index._matrix = matrix
    return matrix


def _from_database(index: Index) -> Matrix:
    import numpy as np

    db = index.db
    db.execute("BEGIN")  # one snapshot: the version and the vectors agree
    try:
        version = db.execute("SELECT value FROM meta WHERE key = 'vectors_version'").fetchone()[0]
        dim = int(db.execute("SELECT value FROM meta WHERE key = 'dimension'").fetchone()[0])
        rows = db.execute("SELECT id, text_hash, vector FROM vectors ORDER BY id").fetchall()
    finally:
        db.execute("COMMIT")
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    hashes = np.frombuffer(b"".join(bytes.fromhex(r[1]) for r in rows), dtype=np.uint8).reshape(len(rows), 32)
    data = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), dim)
    return Matrix(version, ids, hashes, data)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % _ALIGN)


def _encode(matrix: Matrix) -> bytes:
    header = json.dumps({"version": matrix.version, "count": len(matrix.ids), "dim": matrix.data.shape[1]}).encode()
    return b"".join(
        [
            _pad(_MAGIC + struct.pack("<Q", len(header)) + header),
            _pad(matrix.ids.astype("<i8").tobytes()),
            _pad(matrix.hashes.tobytes()),
            matrix.data.astype("<f4").tobytes(),
        ]
    )


def _read(path: Path, version: str) -> Matrix | None:
    import numpy as np

    try:
        with path.open("rb") as fh:
            start = fh.read(16)
            if len(start) < 16 or start[:8] != _MAGIC:
                return None
            (length,) = struct.unpack("<Q", start[8:])
            header = json.loads(fh.read(length))
        if header["version"] != version:
            return None
        count, dim = int(header["count"]), int(header["dim"])
        aligned = lambda n: n + (-n % _ALIGN)  # noqa: E731
        offsets = [aligned(16 + length)]
        offsets.append(offsets[-1] + aligned(count * 8))
        offsets.append(offsets[-1] + aligned(count * 32))
        if path.stat().st_size != offsets[-1] + count * dim * 4:
            return None
        if count == 0:
            return Matrix(version, np.zeros(0, np.int64), np.zeros((0, 32), np.uint8), np.zeros((0, dim), np.float32))
        ids = np.array(np.memmap(path, dtype="<i8", mode="r", offset=offsets[0], shape=(count,)))
        hashes = np.memmap(path, dtype=np.uint8, mode="r", offset=offsets[1], shape=(count, 32))
        data = np.memmap(path, dtype="<f4", mode="r", offset=offsets[2], shape=(count, dim))
        return Matrix(version, ids, hashes, data)
    except (OSError, ValueError, KeyError, struct.error):
        return None
