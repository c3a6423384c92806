"""Per-M_T-bin non-closure uncertainty of the ABCD background prediction in region B.

From the MC closure in the signal plane (SP) and the validation plane (VP), per M_T bin i:
``delta_P,i = nhat_B,i / n_B,i - 1`` with statistical uncertainty ``sigma_P,i`` (see :mod:`.abcd`).
Methods (the value u_i enters the card as ``lnN 1 + u_i`` on bkg in ``B_i``):

``max`` (default)  ``u_i = max(|delta_SP,i|, |delta_VP,i|, sigma_SP,i)``: covers the observed
                   non-closure in either plane and what the MC statistics can resolve.
``sp``             ``u_i = max(|delta_SP,i|, sigma_SP,i)``.
``vp``             ``u_i = max(|delta_VP,i|, sigma_VP,i)``.
``quadrature``     ``u_i = sqrt(max(|delta_SP,i|, |delta_VP,i|)^2 + sigma_SP,i^2)``.
``vp_data``        ``u_i = max(|delta_VP,i^data|, sigma_VP,i^data)`` from data in VP (Poisson).

Undefined bins (no MC in B or C) get ``undefined_value`` (default 1.0, i.e. 100 %) and a warning;
every value is clipped to ``[floor, cap]`` (defaults 0.0 and 10.0).

Example:
    >>> nonclosure_from_deltas([0.01, -0.03], [0.02, 0.0], [0.005, 0.01], [0.01, 0.01], "max").tolist()
    [0.02, 0.03]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from svjscout.exceptions import DatacardError

from .abcd import abcd_from_yields
from .regions import RegionYields, region_yields

log = logging.getLogger(__name__)

METHODS = ("max", "sp", "vp", "quadrature", "vp_data")


def nonclosure_from_deltas(delta_sp, delta_vp, sigma_sp, sigma_vp, method: str = "max",
                           undefined_value: float = 1.0, floor: float = 0.0, cap: float = 10.0) -> np.ndarray:
    """Combine closure results into the per-bin uncertainty (see module docstring).

    Args:
        delta_sp, delta_vp: fractional non-closure per M_T bin, shape ``(n_mt,)`` (NaN = undefined).
        sigma_sp, sigma_vp: their statistical uncertainties, shape ``(n_mt,)``.
        method: one of ``max, sp, vp, quadrature`` (``vp_data`` callers pass data deltas as "vp").

    Returns:
        u, shape ``(n_mt,)``, relative uncertainty (0.05 = 5 %).
    """
    dsp, dvp, ssp, svp = (np.abs(np.asarray(a, dtype=float)) for a in (delta_sp, delta_vp, sigma_sp, sigma_vp))
    if method == "max":
        stack = np.stack([dsp, dvp, ssp])
        need = np.stack([dsp, ssp])
    elif method == "sp":
        stack = need = np.stack([dsp, ssp])
    elif method in ("vp", "vp_data"):
        stack = need = np.stack([dvp, svp])
    elif method == "quadrature":
        m = np.fmax(dsp, dvp)
        stack = np.stack([np.sqrt(m**2 + ssp**2)])
        need = np.stack([dsp, ssp])
    else:
        raise DatacardError(f"unknown non-closure method '{method}', expected one of {METHODS}")
    undefined = np.any(~np.isfinite(need), axis=0)
    u = np.where(undefined, undefined_value, np.nanmax(np.where(np.isfinite(stack), stack, -np.inf), axis=0))
    if undefined.any():
        log.warning("non-closure (%s): undefined in M_T bin(s) %s, set to %g", method,
                    np.flatnonzero(undefined).tolist(), undefined_value)
    return np.clip(u, floor, cap)


def nonclosure_from_yields(sp: RegionYields, vp: RegionYields, method: str = "max", **kw) -> np.ndarray:
    """Non-closure per (possibly merged) M_T bin from SP and VP region yields."""
    tsp, tvp = abcd_from_yields(sp), abcd_from_yields(vp)
    return nonclosure_from_deltas(tsp.delta, tvp.delta, tsp.sigma_delta, tvp.sigma_delta, method, **kw)


def closure_yields(xy_mt, datasets, wp, method: str, groups: Sequence[Sequence[int]] | None = None):
    """SP and VP region yields used by ``method`` (background MC, or data in VP for ``vp_data``)."""
    if method not in METHODS:
        raise DatacardError(f"unknown non-closure method '{method}', expected one of {METHODS}")
    which_vp = "data" if method == "vp_data" else "background"
    sp = region_yields(xy_mt, datasets, wp, plane="SP", which="background")
    vp = region_yields(xy_mt, datasets, wp, plane="VP", which=which_vp)
    if groups is not None:
        sp, vp = sp.merged(groups), vp.merged(groups)
    return sp, vp


def nonclosure_uncertainties(
    xy_mt,
    datasets: Mapping[str, Mapping],
    wp,
    method: str = "max",
    groups: Sequence[Sequence[int]] | None = None,
    **kw,
) -> np.ndarray:
    """Per-M_T-bin relative non-closure uncertainty of the background in region B.

    Args:
        xy_mt: histogram ``(dataset, plane, x, y, mt)``.
        datasets: dataset metadata.
        wp: working point ``(x0, y0)``.
        method: ``max`` (default), ``sp``, ``vp``, ``quadrature`` or ``vp_data``.
        groups: optional M_T bin merging (lists of consecutive original bin indices).
        **kw: ``undefined_value``, ``floor``, ``cap`` of :func:`nonclosure_from_deltas`.

    Returns:
        numpy array of shape ``(n_mt,)`` (or ``(len(groups),)``); the card uses ``lnN 1 + u``.
    """
    sp, vp = closure_yields(xy_mt, datasets, wp, method, groups)
    u = nonclosure_from_yields(sp, vp, method, **kw)
    log.info("non-closure (%s) at %s: %s", method, sp.wp, np.round(u, 4).tolist())
    return u
