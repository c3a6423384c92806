"""The minimum-statistics guard: one rule for the scan, the cards, the closure test and the summary.

A number made of one or two MC events is not a measurement. Every figure svjscout derives from the
background MC at a working point (the ABCD prediction, the closure test, the non-closure kappa,
``<Z_A>``, the cards and their limits) rests on the four regions A, B, C, D of each M_T bin of the
fit plane, so the guard asks, per fit bin:

* every region holds background Kish ``N_eff = (sum w)^2 / sum w^2 >= min_neff`` (default 10;
  parent-aware: with detector copies ``sum w^2`` is the sum over parents of the parent's summed
  weight squared, :mod:`.parents`), and
* the relative MC error of the prediction ``nhat_B = n_A n_D / n_C`` is at most ``max_rel_err``
  (default 0.5: ``sqrt(v_A/n_A^2 + v_C/n_C^2 + v_D/n_D^2)``).

Adjacent M_T bins are merged (:func:`merge_groups`, lowest offending group with its upper
neighbour, the last one with its lower) until every group holds; those groups are the fit bins
*and* the closure bins (one binning: the closure test is made on the bins the fit uses). A working
point where a single group, all M_T bins merged, still fails is *not backed*: the scan cannot
choose it, and ``svjscout run`` writes no cards and no limits for it unless told to
(``--allow-unbacked``), in which case every output is stamped UNBACKED.

Example:
    >>> import numpy as np
    >>> n = np.array([[50., 1.], [40., 1.], [900., 30.], [60., 2.]])  # A, B, C, D x 2 M_T bins
    >>> g, merges, verdict = guarded_groups(n, n.copy(), Guard(min_neff=10))  # Poisson-like var = n
    >>> g, verdict.backed
    ([[0, 1]], True)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from svjscout.core.exceptions import DatacardError
from svjscout.core.regions import REGIONS

log = logging.getLogger(__name__)


#: what every unbacked output carries (card header, limits.json, summary.md, figures)
UNBACKED = "UNBACKED"


@dataclass(frozen=True)
class Guard:
    """Thresholds of the minimum-statistics guard.

    Attributes:
        min_neff: minimum Kish effective number of MC background events per region of a fit bin.
        max_rel_err: maximum relative MC error of the ABCD prediction ``nhat_B`` per fit bin
            (``inf``: no bound).
    """

    min_neff: float = 10.0
    max_rel_err: float = 0.5

    def __post_init__(self):
        if not (np.isfinite(self.min_neff) and self.min_neff >= 0):
            raise DatacardError(f"guard: min_neff must be a finite number >= 0, got {self.min_neff!r}")
        if not self.max_rel_err > 0:
            raise DatacardError(f"guard: max_rel_err must be > 0, got {self.max_rel_err!r}")

    def describe(self) -> str:
        bound = "" if np.isinf(self.max_rel_err) else f" and relative MC error of nhat_B <= {self.max_rel_err:g}"
        return f"every region of every fit bin with background N_eff >= {self.min_neff:g}{bound}"


@dataclass
class Verdict:
    """Whether the merged bins of one working point pass the guard, and why not."""

    backed: bool
    reasons: list[str] = field(default_factory=list)


def kish_neff(n, var) -> np.ndarray:
    """``(sum w)^2 / sum w^2`` elementwise, 0 where the yield or its variance is not positive."""
    n, var = np.asarray(n, float), np.asarray(var, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((var > 0) & (n > 0), n**2 / np.where(var > 0, var, 1.0), 0.0)


def nhat_rel_err(n, var) -> np.ndarray:
    """Relative MC error of ``n_A n_D / n_C`` from region yields/variances ``(4, ...)``; inf where a
    region of the prediction is empty."""
    n, var = np.asarray(n, float), np.asarray(var, float)
    ok = (n[0] > 0) & (n[2] > 0) & (n[3] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel2 = sum(var[r] / np.where(n[r] > 0, n[r], 1.0) ** 2 for r in (0, 2, 3))
    return np.where(ok, np.sqrt(np.abs(rel2)), np.inf)


def group_problems(tot: np.ndarray, var: np.ndarray, guard: Guard, min_bkg: float = 0.0) -> list[str]:
    """What fails the guard in one group of M_T bins (region totals ``tot``, variances ``var``, shape (4,))."""
    out = [f"{REGIONS[r]} empty" for r in range(len(REGIONS)) if not tot[r] > min_bkg]
    neff = kish_neff(tot, var)
    out += [f"{REGIONS[r]} N_eff {neff[r]:.1f}" for r in range(len(REGIONS)) if tot[r] > min_bkg
            and neff[r] < guard.min_neff]
    rel = float(nhat_rel_err(tot, var))
    if not out and rel > guard.max_rel_err:
        out.append(f"nhat_B rel. MC error {rel:.2f}")
    return out


def merge_groups(bkg: np.ndarray, var: np.ndarray, guard: Guard, min_bkg: float = 0.0,
                 var_of: Callable[[Sequence[int]], np.ndarray] | None = None) -> tuple[list[list[int]], list[dict]]:
    """M_T bin groups so that every group passes the guard (as far as merging can).

    Args:
        bkg: background yields, shape ``(4, n_mt)`` (A, B, C, D).
        var: their variances, shape ``(4, n_mt)``.
        guard: the thresholds.
        min_bkg: a region needs background above this (events).
        var_of: variances of a group of bins, ``var_of(group) -> (4,)`` (e.g.
            :meth:`.regions.RegionYields.group_var`, parent-aware with detector copies); default
            the sum of ``var`` over the group.

    Returns:
        ``(groups, merges)``: lists of consecutive original bins, one record per merge
        ``{"bins", "with", "into", "reason"}``.
    """
    groups = [[i] for i in range(bkg.shape[1])]
    merges = []

    def problems(g):
        v = var_of(g) if var_of is not None else var[:, g].sum(axis=1)
        return group_problems(bkg[:, g].sum(axis=1), v, guard, min_bkg)

    while len(groups) > 1:
        bad = [(k, p) for k, g in enumerate(groups) if (p := problems(g))]
        if not bad:
            break
        k, why = bad[0]
        j = k + 1 if k + 1 < len(groups) else k - 1
        lo, hi = sorted((k, j))
        merged = groups[lo] + groups[hi]
        reason = f"M_T bins {groups[k]}: {', '.join(why)}"
        merges.append({"bins": groups[k], "with": groups[j], "into": merged, "reason": reason})
        log.debug("merging M_T bins %s and %s: %s", groups[lo], groups[hi], reason)
        groups[lo:hi + 1] = [merged]
    return groups, merges


def guarded_groups(bkg: np.ndarray, var: np.ndarray, guard: Guard, min_bkg: float = 0.0,
                   var_of: Callable[[Sequence[int]], np.ndarray] | None = None,
                   edges: Sequence[float] | None = None) -> tuple[list[list[int]], list[dict], Verdict]:
    """:func:`merge_groups` and the verdict on the result (backed iff every group passes)."""
    groups, merges = merge_groups(bkg, var, guard, min_bkg, var_of)
    reasons = []
    for g in groups:
        v = var_of(g) if var_of is not None else var[:, g].sum(axis=1)
        p = group_problems(bkg[:, g].sum(axis=1), v, guard, min_bkg)
        if p:
            if edges is not None:
                hi = "inf" if g[-1] + 2 == len(edges) else f"{edges[g[-1] + 1]:g}"  # the last bin holds the overflow
                where = f"M_T [{edges[g[0]]:g}, {hi})"
            else:
                where = f"M_T bins {g}"
            reasons.append(f"{where} ({'all bins merged' if len(groups) == 1 else 'merged'}): {', '.join(p)}")
    return groups, merges, Verdict(not reasons, reasons)
