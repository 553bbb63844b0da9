"""`localassist serve`: the models behind an OpenAI-compatible HTTP API."""

from typing import Annotated

import typer

from localassist.cli import options

SERVER = "Server"


def serve(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="A model to serve (repeatable) [default: the configured one]."),
    ] = None,
    embed: Annotated[
        list[str] | None,
        typer.Option("--embed", help="A model to serve on /v1/embeddings (repeatable).", rich_help_panel=SERVER),
    ] = None,
    serve_host: Annotated[
        str | None, typer.Option("--host", help="Address to listen on [default: 127.0.0.1].", rich_help_panel=SERVER)
    ] = None,
    serve_port: Annotated[
        int | None, typer.Option("--port", help="Port (0: any free one) [default: 8080].", rich_help_panel=SERVER)
    ] = None,
    serve_max_queue: Annotated[
        int | None,
        typer.Option(
            "--max-queue", help="Requests that may wait per model; more get 429 [default: 4].", rich_help_panel=SERVER
        ),
    ] = None,
    serve_parallel: Annotated[
        int | None,
        typer.Option(
            "--parallel",
            "-np",
            help="Answers decoded together per chat model (continuous batching) [default: 1].",
            rich_help_panel=SERVER,
        ),
    ] = None,
    serve_key_file: Annotated[
        str | None,
        typer.Option(
            "--key-file", help="File of API keys, name:key per line (e.g. a Docker secret).", rich_help_panel=SERVER
        ),
    ] = None,
    serve_timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Time limit of one request, seconds [default: 600].", rich_help_panel=SERVER),
    ] = None,
    serve_auth: Annotated[
        str | None,
        typer.Option(
            "--auth",
            help="API keys: auto (open on loopback until a key is ever created), keys (always needed), "
            "open (none needed: loopback, no active key) [default: auto].",
            rich_help_panel=SERVER,
        ),
    ] = None,
    web: Annotated[
        bool | None,
        typer.Option(
            "--web/--no-web",
            help="Serve the web chat on / (sign-in once `users add` made a user) [default: on].",
            rich_help_panel=SERVER,
        ),
    ] = None,
    verbose: options.Verbose = False,
    gpu_layers: options.GpuLayers = None,
    ctx: options.Ctx = None,
    threads: options.Threads = None,
    batch: options.Batch = None,
    flash_attn: options.FlashAttn = None,
    repack: options.Repack = None,
    chat_format: options.ChatFormat = None,
) -> None:
    """Serve models over an OpenAI-compatible API (chat, completions, embeddings) and a web chat.

    The web chat is at / and the API at /v1. On a loopback address with no web users the
    page needs no sign-in; once `localassist users add NAME` made a user, or on any other
    address, it does.

    \b
      localassist serve                              # 127.0.0.1:8080, no key needed until one is created
      localassist serve -m qwen2.5:1.5b --embed nomic-embed.gguf --port 9000
      localassist keys create laptop && localassist serve --host 0.0.0.0
      localassist users add ada && localassist serve --host 0.0.0.0   # the web chat for a team
    """
    flags = options.setting_flags(locals())
    from localassist.cli.console import note
    from localassist.server.run import ServeOptions
    from localassist.server.run import serve as run_server
    from localassist.settings import load_settings

    settings = load_settings(flags)
    run_server(settings, ServeOptions(list(model or []), list(embed or []), verbose), announce=note)


def show_calls(count: int, model: str | None, as_json: bool) -> None:
    """`logs --server`: the newest calls to the server, oldest first."""
    import json
    import time

    from localassist.cli.console import out, warn
    from localassist.cli.tables import print_table
    from localassist.server.calllog import recent
    from localassist.settings import app_paths

    calls = recent(app_paths().data_dir, count, model=model)
    if as_json:
        out(json.dumps([c.as_dict() for c in calls], indent=2, ensure_ascii=False))
        return
    if not calls:
        warn("no logged server calls")
        return

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    print_table(
        ["WHEN", "KEY", "MODEL", "ENDPOINT", "STATUS", "TOKENS", "QUEUE", "TTFT", "TOTAL"],
        [
            [
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.created)),
                c.key_name,
                c.model or "-",
                c.endpoint,
                f"{c.status}" + (f" {c.error_code}" if c.error_code else ""),
                f"{c.prompt_tokens or 0}/{c.completion_tokens or 0}",
                secs(c.queue_s),
                secs(c.ttft_s),
                secs(c.total_s),
            ]
            for c in calls
        ],
    )
