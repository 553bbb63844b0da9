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

from localassist.errors import ModelInvalidError, ModelNotAvailableError
from localassist.files import NotRegularFileError, check_regular
from localassist.models import bundled as starter
from localassist.models.catalog import CatalogEntry, load_catalog, lookup
from localassist.models.gguf_file import FILE_TYPES
from localassist.models.remotes import remote_target
from localassist.settings import Settings

_REPO_RE = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?::(?P<quant>[\w.-]+))?$")
_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
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


def parse_repo_spec(spec: str) -> tuple[str, str | None] | None:
    """``owner/repo[:QUANT]`` split into (repo, quant or None); None when ``spec`` is not that shape."""
    match = _REPO_RE.match(spec)
    return (match.group("repo"), match.group("quant")) if match else None


def split_base(name: str) -> str:
    """A split GGUF's parts share this name (``big-Q4_K_M-00002-of-00003.gguf`` -> ``big-Q4_K_M``);
    any other name comes back as it is."""
    return _SPLIT_RE.sub("", name)


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


def repo_cache_dir(repo: str) -> Path:
    """Where huggingface_hub keeps ``repo``: ``models--owner--name`` with blobs/, snapshots/, refs/."""
    return hf_cache_dir() / ("models--" + repo.replace("/", "--"))


def cached_repos() -> list[str]:
    """Every model repo in the HF cache, as owner/name."""
    cache = hf_cache_dir()
    if not cache.is_dir():
        return []
    return [d.name[len("models--") :].replace("--", "/", 1) for d in sorted(cache.glob("models--*")) if d.is_dir()]


def _snapshots(repo_dir: Path) -> list[Path]:
    """Every snapshot of a repo: the one ``refs/main`` points at first, then the newest first."""
    snaps = sorted((p for p in (repo_dir / "snapshots").glob("*") if p.is_dir()), key=lambda p: -p.stat().st_mtime)
    ref = repo_dir / "refs" / "main"
    main = repo_dir / "snapshots" / ref.read_text().strip() if ref.is_file() else None
    return sorted(snaps, key=lambda p: p != main)  # stable: the rest stay newest first


def cached_gguf_files(repo: str, every_version: bool = False) -> list[Path]:
    """The repo's cached .gguf files across *all* its snapshots: ``refs/main`` moves to the
    newest commit on every pull, and a quant pulled at an older commit is still on disk.

    One path per blob. A file name found in several snapshots (the file changed upstream)
    is taken from the snapshot ``refs/main`` points at, else the newest; ``every_version``
    keeps the older versions too (``verify`` checks every blob on disk).
    """
    seen_names: set[Path] = set()
    seen_blobs: set[Path] = set()
    found = []
    for snap in _snapshots(repo_cache_dir(repo)):
        for path in sorted(snap.rglob("*.gguf")):
            name, blob = path.relative_to(snap), path.resolve()
            if not path.exists() or blob in seen_blobs or (name in seen_names and not every_version):
                continue
            seen_names.add(name)
            seen_blobs.add(blob)
            found.append(path)
    return sorted(found, key=lambda p: (p.name, str(p)))


def split_parts(path: Path) -> list[Path]:
    """Every part of the model whose first part (or only file) is ``path``, in order;
    a part that should be there but is not is listed anyway, so a check can report it."""
    split = _SPLIT_RE.search(path.name)
    if split is None:
        return [path]
    total = split.group(2)
    return [path.with_name(f"{split_base(path.name)}-{i:05d}-of-{total}.gguf") for i in range(1, int(total) + 1)]


def expected_sha256(path: Path) -> str | None:
    """A cached file's sha256 without hashing it: huggingface_hub names each blob by the
    LFS sha256 the hub gave at download."""
    blob = path.resolve()
    return blob.name if _SHA256_RE.fullmatch(blob.name) else None


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
        path = starter.bundled_path(entry.package, settings.paths.cache_dir)
        return ResolvedModel(path, entry.name, "starter", entry.repo)
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
    try:
        check_regular(path, path.stat().st_mode)
    except NotRegularFileError as exc:  # a FIFO: llama.cpp's open would wait for a writer forever
        raise ModelInvalidError(f"{path} is {exc.strerror}; pass a GGUF file") from None
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
    if remote_target(spec, settings, base_url=False) is not None:
        raise ModelNotAvailableError(
            f"'{spec}' is a model on a remote server, not a file here "
            f"(`localassist models --remote {spec.partition(':')[0]}` lists what that server offers)"
        )
    if _looks_like_path(spec):
        return _from_path(spec)
    if repo_spec := parse_repo_spec(spec):
        return _from_repo(*repo_spec)
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
    for repo in cached_repos():
        for path in _first_split_part(cached_gguf_files(repo)):
            quant = quant_from_filename(path.name) or "?"
            name = next(
                (e.name for e in load_catalog().values() if e.repo == repo and e.matches(path.name)),
                f"{repo}:{quant}",
            )
            yield LocalModel(name, path, path.stat().st_size, quant, "hf-cache", repo)


def list_models(settings: Settings) -> list[LocalModel]:
    """Every model usable right now: the starter, the HF cache, and ``models_dirs``."""
    found: list[LocalModel] = []
    for entry in load_catalog().values():
        if entry.package and starter.is_installed(entry.package):
            path = starter.bundled_path(entry.package, settings.paths.cache_dir)
            found.append(LocalModel(entry.name, path, path.stat().st_size, entry.quant, "starter", entry.repo))
    found.extend(_hf_cache_files())
    found.extend(_models_dir_files(settings))
    return found
