"""Parent-aware MC variances of sums of ``xy_mt`` bins (ABCD regions, merged M_T groups).

Detector-resampled MC has K copies of each generated ("parent") event, weight ``w / K`` each.
Copies of one parent are fully correlated, so the honest variance of any yield ``Y`` (a sum of
``xy_mt`` bins: a region at a working point, a group of M_T bins) is

    ``var(Y) = sum_p (sum of p's weights in Y)^2``.

The processor's normalisation (:func:`svjscout.processors.normalize.normalize`) already makes each
``xy_mt`` bin's variance parent-grouped and keeps, per dataset with parent ids, the scaled weight sum of every
(parent, flat ``xy_mt`` bin) in ``output["parent_fills"]``. Summing per-bin variances over the
bins of ``Y`` drops the cross terms of a parent whose copies fall in *different* bins of ``Y``:

    ``var(Y) = sum_bins var(bin) + sum_{pairs a<b of one parent's records, both in Y} 2 w_a w_b``

(the records are per (parent, bin) sums, so the pairs are across bins). This module computes the
second term from the pairs of records of each parent (:class:`Pairs`), for one working point as a
small ``(region, M_T bin, M_T bin)`` matrix (any grouping of M_T bins is then a sum over it), and
for a whole grid of working points with 2D cumulative sums (each pair lies in one region for
thresholds in a quadrant of the (x0, y0) plane), so the scan is exact too. The formula holds for
datasets mixing files with and without parent ids (the first term is the histogram's own
variance). With every event its own parent there are no pairs and nothing changes, bit for bit.

How the records travel: explicitly. :class:`StatInputs` holds ``xy_mt`` and its
:class:`ParentRecords` (or None), built once from a run output (:meth:`StatInputs.from_output`:
``output["hists"]["xy_mt"]`` and ``output["parent_fills"]``, the processor's format, which any
coffea/pickle reader loads); everything that needs parent-aware variances takes it
(:func:`.writer.write_datacards`, :func:`.scan.scan_working_points`, the validation) or takes
``parents=`` (:func:`.regions.region_yields`, :func:`.regions.mt_abcd_at`, the closure). Nothing
rides on the histogram object, so a modified copy of a histogram cannot carry another's records.
:class:`ParentRecords` remembers the axes and a digest of each dataset's values of the histogram
it was built for: given with another histogram (a slice, a projection, a scaled copy) it is not
used (its datasets' variances are then the per-bin sums), with one warning per call.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from svjscout.core.regions import REGION_INDEX, REGIONS

log = logging.getLogger(__name__)

AXES = ("dataset", "plane", "x", "y", "mt")


def _signature(h) -> list:
    """Names, bins and flow layout of every axis (plain data, compared with ``==``)."""
    sig = []
    for ax in h.axes:
        try:
            bins = [float(e) for e in ax.edges]
        except Exception:  # noqa: BLE001 - categorical axes have no numeric edges
            bins = [str(c) for c in ax]
        sig.append([ax.name, bins, bool(ax.traits.underflow), bool(ax.traits.overflow)])
    return sig


def _digest(h, dataset: str) -> str:
    """SHA-256 of one dataset's values (flow included): the records belong to these values."""
    names = [ax.name for ax in h.axes]
    d = names.index("dataset")
    i = list(h.axes["dataset"]).index(dataset)
    vals = np.ascontiguousarray(np.take(np.asarray(h.values(flow=True), dtype=np.float64), i, axis=d))
    return hashlib.sha256(vals.tobytes()).hexdigest()


@dataclass
class DatasetRecords:
    """One dataset's per-(parent, bin) weight sums, decoded to ``xy_mt`` indices (``flow=False``)."""

    key: np.ndarray
    plane: np.ndarray
    x: np.ndarray
    y: np.ndarray
    mt: np.ndarray
    weight: np.ndarray


@dataclass(frozen=True)
class ParentRecords:
    """The parent records of one ``xy_mt`` histogram (:meth:`build`), decoded to its bins.

    ``axes`` and ``digest`` (per dataset) identify the histogram they were built for:
    :meth:`valid_for` keeps only the datasets whose values are still those."""

    datasets: dict[str, DatasetRecords]
    planes: list[str]
    nx: int
    ny: int
    n_mt: int
    axes: list = field(default_factory=list, repr=False, compare=False)
    digest: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, xy_mt, fills: Mapping | None) -> ParentRecords | None:
        """The records ``fills`` (``output["parent_fills"]``: per dataset ``key``, flat ``bin``
        with flow, ``weight``) decoded to ``xy_mt``'s bins; None without records (data only,
        samples without detector copies, outputs older than the records)."""
        if xy_mt is None or not fills:
            return None
        names = [ax.name for ax in xy_mt.axes]
        if sorted(names) != sorted(AXES):
            return None
        present = list(xy_mt.axes["dataset"])
        missing = sorted(set(fills) - set(present))
        if missing:
            log.warning("parent records of %s have no dataset in xy_mt; ignored", missing)
        shape = xy_mt.view(flow=True).shape
        lower = [1 if ax.traits.underflow else 0 for ax in xy_mt.axes]
        sizes = [len(ax) for ax in xy_mt.axes]
        out = {}
        for dataset, f in fills.items():
            if dataset not in present:
                continue
            idx = np.unravel_index(np.asarray(f["bin"], dtype=np.int64), shape)
            loc = {a: np.asarray(i, np.int64) - lo for a, i, lo in zip(names, idx, lower)}
            ok = np.ones(len(f["bin"]), bool)
            for a, n in zip(names, sizes):
                ok &= (loc[a] >= 0) & (loc[a] < n)
            if not np.all(loc["dataset"][ok] == present.index(dataset)):
                log.warning("parent records of %r point at another dataset's bins; ignored", dataset)
                continue
            out[dataset] = DatasetRecords(np.asarray(f["key"])[ok], loc["plane"][ok], loc["x"][ok], loc["y"][ok],
                                          loc["mt"][ok], np.asarray(f["weight"], np.float64)[ok])
        if not out:
            return None
        return cls(out, list(xy_mt.axes["plane"]), len(xy_mt.axes["x"]), len(xy_mt.axes["y"]),
                   len(xy_mt.axes["mt"]), _signature(xy_mt), {d: _digest(xy_mt, d) for d in out})

    def valid_for(self, xy_mt) -> ParentRecords | None:
        """These records restricted to the datasets whose ``xy_mt`` values are those they were
        built for; None for a histogram with other axes (a slice, a projection) or when no
        dataset is left. A dataset whose values changed (a scaled or modified copy) is dropped
        with a warning (once per call): its variances are then the per-bin sums."""
        if sorted(ax.name for ax in xy_mt.axes) != sorted(AXES) or self.axes != _signature(xy_mt):
            return None
        changed = [d for d in self.datasets if _digest(xy_mt, d) != self.digest.get(d)]
        if changed:
            log.warning("xy_mt values of dataset(s) %s differ from those their parent records were built for "
                        "(a modified copy?): their region variances are the per-bin sums", changed)
        if not changed:
            return self
        kept = {d: r for d, r in self.datasets.items() if d not in changed}
        if not kept:
            return None
        return ParentRecords(kept, self.planes, self.nx, self.ny, self.n_mt, self.axes,
                             {d: self.digest[d] for d in kept})

    def pairs(self, names: Sequence[str], plane: str) -> Pairs | None:
        """Pairs of records of one parent (same dataset and plane, different bins) among
        ``names``; None when there is none (then every variance is the per-bin sum)."""
        if plane not in self.planes:
            return None
        p = self.planes.index(plane)
        parts = [(j, self.datasets[n]) for j, n in enumerate(names) if n in self.datasets]
        if not parts:
            return None
        sel = [r.plane == p for _, r in parts]
        ds = np.concatenate([np.full(int(s.sum()), j, np.int64) for (j, _), s in zip(parts, sel)])
        cols = {c: np.concatenate([getattr(r, c)[s] for (_, r), s in zip(parts, sel)])
                for c in ("key", "x", "y", "mt", "weight")}
        if len(ds) < 2:
            return None
        order = np.lexsort((cols["key"], ds))
        ds, cols = ds[order], {c: v[order] for c, v in cols.items()}
        new = np.ones(len(ds), bool)
        new[1:] = (ds[1:] != ds[:-1]) | (cols["key"][1:] != cols["key"][:-1])
        gid = np.cumsum(new)
        sizes = np.bincount(gid)
        kmax = int(sizes.max())
        if kmax < 2:
            return None
        n_pairs = int((sizes * (sizes - 1) // 2).sum())
        if n_pairs > 20_000_000:
            log.warning("%d pairs of records of one parent in plane %s (up to %d records per parent): the "
                        "parent-aware region variances will be slow", n_pairs, plane, kmax)
        a, b = [], []
        for d in range(1, kmax):
            i = np.flatnonzero(gid[:-d] == gid[d:])
            a.append(i)
            b.append(i + d)
        a, b = np.concatenate(a), np.concatenate(b)
        x, y, m, w = cols["x"], cols["y"], cols["mt"], cols["weight"]
        return Pairs(x[a], y[a], m[a], x[b], y[b], m[b], 2.0 * w[a] * w[b], self.nx, self.ny, self.n_mt)


@dataclass
class Pairs:
    """Pairs of one parent's records in one plane: bins ``(xa, ya, ma)``, ``(xb, yb, mb)`` and
    the cross term ``c = 2 w_a w_b`` they add to any yield holding both."""

    xa: np.ndarray
    ya: np.ndarray
    ma: np.ndarray
    xb: np.ndarray
    yb: np.ndarray
    mb: np.ndarray
    c: np.ndarray
    nx: int
    ny: int
    n_mt: int

    def region_matrix(self, ix: int, iy: int) -> np.ndarray:
        """Cross terms at the working point of edge indices ``(ix, iy)``: ``M[r, ma, mb]``, shape
        ``(4, n_mt, n_mt)``, summed over the pairs with both records in region r (in the order of
        :data:`svjscout.core.regions.REGIONS`).
        The cross term of region r over a group g of M_T bins is ``M[r][g][:, g].sum()``."""
        ra = REGION_INDEX[(self.xa >= ix).astype(int), (self.ya >= iy).astype(int)]
        rb = REGION_INDEX[(self.xb >= ix).astype(int), (self.yb >= iy).astype(int)]
        same = ra == rb
        n = self.n_mt
        flat = (ra[same] * n + self.ma[same]) * n + self.mb[same]
        return np.bincount(flat, weights=self.c[same], minlength=len(REGIONS) * n * n).reshape(len(REGIONS), n, n)

    def grid_matrix(self, ix, iy) -> np.ndarray:
        """:meth:`region_matrix` at every ``(ix[i], iy[j])``: shape ``(4, gx, gy, n_mt, n_mt)``.

        A pair is in one region for thresholds in a quadrant of the (ix, iy) plane (both records
        above x0 when ``ix <= min(x)``, both below when ``ix > max(x)``; the same in y), so each
        region is a 2D cumulative sum of the pairs' weights at their quadrant corners."""
        ix = np.atleast_1d(np.asarray(ix, dtype=int))
        iy = np.atleast_1d(np.asarray(iy, dtype=int))
        xl, xh = np.minimum(self.xa, self.xb), np.maximum(self.xa, self.xb) + 1
        yl, yh = np.minimum(self.ya, self.yb), np.maximum(self.ya, self.yb) + 1
        n = self.n_mt
        out = []
        # (x corner, y corner, x: thresholds <= corner (suffix sum) or >= (prefix), y likewise)
        for u, v, x_suffix, y_suffix in ((xl, yh, True, False), (xl, yl, True, True),
                                         (xh, yh, False, False), (xh, yl, False, True)):
            q = np.zeros((self.nx + 1, self.ny + 1, n, n))
            np.add.at(q, (u, v, self.ma, self.mb), self.c)
            q = np.flip(np.flip(q, 0).cumsum(0), 0) if x_suffix else q.cumsum(0)
            q = np.flip(np.flip(q, 1).cumsum(1), 1) if y_suffix else q.cumsum(1)
            out.append(q[ix][:, iy])
        return np.stack(out)


def pairs_of(xy_mt, parents: ParentRecords | None, names: Sequence[str], plane: str) -> Pairs | None:
    """:meth:`ParentRecords.pairs` of the records ``parents`` valid for ``xy_mt``, or None (no
    records, none valid for this histogram, no pairs)."""
    rec = None if parents is None else parents.valid_for(xy_mt)
    return None if rec is None else rec.pairs(names, plane)


@dataclass(frozen=True)
class StatInputs:
    """The statistics inputs of the ABCD stages: ``xy_mt`` and its parent records (or None).

    Build it once from a run output (:meth:`from_output`) and pass it whole; a bare histogram
    (:meth:`of`) has no parent records (its variances are the per-bin sums)."""

    xy_mt: object
    parents: ParentRecords | None = None

    @classmethod
    def from_output(cls, output: Mapping) -> StatInputs:
        """From a processor output or a loaded ``histograms.coffea``: ``hists.xy_mt`` (or a flat
        ``xy_mt``) and ``parent_fills``."""
        hists = output.get("hists", output)
        xy_mt = hists.get("xy_mt") if isinstance(hists, Mapping) else None
        return cls(xy_mt, ParentRecords.build(xy_mt, output.get("parent_fills")))

    @classmethod
    def of(cls, inputs) -> StatInputs:
        """``inputs`` itself, or a bare ``xy_mt`` histogram without parent records."""
        return inputs if isinstance(inputs, StatInputs) else cls(inputs, None)


@dataclass
class RegionCross:
    """What :class:`.regions.RegionYields` keeps to merge M_T bins with parent-aware variances:
    the per-bin-summed variances ``base`` (4, current bins), the cross-term matrix ``matrix``
    (4, n_mt, n_mt) over the original M_T bins, and the original bins of each current bin."""

    base: np.ndarray
    matrix: np.ndarray
    bins: list[list[int]]

    def cross(self, groups: Sequence[Sequence[int]]) -> np.ndarray:
        """Cross terms of groups of *original* M_T bins, shape ``(4, len(groups))``."""
        return np.stack([self.matrix[:, g][:, :, g].sum(axis=(1, 2)) for g in (list(g) for g in groups)], axis=1)

    def merged(self, groups: Sequence[Sequence[int]]) -> tuple[np.ndarray, RegionCross]:
        """Variances of the current bins merged into ``groups`` and the new :class:`RegionCross`."""
        orig = [[o for i in g for o in self.bins[i]] for g in groups]
        base = np.stack([self.base[:, list(g)].sum(axis=1) for g in groups], axis=1)
        return base + self.cross(orig), RegionCross(base, self.matrix, orig)
