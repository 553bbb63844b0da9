"""Start-up cost only: `localassist --help`, and `localassist ask` end to end against a
minimal script that imports llama_cpp, loads the same model and generates the same
tokens. A shortcut for `run.py --skip decode,pp,chat,rss`.

    python benchmarks/startup.py [--runs 7] [--model PATH]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run

if __name__ == "__main__":
    sys.argv[1:1] = ["--skip", "decode,pp,chat,rss", "--out", str(run.HERE / "results" / "startup.json")]
    run.main()
