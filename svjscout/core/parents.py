"""Parent records: the contract between the processor and the statistics downstream.

Detector-resampled MC has K copies of each generated ("parent") event (branch ``parent``, weight
``w / K`` each). Copies of one parent are fully correlated, so the variance of any yield is
``sum_p (sum of p's weights in it)^2``, not ``sum_i w_i^2``. The processor records, per filled
event, (parent key, flat ``xy_mt`` bin, weight); :func:`group_fills` sums them per (parent, bin)
and :func:`parent_grouped_variance` gives the grouped variance of every bin. Both sort before
summing, so the result does not depend on the order chunks were merged in.
"""

from __future__ import annotations

import numpy as np


def group_fills(keys: np.ndarray, bins: np.ndarray,
                weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fill records summed per (parent key, bin): ``(key, bin, sum of weights)``, sorted by
    (bin, key). The records are sorted by (bin, key, weight) before summing, so the result does
    not depend on the order the chunks were merged in."""
    keys = np.asarray(keys, dtype=np.uint64)
    bins = np.asarray(bins, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    order = np.lexsort((weights, keys, bins))
    k, b, w = keys[order], bins[order], weights[order]
    if len(w) == 0:
        return k, b, w
    start = np.ones(len(w), dtype=bool)
    start[1:] = (k[1:] != k[:-1]) | (b[1:] != b[:-1])
    first = np.flatnonzero(start)
    return k[first], b[first], np.add.reduceat(w, first)


def parent_grouped_variance(keys: np.ndarray, bins: np.ndarray, weights: np.ndarray,
                            size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Variance per flat bin with the detector copies of one parent summed first.

    ``var[b] = sum_p (sum_{i: parent(i) = p, bin(i) = b} w_i)^2``: copies of one generated
    event are fully correlated, so their weights add before squaring; with one event per
    parent this is the usual ``sum_i w_i^2``. Deterministic (sorted sums, :func:`group_fills`).

    Returns:
        ``(var, naive, n_groups)``: the grouped variance, ``sum_i w_i^2`` of the same records
        (both of length ``size``), and the number of (parent, bin) groups.
    """
    bins = np.asarray(bins, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    _, gb, gw = group_fills(keys, bins, weights)
    order = np.lexsort((weights, bins))
    naive = np.bincount(bins[order], weights=weights[order] ** 2, minlength=size)
    return np.bincount(gb, weights=gw**2, minlength=size), naive, len(gw)
