"""CLI behaviour that needs no model run: help, config, models, info, usage errors."""

from __future__ import annotations

import io
import json
import os

import pytest
from typer.testing import CliRunner

from imports import loaded_by
from localassist.cli.app import app

runner = CliRunner()


def test_help_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("ask", "models", "info", "config"):
        assert command in result.stdout
    from importlib.metadata import version

    assert runner.invoke(app, ["--version"]).stdout == f"localassist {version('localassist')}\n"  # the installed one


def test_config_set_show_path_unset(isolated_home):
    assert runner.invoke(app, ["config", "set", "temperature", "0.25"]).exit_code == 0
    shown = json.loads(runner.invoke(app, ["config", "show", "--json"]).stdout)
    assert shown["temperature"] == {"value": 0.25, "source": "config file"}
    assert shown["top_k"] == {"value": 40, "source": "default"}
    table = runner.invoke(app, ["config", "show"]).stdout
    assert "temperature" in table and "config file" in table
    path = runner.invoke(app, ["config", "path"]).stdout.strip()
    assert path == str(isolated_home / "config" / "config.toml")
    assert runner.invoke(app, ["config", "unset", "temperature"]).exit_code == 0
    shown = json.loads(runner.invoke(app, ["config", "show", "--json"]).stdout)
    assert shown["temperature"]["source"] == "default"


def test_config_show_reports_env_source(monkeypatch):
    monkeypatch.setenv("LOCALASSIST_MAX_TOKENS", "64")
    shown = json.loads(runner.invoke(app, ["config", "show", "--json"]).stdout)
    assert shown["max_tokens"] == {"value": 64, "source": "env LOCALASSIST_MAX_TOKENS"}


def test_models_lists_the_starter(cli):
    result = cli("models", "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed[0]["name"] == "starter" and listed[0]["quant"] == "Q4_K_M"
    table = cli("models").stdout
    assert table.splitlines()[0].split() == ["NAME", "QUANT", "SIZE", "LAST", "USED", "SOURCE", "PATH"]


def test_info_reads_metadata_without_loading(cli, model_env):
    result = cli("info", "--json", env=model_env)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["architecture"] == "gemma3"
    assert facts["quantization"] == "Q4_K_M"
    assert facts["context_length"] == 32768
    assert facts["layers"] == 18
    assert 260_000_000 < facts["parameters"] < 280_000_000
    assert facts["chat_template"] == "no (fallback: gemma)"


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["ask", "hi", "--temperature", "5"], 2, "--temperature must be a number between 0 and 2"),
        (["ask", "hi", "--top-p", "1.5"], 2, "--top-p must be a number between 0 and 1"),
        (["ask", "hi", "--gpu-layers", "many"], 2, "--gpu-layers must be auto, all"),
        (["ask", "hi", "--batch", "8"], 2, "--batch must be a whole number between 512"),
        (["ask", "hi", "--chat-format", "klingon"], 2, "--chat-format must be one of"),
        (["ask", "hi", "--temperature", "warm"], 2, "invalid value"),
        (["ask"], 2, "nothing to ask"),
        (["ask", "hi", "-m", "nonesuch"], 3, "unknown model 'nonesuch'"),
        (["ask", "hi", "-m", "/no/such/model.gguf"], 3, "does not exist"),
        (["info", "qwen2.5:3b"], 3, "localassist pull qwen2.5:3b"),
    ],
)
def test_bad_input_is_one_clear_line_and_a_documented_code(cli, model_env, args, code, fragment):
    result = cli(*args, env=model_env if "-m" not in args else None)
    assert result.returncode == code, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_not_a_gguf_file(cli, tmp_path):
    text = tmp_path / "fake.gguf"
    text.write_text("not a model")
    result = cli("ask", "hi", "-m", str(text))
    assert (result.returncode, result.stderr.count("\n")) == (5, 1)
    assert "not a GGUF model file" in result.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(cli, tmp_path):
    locked = tmp_path / "locked.gguf"
    locked.write_bytes(b"GGUF")
    locked.chmod(0)
    result = cli("info", str(locked))
    assert result.returncode == 5
    assert "permission denied" in result.stderr and "Traceback" not in result.stderr


def test_bad_config_file_is_reported_not_a_traceback(cli, isolated_home):
    config = isolated_home / "config" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("temperature = [\n")
    result = cli("config", "show")
    assert result.returncode == 1
    assert "not valid TOML" in result.stderr and "Traceback" not in result.stderr


def test_debug_env_shows_the_traceback(cli):
    result = cli("ask", "hi", "-m", "nonesuch", env={"LOCALASSIST_DEBUG": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ModelNotAvailableError" in result.stderr


def test_light_commands_never_import_heavy_modules(model_env):
    """--help, models, info and config stay fast: no llama_cpp, numpy, langchain, or the server stack."""
    heavy = ("llama_cpp", "numpy", "langchain_core", "langchain_community", "starlette", "uvicorn")
    for args in (
        ["--help"],
        ["models"],
        ["info"],
        ["config", "show"],
        ["ask", "--help"],
        ["serve", "--help"],
        ["keys", "list"],
        ["users", "list"],
    ):
        loaded, output = loaded_by(args, heavy, env=model_env)
        assert loaded == [], (args, output)


def test_main_runs_in_process_with_the_argv_and_env_it_is_given(tmp_path, isolated_home):
    """main(argv, env) is the console script's own path, callable from Python: the env
    it is given is what settings, paths and LOCALASSIST_DEBUG read, its errors come back
    as exit codes, and the process's environment is as it was when it returns."""
    import io

    from localassist.cli.app import main
    from localassist.cli.env import Environment, using
    from localassist.errors import ExitCode, ModelNotAvailableError

    before = dict(os.environ)
    home = tmp_path / "elsewhere"
    env = {"LOCALASSIST_HOME": str(home), "LOCALASSIST_TEMPERATURE": "0.25", "NO_COLOR": "1"}
    out, err = io.StringIO(), io.StringIO()
    with using(Environment(stdin=None, stdout=out, stderr=err)):
        assert main(["config", "path"], env=env) == 0
        assert out.getvalue() == f"{home / 'config' / 'config.toml'}\n"  # not isolated_home
        out.truncate(0), out.seek(0)
        assert main(["config", "show", "--json"], env=env) == 0
        assert json.loads(out.getvalue())["temperature"] == {"value": 0.25, "source": "env LOCALASSIST_TEMPERATURE"}
        assert main(["ask", "-m", str(tmp_path / "none.gguf"), "hi"], env=env) == ExitCode.NOT_FOUND == 3
        assert main(["ask", "--temprature", "1", "hi"], env=env) == ExitCode.USAGE
        with pytest.raises(ModelNotAvailableError):  # LOCALASSIST_DEBUG=1: the exception, not a line
            main(["ask", "-m", "nonesuch", "hi"], env={**env, "LOCALASSIST_DEBUG": "1"})
    assert f"localassist: error: model file {tmp_path / 'none.gguf'} does not exist\n" in err.getvalue()
    assert "did you mean --temperature?" in err.getvalue()
    assert dict(os.environ) == before  # what a run sets (HF_HUB_OFFLINE) is undone


def test_verbose_in_one_in_process_run_does_not_leak_into_the_next():
    from localassist.cli import library_messages

    library_messages.show(True)  # what -v's callback does during a run
    library_messages.route()  # what main() does as the next run starts
    assert library_messages._shown is False


def test_param_pairs_are_joined_before_parsing():
    from localassist.cli.app import join_param_pairs

    assert join_param_pairs(["ask", "-t", "x", "-p", "points", "5", "--param", "lang", "fr", "hi"]) == [
        "ask",
        "-t",
        "x",
        "-p",
        "points=5",
        "--param",
        "lang=fr",
        "hi",
    ]
    assert join_param_pairs(["ask", "-p", "k=v", "hi"]) == ["ask", "-p", "k=v", "hi"]
    assert join_param_pairs(["ask", "--", "-p", "a", "b"]) == ["ask", "--", "-p", "a", "b"]


@pytest.mark.model
def test_ask_never_imports_the_server_stack(model_env):
    """`ask` runs a model but must not pay for the server's imports (Starlette, uvicorn)."""
    loaded, output = loaded_by(["ask", "--raw", "-T", "0", "-n", "1", "Hi"], ("starlette", "uvicorn"), env=model_env)
    assert loaded == [] and output.strip(), output


# --- the CLI in-process, through an injected environment (no sys monkeypatching)


@pytest.mark.model
def test_cli_runs_in_process_with_an_injected_environment(model_env, monkeypatch):
    from typer.testing import CliRunner

    from localassist.cli.app import app
    from localassist.cli.env import Environment, using

    for key, value in model_env.items():
        monkeypatch.setenv(key, value)
    stdout, stderr = io.StringIO(), io.StringIO()
    env = Environment(stdin=io.BytesIO(b"1, 2, 3,"), stdout=stdout, stderr=stderr, stdin_isatty=False)
    with using(env):
        result = CliRunner().invoke(app, ["ask", "--raw", "-T", "0", "-n", "6", "--json", "--no-log"])
    assert result.exit_code == 0, stderr.getvalue()
    answer = json.loads(stdout.getvalue())
    assert answer["usage"]["completion_tokens"] <= 6 and answer["model"]
    assert result.stdout == ""  # everything went to the injected stream, nothing to sys.stdout
