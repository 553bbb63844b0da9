"""When each model was last used, for `localassist models` (a small JSON file in the data dir)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from localassist.files import private_dir, write_private_text


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
        private_dir(data_dir)
        write_private_text(_file(data_dir), json.dumps(data))
    except OSError:
        pass
