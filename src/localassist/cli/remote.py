"""`localassist remote`: name the servers a model may run on (only named ones are ever used)."""

import json
import os
from typing import Annotated

import typer

from localassist.cli.console import note, out
from localassist.cli.tables import print_table

app = typer.Typer(
    help="Servers to run models on: llama-server, vLLM, Ollama, localassist serve (-m NAME:MODEL).",
    no_args_is_help=True,
)


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="A short name, used as -m NAME:MODEL.")],
    url: Annotated[str, typer.Argument(help="The server's base URL, e.g. http://10.0.0.5:8000 (/v1 optional).")],
    key_env: Annotated[
        str | None, typer.Option("--key-env", help="Environment variable holding its API key (the key is not stored).")
    ] = None,
) -> None:
    """Add (or replace) a remote; nothing is contacted until a command uses it.

    \b
      localassist remote add gpu-box http://10.0.0.5:8000 --key-env GPU_BOX_KEY
      localassist ask -m gpu-box:qwen2.5-32b "Explain mmap"
    """
    from localassist.settings import add_remote
    from localassist.urls import plain_http_elsewhere

    remote = add_remote(name, url, key_env)
    note(f"{remote.name} = {remote.url}" + (f" (key from ${remote.key_env})" if remote.key_env else ""))
    if plain_http_elsewhere(remote.url):
        note("this URL is plain HTTP to another machine: prompts and answers will cross the network unencrypted")


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False) -> None:
    """The remotes in the config file, and the built-in names for engines on this machine."""
    from localassist.models.remotes import BUILTIN_REMOTES
    from localassist.settings import load_settings

    settings = load_settings()
    rows = [
        {
            "name": r.name,
            "url": r.url,
            "key_env": r.key_env,
            "key_set": bool(os.environ.get(r.key_env or "")),
            "builtin": False,
        }
        for r in settings.remotes.values()
    ]
    rows += [
        {"name": name, "url": url, "key_env": None, "key_set": False, "builtin": True}
        for name, (url, _kind) in BUILTIN_REMOTES.items()
        if name not in settings.remotes
    ]
    if as_json:
        out(json.dumps(rows, indent=2))
        return

    def key(row: dict) -> str:
        if not row["key_env"]:
            return "-"
        return f"${row['key_env']} ({'set' if row['key_set'] else 'not set'})"

    print_table(
        ["NAME", "URL", "API KEY", "KIND"],
        [[r["name"], r["url"], key(r), "built-in" if r["builtin"] else "config"] for r in rows],
    )


@app.command()
def rm(name: Annotated[str, typer.Argument(help="The remote's name.")]) -> None:
    """Remove a remote from the config file."""
    from localassist.errors import UsageError
    from localassist.settings import remove_remote

    if not remove_remote(name):
        raise UsageError(f"no remote named '{name}' in the config file (`localassist remote list`)")
    note(f"{name} removed")
