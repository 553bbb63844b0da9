"""KV snapshots: a conversation's llama.cpp KV state on disk, so that a new process
(``chat --resume``, ``ask -c``) evaluates only the tokens after it instead of the
whole history.

After a generation the backend copies sequence 0's state out of llama.cpp
(``llama_state_seq_get_data``: about 20 ms and 17 MB for 3,000 tokens of the starter
model, against 1.6 s and 55 MB for ``Llama.save_state()``, which copies the whole
context and llama-cpp-python's arrays) and a background thread writes it, so the next
prompt is not delayed. Before a generation the longest usable snapshot is loaded with
``llama_state_seq_set_data`` and only the prompt tokens after it are evaluated.

Layout: ``<cache dir>/kv/<context key>/<token hash>.kv``. The context key is a hash of
everything that makes a state valid for a context: the model file (resolved path,
size, mtime), llama-cpp-python's version, n_ctx, batch, flash attention, GPU layers.
A file is::

    MAGIC | header length (u32 LE) | header (JSON) | tokens (int32 LE) | state

and its header holds the context key, the number and sha256 of the tokens it covers
and the length and sha256 of the state. Every one of them is checked before the state
is trusted; anything that does not match (another model or context, a truncated or
corrupted file, another prompt) is skipped with a debug-level log note and the prompt
is evaluated in full: a snapshot can make an answer faster, never different.

Files are 0600 in a 0700 folder, written atomically; the folder is capped in size
(the ``kv_cache_size`` setting) and the least recently used snapshots go first.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localassist.engine.local import LocalBackend
    from localassist.engine.types import Backend

log = logging.getLogger("localassist.kv_snapshots")

MAGIC = b"LAKVSNP1"
SUFFIX = ".kv"
MIN_TOKENS = 16  # a shorter prompt costs less to evaluate than a file


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _sha256(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _token_bytes(tokens: Sequence[int] | Any) -> bytes:
    import numpy as np

    return np.asarray(tokens, dtype="<i4").tobytes()


def common_prefix(a: Any, b: Any) -> int:
    """Length of the common prefix of two token arrays (numpy: one C comparison)."""
    import numpy as np

    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


# --- the folder as a whole (what `localassist cache` shows and clears)


@dataclass(frozen=True)
class Usage:
    entries: int
    bytes: int


def _files(root: Path) -> list[os.DirEntry]:
    out: list[os.DirEntry] = []
    try:
        folders = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return out
    for folder in folders:
        try:
            out += [e for e in os.scandir(folder.path) if e.is_file(follow_symlinks=False)]
        except OSError:
            continue
    return out


def usage(root: Path) -> Usage:
    """Snapshots under ``root`` and the bytes they take (unfinished writes included)."""
    files = _files(root)
    total = 0
    for entry in files:
        try:
            total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return Usage(sum(1 for e in files if e.name.endswith(SUFFIX)), total)


def clear(root: Path) -> Usage:
    """Delete every snapshot (and unfinished write) under ``root``; return what went."""
    gone = usage(root)
    for entry in _files(root):
        Path(entry.path).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        for folder in os.scandir(root):
            if folder.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):  # another process is writing into it
                    os.rmdir(folder.path)
    return gone


def snapshot_name(file_name: str) -> str | None:
    """The snapshot a file under the folder is or will be (``<hash>.kv``, or an unfinished
    write of it, ``.<hash>.kv.XXXX.tmp``); None for anything else."""
    if file_name.endswith(SUFFIX) and not file_name.startswith("."):
        return file_name
    if file_name.startswith(".") and file_name.endswith(".tmp") and SUFFIX + "." in file_name:
        return file_name[1 : file_name.index(SUFFIX + ".") + len(SUFFIX)]
    return None


def sweep(root: Path, claimed: set[str]) -> Usage:
    """Delete every snapshot under ``root`` (unfinished writes too) whose name is not in
    ``claimed``: the names the conversation log records for the conversations it still
    holds. A deleted conversation's snapshots go, and so do any no conversation claims
    (written by a version that did not record them, or before a log write failed), since
    each holds a conversation's every token. Returns what went."""
    files, total = 0, 0
    for entry in _files(root):
        name = snapshot_name(entry.name)
        if name is None or name in claimed:
            continue
        with contextlib.suppress(OSError):
            size = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
            files += name == entry.name
            total += size
    return Usage(files, total)


def evict(root: Path, cap: int, keep: Path | None = None) -> int:
    """Delete the least recently used files under ``root`` until it holds at most ``cap``
    bytes (``keep``, the snapshot just written, goes last); return how many went."""
    entries = []
    for entry in _files(root):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        entries.append((entry.path == str(keep), st.st_mtime_ns, st.st_size, entry.path))
    total = sum(e[2] for e in entries)
    removed = 0
    for _, _, size, path in sorted(entries):
        if total <= cap:
            break
        Path(path).unlink(missing_ok=True)
        total -= size
        removed += 1
    return removed


# --- one context's snapshots


def context_identity(model_path: Path, **settings: Any) -> dict[str, Any]:
    """What a KV state depends on besides the tokens: the model file and the context settings."""
    import llama_cpp

    resolved = model_path.resolve()
    st = resolved.stat()
    return {
        "model": str(resolved),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "llama_cpp": llama_cpp.__version__,
        **settings,
    }


@dataclass
class _Header:
    key: str
    n_tokens: int
    tokens_sha256: str
    state_bytes: int
    state_sha256: str
    offset: int  # where the tokens start


class SnapshotStore:
    """The snapshots of one model and context configuration, in ``root/<key>/``."""

    def __init__(self, root: Path, identity: dict[str, Any], cap: int) -> None:
        self.root = root
        self.identity = identity
        self.key = _sha256(json.dumps(identity, sort_keys=True).encode())
        self.dir = root / self.key[:32]
        self.cap = cap
        self._tokens: dict[str, Any] = {}  # file name -> its token array (content-addressed, so never stale)
        self._mutex = threading.Lock()
        self._jobs: list[tuple[Any, Any, int]] = []
        self._worker: threading.Thread | None = None
        self._saved: list[str] = []  # file names saved since take_saved(): the log records them
        self.last_restored: int = 0  # tokens the last restore brought back (tests, benchmarks)

    # --- reading

    def _read_header(self, fh: Any) -> _Header:
        head = fh.read(len(MAGIC) + 4)
        if len(head) != len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
            raise ValueError("not a snapshot file")
        (length,) = struct.unpack("<I", head[len(MAGIC) :])
        if length > 1 << 16:
            raise ValueError("header too long")
        raw = fh.read(length)
        meta = json.loads(raw)
        header = _Header(
            key=str(meta["key"]),
            n_tokens=int(meta["n_tokens"]),
            tokens_sha256=str(meta["tokens_sha256"]),
            state_bytes=int(meta["state_bytes"]),
            state_sha256=str(meta["state_sha256"]),
            offset=len(head) + length,
        )
        if header.key != self.key:
            raise ValueError("made for another model or context")
        return header

    def _tokens_of(self, path: Path) -> Any:
        """The token list a snapshot covers, read from its header and checked against its
        hash; None for a file that is not a valid snapshot of this context (it is removed)."""
        import numpy as np

        with self._mutex:
            cached = self._tokens.get(path.name)
        if cached is not None:
            return cached
        try:
            with open(path, "rb") as fh:
                header = self._read_header(fh)
                raw = fh.read(4 * header.n_tokens)
            if len(raw) != 4 * header.n_tokens or _sha256(raw) != header.tokens_sha256:
                raise ValueError("token list does not match its hash")
            if path.stem != header.tokens_sha256[:40]:
                raise ValueError("file name does not match its token list")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("kv snapshot %s skipped: %s", path.name, exc)
            path.unlink(missing_ok=True)
            return None
        tokens = np.frombuffer(raw, dtype="<i4")
        with self._mutex:
            self._tokens[path.name] = tokens
        return tokens

    def candidates(self, prompt: Any, at_least: int, exact: bool) -> list[tuple[int, Path]]:
        """Snapshots that share more than ``at_least`` leading tokens with ``prompt``, best
        first. ``exact``: only snapshots whose whole token list is a prefix of the prompt
        (a model with sliding-window attention keeps only the window's end in a snapshot,
        so the state cannot be cut back)."""
        found = []
        try:
            names = [e.name for e in os.scandir(self.dir) if e.name.endswith(SUFFIX)]
        except OSError:
            return []
        for name in names:
            path = self.dir / name
            tokens = self._tokens_of(path)
            if tokens is None:
                continue
            common = common_prefix(tokens, prompt)
            if exact and common < len(tokens):
                continue
            if common > at_least:
                found.append((common, path))
        return sorted(found, reverse=True)

    def read(self, path: Path) -> tuple[Any, bytearray] | None:
        """The tokens and state of a snapshot, each checked against the header's hash."""
        import numpy as np

        try:
            with open(path, "rb") as fh:
                header = self._read_header(fh)
                size = os.fstat(fh.fileno()).st_size
                expected = header.offset + 4 * header.n_tokens + header.state_bytes
                if size != expected:
                    raise ValueError(f"{size} bytes, expected {expected} (truncated or padded)")
                raw = fh.read(4 * header.n_tokens)
                state = bytearray(header.state_bytes)
                got = fh.readinto(state)
            if got != header.state_bytes:
                raise ValueError("state shorter than its header says")
            if _sha256(raw) != header.tokens_sha256:
                raise ValueError("token list does not match its hash")
            if _sha256(state) != header.state_sha256:
                raise ValueError("state does not match its hash (corrupted)")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("kv snapshot %s rejected, evaluating the prompt in full: %s", path.name, exc)
            path.unlink(missing_ok=True)
            return None
        return np.frombuffer(raw, dtype="<i4"), state

    # --- restoring into a llama.cpp context

    def restore(self, llm: Any, prompt: Sequence[int]) -> int:
        """Load the best snapshot for ``prompt`` into ``llm`` (a llama_cpp.Llama whose
        sequence 0 is the conversation) when it covers more of the prompt than the live
        KV cache does. Returns the prompt tokens now cached by a snapshot (0: none used;
        the live cache, if any, is left as it was unless a load failed, which empties it)."""
        import llama_cpp
        import numpy as np

        self.last_restored = 0
        if len(prompt) < MIN_TOKENS:
            return 0
        wanted = np.asarray(prompt, dtype="<i4")
        live = common_prefix(llm._input_ids, wanted)
        if live >= len(wanted) - 1:
            return 0  # the live cache already has everything a snapshot could give
        n_swa = int(llama_cpp.llama_model_n_swa(llm._model.model))
        for common, path in self.candidates(wanted, live, exact=n_swa > 0):
            loaded = self.read(path)
            if loaded is None:
                continue
            tokens, state = loaded
            reuse = min(common, len(wanted) - 1)
            if self._apply(llm, tokens, state, reuse, n_swa, path.name):
                _touch(path)  # the least recently *used* goes first
                self.last_restored = reuse
                return reuse
        return 0

    def _apply(self, llm: Any, tokens: Any, state: bytearray, reuse: int, n_swa: int, name: str) -> bool:
        import llama_cpp

        ctx = llm._ctx.ctx
        buf = (ctypes.c_uint8 * len(state)).from_buffer(state)
        read = llama_cpp.llama_state_seq_set_data(ctx, buf, len(state), 0)  # empties sequence 0 first
        mem = llama_cpp.llama_get_memory(ctx)
        problem = None
        if len(tokens) > len(llm.input_ids):
            problem = "more tokens than this context holds"
        elif read != len(state):
            problem = f"llama.cpp read {read} of {len(state)} bytes"
        elif llama_cpp.llama_memory_seq_pos_max(mem, 0) != len(tokens) - 1:
            problem = "the state does not hold the tokens its header lists"
        else:
            llm.input_ids[: len(tokens)] = tokens
            llm.n_tokens = len(tokens)
            if reuse < len(tokens) and not llm._ctx.kv_cache_seq_rm(0, reuse, -1):
                problem = "the state cannot be cut back to the shared prefix"
            # llama-server's rule: the window before the first new token must be in the cache
            elif llama_cpp.llama_memory_seq_pos_min(mem, 0) > max(0, reuse - n_swa):
                problem = "the sliding-window cache does not reach back far enough"
        if problem is None:
            llm.n_tokens = reuse
            return True
        log.debug("kv snapshot %s not used, evaluating the prompt in full: %s", name, problem)
        llama_cpp.llama_memory_clear(mem, True)
        llm.n_tokens = 0
        return False

    # --- saving

    def save(self, llm: Any) -> None:
        """Copy sequence 0's state out of ``llm`` now (the caller holds the model) and write
        it in the background."""
        import llama_cpp

        n = llm.n_tokens
        if n < MIN_TOKENS or self.cap <= 0:
            return
        tokens = llm._input_ids.astype("<i4")
        name = _sha256(tokens.tobytes())[:40] + SUFFIX
        path = self.dir / name
        if path.exists():  # the same tokens are already saved: just mark it used
            _touch(path)
            with self._mutex:
                self._saved.append(name)
            return
        ctx = llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        state = bytearray(size)
        written = llama_cpp.llama_state_seq_get_data(ctx, (ctypes.c_uint8 * size).from_buffer(state), size, 0)
        if written <= 0 or written > self.cap:
            log.debug("kv snapshot not saved: llama.cpp gave %d bytes (cap %d)", written, self.cap)
            return
        with self._mutex:
            self._saved.append(name)  # named before it is written: deleting the conversation deletes it
            self._jobs.append((tokens, state, written))
            if self._worker is None:
                # not a daemon: a process that ends right after the answer (ask -c) finishes the write first
                self._worker = threading.Thread(target=self._drain, name="kv-snapshot-writer")
                self._worker.start()

    def take_saved(self) -> list[str]:
        """The file names of the snapshots saved (or written in the background) since the
        last call, for the log to record with the conversation they hold."""
        with self._mutex:
            saved, self._saved = self._saved, []
        return saved

    def _drain(self) -> None:
        while True:
            with self._mutex:
                if not self._jobs:
                    self._worker = None
                    return
                tokens, state, written = self._jobs.pop(0)
            try:
                self._write(tokens, memoryview(state)[:written])
            except OSError as exc:  # a full disk costs the snapshot, never the answer
                log.debug("kv snapshot not saved: %s", exc)

    def _write(self, tokens: Any, state: memoryview) -> Path:
        from localassist.files import private_dir, write_private_bytes

        raw = tokens.tobytes()
        tokens_sha = _sha256(raw)
        header = json.dumps(
            {
                "key": self.key,
                "n_tokens": len(tokens),
                "tokens_sha256": tokens_sha,
                "state_bytes": len(state),
                "state_sha256": _sha256(state),
                "identity": self.identity,
            }
        ).encode()
        private_dir(self.root)
        private_dir(self.dir)
        path = self.dir / (tokens_sha[:40] + SUFFIX)
        write_private_bytes(path, b"".join([MAGIC, struct.pack("<I", len(header)), header, raw, state]))
        with self._mutex:
            self._tokens[path.name] = tokens
        self._drop_superseded(tokens, path)
        evict(self.root, self.cap, keep=path)
        return path

    def _drop_superseded(self, tokens: Any, newest: Path) -> None:
        """A snapshot whose tokens are a prefix of the new one's is of no more use to a
        conversation that goes on (the usual case: the previous turn of the same chat)."""
        for _, path in self.candidates(tokens, 0, exact=True):
            if path != newest:
                path.unlink(missing_ok=True)

    def flush(self) -> None:
        """Wait for the writes in progress (``close`` of the backend, tests, benchmarks)."""
        while True:
            with self._mutex:
                worker = self._worker
            if worker is None:
                return
            worker.join()


def saved_by(backend: Backend) -> list[str]:
    """The snapshot files a loaded ``LocalBackend`` saved since the last call (none for a
    backend without snapshots, or another kind), for the log to record with the
    conversation they hold: deleting the conversation deletes them."""
    store = getattr(backend, "_snapshots", None)  # set by LocalBackend from for_backend below
    return store.take_saved() if isinstance(store, SnapshotStore) else []


def for_backend(backend: LocalBackend) -> SnapshotStore:
    """The store for a loaded ``LocalBackend`` (its options name the folder and the cap)."""
    options = backend.options
    assert options.kv_snapshots is not None  # LocalBackend asks only when its options name the folder
    identity = context_identity(
        backend.path,
        n_ctx=backend.n_ctx,
        n_batch=backend.batch,
        flash_attn=options.flash_attn,
        gpu_layers=backend.gpu_layers,
        repack=backend.repack,  # repacked weights compute in another order: another state
    )
    return SnapshotStore(options.kv_snapshots, identity, options.kv_cache_size)
