"""`localassist logs`: the conversation log (SQLite): list, search, show, export, delete, on/off."""

import json
import time
from typing import Annotated

import typer

from localassist.cli.console import out, warn
from localassist.cli.tables import fit_cells, print_table

app = typer.Typer(help="Every exchange of ask and chat, logged in SQLite.", invoke_without_command=True)


def _store():
    from localassist.conversation.exchange_log import open_log
    from localassist.settings import load_settings

    return open_log(load_settings().paths.data_dir)


@app.callback()
def logs(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("-n", "--count", min=1, help="How many exchanges.")] = 10,
    query: Annotated[
        str | None,
        typer.Option("-q", "--query", help='Search: every word must appear; "a phrase" in quotes; word* for a prefix.'),
    ] = None,
    fts: Annotated[bool, typer.Option("--fts", help="Read -q as SQLite FTS5 query syntax (OR, NOT, NEAR).")] = False,
    cid: Annotated[str | None, typer.Option("--cid", help="Only this conversation.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Only this model.")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Also answers replaced by /regen and exchanges undone or cleared, marked.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    server: Annotated[
        bool, typer.Option("--server", help="Calls to `localassist serve` instead (-n, -m, --json).")
    ] = False,
) -> None:
    """Recent exchanges, oldest first (`logs -n 5`, `logs -q sorting`)."""
    if ctx.invoked_subcommand is not None:
        return
    if server:
        from localassist.cli.serve import show_calls

        show_calls(count, model, as_json)
        return
    store = _store()
    rows = store.recent(count, query=query, conversation_id=cid, model=model, include_hidden=all_, fts=fts)
    store.close()
    if as_json:
        out(json.dumps([r.as_dict() for r in rows], indent=2, ensure_ascii=False))
        return
    if not rows:
        warn("no logged exchanges" + (f" match {query!r}" if query else ""))
        return
    print_table(
        ["CONVERSATION", "WHEN", "MODEL", *(["STATUS"] if all_ else []), "PROMPT", "ANSWER"],
        [
            [
                r.conversation_id,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
                r.model,
                *([r.status + (" imported" if r.imported else "")] if all_ else []),
                _short(r.prompt),
                _short(r.response),
            ]
            for r in rows
        ],
    )


def _short(text: str, width: int = 40) -> str:
    return fit_cells(" ".join(text.split()), width)


@app.command()
def show(
    cid: Annotated[str, typer.Argument(help="Conversation id (a unique prefix is enough).")],
    format: Annotated[str, typer.Option("--format", "-f", help="md or json.")] = "md",
    all_: Annotated[
        bool, typer.Option("--all", help="Also answers replaced by /regen and exchanges undone or cleared, marked.")
    ] = False,
) -> None:
    """Print a conversation as chat shows it, as Markdown or JSON (`logs show ID --format md > talk.md`)."""
    from localassist.conversation.log_store import export_json, export_markdown
    from localassist.errors import UsageError

    if format not in ("md", "json"):
        raise UsageError(f"--format must be md or json (got {format!r})")
    store = _store()
    conv = store.conversation(cid, include_hidden=all_)
    store.close()
    text = export_markdown(conv, all_) if format == "md" else export_json(conv, all_)
    out(text, nl=format == "json")


@app.command()
def rm(
    cid: Annotated[str | None, typer.Argument(help="Conversation id to delete.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Delete every logged conversation.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="With --all: do not ask first (for scripts).")] = False,
) -> None:
    """Delete one conversation, or all of them, and every copy of the text: the log file is
    rewritten, its KV snapshots and its lines in the chat prompt history go too.
    --all asks first on a terminal (default No); without one it needs --yes."""
    from localassist.conversation.exchange_log import delete_conversations
    from localassist.errors import UsageError
    from localassist.settings import load_settings

    if bool(cid) == all_:
        raise UsageError("give a conversation id or --all")
    if all_ and not yes:
        _confirm_delete_all()
    paths = load_settings().paths
    removed = delete_conversations(paths.data_dir, paths.cache_dir, None if all_ else cid)
    warn(f"deleted {removed} exchange(s)")


def _confirm_delete_all() -> None:
    """Ask on the terminal, default No; without a terminal, --yes must say it."""
    from localassist.cli.env import current
    from localassist.errors import UsageError

    store = _store()
    conversations, exchanges = store.counts()
    store.close()
    if not exchanges:
        return
    if not current().stdin_isatty:
        raise UsageError("logs rm --all deletes every logged conversation; pass --yes to do it without a terminal")
    question = f"Delete all {conversations} logged conversation(s), {exchanges} exchange(s)?"
    if not typer.confirm(question, default=False, err=True):
        warn("nothing deleted")
        raise typer.Exit()


@app.command()
def on() -> None:
    """Log every exchange (the default)."""
    from localassist.settings import set_config_value

    set_config_value("log", "true")
    warn("logging is on")


@app.command()
def off() -> None:
    """Stop logging (already logged conversations stay until `logs rm`)."""
    from localassist.settings import set_config_value

    set_config_value("log", "false")
    warn("logging is off")


@app.command()
def status() -> None:
    """Whether logging is on, where the database is, how much it holds."""
    from localassist.conversation.log_store import log_path
    from localassist.settings import load_settings

    settings = load_settings()
    path = log_path(settings.paths.data_dir)
    out(f"logging: {'on' if settings.log else 'off'} ({settings.sources['log']})")
    out(f"database: {path}")
    if path.exists():
        store = _store()
        conversations, exchanges = store.counts()
        store.close()
        out(f"holds: {conversations} conversations, {exchanges} exchanges, {path.stat().st_size:,} bytes")


@app.command()
def path() -> None:
    """Print the log database's path."""
    from localassist.conversation.log_store import log_path
    from localassist.settings import load_settings

    out(str(log_path(load_settings().paths.data_dir)))
