"""Loading a model for a command, with a spinner on a terminal and -v reporting."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from localassist.cli.console import err_console, warn

if TYPE_CHECKING:  # imported lazily: `localassist --help` must not pay for them
    from localassist.engine.types import Completion
    from localassist.settings import Settings


def load_model(settings: Settings, spec: str | None, verbose: bool = False):
    """Resolve ``spec`` (or the default) and load it; the core raises on any problem."""
    from localassist.engine.local import load_backend
    from localassist.models.resolve import resolve_model

    resolved = resolve_model(spec, settings)
    if sys.stderr.isatty() and not verbose:
        with err_console().status(f"Loading {resolved.name}...", spinner="dots"):
            backend = load_backend(resolved, settings, verbose=verbose)
    else:
        backend = load_backend(resolved, settings, verbose=verbose)
    if verbose:
        warn("  ".join(f"{k}={v}" for k, v in backend.describe().items()))
    from localassist.models.last_used import record_use

    record_use(settings.paths.data_dir, resolved.path)
    return backend


def stats_line(completion: Completion) -> str:
    t = completion.timings
    parts = [
        f"model {completion.model}",
        f"prompt {completion.prompt_tokens} tok ({completion.cached_tokens} cached)",
        f"answer {completion.completion_tokens} tok ({completion.finish_reason})",
    ]
    if t.ttft_s is not None:
        parts.append(f"first token {t.ttft_s * 1000:.0f} ms")
    if t.prompt_tokens_per_s:
        parts.append(f"prompt {t.prompt_tokens_per_s:.1f} t/s")
    if t.generation_tokens_per_s:
        parts.append(f"generation {t.generation_tokens_per_s:.1f} t/s")
    parts.append(f"load {t.load_s:.2f} s")
    return " | ".join(parts)
