"""What ask and chat share on the terminal: reading stdin, loading the model with a
spinner, streaming an answer (Ctrl-C, a closed pipe), and the closing report."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from localassist.cli.console import err_console, exit_broken_pipe, note, stderr_is_terminal, stdout_is_terminal, warn
from localassist.cli.env import current
from localassist.errors import ExitCode

if TYPE_CHECKING:  # imported lazily: `localassist --help` must not pay for them
    from localassist.assistant import Assistant, Turn
    from localassist.engine.types import Backend, Done
    from localassist.settings import Settings


Decoded = TypeVar("Decoded")  # str for a prompt, bytes for a document (`-f -`)


def read_stdin(decode: Callable[[bytes], Decoded]) -> Decoded | None:
    data = current().read_stdin()
    return decode(data) if data is not None else None


def spinner(name: str):
    """A "Loading NAME..." spinner on a terminal stderr; nothing on a pipe."""
    from contextlib import nullcontext

    return err_console().status(f"Loading {name}...", spinner="dots") if stderr_is_terminal() else nullcontext()


def load_model(settings: Settings, spec: str | None = None, verbose: bool = False, snapshots: bool = False) -> Backend:
    """Resolve and load a model: a spinner on a terminal, the backend report with -v."""
    from contextlib import nullcontext

    from localassist.backends import open_backend

    loading = spinner if not verbose else (lambda _name: nullcontext())
    backend = open_backend(settings, spec, verbose=verbose, loading=loading, snapshots=snapshots, notify=warn)
    if verbose:
        warn("  ".join(f"{k}={v}" for k, v in backend.info().details.items()))
    return backend


def open_assistant(
    settings: Settings,
    *,
    verbose: bool = False,
    log: bool = True,
    history: Any = None,
    context: str | None = None,
    snapshots: bool | None = None,
) -> Assistant:
    """The model and the assistant around it, logging into ``history``'s conversation.
    ``snapshots`` (KV state saved for a later resume): by default when ``history`` is
    given (``ask -c``); the chat REPL asks for it always. Never for an exchange kept out
    of the log (``--no-log``, ``logs off``): a snapshot holds every token of the
    conversation, and only deleting the conversation from the log deletes it."""
    from localassist.assistant import for_settings
    from localassist.cli.console import error
    from localassist.conversation.exchange_log import ExchangeLog

    logged = settings.log and log
    keep = (history is not None if snapshots is None else snapshots) and logged
    backend = load_model(settings, settings.model, verbose, keep)
    exchange_log = ExchangeLog(settings.paths.data_dir, logged, history, on_error=error)
    return for_settings(backend, settings, log=exchange_log, context=context)


def notices(lines: Iterable[str | None]) -> None:
    for line in lines:
        if line:
            warn(line)


def show_answer(assistant: Assistant, turn: Turn, *, markdown: bool = True, quiet: bool = False) -> Done:
    """Stream the answer to stdout (rendered markdown on a terminal, plain text on a pipe;
    nothing with ``quiet``), then record it. Ctrl-C cancels the answer and keeps what was
    shown; a closed pipe (``| head``) cancels it and exits 141. With ``--tools``, each tool
    call is a line on stderr as it starts and ends (``tooling.describe_event``); the text
    so far is closed off before each, so a terminal's markdown view and the line do not
    overlap."""
    from localassist.cli.render import make_writer
    from localassist.cli.tooling import describe_event
    from localassist.engine.types import Done, TextDelta

    rendered = markdown and stdout_is_terminal()
    writer = None
    try:
        try:
            for event in turn.stream:
                if isinstance(event, TextDelta):
                    if event.text and not quiet:
                        if writer is None:
                            writer = make_writer(rendered, current().stdout)
                        writer.write(event.text)
                    continue
                line = None if isinstance(event, Done) else describe_event(event)
                if line is None:
                    continue
                if rendered and writer is not None:
                    writer.close()
                    writer = None
                note(line)
        except KeyboardInterrupt:
            turn.cancel()
        if writer is not None:
            writer.close()
    except BrokenPipeError:
        turn.cancel()
        assistant.finish(turn)
        exit_broken_pipe()
    return assistant.finish(turn)


def write_answer(text: str) -> None:
    stream = current().stdout
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        exit_broken_pipe()


def stats_line(done: Done) -> str:
    t = done.timings
    parts = [
        f"model {done.model}",
        f"prompt {done.prompt_tokens} tok ({done.cached_tokens} cached)",
        f"answer {done.completion_tokens} tok ({done.finish_reason})",
    ]
    if t.ttft_s is not None:
        parts.append(f"first token {t.ttft_s * 1000:.0f} ms")
    if t.prompt_tokens_per_s:
        parts.append(f"prompt {t.prompt_tokens_per_s:.1f} t/s")
    if t.generation_tokens_per_s:
        parts.append(f"generation {t.generation_tokens_per_s:.1f} t/s")
    parts.append(f"load {t.load_s:.2f} s")
    return " | ".join(parts)


def finish(assistant: Assistant, done: Done, *, stats: bool = False, structured: bool = False) -> None:
    """The closing report on stderr, the model freed, and exit 130 after a Ctrl-C."""
    if stats:
        cid = assistant.log.conversation_id if assistant.log is not None else None
        warn(stats_line(done) + (f" | conversation {cid}" if cid else ""))
    assistant.backend.close()
    if done.cancelled:
        warn("interrupted" + (" (the unfinished structured answer was not printed)" if structured else ""))
        raise typer.Exit(ExitCode.INTERRUPTED)


def not_found(as_json: bool) -> None:
    """``--docs`` found nothing relevant: say so instead of letting the model guess."""
    from localassist.rag import NOT_FOUND

    if as_json:
        import json

        write_answer(json.dumps({"text": NOT_FOUND, "finish_reason": "not_found", "sources": []}) + "\n")
    else:
        write_answer(NOT_FOUND + "\n")
    warn("nothing in the index is relevant enough to answer from (no model was asked)")


def cite(hits: list, done: Done, as_json: bool) -> None:
    """The sources of a ``--docs`` answer, from the hits' metadata (never the model's
    text): after the answer on a terminal, on stderr when stdout is a pipe (which keeps
    only the answer). Citation markers outside 1..k are flagged."""
    from localassist.rag import check_citations, sources_footer

    check = check_citations(done.text, len(hits))
    if check.invalid:
        numbers = ", ".join(f"[{n}]" for n in check.invalid)
        verb = "is" if len(check.invalid) == 1 else "are"
        warn(f"the answer cites {numbers}, which {verb} not among the sources 1..{len(hits)}")
    if as_json:
        return
    footer = "Sources: " + sources_footer(hits, check.cited or None)
    if stdout_is_terminal():
        write_answer(footer + "\n")
    else:
        from localassist.cli.console import note

        note(footer)
