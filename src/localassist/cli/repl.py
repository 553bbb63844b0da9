"""The chat REPL: prompt_toolkit for input (history, keys, completion), rich for output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localassist.cli.console import debug_enabled, err_console, visible
from localassist.conversation.input_history import as_sent
from localassist.errors import LocalAssistError

if TYPE_CHECKING:
    from localassist.assistant import Assistant, Turn
    from localassist.engine.types import Done
    from localassist.settings import Settings

MEMORY_CHOICES = ("buffer", "window:4", "window:8", "summary")


def say(text: str, style: str | None = None) -> None:
    """One line on stderr. User and model text is never read as Rich markup."""
    err_console().print(visible(text), style=style)


def answer(session: Assistant, turn: Turn, markdown: bool) -> Done:
    """Stream one answer; Ctrl-C stops it, and the partial answer is kept, marked."""
    from localassist.cli.session import show_answer

    if turn.notice:
        say(turn.notice, style="dim")
    done = show_answer(session, turn, markdown=markdown)
    if done.cancelled:
        say("(interrupted: the partial answer is kept; /regen to try again)", style="dim")
    return done


class Repl:
    """Reads lines (prompt_toolkit) and renders answers; every rule is the Assistant's."""

    def __init__(
        self,
        session: Assistant,
        settings: Settings,
        markdown: bool,
        tty_in: Any = None,
        pt_input: Any = None,
        pt_output: Any = None,
    ) -> None:
        """``tty_in``: the terminal to read when stdin was piped; ``pt_input``/``pt_output``:
        prompt_toolkit's input and output, for embedding and tests."""
        self.session = session
        self.settings = settings
        self.markdown = markdown
        self.tty_in = tty_in
        self.pt_input, self.pt_output = pt_input, pt_output
        self.docs: Any = None  # retrieval.DocsSearch while answering from an index
        self.last_docs: str | None = None
        self.top_k = 5

    def _prompt_session(self):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings
        from prompt_toolkit.keys import Keys

        history: Any = InMemoryHistory()
        if self.settings.history:
            from localassist.conversation.input_history import history_path
            from localassist.files import create_private_file, private_dir

            log = self.session.log
            if log is not None and log.enabled:
                # what the user typed: 0600 in a 0700 folder, before prompt_toolkit appends to it
                path = create_private_file(history_path(private_dir(self.settings.paths.data_dir)))
                history = FileHistory(str(path))
            else:  # a chat kept out of the log adds nothing to the file: earlier lines, read only

                class ReadOnlyHistory(FileHistory):
                    def store_string(self, string: str) -> None:
                        pass

                history = ReadOnlyHistory(str(history_path(self.settings.paths.data_dir)))
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

        @bindings.add(Keys.Vt100MouseEvent)
        def _typed_escape_sequence(event) -> None:
            # Mouse reporting is never turned on, so no terminal sends these: it is an escape
            # sequence typed or pasted without bracketed paste ("\x1b[31m"), which
            # prompt_toolkit's mouse handler cannot parse. It is text, kept as typed.
            event.current_buffer.insert_text(event.data)

        kwargs: dict[str, Any] = {"input": self.pt_input, "output": self.pt_output}
        if self.tty_in is not None and self.pt_input is None:
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

    def _terminal_fd(self) -> int | None:
        """The terminal the prompt reads; None for an input given by an embedder or a test."""
        if self.pt_input is not None:
            return None
        from localassist.cli.env import current

        stream = self.tty_in or current().stdin
        if stream is None:  # stdin closed
            return None
        try:
            return stream.fileno()
        except (AttributeError, OSError, ValueError):
            return None

    @staticmethod
    def _give_back_keys(prompt) -> None:
        """Keys typed ahead of a yes/no question (see cli/typeahead.py) go to this prompt."""
        from localassist.cli import typeahead

        text = typeahead.take()
        if text:
            from prompt_toolkit.input.typeahead import store_typeahead
            from prompt_toolkit.input.vt100_parser import Vt100Parser

            keys: list = []
            parser = Vt100Parser(keys.append)
            parser.feed(text)
            parser.flush()
            store_typeahead(prompt.app.input, keys)

    def _toolbar(self) -> str:
        s = self.session
        return f" {s.backend.model_name} · {_k(s.used_tokens)}/{_k(s.backend.n_ctx)} tok · memory {s.memory} · /help "

    # --- answering from a folder index (chat --docs, /docs)

    def use_docs(self, arg: str) -> None:
        from localassist.rag import SYSTEM_PROMPT
        from localassist.retrieval import DocsSearch

        if arg in ("", "off"):
            if self.docs is not None:
                self.docs.close()
            self.docs = None
            self.session.set_rules(None)
            say("documents off" if arg else "usage: /docs NAME | on | off", style="dim")
            return
        name = self.last_docs if arg == "on" else arg
        if not name:
            say("no index yet: /docs NAME (`localassist index list`)")
            return
        from localassist.cli.session import spinner

        docs = DocsSearch(self.settings, name, loading=spinner)
        if self.docs is not None:
            self.docs.close()
        self.docs, self.last_docs = docs, name
        self.session.set_rules(SYSTEM_PROMPT)
        say(f"answering from index {name} ({docs.info.files} files, {docs.info.chunks} chunks)", style="dim")

    def _retrieve(self, question: str):
        hits, notices, found = self.docs.search(question, k=self.top_k)
        for notice in notices:
            say(notice, style="dim")
        if not found:
            from localassist.rag import NOT_FOUND

            say(f"{NOT_FOUND} (nothing in {self.docs.name} is relevant enough; no model was asked)")
            return None
        return hits

    @staticmethod
    def _wrapped(question: str, hits) -> str:
        from localassist.rag import user_prompt

        return user_prompt(question, hits)

    def _cite(self, hits, done) -> None:
        from localassist.rag import check_citations, sources_footer

        check = check_citations(done.text, len(hits))
        if check.invalid:
            say(f"(cites {', '.join(f'[{n}]' for n in check.invalid)}: not among the sources 1..{len(hits)})")
        say("Sources: " + sources_footer(hits, check.cited or None), style="dim")

    def ask(self, text: str) -> None:
        if self.docs is None:
            answer(self.session, self.session.send(text), self.markdown)
            return
        hits = self._retrieve(text)
        if hits is not None:
            turn = self.session.send(text, wrapped=self._wrapped(text, hits))
            self._cite(hits, answer(self.session, turn, self.markdown))

    def run(self) -> None:
        from localassist.cli import typeahead

        prompt = self._prompt_session()
        say(f"{self.session.backend.model_name}: /help for commands, Ctrl-D to leave", style="dim")
        with typeahead.held(self._terminal_fd()):
            self._loop(prompt)

    def _loop(self, prompt) -> None:
        from rich.text import Text

        typed, failures = "", 0  # the line as it stood when the input layer failed: given back
        while True:
            self._give_back_keys(prompt)
            try:
                text = prompt.prompt(">>> ", default=typed, set_exception_handler=False, pre_run=_failures_end(prompt))
            except KeyboardInterrupt:
                typed = ""
                continue  # Ctrl-C on the prompt clears the line
            except EOFError:
                return
            except Exception as exc:  # prompt_toolkit failed on some input: the chat goes on, the line is kept
                failures += 1
                if debug_enabled() or failures > 3:  # failing on every fresh prompt: a hang otherwise
                    raise
                typed = prompt.default_buffer.text
                err_console().print(
                    Text.assemble(("input error: ", "red"), visible(f"{type(exc).__name__}: {exc}")),
                    Text(" (the conversation and the line are kept)", style="dim"),
                )
                continue
            typed, failures = "", 0
            text = as_sent(text)
            if not text:
                continue
            try:
                if text.startswith("/"):
                    if self.command(text) is False:
                        return
                else:
                    self.ask(text)
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
        """Run one slash command; False means leave the chat."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        command = BY_NAME.get(name)
        if command is None:
            say(f"unknown command {name}; /help lists them")
            return None
        try:
            if command.usage and not arg:
                raise MissingArgument
            return command.run(self, arg)
        except MissingArgument:
            say(f"usage: {command.usage}")
            return None

    # --- the slash commands, one method each; COMMANDS below names them

    def _help(self, arg: str) -> None:
        from rich.text import Text

        for command in COMMANDS:
            err_console().print(Text.assemble(("  " + command.name.ljust(8), "bold"), " ", command.help_line))
        say(
            '  Enter sends · Esc-Enter or Alt-Enter: new line · """ starts/ends a block · '
            "Ctrl-R searches history · Ctrl-C stops an answer · Ctrl-D leaves",
            style="dim",
        )

    def _set(self, arg: str) -> None:
        key, _, value = arg.partition(" ")
        if not value.strip():
            raise MissingArgument
        say(f"{key} = {self.session.set(key, value.strip())}", style="dim")

    def _show(self, arg: str) -> None:
        for key, value in self.session.show().items():
            say(f"  {key:<15} {value}")

    def _system(self, arg: str) -> None:
        self.session.set_system(arg)
        say(f"system prompt {'set' if arg else 'removed'}", style="dim")

    def _clear(self, arg: str) -> None:
        self.session.clear()
        say("conversation cleared (settings kept)", style="dim")

    def _regen(self, arg: str) -> None:
        s = self.session
        if self.docs is None:
            answer(s, s.regen(), self.markdown)
            return
        question = s.last_question().content
        hits = self._retrieve(question)
        if hits is not None:
            self._cite(hits, answer(s, s.regen(self._wrapped(question, hits)), self.markdown))

    def _undo(self, arg: str) -> None:
        question = self.session.undo()
        say(f"removed: {question.content[:60]!r}", style="dim")

    def _save(self, arg: str) -> None:
        self.session.save(Path(arg).expanduser())
        say(f"saved {arg}", style="dim")

    def _load(self, arg: str) -> None:
        count = self.session.load(Path(arg).expanduser())
        say(f"loaded {count} messages from {arg}", style="dim")

    def _model(self, arg: str) -> None:
        from localassist.cli.session import load_model

        s = self.session
        if not arg:
            say(f"model: {s.backend.model_name} (usage: /model NAME)")
            return
        # KV snapshots only for a logged chat: `logs rm` is what deletes them
        s.switch_backend(load_model(self.settings, arg, snapshots=s.log is not None and s.log.enabled))
        say(f"now chatting with {s.backend.model_name}; the conversation is kept", style="dim")

    def _stats(self, arg: str) -> None:
        from localassist.cli.session import stats_line

        say(stats_line(self.session.last) if self.session.last else "no answer yet")

    def _tools(self, arg: str) -> None:
        from localassist.cli.tooling import describe_tools

        for line in describe_tools(self.session.agent):
            say(line)

    def _template(self, arg: str) -> None:
        tname, *pairs = arg.split()
        if tname == "off":
            self.session.use_template(None)
            say("template off", style="dim")
            return
        from localassist.cli.options import parse_params
        from localassist.conversation.prompt_templates import load_template

        self.session.use_template(load_template(tname, self.settings.paths.config_dir), parse_params(pairs))
        say(f"template {tname}: your messages now go through it", style="dim")

    def _file(self, arg: str) -> None:
        from localassist.cli.summarize import attach_file

        say(attach_file(self.session, self.settings, str(Path(arg).expanduser())), style="dim")

    def _docs(self, arg: str) -> None:
        self.use_docs(arg)  # no argument: documents off, and the usage line

    def _exit(self, arg: str) -> bool:
        return False


class MissingArgument(Exception):
    """A command run without the argument it needs: the REPL shows the command's usage line."""


def _complete_set(settings: Settings, rest: str, event: Any) -> Iterator[Any]:
    """/set: the parameter names, then for memory its policies."""
    from prompt_toolkit.completion import Completion

    from localassist.assistant import SETTABLE

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


def _complete_model(settings: Settings, rest: str, event: Any) -> Iterator[Any]:
    from prompt_toolkit.completion import Completion

    for name in model_names(settings):
        if name.startswith(rest):
            yield Completion(name, start_position=-len(rest))


def _complete_path(settings: Settings, rest: str, event: Any) -> Iterator[Any]:
    from prompt_toolkit.completion import PathCompleter
    from prompt_toolkit.document import Document

    yield from PathCompleter(expanduser=True).get_completions(Document(rest, len(rest)), event)


@dataclass(frozen=True)
class Command:
    """One slash command: what dispatch, /help and Tab completion all read."""

    name: str
    about: str
    run: Callable[[Repl, str], bool | None]
    args: str = ""  # the argument, as /help shows it
    usage: str = ""  # shown instead of running when the argument is missing
    aliases: tuple[str, ...] = ()
    complete: Callable[[Any, str, Any], Iterator[Any]] | None = None  # the argument's completions

    @property
    def help_line(self) -> str:
        return f"{self.name} {self.args}: {self.about}" if self.args else self.about


COMMANDS: tuple[Command, ...] = (
    Command("/help", "list these commands", Repl._help, aliases=("/?",)),
    Command(
        "/set",
        "temperature, top_k, top_p, min_p, repeat_penalty, max_tokens, seed, system, memory",
        Repl._set,
        args="PARAM VALUE",
        usage="/set PARAM VALUE, e.g. /set temperature 0.2 (/show lists the current values)",
        complete=_complete_set,
    ),
    Command("/show", "model, parameters, memory policy, context use", Repl._show),
    Command("/system", "set the system prompt (no text: remove it)", Repl._system, args="TEXT"),
    Command("/clear", "forget the conversation, keep the settings", Repl._clear),
    Command("/regen", "drop the last answer and generate it again", Repl._regen),
    Command("/undo", "drop the last exchange", Repl._undo),
    Command(
        "/save",
        "the transcript, as Markdown (.md) or JSON (anything else)",
        Repl._save,
        args="FILE",
        usage="/save FILE.md or /save FILE.json",
        complete=_complete_path,
    ),
    Command(
        "/load",
        "restore a transcript saved as JSON",
        Repl._load,
        args="FILE",
        usage="/load FILE.json",
        complete=_complete_path,
    ),
    Command("/model", "switch model, keep the conversation", Repl._model, args="NAME", complete=_complete_model),
    Command("/stats", "last answer: prompt tokens, cached tokens, speed, time to first token", Repl._stats),
    Command("/tools", "the tools the model may call (chat --tools), and the calls behind the last answer", Repl._tools),
    Command(
        "/template",
        "send your messages through a prompt template (off: none)",
        Repl._template,
        args="NAME [KEY=VALUE ...]",
        usage="/template NAME [KEY=VALUE ...] (`localassist templates list`); /template off",
    ),
    Command(
        "/file",
        "attach a document (txt, md, pdf, csv, html, json); summarized if it does not fit",
        Repl._file,
        args="PATH",
        usage="/file PATH (txt, md, pdf, csv, html, json)",
        complete=_complete_path,
    ),
    Command("/docs", "answer from a folder index (`localassist index list`)", Repl._docs, args="NAME | on | off"),
    Command("/exit", "leave (Ctrl-D does the same)", Repl._exit, aliases=("/quit", "/bye")),
)
BY_NAME = {name: command for command in COMMANDS for name in (command.name, *command.aliases)}


def _failures_end(prompt):
    """A key binding that raises inside prompt_toolkit's event loop would be printed there as
    a traceback, waiting for Enter: it ends the prompt instead, with that exception, which
    the REPL reports in one line before it asks again with the line as it stood."""

    def install() -> None:
        import asyncio

        def failed(loop, context) -> None:
            exc = context.get("exception") or RuntimeError(context.get("message", "input failed"))
            if prompt.app.is_running and not prompt.app.is_done:
                prompt.app.exit(exception=exc)

        asyncio.get_running_loop().set_exception_handler(failed)

    return install


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
    """Tab completion: command names, then each command's own argument (COMMANDS)."""
    from prompt_toolkit.completion import Completer, Completion

    class _Completer(Completer):
        def get_completions(self, document, complete_event):
            text = document.text_before_cursor
            if not text.startswith("/"):
                return
            if " " not in text:
                for command in COMMANDS:
                    if command.name.startswith(text):
                        yield Completion(command.name, start_position=-len(text))
                return
            name, _, rest = text.partition(" ")
            named = BY_NAME.get(name)
            if named is not None and named.complete is not None:
                yield from named.complete(settings, rest, complete_event)

    return _Completer()
