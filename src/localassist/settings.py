"""One frozen settings object, read at call time.

Precedence, highest first: command-line flag > ``LOCALASSIST_<KEY>`` environment
variable > ``config.toml`` in the config dir > built-in default. Every value is
parsed and range-checked here, whatever its source, so a bad value in the config
file is reported as clearly as a bad flag.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from localassist.errors import ConfigError, InvalidSettingError, UsageError
from localassist.files import TOMLDecodeError, load_toml, tighten_dirs

ENV_PREFIX = "LOCALASSIST_"
DEFAULT_INPUT_TEMPLATE = "{instruction}\n\n<input>\n{input}\n</input>"


@dataclass(frozen=True)
class Paths:
    """Where localassist keeps its files. ``LOCALASSIST_HOME`` moves all of them."""

    config_dir: Path
    data_dir: Path
    cache_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"


def app_paths() -> Paths:
    home = os.environ.get("LOCALASSIST_HOME")
    if home:
        root = Path(home).expanduser()
        return Paths(root / "config", root / "data", root / "cache")
    import platformdirs

    return Paths(
        Path(platformdirs.user_config_dir("localassist", appauthor=False)),
        Path(platformdirs.user_data_dir("localassist", appauthor=False)),
        Path(platformdirs.user_cache_dir("localassist", appauthor=False)),
    )


# --- value parsers: each takes a str (env, `config set`) or an already typed value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError


def _to_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        loaded = json.loads(text)
        if not isinstance(loaded, list):
            raise ValueError
        return [str(v) for v in loaded]
    return [part for part in text.split(",") if part] if text else []


_ASCII_INT = re.compile(r"[+-]?[0-9]+")
_ASCII_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_int(value: Any) -> int:
    """A whole number written with ASCII digits. The one number parser for every flag,
    setting, env var and REPL command: ``str.isdigit()`` accepts "²" (which ``int()``
    then refuses) and ``int()`` accepts "١٢", "1_000" and other forms nobody types."""
    if isinstance(value, bool):
        raise ValueError(f"not a whole number: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(f"not a whole number: {value!r}")
    text = str(value).strip()
    if not _ASCII_INT.fullmatch(text):
        raise ValueError(f"not a whole number: {value!r}")
    return int(text)


def parse_float(value: Any) -> float:
    """A finite decimal number written with ASCII digits (no "nan", "inf" or "١.٥")."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip()
        if not _ASCII_FLOAT.fullmatch(text):
            raise ValueError(f"not a number: {value!r}")
        number = float(text)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def parse_memory(value: Any) -> str:
    """``buffer``, ``summary`` or ``window:K`` with K >= 1, normalised."""
    text = str(value).strip().lower()
    if text in ("buffer", "summary"):
        return text
    kind, sep, size = text.partition(":")
    if kind == "window" and sep and parse_int(size) >= 1:
        return f"window:{parse_int(size)}"
    raise ValueError(f"not a memory policy: {value!r}")


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: Any) -> int:
    """A size in bytes: a whole number, or a number with a unit (``2GB``, ``500 MB``, ``1.5GiB``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"not a size: {value!r}")
    number, unit = match.groups()
    if unit is None and "." in number:
        raise ValueError(f"not a whole number of bytes: {value!r}")
    return int(float(number) * _SIZE_UNITS[(unit or "b").lower()])


def _to_optional_str(value: Any) -> str | None:
    text = str(value)
    return text if text else None


def _to_repack(value: Any) -> str:
    text = str(value).strip().lower()
    if text == "auto":
        return text
    return "on" if _to_bool(text) else "off"


def _to_gpu_layers(value: Any) -> str:
    text = str(value).strip().lower()
    if text in {"auto", "all"}:
        return text
    if parse_int(text) >= 0:
        return str(parse_int(text))
    raise ValueError


@dataclass(frozen=True)
class Spec:
    parse: Callable[[Any], Any]
    default: Any
    expected: str
    help: str
    check: Callable[[Any], bool] = lambda _v: True
    nullable: bool = False


def _between(lo: float, hi: float) -> Callable[[Any], bool]:
    return lambda v: lo <= v <= hi


SPECS: dict[str, Spec] = {
    "model": Spec(_to_optional_str, None, "a model name or path", "default model", nullable=True),
    "models_dirs": Spec(_to_list, [], "a list of folders", "extra folders scanned for .gguf"),
    "gpu_layers": Spec(_to_gpu_layers, "auto", "auto, all, or a whole number >= 0", "layers offloaded to GPU"),
    "ctx": Spec(
        parse_int,
        None,
        "a whole number between 128 and 1048576",
        "context window in tokens",
        _between(128, 1_048_576),
        nullable=True,
    ),
    "threads": Spec(
        parse_int,
        None,
        "a whole number between 1 and 1024",
        "CPU threads for decoding",
        _between(1, 1024),
        nullable=True,
    ),
    "batch": Spec(
        parse_int,
        512,
        "a whole number between 512 and 65536",
        "prompt batch size",
        _between(512, 65536),
    ),
    "flash_attn": Spec(_to_bool, False, "true or false", "use flash attention"),
    "repack": Spec(
        _to_repack, "auto", "auto, on or off", "llama.cpp's repacked weight layouts (auto: off on AMX CPUs)"
    ),
    "chat_format": Spec(_to_optional_str, None, "a chat format name", "override the chat template", nullable=True),
    "temperature": Spec(parse_float, 0.8, "a number between 0 and 2", "sampling temperature", _between(0, 2)),
    "top_k": Spec(
        parse_int,
        40,
        "a whole number between 0 and 100000 (0 = off)",
        "top-k sampling",
        _between(0, 100_000),
    ),
    "top_p": Spec(parse_float, 0.95, "a number between 0 and 1", "nucleus sampling", _between(0, 1)),
    "min_p": Spec(parse_float, 0.05, "a number between 0 and 1", "min-p sampling", _between(0, 1)),
    "repeat_penalty": Spec(
        parse_float,
        1.0,
        "a number between 0.5 and 2 (1 = off)",
        "repetition penalty",
        _between(0.5, 2),
    ),
    "seed": Spec(
        parse_int,
        -1,
        "a whole number between -1 and 4294967295 (-1 = random)",
        "sampling seed",
        _between(-1, 2**32 - 1),
    ),
    "max_tokens": Spec(
        parse_int,
        512,
        "a whole number between 1 and 1048576",
        "most tokens to generate",
        _between(1, 1_048_576),
    ),
    "stop": Spec(_to_list, [], "a list of strings", "stop strings"),
    "system": Spec(_to_optional_str, None, "text", "system prompt", nullable=True),
    "embed_model": Spec(
        _to_optional_str, None, "a model name or path", "embedding model for new indexes", nullable=True
    ),
    "memory": Spec(parse_memory, "buffer", "buffer, window:K (K >= 1) or summary", "chat memory policy"),
    "history": Spec(_to_bool, True, "true or false", "keep the chat prompt history in a file"),
    "kv_cache_size": Spec(
        parse_size,
        2 * 10**9,
        "a size such as 2GB, 500MB or 0 (off)",
        "disk cap for saved conversation KV state (chat, ask -c)",
        lambda v: v >= 0,
    ),
    "log": Spec(_to_bool, True, "true or false", "log every exchange in the SQLite log"),
    "input_template": Spec(
        str,
        DEFAULT_INPUT_TEMPLATE,
        "text containing {instruction} and {input}",
        "how piped input and the instruction are joined",
        lambda v: "{instruction}" in v and "{input}" in v,
    ),
    # localassist serve
    "serve_host": Spec(str, "127.0.0.1", "a host name or IP address", "address serve listens on", lambda v: bool(v)),
    "serve_port": Spec(
        parse_int, 8080, "a whole number between 0 and 65535", "port serve listens on", _between(0, 65535)
    ),
    "serve_max_queue": Spec(
        parse_int, 4, "a whole number between 1 and 10000", "requests waiting per model", _between(1, 10_000)
    ),
    "serve_parallel": Spec(
        parse_int, 1, "a whole number between 1 and 64", "answers decoded together per chat model", _between(1, 64)
    ),
    "serve_requests_per_minute": Spec(
        parse_int, 0, "a whole number >= 0 (0 = no limit)", "requests per minute per API key", lambda v: v >= 0
    ),
    "serve_tokens_per_minute": Spec(
        parse_int,
        0,
        "a whole number >= 0 (0 = no limit)",
        "tokens (prompt + completion) per minute per API key",
        lambda v: v >= 0,
    ),
    "serve_timeout": Spec(
        parse_float, 600.0, "seconds between 1 and 86400", "time limit of one request", _between(1, 86_400)
    ),
    "serve_grace": Spec(
        parse_float,
        10.0,
        "seconds between 0 and 3600",
        "how long SIGTERM lets running requests finish",
        _between(0, 3600),
    ),
    "serve_max_body_mb": Spec(
        parse_int, 8, "a whole number of MiB between 1 and 1024", "largest request body", _between(1, 1024)
    ),
    "serve_log_content": Spec(
        lambda v: "auto" if str(v).strip().lower() == "auto" else str(_to_bool(v)).lower(),
        "auto",
        "auto, true or false",
        "log prompts and answers of API calls (auto: loopback)",
    ),
    "serve_key_file": Spec(
        _to_optional_str, None, "a file path", "file with API keys (name:key per line)", nullable=True
    ),
    "serve_auth": Spec(
        lambda v: str(v).strip().lower(),
        "auto",
        "auto, keys or open",
        "API keys: auto (open on loopback until a key is created), keys, open (loopback only)",
        lambda v: v in ("auto", "keys", "open"),
    ),
    "serve_read_timeout": Spec(
        parse_float,
        30.0,
        "seconds between 1 and 3600",
        "time a client has to send a request's headers, and again its body",
        _between(1, 3600),
    ),
    "web": Spec(_to_bool, True, "true or false", "serve the web chat on / next to the API"),
    "web_tools": Spec(
        _to_list,
        [],
        "a list of calc, time, files",
        "tools the web chat may offer (never shell)",
        lambda v: all(t in ("calc", "time", "files") for t in v),
    ),
    "web_tool_roots": Spec(_to_list, [], "a list of folders", "folders the web chat's files tool may read"),
    "web_upload_mb": Spec(
        parse_int, 10, "a whole number of MiB between 1 and 256", "largest file the web chat takes", _between(1, 256)
    ),
    "web_trusted_proxy": Spec(
        _to_bool,
        False,
        "true or false",
        "trust X-Forwarded-Proto/-For from the proxy in front (TLS ends there: Secure cookies)",
    ),
}


@dataclass(frozen=True)
class Settings:
    """Effective settings for one command. ``sources`` says where each value came from."""

    model: str | None = None
    models_dirs: tuple[str, ...] = ()
    gpu_layers: str = "auto"
    ctx: int | None = None
    threads: int | None = None
    batch: int = 512
    flash_attn: bool = False
    repack: str = "auto"
    chat_format: str | None = None
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int = -1
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    system: str | None = None
    embed_model: str | None = None
    memory: str = "buffer"
    history: bool = True
    kv_cache_size: int = 2 * 10**9
    log: bool = True
    input_template: str = DEFAULT_INPUT_TEMPLATE
    serve_host: str = "127.0.0.1"
    serve_port: int = 8080
    serve_max_queue: int = 4
    serve_parallel: int = 1
    serve_requests_per_minute: int = 0
    serve_tokens_per_minute: int = 0
    serve_timeout: float = 600.0
    serve_grace: float = 10.0
    serve_max_body_mb: int = 8
    serve_log_content: str = "auto"
    serve_key_file: str | None = None
    serve_auth: str = "auto"
    serve_read_timeout: float = 30.0
    web: bool = True
    web_tools: tuple[str, ...] = ()
    web_tool_roots: tuple[str, ...] = ()
    web_upload_mb: int = 10
    web_trusted_proxy: bool = False
    paths: Paths = field(default_factory=app_paths, compare=False)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    # the config file's [remotes] table, and the --base-url/--api-key-env flags (flags only:
    # nothing is sent to a server because of an environment variable)
    remotes: Mapping[str, Remote] = field(default_factory=dict, compare=False)
    base_url: str | None = None
    api_key_env: str | None = None


def parse_value(name: str, raw: Any, source: str) -> Any:
    """Parse and range-check one setting; raise a usage error naming the valid range."""
    spec = SPECS.get(name)
    if spec is None:
        raise UsageError(f"unknown setting '{name}'; known settings: {', '.join(SPECS)}")
    if raw is None and spec.nullable:
        return None
    try:
        value = spec.parse(raw)
    except (TypeError, ValueError, json.JSONDecodeError):
        raise InvalidSettingError(name, raw, spec.expected, source) from None
    if value is not None and not spec.check(value):
        raise InvalidSettingError(name, raw, spec.expected, source)
    return tuple(value) if isinstance(value, list) else value


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return load_toml(path)
    except TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None


def load_settings(flags: Mapping[str, Any] | None = None) -> Settings:
    """Build the effective settings; ``flags`` holds only the flags the user gave."""
    paths = app_paths()
    tighten_dirs(paths.config_dir, paths.data_dir, paths.cache_dir)  # left 0755 by an older version
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, spec in SPECS.items():
        values[name] = tuple(spec.default) if isinstance(spec.default, list) else spec.default
        sources[name] = "default"
    config = read_config_file(paths.config_file)
    remotes = parse_remotes(config.pop(REMOTES_KEY, {}), paths.config_file)
    for name, raw in config.items():
        if name not in SPECS:
            raise ConfigError(
                f"unknown key '{name}' in {paths.config_file}; remove it with `localassist config unset {name}`"
            )
        values[name] = parse_value(name, raw, "config")
        sources[name] = "config file"
    for name in SPECS:
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = parse_value(name, raw, "env")
            sources[name] = "env " + ENV_PREFIX + name.upper()
    for name, raw in (flags or {}).items():
        if raw is None or (isinstance(raw, (list, tuple)) and not raw) or name in REMOTE_FLAGS:
            continue
        values[name] = parse_value(name, raw, "flag")
        sources[name] = "flag"
    values.update(remote_flag_values(flags or {}))
    return Settings(**values, paths=paths, sources=sources, remotes=remotes)


def _write_config(path: Path, data: dict[str, Any]) -> None:
    """Atomically, 0600 in a 0700 dir: the file may hold a system prompt."""
    import tomli_w

    from localassist.files import private_dir, write_private_text

    private_dir(path.parent)
    write_private_text(path, tomli_w.dumps(data))


def set_config_value(name: str, raw: str) -> Any:
    """Validate ``raw`` for ``name`` and store it in the config file; return the parsed value."""
    value = parse_value(name, raw, "config")
    path = app_paths().config_file
    data = read_config_file(path)
    data[name] = list(value) if isinstance(value, tuple) else value
    if value is None:
        data.pop(name, None)
    _write_config(path, data)
    return value


def unset_config_value(name: str) -> bool:
    """Remove ``name`` from the config file; return whether it was there."""
    path = app_paths().config_file
    data = read_config_file(path)
    if name not in data:
        if name not in SPECS:
            raise UsageError(f"unknown setting '{name}'; known settings: {', '.join(SPECS)}")
        return False
    del data[name]
    _write_config(path, data)
    return True


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in fields(settings) if f.name in SPECS}


# --- remotes: named servers in the config file (the API key itself is never stored)

REMOTES_KEY = "remotes"
REMOTE_FLAGS = ("base_url", "api_key_env")
_REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Remote:
    """A server the user named: ``localassist remote add NAME URL --key-env VAR``."""

    name: str
    url: str
    key_env: str | None = None


def check_remote_name(name: str) -> str:
    if not _REMOTE_NAME.fullmatch(name):
        raise UsageError(f"invalid remote name {name!r}: use letters, digits, '_' or '-' (no ':', '/' or '.')")
    return name


def check_env_name(name: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        raise UsageError(f"{name!r} is not an environment variable name (give the variable's name, not the key)")
    return name


def parse_remotes(table: Any, path: Path) -> dict[str, Remote]:
    """The ``[remotes.NAME]`` tables: ``url`` and an optional ``key_env``."""
    from localassist.urls import normalize_url

    if not isinstance(table, dict):
        raise ConfigError(f"'{REMOTES_KEY}' in {path} must be a table of [remotes.NAME] tables")
    out = {}
    for name, entry in table.items():
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise UsageError("it needs a url")
            key_env = entry.get("key_env")
            out[name] = Remote(
                check_remote_name(name), normalize_url(entry["url"]), check_env_name(key_env) if key_env else None
            )
        except UsageError as exc:
            raise ConfigError(
                f"remote '{name}' in {path}: {exc}; fix it with `localassist remote rm {name}` and `remote add`"
            ) from None
    return out


def remote_flag_values(flags: Mapping[str, Any]) -> dict[str, str]:
    """``--base-url`` (normalised) and ``--api-key-env`` (a variable's name) as given."""
    from localassist.urls import normalize_url

    out = {}
    if flags.get("base_url"):
        out["base_url"] = normalize_url(str(flags["base_url"]))
    if flags.get("api_key_env"):
        out["api_key_env"] = check_env_name(str(flags["api_key_env"]))
    return out


def add_remote(name: str, url: str, key_env: str | None = None) -> Remote:
    """Store (or replace) a remote in the config file; only the key's variable name is stored."""
    from localassist.urls import normalize_url

    remote = Remote(check_remote_name(name), normalize_url(url), check_env_name(key_env) if key_env else None)
    path = app_paths().config_file
    data = read_config_file(path)
    table = data.setdefault(REMOTES_KEY, {})
    table[name] = {"url": remote.url, **({"key_env": remote.key_env} if remote.key_env else {})}
    _write_config(path, data)
    return remote


def remove_remote(name: str) -> bool:
    """Remove a remote from the config file; return whether it was there."""
    path = app_paths().config_file
    data = read_config_file(path)
    table = data.get(REMOTES_KEY)
    if not isinstance(table, dict) or name not in table:
        return False
    del table[name]
    if not table:
        del data[REMOTES_KEY]
    _write_config(path, data)
    return True
