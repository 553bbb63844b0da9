"""`localassist config`: see and change settings."""

import json
from typing import Annotated

import typer

from localassist.cli.console import note, out
from localassist.cli.tables import print_table

app = typer.Typer(
    help="Show and change settings (flag > LOCALASSIST_* env > config file > default).", no_args_is_help=True
)


@app.command()
def show(as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False) -> None:
    """Effective settings and where each value came from."""
    from localassist.settings import load_settings, settings_as_dict

    settings = load_settings()
    values = settings_as_dict(settings)
    if as_json:
        out(
            json.dumps(
                {
                    k: {"value": list(v) if isinstance(v, tuple) else v, "source": settings.sources[k]}
                    for k, v in values.items()
                },
                indent=2,
            )
        )
        return
    rows = [[k, json.dumps(list(v) if isinstance(v, tuple) else v), settings.sources[k]] for k, v in values.items()]
    print_table(["KEY", "VALUE", "SOURCE"], rows)


@app.command()
def path() -> None:
    """Print the config file's path (it may not exist yet)."""
    from localassist.settings import app_paths

    out(str(app_paths().config_file))


@app.command("set")
def set_(
    key: Annotated[str, typer.Argument(help="Setting name, as in `config show`.")],
    value: Annotated[str, typer.Argument(help="New value (lists: comma-separated or a JSON array).")],
) -> None:
    """Store a setting in the config file (checked like a flag)."""
    from localassist.settings import set_config_value

    parsed = set_config_value(key, value)
    note(f"{key} = {json.dumps(list(parsed) if isinstance(parsed, tuple) else parsed)}")


@app.command()
def unset(key: Annotated[str, typer.Argument(help="Setting name.")]) -> None:
    """Remove a setting from the config file (back to its default)."""
    from localassist.settings import unset_config_value

    removed = unset_config_value(key)
    note(f"{key} removed" if removed else f"{key} was not set")
