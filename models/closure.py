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
from collections.abc import Mapping, Sequence

import torch

from svjscout.core.cuts import Cuts

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PLANES", "soft_counts", "closure", "binned_closure", "plane_mask", "plane_closures",
           "occupancy_deficit", "plane_occupancies"]

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
        bin_reduce: ``"mean"`` (over filled bins) or ``"max"`` to fold the C_i into one number.

    Returns:
        ``{"closure_<plane>": C, "closure_bins_<plane>": reduced C_i}`` as 0-d tensors
        (0 for a plane without events).
    """
    if bin_reduce not in ("mean", "max"):
        raise ValueError(f"plane_closures: bin_reduce is {bin_reduce!r}, expected 'mean' or 'max'")
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
            elif bin_reduce == "mean":
                out[f"closure_bins_{name}"] = c[filled].mean()
            else:
                out[f"closure_bins_{name}"] = c[filled].max()
    return out
