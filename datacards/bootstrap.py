"""Paired Poisson bootstrap over generated events ("parents") of a run's quoted figures.

A run's figures at its working point (expected limits, the cards' non-closure) rest on a finite MC
sample; their statistical spread is that of the parents the quoted events come from (a parent's
detector copies move together). Issue 29 asks for confidence intervals on every comparison
(the MDMM pair against the analysis-aware fine-tune, seed by seed) on the final subset.

Replica ``r`` gives every parent ``p`` of dataset ``d`` a count ``m ~ Poisson(1)`` from a fixed
hash of ``(d, p, r, seed)`` (:func:`parent_counts`): the count depends on the parent's identity
only, so two runs over the same events (two twin pairs on the same final subset) see the *same*
resampled population in replica ``r``: the bootstrap is paired, and the shared fluctuations
cancel in their ratio. A parent drawn ``m`` times enters as ``m`` distinct parents (its records
repeated under new keys), so the replica's histogram has values ``sum m w`` and parent-grouped
variances ``sum m (sum w)^2``, as a freshly generated sample of that composition would
(:func:`resample`). Everything downstream (the statistics guard, the non-closure, the cards and
the limits) is then recomputed on the replica exactly as on the run (:func:`bootstrap`).

The signal's systematic shifts stay those of the full run (relative variations); the
working point stays the run's (chosen on other events: the interval is that of the quoted figure
given the choice).

Example:
    >>> # half = split_halves(output, subsets=...)["quote"]      # the events the run quotes on
    >>> # reps = bootstrap(half, datasets, wp, limits_figure(card_kw), n_boot=100)
    >>> # ratio = reps_b["svj_mz2000_rinv0.3"] / reps_a["svj_mz2000_rinv0.3"]  # paired, replica by replica
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from svjscout.core import splits
from svjscout.core.exceptions import DatacardError, HistogramError
from svjscout.core.parents import group_fills

from .limits import quick_limits
from .parents import StatInputs
from .split import _rebuild, splitmix64
from .writer import write_datacards

log = logging.getLogger(__name__)

__all__ = ["parent_counts", "resample", "bootstrap", "limits_figure", "binned_auc", "auc_figure",
           "percentile_interval", "paired_ratio", "paired_difference"]

#: Salt of the replicas' seed (independent of the subsets, folds and halves).
_BOOT_SALT = 0x0B0075_7A9
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: Poisson(1) cumulative probabilities, k = 0..19 (the tail beyond is < 1e-18).
_POISSON1_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(20)])


def parent_counts(dataset: str, keys: np.ndarray, replica: int, seed: int = 0) -> np.ndarray:
    """Poisson(1) count (int64) of every parent key of ``dataset`` in replica ``replica``: a fixed
    function of (dataset, key, replica, seed), so the same parent gets the same count in any run."""
    keys = np.asarray(keys, dtype=np.uint64)
    u = splits.split_u(np.full(len(keys), dataset, dtype=object), np.full(len(keys), int(replica), np.uint64),
                       None, keys, (int(seed) ^ _BOOT_SALT) % 2**64)
    return np.searchsorted(_POISSON1_CDF, u, side="right").astype(np.int64)


def resample(half: Mapping, replica: int, seed: int = 0) -> dict:
    """Replica ``replica`` of a run's output (or one half of it: ``{"hists": {"xy_mt"},
    "parent_fills", "datasets"}``): every parent's records repeated ``m`` times (distinct keys),
    ``xy_mt`` rebuilt from them. Every dataset of ``xy_mt`` with events needs its parent records."""
    h = half["hists"]["xy_mt"]
    fills = half.get("parent_fills") or {}
    values = np.asarray(h.view(flow=True)["value"])
    for i, name in enumerate(h.axes["dataset"]):
        if name not in fills and np.any(values[i] != 0):
            raise HistogramError(f"bootstrap: dataset {name!r} has events but no parent records: it cannot be "
                                 "resampled by parent")
    new = {}
    for dataset, f in fills.items():
        # per (parent, bin) sums (a normalised output's records are already): a parent's copies in
        # one bin add before squaring
        key, bins, weight = group_fills(f["key"], f["bin"], f["weight"])
        m = parent_counts(dataset, key, replica, seed)
        idx = np.repeat(np.arange(len(key)), m)
        copy = np.arange(len(idx)) - np.repeat(np.cumsum(m) - m, m)  # 0..m-1 within each record
        with np.errstate(over="ignore"):
            mixed = splitmix64(key[idx] ^ (copy.astype(np.uint64) * _GOLDEN))
        k = np.where(copy == 0, key[idx], mixed)
        new[dataset] = {"key": k, "bin": bins[idx], "weight": weight[idx]}
    hh, recs = _rebuild(h, new, None, 0)
    return {"hists": {"xy_mt": hh}, "parent_fills": recs, "datasets": half.get("datasets", {})}


def bootstrap(half: Mapping, figure: Callable[[StatInputs], Mapping[str, float]], n_boot: int = 100,
              seed: int = 0) -> dict[str, np.ndarray]:
    """``{name: array of n_boot values}``: ``figure`` (a function of the statistics inputs returning
    named numbers) on replicas 0..n_boot-1 of ``half`` (:func:`resample`). A figure that cannot be
    made on a replica (e.g. the cards refuse it) is NaN there."""
    if n_boot < 2:
        raise DatacardError(f"bootstrap: n_boot={n_boot}, expected >= 2")
    out: dict[str, list[float]] = {}
    for r in range(n_boot):
        try:
            vals = figure(StatInputs.from_output(resample(half, r, seed)))
        except (DatacardError, HistogramError) as err:
            log.info("bootstrap replica %d: %s", r, err)
            vals = {}
        for name in set(out) | set(vals):
            out.setdefault(name, [math.nan] * r).append(float(vals.get(name, math.nan)))
    return {k: np.asarray(v) for k, v in out.items()}


def limits_figure(datasets: Mapping, wp: Sequence[float], card_kw: Mapping | None = None,
                  quantile: str = "exp0") -> Callable[[StatInputs], dict[str, float]]:
    """A :func:`bootstrap` figure: the cards at ``wp`` written (``card_kw``: the run's card
    keywords) into a temporary folder and their quick expected limits (``quantile``) per signal
    point, plus ``kappa_max`` (the largest of the cards' non-closure kappas) and ``backed`` (1/0:
    the statistics guard on the replica)."""
    kw = dict(card_kw or {})
    kw["allow_unbacked"] = True  # a replica below the guard is counted, not refused
    kw.setdefault("validate", False)

    def figure(inputs: StatInputs) -> dict[str, float]:
        with tempfile.TemporaryDirectory(prefix="svjscout_boot_") as tmp:
            index = write_datacards(inputs, dict(datasets), tuple(wp), tmp, **kw)
            lim = quick_limits(f"{tmp}/datacards")
        vals = {name: float(v[quantile]) for name, v in lim.items() if isinstance(v, dict) and quantile in v}
        kappas = [k for k in np.ravel(index.get("nonclosure_kappa", [])) if k is not None]
        vals["kappa_max"] = float(max(kappas)) if kappas else math.nan
        vals["backed"] = float(bool(index.get("backed")))
        return vals

    return figure


def binned_auc(sig: np.ndarray, bkg: np.ndarray) -> float:
    """ROC AUC of a score histogrammed in ordered bins (its flow bins at the ends): P(s > b) +
    P(s = b) / 2 for a signal and a background event drawn with the bins' weights, i.e. the
    weighted AUC of the binned score with ties counted half. NaN when either total is not > 0."""
    s, b = np.asarray(sig, np.float64), np.asarray(bkg, np.float64)
    total_s, total_b = s.sum(), b.sum()
    if not (total_s > 0 and total_b > 0):
        return math.nan
    below = np.cumsum(b) - b
    return float(np.sum(s * (below + 0.5 * b)) / (total_s * total_b))


def auc_figure(datasets: Mapping) -> Callable[[StatInputs], dict[str, float]]:
    """A :func:`bootstrap` figure: per signal point ``NAME``, the AUC of the X score (``auc_x:NAME``)
    and of the Y score (``auc_y:NAME``) against the summed MC backgrounds (physics weights), from
    ``xy_mt`` over both planes and every M_T bin (:func:`binned_auc`: the histogram's score bins,
    ties half). Every pair run over the same events gets the same binning, so the figure compares
    pairs (and the shipped pair) on the events a run quotes."""
    signal = [n for n, d in datasets.items() if d.get("kind") == "signal"]
    background = [n for n, d in datasets.items() if d.get("kind") == "background"]

    def figure(inputs: StatInputs) -> dict[str, float]:
        h = inputs.xy_mt
        present = set(h.axes["dataset"])
        vals: dict[str, float] = {}
        for axis in ("x", "y"):
            marginal = {n: np.asarray(h[{"dataset": n}].project(axis).view(flow=True)["value"])
                        for n in signal + background if n in present}
            bkgs = [marginal[n] for n in background if n in marginal]
            for n in signal:
                ok = n in marginal and bkgs
                vals[f"auc_{axis}:{n}"] = binned_auc(marginal[n], np.sum(bkgs, axis=0)) if ok else math.nan
        return vals

    return figure


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of the finite ``values`` (NaN, NaN if fewer than 10)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 10:
        return math.nan, math.nan
    lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_ratio(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float, int]:
    """``(median, lo, hi, n)`` of ``b / a`` replica by replica (the same replicas: paired), over the
    replicas where both are finite."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b) & (a != 0)
    return _median_interval(b[ok] / a[ok], level)


def paired_difference(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float, int]:
    """``(median, lo, hi, n)`` of ``b - a`` replica by replica (paired), over the replicas where both
    are finite (for figures such as an AUC, where a difference reads better than a ratio)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return _median_interval(b[ok] - a[ok], level)


def _median_interval(values: np.ndarray, level: float) -> tuple[float, float, float, int]:
    """``(median, lo, hi, n)`` of paired per-replica values (all finite)."""
    lo, hi = percentile_interval(values, level)
    return (float(np.median(values)) if len(values) else math.nan), lo, hi, len(values)
