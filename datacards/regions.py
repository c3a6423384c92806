"""Access to the ``xy_mt`` histogram: dataset selection, working-point snapping, ABCD region yields.

The processors fill ``xy_mt`` with axes ``(dataset, plane, x, y, mt)`` and weight storage. Scores
are clipped into [0, 1) and M_T into the axis range, so everything here works with
``flow=False``. The regions A, B, C, D at thresholds ``x0``, ``y0`` on bin edges, their order
and the planes are those of :mod:`svjscout.core.regions` (B, X >= x0 and Y >= y0, is the signal
region).

Example:
    >>> # y = region_yields(xy_mt, datasets, (0.775, 0.875), plane="SP", which="background")
    >>> # y.n.shape == (4, n_mt)   # rows A, B, C, D
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import hist
import numpy as np

from svjscout.core.exceptions import HistogramError
from svjscout.core.regions import REGIONS
from svjscout.processors.histograms import book

from .guard import kish_neff
from .parents import ParentRecords, RegionCross, pairs_of

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("signal", "background", "data")
REQUIRED_AXES: tuple[str, ...] = ("dataset", "plane", "x", "y", "mt")
EDGE_TOL = 1e-6


def check_axes(xy_mt) -> None:
    """Raise :class:`HistogramError` unless ``xy_mt`` has the axes ``dataset, plane, x, y, mt``."""
    names = [ax.name for ax in xy_mt.axes]
    missing = [a for a in REQUIRED_AXES if a not in names]
    if missing:
        raise HistogramError(f"xy_mt histogram lacks axis/axes {missing}; found {names}, "
                             f"expected {list(REQUIRED_AXES)}")


def mt_edges(xy_mt) -> np.ndarray:
    """M_T bin edges of ``xy_mt`` in GeV, shape ``(n_mt + 1,)``."""
    return np.asarray(xy_mt.axes["mt"].edges, dtype=float)


def snap_threshold(value: float, edges: np.ndarray, axis: str) -> int:
    """Index of the bin edge equal to ``value`` (within 1e-6).

    Args:
        value: threshold (score units, e.g. 0.775).
        edges: axis edges, shape ``(n + 1,)``.
        axis: axis name used in the error message.

    Returns:
        i such that ``edges[i] == value``; region "below" is bins ``[0, i)``.

    Raises:
        HistogramError: if the value is not on an interior-or-boundary edge (the message names
            the value and the nearest edges).
    """
    edges = np.asarray(edges, dtype=float)
    i = int(np.argmin(np.abs(edges - value)))
    if abs(edges[i] - value) > EDGE_TOL:
        lo = edges[max(0, np.searchsorted(edges, value) - 1)]
        hi = edges[min(len(edges) - 1, np.searchsorted(edges, value))]
        raise HistogramError(
            f"threshold {axis}0={float(value)!r} is not on a bin edge of axis '{axis}' "
            f"(nearest edges {lo:.6g} and {hi:.6g}); working points must sit on multiples of the bin width"
        )
    return i


def parse_wp(wp) -> tuple[float, float]:
    """Normalise a working point given as ``(x0, y0)``, ``"x0,y0"`` or ``{"x0":..,"y0":..}``."""
    if isinstance(wp, str):
        parts = wp.split(",")
        if len(parts) != 2:
            raise HistogramError(f"working point '{wp}' must be 'X0,Y0'")
        return float(parts[0]), float(parts[1])
    if isinstance(wp, Mapping):
        return float(wp["x0"]), float(wp["y0"])
    x0, y0 = wp
    return float(x0), float(y0)


def datasets_of_kind(xy_mt, datasets: Mapping[str, Mapping], kind: str) -> list[str]:
    """Datasets of a given kind that are present in ``xy_mt`` (sorted).

    Raises:
        HistogramError: if a dataset of that kind in ``datasets`` is missing from the histogram,
            or ``kind`` is unknown.
    """
    if kind not in KINDS:
        raise HistogramError(f"unknown dataset kind '{kind}', expected one of {KINDS}")
    present = set(xy_mt.axes["dataset"])
    names = sorted(n for n, meta in datasets.items() if meta.get("kind") == kind)
    missing = [n for n in names if n not in present]
    if missing:
        raise HistogramError(f"dataset(s) {missing} of kind '{kind}' are listed in datasets but absent from xy_mt")
    return names


def select_datasets(xy_mt, datasets: Mapping[str, Mapping], which: str | Sequence[str]) -> list[str]:
    """Resolve ``which`` (a kind, a dataset name or a list of names) to dataset names."""
    if isinstance(which, str):
        if which in KINDS:
            names = datasets_of_kind(xy_mt, datasets, which)
            if not names:
                raise HistogramError(f"no dataset of kind '{which}' in datasets (have {sorted(datasets)})")
            return names
        which = [which]
    present = set(xy_mt.axes["dataset"])
    missing = [n for n in which if n not in present]
    if missing:
        raise HistogramError(f"dataset(s) {missing} not in xy_mt (have {sorted(present)})")
    return list(which)


def plane_arrays(xy_mt, names: Sequence[str], plane: str, summed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Values and variances of ``xy_mt`` for some datasets in one plane.

    Args:
        xy_mt: the ``(dataset, plane, x, y, mt)`` histogram.
        names: dataset names.
        plane: "SP" or "VP".
        summed: sum over the datasets (shape ``(nx, ny, n_mt)``) or keep them
            (shape ``(len(names), nx, ny, n_mt)``).

    Returns:
        ``(values, variances)``, event counts (weighted) and their sumw2.
    """
    check_axes(xy_mt)
    planes = list(xy_mt.axes["plane"])
    if plane not in planes:
        raise HistogramError(f"plane '{plane}' not in xy_mt plane axis {planes}")
    ds_axis = list(xy_mt.axes["dataset"])
    idx = []
    for n in names:
        if n not in ds_axis:
            raise HistogramError(f"dataset '{n}' not in xy_mt (have {ds_axis})")
        idx.append(ds_axis.index(n))
    order = [ax.name for ax in xy_mt.axes]
    vals = np.asarray(xy_mt.values(flow=False), dtype=float)
    var = xy_mt.variances(flow=False)
    var = vals.copy() if var is None else np.asarray(var, dtype=float)
    perm = [order.index(a) for a in REQUIRED_AXES]
    vals = np.transpose(vals, perm)[idx, planes.index(plane)]
    var = np.transpose(var, perm)[idx, planes.index(plane)]
    if summed:
        return vals.sum(axis=0), var.sum(axis=0)
    return vals, var


def cumulative_2d(arr: np.ndarray) -> np.ndarray:
    """Zero-padded 2D cumulative sum over the (x, y) axes.

    Args:
        arr: shape ``(..., nx, ny, n_mt)``.

    Returns:
        S with shape ``(..., nx + 1, ny + 1, n_mt)`` and ``S[..., i, j, :] = arr[..., :i, :j, :].sum()``.
    """
    pad = [(0, 0)] * arr.ndim
    pad[-3] = (1, 0)
    pad[-2] = (1, 0)
    return np.pad(arr, pad).cumsum(axis=-3).cumsum(axis=-2)


def regions_from_cumsum(S: np.ndarray, ix, iy) -> np.ndarray:
    """ABCD yields from a 2D cumulative sum, vectorised over threshold indices.

    Args:
        S: output of :func:`cumulative_2d`, shape ``(..., nx + 1, ny + 1, n_mt)``.
        ix: x-edge index array, shape ``(gx,)`` (or scalar).
        iy: y-edge index array, shape ``(gy,)`` (or scalar).

    Returns:
        Array of shape ``(4, ..., gx, gy, n_mt)``, first axis A, B, C, D.
    """
    ix = np.atleast_1d(np.asarray(ix, dtype=int))
    iy = np.atleast_1d(np.asarray(iy, dtype=int))
    nx, ny = S.shape[-3] - 1, S.shape[-2] - 1
    sel = lambda i, j: S[..., i, :, :][..., :, j, :]  # noqa: E731  (..., gx, gy, n_mt)
    c = sel(ix, iy)
    below_y = sel(np.full_like(ix, nx), iy)  # all x, y < y0
    left_x = sel(ix, np.full_like(iy, ny))  # x < x0, all y
    tot = S[..., nx, ny, :][..., None, None, :]
    a = below_y - c
    d = left_x - c
    b = tot - a - c - d
    return np.stack([a, b, c, d])


def regions_at(arr: np.ndarray, ix: int, iy: int) -> np.ndarray:
    """ABCD yields at one threshold pair by direct sums (exact: no cancellation, so an empty
    region is exactly 0, which the differences of :func:`regions_from_cumsum` only give to
    rounding); ``arr`` shape ``(..., nx, ny, n_mt)``, returns ``(4, ..., n_mt)`` [A, B, C, D]."""
    a = arr[..., ix:, :iy, :].sum(axis=(-3, -2))
    b = arr[..., ix:, iy:, :].sum(axis=(-3, -2))
    c = arr[..., :ix, :iy, :].sum(axis=(-3, -2))
    d = arr[..., :ix, iy:, :].sum(axis=(-3, -2))
    return np.stack([a, b, c, d])


@dataclass
class RegionYields:
    """Yields in regions A, B, C, D per M_T bin.

    Attributes:
        n: weighted counts, shape ``(4, n_mt)``, rows A, B, C, D.
        var: their variances (sumw2, or counts for Poisson data), shape ``(4, n_mt)``; with
            detector copies (parent records given, :mod:`.parents`) parent-aware: the sum
            over parents of (the parent's weight in the region and bin)^2.
        edges: M_T bin edges in GeV, shape ``(n_mt + 1,)``.
        wp: working point ``(x0, y0)``.
        plane: "SP" or "VP".
        label: what was summed (a kind or dataset names).
        parents: the parents' cross terms (:class:`.parents.RegionCross`) that :meth:`merged`
            adds for a parent's copies in different M_T bins of a group; None without parent
            records (then variances of merged bins are the sums of the bins', as always).
    """

    n: np.ndarray
    var: np.ndarray
    edges: np.ndarray
    wp: tuple[float, float]
    plane: str
    label: str = ""
    groups: list[list[int]] = field(default_factory=list)
    parents: object = field(default=None, repr=False, compare=False)

    @property
    def neff(self) -> np.ndarray:
        """Kish effective number of MC events per region and bin, ``(sum w)^2 / sum w^2``, shape ``(4, n_mt)``
        (0 where a region is empty; equal to the count for Poisson data)."""
        return kish_neff(self.n, self.var)

    def region(self, r: str) -> np.ndarray:
        """Counts in region ``r`` (one of A, B, C, D), shape ``(n_mt,)``."""
        return self.n[REGIONS.index(r)]

    def merged(self, groups: Sequence[Sequence[int]]) -> RegionYields:
        """Sum M_T bins into groups of consecutive bins (of this object; see :mod:`.writer`).

        Variances: the bins' sums, plus with parent records the cross terms of a parent's
        copies in different bins of a group (:mod:`.parents`)."""
        n = np.stack([self.n[:, list(g)].sum(axis=1) for g in groups], axis=1)
        if self.parents is None:
            v, parents = np.stack([self.var[:, list(g)].sum(axis=1) for g in groups], axis=1), None
        else:
            v, parents = self.parents.merged(groups)
        edges = np.array([self.edges[g[0]] for g in groups] + [self.edges[groups[-1][-1] + 1]])
        return RegionYields(n, v, edges, self.wp, self.plane, self.label, [list(g) for g in groups], parents)

    def group_var(self, group: Sequence[int]) -> np.ndarray:
        """Variances of the four regions with the bins ``group`` merged, shape ``(4,)`` (what
        :meth:`merged` gives that group)."""
        if self.parents is None:
            return self.var[:, list(group)].sum(axis=1)
        return self.parents.merged([group])[0][:, 0]


def region_yields(
    xy_mt,
    datasets: Mapping[str, Mapping],
    wp,
    plane: str = "SP",
    which: str | Sequence[str] = "background",
    poisson: bool | None = None,
    parents: ParentRecords | None = None,
) -> RegionYields:
    """ABCD region yields per M_T bin at one working point.

    Args:
        xy_mt: the ``(dataset, plane, x, y, mt)`` histogram.
        datasets: dataset metadata ``{name: {"kind": ...}}``.
        wp: ``(x0, y0)``, on x/y bin edges.
        plane: "SP" or "VP".
        which: "background", "signal", "data", a dataset name or a list of names.
        poisson: use variance = counts (Poisson) instead of sumw2; default True for ``which="data"``.
        parents: the parent records of ``xy_mt`` (:class:`.parents.ParentRecords`, e.g.
            ``StatInputs.parents``), or None.

    Returns:
        :class:`RegionYields` with ``n`` and ``var`` of shape ``(4, n_mt)``. For datasets with
        parent records in ``parents`` (valid for this ``xy_mt``) ``var`` is parent-aware:
        ``sum_p (sum of p's weights in the region and M_T bin)^2``, and stays so through
        :meth:`RegionYields.merged`; other datasets' are the sums of the bins' variances.
    """
    check_axes(xy_mt)
    x0, y0 = parse_wp(wp)
    ix = snap_threshold(x0, xy_mt.axes["x"].edges, "x")
    iy = snap_threshold(y0, xy_mt.axes["y"].edges, "y")
    names = select_datasets(xy_mt, datasets, which)
    vals, var = plane_arrays(xy_mt, names, plane)
    n = regions_at(vals, ix, iy)
    if poisson is None:
        poisson = which == "data"
    cross = None
    if poisson:
        v = np.clip(n, 0.0, None)
    else:
        v = regions_at(var, ix, iy)
        pairs = pairs_of(xy_mt, parents, names, plane)
        if pairs is not None:  # detector copies in different bins of one region: their cross terms
            matrix = pairs.region_matrix(ix, iy)
            cross = RegionCross(v, matrix, [[i] for i in range(v.shape[1])])
            v = v + np.diagonal(matrix, axis1=1, axis2=2)
    label = which if isinstance(which, str) else ",".join(which)
    return RegionYields(n, v, mt_edges(xy_mt), (x0, y0), plane, label, parents=cross)


def yields_from_mt_abcd(mt_abcd, datasets: Mapping[str, Mapping], wp, plane: str = "SP",
                        which: str | Sequence[str] = "background", poisson: bool | None = None) -> RegionYields:
    """Region yields from the processors' ``mt_abcd`` histogram (filled at the configured WP).

    Args:
        mt_abcd: histogram ``(dataset, plane, region[A,B,C,D], mt)``, weight storage.
        datasets, plane, which, poisson: as in :func:`region_yields`.
        wp: the working point ``mt_abcd`` was filled at (recorded only).

    Returns:
        :class:`RegionYields`, shape ``(4, n_mt)``.
    """
    names = [ax.name for ax in mt_abcd.axes]
    missing = [a for a in ("dataset", "plane", "region", "mt") if a not in names]
    if missing:
        raise HistogramError(f"mt_abcd histogram lacks axis/axes {missing}; found {names}")
    sel = select_datasets(mt_abcd, datasets, which)
    ds_axis, planes, regs = list(mt_abcd.axes["dataset"]), list(mt_abcd.axes["plane"]), list(mt_abcd.axes["region"])
    if plane not in planes:
        raise HistogramError(f"plane '{plane}' not in mt_abcd plane axis {planes}")
    bad = [r for r in REGIONS if r not in regs]
    if bad:
        raise HistogramError(f"mt_abcd region axis lacks {bad} (has {regs})")
    perm = [names.index(a) for a in ("dataset", "plane", "region", "mt")]
    vals = np.transpose(np.asarray(mt_abcd.values(flow=False), float), perm)
    var = mt_abcd.variances(flow=False)
    var = vals.copy() if var is None else np.transpose(np.asarray(var, float), perm)
    idx = [ds_axis.index(n) for n in sel]
    ridx = [regs.index(r) for r in REGIONS]
    n = vals[idx, planes.index(plane)][:, ridx].sum(axis=0)
    v = var[idx, planes.index(plane)][:, ridx].sum(axis=0)
    if poisson is None:
        poisson = which == "data"
    if poisson:
        v = np.clip(n, 0.0, None)
    label = which if isinstance(which, str) else ",".join(which)
    return RegionYields(n, v, np.asarray(mt_abcd.axes["mt"].edges, float), parse_wp(wp), plane, label)


def check_mt_abcd(mt_abcd, xy_mt, wp, rtol: float = 1e-6, atol: float = 1e-9) -> float:
    """Check that ``mt_abcd`` equals the regions of ``xy_mt`` at ``wp`` for every dataset and plane.

    Returns:
        the largest absolute difference found.

    Raises:
        HistogramError: naming the dataset, plane and region of the first mismatch (e.g. the
            processors' WP differs from ``wp``, or different M_T binning).
    """
    if not np.allclose(mt_abcd.axes["mt"].edges, xy_mt.axes["mt"].edges):
        raise HistogramError("mt_abcd and xy_mt have different M_T edges")
    worst = 0.0
    fake = {n: {"kind": "background"} for n in xy_mt.axes["dataset"]}
    for name in xy_mt.axes["dataset"]:
        if name not in list(mt_abcd.axes["dataset"]):
            raise HistogramError(f"dataset '{name}' is in xy_mt but not in mt_abcd")
        for plane in xy_mt.axes["plane"]:
            a = region_yields(xy_mt, fake, wp, plane=plane, which=[name]).n
            b = yields_from_mt_abcd(mt_abcd, fake, wp, plane=plane, which=[name]).n
            diff = np.abs(a - b)
            worst = max(worst, float(diff.max(initial=0.0)))
            bad = ~np.isclose(a, b, rtol=rtol, atol=atol)
            if bad.any():
                r, i = np.argwhere(bad)[0]
                raise HistogramError(
                    f"mt_abcd disagrees with xy_mt at WP {parse_wp(wp)} for dataset '{name}', plane {plane}, "
                    f"region {REGIONS[r]}, M_T bin {i}: {b[r, i]:.6g} vs {a[r, i]:.6g}"
                )
    return worst


def mt_abcd_at(xy_mt, wp, parents: ParentRecords | None = None):
    """The ``mt_abcd`` histogram ``(dataset, plane, region, mt)`` at ``wp``, summed from ``xy_mt``
    (variances parent-aware with ``parents``, the records of ``xy_mt``).

    Every region-split output of a run (``histograms.root``, ``mt_abcd`` in the coffea output,
    the plots) is made from this at the run's one working point, the same ``xy_mt`` bins the
    datacards use; :func:`check_mt_abcd` compares it with what the processor filled directly.
    """
    out = book(mt_edges(xy_mt), list(xy_mt.axes["dataset"]))["mt_abcd"]
    if list(out.axes["plane"]) != list(xy_mt.axes["plane"]):
        raise HistogramError(f"xy_mt planes {list(xy_mt.axes['plane'])} differ from {list(out.axes['plane'])}")
    fake = {n: {"kind": "background"} for n in xy_mt.axes["dataset"]}
    view = out.view(flow=False)
    for d, name in enumerate(xy_mt.axes["dataset"]):
        for p, plane in enumerate(out.axes["plane"]):
            y = region_yields(xy_mt, fake, wp, plane=plane, which=[name], poisson=False, parents=parents)
            for r, region in enumerate(out.axes["region"]):
                k = REGIONS.index(region)
                view.value[d, p, r, :] = y.n[k]
                view.variance[d, p, r, :] = y.var[k]
    assert isinstance(out, hist.Hist)
    return out
