"""`localassist ask`: one prompt in, one answer out, under the pipe contract."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from localassist.cli import options
from localassist.cli.console import exit_broken_pipe, stdout_is_terminal, warn
from localassist.cli.engine import stats_line
from localassist.errors import ExitCode


def ask(
    prompt: Annotated[
        list[str] | None,
        typer.Argument(help="The instruction. Piped stdin becomes the input it works on.", show_default=False),
    ] = None,
    model: options.Model = None,
    system: options.System = None,
    raw: Annotated[bool, typer.Option("--raw", help="Plain completion: no chat template.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object: text, usage, timings.")] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Token counts and speed on stderr.")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="No markdown rendering, even on a terminal.")] = False,
    verbose: options.Verbose = False,
    gpu_layers: options.GpuLayers = None,
    ctx: options.Ctx = None,
    threads: options.Threads = None,
    batch: options.Batch = None,
    flash_attn: options.FlashAttn = None,
    chat_format: options.ChatFormat = None,
    temperature: options.Temperature = None,
    top_k: options.TopK = None,
    top_p: options.TopP = None,
    min_p: options.MinP = None,
    repeat_penalty: options.RepeatPenalty = None,
    seed: options.Seed = None,
    max_tokens: options.MaxTokens = None,
    stop: options.Stop = None,
) -> None:
    """Answer one prompt. Stdout carries the answer and nothing else.

    \b
      localassist ask "The capital of France is"
      git diff | localassist ask "Write a commit message for this diff" -T 0.2 -n 80
    """
    flags = options.setting_flags(locals())
    from localassist.generation import SamplingParams
    from localassist.prompt import build_messages, build_user_text, decode_stdin
    from localassist.settings import load_settings

    settings = load_settings(flags)
    piped = None if sys.stdin is None or sys.stdin.isatty() else decode_stdin(sys.stdin.buffer.read())
    user_text = build_user_text(" ".join(prompt or []), piped, settings.input_template)
    params = SamplingParams.from_settings(settings)
    from localassist.cli.engine import load_model

    backend = load_model(settings, settings.model, verbose)

    if raw:
        text_prompt = f"{settings.system}\n\n{user_text}" if settings.system else user_text
        stream = backend.stream(text_prompt, params)
    else:
        stream = backend.stream(build_messages(user_text, settings.system), params)

    interrupted = False
    if as_json:
        try:
            for _ in stream:
                pass
        except KeyboardInterrupt:
            interrupted = True
        try:
            sys.stdout.write(json.dumps(stream.completion().as_dict(), ensure_ascii=False) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            exit_broken_pipe()
    else:
        from localassist.cli.render import make_writer

        writer = make_writer(markdown=stdout_is_terminal() and not plain)
        try:
            try:
                for piece in stream:
                    writer.write(piece)
            except KeyboardInterrupt:
                interrupted = True
            writer.close()
        except BrokenPipeError:
            exit_broken_pipe()
    completion = stream.completion()
    if stats or verbose:
        warn(stats_line(completion))
    backend.close()
    if interrupted:
        warn("interrupted")
        raise typer.Exit(ExitCode.INTERRUPTED)
