"""Lossless skims of generated files: keep a subset of events, keep the normalisation.

A skim drops events that the analysis can never use. The ``Runs`` tree (generated events and sums
of weights) and ``svjscout_meta`` (cross section) are copied unchanged, so a skimmed file is
normalised exactly like its input; the metadata records the skim and the events kept.

* :func:`write_subset`: the copy itself (any event mask, optionally rescaling ``genWeight``).
* :func:`thin_copies`: at most k detector copies per parent, chosen at random with weights m / k
  (Horvitz-Thompson: unbiased), for samples whose passing parents pass in many correlated copies.

The preselection skim (the events passing the analysis preselection, decided by running the
processor itself, so the selection has one implementation) drives the whole runner, so it lives in
the jobs layer, :mod:`svjscout.jobs.commands_skim`; it is used for the embedded QCD sample, whose
detector copies almost all fail R_T > 0.24 (samples/embedded/make.sh):

    python -m svjscout.jobs.commands_skim IN.root OUT.root [--job JOB.yaml]
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import uproot


def _columns(arrays) -> dict:
    """Flat branches -> uproot columns: jagged ones (e.g. PSWeight) as awkward, their counters
    (nPSWeight) left for uproot to write, the rest as numpy."""
    jagged = {k for k in arrays.fields if arrays[k].ndim > 1}
    return {k: arrays[k] if k in jagged else ak.to_numpy(arrays[k]) for k in arrays.fields
            if not (k[:1] == "n" and k[1:] in jagged)}


def collections_of(arrays) -> dict:
    """Flat branches -> uproot columns with NanoAOD collections rebuilt: every counter ``nX`` whose
    ``X_*`` branches are jagged becomes one zipped collection ``X`` (uproot writes ``nX`` and
    ``X_field`` again), whatever the layout (``ScoutingParticle``, ``ScoutingPFCandidate``,
    ``ScoutingPrimaryVertex``, ``GenDarkQuark``, ...); the other branches as :func:`_columns`."""
    fields, cols, used = arrays.fields, {}, set()
    for counter in fields:
        name = counter[1:]
        members = [k for k in fields if k.startswith(name + "_") and arrays[k].ndim > 1] if counter[:1] == "n" else []
        if members:
            cols[name] = ak.zip({k[len(name) + 1:]: arrays[k] for k in members})
            used.update(members, {counter})
    return {**_columns(arrays[[k for k in fields if k not in used]]), **cols}


def compression_of(spec: str):
    """``LZMA:6``, ``ZSTD:5``, ``LZ4:4``, ``ZLIB:1`` -> an uproot compression object."""
    name, _, level = spec.partition(":")
    return getattr(uproot, name.upper())(int(level or 1))


def thin_copies(run: np.ndarray, parent: np.ndarray, event: np.ndarray, k: int,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keep at most ``k`` of each parent's copies: (mask, weight factor) per copy.

    A parent (``run``, ``parent``) with m <= k copies keeps them all (factor 1); with m > k, k of
    them drawn uniformly without replacement, each with factor m / k: every copy is kept with
    probability k / m, so the thinned weighted sum of any observable is an unbiased estimate of the
    full one (Horvitz-Thompson), and the parent's summed weight is kept exactly when its copies
    weigh the same. The draw depends on (seed, run, parent) and the copies' ``event`` numbers only,
    not on their order in the file.

    >>> keep, f = thin_copies(np.array([1, 1, 1, 1]), np.array([7, 7, 7, 8]), np.array([4, 2, 3, 9]), k=2)
    >>> int(keep[:3].sum()), bool(keep[3]), f.tolist()[3], sorted(set(f[:3][keep[:3]].tolist()))
    (2, True, 1.0, [1.5])
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"max copies per parent must be a positive integer, got {k!r}")
    run, parent, event = (np.asarray(a, dtype=np.int64) for a in (run, parent, event))
    keep = np.ones(len(event), dtype=bool)
    factor = np.ones(len(event))
    order = np.lexsort((event, parent, run))
    bounds = np.flatnonzero(np.diff(run[order]) | np.diff(parent[order])) + 1
    for group in np.split(order, bounds):
        m = len(group)
        if m <= k:
            continue
        rng = np.random.default_rng([seed, int(run[group[0]]), int(parent[group[0]])])
        chosen = group[rng.choice(m, size=k, replace=False)]
        keep[group] = False
        keep[chosen] = True
        factor[chosen] = m / k
    return keep, factor


def write_subset(inp: str | Path, out: str | Path, keep, note: dict, compression: str = "ZSTD:5",
                 step: int = 20000, scale=None) -> int:
    """Copy ``inp`` to ``out`` with only the events where ``keep(arrays)`` is True.

    ``keep`` gets each block of events (awkward, flat branch names) and returns a boolean mask;
    ``scale`` (optional) gets the kept events of the block and returns the factor of their
    ``genWeight`` (:func:`thin_copies`). ``Runs`` and ``svjscout_meta`` are copied; ``note`` is
    added to the metadata with the counts. Returns the number of events written.
    """
    with uproot.open(inp) as f:
        tree = f["Events"]
        runs = f["Runs"].arrays(library="ak")
        meta = json.loads(str(f["svjscout_meta"]))
        n_in, kept, tree_out = tree.num_entries, 0, None
        with uproot.recreate(out, compression=compression_of(compression)) as g:
            for arrays in tree.iterate(step_size=step, library="ak"):
                sel = arrays[np.asarray(keep(arrays), dtype=bool)]
                cols = collections_of(sel)
                if scale is not None:
                    cols["genWeight"] = (np.asarray(cols["genWeight"], dtype=np.float64)
                                         * np.asarray(scale(sel), dtype=np.float64)).astype(np.float32)
                if tree_out is None:
                    types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in cols.items()}
                    tree_out = g.mktree("Events", types)
                tree_out.extend(cols)
                kept += len(sel)
            runs_cols = _columns(runs)
            g.mktree("Runs", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype)
                              for k, v in runs_cols.items()}).extend(runs_cols)
            meta.update({**note, "n_before_skim": int(n_in), "n_written": int(kept)})
            g["svjscout_meta"] = json.dumps(meta, sort_keys=True)
    return kept
