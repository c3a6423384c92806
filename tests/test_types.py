"""mypy on svjscout's public API: the names ``svjscout/__init__.py`` exports and the modules that
define them (with the settings models of the stages a job configures), configured by pyproject.toml's
``[tool.mypy]``.

mypy finds a package by walking one folder, and svjscout's layers live in sibling folders
(pyproject.toml's package-dir): it reads a copy laid out as the installed package
(:func:`conftest.lay_out_package`). The modules the API imports are followed silently (read for
their types, their own errors not reported).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import ROOT, lay_out_package

#: the checked modules, as paths of the laid-out copy
PUBLIC_API = [
    "svjscout/__init__.py",
    "svjscout/core",
    "svjscout/processors/settings.py",
    "svjscout/processors/schema.py",
    "svjscout/processors/normalize.py",
    "svjscout/processors/datasets.py",
    "svjscout/processors/processor.py",
    "svjscout/datacards/settings.py",
    "svjscout/jobs/config.py",
    "svjscout/jobs/runner.py",
]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed (test extra)")
def test_public_api_type_checks(tmp_path):
    lay_out_package(tmp_path)
    res = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                          "--cache-dir", str(tmp_path / ".mypy_cache"), *PUBLIC_API],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, f"mypy found type errors in the public API:\n{res.stdout}{res.stderr}"
