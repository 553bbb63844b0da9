"""`localassist users`: who may sign in to the web chat of `localassist serve` (only scrypt
hashes of their passwords are stored)."""

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from localassist.cli.console import out, warn

app = typer.Typer(
    help="Users of the web chat on `localassist serve`: add, list, rm, passwd. "
    "While there are none, the chat needs no sign-in from this machine (loopback).",
    no_args_is_help=True,
)

PASSWORD_STDIN = typer.Option(
    "--password-stdin",
    help="Read the password from the first line of stdin (`printf '%s\\n' \"$PW\" | localassist users add ada "
    "--password-stdin`) instead of asking twice on the terminal.",
)


def _accounts():
    from localassist.settings import app_paths
    from localassist.web.accounts import Accounts

    return Accounts(app_paths().data_dir)


def _password(name: str, from_stdin: bool) -> str:
    """The new password: stdin's first line (--password-stdin), else asked twice, hidden."""
    from localassist.cli.env import current
    from localassist.errors import UsageError
    from localassist.web.accounts import check_password

    env = current()
    if from_stdin:
        if env.stdin is None or env.stdin_isatty:
            raise UsageError("--password-stdin reads a pipe, not the terminal: leave it out to be asked")
        stream = getattr(env.stdin, "buffer", env.stdin)
        line = stream.readline()
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError("the password on stdin is not UTF-8 text") from None
        return check_password(line.removesuffix("\n").removesuffix("\r"))  # only the line's end
    if not env.stdin_isatty:
        raise UsageError(
            f"no terminal to ask for the password: pipe it with --password-stdin "
            f"(`printf '%s\\n' \"$PW\" | localassist users add {name} --password-stdin`)"
        )
    return check_password(typer.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True))


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="The user's name, typed at sign-in (1-64 letters, digits, . _ - @).")],
    password_stdin: Annotated[bool, PASSWORD_STDIN] = False,
) -> None:
    """Add a user of the web chat (`localassist users add ada`, then type the password twice).
    From then on the chat asks everyone to sign in."""
    accounts = _accounts()
    try:
        accounts.check_new_name(name)  # before asking for a password that would be thrown away
        accounts.add(name, _password(name, password_stdin))
        first = accounts.count() == 1
    finally:
        accounts.close()
    warn(f"added user {name!r}")
    if first:
        warn("the web chat now asks everyone to sign in")


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Every user: name, created, password changed, last sign-in (never a password or hash)."""
    from localassist.cli.tables import print_table

    accounts = _accounts()
    try:
        records = accounts.list()
    finally:
        accounts.close()
    if as_json:
        out(json.dumps([r.as_dict() for r in records], indent=2))
        return
    if not records:
        warn("no users: `localassist users add NAME` adds one (until then the web chat needs no sign-in on loopback)")
        return

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"

    print_table(
        ["NAME", "CREATED", "PASSWORD CHANGED", "LAST SIGN-IN"],
        [[r.name, when(r.created), when(r.updated), when(r.last_sign_in)] for r in records],
    )


@app.command()
def rm(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete their conversations without asking.")] = False,
) -> None:
    """Remove a user, sign them out everywhere and delete their web conversations
    (`localassist users rm ada`; it asks first when they have any, or pass --yes)."""
    from localassist.settings import app_paths

    paths = app_paths()
    accounts = _accounts()
    try:
        accounts.require(name)  # exit 3 when there is no such user
        if not yes:
            _confirm_rm(paths.data_dir, name)
        accounts.end_sessions(name)  # no request of theirs starts a conversation while it is deleted
        deleted = _delete_conversations(paths.data_dir, paths.cache_dir, name)
        accounts.remove(name)  # last: if the deletion failed, `users rm` can be run again
    finally:
        accounts.close()
    warn(f"removed user {name!r} ({deleted} conversation{'' if deleted == 1 else 's'} deleted)")


def _confirm_rm(data_dir: Path, name: str) -> None:
    """Ask on the terminal, default No, when the user has conversations; without a
    terminal, --yes must say it (as `logs rm --all`)."""
    from localassist.cli.env import current
    from localassist.conversation.exchange_log import open_log
    from localassist.errors import UsageError

    store = open_log(data_dir)
    try:
        count = len(store.owned(name, limit=1_000_000))
    finally:
        store.close()
    if not count:
        return
    if not current().stdin_isatty:
        raise UsageError(
            f"users rm {name} deletes their {count} web conversation(s) too; pass --yes to do it without a terminal"
        )
    if not typer.confirm(f"Remove {name!r} and delete their {count} web conversation(s)?", default=False, err=True):
        warn("nothing removed")
        raise typer.Exit(0)


def _delete_conversations(data_dir: Path, cache_dir: Path, owner: str) -> int:
    from localassist.web.conversations import delete_owned

    return delete_owned(data_dir, cache_dir, owner)


@app.command()
def passwd(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    password_stdin: Annotated[bool, PASSWORD_STDIN] = False,
) -> None:
    """Change a user's password and sign them out everywhere (`localassist users passwd ada`)."""
    accounts = _accounts()
    try:
        accounts.require(name)  # exit 3 before asking for a password
        ended = accounts.set_password(name, _password(name, password_stdin))
    finally:
        accounts.close()
    signed_out = f" (signed out of {ended} session{'s' * (ended != 1)})" if ended else ""
    warn(f"changed the password of {name!r}{signed_out}")
