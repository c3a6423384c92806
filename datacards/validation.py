"""Fit validation of the ABCD cards, as a CMS review asks for it (``svjscout validate DIR``).

Every test runs on the in-package likelihood of a written card (:mod:`.likelihood`, the model
Combine builds from the same text); ``jobs/combine_validate.sh`` runs the same with real Combine.

* **Injection and bias** (:func:`injection_test`): a background-only fit to the control regions
  (A, C, D; region B masked) fixes the model; toys are drawn from it with the signal injected at
  ``r_inj`` (by default 0, 1x and 2x each point's median expected limit of ``limits.json``;
  Poisson counts, global observables drawn around the fitted nuisances: frequentist toys) and
  each toy is fitted with r free, allowed below 0 (down to where a channel's yield would turn
  negative). Pull ``(r_fit - r_inj) / sigma_r`` with the MINOS error on the side of the truth.
  EVERY fitted toy counts: a fit that ends at the r floor (or at r_max) keeps its pull (a bound)
  and is counted per injection as "at boundary", failed fits are counted; nothing is dropped
  (dropping the boundary toys, which are the low-r toys, pushes the mean pull up). Median and
  16/50/84 % quantiles of the pulls, mean and width; the bias verdict uses the median and its
  order-statistics uncertainty (:func:`bias_verdict`: ``|median| > 0.14``, the usual CMS
  criterion, and significant).
* **Goodness of fit** (:func:`gof_saturated`): the saturated-model statistic
  ``q = 2 (-ln L_fit + ln L_sat)`` of the background-only fit, against toys from the fitted model;
  p = fraction of toys with ``q >= q_obs``. On the validation plane with all regions, and on the
  signal plane with region B masked. With B masked the ABCD model has one free rateParam per
  control region and bin: it is saturated (0 degrees of freedom) and ``q = 0`` always; reported
  as such, not as a p-value.
* **Pulls and impacts** (:func:`impacts`): the S+B fit (r free) of the card's observation; every
  nuisance's post-fit value and constraint, and its impact on r: the shift of r when the
  nuisance is fixed at its post-fit value +- its post-fit uncertainty and the others refitted.
* **WP stability** (:func:`wp_stability`): closure and expected limit at the WP and its 8 grid
  neighbours, from cards written as the run's (guard, settings, signal systematics).
* **Signal contamination** (:func:`contamination`): the relative bias of the prediction
  ``nhat_B = n_A n_D / n_C`` when a signal point at r = 1 is added to A, C and D, per M_T bin,
  against the non-closure uncertainty of the cards.

Nuisances are bounded to ``likelihood.THETA_RANGE`` in every fit (Combine bounds them too).

Example:
    >>> # res = validate(xy_mt, datasets, index, limits, toys=200)  # or: svjscout validate DIR
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import re
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import brentq, minimize_scalar

from svjscout.core.exceptions import DatacardError
from svjscout.core.regions import REGIONS
from svjscout.processors.files import open_root

from . import likelihood
from .abcd import abcd_from_yields
from .likelihood import Fitter, Model, build_model
from .limits import quick_limits, read_index
from .parents import StatInputs
from .parser import Datacard, parse_datacard, parse_text
from .plots import point_name
from .regions import RegionYields, region_yields
from .settings import DEFAULT_INJECT, ValidationSettings, parse_inject  # noqa: F401 - DEFAULT_INJECT: re-exported
from .validation_plots import plot_validation
from .writer import card_settings, format_card, merge_groups, write_datacards

log = logging.getLogger(__name__)


def _quiet(fn):
    """Run ``fn`` without numpy's floating-point warnings: MIGRAD's far-out trial points overflow
    harmlessly (the likelihood clips them), and the terminal should show what matters."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return fn(*args, **kwargs)

    return wrapper

#: A bias is flagged when the median pull is beyond this (the usual CMS criterion: a bias below
#: 14 % of the statistical uncertainty) and significantly away from 0 (more than
#: :data:`BIAS_SIGNIFICANCE` of its uncertainties from the number of toys).
BIAS_FLAG = 0.14
#: How many uncertainties of the median a flagged bias must be away from 0. A run tests 3
#: injections per point: at 2 a false flag would come every few runs of unbiased fits.
BIAS_SIGNIFICANCE = 3.0

# DEFAULT_INJECT (0, 1x and 2x each point's median expected limit, ``exp0`` of ``limits.json``;
# ``"Nx"``: N times that limit; a plain number: that r; ``"exp0"``: the same as ``"1x"``) and
# parse_inject live with the validation's settings (datacards/settings.py).


def theta_range() -> tuple[float, float]:
    """The range of every lnN nuisance in the fits (``likelihood.THETA_RANGE``, read at call time)."""
    lo, hi = likelihood.THETA_RANGE
    return float(lo), float(hi)


def resolve_inject(items, limits: Mapping | None, point: str) -> tuple[list[dict], list[str]]:
    """The injected r of ``point`` for each of :func:`parse_inject`'s items.

    Returns:
        ``([{"r", "label", "factor"}...], [reasons an item was skipped...])``; ``factor`` is the
        multiple of ``exp0`` (None for an absolute r).
    """
    exp0 = None
    if limits and point in limits and isinstance(limits[point], Mapping):
        v = limits[point].get("exp0")
        exp0 = float(v) if v is not None and np.isfinite(float(v)) and float(v) > 0 else None
    out, skipped = [], []
    for it in parse_inject(items):
        if isinstance(it, tuple):
            if exp0 is None:
                skipped.append(f"{it[1]:g}x the expected limit: no exp0 for {point} in limits.json")
                continue
            out.append({"r": it[1] * exp0, "label": f"{it[1]:g}x exp. limit", "factor": it[1], "exp0": exp0})
        else:
            out.append({"r": float(it), "label": f"r = {it:g}", "factor": None, "exp0": exp0})
    return out, skipped


def region_of_bin(name: str) -> str:
    """The region letter of a channel ``PLANE_R_i``."""
    parts = name.split("_")
    if len(parts) < 3 or parts[1] not in REGIONS:
        raise DatacardError(f"channel '{name}' is not PLANE_REGION_BIN (A, B, C, D)")
    return parts[1]


def control_mask(model: Model) -> np.ndarray:
    """True for the channels of regions A, C, D (region B, the signal region, masked)."""
    return np.array([region_of_bin(b) != "B" for b in model.bins])


def r_floor(model: Model, x: np.ndarray, margin: float = 0.9) -> float:
    """Lowest r that keeps every channel's expected yield positive (times ``margin``), <= 0."""
    nu0, nu, nub, *_ = model.expected(x, jac=False)
    sig = np.bincount(model.col_bin, weights=np.where(model.is_sig, nu0, 0.0), minlength=len(model.bins))
    bkg = np.bincount(model.col_bin, weights=np.where(model.is_sig, 0.0, nu0), minlength=len(model.bins))
    ok = sig > 0
    if not ok.any():
        return 0.0
    return -margin * float(np.min(bkg[ok] / sig[ok]))


@dataclass
class ToySet:
    """Pseudo-experiments of one model: counts ``n`` (T, B), lnN global observables ``glob`` (T, S)
    and gmN global observables ``gglob`` (T, G; None for a model without gmN rows)."""

    n: np.ndarray
    glob: np.ndarray
    gglob: np.ndarray | None = None

    def fit_kw(self, t: int) -> dict:
        """The toy's global observables as :class:`Fitter` keywords."""
        kw = {"n": self.n[t], "glob": self.glob[t]}
        if self.gglob is not None:
            kw["gglob"] = self.gglob[t]
        return kw


def n_gmn(model: Model) -> int:
    """Number of gmN rows of a model (0 for a likelihood without gmN support)."""
    return int(getattr(model, "nG", 0) or 0)


def gmn_values(model: Model, x: np.ndarray) -> np.ndarray:
    """The gmN yields ``theta_g`` in a parameter vector (last G entries)."""
    G = n_gmn(model)
    return np.asarray(x[len(x) - G :], float) if G else np.zeros(0)


def draw_toys(model: Model, x: np.ndarray, n_toys: int, rng: np.random.Generator) -> ToySet:
    """Frequentist toys at parameters ``x`` (Combine's ``--toysFrequentist``): Poisson counts of the
    expected yields and every global observable drawn around its fitted value: lnN
    ``N(theta_hat, 1)``, gmN (signal MC statistics) ``Poisson(theta_g_hat)``, the count N of the
    card's gmN row, as Combine draws a Poisson constraint's global observable."""
    _, _, nub, *_ = model.expected(x, jac=False)
    n = rng.poisson(np.clip(nub, 0.0, None), size=(n_toys, len(nub))).astype(float)
    th = x[1 : 1 + model.nS]
    glob = rng.normal(th, 1.0, size=(n_toys, model.nS))
    gglob = None
    if n_gmn(model):
        gglob = rng.poisson(np.clip(gmn_values(model, x), 0.0, None), size=(n_toys, n_gmn(model))).astype(float)
    return ToySet(n, glob, gglob)


def asimov_kw(model: Model, x: np.ndarray) -> dict:
    """:class:`Fitter` keywords of the Asimov data set at ``x`` (global observables at ``x``)."""
    _, _, nub, *_ = model.expected(x, jac=False)
    kw = {"n": nub, "glob": x[1 : 1 + model.nS]}
    if n_gmn(model):
        kw["gglob"] = gmn_values(model, x)
    return kw


def _summary(values: np.ndarray) -> dict:
    """Mean, width and their standard errors of a sample (Gaussian approximations)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 2:
        return {"n": n, "mean": None, "mean_err": None, "width": None, "width_err": None}
    mean, width = float(v.mean()), float(v.std(ddof=1))
    return {"n": n, "mean": mean, "mean_err": width / np.sqrt(n), "width": width,
            "width_err": width / np.sqrt(2.0 * (n - 1))}


def median_interval(values: np.ndarray, cl: float = 0.6827) -> tuple[float, float]:
    """Distribution-free ``cl`` interval of the median from order statistics (binomial ranks):
    valid for any distribution, also when some values sit at a boundary."""
    v = np.sort(np.asarray(values, float))
    n = len(v)
    k_lo = int(stats.binom.ppf(0.5 - cl / 2, n, 0.5))
    k_hi = int(stats.binom.ppf(0.5 + cl / 2, n, 0.5))
    return float(v[max(k_lo - 1, 0)]), float(v[min(k_hi, n - 1)])


def pull_summary(pulls: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None) -> dict:
    """Statistics of the pulls of ALL fitted toys.

    ``low`` / ``high``: toys whose fit ended at the lower / upper boundary of r (or whose MINOS
    interval hit it): their pull is a bound (the true pull is at most / at least this value). They
    are counted in every statistic; a quantile is marked ``censored`` when the boundary toys on
    its side reach it (then it is a bound, not a measurement).

    Returns:
        ``{n, median, median_err, q16, q50, q84, width_q ((q84 - q16) / 2), mean, mean_err, width,
        width_err, frac_low, frac_high, censored: {q16, q50, q84}, mean_excl_boundary}``.
    """
    p = np.asarray(pulls, float)
    n = len(p)
    low = np.zeros(n, bool) if low is None else np.asarray(low, bool)
    high = np.zeros(n, bool) if high is None else np.asarray(high, bool)
    out = {"n": n, "frac_low": float(low.mean()) if n else 0.0, "frac_high": float(high.mean()) if n else 0.0}
    out.update(_summary(p))
    inner = p[~(low | high)]
    out["mean_excl_boundary"] = float(inner.mean()) if len(inner) else None
    if n < 2:
        out.update(median=float(p[0]) if n else None, median_err=None, q16=None, q50=None, q84=None,
                   width_q=None, censored={"q16": False, "q50": False, "q84": False})
        return out
    q16, q50, q84 = (float(v) for v in np.quantile(p, [0.16, 0.5, 0.84]))
    lo, hi = median_interval(p)
    cens = {q: bool(out["frac_low"] >= f or out["frac_high"] >= 1.0 - f)
            for q, f in (("q16", 0.16), ("q50", 0.5), ("q84", 0.84))}
    # uncertainty of the median: the order-statistics half-interval, but never below the Gaussian
    # estimate 1.2533 sigma / sqrt(n) with the robust width (the order statistics of a few toys
    # can sit close together by chance and understate it)
    err = max(0.5 * (hi - lo), 1.2533 * 0.5 * (q84 - q16) / np.sqrt(n))
    out.update(median=q50, median_err=err, median_interval=[lo, hi], q16=q16, q50=q50, q84=q84,
               width_q=0.5 * (q84 - q16), censored=cens)
    return out


def bias_verdict(pull: Mapping, flag: float = BIAS_FLAG) -> tuple[str, str]:
    """``("bias" | "no bias" | "unresolved", reason)`` from the median pull and its uncertainty.

    bias: ``|median| > flag`` and more than :data:`BIAS_SIGNIFICANCE` (3) uncertainties from 0;
    no bias: otherwise, when the
    uncertainty of the median is <= ``flag`` (the toys resolve a bias of that size); unresolved:
    too few toys, or the median is censored (half the toys or more at one boundary of r).
    """
    med, err = pull.get("median"), pull.get("median_err")
    if med is None or err is None:
        return "unresolved", "fewer than 2 fitted toys"
    if pull.get("censored", {}).get("q50"):
        return "unresolved", "half the toys or more end at a boundary of r: the median is a bound"
    if abs(med) > flag and abs(med) > BIAS_SIGNIFICANCE * err:
        return "bias", f"|median| {abs(med):.2f} > {flag} and > {BIAS_SIGNIFICANCE:g} x its uncertainty {err:.2f}"
    if err > flag:
        return "unresolved", f"uncertainty of the median {err:.2f} > {flag}: more toys needed"
    return "no bias", f"median {med:+.2f} +- {err:.2f}"


def background_only_fit(model: Model, mask: np.ndarray | None = None) -> np.ndarray:
    """Parameters of the background-only (r = 0) fit of the card's observation (``mask``: bins used)."""
    return Fitter(model, mask=mask).fit(r=0.0)[1]


def r_sigma(model: Model, x: np.ndarray, r_min: float, r_max: float | None) -> float:
    """Expected uncertainty of r at ``x``: the upward 1-sigma crossing of the profile likelihood of
    the Asimov data set (HESSE as the first guess; HESSE alone understates it badly where r is
    nearly degenerate with a large log-normal non-closure)."""
    data = asimov_kw(model, x)
    f = Fitter(model, **data, r_min=r_min, r_max=r_max, strategy=1, r_step=max(1.0, abs(x[0])))
    f.fit(start=x, hesse=True)
    h = float(f.last.errors["r"])
    h = h if np.isfinite(h) and h > 0 else max(abs(x[0]), 1.0)
    hi = r_max if r_max is not None else x[0] + 1e6 * h
    prof = Profile(model, data, r_min, hi, None, x)
    p0 = prof(x[0])
    up, _ = prof.crossing(x[0], p0, +1, h)
    return float(up) if np.isfinite(up) and up > 0 else h


class Profile:
    """The profile likelihood ``P(r) = min -ln L(r, others)`` of one data set: fits with r fixed
    (strategy 1), each started from the nearest r already fitted; cached."""

    def __init__(self, model: Model, data: Mapping, r_min: float, r_max: float, mask: np.ndarray | None,
                 start: np.ndarray):
        self.fitter = Fitter(model, **data, r_min=r_min, r_max=r_max, mask=mask, strategy=1)
        self.r_min, self.r_max = float(r_min), float(r_max)
        self.start = np.asarray(start, float)
        self.cache: dict[float, tuple[float, np.ndarray, bool]] = {}

    def __call__(self, r: float) -> float:
        r = float(min(max(r, self.r_min), self.r_max))
        if r not in self.cache:
            near = min(self.cache, key=lambda v: abs(v - r)) if self.cache else None
            start = self.cache[near][1] if near is not None else self.start
            nll, x = self.fitter.fit(r=r, start=start)
            self.cache[r] = (nll, x, bool(self.fitter.last is None or self.fitter.last.valid))
        return self.cache[r][0]

    def minimum(self, r0: float, h: float, tol: float) -> float:
        """r of the minimum of P: walk downhill from ``r0`` in doubling steps (from ``h``) until
        it turns up or reaches a boundary of r, then Brent's method on the bracket."""
        lo, hi = self.r_min, self.r_max
        b = min(max(r0, lo), hi)
        a, c = max(lo, b - h), min(hi, b + h)
        fa, fb, fc = self(a), self(b), self(c)
        for _ in range(60):
            if fa >= fb and fc >= fb:
                break
            if fa < fc:
                if a <= lo:
                    return lo
                c, fc, b, fb = b, fb, a, fa
                h *= 2.0
                a = max(lo, b - h)
                fa = self(a)
            else:
                if c >= hi:
                    return hi
                a, fa, b, fb = b, fb, c, fc
                h *= 2.0
                c = min(hi, b + h)
                fc = self(c)
        if c - a <= tol:
            return b
        res = minimize_scalar(self, bounds=(a, c), method="bounded", options={"xatol": tol})
        best = min((a, b, c, float(res.x)), key=self)
        return best

    def crossing(self, r_hat: float, p_min: float, direction: int, h: float) -> tuple[float, bool]:
        """The 1-sigma error on one side: ``|r - r_hat|`` where ``P(r) = p_min + 1/2``, and whether
        the range of r ended first (then the distance to that boundary, a lower bound)."""
        lim = self.r_max if direction > 0 else self.r_min
        if abs(lim - r_hat) <= 0:
            return float("nan"), True
        g = lambda r: self(r) - p_min - 0.5  # noqa: E731
        a, d = r_hat, abs(h) or 1e-3 * max(1.0, abs(r_hat))
        for _ in range(60):
            b = r_hat + direction * d
            b = min(b, lim) if direction > 0 else max(b, lim)
            if g(b) > 0:
                lo_, hi_ = sorted((a, b))
                if g(lo_) * g(hi_) >= 0:
                    return abs(b - r_hat), False
                return abs(brentq(g, lo_, hi_, xtol=2e-3 * abs(h) + 1e-12) - r_hat), False
            if b == lim:
                return abs(lim - r_hat), True
            a, d = b, 2.0 * d
        return float("nan"), True


def fit_toys(model: Model, toys: ToySet, start: np.ndarray, r_min: float, r_max: float,
             mask: np.ndarray | None = None, r_step: float | None = None) -> dict:
    """Fit every toy with r free in ``[r_min, r_max]``: r, its error on each side, and the status.

    Each toy: MIGRAD (r free) for a first estimate and its error, then the minimum and the
    1-sigma crossing on the side of the truth ``start[0]`` from the profile likelihood
    (:class:`Profile`: fits with r fixed, Brent's method; what Combine's ``--robustFit`` does). Where
    r is nearly degenerate with a large log-normal nuisance, MIGRAD stops early on the flat valley
    and HESSE and MINOS errors are wrong by large factors; the profile is not.

    Status per toy: ``failed`` (the fit at the minimum did not converge), ``at_floor`` / ``at_rmax``
    (the minimum is on that boundary of r), ``minos_low`` / ``minos_high`` (no crossing on that
    side inside the range: the error there is the distance to the boundary, a lower bound; NaN on
    the side away from the truth, which is not computed). Nothing is dropped here.
    """
    T = len(toys.n)
    r = np.full(T, np.nan)
    err, lo_err, hi_err = (np.full(T, np.nan) for _ in range(3))
    failed, at_floor, at_rmax, minos_low, minos_high = (np.zeros(T, bool) for _ in range(5))
    tol = 1e-4 * (r_max - r_min)
    h = r_step or 0.1 * (r_max - r_min)
    r_true = float(start[0])
    for t in range(T):
        data = toys.fit_kw(t)
        f = Fitter(model, **data, r_min=r_min, r_max=r_max, mask=mask, r_step=r_step, strategy=1)
        _, x = f.fit(start=start)
        e = float(f.last.errors["r"])  # MIGRAD's estimate: only a fallback
        err[t] = e if np.isfinite(e) and e > 0 else np.nan
        prof = Profile(model, data, r_min, r_max, mask, x)
        r_hat = prof.minimum(float(x[0]), 0.5 * h, 0.02 * h)
        p_min = prof(r_hat)
        r[t] = r_hat
        at_floor[t] = r_hat - r_min < tol
        at_rmax[t] = r_max - r_hat < tol
        if not prof.cache[min(max(r_hat, r_min), r_max)][2]:
            failed[t] = True
            continue
        side = +1 if r_hat < r_true else -1
        e_side, open_ = prof.crossing(r_hat, p_min, side, 0.5 * h)
        (hi_err if side > 0 else lo_err)[t] = e_side
        if side > 0:
            minos_high[t] = open_
        else:
            minos_low[t] = open_
    return {"r": r, "r_err": err, "r_err_down": lo_err, "r_err_up": hi_err, "failed": failed,
            "at_floor": at_floor, "at_rmax": at_rmax, "minos_low": minos_low, "minos_high": minos_high}


def pulls_of(r_fit: np.ndarray, r_true: float, err_down: np.ndarray, err_up: np.ndarray,
             err_hesse: np.ndarray | None = None) -> np.ndarray:
    """``(r_fit - r_true) / sigma``, with the MINOS error on the side of the truth (Combine's
    convention for bias studies: the upper error when the fit is below the truth); where that
    MINOS error is missing, the HESSE error ``err_hesse`` (when given)."""
    r_fit = np.asarray(r_fit, float)
    sigma = np.where(r_fit < r_true, err_up, err_down)
    if err_hesse is not None:
        sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, np.asarray(err_hesse, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (r_fit - r_true) / sigma


def classify_toys(fit: Mapping, r_true: float) -> dict:
    """Pulls of every toy of :func:`fit_toys` (or of Combine's tree) and the per-toy masks.

    A toy is ``used`` when it has a pull (not failed, an error on the side of the truth, or a HESSE
    error where that is missing); ``low`` / ``high``: its fit ends at the lower / upper boundary of
    r (its pull is a bound: the true one is at most / at least this); ``open``: not at a boundary,
    but its interval on the side of the truth reaches one (the error is then the distance to the
    boundary, a lower bound: ``|pull|`` is an upper bound).
    """
    r = np.asarray(fit["r"], float)
    pulls = pulls_of(r, r_true, fit["r_err_down"], fit["r_err_up"], fit.get("r_err"))
    failed = np.asarray(fit["failed"], bool)
    used = ~failed & np.isfinite(pulls)
    below = r < r_true
    low = np.asarray(fit["at_floor"], bool)
    high = np.asarray(fit["at_rmax"], bool)
    open_ = (below & np.asarray(fit["minos_high"], bool)) | (~below & np.asarray(fit["minos_low"], bool))
    return {"pulls": pulls, "used": used, "failed": failed, "low": low, "high": high,
            "open": open_ & ~failed & ~low & ~high}


def _injection_result(r_inj: float, fit: Mapping, n_toys: int, flag: float = BIAS_FLAG) -> dict:
    c = classify_toys(fit, r_inj)
    u = c["used"]
    pull = pull_summary(c["pulls"][u], c["low"][u], c["high"][u])
    verdict, why = bias_verdict(pull, flag)
    r = np.asarray(fit["r"], float)
    edge = (c["low"] | c["high"] | c["open"]) & u
    return {"r_inj": float(r_inj), "toys": int(n_toys), "fitted": int(u.sum()), "converged": int(u.sum()),
            "failed": int(c["failed"].sum()), "no_error": int((~c["failed"] & ~u).sum()),
            "at_floor": int((c["low"] & u).sum()), "at_rmax": int((c["high"] & u).sum()),
            "interval_at_limit": int((c["open"] & u).sum()), "at_boundary": int(edge.sum()),
            "frac_boundary": float(edge.sum() / max(n_toys, 1)),
            "pull": pull, "r_fit": _summary(r[u]), "r_fit_median": float(np.median(r[u])) if u.any() else None,
            "bias": verdict, "bias_reason": why, "flag_bias": verdict == "bias",
            "pulls": [float(p) for p in c["pulls"][u]],
            "pull_at_boundary": [bool(v) for v in edge[u]]}


@_quiet
def injection_test(card: Datacard, r_inj: float, n_toys: int = 200, seed: int = 1,
                   r_max: float | None = None, r_min: float | None = None, stream: int = 0) -> dict:
    """Signal injection and bias test of one card at ``r_inj`` (see module docstring).

    Every toy counts: the pulls of toys whose fit ends at a boundary of r are kept (as bounds) and
    their fraction is reported; failed fits are counted. The bias verdict uses the median pull
    (:func:`bias_verdict`), which boundary toys on one side do not move.

    Returns:
        ``{"r_inj", "toys", "fitted", "failed", "at_floor", "at_rmax", "at_boundary",
        "minos_at_limit", "frac_boundary", "r_range", "sigma_r_asimov", "pull": pull_summary(...),
        "r_fit", "bias", "bias_reason", "flag_bias", "pulls", "pull_at_boundary"}``.
    """
    m = build_model(card)
    cr = control_mask(m)
    xb = background_only_fit(m, cr)
    x = xb.copy()
    x[0] = r_inj
    rng = np.random.default_rng([seed, int(round(1e6 * r_inj)) & 0xFFFFFFFF, int(round(1e12 * r_inj)) & 0xFFFFFFFF,
                                 int(stream) & 0xFFFFFFFF])
    toys = draw_toys(m, x, n_toys, rng)
    lo = r_floor(m, xb) if r_min is None else float(r_min)
    sig_r = r_sigma(m, x, lo, None)
    hi = r_max if r_max is not None else r_inj + max(10.0 * sig_r, abs(lo))
    fit = fit_toys(m, toys, x, lo, hi, r_step=sig_r)
    out = _injection_result(r_inj, fit, n_toys)
    out.update(r_range=[float(lo), float(hi)], sigma_r_asimov=sig_r, theta_range=list(theta_range()))
    return out


def saturated_q(model: Model, n: np.ndarray, glob: np.ndarray, mask: np.ndarray | None, start: np.ndarray,
                gglob: np.ndarray | None = None) -> float:
    """Saturated-model statistic of the background-only fit: ``2 min(-ln L)`` (the likelihood is
    in saturated normalisation, and the constraint terms of the saturated model vanish)."""
    kw = {"gglob": gglob} if gglob is not None else {}
    nll, _ = Fitter(model, n=n, glob=glob, mask=mask, **kw).fit(r=0.0, start=start)
    return 2.0 * nll


@_quiet
def gof_saturated(card: Datacard, n_toys: int = 200, seed: int = 1, mask_b: bool = False) -> dict:
    """Saturated goodness of fit of a card's observation against toys of its background-only fit.

    Returns:
        ``{"q_obs", "q_toys", "pvalue", "ndf", "toys", "masked"}``; ``pvalue`` is None when the
        fitted model is saturated (``ndf == 0``).
    """
    m = build_model(card)
    mask = control_mask(m) if mask_b else None
    n_bins = int(mask.sum()) if mask is not None else len(m.bins)
    used_free = sum(1 for j, name in enumerate(m.free_names)
                    if mask is None or any(m.apply[j, c] and mask[m.col_bin[c]] for c in range(len(m.rate))))
    ndf = n_bins - used_free
    x = background_only_fit(m, mask)
    q_obs = saturated_q(m, m.obs, np.zeros(m.nS), mask, x)
    out = {"q_obs": q_obs, "ndf": ndf, "toys": int(n_toys), "masked": "B" if mask_b else None}
    if ndf <= 0:
        out.update(q_toys=[], pvalue=None, note="saturated model (0 degrees of freedom): q = 0 always, no test")
        return out
    toys = draw_toys(m, x, n_toys, np.random.default_rng([seed, 7]))
    q = np.array([saturated_q(m, toys.n[t], toys.glob[t], mask, x, None if toys.gglob is None else toys.gglob[t])
                  for t in range(n_toys)])
    out.update(q_toys=[float(v) for v in q], pvalue=float(np.mean(q >= q_obs)))
    return out


@_quiet
def impacts(card: Datacard, r_min: float | None = None, r_max: float | None = None) -> dict:
    """Post-fit pulls, constraints and impacts on r of every nuisance (lnN and free rateParams).

    The impact of a nuisance is the shift of r when it is fixed at its post-fit value +- its
    post-fit (HESSE) uncertainty and every other parameter is refitted.

    Returns:
        ``{"r": r_hat, "r_err", "nuisances": [{"name", "kind", "value", "error", "pull",
        "impact_up", "impact_down", "impact"}...] ranked by |impact|, "background_only": [{"name",
        "value", "error"}...] (the r = 0 fit's post-fit values)}``; for lnN nuisances
        ``pull = value`` and ``error`` is the constraint (prior width 1); rateParams are in units
        of their initial value.
    """
    m = build_model(card)
    xb = background_only_fit(m)
    lo = r_floor(m, xb) if r_min is None else r_min
    step = r_sigma(m, xb, lo, r_max)
    fit = Fitter(m, r_min=lo, r_max=r_max, r_step=step, strategy=1)
    _, x = fit.fit(start=xb, hesse=True)
    err = np.array(fit.last.errors)
    r_hat = float(x[0])
    rows = []
    for i, name in enumerate(m.names[1:], start=1):
        kind = "lnN" if i <= m.nS else "rateParam"
        shifts = []
        for sgn in (+1, -1):
            f = Fitter(m, r_min=lo, r_max=r_max, r_step=step, strategy=1)
            _, xs = f.fit(start=x, fixed={i: float(x[i] + sgn * err[i])})
            shifts.append(float(xs[0] - r_hat))
        rows.append({"name": name, "kind": kind, "value": float(x[i]), "error": float(err[i]),
                     "pull": float(x[i]) if kind == "lnN" else None, "impact_up": shifts[0],
                     "impact_down": shifts[1], "impact": max(abs(shifts[0]), abs(shifts[1]))})
    rows.sort(key=lambda r: -r["impact"])
    fb = Fitter(m, strategy=1)
    _, xb0 = fb.fit(r=0.0, start=xb, hesse=True)
    eb = np.array(fb.last.errors)
    bonly = [{"name": name, "value": float(xb0[i]), "error": float(eb[i])}
             for i, name in enumerate(m.names[1:], start=1)]
    return {"r": r_hat, "r_err": float(err[0]), "nuisances": rows, "background_only": bonly}


def contamination(inputs, datasets: Mapping[str, Mapping], wp, groups: Sequence[Sequence[int]],
                  nonclosure_kappa: Sequence[float], signals: Sequence[str]) -> dict:
    """Relative bias of ``nhat_B`` per (fit) M_T bin when each signal at r = 1 is added to A, C, D.

    ``bias_i = [(A+sA)(D+sD)/(C+sC)] / [A D / C] - 1`` with A, C, D the background yields; compared
    with the non-closure ``kappa_i - 1`` of the cards.
    """
    inputs = StatInputs.of(inputs)
    xy_mt, parents = inputs.xy_mt, inputs.parents
    b = region_yields(xy_mt, datasets, wp, which="background", parents=parents).merged(groups).n
    out = {}
    u = np.asarray(nonclosure_kappa, float) - 1.0
    for name in signals:
        s = region_yields(xy_mt, datasets, wp, which=[name], parents=parents).merged(groups).n
        bias = contamination_bias(b, s)
        out[name] = {"bias": [float(v) for v in bias], "nonclosure": [float(v) for v in u],
                     "exceeds_nonclosure": [bool(abs(v) > w) for v, w in zip(bias, u)]}
    return out


def contamination_bias(b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``[(A+sA)(D+sD)/(C+sC)] / [A D / C] - 1`` per bin from ``(4, n)`` yields (rows A, B, C, D)."""
    a, c, d = b[0], b[2], b[3]
    sa, sc, sd = s[0], s[2], s[3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((a + sa) * (d + sd) / (c + sc)) / (a * d / c) - 1.0


def ks_uniform(p_values: Sequence[float]) -> float:
    """Kolmogorov-Smirnov p-value of the hypothesis that ``p_values`` are uniform on [0, 1]."""
    return float(stats.kstest(np.asarray(p_values, float), "uniform").pvalue)



# -- the whole validation of a run's output folder ---------------------------------------------


def plane_card(inputs, datasets: Mapping[str, Mapping], wp, plane: str, signal: str, kappa_of_bin: Sequence[float],
               groups: Sequence[Sequence[int]], point: str = "validation"
               ) -> tuple[Datacard, list[list[int]], str, RegionYields]:
    """A card of ``plane`` whose observation is the MC background itself (pseudo-data), region B
    included: what the goodness of fit and the closure of the ABCD model are tested on.

    M_T bins: ``groups`` (the cards' fit bins), merged further where a region of ``plane`` is empty.
    Returns the parsed card, its bins as groups of original M_T bins, the card's text, and the
    background yields it observes (for :func:`pseudo_data_verdict`).
    """
    inputs = StatInputs.of(inputs)
    xy_mt, parents = inputs.xy_mt, inputs.parents
    b = region_yields(xy_mt, datasets, wp, plane=plane, which="background", parents=parents).merged(groups)
    sub, _ = merge_groups(b.n, 0.0)
    bins = [[o for i in g for o in groups[i]] for g in sub]
    yb = region_yields(xy_mt, datasets, wp, plane=plane, which="background", parents=parents).merged(bins)
    bkg = yb.n
    sig = np.clip(region_yields(xy_mt, datasets, wp, plane=plane, which=[signal], parents=parents).merged(bins).n,
                  0.0, None)
    kappa = np.array([max(kappa_of_bin[i] for i in g) for g in sub])
    if np.any(bkg <= 0):
        raise DatacardError(f"{plane}: a region is empty in every M_T bin; no {plane} card can be built")
    text = format_card(point, bkg, sig, bkg.copy(), kappa, plane=plane,
                       header=[f"validation card, plane {plane}: observation = background MC (pseudo-data)"])
    return parse_text(text, f"<{plane} validation card>"), bins, text, yb


#: The goodness of fit on MC pseudo-data is backed where every region of every bin of the plane holds
#: at least this N_eff over parents (the guard's default, :class:`.guard.Guard`).
GOF_MIN_NEFF = 10.0


def pseudo_data_verdict(y: RegionYields) -> dict:
    """What backs a goodness of fit whose observation is the background MC ``y`` (the yields and
    parent-aware variances per region and fit bin that :func:`plane_card` observes).

    The toys are Poisson at the fitted yields, while the MC pseudo-data fluctuate with the MC's own
    variance (parent-aware: the sum over parents of their squared weights). Where that variance
    exceeds the yield (weights above 1: fewer MC events than data events), ``q_obs`` holds the MC's
    fluctuations, which no toy has, and a small p says as much about the MC's size as about the model.

    Returns ``neff_min`` and where (region, bin), ``var_over_n_max`` (the largest MC variance over the
    Poisson one, ``var / n``, over regions and bins) and where, and ``verdict``: ``not backed`` (a
    region below :data:`GOF_MIN_NEFF`), ``MC-limited`` (``var_over_n_max > 1``) or ``backed``, with
    ``why``."""
    neff = y.neff
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(y.n > 0, y.var / np.where(y.n > 0, y.n, 1.0), 0.0)
    i_n = np.unravel_index(int(np.argmin(neff)), neff.shape)
    i_r = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    out = {"neff_min": float(neff[i_n]), "neff_min_at": f"{REGIONS[i_n[0]]}, bin {i_n[1]}",
           "var_over_n_max": float(ratio[i_r]), "var_over_n_at": f"{REGIONS[i_r[0]]}, bin {i_r[1]}"}
    if out["neff_min"] < GOF_MIN_NEFF:
        out.update(verdict="not backed", why=f"region {out['neff_min_at']} holds N_eff {out['neff_min']:.1f} < "
                   f"{GOF_MIN_NEFF:g} over parents")
    elif out["var_over_n_max"] > 1.0:
        out.update(verdict="MC-limited", why=f"the pseudo-data's MC variance is {out['var_over_n_max']:.3g}x a "
                   f"Poisson count's in region {out['var_over_n_at']} (N_eff {out['neff_min']:.0f} at least): "
                   "q_obs holds MC fluctuations that the Poisson toys lack, so p does not test the model alone")
    else:
        out.update(verdict="backed", why=f"every region N_eff >= {out['neff_min']:.0f}, MC variance at most "
                   f"{out['var_over_n_max']:.2g}x Poisson's")
    return out


def wp_stability(inputs, datasets: Mapping[str, Mapping], wp, step: float, signal: str, **card_kw) -> list[dict]:
    """The closure (SP, background MC, on the cards' guarded fit bins) and the expected median limit
    of ``signal`` at the WP and its 8 grid neighbours: cards written exactly as the run's (``card_kw``:
    the writer's keywords, ``settings`` and signal systematics included) into a temporary folder,
    unbacked ones too (``backed`` says which), so that the WP's own row equals ``limits.json``."""
    inputs = StatInputs.of(inputs)
    kw = {**card_kw, "allow_unbacked": True, "validate": False, "signals": [signal]}
    out = []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            p = (round(wp[0] + dx * step, 10), round(wp[1] + dy * step, 10))
            row = {"x0": p[0], "y0": p[1], "dx": dx, "dy": dy}
            try:
                with tempfile.TemporaryDirectory() as d:
                    idx = write_datacards(inputs, datasets, p, d, **kw)
                    lim = quick_limits(idx)
                t = abcd_from_yields(region_yields(inputs.xy_mt, datasets, p, plane="SP", parents=inputs.parents)
                                     .merged(idx["mt_groups"]))
                tot_pred, tot_b = np.nansum(t.nhat_B), np.sum(t.n_B)
                name = point_name(signal, datasets.get(signal, {}))
                row.update(delta=float(tot_pred / tot_b - 1) if tot_b > 0 else None,
                           pvalue=float(t.pvalue) if np.isfinite(t.pvalue) else None,
                           fit_bins=len(idx["mt_groups"]), backed=bool(idx["backed"]),
                           limit=lim[name]["exp0"] if name in lim else None)
            except Exception as err:  # noqa: BLE001 - a neighbour off the grid or without a card
                row.update(error=str(err))
            out.append(row)
    return out


@_quiet
def validate(inputs, datasets: Mapping[str, Mapping], index: Mapping, limits: Mapping | None = None,
             toys: int = 100, inject=None, seed: int = 1, gof_toys: int | None = None,
             stability: bool = True, card_kw: Mapping | None = None) -> dict:
    """Every test of the module docstring on the cards of ``index`` (``datacards/index.json``).

    Args:
        inputs, datasets: the statistics inputs the cards were written from
            (:class:`.parents.StatInputs`, or a bare ``xy_mt``) and the datasets.
        index: the cards' index (working point, fit bins, kappas, points).
        limits: expected limits ``{point: {"exp0": ...}}`` (``limits.json``; for ``"Nx"`` injections).
        toys: toys per injected value; ``gof_toys`` (default ``toys``) per goodness of fit.
        inject: injections, see :func:`parse_inject` (default :data:`DEFAULT_INJECT`: 0, 1x and 2x
            the point's median expected limit); an ``"Nx"`` without a limit is skipped and listed.
        card_kw: the card writer's keywords of the run (``settings``, ``systematics``,
            ``xy_mt_syst``, ``syst_nominal``) for the WP-stability cards; default: the settings
            recorded in ``index``.
    """
    inputs = StatInputs.of(inputs)
    base = index["cards_dir"]
    wp = (index["wp"]["x0"], index["wp"]["y0"])
    groups = index["mt_groups"]
    kappa = index.get("nonclosure_kappa") or [1.0 + u for u in index["nonclosure"]]
    signals = [meta["dataset"] for meta in index["points"].values()]
    items = parse_inject(inject)
    out = {"wp": {"x0": wp[0], "y0": wp[1]}, "toys": toys, "seed": seed, "bias_flag": BIAS_FLAG,
           "bias_significance": BIAS_SIGNIFICANCE,
           "inject": [f"{v[1]:g}x" if isinstance(v, tuple) else v for v in items],
           "theta_range": list(theta_range()), "points": {}, "gof": {}}
    settings = {"toys": toys, "seed": seed, "theta_range": list(theta_range()), "points": {}}
    for point, meta in index["points"].items():
        card = parse_datacard(os.path.join(base, meta["card"]))
        res = {"injection": []}
        todo, skipped = resolve_inject(items, limits, point)
        if skipped:
            res["skipped_injections"] = skipped
            log.warning("validation of %s: skipped injection(s): %s", point, "; ".join(skipped))
        cset = []
        for it in todo:
            # one random stream per point: cards that share their background must not share toys
            inj = injection_test(card, it["r"], toys, seed, stream=zlib.crc32(point.encode()))
            inj.update(label=it["label"], factor=it["factor"], exp0=it["exp0"])
            res["injection"].append(inj)
            cset.append({"r_inj": it["r"], "label": it["label"], "tag": f"{point}.bias_r{it['r']:.6g}",
                         "rmin": inj["r_range"][0], "rmax": inj["r_range"][1]})
        settings["points"][point] = {"card": meta["card"], "exp0": todo[0]["exp0"] if todo else None,
                                     "injections": cset}
        res["impacts"] = impacts(card)
        out["points"][point] = res
    out["combine_settings"] = settings
    ref = signals[0]
    nt = gof_toys or toys
    for plane, mask_b in (("VP", False), ("SP", True)):
        try:
            card, bins, text, observed = plane_card(inputs, datasets, wp, plane, ref, kappa, groups)
            g = gof_saturated(card, nt, seed, mask_b=mask_b)
            g["mt_bins"] = bins
            g["pseudo_data"] = pseudo_data_verdict(observed)
            g["theta_range"] = list(theta_range())
            out.setdefault("cards", {})[plane] = text
        except DatacardError as err:
            g = {"error": str(err), "figure": None,
                 "no_figure_reason": f"no test possible: {err}"}
        if g.get("pvalue") is None and "error" not in g:
            g["figure"] = None
            g["no_figure_reason"] = "no test possible: " + g.get("note", "no toys")
        out["gof"][plane + (" (B masked)" if mask_b else "")] = g
    out["contamination"] = contamination(inputs, datasets, wp, groups, kappa, signals)
    if stability:
        step = float(np.diff(inputs.xy_mt.axes["x"].edges)[0])
        kw = dict(card_kw) if card_kw is not None else {"settings": card_settings(None, **{
            k: index[k] for k in ("lumi_unc", "nonclosure_method", "min_neff", "max_rel_err", "rateparam_range")
            if k in index})}
        out["wp_stability"] = wp_stability(inputs, datasets, wp, step, ref, **kw)
    return out


def injection_rows(res: Mapping) -> list[dict]:
    """One flat row per point and injection: what the summary table and the Combine comparison show."""
    rows = []
    for point, p in res["points"].items():
        for inj in p["injection"]:
            pu = inj["pull"]
            rows.append({"point": point, "r_inj": inj["r_inj"], "label": inj.get("label", f"r = {inj['r_inj']:g}"),
                         "toys": inj["toys"], "failed": inj.get("failed"), "fitted": inj.get("fitted"),
                         "at_boundary": inj.get("at_boundary"), "frac_boundary": inj.get("frac_boundary"),
                         "median": pu.get("median"), "median_err": pu.get("median_err"), "q16": pu.get("q16"),
                         "q84": pu.get("q84"), "mean": pu.get("mean"), "mean_err": pu.get("mean_err"),
                         "width": pu.get("width"), "width_q": pu.get("width_q"),
                         "mean_excl_boundary": pu.get("mean_excl_boundary"), "bias": inj.get("bias")})
    return rows


def summary_lines(res: Mapping) -> list[str]:
    """Markdown for ``summary.md`` (section "Fit validation")."""
    def f(v, fmt="{:.3g}"):
        return "n/a" if v is None else fmt.format(v)

    lo, hi = res.get("theta_range", theta_range())
    lines = ["## Fit validation", "",
             f"{res['toys']} toys per test (seed {res['seed']}); every toy counts: fits that end at the r floor "
             "(or r_max) keep their pull and are counted as 'at boundary', failed fits are counted. Bias "
             f"verdict on the median pull: 'bias' when |median| > {res['bias_flag']} and more than "
             f"{res.get('bias_significance', BIAS_SIGNIFICANCE):g} of its "
             "uncertainties from 0, 'unresolved' when the toys cannot tell (median uncertainty > "
             f"{res['bias_flag']}, or half the toys at a boundary). Nuisances bounded to [{lo:g}, {hi:g}]. "
             "Details in `validation/validation.json` and `validation/*.png`.", "",
             "| point | r injected | toys | failed | at boundary | median pull | 16-84 % | mean pull | width (sd) "
             "| bias |", "|---|---|---|---|---|---|---|---|---|---|"]
    for point, p in res["points"].items():
        for inj in p["injection"]:
            pu = inj["pull"]
            cq = pu.get("censored", {})
            q = (f"{f(pu.get('q16'), '{:+.2f}')}{'*' if cq.get('q16') else ''} .. "
                 f"{f(pu.get('q84'), '{:+.2f}')}{'*' if cq.get('q84') else ''}")
            lab = inj.get("label") or f"r = {inj['r_inj']:g}"
            lines.append(f"| {point} | {inj['r_inj']:.3g} ({lab}) | {inj['toys']} | {inj.get('failed', 0)} | "
                         f"{inj.get('at_boundary', 0)} ({inj.get('frac_boundary', 0):.0%}) | "
                         f"{f(pu.get('median'), '{:+.2f}')} +- {f(pu.get('median_err'), '{:.2f}')} | {q} | "
                         f"{f(pu.get('mean'), '{:+.2f}')} +- {f(pu.get('mean_err'), '{:.2f}')} | "
                         f"{f(pu.get('width'), '{:.2f}')} | "
                         f"{'**BIAS**' if inj.get('bias') == 'bias' else inj.get('bias', '')} |")
        for s in p.get("skipped_injections", []):
            lines.append(f"| {point} | skipped: {s} | | | | | | | | |")
    if any(pu.get("censored", {}).get(k) for p in res["points"].values() for i in p["injection"]
           for pu in [i["pull"]] for k in ("q16", "q84")):
        lines += ["", "\\* a bound, not a measurement: the toys at the boundary of r reach this quantile."]
    lines += ["", "| goodness of fit (saturated) | q_obs | ndf | p (toys) | what backs it (MC pseudo-data) |",
              "|---|---|---|---|---|"]
    for name, g in res["gof"].items():
        pd = g.get("pseudo_data")
        backs = f"{pd['verdict']}: {pd['why']}" if pd else ""
        if "error" in g:
            lines.append(f"| {name} | n/a | | no test possible: {g['error']} (no figure) | |")
        elif g.get("pvalue") is None:
            lines.append(f"| {name} | {g['q_obs']:.3g} | {g['ndf']} | no test possible: {g.get('note', '')} (no "
                         f"figure) | {backs} |")
        else:
            pv = (f"< {1 / g['toys']:.2g} (0 of {g['toys']} toys)" if g["pvalue"] == 0
                  else f"{g['pvalue']:.3g} ({g['toys']} toys)")
            lines.append(f"| {name} | {g['q_obs']:.3g} | {g['ndf']} | {pv} | {backs} |")
    lines += ["", "Largest impacts on r (Asimov, +-1 post-fit sigma):", ""]
    for point, p in res["points"].items():
        if "impacts" not in p:
            continue
        top = ", ".join(f"{n['name']} {n['impact_up']:+.3g}/{n['impact_down']:+.3g}"
                        for n in p["impacts"]["nuisances"][:3])
        lines.append(f"- {point}: r = {p['impacts']['r']:.3g} +- {p['impacts']['r_err']:.3g}; {top}")
    if "wp_stability" in res:
        lines += ["", "WP stability (cards written as the run's at the WP and its 8 neighbours: SP closure on their "
                  "fit bins, expected limit of the first signal point):", "",
                  "| x0 | y0 | fit bins | delta (fit bins summed) | chi2 p | expected limit | backed |",
                  "|---|---|---|---|---|---|---|"]
        for row in res["wp_stability"]:
            backed = "n/a" if "backed" not in row else ("yes" if row["backed"] else "UNBACKED")
            lines.append(f"| {row['x0']:.3f} | {row['y0']:.3f} | {row.get('fit_bins', 'n/a')} | "
                         f"{f(row.get('delta'), '{:+.3f}')} | {f(row.get('pvalue'), '{:.3f}')} | "
                         f"{f(row.get('limit'))} | "
                         f"{backed} |")
    if res.get("contamination"):
        worst = [(name, max(abs(b) for b in c["bias"])) for name, c in res["contamination"].items()]
        lines += ["", "Signal contamination (r = 1 in A, C, D): largest |bias of nhat_B| per point: "
                  + ", ".join(f"{n} {v:.2%}" for n, v in worst)
                  + "; bins where it exceeds the non-closure: "
                  + (", ".join(f"{n} {[i for i, e in enumerate(c['exceeds_nonclosure']) if e]}"
                               for n, c in res["contamination"].items() if any(c["exceeds_nonclosure"])) or "none")]
    lines.append("")
    return lines


def write_validation(outdir, inputs, datasets: Mapping[str, Mapping], index: Mapping, limits: Mapping | None,
                     settings: ValidationSettings | None = None, style=None, card_kw: Mapping | None = None,
                     **overrides) -> dict:
    """:func:`validate` and its outputs: ``outdir/validation/validation.json``, the figures, and
    ``validation/combine_settings.json`` (injections and r ranges per point, read by
    ``jobs/combine_validate.sh`` so that Combine fits the same toys' settings).

    ``settings``: the validation stage's :class:`.settings.ValidationSettings` (``toys``,
    ``inject``, ``seed``, ``stability``; None: its defaults), ``overrides`` replacing its keys."""
    settings = ValidationSettings.model_validate({**(settings or ValidationSettings()).model_dump(), **overrides})
    toys, inject, seed, stability = settings.toys, settings.inject, settings.seed, settings.stability
    vdir = os.path.join(os.fspath(outdir), "validation")
    os.makedirs(vdir, exist_ok=True)
    res = validate(inputs, datasets, index, limits, toys=toys, inject=inject, seed=seed, stability=stability,
                   card_kw=card_kw)
    for plane, text in res.pop("cards", {}).items():  # the pseudo-data cards, for Combine's GoF
        os.makedirs(os.path.join(vdir, "cards", plane), exist_ok=True)
        with open(os.path.join(vdir, "cards", plane, "datacard.txt"), "w") as f:
            f.write(text)
    with open(os.path.join(vdir, "combine_settings.json"), "w") as f:
        json.dump(res["combine_settings"], f, indent=1, default=float)
    kw = {"style": style} if style is not None else {}
    res["figures"] = plot_validation(res, vdir, mt_bins=index.get("mt_bins"), **kw)
    with open(os.path.join(vdir, "validation.json"), "w") as f:
        json.dump(res, f, indent=1, default=float)
    return res


def _read_fit_tree(path: str, r_inj: float, r_range: Sequence[float] | None) -> dict:
    """Combine's ``tree_fit_sb`` (FitDiagnostics on toys) as :func:`fit_toys`'s dictionary.

    failed: ``fit_status < 0`` or a non-finite r; at_floor / at_rmax: r within 1e-4 of the range
    (``r_range``, else the smallest / largest r seen when several toys share it); minos_low/high:
    an error of 0 on that side (Combine then quotes no interval there).
    """
    with open_root(path, "the tree tree_fit_sb") as f:
        tree = f["tree_fit_sb"]
        cols = [c for c in ("r", "rErr", "rLoErr", "rHiErr", "fit_status") if c in tree.keys()]
        t = tree.arrays(cols, library="np")
    r = t["r"].astype(float)
    status = t["fit_status"].astype(float)
    if r_range is None:
        lo_, hi_ = float(np.nanmin(r)), float(np.nanmax(r))
        lo = lo_ if np.sum(np.isclose(r, lo_)) > 1 else -np.inf
        hi = hi_ if np.sum(np.isclose(r, hi_)) > 1 else np.inf
    else:
        lo, hi = r_range
    tol = 1e-4 * (hi - lo) if np.isfinite(hi - lo) else 1e-9
    lo_e, hi_e = t["rLoErr"].astype(float), t["rHiErr"].astype(float)
    return {"r": r, "r_err": t["rErr"].astype(float) if "rErr" in t else np.full(len(r), np.nan),
            "r_err_down": np.where(lo_e > 0, lo_e, np.nan), "r_err_up": np.where(hi_e > 0, hi_e, np.nan),
            "failed": (status < 0) | ~np.isfinite(r), "at_floor": r - lo < tol, "at_rmax": hi - r < tol,
            "minos_low": ~(lo_e > 0), "minos_high": ~(hi_e > 0), "fit_status": status}


def read_combine_validation(outdir) -> dict:
    """The outputs of ``jobs/combine_validate.sh DIR`` in the structure of :func:`validate`.

    Bias: ``fitDiagnostics.POINT.bias_rR.root`` (tree ``tree_fit_sb``: ``r``, ``rErr``, ``rLoErr``,
    ``rHiErr``, ``fit_status``), summarised as the in-package toys (:func:`_injection_result`):
    every toy with a fitted r counts, boundary toys (r at the ``--rMin`` / ``--rMax`` of
    ``validation/combine_settings.json``) are counted, fits with ``fit_status < 0`` are failed.
    Goodness of fit: ``higgsCombine.VP.gof.GoodnessOfFit.mH120[.SEED].root`` (tree ``limit``).

    Raises:
        InputFileError: an unreadable Combine output (names it); DatacardError: none found.
    """
    index, cards = read_index(outdir)
    sfile = os.path.join(os.fspath(outdir), "validation", "combine_settings.json")
    settings = json.load(open(sfile)) if os.path.isfile(sfile) else {"points": {}}
    out = {"source": "combine", "wp": index["wp"], "points": {}, "gof": {}, "bias_flag": BIAS_FLAG,
           "toys": settings.get("toys"), "seed": settings.get("seed")}
    for point, card in cards.items():
        known = {f"{i['r_inj']:.6g}": i for i in settings["points"].get(point, {}).get("injections", [])}
        inj = []
        for path in sorted(glob.glob(os.path.join(os.path.dirname(card), f"fitDiagnostics.{point}.bias_r*.root"))):
            key = re.search(r"bias_r([-0-9.e+]+)\.root$", path).group(1)
            s = known.get(key)
            r_inj = float(s["r_inj"]) if s else float(key)
            fit = _read_fit_tree(path, r_inj, (s["rmin"], s["rmax"]) if s else None)
            res = _injection_result(r_inj, fit, len(fit["r"]))
            res.update(label=s["label"] if s else f"r = {r_inj:g}", r_range=[s["rmin"], s["rmax"]] if s else None,
                       fit_status={str(int(k)): int(v)
                                   for k, v in zip(*np.unique(fit["fit_status"], return_counts=True))})
            inj.append(res)
        if inj:
            inj.sort(key=lambda i: i["r_inj"])
            out["points"][point] = {"injection": inj}
    vp = os.path.join(os.fspath(outdir), "validation", "cards", "VP")
    obs = os.path.join(vp, "higgsCombine.VP.gof.GoodnessOfFit.mH120.root")
    toys = [p for p in glob.glob(os.path.join(vp, "higgsCombine.VP.gof.GoodnessOfFit.mH120.*.root")) if p != obs]
    if os.path.isfile(obs) and toys:
        with open_root(obs, "the tree limit") as f:
            q_obs = float(f["limit"]["limit"].array(library="np")[0])
        with open_root(toys[0], "the tree limit") as f:
            q = f["limit"]["limit"].array(library="np").astype(float)
        out["gof"]["VP"] = {"q_obs": q_obs, "q_toys": [float(v) for v in q], "pvalue": float(np.mean(q >= q_obs)),
                            "toys": int(len(q)), "ndf": None, "masked": None}
    if not out["points"] and not out["gof"]:
        raise DatacardError(f"no Combine validation output under {outdir} (run jobs/combine_validate.sh {outdir})")
    return out


def compare_with_combine(ours: Mapping, combine: Mapping, mean_tol: float = 0.1, width_tol: float = 0.1) -> list[dict]:
    """Per point and injection: median / mean pull and width of both, and whether they agree
    (``|d median|, |d mean| <= mean_tol``, ``|width ratio - 1| <= width_tol``)."""
    theirs = {(r["point"], f"{r['r_inj']:.6g}"): r for r in injection_rows(combine)}
    rows = []
    for a in injection_rows(ours):
        b = theirs.get((a["point"], f"{a['r_inj']:.6g}"))
        if b is None:
            continue
        row = {"point": a["point"], "r_inj": a["r_inj"], "label": a["label"], "ours": a, "combine": b}
        ok = []
        for k in ("median", "mean"):
            if a[k] is not None and b[k] is not None:
                row[f"d_{k}"] = b[k] - a[k]
                ok.append(abs(row[f"d_{k}"]) <= mean_tol)
        for k in ("width", "width_q"):
            if a[k] and b[k]:
                row[f"{k}_ratio"] = b[k] / a[k]
                ok.append(abs(row[f"{k}_ratio"] - 1) <= width_tol)
        row["agree"] = bool(ok) and all(ok)
        rows.append(row)
    return rows
