"""Histogram definitions (hist, Weight storage) filled by the processor.

* ``mt_abcd``: dataset x plane {SP, VP} x region {A, B, C, D} x M_T, at the configured WP;
* ``xy_mt``: dataset x plane x X score (40 bins) x Y score (40 bins) x M_T, so that the scan and
  the datacards move (x0, y0) on bin edges without re-running the processor;
* control histograms: ``met``, ``rt``, ``dphi_min``, ``jet_pt`` (J0, J1), ``lund_plane``
  (primary Lund-plane density ln(1/Delta) x ln(kt/GeV) of J0 and J1).

Regions (:mod:`svjscout.core.regions`): A: X >= x0, Y < y0 | B: X >= x0, Y >= y0 (signal region) | C: X < x0,
Y < y0 | D: X < x0, Y >= y0.
Axis labels are plain text with units (they become the TH1 titles of ``histograms.root``); the
plots use LaTeX labels of their own (``datacards/style.py``). Scores are clipped into [0, 1) and M_T into the
M_T axis, so no entry falls in a flow bin:
events above the last M_T edge count in the last bin.
"""

from __future__ import annotations

import hist
import numpy as np

from svjscout.core.regions import PLANES, REGIONS, region_letters

__all__ = ["PLANES", "REGIONS", "book", "book_syst", "densify", "region_of", "edge_index", "clip_scores", "clip_mt"]
_EPS = 1e-6


def _dataset_axis(datasets, growth: bool = False) -> hist.axis.StrCategory:
    # the output's axis is fixed (not growing): every normalised output has identical axes, so they
    # add up the same whatever the order the chunks finish in. A chunk books a growing axis of its
    # own dataset only (``growth``); :func:`densify` puts the summed chunks on the fixed axis.
    return hist.axis.StrCategory(list(datasets), name="dataset", label="Dataset", growth=growth)


def _mt_axis(edges) -> hist.axis.Variable:
    return hist.axis.Variable(edges, name="mt", label="M_T [GeV]")


def book(mt_edges, datasets, score_bins: int = 40, growth: bool = False) -> dict[str, hist.Hist]:
    """Empty histograms of one processor output, for the given dataset names (sorted).

    A chunk books them with ``growth`` and its own dataset only: the histograms of a job with many
    datasets are otherwise mostly empty and dominate a worker's memory and its result's size
    (84 datasets: 380 MB per signal chunk with ``xy_mt_syst``). :func:`densify` (called by
    :func:`~svjscout.processors.normalize.normalize`) gives the fixed axis of every dataset back.
    """
    w = hist.storage.Weight()

    def dataset() -> hist.axis.StrCategory:
        return _dataset_axis(datasets, growth)

    plane = hist.axis.StrCategory(list(PLANES), name="plane")
    return {
        "mt_abcd": hist.Hist(dataset(), plane, hist.axis.StrCategory(list(REGIONS), name="region"),
                             _mt_axis(mt_edges), storage=w),
        "xy_mt": hist.Hist(dataset(), plane,
                           hist.axis.Regular(score_bins, 0, 1, name="x", label="X score"),
                           hist.axis.Regular(score_bins, 0, 1, name="y", label="Y score"), _mt_axis(mt_edges),
                           storage=w),
        "met": hist.Hist(dataset(), hist.axis.Regular(60, 0, 1500, name="met", label="MET [GeV]"),
                         storage=w),
        "rt": hist.Hist(dataset(), hist.axis.Regular(50, 0, 1, name="rt", label="R_T"), storage=w),
        "dphi_min": hist.Hist(dataset(), hist.axis.Regular(32, 0, np.pi, name="dphi_min",
                                                                 label="dphi_min [rad]"), storage=w),
        "jet_pt": hist.Hist(dataset(), hist.axis.StrCategory(["J0", "J1"], name="jet"),
                            hist.axis.Regular(60, 0, 3000, name="pt", label="p_T [GeV]"), storage=w),
        "lund_plane": hist.Hist(dataset(), hist.axis.Regular(30, 0, 6, name="ln_inv_delta",
                                                                   label="ln(1/Delta)"),
                                hist.axis.Regular(30, -4, 8, name="ln_kt", label="ln(k_t/GeV)"),
                                storage=w),
    }


def book_syst(mt_edges, datasets, variations, score_bins: int = 40, growth: bool = False) -> hist.Hist:
    """``xy_mt_syst``: dataset (signal) x syst (``<source>_up|down``) x plane x X x Y x M_T, like ``xy_mt``
    (``growth``: a chunk's booking, see :func:`book`)."""
    w = hist.storage.Weight()
    return hist.Hist(_dataset_axis(datasets, growth), hist.axis.StrCategory(list(variations), name="syst"),
                     hist.axis.StrCategory(list(PLANES), name="plane"),
                     hist.axis.Regular(score_bins, 0, 1, name="x", label="X score"),
                     hist.axis.Regular(score_bins, 0, 1, name="y", label="Y score"), _mt_axis(mt_edges), storage=w)


def densify(h: hist.Hist, datasets) -> hist.Hist:
    """``h`` on the fixed dataset axis of ``datasets`` (in that order; zeros for a dataset it lacks).

    The summed chunks' histograms have a growing dataset axis in the order the chunks were added;
    this gives the output's histograms, identical to histograms booked with every dataset from the
    start, bin for bin. A new histogram; ``h`` is not modified.

    Raises:
        ValueError: ``h`` has a dataset that is not in ``datasets`` (named).
    """
    datasets = list(datasets)
    have = list(h.axes["dataset"])
    extra = sorted(set(have) - set(datasets))
    if extra:
        raise ValueError(f"histogram has dataset(s) {extra} that are not among the job's datasets {datasets}")
    if have == datasets and not h.axes["dataset"].traits.growth:
        return h.copy()
    out = hist.Hist(_dataset_axis(datasets), *h.axes[1:], storage=h.storage_type())
    src, dst = h.view(flow=True), out.view(flow=True)
    for i, name in enumerate(have):
        dst[datasets.index(name)] = src[i]
    return out


def region_of(x: np.ndarray, y: np.ndarray, x0: float, y0: float, bins: int | None = None) -> np.ndarray:
    """ABCD region letter per event (a score equal to the threshold counts as above it).

    The comparison is the histogram's own: with ``bins`` (the score axis, ``bins`` equal bins on
    [0, 1)), an event is above ``x0`` exactly when its ``xy_mt`` bin starts at or above ``x0``, so
    the regions of ``mt_abcd`` and the sums over ``xy_mt`` bins can never disagree at a boundary
    (a float32 score equal to float32(0.775) is 0.77499998 and lies below 0.775 in both). Without
    ``bins`` the scores are compared in float64.

    >>> region_of(np.array([0.9, 0.9, 0.1, 0.1, 0.5]), np.array([0.1, 0.9, 0.1, 0.9, 0.5]), 0.5, 0.5).tolist()
    ['A', 'B', 'C', 'D', 'B']
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if bins is None:
        hi_x, hi_y = x >= x0, y >= y0
    else:
        axis = hist.axis.Regular(bins, 0, 1)
        hi_x = axis.index(x) >= edge_index(axis, x0, "x0")
        hi_y = axis.index(y) >= edge_index(axis, y0, "y0")
    return region_letters(hi_x, hi_y)


def edge_index(axis, value: float, name: str) -> int:
    """Index of the bin of ``axis`` that starts at ``value``; ``value`` must be a bin edge.

    Raises:
        ValueError: ``value`` is not on an edge (names it and the nearest edges).
    """
    edges = np.asarray(axis.edges, dtype=np.float64)
    i = int(np.argmin(np.abs(edges - value)))
    if abs(edges[i] - value) > 1e-9:
        raise ValueError(f"{name} = {value!r} is not on a score bin edge (bin width {edges[1] - edges[0]:g}); "
                         f"nearest edges {edges[max(i - 1, 0)]:g}, {edges[i]:g}, {edges[min(i + 1, len(edges) - 1)]:g}")
    return i


def clip_scores(s: np.ndarray) -> np.ndarray:
    """Scores as float64, clipped into [0, 1) so that a sigmoid's 1.0 lands in the last bin.

    float64 once, here, for everything downstream (regions and histogram bins)."""
    return np.clip(np.asarray(s, dtype=np.float64), 0.0, 1.0 - _EPS)


def clip_mt(mt: np.ndarray, edges) -> np.ndarray:
    """M_T clipped into the axis range [edges[0], edges[-1]) (overflow into the last bin)."""
    return np.clip(mt, edges[0], np.nextafter(edges[-1], -np.inf))
