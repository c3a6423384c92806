"""Binned likelihood of a parsed counting datacard (what Combine builds from the same text).

Parameters: the signal strength ``r`` (POI, multiplies processes with index <= 0), one nuisance
``theta_s`` per lnN row (unit Gaussian constraint, log-normal response), one free parameter per
distinct non-formula rateParam name, formula rateParams evaluated from their arguments, and one
Poisson-constrained yield ``theta_g`` per gmN row (last in the parameter vector).

Per column c (bin b(c), process p(c)) with card rate ``R_c``::

    nu_c = R_c * r^[p is signal] * exp(sum_s theta_s * logK_sc(theta_s)) * prod_{rateParams on c} value

with Combine's asymmetric log-normal (``logKappaForX`` in HiggsAnalysis-CombinedLimit
``interface/CombineMathFuncs.h``, v10.6.0, used by ``ProcessNormalization``; ``kdown/kup`` card
syntax, a symmetric ``k`` means ``kdown = 1/k``)::

    logK(theta) = ln kup               theta >= +0.5
                = -ln kdown            theta <= -0.5
                = avg + halfdiff * h(2 theta)   |theta| < 0.5,
    avg = (ln kup - ln kdown) / 2,  halfdiff = (ln kup + ln kdown) / 2,
    h(x) = (3 x^5 - 10 x^3 + 15 x) / 8

(h(+-1) = +-1, h'(+-1) = h''(+-1) = 0: the yield factor ``exp(theta logK(theta))`` is smooth).
Like ``ProcessNormalization::addAsymmLogNormal``, a pair with ``|kdown * kup - 1| < 1e-5`` is
symmetric (``kappa = kup``), where the formula reduces to ``kup^theta`` everywhere.

A gmN row ``name gmN N a_1 a_2 ...`` (Combine's ``gmN``, ``ModelTools.py``) replaces the rate of
each column it acts on by ``a_c * theta_g``: ``theta_g`` has a Poisson constraint with global
observable ``N`` (``N = 0`` allowed) and Combine's range ``[minExp, maxExp]`` (:func:`gmn_range`).

::

    -ln L = sum_b [nu_b - n_b + n_b ln(n_b / nu_b)] + sum_s (theta_s - g_s)^2 / 2
            + sum_g [theta_g - N_g + N_g ln(N_g / theta_g)]

(saturated-model normalisation; ``g_s`` and ``N_g`` global observables, the card's values (0 and
N) for data, the fitted values for the Asimov set, as Combine's ``asimovDatasetWithFit``). Free
rateParams are fitted as ``f = value / initial``. The analytic gradient is given to iminuit
(formula derivatives by central differences).

Supported systematic types: lnN, gmN. Others raise :class:`DatacardError` naming the row.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
from dataclasses import dataclass, field

import numpy as np
from iminuit import Minuit

from svjscout.core.exceptions import DatacardError

from .parser import Datacard, check_datacard, formula_ok

log = logging.getLogger(__name__)

_FUNCS = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "pow": np.power, "min": min, "max": max}
DEFAULT_RANGE = (0.0, 100.0)  # relative to the initial value, for rateParams without a range
#: Range of every lnN nuisance in a fit (units of its prior width), Combine's: text2workspace.py
#: creates each lnN nuisance as ``name[-7,7]`` (``r = "-4,4" if pdf == "shape" else "-7,7"`` in
#: ``python/ModelTools.py``, ``doNuisances``, HiggsAnalysis-CombinedLimit v10.6.0).
THETA_RANGE = (-7.0, 7.0)
#: Half-width of the region where Combine smoothly interpolates an asymmetric lnN (logKappaForX).
SMOOTH_REGION = 0.5


def _tmath_poisson(x: float, par: float) -> float:
    """ROOT's ``TMath::Poisson(x, par)`` (continuous in x), used by Combine to size gmN ranges."""
    if x < 0:
        return 0.0
    if x == 0:
        return float(np.exp(-par))
    if par <= 0:
        return 0.0
    return float(np.exp(x * np.log(par) - par - math.lgamma(x + 1.0)))


def gmn_range(n_obs: int) -> tuple[float, float]:
    """Range ``[minExp, maxExp]`` of a gmN yield with observed count ``N``, as text2workspace.py
    builds it (``python/ModelTools.py``, ``doNuisances``, ``pdf == "gmN"``, v10.6.0): from
    ``N + 1``, shrink by 0.8 / grow by 1.2 until ``Poisson(N; mean) < 1e-12``."""
    lo = n_obs + 1.0 if n_obs > 0 else 0.0
    while _tmath_poisson(n_obs, lo) > 1e-12 and lo > 0:
        lo *= 0.8
    hi = n_obs + 1.0
    while _tmath_poisson(n_obs, hi) > 1e-12:
        hi *= 1.2
    return lo, hi


def log_kappa(theta: np.ndarray, log_hi: np.ndarray, log_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Combine's ``logKappaForX`` and the derivative of ``theta * logKappaForX(theta)``.

    Args:
        theta: nuisance values, broadcastable against the kappas (e.g. ``(S, 1)``).
        log_hi: ``ln kup``.
        log_lo: ``-ln kdown`` (Combine's ``logKlo``).

    Returns:
        ``(logK, d[theta logK]/d theta)``, arrays of the broadcast shape.
    """
    theta = np.asarray(theta, float)
    outer = np.where(theta >= 0, log_hi, log_lo)
    avg = 0.5 * (log_hi + log_lo)
    halfdiff = 0.5 * (log_hi - log_lo)
    x = 2.0 * theta
    x2 = x * x
    h = 0.125 * x * (x2 * (3.0 * x2 - 10.0) + 15.0)
    dh = 1.875 * (x2 - 1.0) ** 2  # h'(x) = 15 (x^2 - 1)^2 / 8
    inner = avg + halfdiff * h
    smooth = np.abs(theta) < SMOOTH_REGION
    logk = np.where(smooth, inner, outer)
    dlog = np.where(smooth, inner + theta * halfdiff * dh * 2.0, outer)
    return logk, dlog


def _compile(formula: str, name: str):
    if not formula_ok(formula):
        raise DatacardError(f"rateParam '{name}': unsupported formula '{formula}'")
    expr = re.sub(r"@(\d+)", r"a[\1]", formula)
    try:
        fn = eval("lambda a: " + expr, {"__builtins__": {}, **_FUNCS})  # noqa: S307 (checked characters)
        with np.errstate(all="ignore"):
            float(fn([1.0] * (1 + max([int(i) for i in re.findall(r"@(\d+)", formula)] or [0]))))
    except Exception as exc:
        raise DatacardError(f"rateParam '{name}': cannot evaluate formula '{formula}': {exc}") from exc
    return fn


@dataclass
class Model:
    """Arrays describing the likelihood of one card (C columns, B bins, S lnN, F free rateParams,
    G gmN rows). Parameter vector ``x = [r, theta_1..S, f_1..F, theta_g 1..G]``."""

    bins: list[str]
    obs: np.ndarray  # (B,)
    col_bin: np.ndarray  # (C,) int
    rate: np.ndarray  # (C,) card rate; for a column with a gmN, its alpha (the yield is alpha * theta_g)
    is_sig: np.ndarray  # (C,) bool
    k_up: np.ndarray  # (S, C) ln kup
    k_dn: np.ndarray  # (S, C) -ln kdown
    syst_names: list[str]
    free_names: list[str]
    free_init: np.ndarray  # (F,) scale s_j (initial value, 1 if <= 0)
    free_bounds: list[tuple[float, float]]  # in units of f
    param_names: list[str]  # (P,) free first, then formula
    formulas: list[tuple[str, object, list[int]]]  # (name, fn, arg indices into param_names)
    apply: np.ndarray  # (P, C) number of times param p multiplies column c
    gmn_names: list[str] = field(default_factory=list)  # (G,)
    gmn_n: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (G,) observed count N (global observable)
    gmn_col: np.ndarray | None = None  # (C,) int: the gmN acting on a column, -1 for none
    gmn_bounds: list[tuple[float, float]] = field(default_factory=list)  # Combine's [minExp, maxExp]

    def __post_init__(self):
        if self.gmn_col is None:
            self.gmn_col = np.full(len(self.rate), -1, dtype=int)
        self.gmn_n = np.asarray(self.gmn_n, float)

    @property
    def free_steps(self) -> np.ndarray:
        """Minuit's first step for each free rateParam (in units of its initial value): the
        relative Poisson precision of the yield it scales, ``1 / sqrt(initial x rate it multiplies)``."""
        if getattr(self, "_steps", None) is None:
            F = len(self.free_names)
            scaled = self.apply[:F] @ self.rate if F else np.zeros(0)
            self._steps = np.clip(1.0 / np.sqrt(np.maximum(scaled * self.free_init, 1.0)), 1e-7, 0.5)
        return self._steps

    @property
    def names(self) -> list[str]:
        return ["r", *self.syst_names, *self.free_names, *self.gmn_names]

    @property
    def nS(self) -> int:
        return len(self.syst_names)

    @property
    def nG(self) -> int:
        return len(self.gmn_names)

    @property
    def gmn_start(self) -> np.ndarray:
        """First value of each gmN yield in a fit: N (its constraint's optimum), 1 for N = 0."""
        return np.where(self.gmn_n > 0, self.gmn_n, 1.0)

    def values(self, f: np.ndarray, jac: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """RateParam values ``(P,)`` and (if ``jac``) Jacobian ``(P, F)`` wrt the fitted ``f``
        (``f`` may carry the gmN yields behind the F rateParams: they are ignored)."""
        F = len(self.free_names)
        P = len(self.param_names)
        f = np.asarray(f, float)[:F]
        v = np.empty(P)
        v[:F] = self.free_init * f
        J = None
        if jac:
            J = np.zeros((P, F))
            J[np.arange(F), np.arange(F)] = self.free_init
        for k, (_name, fn, idx) in enumerate(self.formulas):
            p = F + k
            a = [v[i] for i in idx]
            v[p] = fn(a)
            if jac:
                for m, i in enumerate(idx):
                    h = 1e-6 * max(abs(a[m]), 1e-12)
                    ap, am = list(a), list(a)
                    ap[m] += h
                    am[m] -= h
                    J[p] += (fn(ap) - fn(am)) / (2 * h) * J[i]
        return v, J

    def _parts(self, x: np.ndarray, jac: bool = True):
        """``(nu0, nu, nub, dlog, v, J, nu_nog)``: ``nu_nog`` the signal-unscaled yields without
        the gmN factor, ``dlog`` (S, C) the derivative of the lnN exponent wrt each theta."""
        S, F = self.nS, len(self.free_names)
        mu, th, f, g = x[0], x[1 : 1 + S], x[1 + S : 1 + S + F], x[1 + S + F :]
        C = len(self.rate)
        if S:
            logk, dlog = log_kappa(th[:, None], self.k_up, self.k_dn)
            L = np.sum(th[:, None] * logk, axis=0)
        else:
            dlog, L = np.zeros((0, C)), 0.0
        v, J = self.values(f, jac)
        logv = np.log(np.clip(v, 1e-300, None))
        logm = self.apply.T @ logv if len(v) else 0.0
        # one exponent, clipped: far-out trial points of a fit give huge but finite yields
        nu_nog = self.rate * np.exp(np.clip(L + logm, -600.0, 600.0))
        nu0 = nu_nog * np.where(self.gmn_col >= 0, g[self.gmn_col], 1.0) if self.nG else nu_nog
        nu = np.where(self.is_sig, mu * nu0, nu0)
        nub = np.bincount(self.col_bin, weights=nu, minlength=len(self.bins))
        return nu0, nu, nub, dlog, v, J, nu_nog

    def expected(self, x: np.ndarray, jac: bool = True):
        """Per-column yields (with and without r), per-bin yields and intermediates:
        ``(nu0, nu, nub, dlog, v, J)``, ``dlog`` (S, C) the derivative of the lnN exponent."""
        return self._parts(x, jac)[:6]

    def _gmn_glob(self, gglob) -> np.ndarray:
        return self.gmn_n if gglob is None else np.asarray(gglob, float)

    def nll(self, x: np.ndarray, n: np.ndarray, glob: np.ndarray, mask: np.ndarray | None = None,
            gglob: np.ndarray | None = None) -> float:
        """``-ln L`` (saturated normalisation); ``mask`` (B,) bool keeps only those bins (e.g. B masked);
        ``gglob`` the gmN global observables (default: the card's N)."""
        S, F = self.nS, len(self.free_names)
        _, _, nub, *_ = self.expected(x, jac=False)
        nub = np.clip(nub, 1e-300, None)
        if mask is not None:
            nub, n = nub[mask], n[mask]
        pos = n > 0
        val = np.sum(nub - n) + np.sum(n[pos] * np.log(n[pos] / nub[pos]))
        val += 0.5 * np.sum((x[1 : 1 + S] - glob) ** 2)
        if self.nG:
            g = np.clip(x[1 + S + F :], 1e-300, None)
            N = self._gmn_glob(gglob)
            val += np.sum(g - N) + np.sum(np.where(N > 0, N * np.log(np.where(N > 0, N, 1.0) / g), 0.0))
        return float(val)

    def grad(self, x: np.ndarray, n: np.ndarray, glob: np.ndarray, mask: np.ndarray | None = None,
             gglob: np.ndarray | None = None) -> np.ndarray:
        S, F = self.nS, len(self.free_names)
        nu0, nu, nub, dlog, v, J, nu_nog = self._parts(x)
        gb = 1.0 - n / np.clip(nub, 1e-300, None)
        if mask is not None:
            gb = np.where(mask, gb, 0.0)
        gc = gb[self.col_bin]
        w = gc * nu
        g = np.empty_like(x, dtype=float)
        g[0] = np.sum(gc * nu0 * self.is_sig)
        if S:
            g[1 : 1 + S] = dlog @ w + (x[1 : 1 + S] - glob)
        if len(v):
            g[1 + S : 1 + S + F] = ((self.apply @ w) / np.clip(v, 1e-300, None)) @ J
        if self.nG:
            wg = gc * np.where(self.is_sig, x[0] * nu_nog, nu_nog)
            has = self.gmn_col >= 0
            dg = np.bincount(self.gmn_col[has], weights=wg[has], minlength=self.nG)
            N = self._gmn_glob(gglob)
            g[1 + S + F :] = dg + 1.0 - N / np.clip(x[1 + S + F :], 1e-300, None)
        return g


def build_model(card: Datacard) -> Model:
    """Likelihood arrays from a parsed card (validated first).

    Raises:
        DatacardError: invalid card, or a feature the quick fit does not support (names it).
    """
    prob = check_datacard(card)
    if prob:
        raise DatacardError(f"datacard {card.path} is invalid: " + "; ".join(prob))
    bins = list(card.bins)
    obs = np.array([float(o) for o in card.observation])
    col_bin = np.array([bins.index(b) for b in card.col_bins], dtype=int)
    rate = np.array([float(r) for r in card.col_rates])
    is_sig = np.array([int(i) <= 0 for i in card.col_ids])
    C = len(rate)
    for s in card.systematics:
        if s.type not in ("lnN", "gmN"):
            raise DatacardError(f"systematic '{s.name}' of type {s.type} is not supported by the quick limits "
                                "(lnN and gmN only)")
    syst = [s for s in card.systematics if s.type == "lnN"]
    k_up = np.zeros((len(syst), C))
    k_dn = np.zeros((len(syst), C))
    for i, s in enumerate(syst):
        for c, val in enumerate(s.values):
            if val == "-":
                continue
            ks = [float(t) for t in val.split("/")]
            if len(ks) == 1 or abs(ks[0] * ks[1] - 1.0) < 1e-5:  # symmetric (as addAsymmLogNormal)
                k_up[i, c] = k_dn[i, c] = np.log(ks[-1])
            else:
                k_dn[i, c] = -np.log(ks[0])
                k_up[i, c] = np.log(ks[1])
    gmn = [s for s in card.systematics if s.type == "gmN"]
    gmn_col = np.full(C, -1, dtype=int)
    gmn_n = []
    for j, s in enumerate(gmn):
        gmn_n.append(int(s.extra[0]))
        for c, val in enumerate(s.values):
            if val == "-" or float(val) == 0.0:
                continue
            if gmn_col[c] >= 0:
                raise DatacardError(f"more than one gmN for process '{card.col_procs[c]}' in bin '{card.col_bins[c]}' "
                                    f"('{gmn[gmn_col[c]].name}' and '{s.name}'); Combine refuses that too")
            gmn_col[c] = j
            rate[c] = float(val)  # the yield is alpha * theta_g (the card's rate is alpha * N)
    free_names, free_init, bounds, formulas_rp = [], [], [], {}
    for rp in card.rate_params:
        if rp.is_formula:
            formulas_rp.setdefault(rp.name, rp)
        elif rp.name not in free_names:
            free_names.append(rp.name)
            s = rp.value if rp.value and rp.value > 0 else 1.0
            free_init.append(s)
            lo, hi = rp.range if rp.range else (DEFAULT_RANGE[0] * s, DEFAULT_RANGE[1] * s)
            bounds.append((max(lo / s, 1e-9), hi / s))
    param_names = list(free_names)
    formulas = []
    pending = dict(formulas_rp)
    while pending:
        progressed = False
        for name, rp in list(pending.items()):
            if all(a in param_names for a in rp.args):
                formulas.append((name, _compile(rp.formula, name), [param_names.index(a) for a in rp.args]))
                param_names.append(name)
                del pending[name]
                progressed = True
        if not progressed:
            raise DatacardError(f"rateParam formula(s) {sorted(pending)} depend on unknown or cyclic arguments")
    apply = np.zeros((len(param_names), C))
    for rp in card.rate_params:
        p = param_names.index(rp.name)
        for c in range(C):
            if fnmatch.fnmatchcase(card.col_bins[c], rp.bin) and fnmatch.fnmatchcase(card.col_procs[c], rp.process):
                apply[p, c] += 1
    return Model(bins, obs, col_bin, rate, is_sig, k_up, k_dn, [s.name for s in syst], free_names,
                 np.array(free_init, dtype=float), bounds, param_names, formulas, apply,
                 gmn_names=[s.name for s in gmn], gmn_n=np.array(gmn_n, dtype=float), gmn_col=gmn_col,
                 gmn_bounds=[gmn_range(n) for n in gmn_n])


class Fitter:
    """Profile-likelihood fits of a :class:`Model` with iminuit (analytic gradient)."""

    def __init__(self, model: Model, n: np.ndarray | None = None, glob: np.ndarray | None = None,
                 r_max: float | None = None, r_min: float = 0.0, mask: np.ndarray | None = None,
                 r_step: float | None = None, strategy: int = 0, gglob: np.ndarray | None = None):
        self.model = model
        self.n = model.obs if n is None else np.asarray(n, float)
        self.glob = np.zeros(model.nS) if glob is None else np.asarray(glob, float)
        self.gglob = model.gmn_n.copy() if gglob is None else np.asarray(gglob, float)  # gmN global observables
        self.x0 = np.concatenate([[1.0], np.zeros(model.nS), np.ones(len(model.free_names)), model.gmn_start])
        self.r_max = r_max
        self.r_min = r_min
        self.mask = None if mask is None else np.asarray(mask, bool)
        self.r_step = r_step  # Minuit's first step in r (default 10 % of the start value)
        self.strategy = strategy
        self.nfits = 0
        self.last = None  # the Minuit object of the last fit (errors, validity)

    def fit(self, r: float | None = None, start: np.ndarray | None = None, fixed: dict[int, float] | None = None,
            hesse: bool = False) -> tuple[float, np.ndarray]:
        """Minimise -ln L with r fixed (``r`` given) or free in ``[r_min, r_max]``.

        ``fixed``: parameter index -> value, held fixed (e.g. a nuisance for an impact);
        ``hesse``: run HESSE after MIGRAD (``self.last.errors`` then holds the parabolic errors).

        Returns:
            ``(nll_min, x_best)``; x = ``[r, theta..., f...]``.
        """
        m = self.model
        x0 = np.array(self.x0 if start is None else start, dtype=float)
        if r is not None:
            x0[0] = r
        for i, v in (fixed or {}).items():
            x0[i] = v
        if len(x0) == 1 and r is not None:
            return m.nll(x0, self.n, self.glob, self.mask), x0
        fcn = lambda x: m.nll(np.asarray(x), self.n, self.glob, self.mask, self.gglob)  # noqa: E731
        grd = lambda x: m.grad(np.asarray(x), self.n, self.glob, self.mask, self.gglob)  # noqa: E731
        mi = Minuit(fcn, x0, grad=grd, name=m.names)
        mi.errordef = Minuit.LIKELIHOOD
        mi.strategy = self.strategy
        mi.print_level = 0
        mi.limits["r"] = (self.r_min, self.r_max)
        for j, name in enumerate(m.free_names):
            mi.limits[name] = m.free_bounds[j]
            mi.errors[name] = m.free_steps[j]
            mi.values[name] = float(np.clip(x0[1 + m.nS + j], *m.free_bounds[j]))
        for s in m.syst_names:
            mi.errors[s] = 0.5
            mi.limits[s] = THETA_RANGE
        nf = 1 + m.nS + len(m.free_names)
        for j, name in enumerate(m.gmn_names):
            mi.limits[name] = m.gmn_bounds[j]
            mi.errors[name] = 0.5 * np.sqrt(max(m.gmn_n[j], 1.0))
            mi.values[name] = float(np.clip(x0[nf + j], *m.gmn_bounds[j]))
        mi.errors["r"] = self.r_step if self.r_step else max(abs(x0[0]) * 0.1, 0.01)
        if r is not None:
            mi.fixed["r"] = True
        for i in fixed or {}:
            mi.fixed[m.names[i]] = True
        mi.migrad()
        self.nfits += 1
        if not mi.valid:
            mi.strategy = max(1, self.strategy)
            mi.migrad(iterate=10)
            if not mi.valid:
                log.debug("fit not converged (r=%s): %s", r, mi.fmin)
        if hesse:  # parabolic errors without the nuisances' range (a bounded parameter's are distorted)
            for s in m.syst_names:
                mi.limits[s] = (-np.inf, np.inf)
            mi.hesse()
        self.last = mi
        x = np.array(mi.values)
        return float(mi.fval), x
