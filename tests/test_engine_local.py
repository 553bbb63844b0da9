from __future__ import annotations

import os
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
