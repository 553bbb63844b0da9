"""`localassist keys`: API keys for `localassist serve` (only their hashes are stored)."""

import json
import time
from typing import Annotated

import typer

from localassist.cli.console import out, warn

app = typer.Typer(help="API keys for `localassist serve`: create, list, revoke.", no_args_is_help=True)


def _store():
    from localassist.server.keys import KeyStore
    from localassist.settings import app_paths

    return KeyStore(app_paths().data_dir)


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name for the key: who or what uses it.")],
    rpm: Annotated[
        int | None, typer.Option("--rpm", min=0, help="Requests per minute for this key [default: the setting].")
    ] = None,
    tpm: Annotated[
        int | None, typer.Option("--tpm", min=0, help="Tokens per minute for this key [default: the setting].")
    ] = None,
) -> None:
    """Create a key and print it once on stdout (`KEY=$(localassist keys create laptop)`)."""
    store = _store()
    try:
        key = store.create(name, rpm, tpm)
    finally:
        store.close()
    out(key)
    warn(f"created key {name!r}: store it now, it is not shown again (only its hash is kept)")


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Every key: name, hint, created, last used, revoked, limits."""
    from localassist.cli.tables import print_table

    store = _store()
    try:
        records = store.records()
    finally:
        store.close()
    if as_json:
        out(json.dumps([r.as_dict() for r in records], indent=2))
        return
    if not records:
        warn("no API keys: `localassist keys create NAME` makes one")
        return

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"

    print_table(
        ["NAME", "KEY", "CREATED", "LAST USED", "STATUS", "RPM", "TPM"],
        [
            [
                r.name,
                r.hint,
                when(r.created),
                when(r.last_used),
                "active" if r.active else f"revoked {when(r.revoked)}",
                "-" if r.requests_per_minute is None else str(r.requests_per_minute),
                "-" if r.tokens_per_minute is None else str(r.tokens_per_minute),
            ]
            for r in records
        ],
    )


@app.command()
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: a running server refuses it within a second."""
    from localassist.errors import UsageError

    store = _store()
    try:
        revoked = store.revoke(name)
        left = len(store.records(include_revoked=False))
    finally:
        store.close()
    if not revoked:
        raise UsageError(f"no active key named {name!r} (`localassist keys list` shows them)")
    warn(f"revoked key {name!r}")
    if not left:  # a server never opens by revocation
        warn("no stored key is active now: a server without other keys refuses every request until `keys create`")
