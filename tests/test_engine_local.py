from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localassist.engine.local import physical_cores, resolve_gpu_layers


def test_gpu_layers_auto_follows_the_build():
    assert resolve_gpu_layers("auto", gpu_supported=True) == -1
    assert resolve_gpu_layers("auto", gpu_supported=False) == 0
    assert resolve_gpu_layers("all", gpu_supported=False) == -1
    assert resolve_gpu_layers("12", gpu_supported=True) == 12


def test_physical_cores_counts_cores_not_hyperthreads():
    """The oracle is the kernel's sysfs topology (the code reads /proc/cpuinfo): one thread per
    distinct (package, core), never more than the CPUs this process may run on."""
    cpus = sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/core_id"))
    if not cpus or not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sysfs CPU topology on this system")
    cores = {((p.parent / "physical_package_id").read_text().strip(), p.read_text().strip()) for p in cpus}
    assert physical_cores() == min(len(cores), len(os.sched_getaffinity(0)))


# --- a failed load says why


def test_load_error_names_llama_cpp_reason(cli, tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "frob.gguf"
    writer = gguf.GGUFWriter(str(path), arch="frobnicator")
    writer.add_tensor("t", np.zeros(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = cli("ask", "-m", str(path), "hi")
    assert result.returncode == 5, result.stderr
    assert "unknown model architecture: 'frobnicator'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- the offload report is what llama.cpp did


@pytest.mark.model
def test_gpu_layers_report_reads_llama_cpp_log_not_the_request(backend, monkeypatch):
    from localassist.engine.llama_log import LLAMA_LOG

    assert "CPU-only" in backend.describe()["gpu_layers"]  # this build: nothing was offloaded
    # a GPU build logs what it offloaded; the report must come from that line
    monkeypatch.setattr(backend, "gpu_supported", True)
    monkeypatch.setattr(backend, "gpu_layers", -1)  # "all" requested
    LLAMA_LOG._record(2, "load_tensors: offloaded 12/19 layers to GPU\n")
    monkeypatch.setattr(backend, "offloaded", LLAMA_LOG.offloaded)
    assert backend.describe()["gpu_layers"] == "12/19"
    monkeypatch.setattr(backend, "offloaded", None)  # not captured (-v): say it was only requested
    assert backend.describe()["gpu_layers"].startswith("all requested")


# --- batch threads follow the CPU affinity mask


@pytest.mark.model
def test_batch_threads_follow_cpu_affinity(starter_model):
    if not hasattr(__import__("os"), "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    code = (
        "import os, json; os.sched_setaffinity(0, {0});"
        "from localassist.engine.local import LocalBackend, LoadOptions; from pathlib import Path;"
        f"b = LocalBackend(Path({str(starter_model)!r}), 's', LoadOptions(ctx=256));"
        "p = b.llm.context_params; print(json.dumps([p.n_threads, p.n_threads_batch]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [1, 1], out.stderr
