"""The curated model catalog (``models/catalog.toml``): short names for popular GGUF models."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from localassist.errors import ConfigError
from localassist.files import TOMLDecodeError, load_toml


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    repo: str
    file: str
    quant: str
    license: str
    context_length: int
    parameters: str
    package: str | None = None
    kind: str = "chat"  # chat | embedding

    def file_glob(self, quant: str | None = None) -> str:
        return self.file.replace("{quant}", quant or self.quant)

    def matches(self, filename: str, quant: str | None = None) -> bool:
        return fnmatch.fnmatch(filename.lower(), self.file_glob(quant).lower())


def catalog_path() -> Path:
    packaged = Path(str(files("localassist").joinpath("catalog.toml")))
    if packaged.is_file():
        return packaged
    # Running from a source checkout (editable install): the repo's models/ folder.
    return Path(__file__).resolve().parents[3] / "models" / "catalog.toml"


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, CatalogEntry]:
    path = catalog_path()
    try:
        raw = load_toml(path)
    except (OSError, TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the model catalog {path}: {exc}") from None
    return {name: CatalogEntry(name=name, **fields) for name, fields in raw.items()}


def lookup(name: str) -> CatalogEntry | None:
    catalog = load_catalog()
    return catalog.get(name) or catalog.get(name.lower())
