"""mypy is part of the suite: src/ stays clean under the [tool.mypy] settings in pyproject.toml."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_clean(tmp_path):
    if importlib.util.find_spec("mypy") is None:
        pytest.fail("mypy is not installed; it is part of the [test] extra")
    # the cache goes to tmp_path: nothing is written into the repository
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy_cache")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
