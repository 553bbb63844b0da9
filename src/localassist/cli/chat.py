"""`localassist chat`: the interactive REPL (prompt_toolkit for input, rich for output)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from localassist.cli import options
from localassist.cli.console import err_console, stdout_is_terminal
from localassist.errors import ContextOverflowError, LocalAssistError

COMMANDS = {
    "/help": "list these commands",
    "/set": "/set PARAM VALUE: temperature, top_k, top_p, min_p, repeat_penalty, max_tokens, seed, system, memory",
    "/show": "model, parameters, memory policy, context use",
    "/system": "/system TEXT: set the system prompt (no text: remove it)",
    "/clear": "forget the conversation, keep the settings",
    "/regen": "drop the last answer and generate it again",
    "/undo": "drop the last exchange",
    "/save": "/save FILE: the transcript, as Markdown (.md) or JSON (anything else)",
    "/load": "/load FILE: restore a transcript saved as JSON",
    "/model": "/model NAME: switch model, keep the conversation",
    "/stats": "last answer: prompt tokens, cached tokens, speed, time to first token",
    "/template": "/template NAME [KEY=VALUE ...]: send your messages through a prompt template (off: none)",
    "/exit": "leave (Ctrl-D does the same)",
}
MEMORY_CHOICES = ("buffer", "window:4", "window:8", "summary")


def chat(
    model: options.Model = None,
    system: options.System = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", help="buffer, window:K or summary [default: buffer]."),
    ] = None,
    no_history: Annotated[bool, typer.Option("--no-history", help="Do not read or write the prompt history.")] = False,
    resume: Annotated[bool, typer.Option("--resume", "-r", help="Reopen the last conversation.")] = False,
    cid: Annotated[str | None, typer.Option("--cid", help="Reopen the conversation with this id.")] = None,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not log this chat.")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="No markdown rendering.")] = False,
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
    """Chat on the terminal: streaming answers, memory of the conversation, /help for commands.

    \b
      localassist chat
      localassist chat -m qwen2.5:1.5b --system "You are terse." --temperature 0.3
      cat notes.md | localassist chat      # the notes become context, then you chat
      localassist chat --resume            # reopen the last conversation (or --cid ID)
    """
    flags = options.setting_flags(locals())
    if no_history:
        flags["history"] = False
    from localassist.chat import ChatSession
    from localassist.generation import SamplingParams
    from localassist.memory import MemoryPolicy
    from localassist.prompt import decode_stdin
    from localassist.settings import load_settings

    settings = load_settings(flags)
    piped = None
    tty_in = None
    if sys.stdin is not None and not sys.stdin.isatty():
        piped = decode_stdin(sys.stdin.buffer.read())
        tty_in = _open_tty()
    from localassist.cli.engine import load_model

    policy = MemoryPolicy.parse(settings.memory)
    history = None
    if resume or cid:
        from localassist.cli.logging_ import load_history

        history, settings = load_history(settings, cid)
    backend = load_model(settings, settings.model, verbose)
    params = SamplingParams.from_settings(settings)
    markdown = stdout_is_terminal() and not plain

    if piped is not None and tty_in is None:
        # No terminal at all: the piped text is the question; answer once and leave.
        session = ChatSession(backend, params, settings.system, policy)
        if not piped.strip():
            raise LocalAssistError("nothing to answer: stdin was empty and there is no terminal to chat on")
        log = ChatLog(settings, settings.log and not no_log)
        log.add(session, _answer(session, session.ask(piped), markdown))
        backend.close()
        return

    session = ChatSession(backend, params, settings.system, policy, context=piped)
    log = ChatLog(settings, settings.log and not no_log, history.id if history else None)
    if history:
        session.conversation.turns = history.messages()
        session._refresh_used()
        err_console().print(f"[dim]resumed {history.id}: {len(history.exchanges)} exchanges[/dim]")
    if session.used_tokens > session.budget:
        raise ContextOverflowError(session.used_tokens, params.max_tokens, backend.n_ctx)
    if piped:
        err_console().print(f"[dim]context: {len(piped):,} characters from stdin, {session.used_tokens:,} tokens[/dim]")
    repl = Repl(session, settings, markdown, tty_in, log)
    try:
        repl.run()
    finally:
        session.backend.close()
        if tty_in is not None:
            tty_in.close()


def _open_tty():
    try:
        return open("/dev/tty")
    except OSError:
        return None


class ChatLog:
    """Logs each finished exchange of a chat into one conversation of the SQLite log."""

    def __init__(self, settings, enabled: bool, conversation_id: str | None = None) -> None:
        self.settings = settings
        self.enabled = enabled
        self.conversation_id = conversation_id

    def add(self, session, completion) -> None:
        from localassist.cli.logging_ import record

        if completion is None:
            return
        prompt = session.conversation.turns[-2].content
        cid = record(
            self.settings,
            self.enabled,
            self.conversation_id,
            prompt,
            completion,
            session.params,
            session.conversation.system,
        )
        self.conversation_id = cid or self.conversation_id


def _answer(session, turn, markdown: bool):
    """Stream one answer; Ctrl-C stops it, and the partial answer is kept, marked."""
    from localassist.cli.render import make_writer

    if turn.notice:
        err_console().print(f"[dim]{turn.notice}[/dim]")
    writer = make_writer(markdown)
    interrupted = False
    try:
        for piece in turn.stream:
            writer.write(piece)
    except KeyboardInterrupt:
        interrupted = True
    writer.close()
    completion = session.finish(turn, interrupted=interrupted)
    if interrupted:
        err_console().print("[dim](interrupted: the partial answer is kept; /regen to try again)[/dim]")
    return completion


class Repl:
    def __init__(self, session, settings, markdown: bool, tty_in, log: ChatLog) -> None:
        self.session = session
        self.settings = settings
        self.markdown = markdown
        self.tty_in = tty_in
        self.log = log

    def _prompt_session(self):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        history: Any = InMemoryHistory()
        if self.settings.history:
            path = self.settings.paths.data_dir / "chat_history"
            path.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(path))
        bindings = KeyBindings()

        @bindings.add("enter")
        def _submit_or_newline(event) -> None:
            buffer = event.current_buffer
            text = buffer.text
            if text.lstrip().startswith('"""') and not (len(text.strip()) > 3 and text.rstrip().endswith('"""')):
                buffer.insert_text("\n")  # inside a """ block: Enter continues it
            else:
                buffer.validate_and_handle()

        @bindings.add("escape", "enter")
        def _newline(event) -> None:
            event.current_buffer.insert_text("\n")

        kwargs: dict[str, Any] = {}
        if self.tty_in is not None:
            from prompt_toolkit.input import create_input

            kwargs["input"] = create_input(self.tty_in)
        return PromptSession(
            history=history,
            completer=slash_completer(),
            complete_while_typing=False,
            key_bindings=bindings,
            multiline=True,
            bottom_toolbar=self._toolbar,
            prompt_continuation="... ",
            **kwargs,
        )

    def _toolbar(self) -> str:
        s = self.session
        return f" {s.backend.model_name} · {_k(s.used_tokens)}/{_k(s.backend.n_ctx)} tok · memory {s.memory} · /help "

    def run(self) -> None:
        prompt = self._prompt_session()
        err_console().print(f"[dim]{self.session.backend.model_name}: /help for commands, Ctrl-D to leave[/dim]")
        while True:
            try:
                text = prompt.prompt(">>> ")
            except KeyboardInterrupt:
                continue  # Ctrl-C on the prompt clears the line
            except EOFError:
                return
            text = _strip_block(text.strip())
            if not text:
                continue
            try:
                if text.startswith("/"):
                    if self.command(text) is False:
                        return
                else:
                    self.log.add(self.session, _answer(self.session, self.session.ask(text), self.markdown))
            except LocalAssistError as exc:
                err_console().print(f"[red]error:[/red] {exc}", markup=True, highlight=False)

    def command(self, line: str) -> bool | None:
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        s = self.session
        say = err_console().print
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name in ("/help", "/?"):
            for cmd, text in COMMANDS.items():
                say(f"  [bold]{cmd:<8}[/bold] {text}")
            say(
                '  [dim]Enter sends · Esc-Enter or Alt-Enter: new line · """ starts/ends a block · '
                "Ctrl-R searches history · Ctrl-C stops an answer · Ctrl-D leaves[/dim]"
            )
        elif name == "/set":
            key, _, value = arg.partition(" ")
            if not key or not value.strip():
                say("usage: /set PARAM VALUE, e.g. /set temperature 0.2 (/show lists the current values)")
                return None
            say(f"[dim]{key} = {s.set(key, value.strip())}[/dim]")
        elif name == "/show":
            for key, value in s.show().items():
                say(f"  {key:<15} {value}")
        elif name == "/system":
            s.set_system(arg)
            say(f"[dim]system prompt {'set' if arg else 'removed'}[/dim]")
        elif name == "/clear":
            s.clear()
            say("[dim]conversation cleared (settings kept)[/dim]")
        elif name == "/regen":
            self.log.add(s, _answer(s, s.regen(), self.markdown))
        elif name == "/template":
            if not arg:
                say("usage: /template NAME [KEY=VALUE ...] (`localassist templates list`); /template off")
                return None
            tname, *pairs = arg.split()
            if tname == "off":
                s.use_template(None)
                say("[dim]template off[/dim]")
                return None
            from localassist.cli.ask import parse_params
            from localassist.templates import load_template

            s.use_template(load_template(tname, self.settings.paths.config_dir), parse_params(pairs))
            say(f"[dim]template {tname}: your messages now go through it[/dim]")
        elif name == "/undo":
            question = s.undo()
            say(f"[dim]removed: {question.content[:60]!r}[/dim]")
        elif name == "/save":
            if not arg:
                say("usage: /save FILE.md or /save FILE.json")
                return None
            s.save(Path(arg).expanduser())
            say(f"[dim]saved {arg}[/dim]")
        elif name == "/load":
            if not arg:
                say("usage: /load FILE.json")
                return None
            count = s.load(Path(arg).expanduser())
            say(f"[dim]loaded {count} messages from {arg}[/dim]")
        elif name == "/model":
            from localassist.cli.engine import load_model

            if not arg:
                say(f"model: {s.backend.model_name} (usage: /model NAME)")
                return None
            s.switch_backend(load_model(self.settings, arg))
            say(f"[dim]now chatting with {s.backend.model_name}; the conversation is kept[/dim]")
        elif name == "/stats":
            from localassist.cli.engine import stats_line

            say(stats_line(s.last) if s.last else "no answer yet")
        else:
            say(f"unknown command {name}; /help lists them")
        return None


def _strip_block(text: str) -> str:
    if text.startswith('"""'):
        text = text[3:]
        if text.rstrip().endswith('"""'):
            text = text.rstrip()[:-3]
        return text.strip("\n")
    return text


def _k(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def slash_completer():
    """Tab completion: command names, /set parameters and memory policies, model names, files."""
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document

    from localassist.chat import SETTABLE

    class _Completer(Completer):
        paths = PathCompleter(expanduser=True)

        def get_completions(self, document, complete_event):
            text = document.text_before_cursor
            if not text.startswith("/"):
                return
            if " " not in text:
                for cmd in COMMANDS:
                    if cmd.startswith(text):
                        yield Completion(cmd, start_position=-len(text))
                return
            cmd, _, rest = text.partition(" ")
            if cmd == "/set":
                key, sep, value = rest.partition(" ")
                if not sep:
                    choices: tuple[str, ...] = SETTABLE
                    word = key
                elif key == "memory":
                    choices, word = MEMORY_CHOICES, value
                else:
                    return
                for choice in choices:
                    if choice.startswith(word):
                        yield Completion(choice, start_position=-len(word))
            elif cmd == "/model":
                from localassist.catalog import load_catalog

                for name in load_catalog():
                    if name.startswith(rest):
                        yield Completion(name, start_position=-len(rest))
            elif cmd in ("/save", "/load"):
                yield from self.paths.get_completions(Document(rest, len(rest)), complete_event)

    return _Completer()
