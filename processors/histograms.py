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

__all__ = ["PLANES", "REGIONS", "book", "book_syst", "region_of", "edge_index", "clip_scores", "clip_mt"]
_EPS = 1e-6


def _dataset_axis(datasets) -> hist.axis.StrCategory:
    # a fixed (not growing) category axis: every chunk's histograms have identical axes, so
    # they add up the same whatever the order the chunks finish in
    return hist.axis.StrCategory(list(datasets), name="dataset", label="Dataset")


def _mt_axis(edges) -> hist.axis.Variable:
    return hist.axis.Variable(edges, name="mt", label="M_T [GeV]")


def book(mt_edges, datasets, score_bins: int = 40) -> dict[str, hist.Hist]:
    """Empty histograms of one processor output, for the given dataset names (sorted)."""
    w = hist.storage.Weight()
    plane = hist.axis.StrCategory(list(PLANES), name="plane")
    return {
        "mt_abcd": hist.Hist(_dataset_axis(datasets), plane, hist.axis.StrCategory(list(REGIONS), name="region"),
                             _mt_axis(mt_edges), storage=w),
        "xy_mt": hist.Hist(_dataset_axis(datasets), plane,
                           hist.axis.Regular(score_bins, 0, 1, name="x", label="X score"),
                           hist.axis.Regular(score_bins, 0, 1, name="y", label="Y score"), _mt_axis(mt_edges),
                           storage=w),
        "met": hist.Hist(_dataset_axis(datasets), hist.axis.Regular(60, 0, 1500, name="met", label="MET [GeV]"),
                         storage=w),
        "rt": hist.Hist(_dataset_axis(datasets), hist.axis.Regular(50, 0, 1, name="rt", label="R_T"), storage=w),
        "dphi_min": hist.Hist(_dataset_axis(datasets), hist.axis.Regular(32, 0, np.pi, name="dphi_min",
                                                                 label="dphi_min [rad]"), storage=w),
        "jet_pt": hist.Hist(_dataset_axis(datasets), hist.axis.StrCategory(["J0", "J1"], name="jet"),
                            hist.axis.Regular(60, 0, 3000, name="pt", label="p_T [GeV]"), storage=w),
        "lund_plane": hist.Hist(_dataset_axis(datasets), hist.axis.Regular(30, 0, 6, name="ln_inv_delta",
                                                                   label="ln(1/Delta)"),
                                hist.axis.Regular(30, -4, 8, name="ln_kt", label="ln(k_t/GeV)"),
                                storage=w),
    }


def book_syst(mt_edges, datasets, variations, score_bins: int = 40) -> hist.Hist:
    """``xy_mt_syst``: dataset (signal) x syst (``<source>_up|down``) x plane x X x Y x M_T, like ``xy_mt``."""
    w = hist.storage.Weight()
    return hist.Hist(_dataset_axis(datasets), hist.axis.StrCategory(list(variations), name="syst"),
                     hist.axis.StrCategory(list(PLANES), name="plane"),
                     hist.axis.Regular(score_bins, 0, 1, name="x", label="X score"),
                     hist.axis.Regular(score_bins, 0, 1, name="y", label="Y score"), _mt_axis(mt_edges), storage=w)


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
