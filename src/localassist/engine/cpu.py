"""CPU topology: how many threads llama.cpp should use here."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, e.g. under taskset or a
    container's cpuset), not every CPU of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores this process may use (llama-cpp-python defaults to cpu_count // 2)."""
    usable = usable_cpus()
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            physical = core = ""
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    core = value.strip()
                    cores.add((physical, core))
    except OSError:
        pass
    if not cores and hasattr(os, "sysconf"):
        try:
            import subprocess

            out = subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True, timeout=2).stdout
            return max(1, min(int(out.strip()), usable))
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return max(1, min(len(cores) or usable, usable))
