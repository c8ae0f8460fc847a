"""The tree stays clean under the ruff rules configured in pyproject.toml (pyflakes, syntax,
import order): an unused import or an undefined name fails here, not in a user's hands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, f"ruff check . (fix with: ruff check --fix .)\n{proc.stdout}{proc.stderr}"


def test_ruff_would_catch_an_undefined_name(tmp_path):
    """The check above is live: the same configuration flags a planted error."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    return undefined_name\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 1 and "F821" in proc.stdout
