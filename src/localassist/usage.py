"""When each model was last used, for `localassist models` (a small JSON file in the data dir)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path


def _file(data_dir: Path) -> Path:
    return data_dir / "last_used.json"


def last_used(data_dir: Path) -> dict[str, float]:
    try:
        data = json.loads(_file(data_dir).read_text())
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def record_use(data_dir: Path, model_path: Path) -> None:
    """Best effort: a read-only data dir must never stop a model from running."""
    try:
        data = last_used(data_dir)
        data[str(model_path)] = time.time()
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".last_used.")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, _file(data_dir))
    except OSError:
        pass
