"""Working-point grid scan of the ABCD thresholds (x0, y0), vectorised over the grid.

For every grid point the region yields per M_T bin come from one zero-padded 2D cumulative sum of
the ``xy_mt`` (x, y) axes (:func:`.regions.cumulative_2d`). Every point is then put on the fit
bins its cards would have: the statistics guard (:mod:`.guard`) merges adjacent M_T bins until
every region holds ``min_neff`` effective MC events and the prediction's MC error is at most
``max_rel_err`` (:func:`guarded_grid`); every metric below is computed on those bins, as the
cards, the closure table and the summary show them. Metrics per point (plane SP by default, MC
background summed over datasets):

``z_mean``  ``<Z_A>``: mean over signal points k of ``sqrt(sum_i Z_k,i^2)`` with
            :func:`.significance.asimov_z`, ``s = stilde_k,i`` (rescaled to the reference point's
            total yield), ``b = nhat_B,i`` and ``sigma_b,i``: ``sigma_mode="poisson"`` (default,
            Asimov-data statistics, ``nhat sqrt(1/n_A + 1/n_C + 1/n_D)``), ``"sumw2"`` (MC
            statistics) or ``"both"``, and (``fom_nonclosure``, default) in quadrature the
            non-closure ``u_i nhat_B,i`` the cards would carry (:func:`nonclosure_grid`).
``pvalue``  chi2 p-value of the log-space closure pulls over the fit bins (:func:`.abcd.closure`:
            ``ln(nhat_B / n_B) / s``; +-inf where only one side has events, which fails).
``plateau`` True if ``pvalue >= p_min`` at the point and at all its existing 8 grid neighbours.
``delta_bins`` ``max_i |delta_i|`` over the fit bins, ``delta_i = nhat_B,i / n_B,i - 1`` (inf where
            only one side has events).
``delta_sig_bins`` the same over the bins whose closure pull exceeds ``delta_z`` (0 if none): the
            non-closure rule acts on this.
``pull_bins`` ``max_i |pull_i|`` (log-space pulls).
``delta_total``, ``pull_total`` the closure of the sum over the fit bins (reference only; the
            non-closure table of the summary shows the per-bin ``delta_i``).
``n_fit_bins``, ``neff_min`` the number of fit bins and the smallest N_eff of any region in them.
``r_max``   ``max_{k, R in A,C,D} (s_R,k / b_R) / (s_B,k / b_B)`` (M_T-integrated yields; +inf if a
            signal point has events in A, C or D but none in B).
``pass_guard`` the statistics guard holds on the merged bins (``guard``: why not).
``in_bounds`` ``x0, y0`` inside ``bounds``.

MC variances with detector copies (parent records on ``xy_mt``, :mod:`.parents`) are parent-aware
exactly, also for merged bins (cross terms of a parent's copies in different bins).

Selection: maximise ``z_mean`` among points passing every rule, the guard included. If none
passes, the result has ``fallback=True`` (:func:`_choose`): such a point is not backed, and
``svjscout run`` writes no cards for it unless told to. Choose on one half of the MC and quote on
the other (:mod:`.split`): the maximum of ~1,000 noisy ``<Z_A>`` is biased high.

Example:
    >>> # res = scan_working_points(xy_mt, datasets)
    >>> # res.best, res.table.loc[res.table.passes].head()
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from svjscout.core.exceptions import HistogramError

from .abcd import closure, predict
from .guard import Guard, guarded_groups, kish_neff
from .nonclosure import kappas_from_deltas
from .parents import StatInputs, pairs_of
from .plots import plot_scan_heatmaps
from .regions import cumulative_2d, datasets_of_kind, mt_edges, plane_arrays, regions_from_cumsum, snap_threshold
from .significance import asimov_z, rescale_factors

log = logging.getLogger(__name__)

RULE_COLUMNS = ("pass_guard", "pass_pvalue", "pass_delta", "pass_pull", "pass_rmax", "in_bounds")


@dataclass
class ScanRules:
    """Selection rules of the scan (docs/physics.md defaults).

    Attributes:
        p_min: minimum chi2 p-value (0.05), required at the point and, if ``plateau``, its neighbours.
            The design asks for p >= 0.9 on a plateau: unusual, since under a correct model p is
            uniform on [0, 1], so p >= 0.9 keeps a random 10 % of good working points and rewards
            bins whose MC happens to sit close to the prediction (small MC samples, big errors).
            0.05 rejects points whose closure is significantly bad. ``p_min=0.9, plateau=True``
            restores the design's rule.
        plateau: require the p-value rule at all 8 grid neighbours too (False).
        delta_max: maximum significant ``|delta_i|`` in every M_T bin (0.05).
        delta_z: a bin's non-closure counts when ``|delta_i| > delta_z sigma(delta_i)`` (2; 0: always).
        pull_max: maximum ``|pull_i|`` in every M_T bin (2.0).
        r_max: maximum signal contamination ratio (0.35).
        bounds: allowed range for x0 and y0 ((0.1, 0.9)).
        sigma_mode: background uncertainty in ``<Z_A>``: "poisson", "sumw2" or "both".
        plane: plane of the scan ("SP").
        fom_nonclosure: add the non-closure the cards would carry at each point to ``sigma_b``
            (statistics-aware rule of :mod:`.nonclosure`, closure bins merged to ``min_neff``
            effective MC events, ``nonclosure_z``), so that ``<Z_A>`` ranks points as their
            expected limits do.
    """

    p_min: float = 0.05
    plateau: bool = False
    delta_max: float = 0.05
    delta_z: float = 2.0
    pull_max: float = 2.0
    r_max: float = 0.35
    bounds: tuple[float, float] = (0.1, 0.9)
    sigma_mode: str = "poisson"
    plane: str = "SP"
    fom_nonclosure: bool = True
    min_neff: float = 10.0
    nonclosure_z: float = 2.0
    max_rel_err: float = 0.5

    @property
    def guard(self) -> Guard:
        """The statistics guard of the cards (:mod:`.guard`): a point it fails cannot be chosen."""
        return Guard(self.min_neff, self.max_rel_err)


@dataclass
class ScanResult:
    """Result of :func:`scan_working_points`.

    Attributes:
        table: pandas DataFrame, one row per (x0, y0), metric columns, rule columns and ``passes``.
        best: chosen working point ``(x0, y0)``.
        fallback: True if no point passed every rule.
        report: one-paragraph human-readable summary of the choice.
        grid_x, grid_y: the scanned thresholds, shapes ``(gx,)`` and ``(gy,)``.
        rules: the :class:`ScanRules` used.
        reference: name of the reference signal point of the stilde rescaling.
        signals: signal dataset names (order of the ``z_<name>`` columns).
        sample: which events the scan ran on, when not all of them (figure titles, scan_best.json).
    """

    table: object
    best: tuple[float, float]
    fallback: bool
    report: str
    grid_x: np.ndarray
    grid_y: np.ndarray
    rules: ScanRules
    reference: str
    signals: list[str] = field(default_factory=list)
    sample: str = ""  # which events, when not all of them (e.g. "half 'select' of the MC")

    def metric_grid(self, column: str) -> np.ndarray:
        """Column of the table as a ``(gx, gy)`` array (rows x0, columns y0)."""
        return self.table[column].to_numpy().reshape(len(self.grid_x), len(self.grid_y))


def default_grid(n: int = 33, lo: float = 0.1, hi: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """``n x n`` equally spaced thresholds in ``[lo, hi]^2`` (33 -> step 0.025, on the bin edges)."""
    g = np.round(np.linspace(lo, hi, n), 10)
    return g, g.copy()


def _resolve_grid(grid) -> tuple[np.ndarray, np.ndarray]:
    if grid is None:
        return default_grid()
    if isinstance(grid, int):
        return default_grid(grid)
    if isinstance(grid, Mapping):
        return np.asarray(grid["x"], float), np.asarray(grid["y"], float)
    gx, gy = grid
    return np.atleast_1d(np.asarray(gx, float)), np.atleast_1d(np.asarray(gy, float))


def plateau_mask(ok: np.ndarray) -> np.ndarray:
    """True where ``ok`` holds at a grid point and at all its existing 8 neighbours.

    Args:
        ok: boolean array ``(gx, gy)``.
    """
    p = np.pad(ok, 1, constant_values=True)
    out = np.ones_like(ok, dtype=bool)
    gx, gy = ok.shape
    for dx in (0, 1, 2):
        for dy in (0, 1, 2):
            out &= p[dx : dx + gx, dy : dy + gy]
    return out


def _sigma_b(mode: str, nhat, var_mc, a, c, d):
    with np.errstate(divide="ignore", invalid="ignore"):
        pois = np.where(
            (a > 0) & (c > 0) & (d > 0),
            np.abs(nhat) * np.sqrt(1.0 / np.where(a > 0, a, 1) + 1.0 / np.where(c > 0, c, 1)
                                   + 1.0 / np.where(d > 0, d, 1)),
            np.nan,
        )
    if mode == "poisson":
        return pois
    if mode == "sumw2":
        return np.sqrt(var_mc)
    if mode == "both":
        return np.sqrt(pois**2 + var_mc)
    raise HistogramError(f"unknown sigma_mode '{mode}', expected poisson, sumw2 or both")


def _parent_aware(var, xy_mt, parents, names, plane, ix, iy):
    """Per-bin region variances ``var`` (4, gx, gy, n_mt) of the grid with the cross terms of
    detector copies in different ``xy_mt`` bins of a region added (:mod:`.parents`, exact at
    every point), and the cross terms between different M_T bins (4, gx, gy, n_mt, n_mt;
    diagonal zero) for merged M_T groups; ``(var, None)`` without parent records."""
    pairs = pairs_of(xy_mt, parents, names, plane)
    if pairs is None:
        return var, None
    m = pairs.grid_matrix(ix, iy)
    var = var + np.diagonal(m, axis1=-2, axis2=-1)
    n = m.shape[-1]
    m[..., np.arange(n), np.arange(n)] = 0.0
    return var, m


def _group_var(v, off):
    """``var_of`` of :func:`.guard.merge_groups` at one grid point: bins' variances summed, plus
    the parents' cross terms between different M_T bins of the group (``off``, or None)."""
    if off is None:
        return None
    return lambda g: v[:, list(g)].sum(axis=1) + off[:, list(g)][:, :, list(g)].sum(axis=(1, 2))


@dataclass
class GuardedGrid:
    """Region yields of every grid point on its guarded fit bins (:mod:`.guard`).

    Merged M_T groups sit in the first ``n_bins`` slots of the last axis; the other slots are 0
    and ``valid`` is False there. Shapes: ``bkg``, ``var``, ``vp``, ``vp_var`` ``(4, *G, n_mt)``;
    ``sig`` ``(4, K, *G, n_mt)``; ``valid`` ``(*G, n_mt)``; ``backed``, ``n_bins`` ``G``.
    """

    bkg: np.ndarray
    var: np.ndarray
    sig: np.ndarray
    vp: np.ndarray
    vp_var: np.ndarray
    valid: np.ndarray
    backed: np.ndarray
    n_bins: np.ndarray
    reasons: np.ndarray  # (*G,) object: "" or the guard's reasons


def guarded_grid(bkg, bkg_var, sig, vp, vp_var, guard: Guard, cross=None, vp_cross=None, edges=None) -> GuardedGrid:
    """Merge the M_T bins of every grid point with the statistics guard, as the card writer does.

    Args:
        bkg, bkg_var: SP yields and variances, shape ``(4, *G, n_mt)``; sig ``(4, K, *G, n_mt)``;
            vp, vp_var: the other plane, merged with the same groups (the closure check in VP).
        cross, vp_cross: with detector copies, the parents' cross terms between different M_T
            bins, shape ``(4, *G, n_mt, n_mt)`` (:func:`_parent_aware`); None: variances summed.
    """
    G = bkg.shape[1:-1]
    out = GuardedGrid(np.zeros_like(bkg), np.zeros_like(bkg_var), np.zeros_like(sig), np.zeros_like(vp),
                      np.zeros_like(vp_var), np.zeros((*G, bkg.shape[-1]), bool), np.zeros(G, bool),
                      np.zeros(G, int), np.full(G, "", dtype=object))
    for idx in np.ndindex(*G):
        at = (slice(None), *idx)
        b, v = bkg[at], bkg_var[at]
        sp_of = _group_var(v, None if cross is None else cross[at])
        vp_of = _group_var(vp_var[at], None if vp_cross is None else vp_cross[at])
        groups, _, verdict = guarded_groups(b, v, guard, var_of=sp_of, edges=edges)
        for k, g in enumerate(groups):
            out.bkg[(*at, k)] = b[:, g].sum(axis=1)
            out.var[(*at, k)] = sp_of(g) if sp_of is not None else v[:, g].sum(axis=1)
            out.vp[(*at, k)] = vp[at][:, g].sum(axis=1)
            out.vp_var[(*at, k)] = vp_of(g) if vp_of is not None else vp_var[at][:, g].sum(axis=1)
            out.sig[(slice(None), slice(None), *idx, k)] = sig[(slice(None), slice(None), *idx)][..., g].sum(axis=-1)
        out.valid[(*idx, slice(0, len(groups)))] = True
        out.backed[idx] = verdict.backed
        out.n_bins[idx] = len(groups)
        out.reasons[idx] = "; ".join(verdict.reasons)
    return out


def nonclosure_grid(gg: GuardedGrid, rules: ScanRules) -> np.ndarray:
    """Relative non-closure ``kappa - 1`` per point and fit bin that the cards would carry (rule
    ``continuous`` of :mod:`.nonclosure` on the guarded bins, VP where it has ``min_neff``
    effective MC events in every region); 0 in the unused slots. Shape ``(*G, n_mt)``."""
    d, s = [], []
    for y, yv in ((gg.bkg, gg.var), (gg.vp, gg.vp_var)):
        nhat, var = predict(y[0], y[2], y[3], yv[0], yv[2], yv[3])
        dd, ss, _ = closure(nhat, var, y[1], yv[1])
        d.append(dd[gg.valid])
        s.append(ss[gg.valid])
    vp_ok = np.all(kish_neff(gg.vp, gg.vp_var) >= rules.min_neff, axis=0)[gg.valid]
    u = np.zeros(gg.valid.shape)
    if d[0].size:
        kappa, _ = kappas_from_deltas(d[0], d[1], s[0], s[1], "continuous", z=rules.nonclosure_z, vp_usable=vp_ok,
                                      quiet=True)
        u[gg.valid] = kappa - 1.0
    return u


def compute_metrics(bkg, bkg_var, sig, factors, rules: ScanRules, u_nonclosure=None,
                    valid=None) -> dict[str, np.ndarray]:
    """All scan metrics from region yields (vectorised; grid shape ``G`` e.g. ``(gx, gy)``).

    Args:
        bkg: background yields, shape ``(4, *G, n_mt)`` (A, B, C, D).
        bkg_var: their (parent-aware) variances, same shape.
        sig: signal yields, shape ``(4, K, *G, n_mt)``.
        factors: stilde factors, shape ``(K,)``.
        rules: thresholds (``sigma_mode``, ``delta_z`` are used here).
        u_nonclosure: the cards' ``kappa - 1`` per bin, shape ``(*G, n_mt)`` (None: none).
        valid: which M_T slots are fit bins, shape ``(*G, n_mt)`` (None: all).

    Returns:
        dict of arrays of shape ``G`` (``z_k`` of shape ``(K, *G)``).
    """
    a, b, c, d = bkg
    va, vb, vc, vd = bkg_var
    valid = np.ones(b.shape, bool) if valid is None else np.asarray(valid, bool)
    nhat, var = predict(a, c, d, va, vc, vd)
    delta_i, _, pull_i = closure(nhat, var, b, vb)
    defined = valid & np.isfinite(nhat) & ~np.isnan(pull_i)
    chi2 = np.sum(np.where(defined, pull_i, 0.0) ** 2, axis=-1)
    ndf = np.sum(defined, axis=-1)
    pval = np.where(ndf > 0, stats.chi2.sf(chi2, np.maximum(ndf, 1)), np.nan)

    all_ok = np.all(np.isfinite(nhat) | ~valid, axis=-1)
    nhat_tot = np.where(all_ok, np.sum(np.where(valid & np.isfinite(nhat), nhat, 0), axis=-1), np.nan)
    b_tot = np.sum(np.where(valid, b, 0.0), axis=-1)
    okd = all_ok & (b_tot > 0)
    delta = np.where(okd, nhat_tot / np.where(okd, b_tot, 1) - 1, np.nan)
    var_tot = np.sum(np.where(valid & np.isfinite(var), var, 0.0), axis=-1)
    vb_tot = np.sum(np.where(valid, vb, 0.0), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_tot = np.sqrt(var_tot / nhat_tot**2 + vb_tot / b_tot**2)
        pull = np.where(okd & (nhat_tot > 0) & (s_tot > 0), np.log(nhat_tot / b_tot) / s_tot, np.nan)

    # per fit bin: |delta| (inf where only one side has events), significant beyond delta_z log-space sigmas
    absd = np.where(np.isinf(pull_i), np.inf, np.abs(delta_i))
    delta_bins = np.max(np.where(defined, absd, -np.inf), axis=-1)
    delta_bins = np.where(np.isneginf(delta_bins), np.nan, delta_bins)
    significant = defined & (np.abs(pull_i) > rules.delta_z)
    delta_sig_bins = np.max(np.where(significant, absd, 0.0), axis=-1)
    pull_bins = np.max(np.where(defined, np.abs(pull_i), -np.inf), axis=-1)
    pull_bins = np.where(np.isneginf(pull_bins), np.nan, pull_bins)

    sigma = _sigma_b(rules.sigma_mode, nhat, var, a, c, d)
    if u_nonclosure is not None:  # the cards' non-closure, in quadrature with the statistics
        sigma = np.sqrt(sigma**2 + (u_nonclosure * np.where(np.isfinite(nhat), nhat, 0.0)) ** 2)
    shape = (-1,) + (1,) * (sig.ndim - 2)
    stilde = sig[1] * np.asarray(factors).reshape(shape)
    zb = asimov_z(stilde, nhat[None], sigma[None])
    z_k = np.sqrt(np.sum(np.where(valid[None], zb, 0.0) ** 2, axis=-1))
    z_mean = z_k.mean(axis=0)

    s_int = np.where(valid[None, None], sig, 0.0).sum(axis=-1)  # (4, K, *G)
    b_int = np.where(valid[None], bkg, 0.0).sum(axis=-1)  # (4, *G)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = s_int / b_int[:, None]
        ratio = frac[[0, 2, 3]] / frac[1][None]
    # undefined (0/0: no signal in R and B) entries are ignored; x/0 (signal in R but none in B,
    # or signal where there is no background) is +inf and fails the rule
    r_max = np.max(np.where(np.isnan(ratio), -np.inf, ratio), axis=(0, 1))
    r_max = np.where(np.isneginf(r_max), np.inf, r_max)
    neff = kish_neff(bkg, bkg_var)
    neff_min = np.min(np.where(valid[None], neff, np.inf), axis=(0, -1))
    return {
        "z_mean": z_mean, "chi2": chi2, "ndf": ndf, "pvalue": pval, "delta_total": delta, "pull_total": pull,
        "delta_bins": delta_bins, "delta_sig_bins": delta_sig_bins, "pull_bins": pull_bins, "r_max": r_max,
        "neff_min": neff_min, "z_k": z_k,
    }


def scan_working_points(
    inputs,
    datasets: Mapping[str, Mapping],
    grid=None,
    reference: str | None = None,
    rules: ScanRules | None = None,
    signals: Sequence[str] | None = None,
    quiet: bool = False,
) -> ScanResult:
    """Scan the ABCD working point over a grid and choose the best one.

    Args:
        inputs: :class:`.parents.StatInputs` (``xy_mt``, a histogram ``(dataset, plane, x, y,
            mt)``, and its parent records), or a bare ``xy_mt`` (no parent records).
        datasets: dataset metadata (kinds "signal", "background", "data").
        grid: None (33 x 33 in [0.1, 0.9]^2), an int n (n x n in [0.1, 0.9]^2), ``(xs, ys)``
            arrays of thresholds, or ``{"x": xs, "y": ys}``; thresholds must sit on bin edges.
        reference: reference signal dataset of the stilde rescaling (default: first signal name
            in sorted order).
        rules: :class:`ScanRules` (defaults of docs/physics.md).
        signals: signal datasets to average over (default: all of kind "signal").
        quiet: log the choice at debug level (an evaluation of given points, not a choice).

    Returns:
        :class:`ScanResult`; ``.table`` has columns ``x0, y0, z_mean, chi2, ndf, pvalue, plateau,
        delta, pull, delta_bins, delta_sig_bins, pull_bins, r_max, pass_pvalue, pass_delta, pass_pull,
        pass_rmax, in_bounds, n_failed, passes`` and ``z_<signal>`` per signal point.

    Raises:
        HistogramError: missing axes/datasets, off-grid thresholds, no signal or background.
    """
    inputs = StatInputs.of(inputs)
    xy_mt, parents = inputs.xy_mt, inputs.parents
    rules = rules or ScanRules()
    gx, gy = _resolve_grid(grid)
    ix = np.array([snap_threshold(v, xy_mt.axes["x"].edges, "x") for v in gx])
    iy = np.array([snap_threshold(v, xy_mt.axes["y"].edges, "y") for v in gy])
    gx = np.round(np.asarray(xy_mt.axes["x"].edges)[ix], 10)  # exact edge values in the table
    gy = np.round(np.asarray(xy_mt.axes["y"].edges)[iy], 10)
    bkg_names = datasets_of_kind(xy_mt, datasets, "background")
    sig_names = list(signals) if signals is not None else datasets_of_kind(xy_mt, datasets, "signal")
    if not bkg_names:
        raise HistogramError("scan needs at least one dataset of kind 'background'")
    if not sig_names:
        raise HistogramError("scan needs at least one dataset of kind 'signal'")
    reference = reference or sig_names[0]
    if reference not in sig_names:
        raise HistogramError(f"reference signal '{reference}' is not among the signal datasets {sig_names}")

    bv, bw = plane_arrays(xy_mt, bkg_names, rules.plane)
    sv, _ = plane_arrays(xy_mt, sig_names, rules.plane, summed=False)
    bkg = regions_from_cumsum(cumulative_2d(bv), ix, iy)
    bkg_var, cross = _parent_aware(regions_from_cumsum(cumulative_2d(bw), ix, iy), xy_mt, parents, bkg_names,
                                   rules.plane,
                                   ix, iy)
    sig = regions_from_cumsum(cumulative_2d(sv), ix, iy)
    factors = rescale_factors(sv.sum(axis=(1, 2, 3)), sig_names.index(reference))
    other = "VP" if rules.plane == "SP" else "SP"
    vv, vw = plane_arrays(xy_mt, bkg_names, other)
    vp_var, vp_cross = _parent_aware(regions_from_cumsum(cumulative_2d(vw), ix, iy), xy_mt, parents, bkg_names, other,
                                     ix, iy)
    gg = guarded_grid(bkg, bkg_var, sig, regions_from_cumsum(cumulative_2d(vv), ix, iy), vp_var, rules.guard,
                      cross=cross, vp_cross=vp_cross, edges=mt_edges(xy_mt))
    u = nonclosure_grid(gg, rules) if rules.fom_nonclosure else None
    m = compute_metrics(gg.bkg, gg.var, gg.sig, factors, rules, u, valid=gg.valid)

    X, Y = np.meshgrid(gx, gy, indexing="ij")
    pass_p = np.nan_to_num(m["pvalue"], nan=-1.0) >= rules.p_min
    plateau = plateau_mask(pass_p)
    lo, hi = rules.bounds
    cols = {
        "x0": X.ravel(), "y0": Y.ravel(), "z_mean": m["z_mean"].ravel(), "chi2": m["chi2"].ravel(),
        "ndf": m["ndf"].ravel(), "pvalue": m["pvalue"].ravel(), "plateau": plateau.ravel(),
        "n_fit_bins": gg.n_bins.ravel(), "neff_min": m["neff_min"].ravel(),
        "delta_total": m["delta_total"].ravel(), "pull_total": m["pull_total"].ravel(),
        "delta_bins": m["delta_bins"].ravel(), "delta_sig_bins": m["delta_sig_bins"].ravel(),
        "pull_bins": m["pull_bins"].ravel(), "r_max": m["r_max"].ravel(),
        "pass_guard": gg.backed.ravel(),
        "pass_pvalue": (plateau if rules.plateau else pass_p).ravel(),
        "pass_delta": (np.nan_to_num(m["delta_sig_bins"], nan=np.inf) <= rules.delta_max).ravel(),
        "pass_pull": (np.nan_to_num(m["pull_bins"], nan=np.inf) <= rules.pull_max).ravel(),
        "pass_rmax": (np.nan_to_num(m["r_max"], nan=np.inf) <= rules.r_max).ravel(),
        "in_bounds": ((X >= lo - 1e-9) & (X <= hi + 1e-9) & (Y >= lo - 1e-9) & (Y <= hi + 1e-9)).ravel(),
        "guard": gg.reasons.ravel(),
    }
    df = pd.DataFrame(cols)
    df["n_failed"] = (~df[list(RULE_COLUMNS)]).sum(axis=1).astype(int)
    df["passes"] = df["n_failed"] == 0
    for k, name in enumerate(sig_names):
        df[f"z_{name}"] = m["z_k"][k].ravel()

    best, fallback, report = _choose(df, rules, quiet)
    return ScanResult(df, best, fallback, report, gx, gy, rules, reference, sig_names)


def _choose(df, rules: ScanRules, quiet: bool = False) -> tuple[tuple[float, float], bool, str]:
    """The passing point of highest ``<Z_A>``; else a fallback (``fallback=True``): among the
    points that pass the guard, the fewest failed rules and then the highest ``<Z_A>``; with no
    point passing the guard, the in-bounds point with the most MC (largest smallest N_eff), since
    the highest ``<Z_A>`` of unbacked points is a fluctuation."""
    z = df["z_mean"].fillna(-np.inf)
    if df["passes"].any():
        i = z.where(df["passes"], -np.inf).idxmax()
        r = df.loc[i]
        msg = (
            f"best working point (x0, y0) = ({r.x0:.3f}, {r.y0:.3f}) passes every rule: <Z_A> = {r.z_mean:.3g}, "
            f"p = {r.pvalue:.3f}, max |delta_i| = {r.delta_bins:.4f}, max |pull_i| = {r.pull_bins:.3f} over "
            f"{int(r.n_fit_bins)} fit bin(s) (smallest N_eff {r.neff_min:.1f}), r_max = {r.r_max:.3f}; "
            f"{int(df.passes.sum())}/{len(df)} points pass all rules"
        )
        (log.debug if quiet else log.info)(msg)
        return (float(r.x0), float(r.y0)), False, msg
    counts = {c: int((~df[c]).sum()) for c in RULE_COLUMNS}
    cand = df[df["in_bounds"]] if df["in_bounds"].any() else df
    if cand["pass_guard"].any():
        cand = cand[cand["pass_guard"]]
        nmin = cand["n_failed"].min()
        cand = cand[cand["n_failed"] == nmin]
        i = cand["z_mean"].fillna(-np.inf).idxmax()
        how = (f"among the {int(df.pass_guard.sum())} points the MC backs, the fewest failed rules ({nmin}) "
               "and highest <Z_A>")
    else:
        i = cand["neff_min"].fillna(-np.inf).idxmax()
        how = ("NO point is backed by the MC (statistics guard failed everywhere): the point with the most MC "
               "(largest smallest N_eff)")
    r = df.loc[i]
    failed = [c for c in RULE_COLUMNS if not bool(r[c])]
    msg = (
        f"NO working point passes all rules (failures per rule over {len(df)} points: {counts}); "
        f"FALLBACK to ({r.x0:.3f}, {r.y0:.3f}), {how}: fails {failed}; <Z_A> = {r.z_mean:.3g}, p = {r.pvalue:.3f}, "
        f"max |delta_i| = {r.delta_bins:.4f}, max |pull_i| = {r.pull_bins:.3f}, smallest N_eff {r.neff_min:.1f}, "
        f"r_max = {r.r_max:.3f}" + (f"; guard: {r.guard}" if r.guard else "")
    )
    (log.debug if quiet else log.warning)(msg)
    return (float(r.x0), float(r.y0)), True, msg


def write_scan(result: ScanResult, outdir: str | os.PathLike, plots: bool = True, style=None) -> list[str]:
    """Write ``scan.csv``, ``scan_best.json`` and (``plots``) the heat maps (PDF and PNG, CMS ``style``)
    of :func:`.plots.plot_scan_heatmaps` into ``outdir``.

    Returns:
        list of written paths.
    """
    os.makedirs(outdir, exist_ok=True)
    paths = []
    csv = os.path.join(outdir, "scan.csv")
    result.table.to_csv(csv, index=False, float_format="%.8g")
    paths.append(csv)
    js = os.path.join(outdir, "scan_best.json")
    with open(js, "w") as f:
        json.dump(
            {"best": {"x0": result.best[0], "y0": result.best[1]}, "fallback": result.fallback,
             "report": result.report, "reference": result.reference, "signals": result.signals,
             "sample": result.sample or "all events",
             "rules": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(result.rules).items()}},
            f, indent=1,
        )
    paths.append(js)
    if plots:
        paths += plot_scan_heatmaps(result, outdir, style=style)
    return paths
