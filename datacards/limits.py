"""Quick asymptotic CLs upper limits on the signal strength r from a parsed datacard.

Combine conventions (``combine -M AsymptoticLimits``), formulas of Cowan, Cranmer, Gross,
Vitells, EPJC 71 (2011) 1554:

* test statistic ``q~_r = 2 [NLL(r, profiled) - NLL(r_hat, profiled)]`` for ``r_hat <= r``, else 0,
  with ``r_hat`` fitted in ``r >= 0`` (so ``r_hat < 0`` uses ``r = 0`` as reference: q~);
* ``q_A(r)``: the same on the Asimov data set built from the background-only fit to the observed
  data (nuisances and global observables at their post-fit values), where ``r_hat = 0``;
* ``CLs = CLs+b / CLb`` with, for ``q <= q_A``, ``CLs+b = 1 - Phi(sqrt q)``,
  ``CLb = Phi(sqrt q_A - sqrt q)``, and for ``q > q_A``,
  ``CLs+b = 1 - Phi((q + q_A) / (2 sqrt q_A))``, ``CLb = 1 - Phi((q - q_A) / (2 sqrt q_A))``;
  observed limit: ``CLs(r) = 0.05``;
* expected quantile ``p`` (0.025, 0.16, 0.5, 0.84, 0.975, as Combine), ``N = Phi^-1(p)``:
  each quantile solves ``sqrt(q_A(r)) = Phi^-1(1 - 0.05 p) + N`` (``band="crossing"``, default,
  as Combine's default ``--newExpected 1``; CCGV eq. 88 without assuming q_A quadratic in r), or
  ``sigma = r_median / 1.96`` and ``r_p = sigma (Phi^-1(1 - 0.05 p) + N)``
  (``band="median_sigma"``, Combine's ``--newExpected 0``).

Output per point: ``{"exp-2", "exp-1", "exp0", "exp+1", "exp+2", "obs", "capped_by_combine"}`` (obs
None for Asimov cards). Every fit uses :class:`.likelihood.Fitter`.

Combine's band cap: with ``--newExpected 1`` (its default) ``AsymptoticLimits::runLimitExpected``
(``src/AsymptoticLimits.cc``, v10.6.0) searches the +1 sigma crossing by bisection in
``[r(exp0), median + 2 sigma]`` and the +2 sigma one in ``[r(exp+1), median + 4 sigma]``, with
``sigma = median / Phi^-1(0.975)``: at most 2.020 and 3.041 times the median. Where the true
crossing lies beyond, Combine reports (about) the bracket's end. ``capped_by_combine`` lists the
quantiles where that happens (:func:`combine_band_caps`): there Combine's band is not the
asymptotic one, and the band is far from Gaussian anyway; it should come from toys (HybridNew).

Example:
    >>> # lim = quick_limits("out/datacards/index.json")
    >>> # lim["svj_mz2000_rinv0.3"]["exp0"]
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

import numpy as np
from scipy import optimize, stats

from svjscout.core.exceptions import DatacardError

from .likelihood import Fitter, Model, build_model
from .parser import Datacard, parse_datacard

log = logging.getLogger(__name__)

QUANTILES = {"exp-2": 0.025, "exp-1": 0.16, "exp0": 0.5, "exp+1": 0.84, "exp+2": 0.975}
ALPHA = 0.05


def combine_band_caps(median: float, alpha: float = ALPHA) -> dict[str, float]:
    """Ends of Combine's bisection brackets for the upper band (``AsymptoticLimits.cc``,
    ``runLimitExpected``: ``median + 2 sigma`` for exp+1, ``median + 4 sigma`` for exp+2 with
    ``sigma = median / Phi^-1(1 - alpha / 2)``)."""
    sigma = median / float(stats.norm.isf(0.5 * alpha))
    return {"exp+1": median + 2.0 * sigma, "exp+2": median + 4.0 * sigma}


def capped_quantiles(lim: Mapping, alpha: float = ALPHA) -> list[str]:
    """Quantiles of ``lim`` (quick limits) at or beyond Combine's bracket end (:func:`combine_band_caps`)."""
    med = lim.get("exp0")
    if med is None or not np.isfinite(med) or med <= 0:
        return []
    caps = combine_band_caps(float(med), alpha)
    return [k for k, cap in caps.items() if lim.get(k) is not None and float(lim[k]) >= cap]


def cls_asymptotic(q: float, qa: float) -> float:
    """Asymptotic CLs for the q~ statistic given observed ``q`` and Asimov ``q_A`` (both >= 0)."""
    q, qa = max(q, 0.0), max(qa, 1e-300)
    if q <= qa:
        clsb = stats.norm.sf(np.sqrt(q))
        clb = stats.norm.cdf(np.sqrt(qa) - np.sqrt(q))
    else:
        clsb = stats.norm.sf((q + qa) / (2 * np.sqrt(qa)))
        clb = stats.norm.sf((q - qa) / (2 * np.sqrt(qa)))
    return float(clsb / clb) if clb > 0 else 1.0


def expected_target(quantile: float, alpha: float = ALPHA) -> float:
    """``sqrt(q_A)`` at the expected limit of a quantile: ``Phi^-1(1 - alpha p) + Phi^-1(p)``."""
    return float(stats.norm.isf(alpha * quantile) + stats.norm.ppf(quantile))


class AsymptoticCLs:
    """Asymptotic CLs limits for one card.

    Args:
        card: parsed datacard.
        observed: compute the observed limit (default: unless the header says Asimov).
        rtol: relative tolerance on the limits.
        band: "crossing" (one q_A crossing per quantile, Combine's default) or "median_sigma"
            (bands from sigma at the median, Combine's ``--newExpected 0``).
    """

    def __init__(self, card: Datacard, observed: bool | None = None, rtol: float = 1e-4, band: str = "crossing"):
        if band not in ("crossing", "median_sigma"):
            raise DatacardError(f"band must be 'crossing' or 'median_sigma', got '{band}'")
        self.band = band
        self.card = card
        self.model: Model = build_model(card)
        if observed is None:
            observed = not any("background-only Asimov" in c for c in card.comments)
        self.observed = observed
        self.rtol = rtol
        m = self.model
        # MIGRAD strategy 1 (a Hessian at the start, as Combine's default --cminDefaultMinimizerStrategy 1):
        # with strategy 0 the ABCD cards' fits (rateParams fixed to 1e-3 by 1e6 events, loose lnN on B)
        # stop with a wrong approximate covariance, q_A off by 10 % and bands off by up to 160 %
        self.obs_fit = Fitter(m, strategy=1)
        self.nll_b, self.x_b = self.obs_fit.fit(r=0.0)
        nu0, nu, nub, *_ = m.expected(self.x_b)
        glob = self.x_b[1 : 1 + m.nS].copy()
        # gmN global observables of the Asimov set: the fitted yields (Combine's asimovDatasetWithFit
        # sets a RooPoisson's global observable to its nuisance's post-fit value)
        gglob = self.x_b[len(self.x_b) - m.nG :].copy() if m.nG else None
        self.asimov = Fitter(m, n=nub, glob=glob, gglob=gglob, strategy=1)
        self.nll_a0 = m.nll(self.x_b, nub, glob, gglob=gglob)
        self._qa: dict[float, float] = {}
        self._xa: dict[float, np.ndarray] = {}  # fitted parameters per r (starts of later fits)
        self._start_a = self.x_b.copy()
        s = np.bincount(m.col_bin, weights=np.where(m.is_sig, nu0, 0.0), minlength=len(m.bins))
        b = np.clip(nub, 1e-9, None)
        z2 = np.sum(s**2 / b)
        if not z2 > 0:
            raise DatacardError(f"datacard {card.path}: the signal has no expected events, no limit can be set")
        self.r_scale = 1.0 / np.sqrt(z2)  # r giving ~1 sigma without systematics

    def q_asimov(self, r: float) -> float:
        """``q_A(r)`` on the background-only Asimov set (profiled)."""
        key = float(r)
        if key not in self._qa:
            start = self._start_a
            if self._xa:  # the fit of the nearest r done so far (profiled nuisances move smoothly with r)
                start = self._xa[min(self._xa, key=lambda rr: abs(rr - key))]
            nll, x = self.asimov.fit(r=r, start=start)
            self._qa[key] = max(0.0, 2.0 * (nll - self.nll_a0))
            self._xa[key] = x
        return self._qa[key]

    def expected(self) -> dict[str, float]:
        """Expected limits ``{"exp-2": .., ..., "exp+2": ..}``."""
        out = {}
        median = self._crossing(expected_target(0.5))
        sigma = median / expected_target(0.5)
        for key, p in QUANTILES.items():
            if p == 0.5:
                out[key] = median
            elif self.band == "median_sigma":
                out[key] = float(sigma * expected_target(p))
            else:
                out[key] = self._crossing(expected_target(p))
        return out

    def _crossing(self, t: float) -> float:
        """r where ``sqrt(q_A(r)) = t`` (q_A increases with r)."""
        f = lambda r: np.sqrt(self.q_asimov(r)) - t  # noqa: E731
        # first guess from the crossings found so far (sqrt(q_A) is close to linear in r)
        done = [(r, np.sqrt(q)) for r, q in self._qa.items() if q > 0]
        if done:
            r0, z0 = min(done, key=lambda rz: abs(rz[1] - t))
            guess = r0 * t / z0
        else:
            guess = t * self.r_scale
        lo, hi = self._bracket2(f, guess)
        return float(optimize.brentq(f, lo, hi, rtol=self.rtol, xtol=1e-12 * hi))

    def _bracket2(self, f, guess: float, step: float = 1.25) -> tuple[float, float]:
        """``(lo, hi)`` with ``f(lo) < 0 < f(hi)``, searching geometrically around ``guess``."""
        g = float(guess)
        if f(g) > 0:
            hi = g
            for _ in range(80):
                lo = hi / step
                if f(lo) < 0:
                    return lo, hi
                hi = lo
            return 0.0, hi  # f(0) < 0 for both uses (q_A(0) = 0; CLs(0) = 1)
        lo = g
        for _ in range(120):
            hi = lo * step
            if f(hi) > 0:
                return lo, hi
            lo = hi
        raise DatacardError(f"datacard {self.card.path}: no limit found below r = {hi:g}")

    def observed_limit(self) -> float:
        """Observed limit: ``CLs(r) = 0.05`` with ``q~_r`` on the card's observation."""
        fit = self.obs_fit
        start = self.x_b.copy()
        start[0] = self.r_scale  # not on the r >= 0 boundary
        nll_hat, x_hat = fit.fit(r=None, start=start)
        if nll_hat > self.nll_b:
            nll_hat, x_hat = self.nll_b, self.x_b
        r_hat = float(x_hat[0])

        def g(r):
            if r <= r_hat:
                return 1.0 - ALPHA
            nll, _ = fit.fit(r=r, start=x_hat)
            q = max(0.0, 2.0 * (nll - nll_hat))
            return cls_asymptotic(q, self.q_asimov(r)) - ALPHA

        f = lambda r: -g(r)  # noqa: E731  (positive beyond the limit)
        crossed = [r for r, q in self._qa.items() if q > 0]  # r values probed for the expected limits
        guess = max(r_hat, 0.0) + (float(np.median(crossed)) if crossed else 2.0 * self.r_scale)
        lo, hi = self._bracket2(f, guess)
        lo = max(lo, r_hat)
        return float(optimize.brentq(f, lo, hi, rtol=self.rtol, xtol=1e-12 * hi))

    def limits(self) -> dict:
        """Expected quantiles, the observed limit (None if not computed) and ``capped_by_combine``:
        the quantiles where Combine's bisection bracket would cap its band (``band="crossing"``)."""
        out: dict = dict(self.expected())
        out["obs"] = self.observed_limit() if self.observed else None
        out["capped_by_combine"] = capped_quantiles(out) if self.band == "crossing" else []
        return out


def card_limits(card: Datacard | str | os.PathLike, observed: bool | None = None,
                band: str = "crossing") -> dict[str, float | None]:
    """Limits of one card (path or parsed); ``band`` as in :class:`AsymptoticCLs`."""
    c = card if isinstance(card, Datacard) else parse_datacard(card)
    calc = AsymptoticCLs(c, observed=observed, band=band)
    out = calc.limits()
    log.info("%s: %s (%d + %d fits)", c.path,
             {k: (None if v is None else round(v, 4)) for k, v in out.items() if k != "capped_by_combine"},
             calc.obs_fit.nfits, calc.asimov.nfits)
    if out["capped_by_combine"]:
        log.warning("%s: Combine's AsymptoticLimits caps %s at %s x the median (its bisection bracket): the "
                    "band there is not Gaussian, take it from toys (HybridNew)", c.path,
                    "/".join(out["capped_by_combine"]),
                    "/".join(f"{combine_band_caps(1.0)[k]:.3f}" for k in out["capped_by_combine"]))
    return out


def _cards_from(index_or_cards_dir) -> dict[str, str]:
    """``{point: card path}`` of the cards listed in the current ``index.json`` (or one card file).

    Only cards listed in ``index.json`` are read: a folder re-used by several runs may hold cards of
    points a later run no longer writes, and those must never be reported as current.
    """
    if isinstance(index_or_cards_dir, Mapping):
        idx = index_or_cards_dir
        base = idx["cards_dir"]
        return {p: os.path.join(base, meta["card"]) for p, meta in idx["points"].items()}
    path = os.fspath(index_or_cards_dir)
    if os.path.isfile(path) and path.endswith(".json"):
        return {p: card for p, card in read_index(path)[1].items()}
    if os.path.isfile(path):
        return {os.path.basename(os.path.dirname(os.path.abspath(path))): path}
    return read_index(path)[1]


def index_verdict(index_or_cards_dir) -> dict:
    """``{"backed", "verdict"}`` of the cards' ``index.json`` (the statistics guard's verdict on the
    working point, which every limits.json entry carries), or ``{}`` where the index has none (or
    for a single card without an index)."""
    idx = index_or_cards_dir if isinstance(index_or_cards_dir, Mapping) else None
    if idx is None:
        path = os.fspath(index_or_cards_dir)
        if os.path.isfile(path) and not path.endswith(".json"):
            path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "index.json")
            if not os.path.isfile(path):
                return {}
        try:
            idx = read_index(path)[0]
        except DatacardError:
            return {}
    # pseudo-data cards: every limits.json entry says so (its "obs" is not an observed limit on data)
    pseudo = {"observation": idx["observation"]} if "pseudo_data" in idx else {}
    return {k: idx[k] for k in ("backed", "verdict") if k in idx} | pseudo


def read_index(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """(index, {point: card path}) from ``index.json``, ``DIR/datacards`` or ``DIR``.

    Raises:
        DatacardError: no ``index.json`` (the message says which folders were searched), an
            unreadable one, or a listed card that is missing.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        tried = [os.path.join(path, "datacards", "index.json"), os.path.join(path, "index.json")]
        found = [t for t in tried if os.path.isfile(t)]
        if not found:
            raise DatacardError(f"no datacards index.json under '{path}' (tried {tried}); only cards listed in the "
                                "index written by `svjscout datacards` or `svjscout run` are read")
        path = found[0]
    try:
        with open(path) as f:
            idx = json.load(f)
        points = idx["points"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatacardError(f"{path}: not a datacards index.json ({type(err).__name__}: {err})") from err
    base = os.path.dirname(os.path.abspath(path))
    cards = {p: os.path.join(base, meta["card"]) for p, meta in points.items()}
    missing = [c for c in cards.values() if not os.path.isfile(c)]
    if missing:
        raise DatacardError(f"{path}: lists cards that do not exist: {missing}")
    return idx, cards


def quick_limits(index_or_cards_dir, observed: bool | None = None, out: str | os.PathLike | None = None,
                 band: str = "crossing", on_error: str = "skip") -> dict:
    """Asymptotic CLs limits for every card.

    Args:
        index_or_cards_dir: the index dict returned by :func:`.writer.write_datacards`, a path to
            ``index.json``, the output DIR, ``DIR/datacards`` or a single card.
        observed: compute observed limits (default: for cards whose observation is not Asimov).
        out: optional path of ``limits.json`` to write.
        band: "crossing" (default, as Combine) or "median_sigma" (Combine ``--newExpected 0``).
        on_error: "skip" (default: a card without a limit, e.g. no signal events, is logged as an
            error naming the point and left out) or "raise".

    Returns:
        ``{point: {"exp-2", "exp-1", "exp0", "exp+1", "exp+2", "obs"}}`` (limits on r; obs may be None).
    """
    cards = _cards_from(index_or_cards_dir)
    verdict = index_verdict(index_or_cards_dir)
    res = {}
    if on_error not in ("skip", "raise"):
        raise DatacardError(f"on_error must be 'skip' or 'raise', got '{on_error}'")
    for point, path in cards.items():
        try:
            res[point] = card_limits(path, observed=observed, band=band)
        except DatacardError as exc:
            if on_error == "raise":
                raise
            log.error("no limit for point %s (%s): %s", point, path, exc)
    for entry in res.values():
        entry.update(verdict)
    if out is not None:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
    return res
