"""llama.cpp's log: kept off the terminal, remembered for error messages and reports."""

from __future__ import annotations

import ctypes
import re
import threading
from collections import deque
from typing import Any

# ggml's log levels (ggml.h): 3 warnings, 4 errors, 5 the continuation of the previous line
_WARN, _ERROR, _CONT = 3, 4, 5
_OFFLOAD_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_WEIGHTS_RE = re.compile(r"(\S+) model buffer size")  # where the weights went: CPU_Mapped, CPU_REPACK, AMX, CUDA0


class _LlamaLog:
    """llama.cpp's log, kept off the terminal (unless -v) but remembered: the last
    warnings and errors explain a failed load, and the offload line says how many
    layers really went to the GPU. Installed once per process; llama.cpp may call it
    from any thread, so it takes a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tail: deque[tuple[int, str]] = deque(maxlen=40)
        self.offloaded: tuple[int, int] | None = None
        self.weight_buffers: list[str] = []
        self._keeping = False
        self._callback: Any = None  # kept referenced: llama.cpp holds a raw pointer to it

    def install(self, llama_cpp: Any) -> None:
        with self.lock:
            if self._callback is None:

                @llama_cpp.llama_log_callback
                def _callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
                    self._record(level, text.decode("utf-8", "replace"))

                self._callback = _callback
            llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def _record(self, level: int, text: str) -> None:
        with self.lock:
            if found := _OFFLOAD_RE.search(text):
                self.offloaded = (int(found.group(1)), int(found.group(2)))
            elif found := _WEIGHTS_RE.search(text):
                self.weight_buffers.append(found.group(1))
            if level == _CONT and self._keeping and self.tail:
                kept_level, kept = self.tail[-1]
                self.tail[-1] = (kept_level, kept + text.rstrip("\n"))
                return
            self._keeping = level in (_WARN, _ERROR)
            if self._keeping and text.strip():
                self.tail.append((level, text.strip()))

    def reason(self) -> str | None:
        """The first error since the load began (the cause; later ones say "failed to
        load"), without llama.cpp's function-name prefix; else the last warning."""
        with self.lock:
            lines = list(self.tail)
        errors = [text for level, text in lines if level == _ERROR]
        line = errors[0] if errors else (lines[-1][1] if lines else None)
        return re.sub(r"^\w+: ", "", line) if line else None

    def start_load(self) -> None:
        with self.lock:
            self.tail.clear()
            self.offloaded = None
            self.weight_buffers = []


LLAMA_LOG = _LlamaLog()
LOAD_LOCK = threading.Lock()  # one load at a time, so the log lines read after it are its own
