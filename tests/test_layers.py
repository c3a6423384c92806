"""The layers of svjscout import only downward, and imports inside functions are only of optional
dependencies, each with its reason.

Layers, bottom first (svjscout/core/__init__.py): ``core``, ``samples``, ``processors``, ``models``,
``datacards``, ``jobs``. A module may import its own layer and those below it. The check reads
every import of the package's source (module level and inside functions) with :mod:`ast`, so it
cannot be fooled by an import hidden in a function; ``lint-imports`` (import-linter, configured
in pyproject.toml) checks the same contract from the installed package where it is installed.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import LAYERS, ROOT, lay_out_package

ORDER = list(LAYERS)
#: top-level modules that may be imported inside a function: optional dependencies (extras) or
#: heavy ones that a light command must not pay for; each such import carries its reason in a comment
OPTIONAL = {"torch", "sklearn", "pythia8mc", "pythia8", "dask_jobqueue", "dask_gateway", "dask_gateway_server",
            "fsspec_xrootd", "XRootD", "pyhf", "dcor", "memray"}


def _modules():
    for layer, folder in LAYERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield layer, path


def _layer_of(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "svjscout":
        return None
    if len(parts) == 1:
        return "core"  # svjscout itself: __version__
    return parts[1] if parts[1] in LAYERS else "core"


def _imports(tree: ast.AST, path: Path):
    """(node, imported module names, inside a function) of every import in ``tree``."""
    def visit(node, inside):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                yield child, [a.name for a in child.names], inside
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against the module's package
                    pkg = _package_of(path).split(".")
                    base = pkg[: len(pkg) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                names = [mod] + [f"{mod}.{a.name}" for a in child.names]
                yield child, names, inside
            yield from visit(child, inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
    yield from visit(tree, False)


def _package_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    for layer, folder in LAYERS.items():
        if rel.is_relative_to(folder):
            sub = rel.relative_to(folder).parent.parts
            return ".".join(["svjscout", layer, *sub]) if layer != "core" else ".".join(["svjscout", "core", *sub])
    raise AssertionError(path)


def test_layers_import_only_downward():
    wrong = []
    for layer, path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        for node, names, _ in _imports(tree, path):
            targets = {_layer_of(n) for n in names[:1]} - {None}
            for target in targets:
                if ORDER.index(target) > ORDER.index(layer):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {layer} imports {names[0]} ({target})")
    assert not wrong, "imports against the layers (bottom first: " + " < ".join(ORDER) + "):\n" + "\n".join(wrong)


def test_imports_inside_functions_are_optional_dependencies_with_a_reason():
    wrong = []
    for _, path in _modules():
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text, str(path))
        for node, names, inside in _imports(tree, path):
            if not inside:
                continue
            top = names[0].split(".")[0]
            line = lines[node.lineno - 1]
            if top not in OPTIONAL:
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()} (not an optional dependency)")
            elif "#" not in line and not lines[node.lineno - 2].strip().startswith("#"):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()} (no comment giving the reason)")
    assert not wrong, f"{len(wrong)} imports inside functions:\n" + "\n".join(wrong)


def test_the_checker_sees_a_violation(tmp_path):
    """The checker itself: an upward import inside a function is found."""
    src = "def f():\n    from svjscout.jobs import cli\n"
    tree = ast.parse(src)
    found = [(names[0], inside) for _, names, inside in _imports(tree, ROOT / "samples" / "x.py")]
    assert found == [("svjscout.jobs", True)]
    assert _layer_of("svjscout.jobs.cli") == "jobs" and ORDER.index("jobs") > ORDER.index("samples")


@pytest.mark.skipif(shutil.which("lint-imports") is None, reason="import-linter is not installed (test extra)")
def test_import_linter_contracts_are_kept(tmp_path):
    # import-linter (grimp) finds a package by walking the one folder its import spec names; svjscout's
    # layers live in sibling folders (pyproject.toml's package-dir), so it reads a copy laid out as the
    # installed package: svjscout/<layer>/... (conftest.lay_out_package)
    lay_out_package(tmp_path)
    res = subprocess.run(["lint-imports", "--no-cache", "--config", str(ROOT / "pyproject.toml")], capture_output=True,
                         text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
