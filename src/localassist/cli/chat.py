"""`localassist chat`: the interactive REPL (prompt_toolkit for input, rich for output)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from localassist.cli import options
from localassist.cli.console import debug_enabled, err_console, stdout_is_terminal, visible
from localassist.errors import LocalAssistError

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
    from localassist.conversation.memory import MemoryPolicy
    from localassist.conversation.prompt import decode_stdin
    from localassist.conversation.session import ChatSession
    from localassist.engine.types import SamplingParams
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
    explicit = frozenset(k for k, source in settings.sources.items() if source == "flag")
    markdown = stdout_is_terminal() and not plain

    if piped is not None and tty_in is None:
        # No terminal at all: the piped text is the question; answer once and leave.
        session = ChatSession(backend, params, settings.system, policy, explicit=explicit)
        if not piped.strip():
            raise LocalAssistError("nothing to answer: stdin was empty and there is no terminal to chat on")
        log = ChatLog(settings, settings.log and not no_log)
        log.add(session, _answer(session, session.ask(piped), markdown))
        backend.close()
        return

    session = ChatSession(backend, params, settings.system, policy, context=piped, explicit=explicit)
    log = ChatLog(settings, settings.log and not no_log, history)
    if history:
        # the memory policy decides what of a long conversation goes to the model, as on every turn
        notice = session.restore(history.messages())
        say(f"resumed {history.id}: {len(history.shown())} exchanges", style="dim")
        if notice:
            say(notice, style="dim")
    if piped:
        say(f"context: {len(piped):,} characters from stdin, {session.used_tokens:,} tokens", style="dim")
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
    """Keeps the SQLite log equal to the conversation on screen: each exchange is logged
    as it finishes, /regen supersedes the answer it replaces, /undo and /clear hide
    exchanges, /load replaces them with the transcript, /system is recorded."""

    def __init__(self, settings, enabled: bool, history=None) -> None:
        self.settings = settings
        self.enabled = enabled
        self.conversation_id = history.id if history else None
        # logged exchange ids in screen order; None where logging failed (nothing to mark)
        self.ids: list[int | None] = [ex.id for ex in history.shown()] if history else []

    def _run(self, action, lost: str):
        from localassist.cli.logging_ import with_log

        return with_log(self.settings, self.enabled, action, lost)

    def add(self, session, completion, regenerated: bool = False) -> None:
        from localassist.cli.logging_ import record_exchange

        if completion is None:
            return
        replaces = self.ids.pop() if regenerated and self.ids else None
        logged = record_exchange(
            self.settings,
            self.enabled,
            self.conversation_id,
            session.conversation.turns[-2].content,
            completion,
            session.params,
            session.user_system,
            replaces=replaces if self.conversation_id else None,
        )
        if logged:
            self.conversation_id = logged.conversation_id
        self.ids.append(logged.exchange_id if logged else None)

    def undo(self) -> None:
        last = self.ids.pop() if self.ids else None
        if last is not None:
            self._run(lambda store: store.set_status([last], "undone"), "the log still shows that exchange")

    def clear(self) -> None:
        self.ids = []
        if self.conversation_id:
            cid = self.conversation_id
            self._run(lambda store: store.clear(cid), "the log still shows the conversation")

    def system(self, text: str | None) -> None:
        if self.conversation_id:
            cid = self.conversation_id
            self._run(lambda store: store.set_system(cid, text), "the log keeps the old system prompt")

    def load(self, session) -> None:
        messages, cid = session.conversation.turns, self.conversation_id
        imported = self._run(
            lambda store: store.log_imported(
                cid, messages, model=session.backend.model_name, system=session.user_system
            ),
            "the log does not show the loaded transcript",
        )
        if imported:
            self.conversation_id, self.ids = imported.conversation_id, list(imported.exchange_ids)


def say(text: str, style: str | None = None) -> None:
    """One line on stderr. User and model text is never read as Rich markup."""
    from localassist.cli.console import visible

    err_console().print(visible(text), style=style)


def _answer(session, turn, markdown: bool):
    """Stream one answer; Ctrl-C stops it, and the partial answer is kept, marked."""
    from localassist.cli.render import make_writer

    if turn.notice:
        say(turn.notice, style="dim")
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
        say("(interrupted: the partial answer is kept; /regen to try again)", style="dim")
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
            from localassist.files import create_private_file, private_dir

            # what the user typed: 0600 in a 0700 folder, before prompt_toolkit appends to it
            path = create_private_file(private_dir(self.settings.paths.data_dir) / "chat_history")
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
            completer=slash_completer(self.settings),
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
        from rich.text import Text

        prompt = self._prompt_session()
        say(f"{self.session.backend.model_name}: /help for commands, Ctrl-D to leave", style="dim")
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
                err_console().print(Text.assemble(("error: ", "red"), visible(str(exc))))
            except KeyboardInterrupt:
                say("(interrupted)", style="dim")
            except Exception as exc:  # one failed turn or command must not end the session
                if debug_enabled():
                    raise
                err_console().print(
                    Text.assemble(("internal error: ", "red"), visible(f"{type(exc).__name__}: {exc}")),
                    Text(" (the conversation is kept; LOCALASSIST_DEBUG=1 shows the traceback)", style="dim"),
                )

    def command(self, line: str) -> bool | None:
        from rich.text import Text

        name, _, arg = line.partition(" ")
        arg = arg.strip()
        s = self.session
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name in ("/help", "/?"):
            for cmd, text in COMMANDS.items():
                err_console().print(Text.assemble(("  " + cmd.ljust(8), "bold"), " ", text))
            say(
                '  Enter sends · Esc-Enter or Alt-Enter: new line · """ starts/ends a block · '
                "Ctrl-R searches history · Ctrl-C stops an answer · Ctrl-D leaves",
                style="dim",
            )
        elif name == "/set":
            key, _, value = arg.partition(" ")
            if not key or not value.strip():
                say("usage: /set PARAM VALUE, e.g. /set temperature 0.2 (/show lists the current values)")
                return None
            say(f"{key} = {s.set(key, value.strip())}", style="dim")
        elif name == "/show":
            for key, value in s.show().items():
                say(f"  {key:<15} {value}")
        elif name == "/system":
            s.set_system(arg)
            self.log.system(s.user_system)
            say(f"system prompt {'set' if arg else 'removed'}", style="dim")
        elif name == "/clear":
            s.clear()
            self.log.clear()
            say("conversation cleared (settings kept)", style="dim")
        elif name == "/regen":
            self.log.add(s, _answer(s, s.regen(), self.markdown), regenerated=True)
        elif name == "/template":
            if not arg:
                say("usage: /template NAME [KEY=VALUE ...] (`localassist templates list`); /template off")
                return None
            tname, *pairs = arg.split()
            if tname == "off":
                s.use_template(None)
                say("template off", style="dim")
                return None
            from localassist.cli.ask import parse_params
            from localassist.conversation.prompt_templates import load_template

            s.use_template(load_template(tname, self.settings.paths.config_dir), parse_params(pairs))
            say(f"template {tname}: your messages now go through it", style="dim")
        elif name == "/undo":
            question = s.undo()
            self.log.undo()
            say(f"removed: {question.content[:60]!r}", style="dim")
        elif name == "/save":
            if not arg:
                say("usage: /save FILE.md or /save FILE.json")
                return None
            s.save(Path(arg).expanduser())
            say(f"saved {arg}", style="dim")
        elif name == "/load":
            if not arg:
                say("usage: /load FILE.json")
                return None
            count = s.load(Path(arg).expanduser())
            self.log.load(s)
            say(f"loaded {count} messages from {arg}", style="dim")
        elif name == "/model":
            from localassist.cli.engine import load_model

            if not arg:
                say(f"model: {s.backend.model_name} (usage: /model NAME)")
                return None
            s.switch_backend(load_model(self.settings, arg))
            say(f"now chatting with {s.backend.model_name}; the conversation is kept", style="dim")
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


def model_names(settings) -> list[str]:
    """What /model can switch to: the models on this machine (starter, HF cache,
    models_dirs), then the catalog's other names (which say how to pull them)."""
    from localassist.errors import LocalAssistError
    from localassist.models.catalog import load_catalog
    from localassist.models.resolve import list_models

    try:
        local = [m.name for m in list_models(settings)] if settings is not None else []
    except (LocalAssistError, OSError):
        local = []
    return list(dict.fromkeys([*local, *load_catalog()]))


def slash_completer(settings=None):
    """Tab completion: command names, /set parameters and memory policies, model names
    (local, cached and catalog), file paths."""
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document

    from localassist.conversation.session import SETTABLE

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
                for name in model_names(settings):
                    if name.startswith(rest):
                        yield Completion(name, start_position=-len(rest))
            elif cmd in ("/save", "/load"):
                yield from self.paths.get_completions(Document(rest, len(rest)), complete_event)

    return _Completer()
