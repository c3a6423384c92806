"""Synthetic ``xy_mt`` histograms for tests, benchmarks and demos (deterministic, no random numbers).

Builds the processors' histogram layout ``(dataset, plane, x[40 in 0..1], y[40 in 0..1], mt, Weight)``
from per-dataset arrays, so every number in a test can be computed by hand.

Example:
    >>> h = empty_xy_mt(["qcd"], [650, 1000, 1500])
    >>> h.values(flow=False).shape
    (1, 2, 40, 40, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import hist
import numpy as np

from svjscout.core.regions import PLANES
from svjscout.processors.histograms import book_syst

NBINS = 40
CENTERS = (np.arange(NBINS) + 0.5) / NBINS
DEFAULT_MT_EDGES = (650.0, 1000.0, 1300.0, 1700.0, 2200.0, 3000.0, 5000.0)


def empty_xy_mt(names: Sequence[str], mt_edges: Sequence[float] = DEFAULT_MT_EDGES):
    """Empty ``xy_mt`` histogram with the given dataset categories and M_T edges."""
    return hist.Hist(
        hist.axis.StrCategory(list(names), growth=True, name="dataset"),
        hist.axis.StrCategory(list(PLANES), name="plane"),
        hist.axis.Regular(NBINS, 0, 1, name="x"),
        hist.axis.Regular(NBINS, 0, 1, name="y"),
        hist.axis.Variable(list(mt_edges), name="mt"),
        storage=hist.storage.Weight(),
    )


def build_xy_mt(contents: Mapping[str, Mapping[str, np.ndarray]], mt_edges: Sequence[float] = DEFAULT_MT_EDGES,
                weight: float | Mapping[str, float] = 1.0):
    """Histogram from explicit bin contents.

    Args:
        contents: ``{dataset: {"SP": array (40, 40, n_mt), "VP": array (40, 40, n_mt)}}`` of expected
            weighted yields (a missing plane is left empty).
        mt_edges: M_T edges in GeV.
        weight: per-event weight (or per dataset) used for the variances: ``sumw2 = weight * sumw``
            (1.0 = unweighted Poisson-like MC, data).

    Returns:
        the filled ``hist.Hist``.
    """
    names = list(contents)
    h = empty_xy_mt(names, mt_edges)
    view = h.view(flow=False)
    for i, n in enumerate(names):
        w = weight[n] if isinstance(weight, Mapping) else weight
        for j, plane in enumerate(PLANES):
            if plane in contents[n]:
                arr = np.asarray(contents[n][plane], dtype=float)
                view["value"][i, j] = arr
                view["variance"][i, j] = np.abs(arr) * w
    return h


def factorised(norm: float, px: np.ndarray, py: np.ndarray, pmt: np.ndarray) -> np.ndarray:
    """``norm * px[x] py[y] pmt[mt]`` with each density normalised to 1; shape ``(40, 40, n_mt)``."""
    px, py, pmt = (np.asarray(a, float) / np.sum(a) for a in (px, py, pmt))
    return norm * px[:, None, None] * py[None, :, None] * pmt[None, None, :]


def falling(slope: float) -> np.ndarray:
    """Exponentially falling score density ``exp(-slope * centre)`` over the 40 bins."""
    return np.exp(-slope * CENTERS)


def rising(power: float) -> np.ndarray:
    """Rising score density ``centre**power`` over the 40 bins (signal-like)."""
    return CENTERS**power


def realistic_toy(n_mt: int = 6, n_signal: int = 5, n_background: int = 4, with_data: bool = True,
                  scale: float = 1.0):
    """A realistic synthetic set: backgrounds (QCD, ttbar, W+jets, Z+jets-like), signal grid, data.

    Background scores fall with slightly different slopes per process and a mild X-Y correlation
    in QCD (so the closure is good but not perfect); signal rises towards (1, 1) with the peak in
    M_T moving with m_Z'; data = sum of backgrounds (rounded).

    Returns:
        ``(xy_mt, datasets)`` with ``len(datasets) == n_signal + n_background + with_data``.
    """
    edges = np.geomspace(650.0, 5000.0, n_mt + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    contents: dict[str, dict[str, np.ndarray]] = {}
    datasets: dict[str, dict] = {}
    names = ["qcd", "ttbar", "wjets", "zjets", "qcd_ht2", "ttbar_ext"][:n_background]
    norms = [5e5, 6e4, 4e4, 3e4, 1e5, 1e4]
    total_bkg = {p: 0.0 for p in PLANES}
    for k, name in enumerate(names):
        pmt = np.exp(-centres / (400.0 + 60 * k))
        base = factorised(norms[k] * scale, falling(4.0 + 0.3 * k), falling(3.5 + 0.2 * k), pmt)
        if k == 0:
            corr = 1.0 + 0.02 * (CENTERS[:, None] - 0.5) * (CENTERS[None, :] - 0.5)
            base = base * corr[:, :, None]
        contents[name] = {"SP": base, "VP": 0.18 * base}
        datasets[name] = {"kind": "background", "mzprime": None, "rinv": None, "xsec": 1.0}
        total_bkg["SP"] = total_bkg["SP"] + base
        total_bkg["VP"] = total_bkg["VP"] + 0.18 * base
    mzs = [1500.0, 2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 4500.0]
    rinvs = [0.3, 0.5, 0.7]
    for k in range(n_signal):
        mz, rinv = mzs[k % len(mzs)], rinvs[(k // len(mzs)) % len(rinvs)]
        pmt = np.exp(-0.5 * ((centres - 0.8 * mz) / (0.2 * mz)) ** 2) + 1e-3
        sig = factorised(3e3 * scale * (2000.0 / mz) ** 2, rising(3.0 + 0.2 * k), rising(2.5 + 0.3 * k), pmt)
        name = f"svj_mz{mz:g}_rinv{rinv:g}"
        contents[name] = {"SP": sig, "VP": 0.05 * sig}
        datasets[name] = {"kind": "signal", "mzprime": mz, "rinv": rinv, "xsec": 1.0}
    weights = {n: (0.5 if datasets[n]["kind"] == "background" else 0.01) for n in contents}
    if with_data:
        contents["data"] = {p: np.round(total_bkg[p]) for p in PLANES}
        datasets["data"] = {"kind": "data", "mzprime": None, "rinv": None, "xsec": 1.0}
        weights["data"] = 1.0
    return build_xy_mt(contents, edges, weights), datasets


def build_xy_mt_syst(contents: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], mt_edges: Sequence[float],
                     weight: float | Mapping[str, float] = 1.0):
    """``xy_mt_syst`` from explicit contents ``{dataset: {syst: {"SP": (40, 40, n_mt), "VP": ...}}}``.

    ``weight``: per-event weight (or per dataset) for the variances ``sumw2 = weight * |sumw|``.
    """
    names = list(contents)
    systs = list(dict.fromkeys(s for d in contents.values() for s in d))
    first = next(a for d in contents.values() for p in d.values() for a in p.values())
    h = book_syst(mt_edges, names, systs, score_bins=np.shape(first)[0])
    view = h.view(flow=False)
    for i, n in enumerate(names):
        w = weight[n] if isinstance(weight, Mapping) else weight
        for s, planes in contents[n].items():
            for j, plane in enumerate(PLANES):
                if plane in planes:
                    arr = np.asarray(planes[plane], dtype=float)
                    view["value"][i, systs.index(s), j] = arr
                    view["variance"][i, systs.index(s), j] = np.abs(arr) * w
    return h
