"""Flags shared by every command that runs a model (ask now, chat later)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

ENGINE = "Engine"
SAMPLING = "Sampling"

Model = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="A .gguf path, a catalog name (see `models`), or owner/repo[:QUANT] in the HF cache."
    ),
]
GpuLayers = Annotated[
    str | None,
    typer.Option("--gpu-layers", help="Layers to offload to the GPU: auto, all, 0 or N.", rich_help_panel=ENGINE),
]
Ctx = Annotated[
    int | None,
    typer.Option(
        "--ctx", help="Context window in tokens [default: the model's, capped at 8192].", rich_help_panel=ENGINE
    ),
]
Threads = Annotated[
    int | None,
    typer.Option("--threads", help="CPU threads for generation [default: physical cores].", rich_help_panel=ENGINE),
]
Batch = Annotated[
    int | None,
    typer.Option("--batch", help="Prompt-processing batch size (>= 512) [default: 512].", rich_help_panel=ENGINE),
]
FlashAttn = Annotated[
    bool | None,
    typer.Option("--flash-attn/--no-flash-attn", help="Flash attention.", show_default=False, rich_help_panel=ENGINE),
]
Repack = Annotated[
    str | None,
    typer.Option(
        "--repack",
        help="llama.cpp's repacked weight layouts: auto (off on AMX CPUs, where they crash), on, off.",
        rich_help_panel=ENGINE,
    ),
]
ChatFormat = Annotated[
    str | None,
    typer.Option(
        "--chat-format",
        help="Chat template: auto, gguf, gemma, chatml, llama3, phi3, or a FILE.jinja.",
        rich_help_panel=ENGINE,
    ),
]
Temperature = Annotated[
    float | None,
    typer.Option("--temperature", "-T", help="0-2; 0 = greedy [default: 0.8].", rich_help_panel=SAMPLING),
]
TopK = Annotated[int | None, typer.Option("--top-k", help="0 = off [default: 40].", rich_help_panel=SAMPLING)]
TopP = Annotated[float | None, typer.Option("--top-p", help="0-1 [default: 0.95].", rich_help_panel=SAMPLING)]
MinP = Annotated[float | None, typer.Option("--min-p", help="0-1 [default: 0.05].", rich_help_panel=SAMPLING)]
RepeatPenalty = Annotated[
    float | None,
    typer.Option("--repeat-penalty", help="0.5-2; 1 = off [default: 1.0].", rich_help_panel=SAMPLING),
]
Seed = Annotated[int | None, typer.Option("--seed", help="-1 = random [default: -1].", rich_help_panel=SAMPLING)]
MaxTokens = Annotated[
    int | None,
    typer.Option("--max-tokens", "-n", help="Most tokens to generate [default: 512].", rich_help_panel=SAMPLING),
]
Stop = Annotated[
    list[str] | None,
    typer.Option("--stop", help="Stop when this text appears (repeatable).", rich_help_panel=SAMPLING),
]
System = Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")]
BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="Run on this OpenAI-compatible server (llama-server, vLLM, Ollama, localassist serve); "
        "-m names its model.",
        rich_help_panel=ENGINE,
    ),
]
ApiKeyEnv = Annotated[
    str | None,
    typer.Option("--api-key-env", help="Environment variable holding the server's API key.", rich_help_panel=ENGINE),
]


def show_library_messages(value: bool) -> bool:
    """-v also shows what the libraries underneath warn about (pypdf, huggingface_hub, ...)."""
    from localassist.cli.library_messages import show

    return show(value)


Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="llama.cpp logs, backend and offload report, the libraries' own warnings, on stderr.",
        callback=show_library_messages,
    ),
]


def setting_flags(params: dict[str, Any]) -> dict[str, Any]:
    """The command's parameters that are settings and that the user actually gave.

    Called with ``locals()`` first thing in a command, so a flag named like a setting
    is picked up without being listed twice."""
    from localassist.settings import REMOTE_FLAGS, SPECS

    return {name: value for name, value in params.items() if name in (*SPECS, *REMOTE_FLAGS) and value is not None}


# ask/chat options that are not settings
Template = Annotated[str | None, typer.Option("--template", "-t", help="Use a prompt template (see `templates list`).")]
Param = Annotated[
    list[str] | None, typer.Option("--param", "-p", help="Template parameter: -p KEY VALUE (repeatable).")
]
Continue = Annotated[bool, typer.Option("--continue", "-c", help="Continue the last conversation.")]
Cid = Annotated[str | None, typer.Option("--cid", help="Continue the conversation with this id.")]
NoLog = Annotated[bool, typer.Option("--no-log", help="Do not log this exchange (and save no KV snapshot of it).")]
JsonSchema = Annotated[
    str | None, typer.Option("--json-schema", help="Constrain the answer to this JSON schema (file or JSON).")
]
Grammar = Annotated[str | None, typer.Option("--grammar", help="Constrain the answer to a GBNF grammar file.")]
Raw = Annotated[bool, typer.Option("--raw", help="Plain completion: no chat template.")]
Files = Annotated[
    list[str] | None,
    typer.Option("--file", "-f", help="Ask about this document (repeatable; - is stdin): whole if it fits."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object: text, usage, timings.")]
Stats = Annotated[bool, typer.Option("--stats", help="Token counts and speed on stderr.")]
Plain = Annotated[bool, typer.Option("--plain", help="No markdown rendering, even on a terminal.")]


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    """``-p KEY VALUE`` arrives as ``KEY=VALUE`` (see ``app.join_param_pairs``)."""
    from localassist.errors import UsageError

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-p takes KEY VALUE (got {pair!r})")
        out[key] = value
    return out


Docs = Annotated[str | None, typer.Option("--docs", help="Answer from this folder index (see `index list`).")]
DocsTopK = Annotated[int, typer.Option("--top-k-docs", "-k", min=1, max=50, help="With --docs: how many chunks.")]
SyncDocs = Annotated[bool, typer.Option("--sync", help="With --docs: sync the index first if files changed.")]
