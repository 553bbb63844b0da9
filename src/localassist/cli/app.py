"""The Typer application and the one place where errors become exit codes.

The modules that define commands do not use ``from __future__ import annotations``:
Typer reads every command's signature on every run (``--help`` too), and string
annotations cost an ``eval`` each, about 20 ms over all the commands.
"""

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Annotated

import typer

from localassist import __version__
from localassist.cli import ask as ask_cmd
from localassist.cli import cache_cmd, library_messages, templates_cmd, tools_cmd
from localassist.cli import chat as chat_cmd
from localassist.cli import config as config_cmd
from localassist.cli import hub as hub_cmd
from localassist.cli import index as index_cmd
from localassist.cli import keys as keys_cmd
from localassist.cli import logs as logs_cmd
from localassist.cli import models as models_cmd
from localassist.cli import remote as remote_cmd
from localassist.cli import serve as serve_cmd
from localassist.cli import summarize as summarize_cmd
from localassist.cli import users as users_cmd
from localassist.cli.console import PROG, debug_enabled, error, exit_broken_pipe
from localassist.cli.usage import usage_line
from localassist.errors import ExitCode, LocalAssistError, exit_code_for

app = typer.Typer(
    name="localassist",
    help="A private, offline AI assistant for the terminal, on GGUF models.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: fast to start, clean in a pipe
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"localassist {__version__}")
        raise typer.Exit()


NETWORK_COMMANDS = {"pull", "search"}


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """A private, offline AI assistant for the terminal, on GGUF models."""
    if ctx.invoked_subcommand not in NETWORK_COMMANDS:
        _offline()


app.command()(ask_cmd.ask)
app.command()(chat_cmd.chat)
app.command()(summarize_cmd.summarize)
app.command()(models_cmd.models)
app.command()(models_cmd.info)
app.command()(hub_cmd.pull)
app.command()(hub_cmd.search)
app.command()(hub_cmd.verify)
app.command()(hub_cmd.rm)
app.command()(serve_cmd.serve)
app.add_typer(config_cmd.app, name="config")
app.add_typer(remote_cmd.app, name="remote")
app.add_typer(logs_cmd.app, name="logs")
app.add_typer(cache_cmd.app, name="cache")
app.add_typer(templates_cmd.app, name="templates")
app.add_typer(tools_cmd.app, name="tools")
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(users_cmd.app, name="users")
app.add_typer(index_cmd.app, name="index")


def _offline() -> None:
    """Only pull and search may reach the network: every other command runs with the
    hub's offline mode on (read by huggingface_hub when it is first imported)."""
    os.environ["HF_HUB_OFFLINE"] = "1"


def join_param_pairs(argv: list[str]) -> list[str]:
    """Typer has no option taking two values many times, so ``-p KEY VALUE`` is rewritten
    to ``-p KEY=VALUE`` before parsing (``-p KEY=VALUE`` works as it is)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return out + argv[i:]
        if arg in ("-p", "--param") and i + 2 < len(argv) and "=" not in argv[i + 1]:
            out += [arg, f"{argv[i + 1]}={argv[i + 2]}"]
            i += 3
        else:
            out.append(arg)
            i += 1
    return out


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one command and return its exit code; the console script and ``python -m
    localassist`` exit with it. ``argv``: the arguments after the program name (None:
    ``sys.argv[1:]``). ``env``: the whole environment the command sees, as a subprocess's
    ``env=`` (None: the process's own). Settings, paths and LOCALASSIST_DEBUG read
    ``os.environ`` when a command runs, not at import, so the run sees ``env``; the
    process's environment is put back as it was when the run ends, whatever it set
    (HF_HUB_OFFLINE). huggingface_hub reads its own variables once, at its first import:
    a later run in the same process keeps those. The streams are ``cli.env.current()``'s:
    ``using(Environment(...))``."""
    with _environment(env):
        return _run(list(sys.argv[1:] if argv is None else argv))


@contextmanager
def _environment(env: Mapping[str, str] | None) -> Iterator[None]:
    saved = dict(os.environ)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    try:
        yield
    finally:
        if dict(os.environ) != saved:
            os.environ.clear()
            os.environ.update(saved)


def _run(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    library_messages.route()
    try:
        # standalone_mode=False: Typer's usage errors come here, to be said in one line
        code = app(args=join_param_pairs(argv), prog_name=PROG, standalone_mode=False)
    except typer.TyperException as exc:  # an unknown option or command, a bad value, a missing argument
        # `localassist logs rm` alone: the help is the answer (a NoArgsIsHelpError, which is private
        # to typer; hasattr: its show() is not on the public TyperException)
        if type(exc).__name__ == "NoArgsIsHelpError" and hasattr(exc, "show"):
            exc.show()
        else:
            error(usage_line(exc))
        return exc.exit_code
    except typer.Abort:  # Ctrl-C or end of input at a yes/no question
        sys.stderr.write("\n")
        return ExitCode.INTERRUPTED
    except LocalAssistError as exc:
        if debug_enabled():
            raise
        error(str(exc))
        return exit_code_for(exc)
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        try:
            exit_broken_pipe()
        except typer.Exit as done:
            return done.exit_code
    except Exception as exc:  # the last resort: one line, never a traceback
        if debug_enabled():
            raise
        error(f"internal error: {type(exc).__name__}: {exc} (set LOCALASSIST_DEBUG=1 for the traceback)")
        return ExitCode.ERROR
    return code if isinstance(code, int) else ExitCode.OK  # a typer.Exit(code) raised by a command
