"""Model resolution and listing. Nothing here touches the network.

A model can be named by a path to a ``.gguf``, a catalog short name, or
``owner/repo[:QUANT]`` already in the local Hugging Face cache.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from localassist import starter
from localassist.catalog import CatalogEntry, load_catalog, lookup
from localassist.errors import ModelInvalidError, ModelNotAvailableError
from localassist.gguf_file import FILE_TYPES
from localassist.settings import Settings

_REPO_RE = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?::(?P<quant>[\w.-]+))?$")
_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT_NAMES = sorted(set(FILE_TYPES.values()) | {"Q4_K", "Q5_K", "Q3_K", "IQ4_NL"}, key=len)


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str  # what the user would type to get this model again
    source: str  # path | starter | catalog | hf-cache | models-dir
    repo: str | None = None


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path
    size: int
    quant: str
    source: str
    repo: str | None = None


def quant_from_filename(filename: str) -> str | None:
    """The quantization named in a GGUF file name (Q4_K_M, q8_0, IQ4_XS ...), upper-cased."""
    stem = _SPLIT_RE.sub(".gguf", filename)
    found = None
    for quant in _QUANT_NAMES:  # shortest first, so the longest match wins
        if re.search(rf"(?:^|[-._]){re.escape(quant)}(?:[-._]|$)", stem, re.IGNORECASE):
            found = quant
    return found


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved as huggingface_hub does but at call time
    (huggingface_hub.constants freezes it at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    hf_home = os.environ.get("HF_HOME") or os.path.join(cache_home, "huggingface")
    return Path(hf_home).expanduser() / "hub"


def _repo_dir(repo: str) -> Path:
    return hf_cache_dir() / ("models--" + repo.replace("/", "--"))


def _snapshot(repo_dir: Path) -> Path | None:
    """The snapshot ``refs/main`` points at, else the newest one."""
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snap = repo_dir / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = [p for p in (repo_dir / "snapshots").glob("*") if p.is_dir()]
    return max(snaps, key=lambda p: p.stat().st_mtime) if snaps else None


def cached_gguf_files(repo: str) -> list[Path]:
    snap = _snapshot(_repo_dir(repo))
    if snap is None:
        return []
    return sorted(p for p in snap.rglob("*.gguf") if p.exists())


def _first_split_part(paths: Iterable[Path]) -> list[Path]:
    """Keep single files and the first part of split GGUFs (llama.cpp loads the rest itself)."""
    kept = []
    for path in paths:
        split = _SPLIT_RE.search(path.name)
        if split is None or int(split.group(1)) == 1:
            kept.append(path)
    return kept


def _pick_quant(repo: str, quant: str, files: list[Path], how_to_get: str) -> Path:
    matching = [p for p in _first_split_part(files) if (quant_from_filename(p.name) or "") == quant.upper()]
    if len(matching) == 1:
        return matching[0]
    available = sorted({q for p in files if (q := quant_from_filename(p.name))})
    if not matching:
        have = f" (cached: {', '.join(available)})" if available else ""
        raise ModelNotAvailableError(f"{repo}:{quant} is not in the local cache{have}; {how_to_get}")
    names = ", ".join(p.name for p in matching)
    raise ModelNotAvailableError(f"{repo}:{quant} matches several cached files ({names}); pass -m PATH")


def _download_hint(spec: str) -> str:
    return f"download it with `localassist pull {spec}`, or pass a .gguf file with -m PATH"


def _from_catalog(entry: CatalogEntry, settings: Settings) -> ResolvedModel:
    if entry.package:
        return ResolvedModel(starter.starter_path(settings.paths.cache_dir), entry.name, "starter", entry.repo)
    hint = _download_hint(entry.name)
    files = [p for p in cached_gguf_files(entry.repo) if entry.matches(p.name) or _SPLIT_RE.search(p.name)]
    if not files:
        raise ModelNotAvailableError(f"model '{entry.name}' ({entry.repo}) is not downloaded; {hint}")
    path = _pick_quant(entry.repo, entry.quant, files, hint)
    return ResolvedModel(path, entry.name, "catalog", entry.repo)


def _from_repo(repo: str, quant: str | None) -> ResolvedModel:
    files = cached_gguf_files(repo)
    hint = _download_hint(f"{repo}:{quant}" if quant else repo)
    if not files:
        raise ModelNotAvailableError(f"{repo} is not in the local Hugging Face cache; {hint}")
    if quant:
        path = _pick_quant(repo, quant, files, hint)
    else:
        candidates = _first_split_part(files)
        if len(candidates) > 1:
            quants = ", ".join(sorted({quant_from_filename(p.name) or p.name for p in candidates}))
            raise ModelNotAvailableError(f"{repo} has several cached files ({quants}); name one as {repo}:QUANT")
        path = candidates[0]
        quant = quant_from_filename(path.name)
    return ResolvedModel(path, f"{repo}:{quant}" if quant else repo, "hf-cache", repo)


def _looks_like_path(spec: str) -> bool:
    return (
        spec.lower().endswith(".gguf")
        or spec.startswith(("/", "./", "../", "~"))
        or (os.sep in spec and Path(spec).expanduser().exists())
    )


def _from_path(spec: str) -> ResolvedModel:
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelNotAvailableError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelInvalidError(f"{path} is a folder; pass the .gguf file inside it")
    if not os.access(path, os.R_OK):
        raise ModelInvalidError(f"{path} is not readable (permission denied)")
    return ResolvedModel(path.resolve(), str(path.resolve()), "path")


def resolve_model(spec: str | None, settings: Settings) -> ResolvedModel:
    """Turn what the user typed (or the configured default) into a local GGUF file."""
    spec = spec or settings.model
    if not spec:
        if starter.is_installed():
            return _from_catalog(load_catalog()["starter"], settings)
        raise ModelNotAvailableError(
            "no model: none is configured and the starter model is not installed; "
            f"run `{starter.INSTALL_HINT}`, pass -m PATH.gguf, "
            "or set a default with `localassist config set model NAME`"
        )
    if entry := lookup(spec):
        return _from_catalog(entry, settings)
    if _looks_like_path(spec):
        return _from_path(spec)
    if match := _REPO_RE.match(spec):
        return _from_repo(match.group("repo"), match.group("quant"))
    for local in _models_dir_files(settings):
        if spec in (local.name, local.path.stem):
            return ResolvedModel(local.path, local.name, "models-dir")
    raise ModelNotAvailableError(
        f"unknown model '{spec}': not a file, a catalog name or owner/repo[:QUANT]; "
        "`localassist models` lists what is available"
    )


def _models_dir_files(settings: Settings) -> Iterator[LocalModel]:
    for folder in settings.models_dirs:
        root = Path(folder).expanduser()
        if not root.is_dir():
            continue
        for path in _first_split_part(sorted(root.rglob("*.gguf"))):
            if path.is_file():
                yield LocalModel(
                    path.stem,
                    path,
                    path.stat().st_size,
                    quant_from_filename(path.name) or "?",
                    "models-dir",
                )


def _hf_cache_files() -> Iterator[LocalModel]:
    cache = hf_cache_dir()
    if not cache.is_dir():
        return
    for repo_dir in sorted(cache.glob("models--*")):
        repo = repo_dir.name[len("models--") :].replace("--", "/", 1)
        snap = _snapshot(repo_dir)
        if snap is None:
            continue
        for path in _first_split_part(sorted(snap.rglob("*.gguf"))):
            if not path.exists():
                continue
            quant = quant_from_filename(path.name) or "?"
            name = next(
                (e.name for e in load_catalog().values() if e.repo == repo and e.matches(path.name)),
                f"{repo}:{quant}",
            )
            yield LocalModel(name, path, path.stat().st_size, quant, "hf-cache", repo)


def list_models(settings: Settings) -> list[LocalModel]:
    """Every model usable right now: the starter, the HF cache, and ``models_dirs``."""
    found: list[LocalModel] = []
    if starter.is_installed():
        entry = load_catalog()["starter"]
        path = starter.starter_path(settings.paths.cache_dir)
        found.append(LocalModel("starter", path, path.stat().st_size, entry.quant, "starter", entry.repo))
    found.extend(_hf_cache_files())
    found.extend(_models_dir_files(settings))
    return found
