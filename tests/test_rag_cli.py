"""`localassist index ...`, `ask --docs` and `chat --docs` end to end: real files, the real
starter models (a stand-in embedder, and starter-chat answering), no network."""

from __future__ import annotations

import json
import os
import shutil

import pytest

pytestmark = pytest.mark.model

BUDGET = "The offsite budget was approved at 14,500 euros, covering travel and two nights of lodging."
LEAVE = "Parental leave is sixteen weeks at full pay, and it can be split into two blocks."


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "notes"
    (root / "meetings").mkdir(parents=True)
    (root / "meetings" / "2025-07-03.md").write_text(f"# Offsite\n\n## Budget\n\n{BUDGET}\n", encoding="utf-8")
    (root / "handbook.txt").write_text(f"Handbook\n\n{LEAVE}\n", encoding="utf-8")
    return root


def index_add(cli, folder, *extra, env=None):
    result = cli("index", "add", str(folder), "--name", "notes", *extra, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_index_add_list_search_rm_bm25(cli, folder):
    added = index_add(cli, folder, "--no-embed")
    assert "indexed 2 files" in added.stderr and "BM25" in added.stderr
    listed = json.loads(cli("index", "list", "--json").stdout)
    assert [(i["name"], i["files"], i["embedding_model"]) for i in listed] == [("notes", 2, None)]
    found = json.loads(cli("index", "search", "notes", "offsite budget euros", "--json").stdout)
    assert found["found"] and found["hits"][0]["path"] == "meetings/2025-07-03.md"
    # line range of the fact, counted independently from the file
    lines = (folder / "meetings" / "2025-07-03.md").read_text().splitlines()
    fact_line = lines.index(BUDGET) + 1
    hit = found["hits"][0]
    assert hit["line_start"] <= fact_line <= hit["line_end"]
    missing = cli("index", "search", "notes", "zzqx wibble", "--json")
    assert json.loads(missing.stdout)["found"] is False
    assert cli("index", "rm", "notes").returncode == 0
    gone = cli("index", "search", "notes", "budget")
    assert gone.returncode == 3 and "notes" in gone.stderr


def test_ask_docs_answers_with_sources_on_stderr_and_clean_stdout(cli, folder, model_env):
    index_add(cli, folder, "--no-embed")
    env = {"LOCALASSIST_MODEL": "starter-chat"}
    result = cli("ask", "--docs", "notes", "-T", "0", "-n", "40", "What was the offsite budget?", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and "Sources:" not in result.stdout
    assert "Sources: " in result.stderr and "meetings/2025-07-03.md L" in result.stderr
    as_json = json.loads(
        cli("ask", "--docs", "notes", "-T", "0", "-n", "8", "--json", "offsite budget", env=env).stdout
    )
    assert as_json["sources"][0]["path"] == "meetings/2025-07-03.md"
    assert as_json["sources"][0]["n"] == 1


def test_ask_docs_not_found_does_not_guess(cli, folder):
    index_add(cli, folder, "--no-embed")
    result = cli("ask", "--docs", "notes", "What is the airspeed of an unladen swallow?")
    assert result.returncode == 0
    assert result.stdout.strip() == "The indexed documents do not say."
    assert "no model was asked" in result.stderr


def test_stale_index_is_reported_and_sync_touches_only_changed_files(cli, folder):
    index_add(cli, folder, "--no-embed")
    (folder / "handbook.txt").write_text(f"Handbook\n\n{LEAVE}\nThe canteen opens at eight.\n", encoding="utf-8")
    (folder / "meetings" / "2025-07-03.md").unlink()
    stale = cli("index", "search", "notes", "canteen")
    assert stale.returncode == 0
    ask = cli("ask", "--docs", "notes", "When does the canteen open?", "-m", "starter-chat", "-n", "4")
    assert "2 files changed since the last sync" in ask.stderr
    synced = cli("index", "sync", "notes")
    assert "0 new, 1 changed, 1 removed" in synced.stderr
    found = json.loads(cli("index", "search", "notes", "offsite budget euros", "--json").stdout)
    assert all(h["path"] != "meetings/2025-07-03.md" for h in found["hits"])  # a deleted file is never cited


def test_hybrid_index_with_the_starter_as_embedder(cli, folder, model_env):
    added = index_add(cli, folder, "--embed-model", "starter", env=model_env)
    listed = json.loads(cli("index", "list", "--json").stdout)[0]
    assert f"{listed['chunks']} embedded" in added.stderr  # every chunk has a vector
    assert listed["embedding_model"].startswith("starter@") and listed["dimension"] == 640
    found = json.loads(cli("index", "search", "notes", "How long is parental leave?", "--json").stdout)
    assert found["mode"] == "hybrid" and found["hits"][0]["path"] == "handbook.txt"


def test_missing_embedding_model_is_a_clear_error(cli, folder, starter_model, tmp_path):
    copy = tmp_path / "my-embedder.gguf"
    shutil.copyfile(starter_model, copy)
    index_add(cli, folder, "--embed-model", str(copy))
    os.unlink(copy)
    result = cli("index", "search", "notes", "budget")
    assert result.returncode == 3
    assert "embedding model is missing" in result.stderr and str(copy) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_chat_docs_cites_sources_each_turn(folder, model_env, cli):
    from chatrepl import Repl

    index_add(cli, folder, "--no-embed")
    repl = Repl("--docs", "notes", "-m", "starter-chat", "-n", "20", env={})
    shown = repl.send("What was the offsite budget?")
    assert "Sources: " in shown and "meetings/2025-07-03.md" in shown
    assert "documents off" in repl.send("/docs off")
    plain = repl.send("Hello")
    assert "Sources: " not in plain
    assert "answering from index notes" in repl.send("/docs on")
    assert repl.exit() == 0


def test_deleted_file_is_never_cited_by_ask_docs_chat_docs_or_index_search(cli, folder, model_env):
    from chatrepl import Repl

    index_add(cli, folder, "--no-embed")
    (folder / "meetings" / "2025-07-03.md").unlink()  # and no sync
    notice = (
        "meetings/2025-07-03.md was deleted since the index was synced: its passages were left out "
        "(run `localassist index sync notes`)"
    )
    ask = cli("ask", "--docs", "notes", "What was the offsite budget?")
    assert ask.returncode == 0, ask.stderr
    # the only file that said it is gone: nothing is left to answer from, and no model was asked
    assert ask.stdout.strip() == "The indexed documents do not say."
    assert f"localassist: {notice}" in ask.stderr.splitlines() and "2025-07-03" not in ask.stderr.replace(notice, "")
    search = cli("index", "search", "notes", "offsite budget euros", "--json")
    assert json.loads(search.stdout)["hits"] == [] and f"localassist: {notice}" in search.stderr.splitlines()
    repl = Repl("--docs", "notes", "-m", "starter-chat", "-n", "8", env={})
    shown = " ".join(repl.send("What was the offsite budget?").split())
    assert notice in shown and "Sources:" not in shown
    assert repl.exit() == 0
