"""Prompt templates: a system prompt, a prompt with ``{input}`` and named parameters,
default sampling options, few-shot examples and an optional JSON schema, in one TOML file.

Built-in templates ship in the package; a file of the same name in
``<config dir>/templates/`` shadows the built-in one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

from localassist.engine.types import Message
from localassist.errors import UsageError
from localassist.files import TOMLDecodeError, load_toml
from localassist.settings import SPECS, Settings, parse_value

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SKELETON = '''description = "What this template does"
system = "You are a helpful assistant."
prompt = """{instruction}

{input}"""

[defaults]
instruction = "Answer the question."

[options]
temperature = 0.7

# [[examples]]
# user = "an example input"
# assistant = "the answer you want for it"
'''


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    builtin: bool
    description: str = ""
    system: str | None = None
    prompt: str = "{input}"
    defaults: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    examples: list[tuple[str, str]] = field(default_factory=list)
    schema: dict[str, Any] | None = None

    @property
    def params(self) -> list[str]:
        found = _PLACEHOLDER.findall(self.prompt) + _PLACEHOLDER.findall(self.system or "")
        return sorted({p for p in found if p != "input"})

    @property
    def takes_input(self) -> bool:
        return "{input}" in self.prompt

    def render(self, input_text: str | None, params: dict[str, str]) -> tuple[str | None, list[Message], str]:
        """(system prompt, few-shot messages, user message) for this input and these parameters."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            takes = ", ".join(self.params) or "no parameters"
            raise UsageError(f"template {self.name} has no parameter {', '.join(unknown)} (it takes: {takes})")
        values = {**self.defaults, **params}
        missing = [p for p in self.params if p not in values]
        if missing:
            needed = " ".join(f"-p {p} VALUE" for p in missing)
            raise UsageError(f"template {self.name} needs {needed}")
        if self.takes_input and not (input_text and input_text.strip()):
            raise UsageError(f"template {self.name} works on input: pipe text on stdin or give it as arguments")
        values["input"] = (input_text or "").rstrip("\n")

        def fill(text: str) -> str:
            return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)

        shots = [
            m for user, assistant in self.examples for m in (Message("user", user), Message("assistant", assistant))
        ]
        return (fill(self.system) if self.system else None), shots, fill(self.prompt)

    def apply_options(self, settings: Settings) -> Settings:
        """The template's sampling options, except where the user gave a flag."""
        changes = {
            key: parse_value(key, value, "config")
            for key, value in self.options.items()
            if settings.sources.get(key) != "flag"
        }
        if not changes:
            return settings
        sources = {**settings.sources, **{k: f"template {self.name}" for k in changes}}
        return replace(settings, **changes, sources=sources)


def builtin_dir() -> Path:
    return Path(str(files("localassist.conversation").joinpath("builtin_templates")))


def user_dir(config_dir: Path) -> Path:
    return config_dir / "templates"


def _parse(name: str, path: Path, builtin: bool) -> Template:
    try:
        raw = load_toml(path)
    except TOMLDecodeError as exc:
        raise UsageError(f"template {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read template {path}: {exc.strerror}") from None
    known = {"description", "system", "prompt", "defaults", "options", "examples", "schema"}
    if extra := sorted(set(raw) - known):
        raise UsageError(f"template {path}: unknown keys {', '.join(extra)} (known: {', '.join(sorted(known))})")
    options = raw.get("options", {})
    for key in options:
        if key not in SPECS:
            raise UsageError(f"template {path}: unknown option {key!r}")
    try:
        examples = [(str(e["user"]), str(e["assistant"])) for e in raw.get("examples", [])]
    except (KeyError, TypeError):
        raise UsageError(f"template {path}: each [[examples]] needs user = ... and assistant = ...") from None
    return Template(
        name=name,
        path=path,
        builtin=builtin,
        description=str(raw.get("description", "")),
        system=raw.get("system"),
        prompt=str(raw.get("prompt", "{input}")),
        defaults={str(k): str(v) for k, v in raw.get("defaults", {}).items()},
        options=dict(options),
        examples=examples,
        schema=raw.get("schema"),
    )


def load_template(name: str, config_dir: Path) -> Template:
    if not _NAME.match(name):
        raise UsageError(f"bad template name {name!r}")
    user = user_dir(config_dir) / f"{name}.toml"
    if user.exists():  # a FIFO or a folder there is refused by _parse, not passed over for the built-in
        return _parse(name, user, builtin=False)
    builtin = builtin_dir() / f"{name}.toml"
    if builtin.is_file():
        return _parse(name, builtin, builtin=True)
    raise UsageError(f"no template {name!r}; templates: {', '.join(sorted(_files(config_dir)))}")


def _files(config_dir: Path) -> dict[str, tuple[Path, bool]]:
    found = {path.stem: (path, True) for path in builtin_dir().glob("*.toml")}
    if user_dir(config_dir).is_dir():
        found |= {path.stem: (path, False) for path in user_dir(config_dir).glob("*.toml")}
    return found


def list_templates(config_dir: Path) -> list[Template]:
    """Every template; a file that does not parse is listed with its error as description."""
    out = []
    for name, (path, builtin) in sorted(_files(config_dir).items()):
        try:
            out.append(_parse(name, path, builtin))
        except UsageError as exc:
            out.append(Template(name, path, builtin, description=f"(broken: {exc})"))
    return out


def editable_path(name: str, config_dir: Path) -> Path:
    """The user's file for ``name``: a copy of the built-in one, or a skeleton, on first edit."""
    if not _NAME.match(name):
        raise UsageError(f"bad template name {name!r}")
    path = user_dir(config_dir) / f"{name}.toml"
    if not path.exists():
        from localassist.files import private_dir, write_private_text

        builtin = builtin_dir() / f"{name}.toml"
        private_dir(path.parent)
        write_private_text(path, builtin.read_text(encoding="utf-8") if builtin.is_file() else SKELETON)
    return path
