"""`ask` end to end: the real CLI in a subprocess running the real starter model
at temperature 0 for a few tokens."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import chatformats
from chatformats import n_tokens

pytestmark = pytest.mark.model

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"  # a base model keeps counting: a long, steady answer


def test_piped_stdout_is_only_the_answer(cli, model_env):
    result = cli("ask", "The capital of France is", "-T", "0", "-n", "12", env=model_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "\x1b" not in result.stdout  # no ANSI codes, no spinner
    assert result.stdout.endswith("\n")
    assert result.stderr == ""  # no llama.cpp logs, no status lines
    # and the answer is all there is: the same run's text as --json reports it, plus the final newline
    as_json = cli("ask", "The capital of France is", "-T", "0", "-n", "12", "--json", env=model_env)
    text = json.loads(as_json.stdout)["text"]
    assert result.stdout == text + ("" if text.endswith("\n") else "\n")


def test_temperature_zero_is_deterministic_and_seeded_runs_repeat(cli, model_env):
    first = cli("ask", "--raw", "Once upon a time", "-T", "0", "-n", "10", env=model_env)
    second = cli("ask", "--raw", "Once upon a time", "-T", "0", "-n", "10", env=model_env)
    assert first.stdout == second.stdout and first.stdout.strip()
    a = cli("ask", "--raw", "Once upon a time", "-T", "1", "--seed", "7", "-n", "10", env=model_env)
    b = cli("ask", "--raw", "Once upon a time", "-T", "1", "--seed", "7", "-n", "10", env=model_env)
    assert a.returncode == b.returncode == 0 and a.stdout.strip()
    assert a.stdout == b.stdout


def test_json_output_fields(cli, model_env, vocab):
    result = cli("ask", "--raw", COUNTING, "-T", "0", "-n", "6", "--json", env=model_env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert result.stdout.count("\n") == 1
    assert data["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 6
    # --raw: the text as it is after BOS, counted by llama.cpp's tokenizer
    assert data["usage"]["prompt_tokens"] == n_tokens(vocab, COUNTING, bos=True, special=False)
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + 6
    assert data["model"].endswith(".gguf")
    assert "9" in data["text"]
    timings = data["timings"]
    for key in ("load_s", "ttft_s", "prompt_tokens_per_s", "generation_tokens_per_s", "total_s"):
        assert timings[key] > 0, key


def test_stdin_is_the_input_and_args_the_instruction(cli, model_env, vocab):
    def prompt_tokens(*args, input=None):
        result = cli("ask", *args, "-T", "0", "-n", "1", "--json", input=input, env=model_env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["usage"]["prompt_tokens"]

    def expected(user_text):  # the user's turn in Gemma's format, counted by llama.cpp
        return n_tokens(vocab, chatformats.gemma([("user", user_text)]))

    # both: joined through the default input_template (docs/ask.md), the piped text's last newline dropped
    joined = "Repeat the input.\n\n<input>\nalpha beta gamma\n</input>"
    assert prompt_tokens("Repeat the input.", input="alpha beta gamma\n") == expected(joined)
    assert prompt_tokens("Repeat the input.") == expected("Repeat the input.")
    assert prompt_tokens(input="Hello there") == expected("Hello there")
    # the log keeps the user's text exactly ("\n" and "\n\n" can be one token each: counts alone can't tell)
    logged = [row["prompt"] for row in json.loads(cli("logs", "--json").stdout)]
    assert logged == [joined, "Repeat the input.", "Hello there"]


def test_stop_string_ends_the_answer(cli, model_env):
    result = cli("ask", "--raw", COUNTING, "-T", "0", "-n", "40", "--stop", "12", "--json", env=model_env)
    data = json.loads(result.stdout)
    assert data["finish_reason"] == "stop"
    assert "12" not in data["text"] and "11" in data["text"]


def test_context_overflow_is_an_error_not_a_truncation(cli, model_env):
    long_input = "word " * 400
    result = cli("ask", "Summarize", "--ctx", "256", "-n", "16", input=long_input, env=model_env)
    assert result.returncode == 4
    assert result.stdout == ""
    assert "does not fit the context" in result.stderr and "256 context" in result.stderr
    assert result.stderr.count("\n") == 1


def test_stats_and_verbose_go_to_stderr(cli, model_env):
    result = cli("ask", "--raw", COUNTING, "-T", "0", "-n", "5", "--stats", "-v", env=model_env)
    assert result.returncode == 0
    assert "generation" in result.stderr and "t/s" in result.stderr
    assert "gpu_layers=" in result.stderr and "backend=llama.cpp" in result.stderr
    assert "t/s" not in result.stdout


def test_starter_model_is_the_default(cli):
    result = cli("ask", "--raw", "Hello", "-T", "0", "-n", "3", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["model"] == "starter"


def _start(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "localassist", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
    )


def test_ctrl_c_stops_at_once_flushes_and_exits_130(model_env):
    proc = _start(["ask", "--raw", COUNTING, "-T", "0", "-n", "3000"], model_env)
    first = proc.stdout.read(4)  # generation has started
    assert first
    proc.send_signal(signal.SIGINT)
    start = time.monotonic()
    rest, err = proc.communicate(timeout=30)
    assert time.monotonic() - start < 5
    assert proc.returncode == 130
    out = (first + rest).decode()
    assert "9" in out  # what was generated before the interrupt is on stdout
    assert b"Traceback" not in err and b"interrupted" in err


def test_broken_pipe_exits_quietly(model_env):
    proc = _start(["ask", "--raw", COUNTING, "-T", "0", "-n", "3000"], model_env)
    assert proc.stdout.read(2)
    proc.stdout.close()  # like `| head -c 2`
    proc.wait(timeout=60)
    err = proc.stderr.read()
    assert proc.returncode == 141
    assert err == b""


def test_a_base_models_answer_that_begins_with_a_blank_line_is_not_empty(cli, model_env, tmp_path):
    # The grammar makes the starter begin with a blank line whatever it would say; the
    # blank-line stop used to end the answer right there, before any text (exit 0, nothing).
    grammar = tmp_path / "blank-first.gbnf"
    grammar.write_text('root ::= "\\n\\n" word "\\n\\n" word\nword ::= [a-z] [a-z] [a-z]?\n')
    for args in (["--raw", "Colors:"], ["Colors:"]):  # a completion, and the base model through a template
        result = cli("ask", *args, "-T", "0", "-n", "16", "--grammar", str(grammar), "--no-log", env=model_env)
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(r"\n\n[a-z]{2,3}\n", result.stdout), repr(result.stdout)  # ended at the second one


# --- first run: a base model stops at a natural end


@pytest.mark.model
def test_base_model_completion_stops_at_a_blank_line_when_no_stop_is_given(cli, model_env):
    result = cli("ask", "--raw", "-T", "0", "--json", "--no-log", "The three primary colors are", env=model_env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["finish_reason"] == "stop" and answer["usage"]["completion_tokens"] < 512
    assert "\n\n" not in answer["text"]
    # an explicit --stop replaces the natural end
    args = ("--raw", "-T", "0", "--json", "--no-log", "--stop", "zzzz", "-n", "60")
    longer = cli("ask", *args, "1, 2, 3,", env=model_env)
    assert json.loads(longer.stdout)["finish_reason"] == "length"


# --- raw mode has no conversation, and few-shot examples come before the history


def test_raw_with_a_conversation_is_a_usage_error(cli, model_env):
    assert cli("ask", "-T", "0", "-n", "2", "Hello", env=model_env).returncode == 0
    result = cli("ask", "--raw", "-c", "more", env=model_env)
    assert result.returncode == 2 and "--raw" in result.stderr and "-c" in result.stderr
