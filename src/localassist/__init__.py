"""localassist: a private, offline, terminal-first AI assistant.

The Python API (``localassist.load``, ``Model``, ``Chat``) is imported on first use, so
``import localassist`` stays cheap: no llama_cpp until a model is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["Chat", "Done", "Message", "Model", "load"]

if TYPE_CHECKING:
    from localassist.api import Chat, Model, load
    from localassist.engine.types import Done, Message


def __getattr__(name: str) -> Any:
    if name in ("load", "Model", "Chat"):
        from localassist import api

        return getattr(api, name)
    if name in ("Message", "Done"):
        from localassist.engine import types

        return getattr(types, name)
    raise AttributeError(f"module 'localassist' has no attribute {name!r}")
