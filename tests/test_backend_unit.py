from __future__ import annotations

import os

from localassist.backends.local import physical_cores, resolve_gpu_layers


def test_gpu_layers_auto_follows_the_build():
    assert resolve_gpu_layers("auto", gpu_supported=True) == -1
    assert resolve_gpu_layers("auto", gpu_supported=False) == 0
    assert resolve_gpu_layers("all", gpu_supported=False) == -1
    assert resolve_gpu_layers("12", gpu_supported=True) == 12


def test_physical_cores_is_within_what_the_process_may_use():
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= physical_cores() <= usable
