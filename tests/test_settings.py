from __future__ import annotations

from dataclasses import replace

import pytest

from localassist.conversation.memory import MemoryPolicy
from localassist.engine.types import SamplingParams
from localassist.errors import ConfigError, ExitCode, InvalidSettingError, UsageError
from localassist.settings import (
    app_paths,
    load_settings,
    parse_float,
    parse_int,
    parse_value,
    set_config_value,
    unset_config_value,
)


def test_defaults_when_nothing_is_set():
    settings = load_settings()
    assert settings.temperature == 0.8
    assert settings.batch == 512
    assert settings.sources["temperature"] == "default"


def test_precedence_flag_over_env_over_file_over_default(monkeypatch):
    set_config_value("temperature", "0.3")
    set_config_value("top_k", "12")
    set_config_value("max_tokens", "99")
    monkeypatch.setenv("LOCALASSIST_TOP_K", "7")
    monkeypatch.setenv("LOCALASSIST_MAX_TOKENS", "55")
    settings = load_settings({"max_tokens": 11})
    assert (settings.temperature, settings.sources["temperature"]) == (0.3, "config file")
    assert (settings.top_k, settings.sources["top_k"]) == (7, "env LOCALASSIST_TOP_K")
    assert (settings.max_tokens, settings.sources["max_tokens"]) == (11, "flag")
    assert settings.sources["top_p"] == "default"


def test_settings_are_read_at_call_time(monkeypatch):
    assert load_settings().seed == -1
    monkeypatch.setenv("LOCALASSIST_SEED", "42")
    assert load_settings().seed == 42


def test_localassist_home_moves_every_path(isolated_home):
    paths = app_paths()
    for folder in (paths.config_dir, paths.data_dir, paths.cache_dir):
        assert folder.is_relative_to(isolated_home)
    set_config_value("seed", "3")
    assert paths.config_file.is_file()
    assert paths.config_file.is_relative_to(isolated_home)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("temperature", 2.5, "between 0 and 2"),
        ("top_p", -0.1, "between 0 and 1"),
        ("min_p", 1.5, "between 0 and 1"),
        ("top_k", -1, "between 0 and 100000"),
        ("repeat_penalty", 0.1, "between 0.5 and 2"),
        ("batch", 8, "between 512 and 65536"),
        ("max_tokens", 0, "between 1 and"),
        ("ctx", 16, "between 128 and"),
        ("gpu_layers", "lots", "auto, all"),
        ("seed", -2, "between -1 and"),
    ],
)
def test_out_of_range_flags_name_the_valid_range(name, value, fragment):
    with pytest.raises(InvalidSettingError) as info:
        load_settings({name: value})
    assert fragment in str(info.value)
    assert f"--{name.replace('_', '-')}" in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


def test_bad_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("LOCALASSIST_TEMPERATURE", "warm")
    with pytest.raises(InvalidSettingError, match="LOCALASSIST_TEMPERATURE must be a number"):
        load_settings()


def test_bad_config_value_and_unknown_key(isolated_home):
    config = app_paths().config_file
    config.parent.mkdir(parents=True)
    config.write_text("top_p = 7\n")
    with pytest.raises(InvalidSettingError, match="config key 'top_p'"):
        load_settings()
    config.write_text('colour = "blue"\n')
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_settings()
    assert unset_config_value("colour") is True
    assert load_settings().temperature == 0.8


def test_invalid_toml_is_a_clear_error():
    config = app_paths().config_file
    config.parent.mkdir(parents=True)
    config.write_text("temperature = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()


def test_config_set_validates_before_writing():
    with pytest.raises(InvalidSettingError):
        set_config_value("temperature", "9")
    assert not app_paths().config_file.exists()
    with pytest.raises(UsageError, match="unknown setting"):
        set_config_value("nonsense", "1")


def test_list_and_bool_values_round_trip():
    set_config_value("stop", '["###", "\\n\\n"]')
    set_config_value("flash_attn", "yes")
    settings = load_settings()
    assert settings.stop == ("###", "\n\n")
    assert settings.flash_attn is True
    assert unset_config_value("stop") is True
    assert unset_config_value("stop") is False
    assert load_settings().stop == ()


def test_settings_are_frozen():
    settings = load_settings()
    with pytest.raises(AttributeError):
        settings.temperature = 1.0  # type: ignore[misc]


# --- numbers are ASCII digits, and every bad one is a usage error


@pytest.mark.parametrize("text", ["²", "١٢", "1_000", "12a", "", "0x10", "²3"])
def test_superscript_and_non_ascii_digits_are_not_numbers(text):
    with pytest.raises(ValueError):
        parse_int(text)


def test_superscript_window_size_is_a_usage_error_not_a_crash():
    with pytest.raises(UsageError, match="window:K"):
        MemoryPolicy.parse("window:²")
    with pytest.raises(InvalidSettingError):
        parse_value("memory", "window:²", "flag")
    with pytest.raises(InvalidSettingError):
        parse_value("ctx", "١٠٢٤", "env")
    assert MemoryPolicy.parse(" Window:08 ") == MemoryPolicy("window", 8)
    assert parse_int(" 42 ") == 42 and parse_float("2.5e-1") == 0.25
    for bad in ("nan", "inf", "١.٥"):
        with pytest.raises(ValueError):
            parse_float(bad)


def test_superscript_memory_flag_exits_2(cli):
    result = cli("chat", "--memory", "window:²")
    assert result.returncode == 2, result.stderr
    assert "--memory must be buffer, window:K" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_sampling_params_from_settings_marks_natural_end_only_without_stops():
    from localassist.settings import load_settings

    assert SamplingParams.from_settings(load_settings()).natural_end
    assert not SamplingParams.from_settings(load_settings({"stop": ["###"]})).natural_end
    assert replace(SamplingParams(), stop=()).natural_end is False
