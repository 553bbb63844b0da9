"""Tool calls in the SQLite log: linked to their exchange, shown by `logs show`, gone with it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from localassist.agent import Agent, ToolRecord
from localassist.assistant import Assistant
from localassist.conversation.exchange_log import ExchangeLog
from localassist.conversation.log_store import (
    LOGGED_RESULT_CHARS,
    MIGRATIONS,
    LogStore,
    export_json,
    export_markdown,
)
from localassist.database import statements
from localassist.engine.types import Done, SamplingParams, Timings, Usage
from localassist.tools import ToolContext, resolve_tools
from scripted import ScriptedBackend

FIXTURES = Path(__file__).parent / "fixtures" / "tools"


def done(text: str) -> Done:
    return Done(text, "m", "stop", Usage(10, 0, 5), Timings(0.1, 0.01, 100.0, 50.0, 0.2))


def record(step: int, name: str, result: str, approval: str = "not needed", error: bool = False) -> ToolRecord:
    return ToolRecord(step, f"call_{step}_{name}", name, '{"expression": "6*7"}', approval, result, error, 0.25)


def test_tool_calls_are_logged_with_their_exchange_in_order(tmp_path):
    store = LogStore(tmp_path / "logs.db")
    calls = [record(1, "calc", "42"), record(2, "shell", "error: declined", "declined", True)]
    cid, exchange_id = store.log_exchange(None, "What is 6*7?", done("42."), {}, tool_calls=calls)
    (ex,) = store.conversation(cid).exchanges
    assert [
        (c.step, c.call_id, c.name, c.arguments, c.approval, c.result, c.is_error, c.seconds) for c in ex.tool_calls
    ] == [
        (1, "call_1_calc", "calc", '{"expression": "6*7"}', "not needed", "42", False, 0.25),
        (2, "call_2_shell", "shell", '{"expression": "6*7"}', "declined", "error: declined", True, 0.25),
    ]
    assert [r.tool_calls for r in store.recent()] == [ex.tool_calls]
    store.close()
    raw = sqlite3.connect(tmp_path / "logs.db")  # the rows themselves, read without LogStore
    assert raw.execute("SELECT exchange_id, name FROM tool_calls ORDER BY id").fetchall() == [
        (exchange_id, "calc"),
        (exchange_id, "shell"),
    ]
    raw.close()


def test_a_long_result_is_logged_cut_and_says_so(tmp_path):
    store = LogStore(tmp_path / "logs.db")
    long = "x" * (LOGGED_RESULT_CHARS + 500)
    cid, _ = store.log_exchange(None, "q", done("a"), {}, tool_calls=[record(1, "files", long)])
    (call,) = store.conversation(cid).exchanges[0].tool_calls
    assert call.result == "x" * LOGGED_RESULT_CHARS + f"\n[logged: the first 4,000 of {len(long):,} characters]"
    store.close()


def test_logs_show_displays_the_calls_between_question_and_answer(tmp_path):
    store = LogStore(tmp_path / "logs.db")
    cid, _ = store.log_exchange(None, "What is 6*7?", done("42."), {}, tool_calls=[record(1, "calc", "42")])
    conv = store.conversation(cid)
    markdown = export_markdown(conv)
    question, answer = markdown.index("What is 6*7?"), markdown.index("42.")
    call = markdown.index('**Tool call:** `calc` {"expression": "6*7"} (step 1, approval: not needed, 0.25 s)')
    assert question < call < answer
    assert "\n    42\n" in markdown
    data = json.loads(export_json(conv))
    assert data["exchanges"][0]["tool_calls"][0]["result"] == "42"
    store.close()


def test_deleting_a_conversation_deletes_its_tool_calls(tmp_path):
    store = LogStore(tmp_path / "logs.db")
    cid, _ = store.log_exchange(None, "q", done("a"), {}, tool_calls=[record(1, "calc", "a private result")])
    store.delete(cid)
    store.close()
    raw = sqlite3.connect(tmp_path / "logs.db")
    assert raw.execute("SELECT count(*) FROM tool_calls").fetchone() == (0,)
    raw.close()
    assert b"a private result" not in (tmp_path / "logs.db").read_bytes()


def test_a_log_from_before_tools_gains_the_table_and_keeps_its_exchanges(tmp_path):
    path = tmp_path / "logs.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
    for name, sql in MIGRATIONS[:3]:
        for statement in statements(sql):
            db.execute(statement)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (name,))
    db.execute("INSERT INTO conversations VALUES ('abc123', 'Hi', 'm', NULL, 1, 1)")
    db.execute(
        "INSERT INTO exchanges (conversation_id, created, model, prompt, response, finish_reason, params) "
        "VALUES ('abc123', 1, 'm', 'Hi', 'Hello', 'stop', '{}')"
    )
    db.close()
    store = LogStore(path)
    assert "004_tool_calls" in store.migrations()
    (ex,) = store.conversation("abc").exchanges
    assert (ex.prompt, ex.tool_calls) == ("Hi", ())
    store.close()


def test_the_assistant_logs_the_calls_behind_an_answer(tmp_path):
    backend = ScriptedBackend([[("calc", {"expression": "6*7"})], "It is 42."])
    assistant = Assistant(backend, SamplingParams(temperature=0), log=ExchangeLog(tmp_path))
    assistant.agent = Agent(resolve_tools("calc"), ToolContext())
    turn = assistant.send("What is 6*7?")
    list(turn.stream)
    finished = assistant.finish(turn)
    assert finished.text == "It is 42."
    assert [m.role for m in assistant.conversation.turns] == ["user", "assistant"]  # the calls are in the log only
    store = LogStore(tmp_path / "logs.db")
    (ex,) = store.conversation(assistant.log.conversation_id).exchanges
    assert (ex.prompt, ex.response) == ("What is 6*7?", "It is 42.")
    assert [(c.name, c.arguments, c.result) for c in ex.tool_calls] == [("calc", '{"expression": "6*7"}', "42")]
    store.close()
