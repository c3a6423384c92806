"""Metrics of both trainers on held-out events: weighted AUC and ROC, AUC weights, baseline orientation.

One convention for every reported AUC (LundNet's and the twin's reports): background by physics
weight, every signal point normalised to the same total weight (:func:`point_weights`), so "all
signal" is the average over the points, not dominated by the largest cross section. A baseline
discriminant's sign is chosen on *training* events (:func:`orientation`), never on the events
evaluated. The decorrelation metrics (dCorr, closure) are :mod:`svjscout.models.disco` and
:mod:`svjscout.models.closure`, applied by the twin's trainer to its held-out events.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from svjscout.models.training.data import _keys

__all__ = ["orientation", "point_weights", "roc", "weighted_auc"]


def weighted_auc(score: np.ndarray, label: np.ndarray, weight: np.ndarray) -> float:
    """Weighted ROC AUC (sklearn), NaN when a class is absent."""
    from sklearn.metrics import roc_auc_score  # train/test extra: scikit-learn computes the AUCs

    label = np.asarray(label)
    if len(np.unique(label)) < 2:
        return float("nan")
    return float(roc_auc_score(label, score, sample_weight=weight))


def roc(score: np.ndarray, label: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(signal efficiency, background efficiency) of a weighted ROC curve."""
    from sklearn.metrics import roc_curve  # train/test extra: scikit-learn computes the AUCs

    fpr, tpr, _ = roc_curve(label, score, sample_weight=weight)
    return tpr, fpr


def point_weights(label: np.ndarray, weight: np.ndarray, point: np.ndarray, empty: str = "keep") -> np.ndarray:
    """AUC weights (float64): background by physics weight, every signal point (``point``: a key per
    row, 1-D names or 2-D rows such as (m_Z', r_inv)) normalised to total 1; a point of zero total
    stays 0 (``empty="keep"``) or gets 1/count per row (``"uniform"``)."""
    w = np.asarray(weight, dtype=np.float64).copy()
    sig = np.asarray(label) == 1
    if not sig.any():
        return w
    keys, inv = _keys(np.asarray(point)[sig])
    counts = np.bincount(inv, minlength=len(keys))
    totals = np.bincount(inv, w[sig], minlength=len(keys))
    ws = w[sig]
    pos = totals[inv] > 0
    ws[pos] = ws[pos] / totals[inv][pos]
    if empty == "uniform":
        ws[~pos] = 1.0 / counts[inv][~pos]
    w[sig] = ws
    return w


def orientation(score: np.ndarray, label: np.ndarray, weight: np.ndarray) -> float:
    """+1, or -1 where the weighted AUC of ``score`` (on training events) is below 0.5 (NaN: +1)."""
    auc: Any = weighted_auc(score, label, weight)
    return -1.0 if auc < 0.5 else 1.0
