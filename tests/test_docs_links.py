"""The docs are self-contained: every file they (and the docstrings) point at is in the project.

A citation of a file that is not shipped (the old ``physics.md`` lived outside the repository)
leaves a reader with formulas nobody can look up. Checked: Markdown links relative to the file
that holds them, and repository paths written in backticks or plain text (``docs/X.md``,
``models/X.md``, ...) in Markdown and Python files.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
_REPO_PATH = re.compile(r"(?<![\w/.-])((?:docs|models|jobs|samples|datacards|processors|benchmarks|tests)/"
                        r"[\w./-]+\.(?:md|yaml|sh|py|onnx|png))")
_BARE_PHYSICS = re.compile(r"(?<![\w/])physics\.md")


def _tracked(*suffixes: str) -> list[Path]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=False).stdout
    files = [REPO / line for line in out.splitlines() if line.endswith(suffixes)]
    if not files:  # not a git checkout (an sdist): walk the tree
        files = [p for p in REPO.rglob("*") if p.suffix in suffixes and ".venv" not in p.parts]
    return [f for f in files if f.is_file()]


def broken_links(path: Path, text: str) -> list[str]:
    """Relative Markdown links of ``text`` (in file ``path``) whose target does not exist."""
    bad = []
    for target in _LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (path.parent / target).exists():
            bad.append(f"{path.relative_to(REPO)}: link {target}")
    return bad


def missing_repo_paths(path: Path, text: str) -> list[str]:
    """Repository paths named in ``text`` that do not exist (outputs under data/ are not matched)."""
    bad = []
    for target in set(_REPO_PATH.findall(text)):
        if "*" in target or "NAME" in target or "POINT" in target:
            continue
        if not (REPO / target).exists() and not (path.parent / target).exists():
            bad.append(f"{path.relative_to(REPO)}: {target}")
    return bad


def test_markdown_links_resolve():
    bad = []
    for md in _tracked(".md"):
        bad += broken_links(md, md.read_text())
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_named_repository_files_exist():
    bad = []
    for f in _tracked(".md", ".py"):
        if f.parent.name == "tests":  # tests name missing files on purpose (planted faults)
            continue
        bad += missing_repo_paths(f, f.read_text())
    assert not bad, "files named but not in the project:\n" + "\n".join(bad)


def test_physics_reference_is_in_the_project():
    assert (REPO / "docs" / "physics.md").is_file()
    bad = []
    for f in _tracked(".py"):
        if f.name == Path(__file__).name:  # this file names the old reference on purpose
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if _BARE_PHYSICS.search(line) and "docs/physics.md" not in line:
                bad.append(f"{f.relative_to(REPO)}:{i}: {line.strip()}")
    assert not bad, "cite docs/physics.md by its path:\n" + "\n".join(bad)


@pytest.mark.parametrize("text, found", [("see [the formulas](nowhere.md)", True), ("see [x](https://a.b/c.md)", False),
                                         ("as `docs/nowhere.md` says", True), ("`docs/physics.md`", False)])
def test_checker_catches_a_dangling_reference(text, found):
    path = REPO / "docs" / "example.md"
    assert bool(broken_links(path, text) + missing_repo_paths(path, text)) == found
