"""`localassist index`: folder indexes for `ask --docs` and `chat --docs` (private RAG)."""

import contextlib
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from localassist.cli.console import out, stderr_is_terminal, warn
from localassist.cli.tables import human_size, print_table

app = typer.Typer(help="Index folders of your documents for `ask --docs` and `chat --docs`.", no_args_is_help=True)

EmbedModel = Annotated[
    str | None,
    typer.Option(
        "--embed-model",
        help="Embedding model (catalog name, path, owner/repo[:QUANT]) [default: the embed_model setting].",
    ),
]


def _settings():
    from localassist.settings import load_settings

    return load_settings()


def _loading(name: str):
    if not stderr_is_terminal():
        return contextlib.nullcontext()
    from localassist.cli.console import err_console

    return err_console().status(f"Loading {name}...", spinner="dots")


@contextlib.contextmanager
def _progress():
    """A progress bar on a terminal stderr (files, chunks embedded); nothing on a pipe."""
    if not stderr_is_terminal():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from localassist.cli.console import err_console

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console(), transient=True) as bar:
        task = bar.add_task("indexing", total=None)

        def update(p) -> None:
            bar.update(task, total=p.files_total, completed=p.files_done, description=f"{p.chunks:,} chunks")

        yield update


def _sync(index, embedder, rebuild: bool = False) -> None:
    started = time.perf_counter()
    with _progress() as progress:
        report = index.sync(embedder, progress=progress, rebuild=rebuild)
    for notice in report.notices:
        warn(notice)
    if report.rebuild_reason:
        warn(f"rebuilt from scratch: {report.rebuild_reason}")
    for path, reason in report.skipped:
        warn(f"skipped {path}: {reason}")
    info = index.info()
    elapsed = time.perf_counter() - started
    warn(
        f"indexed {info.files:,} files, {info.chunks:,} chunks in {elapsed:.1f} s "
        f"({len(report.added)} new, {len(report.updated)} changed, {len(report.removed)} removed, "
        f"{report.embedded:,} embedded)"
    )


def _embedder(settings, spec: str | None):
    if spec is None:
        return None
    from localassist.retrieval import load_embedder

    return load_embedder(settings, spec, loading=_loading)


@app.command()
def add(
    folder: Annotated[Path, typer.Argument(help="The folder to index.")],
    name: Annotated[str, typer.Option("--name", help="The index's name (default: the folder's name).")] = "",
    glob: Annotated[
        list[str] | None, typer.Option("--glob", help="Only files matching this pattern (repeatable), e.g. '*.pdf'.")
    ] = None,
    embed_model: EmbedModel = None,
    no_embed: Annotated[bool, typer.Option("--no-embed", help="BM25 keyword search only, no embeddings.")] = False,
) -> None:
    """Create an index of FOLDER and index it (hybrid search with an embedding model).

    \b
      localassist index add ~/notes --name notes --embed-model nomic-embed-text
      localassist index add ~/papers --name papers --glob '*.pdf'
    """
    from localassist.rag import create_index

    settings = _settings()
    spec = None if no_embed else (embed_model or settings.embed_model)
    embedder = _embedder(settings, spec)
    with create_index(settings.paths.data_dir, name or folder.expanduser().resolve().name, folder, glob) as index:
        try:
            _sync(index, embedder)
        finally:
            if embedder is not None:
                embedder.close()


@app.command()
def sync(
    name: Annotated[str, typer.Argument(help="Index name.")],
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Index everything again.")] = False,
    embed_model: EmbedModel = None,
) -> None:
    """Bring an index up to date: only new, changed and deleted files are touched."""
    from localassist.rag import open_index
    from localassist.retrieval import index_embedder

    settings = _settings()
    with open_index(settings.paths.data_dir, name) as index:
        if embed_model:
            embedder = _embedder(settings, embed_model)
        else:
            embedder = index_embedder(settings, index.info(), loading=_loading)
        try:
            _sync(index, embedder, rebuild=rebuild or embed_model is not None)
        finally:
            if embedder is not None:
                embedder.close()


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False) -> None:
    """Every index: folder, files, chunks, embedding model, last sync, size."""
    from localassist.rag import list_indexes

    infos = list_indexes(_settings().paths.data_dir)
    if as_json:
        out(json.dumps([_info_dict(i) for i in infos], indent=2))
        return
    if not infos:
        warn("no indexes yet: `localassist index add FOLDER --name NAME`")
        return
    print_table(
        ["NAME", "FOLDER", "FILES", "CHUNKS", "EMBEDDINGS", "LAST SYNC", "SIZE"],
        [
            [
                i.name,
                i.folder,
                i.files,
                i.chunks,
                (i.model_id or "none (BM25 only)").split("@")[0],
                _when(i.last_sync),
                human_size(i.size_bytes),
            ]
            for i in infos
        ],
    )


def _when(stamp: str | None) -> str:
    return stamp[:16].replace("T", " ") if stamp else "-"


def _info_dict(info) -> dict:
    return {
        "name": info.name,
        "folder": str(info.folder),
        "globs": list(info.globs),
        "files": info.files,
        "skipped": info.skipped,
        "chunks": info.chunks,
        "embedding_model": info.model_id,
        "embedding_source": info.model_source,
        "dimension": info.dimension,
        "last_sync": info.last_sync,
        "size_bytes": info.size_bytes,
        "path": str(info.path),
    }


@app.command()
def search(
    name: Annotated[str, typer.Argument(help="Index name.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=100, help="How many hits.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: hits with their sources.")] = False,
) -> None:
    """Retrieval alone (no model answers): the best chunks with their locators."""
    from localassist.rag import cite_label, open_index, sources_json
    from localassist.retrieval import index_embedder

    settings = _settings()
    with open_index(settings.paths.data_dir, name) as index:
        embedder = index_embedder(settings, index.info(), loading=_loading)
        try:
            result = index.search(query, embedder, k=top_k)
        finally:
            if embedder is not None:
                embedder.close()
    for notice in result.notices:
        warn(notice)
    if as_json:
        sources = sources_json(result.hits)
        hits = [{**source, "text": hit.text} for source, hit in zip(sources, result.hits, strict=True)]
        out(json.dumps({"query": query, "mode": result.mode, "found": result.found, "hits": hits}, indent=2))
        return
    if not result.found:
        warn("nothing relevant found in the index")
        return
    for hit in result.hits:
        flat = " ".join(hit.text.split())
        out(f"[{hit.rank}] {cite_label(hit.locator)}  (score {hit.score:.3f})\n    {flat[:200]}")


@app.command()
def rm(name: Annotated[str, typer.Argument(help="Index name.")]) -> None:
    """Delete an index (your files are not touched)."""
    from localassist.rag import remove_index

    remove_index(_settings().paths.data_dir, name)
    warn(f"removed index {name}")
