"""The tree passes ``ruff check`` with the rules of pyproject.toml ([tool.ruff]); skipped where ruff
(the test extra) is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (test extra)")
def test_ruff_check_passes():
    res = subprocess.run(["ruff", "check", "--no-cache", "--output-format", "concise", "."], capture_output=True,
                         text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (test extra)")
def test_ruff_sees_a_violation(tmp_path):
    """The check itself: an unused import and an unsorted import block are reported with the project's rules."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n")
    res = subprocess.run(["ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), "--output-format",
                          "concise", str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 1 and "F401" in res.stdout and "I001" in res.stdout, res.stdout + res.stderr
