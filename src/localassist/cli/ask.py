"""`localassist ask`: one prompt in, one answer out, under the pipe contract."""

import json
from typing import Annotated

import typer

from localassist.cli import options, tooling

Prompt = Annotated[
    list[str] | None,
    typer.Argument(help="The instruction. Piped stdin becomes the input it works on.", show_default=False),
]


def ask(
    prompt: Prompt = None,
    model: options.Model = None,
    system: options.System = None,
    template: options.Template = None,
    param: options.Param = None,
    continue_: options.Continue = False,
    cid: options.Cid = None,
    no_log: options.NoLog = False,
    json_schema: options.JsonSchema = None,
    grammar: options.Grammar = None,
    raw: options.Raw = False,
    file: options.Files = None,
    docs: options.Docs = None,
    top_k_docs: options.DocsTopK = 5,
    sync: options.SyncDocs = False,
    tools: tooling.Tools = None,
    allow: tooling.Allow = None,
    max_steps: tooling.MaxSteps = 5,
    tool_timeout: tooling.ToolTimeout = 30.0,
    tool_choice: tooling.ToolChoice = "auto",
    yes_shell: tooling.YesShell = False,
    as_json: options.AsJson = False,
    stats: options.Stats = False,
    plain: options.Plain = False,
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
    """Answer one prompt. Stdout carries the answer and nothing else.

    \b
      localassist ask --raw -T 0 "The three primary colors are"
      git diff | localassist ask "Write a commit message for this diff" -T 0.2 -n 80
      localassist ask -c "And the second point?"
      localassist ask -t summarize -p points 5 < terms.txt
      localassist ask -t extract-invoice < invoice.txt
      localassist ask --docs notes "What did we decide about the Q3 budget?"
      localassist ask --tools calc,time "How many days until 2027-03-01, times 24?"
    """
    flags = options.setting_flags(locals())
    from localassist import pipeline
    from localassist.cli import session
    from localassist.conversation.prompt import decode_stdin
    from localassist.settings import load_settings

    if "-" in (file or ()):  # `-f -`: stdin is a document, its bytes go to the loader (a PDF is not text)
        piped, piped_data = None, session.read_stdin(bytes)
    else:
        piped, piped_data = session.read_stdin(decode_stdin), None
    question = pipeline.Question(
        instruction=" ".join(prompt or []),
        piped=piped,
        piped_data=piped_data,
        template=template,
        params=options.parse_params(param),
        json_schema=json_schema,
        grammar_file=grammar,
        raw=raw,
        conversation=cid if cid else ("" if continue_ else None),
        files=tuple(file or ()),
        docs=docs,
        top_k=top_k_docs,
        sync_docs=sync,
    )
    prepared = pipeline.prepare(load_settings(flags), question, loading=session.spinner)
    if prepared.retrieved is not None:
        session.notices(prepared.retrieved.notices)
        if not prepared.retrieved.found:
            session.not_found(as_json)
            return
    session.notices(w for d in prepared.documents for w in d.warnings)
    if verbose and prepared.schema is not None:
        from localassist.cli.console import note
        from localassist.engine.structured import schema_notes

        for line in schema_notes(prepared.schema):
            note(line)
    agent = tooling.build_agent(tools, allow, max_steps, tool_timeout, tool_choice, yes_shell)
    structured = prepared.schema is not None or prepared.grammar is not None
    if agent is not None and (structured or raw):
        from localassist.errors import UsageError

        raise UsageError("--tools cannot be combined with --raw, --json-schema, --grammar or a template's schema")
    helper = session.open_assistant(prepared.settings, verbose=verbose, log=not no_log, history=prepared.history)
    helper.agent = agent
    turn, notices = pipeline.start(helper, prepared)
    session.notices(notices)
    done = session.show_answer(helper, turn, markdown=not plain, quiet=as_json or structured)
    if as_json:
        result = done.as_dict()
        if agent is not None:
            from localassist.agent import AgentStream

            assert isinstance(turn.stream, AgentStream)  # an assistant with an agent answers through it
            result["tool_calls_run"] = [record.__dict__ for record in turn.stream.records]
        if prepared.schema is not None and not done.cancelled:
            from localassist.engine.structured import parse_json_answer

            result["data"] = parse_json_answer(done.text, done.finish_reason)
        if prepared.attached is not None:
            result["sources"] = [s.as_dict() for s in prepared.attached.sources]
            result["documents"] = prepared.attached.as_dict()
        if prepared.retrieved is not None:
            from localassist.rag import sources_json

            result["sources"] = sources_json(prepared.retrieved.hits)
        session.write_answer(json.dumps(result, ensure_ascii=False) + "\n")
    elif structured and not done.cancelled:
        from localassist.engine.structured import check_complete

        check_complete(done.text, done.finish_reason, prepared.schema is not None)
        session.write_answer(done.text + ("" if done.text.endswith("\n") else "\n"))
    if prepared.retrieved is not None:
        session.cite(prepared.retrieved.hits, done, as_json)
    if prepared.attached is not None:  # from the chunks' locators, never from the answer
        session.notices([prepared.attached.sources_line()])
    session.finish(helper, done, stats=stats or verbose, structured=structured)
