"""`localassist cache`: the saved conversation state (KV snapshots) that lets `chat --resume`
and `ask -c` start without evaluating the whole history again."""

import json
from typing import Annotated

import typer

from localassist.cli.console import note, out
from localassist.cli.tables import human_size, print_table

app = typer.Typer(
    help="Saved conversation state (KV snapshots): chat --resume and ask -c start from it.",
    invoke_without_command=True,
)


def _root():
    from localassist.settings import load_settings

    settings = load_settings()
    return settings.paths.cache_dir / "kv", settings.kv_cache_size


@app.callback()
def cache(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Where the snapshots are, how many, the space they take and the cap (`kv_cache_size`)."""
    if ctx.invoked_subcommand is not None:
        return
    from localassist.engine.kv_snapshots import usage

    root, cap = _root()
    used = usage(root)
    if as_json:
        out(json.dumps({"path": str(root), "entries": used.entries, "bytes": used.bytes, "cap_bytes": cap}))
        return
    cap_text = human_size(cap) if cap else "0 (snapshots off)"
    print_table(
        ["KEY", "VALUE"],
        [["path", str(root)], ["entries", str(used.entries)], ["size", human_size(used.bytes)], ["cap", cap_text]],
    )


@app.command()
def clear() -> None:
    """Delete every snapshot (conversations stay in the log; they are just evaluated again)."""
    from localassist.engine.kv_snapshots import clear as clear_all

    root, _ = _root()
    gone = clear_all(root)
    note(f"removed {gone.entries} snapshot{'s' if gone.entries != 1 else ''}, {human_size(gone.bytes)}")
