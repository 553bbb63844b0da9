"""The docs site: generated pages are current, the site builds strictly, and it is self-contained.

The CLI reference, the settings table and the exit-code table are generated from the code
(docs/generate.py); a page that no longer matches the code fails here. The build runs
MkDocs in strict mode, so a broken link or anchor fails too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_pages_match_the_code():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, f"the generated docs are stale: run python docs/generate.py\n{proc.stderr}"


def test_the_site_builds_strictly_and_loads_nothing_from_outside(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "reference" / "cli" / "index.html").is_file()
    outside = re.compile(
        r"<(?:script|img|iframe)[^>]*\ssrc=[\"']?(?:https?:)?//|<link[^>]*\shref=[\"']?(?:https?:)?//"
        r"|url\(\s*[\"']?(?:https?:)?//|@import\s+(?:url\()?[\"']?(?:https?:)?//",
        re.I,
    )
    loads = [
        f"{path.relative_to(site)}: {match.group(0)}"
        for path in site.rglob("*")
        if path.suffix in {".html", ".css", ".js"}
        for match in outside.finditer(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not loads, "the site loads assets from outside itself (fonts, CDNs):\n" + "\n".join(loads)


def test_the_readme_is_short_and_keeps_the_ci_test_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    block = re.search(r"<!-- ci-test-command -->\n```sh\n(.+)\n```\n<!-- /ci-test-command -->", text)
    assert block, "the test command .ci/run reads is gone from between its markers"
    assert block.group(1).endswith("python -m pytest")
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"
