"""Lossless skims of generated files: keep a subset of events, keep the normalisation.

A skim drops events that the analysis can never use. The ``Runs`` tree (generated events and sums
of weights) and ``svjscout_meta`` (cross section) are copied unchanged, so a skimmed file is
normalised exactly like its input; the metadata records the skim and the events kept.

* :func:`write_subset`: the copy itself (any event mask).

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


def write_subset(inp: str | Path, out: str | Path, keep, note: dict, compression: str = "ZSTD:5",
                 step: int = 20000) -> int:
    """Copy ``inp`` to ``out`` with only the events where ``keep(arrays)`` is True.

    ``keep`` gets each block of events (awkward, flat branch names) and returns a boolean mask.
    ``Runs`` and ``svjscout_meta`` are copied; ``note`` is added to the metadata with the counts.
    Returns the number of events written.
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
