"""`localassist chat`: the interactive REPL (see cli/repl.py) around one Assistant."""

from typing import Annotated

import typer

from localassist.cli import options, tooling
from localassist.errors import UsageError

Memory = Annotated[str | None, typer.Option("--memory", help="buffer, window:K or summary [default: buffer].")]
NoHistory = Annotated[bool, typer.Option("--no-history", help="Do not read or write the prompt history.")]
Resume = Annotated[bool, typer.Option("--resume", "-r", help="Reopen the last conversation.")]
NoLog = Annotated[
    bool,
    typer.Option("--no-log", help="Keep this chat's text off disk: no log, no KV snapshot, prompt history read only."),
]


def chat(
    model: options.Model = None,
    system: options.System = None,
    memory: Memory = None,
    no_history: NoHistory = False,
    resume: Resume = False,
    cid: Annotated[str | None, typer.Option("--cid", help="Reopen the conversation with this id.")] = None,
    no_log: NoLog = False,
    plain: Annotated[bool, typer.Option("--plain", help="No markdown rendering.")] = False,
    docs: options.Docs = None,
    tools: tooling.Tools = None,
    allow: tooling.Allow = None,
    max_steps: tooling.MaxSteps = 5,
    tool_timeout: tooling.ToolTimeout = 30.0,
    tool_choice: tooling.ToolChoice = "auto",
    yes_shell: tooling.YesShell = False,
    verbose: options.Verbose = False,
    base_url: options.BaseUrl = None,
    api_key_env: options.ApiKeyEnv = None,
    gpu_layers: options.GpuLayers = None,
    ctx: options.Ctx = None,
    threads: options.Threads = None,
    batch: options.Batch = None,
    flash_attn: options.FlashAttn = None,
    repack: options.Repack = None,
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
      localassist chat -m starter-chat
      localassist chat -m qwen2.5:1.5b --system "You are terse." --temperature 0.3
      cat notes.md | localassist chat      # the notes become context, then you chat
      localassist chat --resume            # reopen the last conversation (or --cid ID)
      localassist chat --docs notes        # every turn answers from the index `notes`
      localassist chat --tools calc,time   # the model may call tools; each call is shown
    """
    flags = options.setting_flags(locals())
    if no_history:
        flags["history"] = False
    from localassist.cli import session
    from localassist.cli.console import stdout_is_terminal
    from localassist.cli.repl import Repl, answer, say
    from localassist.conversation.memory import MemoryPolicy
    from localassist.conversation.prompt import decode_stdin
    from localassist.settings import load_settings

    settings = load_settings(flags)
    MemoryPolicy.parse(settings.memory)  # a bad --memory fails before the model loads
    agent = tooling.build_agent(tools, allow, max_steps, tool_timeout, tool_choice, yes_shell)
    piped = session.read_stdin(decode_stdin)
    tty_in = _open_tty() if piped is not None else None
    history = None
    if resume or cid:
        from dataclasses import replace

        from localassist.conversation.exchange_log import load_conversation

        history = load_conversation(settings.paths.data_dir, cid)
        if settings.sources.get("system") != "flag" and history.system:
            settings = replace(settings, system=history.system)
    markdown = stdout_is_terminal() and not plain

    if piped is not None and tty_in is None:
        # No terminal at all: the piped text is the question; answer once and leave.
        if not piped.strip():
            raise UsageError("nothing to answer: stdin was empty and there is no terminal to chat on")
        helper = session.open_assistant(settings, verbose=verbose, log=not no_log)
        helper.agent = agent
        answer(helper, helper.send(piped), markdown)
        helper.backend.close()
        return

    helper = session.open_assistant(
        settings, verbose=verbose, log=not no_log, history=history, context=piped, snapshots=True
    )
    helper.agent = agent
    if history:
        # its documents first, as they were; then the memory policy decides what of a long
        # conversation goes to the model, as on every turn
        left_out = helper.restore_attachments(history.attachments)
        notice = helper.restore(history.messages())
        names = [a.name for a in helper.attachments if a in history.attachments]
        attached = f"; attached again: {', '.join(names)}" if names else ""
        say(f"resumed {history.id}: {len(history.shown())} exchanges{attached}", style="dim")
        _show_last(history)
        for line in left_out:
            say(line)
        if notice:
            say(notice, style="dim")
    if piped:
        say(f"context: {len(piped):,} characters from stdin, {helper.used_tokens:,} tokens", style="dim")
    repl = Repl(helper, settings, markdown, tty_in)
    try:
        if docs:
            repl.use_docs(docs)
        repl.run()
    finally:
        if repl.docs is not None:
            repl.docs.close()
        helper.backend.close()
        if tty_in is not None:
            tty_in.close()


LAST_LINES = 12


def _show_last(history) -> None:
    """The last exchange, so a resumed chat does not start blind: the message as typed at
    the prompt, the answer's last lines (on stderr: stdout keeps only new answers)."""
    from localassist.cli.repl import say

    shown = history.shown()
    if not shown:
        return
    last = shown[-1]
    say(">>> " + "\n... ".join(last.prompt.split("\n")))
    lines = last.response.rstrip("\n").split("\n")
    if len(lines) > LAST_LINES:
        say(f"({len(lines) - LAST_LINES} lines above; `localassist logs show {history.id}` shows it all)", style="dim")
    say("\n".join(lines[-LAST_LINES:]))


def _open_tty():
    try:
        return open("/dev/tty")
    except OSError:
        return None
