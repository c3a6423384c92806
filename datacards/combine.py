"""Collect limits from real Combine output (``combine -M AsymptoticLimits``) into limits.json format.

Combine writes ``higgsCombine<NAME>.AsymptoticLimits.mH<MASS>.root`` with a TTree ``limit``: one
entry per quantile, branch ``limit`` (the limit on r) and ``quantileExpected`` (0.025, 0.16, 0.5,
0.84, 0.975 for the expected band, -1 for the observed limit). ``jobs/combine_limits.sh`` runs
Combine in each ``DIR/datacards/POINT/`` folder, so the point is the folder name (or the NAME
given with ``-n``, which the script sets to ``.POINT``).

Example:
    >>> # lim = collect_combine_limits("out/datacards")
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re

import numpy as np
import uproot

from svjscout.core.exceptions import DatacardError, InputFileError

from .limits import index_verdict, read_index

log = logging.getLogger(__name__)

QUANTILE_KEYS = {0.025: "exp-2", 0.16: "exp-1", 0.5: "exp0", 0.84: "exp+1", 0.975: "exp+2"}
_NAME_RE = re.compile(r"higgsCombine\.?(?P<name>.*?)\.AsymptoticLimits")


def read_limit_file(path: str | os.PathLike) -> dict[str, float | None]:
    """Limits from one Combine output file.

    Args:
        path: ``higgsCombine*.AsymptoticLimits.*.root``.

    Returns:
        ``{"exp-2", "exp-1", "exp0", "exp+1", "exp+2", "obs"}`` (None where absent).

    Raises:
        InputFileError: unreadable file or no ``limit`` tree / branches (names the file).
    """
    try:
        with uproot.open(path) as f:
            if "limit" not in f:
                raise InputFileError(f"{path}: no TTree 'limit' (keys {f.keys()})")
            t = f["limit"]
            missing = [b for b in ("limit", "quantileExpected") if b not in t.keys()]
            if missing:
                raise InputFileError(f"{path}: tree 'limit' lacks branch(es) {missing}")
            lim = np.asarray(t["limit"].array(library="np"), dtype=float)
            q = np.asarray(t["quantileExpected"].array(library="np"), dtype=float)
    except InputFileError:
        raise
    except Exception as exc:  # uproot raises many types for corrupt files
        raise InputFileError(f"cannot read Combine output '{path}': {exc}") from exc
    out: dict[str, float | None] = {k: None for k in (*QUANTILE_KEYS.values(), "obs")}
    for value, qe in zip(lim, q):
        if qe < 0:
            out["obs"] = float(value)
            continue
        for qk, key in QUANTILE_KEYS.items():
            if abs(qe - qk) < 2e-3:
                out[key] = float(value)
    missing = [k for k, v in out.items() if v is None and k != "obs"]
    if missing:
        log.warning("%s: no entries for %s", path, missing)
    return out


def missing_quantiles(lim: dict) -> list[str]:
    """Expected quantiles without a finite value in one point's limits (an empty or partial Combine tree)."""
    return [k for k in QUANTILE_KEYS.values() if lim.get(k) is None or not np.isfinite(lim[k])]


def collect_combine_limits(cards_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                           pattern: str = "higgsCombine*.AsymptoticLimits.*.root") -> dict:
    """Limits of every point of the current ``index.json`` from Combine's outputs.

    Only the points listed in ``index.json`` are collected, each from its own folder, and only from
    a Combine output at least as new as the point's card: an output left from an earlier card (a
    re-used folder) is stale and refused, never reported as current.

    Args:
        cards_dir: ``DIR``, ``DIR/datacards`` or the ``index.json``.
        out: optional path of ``limits.json`` to write.
        pattern: glob of the output files inside each point folder.

    Returns:
        ``{point: {"exp-2", ..., "exp+2", "obs"}}``, the format of :func:`.limits.quick_limits`.

    Nothing is written unless every point has all five expected quantiles: an empty ``limit`` tree
    (Combine failed, e.g. its ``--rAbsAcc`` as large as the limit) is refused, never stored as nulls.

    Raises:
        DatacardError: no index, or points without a Combine output, with a stale one or with an
            empty / incomplete one (all named, with their cards); ``out`` is then left untouched.
    """
    index, cards = read_index(cards_dir)
    res, missing, stale, empty = {}, [], [], []
    for point, card in cards.items():
        files = sorted(glob.glob(os.path.join(os.path.dirname(card), pattern)), key=os.path.getmtime)
        if not files:
            missing.append(point)
            continue
        newest = files[-1]
        if len(files) > 1:
            log.warning("several Combine outputs for %s; using the newest, %s", point, newest)
        if os.path.getmtime(newest) < os.path.getmtime(card):
            stale.append(f"{point} ({os.path.basename(newest)} is older than its datacard)")
            continue
        res[point] = read_limit_file(newest)
        lacking = missing_quantiles(res[point])
        if lacking:
            empty.append(f"{point} (card {card}: {os.path.basename(newest)} has no {', '.join(lacking)})")
    if missing or stale or empty:
        parts = ([f"no Combine output '{pattern}' for {missing}"] if missing else []) + (
            [f"stale outputs: {stale}"] if stale else []) + (
            [f"Combine gave no result for {empty}; see combine.log beside the card"] if empty else [])
        raise DatacardError("; ".join(parts) + " (run jobs/combine_limits.sh on these cards first; nothing was "
                            "written" + (f", {out} is unchanged)" if out is not None else ")"))
    for entry in res.values():
        entry.update(index_verdict(index))  # the working point's verdict, as quick_limits stamps it
    if out is not None:
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
    return res
