"""Two independent halves of the MC, split by generated ("parent") event: one to choose the
working point on, the other to quote its figures on.

The scan maximises ``<Z_A>`` over ~1,000 working points of the same MC; the maximum of noisy
estimates is biased high, and the point it picks is partly a fluctuation. Choosing on one half
and quoting ``<Z_A>``, the closure, the cards and their limits on the other removes that bias:
the quoted numbers are those of a point chosen without looking at them.

A parent's detector copies are correlated, so the split is by parent: parent key ``k`` goes to
half ``h(k) = splitmix64(k ^ seed) & 1`` (a fixed hash, so the split is the same whatever the
chunking, workers or engine). Each half's ``xy_mt`` is rebuilt from the processor's per-(parent,
bin) records (``output["parent_fills"]``) with weights x2 (each half stands for the whole
luminosity), its variances parent-grouped, and it comes with the half's own records
(``parent_fills``; :meth:`.parents.StatInputs.from_output` of a half pairs them with its
``xy_mt``), so everything downstream is parent-aware as on the full sample. The split needs records that
account for every fill of every dataset (checked: the records of a dataset must rebuild its
``xy_mt`` values); otherwise :class:`~svjscout.core.exceptions.HistogramError` says which dataset.

The twin of issue 29 has subsets of its own for this (``select`` for choices, ``final`` for every
quoted figure: docs/training_data.md). A run over both (``analysis.event_subset: {subset: [select,
final]}``) records each parent's subset code with its fills (``parent_fills[...]["subset"]``), and
``split_halves(output, subsets=...)`` then makes the ``select`` half from the ``select`` subset and
the ``quote`` half from the ``final`` subset, each scaled by (fraction of both) / (its fraction)
instead of x2 (:func:`subset_halves` gives the argument from the job's event subset).

Example:
    >>> # halves = split_halves(output)  # after the processor, before the scan
    >>> # scan on StatInputs.from_output(halves["select"]), cards on StatInputs.from_output(halves["quote"])
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np

from svjscout.core.exceptions import HistogramError

HALVES = ("select", "quote")
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (a fixed bijective mix of 64-bit keys), elementwise."""
    z = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _M64


def half_of(keys: np.ndarray, seed: int = 0) -> np.ndarray:
    """0 (select) or 1 (quote) per parent key."""
    k = np.asarray(keys, dtype=np.uint64) ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
    return (splitmix64(k) & np.uint64(1)).astype(np.int8)


def subset_halves(names, codes, fractions) -> dict[str, tuple[int, float]]:
    """``{"select": (code, scale), "quote": (code, scale)}`` for :func:`split_halves` from a run's
    event subset of two subsets (``names``, their ``codes`` and expected ``fractions``, in the
    order given; the first is chosen on, the second quoted on). The run's yields are scaled by
    ``1 / (f1 + f2)``; a half made of subset ``i`` alone stands for the whole sample with a
    further ``(f1 + f2) / f_i``."""
    if len(names) != 2:
        raise HistogramError(f"split by subsets: the run's event subset is {list(names)}, expected two subsets "
                             "(the one the working point is chosen on, then the one it is quoted on)")
    total = float(sum(fractions))
    return {half: (int(code), total / float(f)) for half, code, f in zip(HALVES, codes, fractions)}


def _rebuild(h, fills: Mapping[str, Mapping], which: int | None, seed: int,
             subsets: Mapping[str, tuple[int, float]] | None = None):
    """``xy_mt`` (a copy of ``h``) filled from the records of half ``which`` (None: all), weights x2
    for a half (with ``subsets``: the half's subset code and scale)."""
    out = h.copy()
    shape = out.view(flow=True).shape
    vals, var = np.zeros(int(np.prod(shape))), np.zeros(int(np.prod(shape)))
    scale = 1.0 if which is None else (2.0 if subsets is None else subsets[HALVES[which]][1])
    recs = {}
    for dataset, f in fills.items():
        key = np.asarray(f["key"], np.uint64)
        if which is None:
            keep = np.ones(len(key), bool)
        elif subsets is None:
            keep = half_of(key, seed) == which
        else:
            keep = np.asarray(f["subset"]) == subsets[HALVES[which]][0]
        b = np.asarray(f["bin"], np.int64)[keep]
        w = np.asarray(f["weight"], np.float64)[keep] * scale
        np.add.at(vals, b, w)
        np.add.at(var, b, w**2)  # the records are per (parent, bin) sums: parent-grouped variances
        recs[dataset] = {"key": key[keep], "bin": b, "weight": w}
        if "subset" in f:
            recs[dataset]["subset"] = np.asarray(f["subset"])[keep]
    view = out.view(flow=True)
    view["value"] = vals.reshape(shape)
    view["variance"] = var.reshape(shape)
    return out, recs


def split_halves(output: Mapping, seed: int = 0, rtol: float = 1e-6,
                 subsets: Mapping[str, tuple[int, float]] | None = None) -> dict[str, dict]:
    """``{"select": out, "quote": out}``: the processor output's ``xy_mt`` split by parent.

    Each ``out`` is ``{"hists": {"xy_mt": H}, "parent_fills": {...}, "datasets": ...}``: the
    half's histogram and its own parent records (the records split with the histogram).
    ``subsets`` (:func:`subset_halves`): the halves are the parents of two subsets of the run's
    event subset (their codes in the records' ``subset``), not a hash of the parent key.

    Raises:
        HistogramError: no ``xy_mt``, or a dataset of ``xy_mt`` with events but no records that
            rebuild its values (data, outputs without ``parent_fills``); with ``subsets``, records
            without subset codes, or subset codes other than the two halves'.
    """
    h = output.get("hists", {}).get("xy_mt")
    if h is None:
        raise HistogramError("split_halves: the output has no xy_mt histogram")
    fills = output.get("parent_fills") or {}
    full, _ = _rebuild(h, fills, None, seed)
    names = list(h.axes["dataset"])
    for i, name in enumerate(names):
        want = np.asarray(h.view(flow=True)["value"])[i]
        got = np.asarray(full.view(flow=True)["value"])[i]
        scale = max(float(np.abs(want).sum()), 1e-300)
        if float(np.abs(want - got).sum()) > rtol * scale:
            why = "has no parent records" if name not in fills else "has parent records that do not add up to its xy_mt"
            raise HistogramError(f"split_halves: dataset {name!r} {why} (data, or an output written without "
                                 "parent_fills): the MC cannot be split by parent; choose the working point with "
                                 "scan.split: false, and its figures are then quoted on the events it was chosen on")
    if subsets is not None:
        want = {code for code, _ in subsets.values()}
        for name, f in fills.items():
            if "subset" not in f:
                raise HistogramError(f"split_halves: dataset {name!r} has no subset codes in its parent records: the "
                                     "run was not made with two subsets in analysis.event_subset")
            other = set(np.unique(np.asarray(f["subset"])).tolist()) - want
            if other:
                raise HistogramError(f"split_halves: dataset {name!r} has fills of subset code(s) {sorted(other)}, "
                                     f"outside the two halves' {sorted(want)}")
    halves = {}
    for which, label in enumerate(HALVES):
        hh, recs = _rebuild(h, fills, which, seed, subsets)
        halves[label] = {"hists": {"xy_mt": hh}, "parent_fills": recs,
                         "datasets": copy.deepcopy(output.get("datasets", {}))}
    return halves


def quote_half(output: Mapping) -> Mapping:
    """The events a run quotes its figures on, from its record of the working point
    (``output["wp"]``): the ``quote`` half when the point was chosen on the other half (by the
    parent hash with its ``split_seed``, or by the run's two event subsets, ``split_subsets``),
    else the whole output."""
    wp = output.get("wp") if isinstance(output.get("wp"), Mapping) else {}
    if not wp.get("split"):
        return output
    subsets = wp.get("split_subsets")
    subsets = None if not subsets else {k: (int(v[0]), float(v[1])) for k, v in subsets.items()}
    return split_halves(output, seed=int(wp.get("split_seed", 0)), subsets=subsets)["quote"]
