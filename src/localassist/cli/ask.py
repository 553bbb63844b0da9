"""`localassist ask`: one prompt in, one answer out, under the pipe contract."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from localassist.cli import options
from localassist.cli.console import exit_broken_pipe, stdout_is_terminal, warn
from localassist.errors import ExitCode, UsageError


def ask(
    prompt: Annotated[
        list[str] | None,
        typer.Argument(help="The instruction. Piped stdin becomes the input it works on.", show_default=False),
    ] = None,
    model: options.Model = None,
    system: options.System = None,
    template: Annotated[
        str | None, typer.Option("--template", "-t", help="Use a prompt template (see `templates list`).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Template parameter: -p KEY VALUE (repeatable).")
    ] = None,
    continue_: Annotated[bool, typer.Option("--continue", "-c", help="Continue the last conversation.")] = False,
    cid: Annotated[str | None, typer.Option("--cid", help="Continue the conversation with this id.")] = None,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not log this exchange.")] = False,
    json_schema: Annotated[
        str | None, typer.Option("--json-schema", help="Constrain the answer to this JSON schema (file or JSON).")
    ] = None,
    grammar: Annotated[
        str | None, typer.Option("--grammar", help="Constrain the answer to a GBNF grammar file.")
    ] = None,
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
      localassist ask -c "And the second point?"
      localassist ask -t summarize -p points 5 < terms.txt
      localassist ask -t extract-invoice < invoice.txt
    """
    flags = options.setting_flags(locals())
    from dataclasses import replace

    from localassist.conversation.memory import MemoryPolicy
    from localassist.conversation.prompt import build_user_text, decode_stdin
    from localassist.conversation.session import ChatSession
    from localassist.engine.types import SamplingParams
    from localassist.settings import load_settings

    settings = load_settings(flags)
    piped = None if sys.stdin is None or sys.stdin.isatty() else decode_stdin(sys.stdin.buffer.read())
    instruction = " ".join(prompt or [])
    shots: list = []
    schema = None
    if template:
        from localassist.conversation.prompt_templates import load_template

        tpl = load_template(template, settings.paths.config_dir)
        settings = tpl.apply_options(settings)
        tpl_input = piped if piped and piped.strip() else instruction
        tpl_system, shots, user_text = tpl.render(tpl_input, parse_params(param))
        if piped and piped.strip() and instruction:
            user_text = f"{user_text}\n\n{instruction}"
        if tpl_system and settings.sources.get("system") != "flag":
            settings = replace(settings, system=tpl_system)
        schema = tpl.schema
    else:
        if param:
            raise UsageError("-p/--param goes with -t/--template")
        user_text = build_user_text(instruction, piped, settings.input_template)
    if json_schema and grammar:
        raise UsageError("--json-schema and --grammar cannot be combined")
    params = SamplingParams.from_settings(settings)
    if json_schema:
        from localassist.engine.structured import load_schema

        schema = load_schema(json_schema)
    if schema is not None:
        from localassist.engine.structured import schema_to_grammar

        params = replace(params, grammar=schema_to_grammar(schema))
    elif grammar:
        from localassist.engine.structured import load_grammar

        params = replace(params, grammar=load_grammar(grammar))

    log_enabled = settings.log and not no_log
    conversation_id = None
    history = None
    if raw and (continue_ or cid):
        raise UsageError("--raw is a plain completion with no conversation: it cannot be combined with -c/--cid")
    if continue_ or cid:
        from localassist.cli.logging_ import load_history

        history, settings = load_history(settings, cid)
        conversation_id = history.id
        if settings.sources.get("model") == "default":
            settings = replace(settings, model=_still_available(history.model, settings))

    from localassist.cli.engine import load_model

    backend = load_model(settings, settings.model, verbose)
    notices: list[str] = []
    if raw:
        text_prompt = f"{settings.system}\n\n{user_text}" if settings.system else user_text
        stream = backend.stream(text_prompt, params)
    else:
        explicit = frozenset(k for k, source in settings.sources.items() if source == "flag")
        session = ChatSession(backend, params, settings.system, MemoryPolicy.parse(settings.memory), explicit=explicit)
        # few-shot examples first, then the conversation so far, then the new message
        notices.append(session.restore(shots + (history.messages() if history else [])) or "")
        turn = session.ask(user_text)
        stream = turn.stream
        notices.append(turn.notice or "")
    for notice in filter(None, notices):
        warn(notice)

    # A constrained answer is printed only once it is whole: never half a JSON on stdout.
    structured = params.grammar is not None and not as_json
    interrupted = False
    if as_json or structured:
        try:
            for _ in stream:
                pass
        except KeyboardInterrupt:
            interrupted = True
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
    if as_json:
        result = completion.as_dict()
        if params.grammar is not None and schema is not None and not interrupted:
            from localassist.engine.structured import parse_json_answer

            result["data"] = parse_json_answer(completion.text, completion.finish_reason)
        _write_stdout(json.dumps(result, ensure_ascii=False) + "\n")
    elif structured and not interrupted:
        from localassist.engine.structured import check_complete

        check_complete(completion.text, completion.finish_reason, schema is not None)
        _write_stdout(completion.text + ("" if completion.text.endswith("\n") else "\n"))
    from localassist.cli.engine import stats_line
    from localassist.cli.logging_ import record, with_log

    continued = conversation_id
    conversation_id = record(settings, log_enabled, conversation_id, user_text, completion, params, settings.system)
    if continued and conversation_id and settings.sources.get("system") == "flag":
        with_log(
            settings,
            log_enabled,
            lambda store: store.set_system(conversation_id, settings.system),
            "the conversation keeps its old system prompt",
        )
    if stats or verbose:
        warn(stats_line(completion) + (f" | conversation {conversation_id}" if conversation_id else ""))
    backend.close()
    if interrupted:
        warn("interrupted" + (" (the unfinished structured answer was not printed)" if structured else ""))
        raise typer.Exit(ExitCode.INTERRUPTED)


def _write_stdout(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        exit_broken_pipe()


def parse_params(pairs: list[str] | None) -> dict[str, str]:
    """``-p KEY VALUE`` arrives as ``KEY=VALUE`` (see ``app.join_param_pairs``)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-p takes KEY VALUE (got {pair!r})")
        out[key] = value
    return out


def _still_available(model: str, settings) -> str | None:
    """The conversation's model if it can still be resolved here, else the default."""
    from localassist.errors import LocalAssistError
    from localassist.models.resolve import resolve_model

    try:
        resolve_model(model, settings)
    except LocalAssistError:
        return None
    return model
