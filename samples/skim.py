"""Lossless skims of generated files: keep a subset of events, keep the normalisation.

A skim drops events that the analysis can never use. The ``Runs`` tree (generated events and sums
of weights) and ``svjscout_meta`` (cross section) are copied unchanged, so a skimmed file is
normalised exactly like its input; the metadata records the skim and the events kept.

* :func:`write_subset`: the copy itself (any event mask, optionally rescaling ``genWeight``).
* :func:`thin_copies`: at most k detector copies per parent, chosen at random with weights m / k
  (Horvitz-Thompson: unbiased), for samples whose passing parents pass in many correlated copies.
* :func:`light_floors` and :func:`roulette_light`: Russian roulette on the light rows of a biased
  sample (high pT-hat parents weigh little): in each cell (plane, M_T bin) a row lighter than the
  cell's floor is kept with probability w / floor and weight floor, the floor chosen to cost at
  most a given share of the cell's N_eff. The bulk of a QCD skim's rows carry a few per cent of
  its sum W^2, so this halves a file for ~1 % of its effective statistics.

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


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (uint64 -> uint64, a bijection that mixes every bit)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _row_uniforms(seed: int, *keys: np.ndarray) -> np.ndarray:
    """One uniform in [0, 1) per row from (seed, keys...) alone: chained SplitMix64 over the keys,
    the top 53 bits. Vectorised, and independent of the rows' order."""
    with np.errstate(over="ignore"):
        z = _mix64(np.full(len(keys[0]), np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64))
        for k in keys:
            z = _mix64(z ^ np.asarray(k).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def light_floors(weight: np.ndarray, group: np.ndarray, cell: np.ndarray, max_loss: float) -> dict:
    """Per cell, the largest weight floor whose roulette (:func:`roulette_light`) costs at most
    ``max_loss`` of the cell's expected N_eff over groups (parents).

    A row of weight w below the floor t is kept with probability w / t and weight t: its expected
    weight stays w and the variance it adds is w (t - w). The cell's expected Kish N_eff over groups
    is (sum w)^2 / (sum_g W_g^2 + sum_rows w (t - w) [w < t]), W_g a group's summed weight in the
    cell; it falls as t grows, and the floor is the largest of the cell's own weights at which it is
    still >= (1 - max_loss) of the value without roulette. {cell: floor}, 0 where nothing is gained.

    >>> light_floors(np.array([1.0, 1.0, 1e-3, 1e-3]), np.arange(4), np.zeros(4, int), 0.01)
    {0: 1.0}
    >>> light_floors(np.array([1.0, 1.0, 0.5]), np.arange(3), np.zeros(3, int), 0.01)
    {0: 0.0}
    """
    if not (0.0 <= max_loss < 1.0):
        raise ValueError(f"the roulette's N_eff loss must be in [0, 1), got {max_loss!r}")
    weight, cell = np.asarray(weight, dtype=np.float64), np.asarray(cell)
    group = np.asarray(group)
    floors = {}
    for c in np.unique(cell):
        m = cell == c
        w = weight[m]
        _, inv = np.unique(group[m], return_inverse=True)
        base = float(np.sum(np.bincount(inv, w) ** 2))
        total, best = w.sum(), 0.0
        key = c.item() if hasattr(c, "item") else c
        if total <= 0 or base <= 0:
            floors[key] = 0.0
            continue
        n_eff0 = total**2 / base
        ws = np.sort(w)
        # added variance at floor t = ws[i]: sum_{w < t} w (t - w), with prefix sums
        s1, s2 = np.concatenate([[0.0], np.cumsum(ws)]), np.concatenate([[0.0], np.cumsum(ws**2)])
        below = np.searchsorted(ws, ws, side="left")  # rows strictly lighter than each candidate
        added = ws * s1[below] - s2[below]
        ok = total**2 / (base + added) >= (1.0 - max_loss) * n_eff0
        if ok.any() and ws[np.flatnonzero(ok).max()] > ws[0]:  # a floor at the lightest row changes nothing
            best = float(ws[np.flatnonzero(ok).max()])
        floors[key] = best
    return floors


def roulette_light(weight: np.ndarray, floor: np.ndarray, run: np.ndarray, parent: np.ndarray,
                   event: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Russian roulette on light rows: (mask, weight factor) per row.

    A row lighter than its ``floor`` is kept with probability p = w / floor, with weight factor
    1 / p (its weight becomes the floor); heavier rows are kept as they are. Every row's expected
    weight is unchanged (unbiased for any weighted sum), and the Kish N_eff of the result counts the
    variance added (:func:`light_floors` chooses floors that cost little of it). The draw depends on
    (seed, run, parent, event) only, not on the order of the rows.

    >>> keep, f = roulette_light(np.array([2.0, 0.5]), np.array([1.0, 1.0]), np.ones(2), np.array([1, 2]),
    ...                          np.array([1, 2]), seed=3)
    >>> bool(keep[0]), float(f[0]), bool(f[1] == 2.0) if keep[1] else True
    (True, 1.0, True)
    """
    weight, floor = np.asarray(weight, dtype=np.float64), np.asarray(floor, dtype=np.float64)
    if np.any(~np.isfinite(weight)) or np.any(weight < 0):
        raise ValueError("the roulette needs finite, non-negative weights")
    run, parent, event = (np.asarray(a, dtype=np.int64) for a in (run, parent, event))
    p = np.ones(len(weight))
    light = weight < floor
    p[light] = weight[light] / floor[light]
    u = _row_uniforms(seed, run, parent, event)
    keep = u < p
    factor = np.where(keep, 1.0 / np.maximum(p, 1e-300), 1.0)
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
