from __future__ import annotations

import pytest

from localassist.errors import (
    AccessDeniedError,
    BackendError,
    ConfigError,
    ContextOverflowError,
    DownloadError,
    ExitCode,
    InvalidSettingError,
    ModelInvalidError,
    ModelNotAvailableError,
    UsageError,
    exit_code_for,
)
from stderr_lines import only_our_lines


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("x"), 2),
        (InvalidSettingError("top_p", 3, "a number between 0 and 1"), 2),
        (ModelNotAvailableError("x"), 3),
        (ContextOverflowError(900, 200, 1024), 4),
        (ModelInvalidError("x"), 5),
        (DownloadError("x"), 6),
        (AccessDeniedError("x"), 7),
        (ConfigError("x"), 1),
        (BackendError("x"), 1),
        (KeyboardInterrupt(), 130),
        (BrokenPipeError(), 141),
        (RuntimeError("surprise"), 1),
    ],
)
def test_exit_code_mapping(error, code):
    assert exit_code_for(error) == code


def test_exit_codes_are_stable():
    assert {c.name: c.value for c in ExitCode} == {
        "OK": 0,
        "ERROR": 1,
        "USAGE": 2,
        "NOT_FOUND": 3,
        "CONTEXT_OVERFLOW": 4,
        "MODEL_INVALID": 5,
        "DOWNLOAD_FAILED": 6,
        "ACCESS_DENIED": 7,
        "ANSWER_INVALID": 8,
        "INTERRUPTED": 130,
        "BROKEN_PIPE": 141,
    }


def test_context_overflow_message_has_the_counts_and_the_way_out():
    message = str(ContextOverflowError(9000, 512, 8192))
    assert "9,000 prompt tokens" in message
    assert "512 max tokens" in message
    assert "8,192 context" in message
    assert "--ctx" in message and "--max-tokens" in message


def test_a_bad_serve_flag_is_named_as_typed_not_as_its_setting(cli):
    """`serve --timeout 0` named `--serve-timeout`, a flag that does not exist."""
    for flag, value in (("--timeout", "0"), ("--auth", "bogus"), ("--port", "99999")):
        result = cli("serve", flag, value, "-m", "/nonexistent.gguf")
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"localassist: error: {flag} must be "), result.stderr
        assert "--serve-" not in result.stderr and result.stderr.count("\n") == 1


# --- usage errors, pypdf's and huggingface_hub's lines


@pytest.mark.parametrize(
    ("args", "said", "not_said"),
    [
        (["ask", "--bogus", "hi"], "unknown option --bogus for `localassist ask`", ["--docs", "--verbose"]),
        (["ask", "--temprature", "0", "hi"], "did you mean --temperature?", []),
        (["logs", "rm", "--al"], "did you mean --all?", []),
        (["bogus"], "unknown command 'bogus'", ["logs"]),
        (["chta"], "did you mean `localassist chat`?", []),
        (["index", "lsit"], "did you mean `localassist index list`?", []),
        (["ask", "hi", "--temperature", "warm"], "'warm' is not a valid float", []),
        (["pull"], "missing argument", []),
    ],
)
def test_usage_errors_are_one_line_naming_the_closest_real_option(cli, args, said, not_said):
    result = cli(*args)
    assert result.returncode == 2, result.stderr
    [line] = only_our_lines(result.stderr)  # not Click's usage, hint and "Error:" lines
    assert line.startswith("localassist: error: ") and said in line, line
    assert "Possible options" not in line and "Usage:" not in line
    for unrelated in not_said:
        assert unrelated not in line
    assert result.stdout == ""


def test_closest_option_is_a_real_near_miss_or_nothing():
    from localassist.cli.usage import closest

    options = ["--temperature", "--template", "--top-k", "--docs", "--verbose", "-T", "-v"]
    assert closest("--temprature", options) == "--temperature"
    assert closest("--verb", options) == "--verbose"  # the only option it begins
    assert closest("--temp", options) is None  # begins two: no guess
    assert closest("--bogus", options) is None
    assert closest("-x", options) is None
    assert closest("bogus", ["ask", "chat", "logs", "pull"]) is None
    assert closest("lgos", ["ask", "chat", "logs", "pull"]) == "logs"
