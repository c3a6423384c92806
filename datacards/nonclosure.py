"""Per-M_T-bin non-closure uncertainty of the ABCD background prediction in region B.

From the MC closure test in the signal plane (SP) and the validation plane (VP), per M_T bin i:
``delta_P,i = nhat_B,i / n_B,i - 1`` with its statistical uncertainty ``sigma_P,i`` (see
:mod:`.abcd`). The card carries ``lnN kappa_i`` on the background in ``B_i``.

Widths are multiplicative. A prediction off by the factor ``1 + delta`` needs
``kappa = exp|ln(1 + delta)|`` to cover the truth either way: a prediction low by a factor 2
(``delta = -0.5``) gets ``kappa = 2``, not ``1.5`` (:func:`log_kappa`).

Methods:

``continuous`` (default)  continuous in the closure and its error, so that no threshold makes the
                   kappa jump: ``ln kappa_SP = sqrt(ln^2(1 + delta_SP) + s_SP^2)`` with ``s_SP`` the
                   relative (log-space) statistical error of the SP closure, ``s = sigma_delta /
                   (1 + delta)``; a well-measured closure gives ``kappa ~ 1 + |delta|``, a closure
                   compatible with zero gives its precision ``exp(s)``, and everything in between is
                   their quadrature sum. VP widens it by what it shows beyond its own error, where
                   every VP region holds ``min_neff`` effective MC events:
                   ``ln kappa_VP = max(0, |ln(1 + delta_VP)| - s_VP)``; ``kappa = max(kappa_SP,
                   kappa_VP)``. Fit bins equal closure bins (:mod:`.guard`), so the kappa of a fit bin
                   is its own closure's, never one averaged over several bins.
``significance``   the closure *test*: in SP, a non-closure compatible with zero
                   (``|delta_SP| <= z sigma_SP``, default z = 2) gets the test's precision,
                   ``kappa = 1 + sigma_SP``; a significant one gets its size, ``log_kappa(delta_SP)``.
                   VP, a check with its own statistics, widens ``kappa`` only where its non-closure
                   is significant (``|delta_VP| > z sigma_VP``): ``max(kappa, log_kappa(delta_VP))``,
                   and only where every VP region holds ``min_neff`` effective MC events (with a
                   handful of events the Gaussian error of delta means nothing).
                   The MC noise of a few events per region no longer passes for non-closure.
``max``            ``max(log_kappa(delta_SP), log_kappa(delta_VP), 1 + sigma_SP)``: every observed
                   deviation at face value (the old default).
``sp``, ``vp``     ``max(log_kappa(delta_P), 1 + sigma_P)`` of one plane.
``quadrature``     ``exp(sqrt(ln(max log_kappa)^2 + ln(1 + sigma_SP)^2))``.
``vp_data``        as ``vp`` with data in VP (Poisson).

A bin with an undefined SP closure (no MC in B or C; the card writer merges M_T bins so that this
does not happen) gets ``1 + undefined_value`` and a warning; every kappa is clipped to
``[1 + floor, 1 + cap]`` and clipping is reported.

Example:
    >>> round(float(log_kappa(-0.5)), 6), round(float(log_kappa(0.5)), 6)
    (2.0, 1.5)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from svjscout.core.exceptions import DatacardError
from svjscout.core.regions import REGIONS

from .abcd import abcd_from_yields
from .parents import ParentRecords
from .regions import RegionYields, region_yields

log = logging.getLogger(__name__)

METHODS = ("continuous", "significance", "max", "sp", "vp", "quadrature", "vp_data")
#: Default number of standard deviations for a significant non-closure (method ``significance``).
Z_SIGNIFICANT = 2.0


def log_kappa(delta) -> np.ndarray:
    """lnN width covering a multiplicative bias ``1 + delta`` in either direction: ``exp|ln(1+delta)|``."""
    d = np.asarray(delta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > -1.0, np.exp(np.abs(np.log1p(np.where(d > -1.0, d, 0.0)))), np.inf)


def nonclosure_from_deltas(delta_sp, delta_vp, sigma_sp, sigma_vp, method: str = "continuous",
                           undefined_value: float = 1.0, floor: float = 0.0, cap: float = 10.0,
                           z: float = Z_SIGNIFICANT) -> np.ndarray:
    """Relative half-width ``u = kappa - 1`` per bin (see :func:`kappas_from_deltas`)."""
    return kappas_from_deltas(delta_sp, delta_vp, sigma_sp, sigma_vp, method, undefined_value, floor, cap, z)[0] - 1.0


def kappas_from_deltas(delta_sp, delta_vp, sigma_sp, sigma_vp, method: str = "continuous",
                       undefined_value: float = 1.0, floor: float = 0.0, cap: float = 10.0,
                       z: float = Z_SIGNIFICANT, vp_usable=None, quiet: bool = False) -> tuple[np.ndarray, list[str]]:
    """lnN kappa per M_T bin from the closure results (see module docstring) and what set each.

    Args:
        delta_sp, delta_vp: fractional non-closure per M_T bin, shape ``(n_mt,)`` (NaN = undefined).
        sigma_sp, sigma_vp: their statistical uncertainties, shape ``(n_mt,)``.
        method: one of :data:`METHODS` (``vp_data`` callers pass data deltas as "vp").
        z: standard deviations of a significant non-closure (``significance``).
        vp_usable: bool per bin, shape ``(n_mt,)``: VP has enough MC for its closure test to mean
            something (``significance``; default all True). With a handful of events the
            Gaussian error of delta is meaningless, and a VP below that is not used.
        quiet: no warning for undefined bins (the scan evaluates ~1,000 points).

    Returns:
        ``(kappa, source)``: kappa shape ``(n_mt,)`` (>= 1), and per bin the term that set it
        (``"SP precision"``, ``"SP non-closure"``, ``"VP non-closure"``, ``"undefined"``, ...).
    """
    dsp, dvp, ssp, svp = (np.asarray(a, dtype=float) for a in (delta_sp, delta_vp, sigma_sp, sigma_vp))
    fin = np.isfinite
    names = {"sp_delta": "SP non-closure", "vp_delta": "VP non-closure", "sp_sigma": "SP precision",
             "vp_sigma": "VP precision"}
    terms = {"sp_delta": log_kappa(dsp), "vp_delta": log_kappa(dvp), "sp_sigma": 1.0 + np.abs(ssp),
             "vp_sigma": 1.0 + np.abs(svp)}
    if method == "continuous":
        usable = np.ones(len(dsp), bool) if vp_usable is None else np.asarray(vp_usable, bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            l_sp, l_vp = np.log1p(np.where(dsp > -1, dsp, np.nan)), np.log1p(np.where(dvp > -1, dvp, np.nan))
            s_sp, s_vp = np.abs(ssp) / (1.0 + dsp), np.abs(svp) / (1.0 + dvp)
        ln_sp = np.sqrt(l_sp**2 + s_sp**2)
        ln_vp = np.where(usable & fin(l_vp) & fin(s_vp), np.maximum(0.0, np.abs(l_vp) - s_vp), 0.0)
        terms = {"sp_delta": np.exp(ln_sp), "vp_delta": np.exp(ln_vp)}
        names["sp_delta"] = "SP closure (+) precision"
        names["vp_delta"] = "VP non-closure beyond its error"
        need = ("sp_delta",)
    elif method == "significance":
        sig_sp = fin(dsp) & fin(ssp) & (np.abs(dsp) > z * np.abs(ssp))
        usable = np.ones(len(dsp), bool) if vp_usable is None else np.asarray(vp_usable, bool)
        sig_vp = usable & fin(dvp) & fin(svp) & (np.abs(dvp) > z * np.abs(svp))
        terms = {"sp_delta": np.where(sig_sp, terms["sp_delta"], 1.0),
                 "sp_sigma": np.where(sig_sp, 1.0, terms["sp_sigma"]),
                 "vp_delta": np.where(sig_vp, terms["vp_delta"], 1.0)}
        need = ("sp_delta", "sp_sigma")
    elif method == "max":
        terms = {k: terms[k] for k in ("sp_delta", "vp_delta", "sp_sigma")}
        need = ("sp_delta", "sp_sigma")
    elif method == "sp":
        terms = {k: terms[k] for k in ("sp_delta", "sp_sigma")}
        need = tuple(terms)
    elif method in ("vp", "vp_data"):
        terms = {k: terms[k] for k in ("vp_delta", "vp_sigma")}
        need = tuple(terms)
    elif method == "quadrature":
        m = np.fmax(terms["sp_delta"], terms["vp_delta"])
        terms = {"sp_delta": np.exp(np.hypot(np.log(m), np.log(terms["sp_sigma"])))}
        need = ("sp_delta",)
        names["sp_delta"] = "non-closure (+) SP precision"
    else:
        raise DatacardError(f"unknown non-closure method '{method}', expected one of {METHODS}")
    keys = list(terms)
    stack = np.stack([np.where(fin(terms[k]), terms[k], -np.inf) for k in keys])
    undefined = (np.any(np.stack([~fin(terms[k]) for k in need]), axis=0) if method != "significance"
                 else ~(fin(dsp) & fin(ssp)))
    best = np.argmax(stack, axis=0)
    kappa = np.where(undefined, 1.0 + undefined_value, np.max(stack, axis=0))
    source = ["undefined" if undefined[i] else names[keys[best[i]]] for i in range(len(kappa))]
    if undefined.any() and not quiet:
        log.warning("non-closure (%s): undefined in M_T bin(s) %s, set to kappa %g", method,
                    np.flatnonzero(undefined).tolist(), 1.0 + undefined_value)
    clipped = np.clip(kappa, 1.0 + floor, 1.0 + cap)
    for i in np.flatnonzero(clipped != kappa):
        source[i] += f" (clipped from {kappa[i]:.3g})"
    return clipped, source


def nonclosure_from_yields(sp: RegionYields, vp: RegionYields, method: str = "continuous", **kw) -> np.ndarray:
    """Relative non-closure ``kappa - 1`` per (possibly merged) M_T bin from SP and VP region yields."""
    tsp, tvp = abcd_from_yields(sp), abcd_from_yields(vp)
    return nonclosure_from_deltas(tsp.delta, tvp.delta, tsp.sigma_delta, tvp.sigma_delta, method, **kw)


def nonclosure_report(sp: RegionYields, vp: RegionYields, method: str = "continuous", z: float = Z_SIGNIFICANT,
                      min_neff: float = 0.0, **kw) -> dict:
    """Kappas and everything they came from, per (merged) M_T bin, as written to ``index.json``.

    Returns:
        ``{"method", "z", "kappa": [...], "bins": [{"mt", "kappa", "source", "SP": {...}, "VP": {...}}]}``
        where each plane holds ``delta``, ``sigma_delta``, ``significant`` and ``n_eff`` per
        region (Kish, ``(sum w)^2 / sum w^2``); JSON-safe (None for undefined numbers).
    """
    tsp, tvp = abcd_from_yields(sp), abcd_from_yields(vp)
    vp_usable = np.all(vp.neff >= min_neff, axis=0)
    kappa, source = kappas_from_deltas(tsp.delta, tvp.delta, tsp.sigma_delta, tvp.sigma_delta, method, z=z,
                                       vp_usable=vp_usable, **kw)

    def num(v):
        v = float(v)
        return v if np.isfinite(v) else None

    bins = []
    for i in range(len(kappa)):
        entry = {"mt": mt_bin_label(sp.edges, i), "kappa": float(kappa[i]), "source": source[i]}
        for name, t, y in (("SP", tsp, sp), ("VP", tvp, vp)):
            d, s = num(t.delta[i]), num(t.sigma_delta[i])
            entry[name] = {"delta": d, "sigma_delta": s,
                           "significant": bool(d is not None and s is not None and abs(d) > z * s),
                           "used": bool(name == "SP" or vp_usable[i]) if method in ("significance", "continuous")
                           else True,
                           "n_eff": dict(zip(REGIONS, (float(v) for v in y.neff[:, i])))}
        bins.append(entry)
    return {"method": method, "z": z, "kappa": [float(k) for k in kappa], "bins": bins}


def mt_bin_label(edges, i: int, overflow: bool = True) -> str:
    """``"[lo, hi)"`` of M_T bin ``i`` in GeV; the last bin reads ``[lo, inf)`` when it holds the
    overflow (the processor clips M_T above the last edge into the last bin)."""
    lo = f"{float(edges[i]):g}"
    hi = "inf" if overflow and i == len(edges) - 2 else f"{float(edges[i + 1]):g}"
    return f"[{lo}, {hi})"


def closure_yields(xy_mt, datasets, wp, method: str, groups: Sequence[Sequence[int]] | None = None,
                   parents: ParentRecords | None = None):
    """SP and VP region yields used by ``method`` (background MC, or data in VP for ``vp_data``);
    MC variances parent-aware with ``parents`` (the records of ``xy_mt``)."""
    if method not in METHODS:
        raise DatacardError(f"unknown non-closure method '{method}', expected one of {METHODS}")
    which_vp = "data" if method == "vp_data" else "background"
    sp = region_yields(xy_mt, datasets, wp, plane="SP", which="background", parents=parents)
    vp = region_yields(xy_mt, datasets, wp, plane="VP", which=which_vp, parents=parents)
    if groups is not None:
        sp, vp = sp.merged(groups), vp.merged(groups)
    return sp, vp


def nonclosure_uncertainties(
    xy_mt,
    datasets: Mapping[str, Mapping],
    wp,
    method: str = "continuous",
    groups: Sequence[Sequence[int]] | None = None,
    parents: ParentRecords | None = None,
    **kw,
) -> np.ndarray:
    """Per-M_T-bin relative non-closure uncertainty of the background in region B.

    Args:
        xy_mt: histogram ``(dataset, plane, x, y, mt)``.
        datasets: dataset metadata.
        wp: working point ``(x0, y0)``.
        method: ``continuous`` (default), ``significance``, ``max``, ``sp``, ``vp``, ``quadrature`` or ``vp_data``.
        groups: optional M_T bin merging (lists of consecutive original bin indices).
        parents: the parent records of ``xy_mt`` (parent-aware variances), or None.
        **kw: ``undefined_value``, ``floor``, ``cap`` of :func:`nonclosure_from_deltas`.

    Returns:
        numpy array of shape ``(n_mt,)`` (or ``(len(groups),)``): ``u = kappa - 1``; the card uses ``lnN kappa``.
    """
    sp, vp = closure_yields(xy_mt, datasets, wp, method, groups, parents=parents)
    u = nonclosure_from_yields(sp, vp, method, **kw)
    log.info("non-closure (%s) at %s: %s", method, sp.wp, np.round(u, 4).tolist())
    return u


def summary_lines(index: Mapping) -> list[str]:
    """Markdown table of the non-closure in the cards (from ``index.json``), for ``summary.md``."""
    closure = index.get("closure")
    if not closure:
        return []

    def pm(plane: dict) -> str:
        d, s = plane.get("delta"), plane.get("sigma_delta")
        if d is None or s is None:
            return "n/a (no events)"
        text = f"{d:+.3f} +- {s:.3f}" + (" (significant)" if plane.get("significant") else "")
        return text if plane.get("used", True) else text + " (not used: N_eff below the minimum)"

    lines = ["## Non-closure in the cards", "",
             f"Rule `{closure['method']}`: one `nonclosure_bin<i>` lnN per fit bin on the background in B, from that "
             "bin's own closure (fit bins = closure bins: the statistics guard's M_T groups, every region with "
             f"N_eff >= {index.get('min_neff', 0):g}); `continuous`: ln kappa = sqrt(ln^2(1 + delta_SP) + s_SP^2), "
             "widened by VP's non-closure beyond its error where VP has the statistics (docs/datacards.md).", "",
             "| fit bin M_T [GeV] | N_eff SP A/B/C/D | delta SP | delta VP | kappa | set by |",
             "|---|---|---|---|---|---|"]
    for b in closure["bins"]:
        neff = "/".join(f"{b['SP']['n_eff'][r]:.1f}" for r in REGIONS)
        lines.append(f"| {b['mt']} | {neff} | {pm(b['SP'])} | {pm(b['VP'])} | {b['kappa']:.3f} | {b['source']} |")
    if index.get("below_min_neff"):
        lines += ["", f"Below N_eff {index['min_neff']:g} even with every M_T bin merged: "
                  + ", ".join(f"{x['region']} ({x['n_eff']:.1f})" for x in index["below_min_neff"])
                  + ": the MC sample is too small for this closure test; the kappa is not backed (UNBACKED)."]
    for point, meta in index.get("points", {}).items():
        if meta.get("bins_without_signal_in_B"):
            lines.append(f"- {point}: no signal in region B of M_T bin(s) {meta['bins_without_signal_in_B']}")
    return lines + [""]
