"""Binned likelihood of a parsed counting datacard (what Combine builds from the same text).

Parameters: the signal strength ``r`` (POI, multiplies processes with index <= 0), one nuisance
``theta_s`` per lnN row (unit Gaussian constraint, log-normal response), one free parameter per
distinct non-formula rateParam name, and formula rateParams evaluated from their arguments.

Per column c (bin b(c), process p(c)) with card rate ``R_c``::

    nu_c = R_c * r^[p is signal] * prod_s kappa_sc(theta_s) * prod_{rateParams on c} value

with ``kappa(theta) = kup^theta`` for theta >= 0 and ``kdown^-theta`` below (``kdown/kup`` card
syntax; a symmetric ``k`` means ``kdown = 1/k``). Piecewise, where Combine uses a smooth
interpolation for asymmetric values within |theta| < 1 (identical for symmetric lnN).

::

    -ln L = sum_b [nu_b - n_b + n_b ln(n_b / nu_b)] + sum_s (theta_s - g_s)^2 / 2

(saturated-model normalisation; ``g_s`` global observables, 0 for data, the fitted values for
the Asimov set). Free rateParams are fitted as ``f = value / initial``. The analytic gradient is
given to iminuit (formula derivatives by central differences).

Supported systematic types: lnN. Others raise :class:`DatacardError` naming the row.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass

import numpy as np
from iminuit import Minuit

from svjscout.exceptions import DatacardError

from .parser import Datacard, check_datacard, formula_ok

log = logging.getLogger(__name__)

_FUNCS = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "pow": np.power, "min": min, "max": max}
DEFAULT_RANGE = (0.0, 100.0)  # relative to the initial value, for rateParams without a range
#: Range of every lnN nuisance in a fit (units of its prior width): a fit never strays beyond it
#: (Combine bounds its nuisances too; 10 sigma is far beyond any sane post-fit value).
THETA_RANGE = (-10.0, 10.0)


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
    """Arrays describing the likelihood of one card (C columns, B bins, S lnN, F free rateParams)."""

    bins: list[str]
    obs: np.ndarray  # (B,)
    col_bin: np.ndarray  # (C,) int
    rate: np.ndarray  # (C,)
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
        return ["r", *self.syst_names, *self.free_names]

    @property
    def nS(self) -> int:
        return len(self.syst_names)

    def values(self, f: np.ndarray, jac: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """RateParam values ``(P,)`` and (if ``jac``) Jacobian ``(P, F)`` wrt the fitted ``f``."""
        F = len(self.free_names)
        P = len(self.param_names)
        v = np.empty(P)
        v[:F] = self.free_init * f
        J = None
        if jac:
            J = np.zeros((P, F))
            J[np.arange(F), np.arange(F)] = self.free_init
        for k, (name, fn, idx) in enumerate(self.formulas):
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

    def expected(self, x: np.ndarray, jac: bool = True):
        """Per-column yields (with and without r), per-bin yields and intermediates."""
        S = self.nS
        mu, th, f = x[0], x[1 : 1 + S], x[1 + S :]
        slope = np.where(th[:, None] >= 0, self.k_up, self.k_dn) if S else np.zeros((0, len(self.rate)))
        L = th @ slope if S else 0.0
        v, J = self.values(f, jac)
        logv = np.log(np.clip(v, 1e-300, None))
        logm = self.apply.T @ logv if len(v) else 0.0
        # one exponent, clipped: far-out trial points of a fit give huge but finite yields
        nu0 = self.rate * np.exp(np.clip(L + logm, -600.0, 600.0))
        nu = np.where(self.is_sig, mu * nu0, nu0)
        nub = np.bincount(self.col_bin, weights=nu, minlength=len(self.bins))
        return nu0, nu, nub, slope, v, J

    def nll(self, x: np.ndarray, n: np.ndarray, glob: np.ndarray, mask: np.ndarray | None = None) -> float:
        """``-ln L`` (saturated normalisation); ``mask`` (B,) bool keeps only those bins (e.g. B masked)."""
        S = self.nS
        _, _, nub, *_ = self.expected(x, jac=False)
        nub = np.clip(nub, 1e-300, None)
        if mask is not None:
            nub, n = nub[mask], n[mask]
        pos = n > 0
        val = np.sum(nub - n) + np.sum(n[pos] * np.log(n[pos] / nub[pos]))
        return float(val + 0.5 * np.sum((x[1 : 1 + S] - glob) ** 2))

    def grad(self, x: np.ndarray, n: np.ndarray, glob: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        S = self.nS
        nu0, nu, nub, slope, v, J = self.expected(x)
        gb = 1.0 - n / np.clip(nub, 1e-300, None)
        if mask is not None:
            gb = np.where(mask, gb, 0.0)
        gc = gb[self.col_bin]
        w = gc * nu
        g = np.empty_like(x)
        g[0] = np.sum(gc * nu0 * self.is_sig)
        if S:
            g[1 : 1 + S] = slope @ w + (x[1 : 1 + S] - glob)
        if len(v):
            g[1 + S :] = ((self.apply @ w) / np.clip(v, 1e-300, None)) @ J
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
    syst = [s for s in card.systematics]
    for s in syst:
        if s.type != "lnN":
            raise DatacardError(f"systematic '{s.name}' of type {s.type} is not supported by the quick limits (lnN only)")
    k_up = np.zeros((len(syst), C))
    k_dn = np.zeros((len(syst), C))
    for i, s in enumerate(syst):
        for c, val in enumerate(s.values):
            if val == "-":
                continue
            ks = [float(t) for t in val.split("/")]
            if len(ks) == 1:
                k_up[i, c] = k_dn[i, c] = np.log(ks[0])
            else:
                k_dn[i, c] = -np.log(ks[0])
                k_up[i, c] = np.log(ks[1])
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
                 np.array(free_init, dtype=float), bounds, param_names, formulas, apply)


class Fitter:
    """Profile-likelihood fits of a :class:`Model` with iminuit (analytic gradient)."""

    def __init__(self, model: Model, n: np.ndarray | None = None, glob: np.ndarray | None = None,
                 r_max: float | None = None, r_min: float = 0.0, mask: np.ndarray | None = None,
                 r_step: float | None = None, strategy: int = 0):
        self.model = model
        self.n = model.obs if n is None else np.asarray(n, float)
        self.glob = np.zeros(model.nS) if glob is None else np.asarray(glob, float)
        self.x0 = np.concatenate([[1.0], np.zeros(model.nS), np.ones(len(model.free_names))])
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
        fcn = lambda x: m.nll(np.asarray(x), self.n, self.glob, self.mask)  # noqa: E731
        grd = lambda x: m.grad(np.asarray(x), self.n, self.glob, self.mask)  # noqa: E731
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
