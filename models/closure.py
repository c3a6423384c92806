"""Soft ABCD counts and the closure figure of merit (closure-aware ABCDisCo, docs/physics.md).

Regions in the (X, Y) score plane with thresholds (x0, y0):
A: X>x0, Y<y0 | B: X>x0, Y>y0 (signal region) | C: X<x0, Y<y0 | D: X<x0, Y>y0.
The step functions are smoothed with ``G(u) = sigmoid(kappa u)`` so that the counts, and the
closure ``C = |n_A n_D - n_B n_C| / (n_A n_D + n_B n_C)``, are differentiable in X and Y.
``C = 0`` when the background factorises in the plane (``n_B = n_A n_D / n_C``).

Planes are selected on |deta(J0, J1)|: signal plane SP |deta| < 1.5, validation plane VP
1.5 <= |deta| < 2.2 by default (:data:`DEFAULT_PLANES`, configurable).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch

from svjscout.core.cuts import Cuts

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PLANES", "soft_counts", "closure", "binned_closure", "plane_mask", "plane_closures",
           "occupancy_deficit", "plane_occupancies", "REDUCTIONS", "soft_counts_grid", "soft_counts_wps",
           "wp_closures", "reduce", "reduce_closures"]

#: Folds of closures over M_T bins or working points.
REDUCTIONS = ("mean", "max", "smooth_max")

def _analysis_default_planes() -> dict[str, tuple[float, float]]:
    cuts = Cuts()
    return {"SP": (0.0, cuts.sp_deta_max), "VP": (cuts.sp_deta_max, cuts.deta_max)}


#: |deta| ranges [lo, hi) of the signal and validation planes: the analysis defaults
#: (``Cuts.sp_deta_max``, ``Cuts.deta_max``), never a second copy of the numbers. The processor
#: refuses a twin model trained with other planes than the job's cuts define.
DEFAULT_PLANES: dict[str, tuple[float, float]] = _analysis_default_planes()

_TINY = 1e-12


def soft_counts(
    x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, x0: float, y0: float, kappa: float = 50.0
) -> torch.Tensor:
    """Soft counts (n_A, n_B, n_C, n_D).

    Args:
        x, y: (n,) scores in [0, 1].
        weights: (n,) event weights (a yield: events, or any consistent unit).
        x0, y0: thresholds on X and Y.
        kappa: sharpness of ``G(u) = sigmoid(kappa u)`` (1/score units); large -> hard cut.

    Returns:
        (4,) tensor [n_A, n_B, n_C, n_D] in the unit of ``weights``.
    """
    gx = torch.sigmoid(kappa * (x - x0))  # G(X - x0): "X above"
    gy = torch.sigmoid(kappa * (y - y0))  # G(Y - y0): "Y above"; G(y0 - Y) = 1 - gy
    n_a = (weights * gx * (1 - gy)).sum()
    n_b = (weights * gx * gy).sum()
    n_c = (weights * (1 - gx) * (1 - gy)).sum()
    n_d = (weights * (1 - gx) * gy).sum()
    return torch.stack([n_a, n_b, n_c, n_d])


def closure(counts: torch.Tensor) -> torch.Tensor:
    """``|n_A n_D - n_B n_C| / (n_A n_D + n_B n_C)`` of (..., 4) counts [A, B, C, D]; shape (...)."""
    ad = counts[..., 0] * counts[..., 3]
    bc = counts[..., 1] * counts[..., 2]
    return (ad - bc).abs() / (ad + bc).clamp_min(_TINY)


def occupancy_deficit(counts: torch.Tensor, min_fraction: float) -> torch.Tensor:
    """How far the emptiest control region falls below ``min_fraction`` of the plane's background.

    ``max_{r in A, C, D} max(0, min_fraction - n_r / (n_A + n_B + n_C + n_D)) / min_fraction``:
    0 when every control region holds at least ``min_fraction`` of the background, 1 when one is
    empty. It excludes the trivial ways of closing: a score that sits entirely on one side of its
    threshold factorises the soft counts exactly (``C = 0``) while leaving A and C (or C and D)
    empty, where no ABCD prediction is possible. The signal region B is not required to be filled.

    Args:
        counts: (4,) soft counts [n_A, n_B, n_C, n_D].
        min_fraction: required fraction in (0, 1); <= 0 gives 0 (constraint off).

    Returns:
        0-d tensor in [0, 1].
    """
    if min_fraction <= 0:
        return (counts * 0).sum()
    frac = counts / counts.sum().clamp_min(_TINY)
    control = torch.stack([frac[0], frac[2], frac[3]])
    return torch.relu(min_fraction - control).max() / min_fraction


def plane_occupancies(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    deta: torch.Tensor,
    x0: float,
    y0: float,
    kappa: float,
    min_fraction: float,
    planes: Mapping[str, tuple[float, float]] = DEFAULT_PLANES,
) -> dict[str, torch.Tensor]:
    """``{"occupancy_<plane>": occupancy_deficit(soft counts of the plane)}`` (0 for an empty plane)."""
    out: dict[str, torch.Tensor] = {}
    for name, rng in planes.items():
        m = plane_mask(deta, rng)
        if not bool(m.any()):
            out[f"occupancy_{name}"] = (x * 0).sum()
            continue
        out[f"occupancy_{name}"] = occupancy_deficit(soft_counts(x[m], y[m], weights[m], x0, y0, kappa), min_fraction)
    return out


def binned_closure(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    mt: torch.Tensor,
    edges: Sequence[float],
    x0: float,
    y0: float,
    kappa: float = 50.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-M_T-bin closure C_i.

    Args:
        x, y, weights: (n,) scores and weights.
        mt: (n,) M_T in GeV.
        edges: (k+1,) increasing bin edges in GeV; bin i is [edges[i], edges[i+1]); events
            outside are ignored.
        x0, y0, kappa: as in :func:`soft_counts`.

    Returns:
        ``(c, filled)``: (k,) closures per bin (0 for an empty bin) and a (k,) bool tensor,
        True where the bin has events.
    """
    edges_t = torch.as_tensor(list(edges), dtype=mt.dtype, device=mt.device)
    if edges_t.numel() < 2 or not bool(torch.all(edges_t[1:] > edges_t[:-1])):
        raise ValueError(f"binned_closure: M_T bin edges {list(edges)} must be >= 2 increasing values")
    idx = torch.bucketize(mt, edges_t, right=True) - 1
    k = edges_t.numel() - 1
    gx = torch.sigmoid(kappa * (x - x0))
    gy = torch.sigmoid(kappa * (y - y0))
    parts = torch.stack([gx * (1 - gy), gx * gy, (1 - gx) * (1 - gy), (1 - gx) * gy], dim=1) * weights[:, None]
    inside = (idx >= 0) & (idx < k)
    counts = torch.zeros(k, 4, dtype=parts.dtype, device=parts.device)
    counts = counts.index_add(0, idx[inside], parts[inside])
    filled = torch.zeros(k, dtype=torch.bool, device=mt.device)
    filled[idx[inside].unique()] = True
    c = torch.where(filled, closure(counts), torch.zeros_like(counts[:, 0]))
    return c, filled


def plane_mask(deta: torch.Tensor, plane: tuple[float, float]) -> torch.Tensor:
    """Bool mask of ``lo <= |deta| < hi`` for ``plane = (lo, hi)``; (n,) -> (n,)."""
    lo, hi = plane
    a = deta.abs()
    return (a >= lo) & (a < hi)


def plane_closures(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    deta: torch.Tensor,
    mt: torch.Tensor,
    x0: float,
    y0: float,
    kappa: float = 50.0,
    mt_edges: Sequence[float] | None = None,
    planes: Mapping[str, tuple[float, float]] = DEFAULT_PLANES,
    bin_reduce: str = "mean",
) -> dict[str, torch.Tensor]:
    """Normalisation and per-M_T-bin closure in every plane.

    Args:
        x, y, weights, deta, mt: (n,) background scores, weights, deta(J0, J1), M_T (GeV).
        x0, y0, kappa: as in :func:`soft_counts`.
        mt_edges: M_T bin edges in GeV; ``None`` skips the binned closure.
        planes: name -> (lo, hi) on |deta|.
        bin_reduce: ``"mean"`` (over filled bins), ``"max"`` or ``"smooth_max"`` (temperature 0.01)
            to fold the C_i into one number.

    Returns:
        ``{"closure_<plane>": C, "closure_bins_<plane>": reduced C_i}`` as 0-d tensors
        (0 for a plane without events).
    """
    if bin_reduce not in REDUCTIONS:
        raise ValueError(f"plane_closures: bin_reduce is {bin_reduce!r}, expected one of {list(REDUCTIONS)}")
    out: dict[str, torch.Tensor] = {}
    zero = (x * 0).sum()
    for name, rng in planes.items():
        m = plane_mask(deta, rng)
        if not bool(m.any()):
            out[f"closure_{name}"] = zero
            if mt_edges is not None:
                out[f"closure_bins_{name}"] = zero
            continue
        out[f"closure_{name}"] = closure(soft_counts(x[m], y[m], weights[m], x0, y0, kappa))
        if mt_edges is not None:
            c, filled = binned_closure(x[m], y[m], weights[m], mt[m], mt_edges, x0, y0, kappa)
            if not bool(filled.any()):
                out[f"closure_bins_{name}"] = zero
            else:
                out[f"closure_bins_{name}"] = reduce(c[filled], bin_reduce)  # temperature 0.01
    return out


def soft_counts_grid(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor,
                     kappa: float = 50.0) -> torch.Tensor:
    """Soft counts at every threshold pair of a grid, float64.

    Args:
        x, y, weights: (n,) scores and weights.
        xs, ys: (kx,), (ky,) thresholds on X and on Y.
        kappa: as in :func:`soft_counts`.

    Returns:
        (kx, ky, 4) tensor [n_A, n_B, n_C, n_D] at (xs[i], ys[j]), equal to
        ``soft_counts(x, y, weights, xs[i], ys[j], kappa)``.
    """
    dt = torch.float64
    x, y, w = x.to(dt), y.to(dt), weights.to(dt)
    xs = torch.as_tensor(xs, dtype=dt, device=x.device)
    ys = torch.as_tensor(ys, dtype=dt, device=x.device)
    gx = torch.sigmoid(kappa * (x[:, None] - xs[None, :]))  # (n, kx): "X above"
    gy = torch.sigmoid(kappa * (y[:, None] - ys[None, :]))  # (n, ky): "Y above"
    wgx = w[:, None] * gx
    n_b = wgx.T @ gy
    s_x = wgx.sum(0)[:, None]
    s_y = (w[:, None] * gy).sum(0)[None, :]
    total = w.sum()
    n_a = s_x - n_b
    n_d = s_y - n_b
    n_c = total - s_x - s_y + n_b
    return torch.stack([n_a, n_b, n_c, n_d], dim=-1)


def soft_counts_wps(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, wps: torch.Tensor,
                    kappa: float = 50.0) -> torch.Tensor:
    """Soft counts at k working points ``wps`` ((k, 2) thresholds (x0, y0)); (k, 4) float64."""
    wps = torch.as_tensor(wps, dtype=torch.float64, device=x.device).reshape(-1, 2)
    xs, ix = torch.unique(wps[:, 0], return_inverse=True)
    ys, iy = torch.unique(wps[:, 1], return_inverse=True)
    return soft_counts_grid(x, y, weights, xs, ys, kappa)[ix, iy]


def wp_closures(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    deta: torch.Tensor,
    mt: torch.Tensor,
    wps: torch.Tensor,
    kappa: float = 50.0,
    mt_edges: Sequence[float] | None = None,
    planes: Mapping[str, tuple[float, float]] = DEFAULT_PLANES,
) -> dict[str, dict[str, torch.Tensor]]:
    """Soft ABCD counts and closures of every plane at k working points.

    Args:
        x, y, weights, deta, mt: (n,) background scores, weights, deta(J0, J1), M_T (GeV).
        wps: (k, 2) working points (x0, y0).
        kappa: sharpness (large: hard cuts).
        mt_edges: M_T bin edges in GeV (bin i is [edges[i], edges[i+1])); None: no binned closure.
        planes: name -> (lo, hi) on |deta|.

    Returns:
        plane -> ``{"counts": (k, 4), "closure": (k,), "neff": (k, 4), "bin_counts": (nbins, k, 4),
        "bin_closure": (k, nbins), "bin_neff": (nbins, k, 4), "filled": (nbins,) bool}`` (the
        ``bin_*`` entries only with ``mt_edges``); ``neff``: Kish's effective number of events of
        each soft region, ``(sum w G)^2 / sum w^2 G`` (no gradient). A plane without events has
        zero counts and closures.
    """
    wps = torch.as_tensor(wps, dtype=torch.float64, device=x.device).reshape(-1, 2)
    k = wps.shape[0]
    edges_t = None
    if mt_edges is not None:
        edges_t = torch.as_tensor(list(mt_edges), dtype=torch.float64, device=x.device)
        if edges_t.numel() < 2 or not bool(torch.all(edges_t[1:] > edges_t[:-1])):
            raise ValueError(f"wp_closures: M_T bin edges {list(mt_edges)} must be >= 2 increasing values")
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, rng in planes.items():
        m = plane_mask(deta, rng)
        xm, ym, wm = x[m], y[m], weights[m]
        counts = soft_counts_wps(xm, ym, wm, wps, kappa)
        neff = _neff(counts, soft_counts_wps(xm, ym, wm**2, wps, kappa))
        res = {"counts": counts, "closure": closure(counts), "neff": neff}
        if edges_t is not None:
            nb = edges_t.numel() - 1
            idx = torch.bucketize(mt[m].to(torch.float64), edges_t, right=True) - 1
            per_bin, per_bin2, filled = [], [], []
            for b in range(nb):
                sel = idx == b
                filled.append(bool(sel.any()))
                zero = torch.zeros(k, 4, dtype=torch.float64, device=x.device)
                per_bin.append(soft_counts_wps(xm[sel], ym[sel], wm[sel], wps, kappa) if filled[-1] else zero)
                per_bin2.append(soft_counts_wps(xm[sel], ym[sel], wm[sel] ** 2, wps, kappa) if filled[-1] else zero)
            bc = torch.stack(per_bin)
            res["bin_counts"] = bc
            res["bin_neff"] = _neff(bc, torch.stack(per_bin2))
            res["bin_closure"] = closure(bc).T
            res["filled"] = torch.tensor(filled, dtype=torch.bool, device=x.device)
        out[name] = res
    return out


def _neff(counts: torch.Tensor, counts_w2: torch.Tensor) -> torch.Tensor:
    """Kish N_eff ``n^2 / sum w^2`` of soft counts (0 where empty), without gradient."""
    with torch.no_grad():
        return torch.where(counts_w2 > 0, counts**2 / counts_w2.clamp_min(_TINY), torch.zeros_like(counts))


def reduce(c: torch.Tensor, how: str, temperature: float = 0.01, dim: int = -1,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fold closures along ``dim``: ``mean``, ``max`` or ``smooth_max`` (``T log mean exp(c / T)``),
    over the entries where ``mask`` (same shape) is True (all if None). A slice without any
    entry gives 0 (no constraint there)."""
    if how not in REDUCTIONS:
        raise ValueError(f"closure reduction is {how!r}, expected one of {list(REDUCTIONS)}")
    if mask is None:
        mask = torch.ones_like(c, dtype=torch.bool)
    n = mask.sum(dim)
    mask = mask | (n == 0).unsqueeze(dim)  # an empty slice is computed on all entries, then set to 0 (no NaN gradient)
    zero = torch.zeros_like(c)
    if how == "mean":
        out = torch.where(mask, c, zero).sum(dim) / n.clamp_min(1)
    elif how == "max":
        out = torch.where(mask, c, torch.full_like(c, -math.inf)).max(dim).values
    else:
        t = float(temperature)
        lse = torch.logsumexp(torch.where(mask, c / t, torch.full_like(c, -math.inf)), dim)
        out = t * (lse - torch.log(n.clamp_min(1).to(c.dtype)))
    return torch.where(n > 0, out, (c * 0).sum(dim))


def reduce_closures(table: Mapping[str, Mapping[str, torch.Tensor]], wp_reduce: str = "max",
                    bin_reduce: str = "max", temperature: float = 0.01,
                    min_neff: float = 0.0) -> dict[str, torch.Tensor]:
    """The constraint values of :func:`wp_closures`'s table.

    ``closure_<plane>`` = ``wp_reduce`` over the working points of the normalisation closure;
    ``closure_bins_<plane>`` = ``wp_reduce`` over the working points of (``bin_reduce`` over the
    filled M_T bins of C_i). With ``max``/``max`` it is the worst bin at the worst working point.
    Only working points (and bins) whose four regions each hold ``N_eff >= min_neff`` enter (the
    datacards scan's statistics guard: the analysis cannot use the others, and their closure is
    noise); none left gives 0.
    """
    out: dict[str, torch.Tensor] = {}
    for name, res in table.items():
        ok = res["neff"].min(-1).values >= min_neff
        out[f"closure_{name}"] = reduce(res["closure"], wp_reduce, temperature, mask=ok)
        if "bin_closure" in res:
            bin_ok = (res["bin_neff"].min(-1).values >= min_neff).T & res["filled"][None, :]  # (k, nbins)
            per_wp = reduce(res["bin_closure"], bin_reduce, temperature, mask=bin_ok)
            out[f"closure_bins_{name}"] = reduce(per_wp, wp_reduce, temperature, mask=bin_ok.any(-1))
    return out
