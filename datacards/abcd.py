"""ABCD background prediction per M_T bin, closure and the chi2 test of prediction vs region B.

Per M_T bin i (counts n, variances v from sumw2 for MC, Poisson ``v = n`` for data):

* prediction ``nhat_B,i = n_A,i n_D,i / n_C,i``
* ``sigma^2(nhat_B,i) = nhat_B,i^2 (v_A/n_A^2 + v_C/n_C^2 + v_D/n_D^2)`` (independent regions)
* closure ``delta_i = nhat_B,i / n_B,i - 1`` with
  ``sigma(delta_i) = (nhat_B,i/n_B,i) sqrt(sigma^2(nhat)/nhat^2 + v_B/n_B^2)``
* pull ``ln(nhat_B,i / n_B,i) / sqrt(sigma^2(nhat_B,i) / nhat_B,i^2 + v_B,i / n_B,i^2)`` (log
  space: a ratio's test that stays right for a handful of weighted events; the linear pull of a
  prediction 23x too high is capped near ``1 / rel. error``); +-inf where only one of B and its
  prediction has events (such a bin fails the test)
* ``chi2 = sum_i pull_i^2`` over the bins where it is defined, ``ndf`` = number of such bins,
  p-value ``= P(chi2_ndf >= chi2)``.

Bins with ``n_C <= 0`` have no prediction (NaN); bins with ``n_B <= 0`` have no delta (NaN).
A bin is *defined* (:attr:`ABCDTable.defined`) when it has a prediction and a pull, i.e.
``n_C > 0`` and not both B and its prediction empty (an infinite pull is defined: it fails the
test); only defined bins enter the chi2, and ``ndf`` counts them. With no defined bin, ``chi2 = 0``, ``ndf = 0`` and
the p-value is NaN.

Example:
    >>> # t = abcd_prediction(xy_mt, datasets, (0.775, 0.875), plane="VP", which="data")
    >>> # t.delta, t.pvalue
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .parents import ParentRecords
from .regions import RegionYields, region_yields

log = logging.getLogger(__name__)


@dataclass
class ABCDTable:
    """Per-M_T-bin ABCD prediction and closure; arrays have shape ``(n_mt,)``.

    Attributes:
        edges: M_T edges in GeV, shape ``(n_mt + 1,)``.
        n_A, n_B, n_C, n_D: weighted yields; var_A ... var_D their variances.
        nhat_B, sigma_nhat_B: prediction for B and its uncertainty.
        delta, sigma_delta: fractional non-closure and its statistical uncertainty.
        pull: ``ln(nhat_B / n_B) / sqrt(sigma_nhat_B^2 / nhat_B^2 + var_B / n_B^2)`` (+-inf with
            events on one side only).
        chi2, ndf, pvalue: the chi2 test of prediction vs B over the defined bins.
        wp, plane, which: what was computed.
        defined: bool, shape ``(n_mt,)``: the bin has a prediction and a finite pull (it enters
            the chi2); False for a bin without events (``n_C <= 0``, or B and ``nhat_B`` both 0).
    """

    edges: np.ndarray
    n_A: np.ndarray
    n_B: np.ndarray
    n_C: np.ndarray
    n_D: np.ndarray
    var_A: np.ndarray
    var_B: np.ndarray
    var_C: np.ndarray
    var_D: np.ndarray
    nhat_B: np.ndarray
    sigma_nhat_B: np.ndarray
    delta: np.ndarray
    sigma_delta: np.ndarray
    pull: np.ndarray
    chi2: float
    ndf: int
    pvalue: float
    wp: tuple[float, float]
    plane: str
    which: str
    defined: np.ndarray | None = None

    def __post_init__(self):
        if self.defined is None:
            self.defined = (np.isfinite(np.asarray(self.nhat_B, dtype=float))
                            & ~np.isnan(np.asarray(self.pull, dtype=float)))

    def to_dataframe(self):
        """Per-bin table as a pandas DataFrame (one row per M_T bin)."""
        d = {k: v for k, v in asdict(self).items() if isinstance(v, np.ndarray) and k != "edges"}
        df = pd.DataFrame(d)
        df.insert(0, "mt_low", self.edges[:-1])
        df.insert(1, "mt_high", self.edges[1:])
        return df

    def __getitem__(self, key: str):
        return getattr(self, key)


def predict(n_a, n_c, n_d, v_a, v_c, v_d):
    """Vectorised ABCD prediction ``n_A n_D / n_C`` and its variance (any common shape).

    Returns:
        ``(nhat, var_nhat)``; NaN where ``n_C <= 0``.
    """
    n_a, n_c, n_d = (np.asarray(a, dtype=float) for a in (n_a, n_c, n_d))
    ok = n_c > 0
    safe_c = np.where(ok, n_c, 1.0)
    nhat = np.where(ok, n_a * n_d / safe_c, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (
            np.where(n_a != 0, v_a / np.where(n_a != 0, n_a, 1.0) ** 2, 0.0)
            + v_c / safe_c**2
            + np.where(n_d != 0, v_d / np.where(n_d != 0, n_d, 1.0) ** 2, 0.0)
        )
    var = np.where(ok, nhat**2 * rel, np.nan)
    return nhat, var


def closure(nhat, var_nhat, n_b, v_b):
    """Fractional non-closure, its uncertainty and the (log-space) pull (any common shape).

    ``delta = nhat / n_B - 1``, ``sigma_delta = (1 + delta) s`` and ``pull = ln(nhat / n_B) / s``
    with ``s^2 = var_nhat / nhat^2 + v_B / n_B^2`` (the relative errors of the two sides). A bin
    with events on one side only has ``pull = +-inf``; both sides empty (or no prediction): NaN.

    Returns:
        ``(delta, sigma_delta, pull)``; NaN where undefined.
    """
    nhat, var_nhat, n_b, v_b = (np.asarray(a, dtype=float) for a in (nhat, var_nhat, n_b, v_b))
    fin = np.isfinite(nhat)
    okb = (n_b > 0) & fin
    sb = np.where(okb, n_b, 1.0)
    ratio = np.where(okb, nhat / sb, np.nan)
    delta = ratio - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        relp = np.where(fin & (nhat != 0), var_nhat / np.where(fin & (nhat != 0), nhat, 1.0) ** 2, 0.0)
    s = np.sqrt(np.abs(relp + np.where(n_b > 0, v_b / sb**2, 0.0)))
    sigma_delta = np.where(okb, np.abs(ratio) * s, np.nan)
    both = okb & (nhat > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        pull = np.where(both & (s > 0), np.log(np.where(both, ratio, 1.0)) / np.where(s > 0, s, 1.0), np.nan)
    one_sided_low = fin & (np.where(fin, nhat, 0.0) <= 0) & (n_b > 0)  # prediction empty, B not
    one_sided_high = fin & (np.where(fin, nhat, 0.0) > 0) & ~(n_b > 0)  # B empty, prediction not
    pull = np.where(one_sided_low, -np.inf, np.where(one_sided_high, np.inf, pull))
    return delta, sigma_delta, pull


def chi2_test(pull, defined=None) -> tuple[float, int, float]:
    """Chi2 = sum of squared finite pulls, ndf = their number, p = chi2 survival function.

    Args:
        pull: per-bin pulls (NaN where undefined; +-inf makes chi2 inf and p 0).
        defined: optional bool mask of the bins allowed in the test (ANDed with ``isfinite(pull)``).

    Returns:
        ``(chi2, ndf, pvalue)``; ``(0.0, 0, nan)`` when no bin is defined.
    """
    p = np.asarray(pull, dtype=float)
    ok = ~np.isnan(p)  # an infinite pull (events on one side only) is in the test, and fails it
    if defined is not None:
        ok &= np.asarray(defined, dtype=bool)
    p = p[ok]
    ndf = int(p.size)
    chi2 = float(np.sum(p**2))
    pval = float(stats.chi2.sf(chi2, ndf)) if ndf > 0 else float("nan")
    return chi2, ndf, pval


def abcd_from_yields(y: RegionYields) -> ABCDTable:
    """ABCD table from :class:`~.regions.RegionYields` (e.g. after M_T-bin merging)."""
    (n_a, n_b, n_c, n_d), (v_a, v_b, v_c, v_d) = y.n, y.var
    nhat, var = predict(n_a, n_c, n_d, v_a, v_c, v_d)
    delta, sdelta, pull = closure(nhat, var, n_b, v_b)
    defined = np.isfinite(nhat) & ~np.isnan(pull)
    chi2, ndf, pval = chi2_test(pull, defined)
    bad = np.flatnonzero(~np.isfinite(nhat))
    if bad.size:
        log.info("ABCD (%s, %s): no prediction in M_T bin(s) %s (n_C <= 0)", y.plane, y.label, bad.tolist())
    empty = np.flatnonzero(np.isfinite(nhat) & ~defined)
    if empty.size:
        log.info("ABCD (%s, %s): M_T bin(s) %s have no events in B nor in the prediction; left out of the chi2",
                    y.plane, y.label, empty.tolist())
    return ABCDTable(
        y.edges, n_a, n_b, n_c, n_d, v_a, v_b, v_c, v_d, nhat, np.sqrt(var), delta, sdelta, pull,
        chi2, ndf, pval, y.wp, y.plane, y.label, defined,
    )


def abcd_prediction(
    xy_mt,
    datasets: Mapping[str, Mapping],
    wp,
    plane: str = "SP",
    which: str | Sequence[str] = "background",
    poisson: bool | None = None,
    parents: ParentRecords | None = None,
) -> ABCDTable:
    """ABCD prediction of region B per M_T bin, closure and chi2 test.

    Args:
        xy_mt: histogram with axes ``(dataset, plane, x, y, mt)``, weight storage.
        datasets: ``{name: {"kind": "signal"|"background"|"data", ...}}``.
        wp: working point ``(x0, y0)`` (or ``"x0,y0"``), on x/y bin edges.
        plane: "SP" or "VP".
        which: "background" (sum of MC backgrounds), "data", "signal", a dataset name or list.
        poisson: variances = counts (default for data) instead of sumw2.
        parents: the parent records of ``xy_mt`` (parent-aware MC variances), or None.

    Returns:
        :class:`ABCDTable` (arrays of shape ``(n_mt,)``; ``chi2``, ``ndf``, ``pvalue`` scalars;
        ``defined`` marks the bins that enter the chi2). Access by attribute or by key (``t["delta"]``).
    """
    y = region_yields(xy_mt, datasets, wp, plane=plane, which=which, poisson=poisson, parents=parents)
    t = abcd_from_yields(y)
    log.info(
        "ABCD %s %s at %s: chi2/ndf = %.2f/%d, p = %.3f", plane, t.which, t.wp, t.chi2, t.ndf, t.pvalue
    )
    return t
