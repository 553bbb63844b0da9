"""The documented Python examples (docs/python.md, moved there from the README), taken
from the page and run exactly as printed.

Each block runs in a fresh interpreter with its own LOCALASSIST_HOME, so "starter" and
"starter-chat" resolve as they would for a user. A small harness around the block records
every generation the engine ran (its sampling and its ``Done``): the printed output is
checked against those records (the oracle comes from the same run, never from text
recorded on another CPU), and no answer that was given no ``max_tokens`` may have run into
the default cap: a documented example has to finish by itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from localassist.models import bundled

PYTHON_PAGE = Path(__file__).parent.parent / "docs" / "python.md"
DEFAULT_MAX_TOKENS = 512

pytestmark = pytest.mark.model

# Runs documented code with every engine generation recorded; the records go to the file named
# in argv[2] as JSON, with the block's own variables named in argv[3:] (JSON-able ones).
HARNESS = """
import json, sys
from localassist.engine import local

records = []
original = local.LocalBackend.chat

def chat(self, request):
    stream = original(self, request)
    records.append((request, stream))
    return stream

local.LocalBackend.chat = chat
code = open(sys.argv[1], encoding="utf-8").read()
namespace = {"__name__": "__main__"}
exec(compile(code, "docs/python.md", "exec"), namespace)
sys.stdout.flush()
out = {
    "generations": [
        {
            "max_tokens": request.sampling.max_tokens,
            "raw": request.raw,
            "text": stream.result().text,
            "finish_reason": stream.result().finish_reason,
            "completion_tokens": stream.result().completion_tokens,
        }
        for request, stream in records
    ],
    "variables": {name: namespace[name] for name in sys.argv[3:]},
}
with open(sys.argv[2], "w", encoding="utf-8") as file:
    json.dump(out, file, default=lambda value: getattr(value, "metadata", repr(value)))
"""


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of one ``## section`` of docs/python.md, as printed."""
    text = PYTHON_PAGE.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no section {section!r} in docs/python.md"
    return re.findall(r"^```python\n(.*?)^```$", match.group(1), re.S | re.M)


def home_with_models(tmp_path: Path, starter_model: Path) -> Path:
    """A LOCALASSIST_HOME whose cache already holds the joined starter (a link to the
    session's copy, so the 253 MB are not joined again)."""
    home = tmp_path / "home"
    cached = home / "cache" / "starter" / bundled.FILE_NAME
    cached.parent.mkdir(parents=True)
    cached.symlink_to(starter_model)
    return home


def run_block(code: str, home: Path, tmp_path: Path, *variables: str) -> tuple[str, dict]:
    (tmp_path / "block.py").write_text(code, encoding="utf-8")
    report = tmp_path / "report.json"
    env = {**os.environ, "LOCALASSIST_HOME": str(home), "LOCALASSIST_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, str(tmp_path / "block.py"), str(report), *variables],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(report.read_text(encoding="utf-8"))


def assert_finished_by_itself(generations: list[dict]) -> None:
    for generation in generations:
        if generation["max_tokens"] == DEFAULT_MAX_TOKENS:
            assert generation["finish_reason"] == "stop", f"ran on to the default max_tokens: {generation}"


def test_readme_python_api_example_runs_as_printed_and_finishes(tmp_path, starter_model, starter_chat_path):
    (code,) = python_blocks("Python API")
    stdout, report = run_block(code, home_with_models(tmp_path, starter_model), tmp_path)
    generations = report["generations"]
    assert [(g["raw"], g["max_tokens"]) for g in generations] == [
        (True, 8),
        (True, DEFAULT_MAX_TOKENS),
        (False, DEFAULT_MAX_TOKENS),
        (False, DEFAULT_MAX_TOKENS),
    ]
    assert_finished_by_itself(generations)
    completion, streamed, hello, again = (g["text"] for g in generations)
    assert streamed.strip() and hello.strip() and again.strip()
    assert stdout == f"{completion}\n{streamed}\n{hello}\n{again}\n"


def test_readme_langchain_example_runs_as_printed(tmp_path, starter_model, starter_chat_path, cli):
    (code,) = python_blocks("LangChain")
    home = home_with_models(tmp_path, starter_model)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "trip.md").write_text("Trip\n\nThe offsite is in Porto, from 22 to 24 October.\n")
    (notes / "groceries.md").write_text("Groceries\n\nMilk, bread and coffee for the week.\n")
    indexed = cli(
        "index", "add", str(notes), "--name", "notes", "--embed-model", "starter", env={"LOCALASSIST_HOME": str(home)}
    )
    assert indexed.returncode == 0, indexed.stderr
    stdout, report = run_block(code, home, tmp_path, "docs")
    answer, count = (g["text"] for g in report["generations"])
    assert all(g["max_tokens"] == 64 for g in report["generations"])
    assert stdout == f"{answer}\n{count}"
    first = report["variables"]["docs"][0]
    shown = re.search(r"docs\[0\]\.metadata\s+# (\{.*\})", code).group(1)  # what the page says it holds
    assert list(first) == re.findall(r"'(\w+)':", shown)
    assert first == {
        "source": "trip.md",
        "file_path": str(notes / "trip.md"),
        "line_start": 1,
        "line_end": 3,
        "score": first["score"],
        "rank": 1,
    }
