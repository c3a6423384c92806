"""``provenance.json``: everything needed to say what produced a run's outputs, and to redo it.

Written by every ``svjscout run`` (and ``svjscout process``) into its output folder:

* ``svjscout``: version and ``git describe`` of the source tree, when it is a git checkout;
* ``command``: the command line; ``overrides``: the ``--set``/option overrides as given;
  ``config``: the full job configuration after the overrides (every default spelled out);
* ``digest``: a hash of that configuration (executor settings excluded: they do not change the
  result) and of the ONNX models' contents; ``--resume`` compares it;
* ``environment``: Python, platform, host, and the versions of the packages that shape results;
* ``models``: path, SHA-256 and metadata (feature list, training summary) of each ONNX model;
* ``inputs``: every input file with its size, modification time and number of entries, and the
  files that were skipped with the reason and the sum of weights they took with them;
* ``working_point``: the (x0, y0) of every region-split output and where it came from;
* ``event_subset``: the subset of the train/val/test event split the run processed
  (``analysis.event_subset``: subset, seed, fractions), null for all events;
* ``started``/``finished`` (UTC).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from svjscout import __version__
from svjscout.core.modelmeta import file_sha256, read_metadata

#: Distributions whose versions shape the results (missing ones are recorded as null).
PACKAGES = ("numpy", "awkward", "uproot", "coffea", "hist", "fastjet", "vector", "onnxruntime", "onnx", "dask",
            "distributed", "dask-awkward", "scipy", "iminuit", "pydantic", "matplotlib", "mplhep", "torch",
            "pythia8mc", "correctionlib")


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_describe() -> str | None:
    """``git describe --always --dirty`` of the svjscout source tree, or None (not a checkout)."""
    src = Path(__file__).resolve().parent.parent
    if not (src / ".git").exists():
        return None
    try:
        res = subprocess.run(["git", "-C", str(src), "describe", "--always", "--dirty", "--tags"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def models(cfg) -> dict[str, dict]:
    """Path, SHA-256 and metadata of the job's ONNX models (``lundnet``, ``twin``)."""
    out = {}
    for key, spec in (("lundnet", cfg.analysis.lundnet_model), ("twin", cfg.analysis.twin_model)):
        path = cfg.resolve(spec)
        entry = {"config": spec, "path": path, "sha256": None, "metadata": None}
        if Path(path).is_file():
            entry["sha256"] = file_sha256(path)
            try:
                entry["metadata"] = read_metadata(path)
            except Exception as err:  # noqa: BLE001 - recorded, the processor raises its own error
                entry["metadata"] = {"error": str(err)}
        out[key] = entry
    return out


def run_digest(cfg) -> str:
    """Hash of what determines a run's results: the resolved job (without the executor) and models."""
    payload = {"config": cfg.model_dump(mode="json", by_alias=True, exclude={"executor"}),
               "models": {k: v["sha256"] for k, v in models(cfg).items()}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def collect(cfg, overrides: dict, started: str, report: dict | None = None, wp: dict | None = None) -> dict:
    """The provenance record of a run (see the module docstring)."""
    report = report or {}
    return {
        "svjscout": {"version": __version__, "git_describe": git_describe()},
        "command": sys.argv,
        "overrides": overrides,
        "config": cfg.model_dump(mode="json", by_alias=True),
        "digest": run_digest(cfg),
        "environment": {"python": sys.version.split()[0], "platform": platform.platform(),
                        "host": socket.gethostname(), "packages": package_versions()},
        "models": models(cfg),
        "inputs": {"files": report.get("inputs", []), "skipped": report.get("skipped", []),
                   "datasets": report.get("datasets", {})},
        "working_point": wp,
        "event_subset": (None if cfg.analysis.event_subset is None
                         else cfg.analysis.event_subset.model_dump(mode="json")),
        "started": started,
        "finished": utc_now(),
    }


def write(outdir: str | Path, record: dict) -> Path:
    path = Path(outdir) / "provenance.json"
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return path
