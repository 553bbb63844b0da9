"""`pull`, `search`, `verify`, `rm`: the model hub and the local cache."""

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from localassist.cli import options
from localassist.cli.console import out, stderr_is_terminal, warn
from localassist.cli.env import current
from localassist.cli.tables import human_count, human_size, print_table
from localassist.errors import DownloadError, ExitCode, ModelNotAvailableError, UsageError


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def pull(
    model: Annotated[str, typer.Argument(help="Catalog name, or owner/repo[:QUANT] (Q4_K_M, q8_0, IQ4_XS ...).")],
    file: Annotated[str | None, typer.Option("--file", help="Exact .gguf file name in the repo.")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="No network: re-check what is cached for MODEL.")] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="The hub library's own warnings (a dropped connection it resumes) on stderr.",
            callback=options.show_library_messages,
        ),
    ] = False,
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
    from localassist.models import hub

    plan = hub.plan_pull(model, file=file, token=_token())
    parts = f"{len(plan.files)} files" if len(plan.files) > 1 else Path(plan.files[0].path).name
    warn(f"{plan.repo}: {parts}, {human_size(plan.size)} ({plan.reason})")
    try:
        with download_bar() as progress:
            paths = hub.download(plan, token=_token(), progress=progress, on_wait=warn)
    except KeyboardInterrupt:
        warn("interrupted: run the same pull again to resume")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    warn(f"ready: localassist ask -m {plan.name if plan.name != plan.repo else f'{plan.repo}:{plan.quant}'} ...")
    out(str(paths[0]))


@contextlib.contextmanager
def download_bar():
    """A rich progress bar on a terminal stderr (a task per file); nothing on a pipe."""
    if not stderr_is_terminal():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TimeRemainingColumn, TransferSpeedColumn

    from localassist.cli.console import err_console

    tasks: dict[str, TaskID] = {}
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console(), transient=False) as bar:

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total or None, completed=done)
            bar.update(tasks[name], completed=done)

        yield update


def _verify_spec(spec: str) -> None:
    from localassist.models.resolve import resolve_model, split_parts
    from localassist.settings import load_settings

    resolved = resolve_model(spec, load_settings())
    _report_verification(split_parts(resolved.path), _starter_hashes([(resolved.path, resolved.source)]))


def _starter_hashes(models: list[tuple[Path, str]]) -> dict[Path, str]:
    """The starter model is joined from its package: its hash comes from the package."""
    from localassist.models import bundled as starter

    return {path: starter.expected_sha256_of(path) for path, source in models if source == "starter"}


def _report_verification(paths: list[Path], expected: dict[Path, str]) -> None:
    """One table of hashes; a mismatch or a missing file (a split model's part) is an error (exit 6)."""
    from localassist.models import hub

    rows, bad = [], 0
    for v in hub.verify_cached(paths, expected):
        status = "MISSING" if v.actual is None else "no checksum" if v.ok is None else "ok" if v.ok else "MISMATCH"
        bad += v.actual is None or v.ok is False
        rows.append([status, v.path])
    print_table(["STATUS", "PATH"], rows)
    if bad:
        raise DownloadError(
            f"{bad} file(s) are missing or do not match their sha256: `localassist rm` them and pull again"
        )


def verify() -> None:
    """Re-hash every local model against its sha256 (the hub's LFS hash, kept as the blob name).

    Every part of a split model, in every snapshot of the HF cache. Needs no network.
    The starter model is checked against its package's hash.
    """
    from localassist.models.resolve import cached_gguf_files, cached_repos, list_models
    from localassist.settings import load_settings

    bundled = [(m.path, m.source) for m in list_models(load_settings()) if m.source == "starter"]
    paths = [path for path, _ in bundled] + [p for repo in cached_repos() for p in cached_gguf_files(repo, True)]
    _report_verification(paths, _starter_hashes(bundled))


def rm(
    model: Annotated[str, typer.Argument(help="Catalog name, owner/repo:QUANT, or owner/repo for the whole repo.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove a whole repo without asking.")] = False,
) -> None:
    """Remove a downloaded model from the Hugging Face cache.

    A catalog name or owner/repo:QUANT removes exactly that model (every part, every
    snapshot). owner/repo removes the whole repo: it lists what goes and asks first.

    \b
      localassist rm qwen2.5:1.5b
      localassist rm bartowski/Llama-3.2-3B-Instruct-GGUF --yes
    """
    from localassist.models.catalog import lookup
    from localassist.models.hub import remove_cached
    from localassist.models.resolve import parse_repo_spec

    entry = lookup(model)
    repo_spec = parse_repo_spec(model)
    if entry and entry.package:
        raise UsageError(f"'{model}' comes with pip, not from the hub: `pip uninstall {entry.package}`")
    if entry is None and repo_spec is None:
        raise UsageError("rm takes a catalog name or owner/repo[:QUANT]; delete files you placed yourself by hand")
    if entry is None and repo_spec is not None and repo_spec[1] is None:
        _confirm_whole_repo(repo_spec[0], yes)
        freed = remove_cached(repo_spec[0])
    else:
        repo, files = _resolved_files(model)
        freed = remove_cached(repo, files)
    warn(f"removed {model} ({human_size(freed)} freed)")


def _resolved_files(model: str) -> tuple[str, list[Path]]:
    """The cached files ``model`` resolves to (every part of a split model); nothing to
    remove is an error, never a reason to remove more."""
    from localassist.models.resolve import resolve_model, split_parts
    from localassist.settings import load_settings

    try:
        resolved = resolve_model(model, load_settings())
    except ModelNotAvailableError as exc:
        raise ModelNotAvailableError(f"nothing removed: {exc}") from None
    if resolved.repo is None:  # owner/repo:QUANT that is also a file's path here: rm deletes only from the cache
        raise UsageError(f"nothing removed: '{model}' is a file here, not a model in the Hugging Face cache")
    return resolved.repo, [p for p in split_parts(resolved.path) if p.is_symlink() or p.exists()]


def _confirm_whole_repo(repo: str, yes: bool) -> None:
    """List what removing ``repo`` deletes (stderr) and ask, default No; --yes skips the question."""
    from localassist.models.hub import cached_contents

    contents = cached_contents(repo)
    if not contents:
        raise ModelNotAvailableError(
            f"nothing removed: {repo} is not in the local cache; `localassist models` lists what is"
        )
    warn(f"removing {repo} deletes {len(contents)} file(s), {human_size(sum(size for _, size in contents))}:")
    for name, size in contents:
        warn(f"  {name} ({human_size(size)})")
    if yes:
        return
    if not current().stdin_isatty:
        raise UsageError(f"rm {repo} removes the whole repo; pass --yes to do it without a terminal to confirm on")
    if not typer.confirm(f"Remove all of {repo}?", default=False, err=True):
        warn("nothing removed")
        raise typer.Exit(ExitCode.OK)


def search(
    query: Annotated[str, typer.Argument(help="Words to look for in repo names.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100, help="How many results.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Search the hub for GGUF repos, most downloaded first.

    \b
      localassist search qwen
    """
    from localassist.models import hub

    results = hub.search(query, limit=limit, token=_token())
    if as_json:
        out(json.dumps([r.__dict__ for r in results], indent=2))
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
