"""Fit validation of the ABCD cards, as a CMS review asks for it (``svjscout validate DIR``).

Every test runs on the in-package likelihood of a written card (:mod:`.likelihood`, the model
Combine builds from the same text); ``jobs/combine_validate.sh`` runs the same with real Combine.

* **Injection and bias** (:func:`injection_test`): a background-only fit to the control regions
  (A, C, D; region B masked) fixes the model; toys are drawn from it with the signal injected at
  ``r_inj`` (Poisson counts, global observables drawn around the fitted nuisances: frequentist
  toys) and each toy is fitted with r free, allowed below 0 (down to where a channel's yield
  would turn negative). Pull ``(r_fit - r_inj) / sigma_r`` with the MINOS error on the side of
  the truth (the likelihood in r is far from parabolic when a large log-normal non-closure sits
  on large backgrounds: HESSE errors then understate the spread); a fit that ends on a boundary
  of r, or whose MINOS interval does, counts as not converged. Mean and width with their
  standard errors; ``|mean| > 0.14`` is flagged (the usual CMS criterion).
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
  neighbours.
* **Signal contamination** (:func:`contamination`): the relative bias of the prediction
  ``nhat_B = n_A n_D / n_C`` when a signal point at r = 1 is added to A, C and D, per M_T bin,
  against the non-closure uncertainty of the cards.

Example:
    >>> # res = validate_dir("svjscout-out", toys=200)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from svjscout.exceptions import DatacardError

from .likelihood import Fitter, Model, build_model
from .parser import Datacard, parse_datacard, parse_text

log = logging.getLogger(__name__)

#: |mean pull| above this is flagged (the usual CMS criterion for a bias test).
BIAS_FLAG = 0.14


def region_of_bin(name: str) -> str:
    """The region letter of a channel ``PLANE_R_i``."""
    parts = name.split("_")
    if len(parts) < 3 or parts[1] not in "ABCD":
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
    """Pseudo-experiments of one model: counts ``n`` (T, B) and global observables ``glob`` (T, S)."""

    n: np.ndarray
    glob: np.ndarray


def draw_toys(model: Model, x: np.ndarray, n_toys: int, rng: np.random.Generator) -> ToySet:
    """Frequentist toys at parameters ``x``: Poisson counts of the expected yields, global
    observables ``N(theta_hat, 1)`` (Combine's ``--toysFrequentist``)."""
    _, _, nub, *_ = model.expected(x, jac=False)
    n = rng.poisson(np.clip(nub, 0.0, None), size=(n_toys, len(nub))).astype(float)
    th = x[1 : 1 + model.nS]
    glob = rng.normal(th, 1.0, size=(n_toys, model.nS))
    return ToySet(n, glob)


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


def background_only_fit(model: Model, mask: np.ndarray | None = None) -> np.ndarray:
    """Parameters of the background-only (r = 0) fit of the card's observation (``mask``: bins used)."""
    return Fitter(model, mask=mask).fit(r=0.0)[1]


def r_sigma(model: Model, x: np.ndarray, r_min: float, r_max: float | None) -> float:
    """Expected uncertainty of r (HESSE of the Asimov data set at ``x``): the first step of the toy fits."""
    _, _, nub, *_ = model.expected(x, jac=False)
    f = Fitter(model, n=nub, glob=x[1 : 1 + model.nS], r_min=r_min, r_max=r_max, strategy=1,
               r_step=max(1.0, abs(x[0])))
    f.fit(start=x, hesse=True)
    return float(f.last.errors["r"])


def fit_toys(model: Model, toys: ToySet, start: np.ndarray, r_min: float, r_max: float,
             mask: np.ndarray | None = None, r_step: float | None = None) -> dict:
    """Fit every toy with r free in ``[r_min, r_max]``; r, its HESSE error and the fit validity
    (a fit that ends on a boundary of r has no meaningful error and counts as not converged)."""
    T = len(toys.n)
    r = np.full(T, np.nan)
    err, lo_err, hi_err = (np.full(T, np.nan) for _ in range(3))
    valid = np.zeros(T, bool)
    for t in range(T):
        f = Fitter(model, n=toys.n[t], glob=toys.glob[t], r_min=r_min, r_max=r_max, mask=mask, r_step=r_step,
                   strategy=1)
        _, x = f.fit(start=start, hesse=True)
        mi = f.last
        r[t] = x[0]
        err[t] = mi.errors["r"]
        at_bound = min(abs(x[0] - r_min), abs(x[0] - r_max)) < 1e-6 * max(1.0, abs(r_max))
        ok = bool(mi.valid and mi.accurate and not at_bound and err[t] > 0)
        if ok:
            try:
                mi.minos("r")
                me = mi.merrors["r"]
                ok = me.is_valid and not (me.at_lower_limit or me.at_upper_limit)
                lo_err[t], hi_err[t] = -me.lower, me.upper
            except RuntimeError:
                ok = False
        valid[t] = ok
    return {"r": r, "r_err": err, "r_err_down": lo_err, "r_err_up": hi_err, "valid": valid}


def pulls_of(r_fit: np.ndarray, r_true: float, err_down: np.ndarray, err_up: np.ndarray) -> np.ndarray:
    """``(r_fit - r_true) / sigma``, with the MINOS error on the side of the truth (Combine's
    convention for bias studies: the upper error when the fit is below the truth)."""
    r_fit = np.asarray(r_fit, float)
    sigma = np.where(r_fit < r_true, err_up, err_down)
    return (r_fit - r_true) / sigma


def injection_test(card: Datacard, r_inj: float, n_toys: int = 200, seed: int = 1,
                   r_max: float | None = None) -> dict:
    """Signal injection and bias test of one card at ``r_inj`` (see module docstring).

    Returns:
        ``{"r_inj", "toys", "converged", "pull": {n, mean, mean_err, width, width_err},
        "r_fit": {...}, "flag_bias": bool, "pulls": [...]}``.
    """
    m = build_model(card)
    cr = control_mask(m)
    xb = background_only_fit(m, cr)
    x = xb.copy()
    x[0] = r_inj
    rng = np.random.default_rng([seed, int(round(1e6 * r_inj)) & 0xFFFFFFFF])
    toys = draw_toys(m, x, n_toys, rng)
    lo = r_floor(m, xb)
    sig_r = r_sigma(m, x, lo, None)
    hi = r_max if r_max is not None else r_inj + max(10.0 * sig_r, abs(lo))
    res = fit_toys(m, toys, x, lo, hi, r_step=sig_r)
    ok = res["valid"]
    pulls = pulls_of(res["r"][ok], r_inj, res["r_err_down"][ok], res["r_err_up"][ok])
    pull = _summary(pulls)
    return {"r_inj": float(r_inj), "toys": int(n_toys), "converged": int(ok.sum()), "r_range": [lo, hi],
            "sigma_r_asimov": sig_r,
            "pull": pull, "r_fit": _summary(res["r"][ok]),
            "flag_bias": bool(pull["mean"] is not None and abs(pull["mean"]) > BIAS_FLAG),
            "pulls": [float(p) for p in pulls]}


def saturated_q(model: Model, n: np.ndarray, glob: np.ndarray, mask: np.ndarray | None, start: np.ndarray) -> float:
    """Saturated-model statistic of the background-only fit: ``2 min(-ln L)`` (the likelihood is
    in saturated normalisation, and the constraint terms of the saturated model vanish)."""
    nll, _ = Fitter(model, n=n, glob=glob, mask=mask).fit(r=0.0, start=start)
    return 2.0 * nll


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
    q = np.array([saturated_q(m, toys.n[t], toys.glob[t], mask, x) for t in range(n_toys)])
    out.update(q_toys=[float(v) for v in q], pvalue=float(np.mean(q >= q_obs)))
    return out


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
    bonly = [{"name": name, "value": float(xb0[i]), "error": float(eb[i])} for i, name in enumerate(m.names[1:], start=1)]
    return {"r": r_hat, "r_err": float(err[0]), "nuisances": rows, "background_only": bonly}


def contamination(xy_mt, datasets: Mapping[str, Mapping], wp, groups: Sequence[Sequence[int]],
                  nonclosure_kappa: Sequence[float], signals: Sequence[str]) -> dict:
    """Relative bias of ``nhat_B`` per (fit) M_T bin when each signal at r = 1 is added to A, C, D.

    ``bias_i = [(A+sA)(D+sD)/(C+sC)] / [A D / C] - 1`` with A, C, D the background yields; compared
    with the non-closure ``kappa_i - 1`` of the cards.
    """
    from .regions import region_yields

    b = region_yields(xy_mt, datasets, wp, which="background").merged(groups).n
    out = {}
    u = np.asarray(nonclosure_kappa, float) - 1.0
    for name in signals:
        s = region_yields(xy_mt, datasets, wp, which=[name]).merged(groups).n
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


def plane_card(xy_mt, datasets: Mapping[str, Mapping], wp, plane: str, signal: str, kappa_of_bin: Sequence[float],
               groups: Sequence[Sequence[int]], point: str = "validation") -> tuple[Datacard, list[list[int]], str]:
    """A card of ``plane`` whose observation is the MC background itself (pseudo-data), region B
    included: what the goodness of fit and the closure of the ABCD model are tested on.

    M_T bins: ``groups`` (the cards' fit bins), merged further where a region of ``plane`` is empty.
    Returns the parsed card, its bins as groups of original M_T bins, and the card's text.
    """
    from .regions import region_yields
    from .writer import format_card, merge_groups

    b = region_yields(xy_mt, datasets, wp, plane=plane, which="background").merged(groups)
    sub, _ = merge_groups(b.n, 0.0)
    bins = [[o for i in g for o in groups[i]] for g in sub]
    bkg = region_yields(xy_mt, datasets, wp, plane=plane, which="background").merged(bins).n
    sig = np.clip(region_yields(xy_mt, datasets, wp, plane=plane, which=[signal]).merged(bins).n, 0.0, None)
    kappa = np.array([max(kappa_of_bin[i] for i in g) for g in sub])
    if np.any(bkg <= 0):
        raise DatacardError(f"{plane}: a region is empty in every M_T bin; no {plane} card can be built")
    text = format_card(point, bkg, sig, bkg.copy(), kappa, plane=plane,
                       header=[f"validation card, plane {plane}: observation = background MC (pseudo-data)"])
    return parse_text(text, f"<{plane} validation card>"), bins, text


def wp_stability(xy_mt, datasets: Mapping[str, Mapping], wp, step: float, signal: str, **card_kw) -> list[dict]:
    """Closure (SP, background MC) and the expected median limit of ``signal`` at the WP and its 8
    grid neighbours (cards written with ``card_kw`` into a temporary folder)."""
    import tempfile

    from .abcd import abcd_prediction
    from .limits import quick_limits
    from .plots import point_name
    from .writer import write_datacards

    out = []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            p = (round(wp[0] + dx * step, 10), round(wp[1] + dy * step, 10))
            row = {"x0": p[0], "y0": p[1], "dx": dx, "dy": dy}
            try:
                t = abcd_prediction(xy_mt, datasets, p, plane="SP", which="background")
                tot_pred, tot_b = np.nansum(t.nhat_B), np.sum(t.n_B)
                row.update(delta=float(tot_pred / tot_b - 1) if tot_b > 0 else None,
                           pvalue=float(t.pvalue) if np.isfinite(t.pvalue) else None)
                with tempfile.TemporaryDirectory() as d:
                    idx = write_datacards(xy_mt, datasets, p, d, signals=[signal], **card_kw)
                    lim = quick_limits(idx)
                name = point_name(signal, datasets.get(signal, {}))
                row["limit"] = lim[name]["exp0"] if name in lim else None
            except Exception as err:  # noqa: BLE001 - a neighbour off the grid or without a card
                row.update(error=str(err))
            out.append(row)
    return out


def validate(xy_mt, datasets: Mapping[str, Mapping], index: Mapping, limits: Mapping | None = None,
             toys: int = 100, inject: Sequence = (0.0, 1.0, "exp0"), seed: int = 1, gof_toys: int | None = None,
             stability: bool = True) -> dict:
    """Every test of the module docstring on the cards of ``index`` (``datacards/index.json``).

    Args:
        xy_mt, datasets: the run's histograms (``histograms.coffea``).
        index: the cards' index (working point, fit bins, kappas, points).
        limits: expected limits ``{point: {"exp0": ...}}`` (for ``inject="exp0"``).
        toys: toys per injected value; ``gof_toys`` (default ``toys``) per goodness of fit.
        inject: injected r values; ``"exp0"`` is the point's median expected limit.
    """
    base = index["cards_dir"]
    wp = (index["wp"]["x0"], index["wp"]["y0"])
    groups = index["mt_groups"]
    kappa = index.get("nonclosure_kappa") or [1.0 + u for u in index["nonclosure"]]
    signals = [meta["dataset"] for meta in index["points"].values()]
    out = {"wp": {"x0": wp[0], "y0": wp[1]}, "toys": toys, "seed": seed, "bias_flag": BIAS_FLAG,
           "points": {}, "gof": {}}
    for point, meta in index["points"].items():
        card = parse_datacard(os.path.join(base, meta["card"]))
        res = {"injection": []}
        for r in inject:
            if r == "exp0":
                if not limits or point not in limits:
                    continue
                r = float(limits[point]["exp0"])
            res["injection"].append(injection_test(card, float(r), toys, seed))
        res["impacts"] = impacts(card)
        out["points"][point] = res
    ref = signals[0]
    nt = gof_toys or toys
    for plane, mask_b in (("VP", False), ("SP", True)):
        try:
            card, bins, text = plane_card(xy_mt, datasets, wp, plane, ref, kappa, groups)
            g = gof_saturated(card, nt, seed, mask_b=mask_b)
            g["mt_bins"] = bins
            out.setdefault("cards", {})[plane] = text
        except DatacardError as err:
            g = {"error": str(err)}
        out["gof"][plane + (" (B masked)" if mask_b else "")] = g
    out["contamination"] = contamination(xy_mt, datasets, wp, groups, kappa, signals)
    if stability:
        step = float(np.diff(xy_mt.axes["x"].edges)[0])
        out["wp_stability"] = wp_stability(xy_mt, datasets, wp, step, ref, nonclosure_method=index.get(
            "nonclosure_method", "significance"), min_neff=index.get("min_neff", 10.0))
    return out


def summary_lines(res: Mapping) -> list[str]:
    """Markdown for ``summary.md`` (section "Fit validation")."""
    def f(v, fmt="{:.3g}"):
        return "n/a" if v is None else fmt.format(v)

    lines = ["## Fit validation", "",
             f"{res['toys']} toys per test (seed {res['seed']}); details in `validation/validation.json` and "
             "`validation/*.png`.", "",
             "| point | r injected | converged | mean pull | pull width | flag |", "|---|---|---|---|---|---|"]
    for point, p in res["points"].items():
        for inj in p["injection"]:
            pu = inj["pull"]
            lines.append(f"| {point} | {inj['r_inj']:.3g} | {inj['converged']}/{inj['toys']} | "
                         f"{f(pu['mean'], '{:+.3f}')} +- {f(pu['mean_err'], '{:.3f}')} | "
                         f"{f(pu['width'], '{:.3f}')} +- {f(pu['width_err'], '{:.3f}')} | "
                         f"{'BIAS (|mean| > %.2f)' % res['bias_flag'] if inj['flag_bias'] else ''} |")
    lines += ["", "| goodness of fit (saturated) | q_obs | ndf | p (toys) |", "|---|---|---|---|"]
    for name, g in res["gof"].items():
        if "error" in g:
            lines.append(f"| {name} | n/a | | {g['error']} |")
        else:
            lines.append(f"| {name} | {g['q_obs']:.3g} | {g['ndf']} | {f(g['pvalue'])} "
                         f"{'(' + g['note'] + ')' if g.get('note') else ''} |")
    lines += ["", "Largest impacts on r (Asimov, +-1 post-fit sigma):", ""]
    for point, p in res["points"].items():
        top = ", ".join(f"{n['name']} {n['impact_up']:+.3g}/{n['impact_down']:+.3g}" for n in p["impacts"]["nuisances"][:3])
        lines.append(f"- {point}: r = {p['impacts']['r']:.3g} +- {p['impacts']['r_err']:.3g}; {top}")
    if "wp_stability" in res:
        lines += ["", "WP stability (SP closure and expected limit of the first signal point):", "",
                  "| x0 | y0 | delta (SR total) | chi2 p | expected limit |", "|---|---|---|---|---|"]
        for row in res["wp_stability"]:
            lines.append(f"| {row['x0']:.3f} | {row['y0']:.3f} | {f(row.get('delta'), '{:+.3f}')} | "
                         f"{f(row.get('pvalue'), '{:.3f}')} | {f(row.get('limit'))} |")
    worst = [(name, max(abs(b) for b in c["bias"])) for name, c in res["contamination"].items()]
    lines += ["", "Signal contamination (r = 1 in A, C, D): largest |bias of nhat_B| per point: "
              + ", ".join(f"{n} {v:.2%}" for n, v in worst)
              + "; bins where it exceeds the non-closure: "
              + (", ".join(f"{n} {[i for i, e in enumerate(c['exceeds_nonclosure']) if e]}"
                           for n, c in res["contamination"].items() if any(c["exceeds_nonclosure"])) or "none"), ""]
    return lines


def write_validation(outdir, xy_mt, datasets: Mapping[str, Mapping], index: Mapping, limits: Mapping | None,
                     toys: int = 20, inject: Sequence = (0.0, 1.0, "exp0"), seed: int = 1, stability: bool = True,
                     style=None) -> dict:
    """:func:`validate` and its outputs: ``outdir/validation/validation.json`` and the figures."""
    import json

    from .validation_plots import plot_validation

    vdir = os.path.join(os.fspath(outdir), "validation")
    os.makedirs(vdir, exist_ok=True)
    res = validate(xy_mt, datasets, index, limits, toys=toys, inject=inject, seed=seed, stability=stability)
    for plane, text in res.pop("cards", {}).items():  # the pseudo-data cards, for Combine's GoF
        os.makedirs(os.path.join(vdir, "cards", plane), exist_ok=True)
        with open(os.path.join(vdir, "cards", plane, "datacard.txt"), "w") as f:
            f.write(text)
    with open(os.path.join(vdir, "validation.json"), "w") as f:
        json.dump(res, f, indent=1, default=float)
    kw = {"style": style} if style is not None else {}
    res["figures"] = plot_validation(res, vdir, mt_bins=index.get("mt_bins"), **kw)
    return res


def read_combine_validation(outdir) -> dict:
    """The outputs of ``jobs/combine_validate.sh DIR`` in the structure of :func:`validate`.

    Bias: ``fitDiagnostics.POINT.bias_rR.root`` (tree ``tree_fit_sb``: ``r``, ``rLoErr``,
    ``rHiErr``, ``fit_status``), pulls as in :func:`pulls_of`, a fit converged when
    ``fit_status == 0`` and both MINOS errors are positive. Goodness of fit:
    ``higgsCombine.VP.gof.GoodnessOfFit.mH120[.SEED].root`` (tree ``limit``: the statistic).

    Raises:
        InputFileError: an unreadable Combine output (names it); DatacardError: none found.
    """
    import glob
    import re

    from svjscout.processors.files import open_root

    from .limits import read_index

    index, cards = read_index(outdir)
    out = {"source": "combine", "wp": index["wp"], "points": {}, "gof": {}, "bias_flag": BIAS_FLAG}
    for point, card in cards.items():
        inj = []
        for path in sorted(glob.glob(os.path.join(os.path.dirname(card), f"fitDiagnostics.{point}.bias_r*.root"))):
            r_inj = float(re.search(r"bias_r([-0-9.e+]+)\.root$", path).group(1))
            with open_root(path, "the tree tree_fit_sb") as f:
                t = f["tree_fit_sb"].arrays(["r", "rLoErr", "rHiErr", "fit_status"], library="np")
            ok = (t["fit_status"] == 0) & (t["rLoErr"] > 0) & (t["rHiErr"] > 0)
            pulls = pulls_of(t["r"][ok], r_inj, t["rLoErr"][ok], t["rHiErr"][ok])
            pull = _summary(pulls)
            inj.append({"r_inj": r_inj, "toys": int(len(ok)), "converged": int(ok.sum()), "pull": pull,
                        "r_fit": _summary(t["r"][ok]), "pulls": [float(p) for p in pulls],
                        "flag_bias": bool(pull["mean"] is not None and abs(pull["mean"]) > BIAS_FLAG)})
        if inj:
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
