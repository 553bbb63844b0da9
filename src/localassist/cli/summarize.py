"""`localassist summarize`: a summary of documents of any length, never clipped.

The work is ``documents/summarize.py``; this module loads the files, draws the progress
bar (stderr, terminals only), streams the summary to stdout and reports the coverage.
"""

import json
from time import perf_counter
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import typer

from localassist.cli import options
from localassist.cli.console import err_console, exit_broken_pipe, stderr_is_terminal, stdout_is_terminal, warn
from localassist.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from localassist.assistant import Assistant
    from localassist.documents import Document
    from localassist.documents.summarize import Progress
    from localassist.documents.summary_cache import SummaryCache
    from localassist.settings import Settings

Files = Annotated[list[str], typer.Argument(help="Files to summarize (.txt .md .pdf .csv .html .json); - is stdin.")]
Points = Annotated[int, typer.Option("--points", help="Bullet points (or sentences) in the summary, 1-100.")]
Style = Annotated[str, typer.Option("--style", help="bullets or paragraph.")]
Strategy = Annotated[
    str,
    typer.Option(
        "--strategy", help="auto (stuff when it fits one call, else map-reduce), stuff, map-reduce or refine."
    ),
]
AsJson = Annotated[
    bool, typer.Option("--json", help="One JSON object: summary, sections (notes per chunk), coverage, usage.")
]


def summarize(
    files: Files,
    points: Points = 5,
    style: Style = "bullets",
    strategy: Strategy = "auto",
    as_json: AsJson = False,
    stats: options.Stats = False,
    plain: options.Plain = False,
    verbose: options.Verbose = False,
    base_url: options.BaseUrl = None,
    api_key_env: options.ApiKeyEnv = None,
    model: options.Model = None,
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
    """Summarize documents of any length: every page, row and line goes in, nothing is clipped.

    The summary streams to stdout; stderr says what was covered ("covered 100%: 212
    chunks, 48 pages"). Notes on each chunk are cached, so a second run (or one with
    another --points or --style) skips that work, and Ctrl-C then a re-run resumes.

    \b
      localassist summarize report.pdf
      localassist summarize notes/*.md --points 7 --style bullets
      localassist summarize sales.csv
      git log -p | localassist summarize -
      localassist summarize big.txt --json | jq .sections
    """
    flags = options.setting_flags(locals())
    started = perf_counter()
    from localassist.cli import session
    from localassist.documents.summarize import Summarizer, SummaryOptions, SummaryTemplates
    from localassist.engine.types import SamplingParams
    from localassist.settings import load_settings

    summary_options = SummaryOptions(points=points, style=style, strategy=strategy)
    settings = load_settings(flags)
    templates = SummaryTemplates.load(settings.paths.config_dir)
    documents = load_documents(files)  # every file error before the model loads
    read_s = perf_counter() - started
    backend = session.load_model(settings, settings.model, verbose)
    cache = open_cache(settings)
    bar = ProgressBar() if stderr_is_terminal() else None
    summarizer = Summarizer(
        backend,
        templates,
        SamplingParams.from_settings(settings),
        explicit=frozenset(k for k, source in settings.sources.items() if source == "flag"),
        options=summary_options,
        cache=cache,
        on_progress=bar,
    )
    try:
        planned = perf_counter()
        plan = summarizer.plan(documents)
        plan_s = perf_counter() - planned
        try:
            run = summarizer.start(plan)
        except KeyboardInterrupt:
            if bar is not None:
                bar.stop()
            warn(plan.ledger.line())
            done_now = len(plan.ledger.summarized)
            chunks = f"{done_now} chunk{'s' * (done_now != 1)}"
            warn(f"interrupted: the notes on {chunks} are cached; run the same command again to resume")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        finally:
            if bar is not None:
                bar.stop()
        for line in summarizer.warnings:
            warn(line)
        done = _show(run, plan.facts, markdown=not plain, quiet=as_json)
    finally:
        backend.close()
        if cache is not None:
            cache.close()
    if as_json:
        result: dict[str, Any] = {
            "summary": done.text,
            "model": done.model,
            "strategy": plan.strategy,
            "finish_reason": done.finish_reason,
            "facts": plan.facts,
            "sections": [s.as_dict() for s in plan.sections],
            "coverage": plan.ledger.as_dict(),
            "usage": run.usage.as_dict(),
            "timings": {  # seconds: reading the files, loading the model, chunking, inside the model
                "read_s": round(read_s, 3),
                "load_s": round(backend.load_seconds, 3),
                "chunk_s": round(plan_s, 3),
                "engine_s": round(run.usage.engine_s, 3),
                "wall_s": round(perf_counter() - started, 3),
            },
            "warnings": [w for d in documents for w in d.warnings] + summarizer.warnings,
        }
        session.write_answer(json.dumps(result, ensure_ascii=False) + "\n")
    warn(plan.ledger.line())
    if stats or verbose:
        warn(stats_line(plan.strategy, run.usage, perf_counter() - started))
    if done.cancelled:
        warn("interrupted")
        raise typer.Exit(ExitCode.INTERRUPTED)


def load_documents(files: list[str]) -> "list[Document]":
    """Load each file (``-``: stdin) and show its warnings; the first error stops it all."""
    from localassist.cli.env import current
    from localassist.documents import STDIN, load, load_bytes

    if files.count(STDIN) > 1:
        raise UsageError("- (stdin) can be given only once")
    documents = []
    for name in files:
        if name == STDIN:
            data = current().read_stdin()
            if data is None:
                raise UsageError("- reads a document from stdin, but stdin is a terminal: pipe one in")
            document = load_bytes(data, STDIN)
        else:
            document = load(name)
        for line in document.warnings:
            warn(line)
        documents.append(document)
    return documents


def open_cache(settings: "Settings", for_conversation: str | None = None) -> "SummaryCache | None":
    """The summary notes (None, with a warning, when they cannot be opened).
    ``for_conversation``: the sha256 of a document summarized for a conversation (chat's
    ``/file``), recorded so that ``logs rm`` deletes its notes with the conversation."""
    from localassist.documents.summary_cache import CacheError, SummaryCache

    try:
        cache = SummaryCache.open(settings.paths.cache_dir)
    except CacheError as error:
        warn(f"{error}; summarizing without it")
        return None
    if for_conversation is not None:
        try:
            cache.mark_attached(for_conversation)
        except CacheError as error:  # unmarked notes would outlive the conversation: none then
            cache.close()
            warn(f"{error}; summarizing without it")
            return None
    return cache


def _show(run: Any, facts: str | None, *, markdown: bool, quiet: bool) -> Any:
    """Stream the final summary (after the CSV facts) to stdout; Ctrl-C keeps what was
    shown, a closed pipe stops quietly (exit 141)."""
    from localassist.cli.env import current
    from localassist.cli.render import make_writer

    writer = None if quiet else make_writer(markdown and stdout_is_terminal(), current().stdout)
    try:
        if writer is not None and facts:
            writer.write(facts + "\n\n")
        try:
            for piece in run.stream.text():
                if writer is not None:
                    writer.write(piece)
        except KeyboardInterrupt:
            run.stream.cancel()
        if writer is not None:
            writer.close()
    except BrokenPipeError:
        run.stream.cancel()
        run.finish()
        exit_broken_pipe()
    return run.finish()


def stats_line(strategy: str, usage: Any, wall_s: float) -> str:
    parts = [f"strategy {strategy}", f"{usage.calls} model call" + ("" if usage.calls == 1 else "s")]
    if usage.map_calls or usage.map_cached:
        parts.append(f"map {usage.map_calls} ({usage.map_cached} cached)")
    if usage.reduce_calls:
        parts.append(f"reduce {usage.reduce_calls} in {usage.reduce_levels} level{'s' * (usage.reduce_levels > 1)}")
    if usage.refine_calls or usage.refine_cached:
        parts.append(f"refine {usage.refine_calls} ({usage.refine_cached} cached)")
    parts += [
        f"prompt {usage.prompt_tokens:,} tok",
        f"generated {usage.completion_tokens:,} tok",
        f"in the model {usage.engine_s:.1f} s of {wall_s:.1f} s",
    ]
    return " | ".join(parts)


class ProgressBar:
    """chunk i/N, tokens/s and ETA on stderr; only made when stderr is a terminal."""

    _LABELS: ClassVar[dict[str, str]] = {"map": "chunk", "refine": "chunk", "reduce": "reduce"}

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description} {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err_console(),
            transient=True,
        )
        self.tasks: dict[str, Any] = {}
        self.started = perf_counter()
        self.running = False

    def __call__(self, progress: "Progress") -> None:
        if progress.stage not in self._LABELS:  # the final summary streams to stdout: the bar goes first
            self.stop()
            return
        if not self.running:
            self.progress.start()
            self.running = True
        elapsed = perf_counter() - self.started
        rate = f"{progress.tokens / elapsed:.1f} tok/s" if elapsed > 0 and progress.tokens else ""
        task = self.tasks.get(progress.stage)
        if task is None:
            task = self.tasks[progress.stage] = self.progress.add_task(
                self._LABELS[progress.stage], total=progress.total, rate=rate
            )
        self.progress.update(task, completed=progress.done, total=progress.total, rate=rate)

    def stop(self) -> None:
        if self.running:
            self.progress.stop()
            self.running = False


def attach_file(assistant: "Assistant", settings: "Settings", path: str) -> str:
    """Chat's ``/file PATH``: pin the document to the conversation, whole if it fits what
    is left of the context, else a summary of it that does; returns the line to show.

    The summary's notes are cached only for a logged conversation (and marked as made for
    one, so ``logs rm`` can delete them): a chat kept out of the log (``--no-log``, ``logs
    off``) leaves no file holding what the document said."""
    from localassist.attachments import pin
    from localassist.documents import load
    from localassist.documents.questions import name

    document = load(path)
    for line in document.warnings:
        warn(line)
    logged = assistant.log is not None and assistant.log.enabled

    def summarize_to_fit(doc: "Document", max_tokens: int) -> tuple[str, str]:
        from localassist.documents.summarize import Summarizer, SummaryOptions, SummaryTemplates

        cache = open_cache(settings, for_conversation=doc.sha256) if logged else None
        bar = ProgressBar() if stderr_is_terminal() else None
        try:
            summarizer = Summarizer(
                assistant.backend,
                SummaryTemplates.load(settings.paths.config_dir),
                assistant.params,
                explicit=frozenset(assistant.explicit),
                options=SummaryOptions(max_tokens=max_tokens),
                cache=cache,
                on_progress=bar,
            )
            plan = summarizer.plan([doc])
            run = summarizer.start(plan)
        finally:
            if bar is not None:
                bar.stop()
            if cache is not None:
                cache.close()
        done = run.finish()
        if done.cancelled:
            raise KeyboardInterrupt
        return done.text.strip(), plan.ledger.line()

    before = assistant.used_tokens
    notice = pin(assistant, document, summarize_to_fit)
    if notice:
        return notice
    added = assistant.used_tokens - before
    return f"attached {name(document.path)} ({added:,} tokens; {assistant.used_tokens:,}/{assistant.n_ctx:,} in use)"
