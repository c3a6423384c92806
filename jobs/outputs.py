"""A run's output folder: never mixed with, nor hiding behind, the outputs of an earlier run.

Every ``svjscout run`` writes ``manifest.json`` into its output folder: the files it wrote
(relative paths), when, with which job and configuration digest, and whether it finished. A
second run into the same folder

* refuses (:class:`OutputDirError`) when the folder holds svjscout outputs, unless
  ``--overwrite`` is given: then exactly the files listed in the earlier manifest are removed
  (and the folders the run created, once empty), nothing else;
* with ``--resume`` continues an earlier run of the *same* configuration (same digest: the
  resolved job, the models' SHA-256): nothing is removed (chunks in ``executor.checkpoint_dir``
  are reused) and every output is written again; a different configuration is refused, so
  results of two configurations are never mixed;
* refuses a folder with svjscout outputs but no manifest (written by an older version or by
  hand): there is no list of what is safe to remove.

The files a run wrote are found by comparing the folder before and after the run (new files
and files whose size or modification time changed), so a manifest is complete even when a stage
fails halfway: it is written in a ``finally`` with ``status: failed``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path

from svjscout import __version__
from svjscout.core.exceptions import SVJScoutError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Files whose presence marks a folder as holding svjscout outputs (with or without a manifest).
MARKERS = ("summary.md", "histograms.coffea", "histograms.root", "cutflow.json", "limits.json", "provenance.json",
           "scan.csv", os.path.join("datacards", "index.json"))


class OutputDirError(SVJScoutError):
    """The output folder holds the outputs of an earlier run and the command may not replace them."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file below ``root``."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            try:
                st = p.stat()
            except OSError:
                continue
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def read_manifest(root: str | Path) -> dict | None:
    """The manifest of the run that wrote ``root``, or None."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise OutputDirError(f"{path}: unreadable manifest ({err}); remove the folder's svjscout outputs "
                             "by hand") from err


class RunOutputs:
    """The output folder of one run: checks it before, lists what the run wrote after.

    Use as a context manager around the whole run::

        with RunOutputs(out, digest, job="local", overwrite=False) as outputs:
            ...  # write files below out
    """

    def __init__(self, root: str | Path, digest: str, job: str, overwrite: bool = False, resume: bool = False,
                 command: list[str] | None = None):
        if overwrite and resume:
            raise OutputDirError("give --overwrite or --resume, not both")
        self.root = Path(root)
        self.digest, self.job, self.overwrite, self.resume = digest, job, overwrite, resume
        self.command = command
        self.removed: list[str] = []
        self._before: dict[str, tuple[int, int]] = {}
        self._kept: list[str] = []

    # -- before -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Refuse, or remove the earlier run's files, as the module docstring says."""
        if not self.root.exists():
            self.root.mkdir(parents=True)
        elif not self.root.is_dir():
            raise OutputDirError(f"{self.root}: exists and is not a folder")
        manifest = read_manifest(self.root)
        if manifest is None:
            found = [m for m in MARKERS if (self.root / m).exists()]
            if found:
                raise OutputDirError(
                    f"{self.root}: holds svjscout outputs ({', '.join(found)}) but no {MANIFEST}, so what is safe to "
                    "remove is unknown; delete them or choose another --out")
        else:
            earlier = f"job {manifest.get('job')!r}, {manifest.get('status')}, {manifest.get('created')}"
            if self.resume:
                if manifest.get("digest") != self.digest:
                    raise OutputDirError(
                        f"{self.root}: --resume needs the configuration of the earlier run ({earlier}; digest "
                        f"{manifest.get('digest')}), this one differs (digest {self.digest}); use --overwrite to "
                        "recompute with the new configuration, or another --out")
                # same configuration: nothing is removed (a checkpoint directory inside the folder
                # is what makes resuming cheap); every output is written again
                self._kept = [f for f in manifest.get("files", []) if (self.root / f).is_file()]
            elif not self.overwrite:
                raise OutputDirError(
                    f"{self.root}: holds the outputs of an earlier svjscout run ({earlier}; "
                    f"{len(manifest.get('files', []))} files in {MANIFEST}); give --overwrite to replace them (removes "
                    "exactly those files), --resume to continue a run of the same configuration, or another --out")
            else:
                self._remove(manifest)
        self._before = _snapshot(self.root)

    def _remove(self, manifest: dict) -> None:
        """Remove the files (and then empty folders) a manifest lists; every entry is checked first,
        so a manifest with one entry outside the folder removes nothing at all."""
        root = self.root.resolve()

        def inside(rel: str, kind: str) -> Path:
            p = (self.root / rel).resolve()
            if root not in p.parents:
                raise OutputDirError(f"{self.root / MANIFEST}: lists the {kind} {rel!r}, outside the folder; "
                                     "nothing was removed")
            return p

        files = [inside(rel, "file") for rel in manifest.get("files", [])]
        dirs = [inside(rel, "folder") for rel in manifest.get("dirs", [])]
        for rel, p in zip(manifest.get("files", []), files):
            if p.is_file():
                p.unlink()
                self.removed.append(rel)
        for p in sorted(dirs, key=lambda d: -len(d.parts)):
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        log.info("%s: removed %d files of the earlier run", self.root, len(self.removed))

    # -- after --------------------------------------------------------------------------
    def written(self) -> list[str]:
        """Files below the folder that this run created or changed, plus, when resuming, those of
        the earlier run of the same configuration that are still there (relative, sorted)."""
        now = _snapshot(self.root)
        new = {p for p, st in now.items() if self._before.get(p) != st and p != MANIFEST}
        return sorted(new | {p for p in self._kept if p in now})

    def finish(self, status: str) -> Path:
        files = self.written()
        dirs = sorted({str(Path(f).parent) for f in files if str(Path(f).parent) != "."})
        manifest = {"svjscout": __version__, "job": self.job, "digest": self.digest, "status": status,
                    "created": _now(), "command": self.command, "files": files, "dirs": dirs,
                    "removed_before_run": self.removed}
        path = self.root / MANIFEST
        path.write_text(json.dumps(manifest, indent=1) + "\n")
        return path

    def __enter__(self) -> RunOutputs:
        self.prepare()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.finish("complete" if exc_type is None else f"failed ({exc_type.__name__})")
        return False
