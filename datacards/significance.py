"""Modified binned Asimov significance with background uncertainty (Cowan), and the signal rescaling.

Per bin (s signal, b background, sigma absolute background uncertainty)::

    Z = sqrt(2 [ (s+b) ln((s+b)(b+sigma^2) / (b^2 + (s+b) sigma^2))
                 - (b^2/sigma^2) ln(1 + sigma^2 s / (b (b + sigma^2))) ])

which tends to ``sqrt(2((s+b) ln(1+s/b) - s))`` for ``sigma -> 0`` (used below
``sigma^2 < 1e-12 b^2`` for numerical stability). Bins with ``b <= 0`` or ``s <= 0`` contribute 0.
Bins combine in quadrature; signal points by the mean (``<Z_A>``).

The rescaling ``stilde_k,i = n^s_B,k,i (sum_R n^s_R,l) / (sum_R n^s_R,k)`` gives every signal point k
the total (all four regions, all M_T bins) yield of a reference point l, so ``<Z_A>`` weighs the
shapes and the working point, not the cross sections.

Example:
    >>> round(float(asimov_z(10.0, 100.0, 0.0)), 3)
    0.984
"""

from __future__ import annotations

import numpy as np


def asimov_z(s, b, sigma) -> np.ndarray:
    """Per-bin modified Asimov significance (broadcasting over any shape).

    Args:
        s: expected signal (events).
        b: expected background (events).
        sigma: absolute uncertainty on b (events).

    Returns:
        Z >= 0 with the broadcast shape; 0 where ``b <= 0``, ``s <= 0`` or not finite.
    """
    s, b, sigma = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (s, b, sigma)))
    ok = (b > 0) & (s > 0) & np.isfinite(s) & np.isfinite(b) & np.isfinite(sigma)
    s_ = np.where(ok, s, 1.0)
    b_ = np.where(ok, b, 1.0)
    sig2 = np.where(ok, sigma**2, 0.0)
    nosys = sig2 < 1e-12 * b_**2
    sig2_ = np.where(nosys, 1.0, sig2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t1 = (s_ + b_) * np.log((s_ + b_) * (b_ + sig2_) / (b_**2 + (s_ + b_) * sig2_))
        t2 = (b_**2 / sig2_) * np.log1p(sig2_ * s_ / (b_ * (b_ + sig2_)))
        z2_sys = 2.0 * (t1 - t2)
        z2_nosys = 2.0 * ((s_ + b_) * np.log1p(s_ / b_) - s_)
    z2 = np.where(nosys, z2_nosys, z2_sys)
    z2 = np.where(ok & np.isfinite(z2), np.clip(z2, 0.0, None), 0.0)
    return np.sqrt(z2)


def rescale_factors(total_signal, reference: int) -> np.ndarray:
    """Factors ``(sum_R n^s_R,l) / (sum_R n^s_R,k)`` per signal point.

    Args:
        total_signal: total yield of each signal point (all regions and bins), shape ``(K,)``.
        reference: index l of the reference point.

    Returns:
        shape ``(K,)``; 0 for points with no yield.
    """
    t = np.asarray(total_signal, dtype=float)
    ok = t > 0
    return np.where(ok, t[reference] / np.where(ok, t, 1.0), 0.0)


def combined_z(s, b, sigma, axis: int = -1) -> np.ndarray:
    """``sqrt(sum_i Z_i^2)`` over the M_T axis."""
    z = asimov_z(s, b, sigma)
    return np.sqrt(np.sum(z**2, axis=axis))


def mean_z(s, b, sigma, point_axis: int = 0, bin_axis: int = -1) -> np.ndarray:
    """``<Z_A>``: mean over signal points of the bin-combined significance.

    Args:
        s: rescaled signal ``stilde``, shape e.g. ``(K, ..., n_mt)``.
        b, sigma: background and its uncertainty, broadcastable to ``s``.
    """
    return np.mean(combined_z(s, b, sigma, axis=bin_axis), axis=point_axis)
