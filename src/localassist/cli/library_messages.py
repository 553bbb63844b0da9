"""One route for what the libraries underneath say: pypdf, huggingface_hub, httpx, LangChain.

They speak through the ``logging`` module and ``warnings.warn``. Left alone, Python prints
their bare text on stderr ("EOF marker not found", before the project's own line about the
same PDF; "Error while downloading ... Trying to resume download..." on a pull that goes on
fine). What matters is said in the project's words: an unreadable PDF is an error naming
it, a damaged page is a warning, a download that cannot go on says how to resume. Their
own lines are shown with ``-v`` (or LOCALASSIST_DEBUG=1), one each, as
``localassist: pypdf: EOF marker not found``, and kept back otherwise.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from localassist.cli.console import debug_enabled, warn

_shown = False  # -v was given


class _Route(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if not (_shown or debug_enabled()) or record.name.startswith("localassist"):
            return
        try:
            text = record.getMessage()
        except Exception:  # a library's bad format string must not become a traceback
            text = str(record.msg)
        warn(f"{record.name.split('.')[0]}: {' '.join(text.split())}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if _shown or debug_enabled():
        warn(f"{_library(filename)}: {category.__name__}: {' '.join(str(message).split())}")


def _library(filename: str) -> str:
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return Path(parts[parts.index(marker) + 1]).stem
    return Path(filename).stem


def route() -> None:
    """Send every library's log records and warnings here (once per process); called at
    the start of each run, so a run without -v hides them again (``main`` in-process)."""
    global _shown
    _shown = False
    root = logging.getLogger()
    if not any(isinstance(handler, _Route) for handler in root.handlers):
        root.addHandler(_Route(logging.WARNING))
    warnings.showwarning = _show_warning


def show(enabled: bool) -> bool:
    """The ``-v`` flag's callback: the libraries' own lines are shown from now on."""
    global _shown
    _shown = _shown or bool(enabled)
    return enabled
