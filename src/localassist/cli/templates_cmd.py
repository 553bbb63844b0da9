"""`localassist templates`: list, show and edit prompt templates."""

import os
import shlex
import subprocess
from typing import Annotated

import typer

from localassist.cli.console import note, out
from localassist.cli.tables import print_table

app = typer.Typer(help="Prompt templates for `ask -t NAME` and `/template NAME` in chat.", no_args_is_help=True)


def _config_dir():
    from localassist.settings import app_paths

    return app_paths().config_dir


@app.command("list")
def list_() -> None:
    """Built-in and your own templates (yours shadow built-ins of the same name)."""
    from localassist.conversation.prompt_templates import list_templates

    rows = [
        [t.name, "built-in" if t.builtin else "user", " ".join(f"{p}" for p in t.params) or "-", t.description]
        for t in list_templates(_config_dir())
    ]
    print_table(["NAME", "SOURCE", "PARAMS", "DESCRIPTION"], rows)


@app.command()
def show(name: Annotated[str, typer.Argument(help="Template name.")]) -> None:
    """Print a template's file."""
    from localassist.conversation.prompt_templates import load_template
    from localassist.errors import UsageError
    from localassist.files import read_regular_text

    template = load_template(name, _config_dir())
    try:
        text = read_regular_text(template.path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read template {template.path}: {getattr(exc, 'strerror', None) or exc}") from None
    note(f"# {template.path}")
    out(text, nl=False)


@app.command()
def edit(name: Annotated[str, typer.Argument(help="Template name (new or existing).")]) -> None:
    """Open your copy of a template in $EDITOR (a built-in one is copied first)."""
    from localassist.conversation.prompt_templates import editable_path, load_template
    from localassist.errors import UsageError

    path = editable_path(name, _config_dir())
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        subprocess.run([*shlex.split(editor), str(path)], check=False)
    except OSError as exc:
        raise UsageError(f"cannot start the editor {editor!r}: {exc.strerror}; set EDITOR") from None
    load_template(name, _config_dir())  # report a broken file now, not at the next ask
    note(str(path))
