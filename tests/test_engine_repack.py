"""`repack`: llama.cpp's extra buffer types (repacked weights) are off where its AMX kernels
crash (llama.cpp issue #20824), on elsewhere, and what llama.cpp really did is read from
its own log."""

from __future__ import annotations

import pytest

from localassist.engine.llama_load import decide_repack, system_info

# llama_print_system_info() as llama.cpp prints it on the two kinds of machine
SAPPHIRE_RAPIDS = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
EPYC = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
EXTRA_BUFFERS = {"CPU_REPACK", "AMX"}


def test_auto_turns_repacking_off_where_llama_cpp_reports_amx_int8():
    allowed, reason = decide_repack("auto", SAPPHIRE_RAPIDS)
    assert not allowed
    assert "AMX_INT8 = 1" in reason and "#20824" in reason


def test_auto_keeps_repacking_on_without_amx_and_flags_force_it():
    assert decide_repack("auto", EPYC)[0] is True
    assert decide_repack("auto", "CPU : AMX_INT8 = 0 | ")[0] is True
    assert decide_repack("on", SAPPHIRE_RAPIDS) == (True, "repack=on was asked for")
    assert decide_repack("off", EPYC) == (False, "repack=off was asked for")
    with pytest.raises(ValueError, match="auto, on, off"):
        decide_repack("sometimes", EPYC)


@pytest.mark.model
def test_repack_off_loads_no_extra_buffer_types_and_on_does(starter_model):
    """llama.cpp's own load log says where the weights went: with repack off only plain
    CPU buffers, never CPU_REPACK or AMX (the layouts whose kernels crash on AMX)."""
    import llama_cpp

    from localassist.engine.local import LoadOptions, LocalBackend

    off = LocalBackend(starter_model, "starter", LoadOptions(ctx=256, threads=2, repack="off"))
    try:
        assert off.repack is False
        assert off.llm.model_params.use_extra_bufts is False
        assert off.weight_buffers, "llama.cpp's log named no weight buffer"
        assert not EXTRA_BUFFERS & set(off.weight_buffers), off.weight_buffers
        assert off.info().details["repack"] == "off (repack=off was asked for)"
    finally:
        off.close()
    on = LocalBackend(starter_model, "starter", LoadOptions(ctx=256, threads=2, repack="on"))
    try:
        assert on.repack is True
        if "REPACK = 1" in system_info(llama_cpp):  # this build has repacking kernels for this CPU
            assert EXTRA_BUFFERS & set(on.weight_buffers), on.weight_buffers
    finally:
        on.close()


@pytest.mark.model
def test_auto_follows_llama_cpps_system_info_at_load(starter_model, monkeypatch):
    """The auto rule as a load applies it: an AMX report turns repacking off."""
    from localassist.engine import llama_load
    from localassist.engine.local import LoadOptions, LocalBackend

    monkeypatch.setattr(llama_load, "system_info", lambda _llama_cpp: SAPPHIRE_RAPIDS)
    backend = LocalBackend(starter_model, "starter", LoadOptions(ctx=256, threads=2))
    try:
        assert backend.repack is False
        assert not EXTRA_BUFFERS & set(backend.weight_buffers)
        assert "AMX_INT8 = 1" in backend.info().details["repack"]
    finally:
        backend.close()


@pytest.mark.model
def test_verbose_says_whether_repack_is_on_and_why(cli, model_env):
    result = cli("ask", "--raw", "-T", "0", "-n", "2", "--repack", "off", "-v", "Hello", env=model_env)
    assert result.returncode == 0, result.stderr
    assert "repack=off (repack=off was asked for)" in result.stderr


def test_a_bad_repack_value_is_one_usage_line(cli):
    result = cli("ask", "--repack", "sometimes", "hi", env={"LOCALASSIST_MODEL": "/nonexistent.gguf"})
    assert result.returncode == 2
    assert "repack" in result.stderr and "auto, on or off" in result.stderr
    assert "Traceback" not in result.stderr
    env = cli("config", "show", env={"LOCALASSIST_REPACK": "maybe"})
    assert env.returncode == 2 and "LOCALASSIST_REPACK" in env.stderr


@pytest.mark.model
def test_the_python_api_and_the_embedder_take_repack_like_the_cli(starter_model):
    import localassist
    from localassist.errors import InvalidSettingError
    from localassist.rag import load_llama_embedder

    with pytest.raises(InvalidSettingError, match="auto, on or off"):
        localassist.load(str(starter_model), repack="sometimes")
    with localassist.load(str(starter_model), ctx=256, threads=2, repack="off") as model:
        assert model.backend.info().details["repack"] == "off (repack=off was asked for)"
    embedder = load_llama_embedder(starter_model, n_threads=2, repack="off")
    try:
        assert embedder.llm.model_params.use_extra_bufts is False
    finally:
        embedder.close()
