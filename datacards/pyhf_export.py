"""HistFactory JSON (pyhf) workspace of a Combine counting datacard: the same model, other reader.

:func:`workspace_from_card` turns a card of the writer (or any counting card with lnN, gmN and
rateParams of the forms below) into a pyhf workspace spec (``pyhf.Workspace(spec)`` validates it
against pyhf's schema). The mapping:

* one single-bin channel per card bin (same names), one sample per process (same names, the card's
  rates as nominal yields, zero rates kept), the card's observations (Asimov for Asimov cards);
* rateParams: a free one becomes a ``normfactor`` of the same name (bounds and initial value of the
  card); a formula ``x*y/z`` (``(@0*@1/@2)``, the ABCD relation ``B = A D / C``) has no HistFactory
  counterpart (no division of parameters), so the background is reparametrised:
  ``z`` (``bkg_SP_C_i``) stays, ``x = z * x_over_z`` and ``y = z * y_over_z`` (normfactors
  ``bkg_SP_A_i_over_C``, ``bkg_SP_D_i_over_C``), the formula's bin gets ``z * x_over_z * y_over_z``;
  the same model (a one-to-one change of variables), only the names of two factors per fit bin differ;
* lnN ``k``: ``normsys`` ``hi = k, lo = 1/k`` (with pyhf's default code1, ``k**alpha``: exactly
  Combine's lnN); lnN ``kdown/kup``: ``normsys`` ``lo = kdown, hi = kup``: code1 is piecewise
  exponential, Combine interpolates ``ln kappa`` smoothly in ``|theta| < 0.5`` (``logKappaForX``):
  no exact counterpart (code4, a polynomial in ``|alpha| < 1``: build the model with
  ``modifier_settings={"normsys": {"interpcode": "code4"}}``); on the demo cards either moves the
  expected limits by at most 0.3 % from Combine's (docs/datacards.md, parity table);
* gmN ``N alpha`` (signal MC statistics below the lnN threshold): ``shapesys`` of the same name with
  uncertainty ``rate / sqrt(N)``, i.e. ``tau = N``: the constraint ``Poisson(N | tau gamma)`` on a
  factor ``gamma`` of the rate, which is Combine's gmN (Poisson constraint on the yield ``alpha
  theta``, ``theta = N gamma``) except its range; ``N = 0`` (rate 0) has no counterpart: dropped and
  listed in the metadata;
* the POI ``r`` (a ``normfactor`` on ``sig``): the signal yields are multiplied by ``signal_scale``
  (a power of ten near the quick expected limit, so that the limit on ``r`` is of order 1 and pyhf's
  defaults converge): ``r_card = r_pyhf * signal_scale``; bounds ``[0, r_max]``.

pyhf's workspace schema (1.0.0) admits no metadata: :func:`export_card` returns it beside the spec
and :func:`write_workspace` writes it as ``workspace_meta.json`` (the card, ``signal_scale`` and every
choice that differs from Combine). Nuisances keep the card's names.

Example:
    >>> # spec = workspace_from_card("out/datacards/svj_mz2000_rinv0.3/datacard.txt")
    >>> # ws = pyhf.Workspace(spec); model = ws.model(); data = ws.data(model)
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings

import numpy as np
from scipy import optimize, stats

from svjscout.core.exceptions import DatacardError

from .limits import card_limits
from .parser import Datacard, parse_datacard

log = logging.getLogger(__name__)

WORKSPACE_NAME = "workspace.json"
META_NAME = "workspace_meta.json"
POI = "r"
PYHF_EXTRA = "pyhf"
#: pyhf versions the spec is written for (HistFactory JSON schema 1.0.0).
PYHF_REQUIREMENT = "pyhf[minuit]>=0.7.6,<0.8"
_RATIO_FORMULA = re.compile(r"^\(?@0\*@1/@2\)?$")


def import_pyhf():
    """Import pyhf or raise an error naming the extra that installs it."""
    try:
        import pyhf  # optional dependency: only the pyhf format and its parity check need it
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatacardError(f"the pyhf workspace format needs pyhf: pip install 'svjscout[{PYHF_EXTRA}]' "
                            f"({PYHF_REQUIREMENT})") from exc
    return pyhf


def _short(name: str, pivot: str) -> str:
    """Name of the ratio factor ``name / pivot`` (``bkg_SP_A_0`` over ``bkg_SP_C_0``: ``bkg_SP_A_0_over_C``)."""
    tail = pivot.split("_")
    suffix = tail[-2] if len(tail) >= 3 and tail[-1].isdigit() and name.endswith("_" + tail[-1]) else pivot
    return f"{name}_over_{suffix}"


def _signal_process(card: Datacard) -> str:
    for p, i in zip(card.col_procs, card.col_ids):
        try:
            if int(i) <= 0:
                return p
        except ValueError:
            continue
    raise DatacardError(f"{card.path}: no signal process (index <= 0)")


def auto_signal_scale(card: Datacard) -> float:
    """A power of ten near the quick expected median limit of ``card`` (1 if it cannot be computed)."""
    try:
        med = float(card_limits(card)["exp0"])
    except Exception as exc:  # noqa: BLE001 - the scale is only a conditioning aid
        log.warning("%s: no quick limit for the signal scale (%s): scale 1", card.path, exc)
        return 1.0
    if not math.isfinite(med) or med <= 0:
        return 1.0
    return float(10.0 ** round(math.log10(med)))


def _normfactors(card: Datacard) -> tuple[dict[tuple[str, str], list[str]], dict[str, dict]]:
    """Normfactors per (bin, process) and their settings ``{name: {"bounds", "inits", "card"}}``."""
    free = {rp.name: rp for rp in card.rate_params if not rp.is_formula}
    subs: dict[str, tuple[str, str]] = {}  # x -> (pivot z, ratio factor name)
    formulas: dict[str, list[str]] = {}
    for rp in card.rate_params:
        if not rp.is_formula:
            continue
        if not _RATIO_FORMULA.match((rp.formula or "").replace(" ", "")) or len(rp.args) != 3:
            raise DatacardError(f"{card.path}: rateParam '{rp.name}' formula '{rp.formula}' has no HistFactory "
                                "counterpart (only x*y/z, '(@0*@1/@2)', is supported)")
        x, y, z = rp.args
        for a in (x, y, z):
            if a not in free:
                raise DatacardError(f"{card.path}: rateParam '{rp.name}' uses '{a}', not a free rateParam")
        for a in (x, y):
            if a in subs and subs[a][0] != z:
                raise DatacardError(f"{card.path}: rateParam '{a}' is divided by two different parameters")
            subs[a] = (z, _short(a, z))
        formulas[rp.name] = [z, subs[x][1], subs[y][1]]
    params: dict[str, dict] = {}
    for name, rp in free.items():
        lo, hi = rp.range or (0.0, 10.0)
        init = rp.value if rp.value is not None else 1.0
        if name in subs:
            z = free[subs[name][0]]
            zlo, zhi = z.range or (0.0, 10.0)
            zinit = z.value if z.value is not None else 1.0
            params[subs[name][1]] = {"bounds": [[lo / zhi, hi / zlo if zlo > 0 else 1e3 * hi]],
                                     "inits": [init / zinit], "card": f"{name} / {subs[name][0]}"}
        else:
            params[name] = {"bounds": [[lo, hi]], "inits": [init], "card": name}
    factors: dict[tuple[str, str], list[str]] = {}
    for rp in card.rate_params:
        key = (rp.bin, rp.process)
        if rp.is_formula:
            names = formulas[rp.name]
        elif rp.name in subs:
            names = [subs[rp.name][0], subs[rp.name][1]]
        else:
            names = [rp.name]
        factors.setdefault(key, []).extend(names)
    return factors, params


def workspace_from_card(card_or_path: Datacard | str | os.PathLike, signal_scale: float | str | None = "auto",
                        r_max: float | None = None) -> dict:
    """HistFactory JSON workspace spec carrying the model of a counting card (module docstring);
    the choices that differ from Combine: :func:`export_card` (pyhf's schema admits no metadata)."""
    return export_card(card_or_path, signal_scale, r_max)[0]


def export_card(card_or_path: Datacard | str | os.PathLike, signal_scale: float | str | None = "auto",
                r_max: float | None = None) -> tuple[dict, dict]:
    """``(spec, metadata)``: the workspace (:func:`workspace_from_card`) and what it records beside it
    (``workspace_meta.json``): the card, ``signal_scale``, the choices that differ from Combine.

    Args:
        card_or_path: parsed card or its path.
        signal_scale: factor on the signal yields (``r_card = r_pyhf * signal_scale``); ``"auto"``: a
            power of ten near the card's quick expected limit; None: 1.
        r_max: upper bound of ``r`` in the workspace (default ``100``, i.e. a hundred times the scale).

    Raises:
        DatacardError: a systematic type or rateParam formula without a HistFactory counterpart.
    """
    card = card_or_path if isinstance(card_or_path, Datacard) else parse_datacard(card_or_path)
    sig = _signal_process(card)
    if signal_scale == "auto":
        scale = auto_signal_scale(card)
    elif signal_scale is None:
        scale = 1.0
    else:
        scale = float(signal_scale)
    if not scale > 0:
        raise DatacardError(f"signal_scale must be positive, got {scale}")
    factors, params = _normfactors(card)
    obs = card.obs()
    dropped: list[str] = []
    asym: list[str] = []
    # modifiers per column
    mods: list[list[dict]] = [[] for _ in range(card.ncols)]
    for s in card.systematics:
        if s.type not in ("lnN", "gmN"):
            raise DatacardError(f"{card.path}: systematic '{s.name}' of type {s.type} has no HistFactory mapping "
                                "here (lnN and gmN only)")
        if len(s.values) != card.ncols:
            raise DatacardError(f"{card.path}: systematic '{s.name}' has {len(s.values)} values for "
                                f"{card.ncols} columns")
        for c, v in enumerate(s.values):
            if v == "-" or v == "0":
                continue
            if s.type == "lnN":
                if "/" in v:
                    lo_s, hi_s = v.split("/", 1)
                    lo, hi = float(lo_s), float(hi_s)
                    if abs(lo * hi - 1.0) >= 1e-5 and s.name not in asym:
                        asym.append(s.name)
                else:
                    hi = float(v)
                    lo = 1.0 / hi
                mods[c].append({"name": s.name, "type": "normsys", "data": {"hi": hi, "lo": lo}})
            else:
                n_obs = float(s.extra[0])
                rate = float(card.col_rates[c])
                if n_obs <= 0 or rate <= 0:
                    dropped.append(f"{s.name} (gmN {s.extra[0]} in {card.col_bins[c]}/{card.col_procs[c]}: rate 0)")
                    continue
                mods[c].append({"name": s.name, "type": "shapesys", "data": [rate * scale / math.sqrt(n_obs)
                                                                            if card.col_procs[c] == sig
                                                                            else rate / math.sqrt(n_obs)]})
    channels: dict[str, list[dict]] = {b: [] for b in card.bins}
    for c, (b, p) in enumerate(zip(card.col_bins, card.col_procs)):
        rate = float(card.col_rates[c])
        m: list[dict] = []
        if p == sig:
            rate *= scale
            m.append({"name": POI, "type": "normfactor", "data": None})
        m.extend({"name": f, "type": "normfactor", "data": None} for f in factors.get((b, p), []))
        m.extend(mods[c])
        if b not in channels:
            raise DatacardError(f"{card.path}: process column in unknown bin '{b}'")
        channels[b].append({"name": p, "data": [rate], "modifiers": m})
    rmax = 100.0 if r_max is None else float(r_max)
    parameters = [{"name": POI, "bounds": [[0.0, rmax]], "inits": [1.0]}]
    parameters += [{"name": k, "bounds": v["bounds"], "inits": v["inits"]} for k, v in params.items()]
    ratio = {k: v["card"] for k, v in params.items() if k != v["card"]}
    spec = {
        "channels": [{"name": b, "samples": channels[b]} for b in card.bins],
        "observations": [{"name": b, "data": [obs[b]]} for b in card.bins],
        "measurements": [{"name": "svjscout", "config": {"poi": POI, "parameters": parameters}}],
        "version": "1.0.0",
    }
    meta = {
        "card": os.path.basename(str(card.path)),
        "signal_process": sig,
        "signal_scale": scale,
        "poi": f"{POI}_card = {POI} * signal_scale (signal yields here are the card's times signal_scale)",
        "normsys_interpcode": "code1 (pyhf default): exact for symmetric lnN; asymmetric lnN kdown/kup "
                              "interpolated piecewise-exponentially (Combine: smooth ln kappa in |theta|<0.5); "
                              "code1 and code4 each within 0.3 % of Combine's expected limits on the demo "
                              "cards (docs/datacards.md, parity)",
        "asymmetric_lnN": asym,
        "gmN": "shapesys with tau = N (Poisson constraint, Combine's gmN without its range)",
        "gmN_dropped": dropped,
        "mcstat_lnN": "normsys (as the card's lnN)",
        "abcd_reparametrisation": ratio,
        "observations": "the card's",
        "pyhf": PYHF_REQUIREMENT,
    }
    return spec, meta


def write_workspace(card: Datacard | str | os.PathLike, out: str | os.PathLike | None = None,
                    **kwargs) -> tuple[str, dict]:
    """Write the workspace of ``card`` (validated by pyhf) to ``out`` (default: ``workspace.json``
    beside the card) and its metadata to ``workspace_meta.json`` beside it; returns ``(path, metadata)``."""
    pyhf = import_pyhf()
    spec, meta = export_card(card, **kwargs)
    pyhf.Workspace(spec)  # schema validation
    card_path = card.path if isinstance(card, Datacard) else str(card)
    path = str(out) if out is not None else os.path.join(os.path.dirname(os.path.abspath(card_path)), WORKSPACE_NAME)
    with open(path, "w") as f:
        json.dump(spec, f, indent=1)
    with open(os.path.join(os.path.dirname(os.path.abspath(path)), META_NAME), "w") as f:
        json.dump(meta, f, indent=1)
    return path, meta


#: pyhf's expected CLs set, first to last, crosses alpha at the limit quantiles exp-2 ... exp+2.
_PYHF_ORDER = ["exp-2", "exp-1", "exp0", "exp+1", "exp+2"]


#: Combine's quantiles of the expected limit (AsymptoticLimits): 0.025, 0.16, 0.5, 0.84, 0.975.
COMBINE_QUANTILES = {"exp-2": 0.025, "exp-1": 0.16, "exp0": 0.5, "exp+1": 0.84, "exp+2": 0.975}


def expected_limits(spec: dict, meta: dict | None = None, interpcode: str = "code1", alpha: float = 0.05,
                    rtol: float = 1e-4, bands: str = "combine") -> dict[str, float]:
    """pyhf's expected asymptotic CLs upper limits (q~ test statistic, the 5 quantiles, each the root
    of ``CLs_N(r) = alpha`` as Combine's ``--newExpected 1``), in the card's ``r`` (times
    ``meta["signal_scale"]``). ``interpcode``: pyhf's normsys interpolation (code1, or code4).

    ``bands="combine"`` evaluates pyhf's asymptotic test-statistic distributions at Combine's quantiles
    (``N = Phi^-1(0.025) = -1.960``, ``Phi^-1(0.16) = -0.994``, ...); ``bands="pyhf"`` takes pyhf's own
    expected set (``hypotest(..., return_expected_set=True)``: ``N = -2, -1, 0, 1, 2`` exactly), whose
    outer quantiles differ from Combine's by definition (about 1 % on the one-bin card, +-2 sigma)."""
    if bands not in ("combine", "pyhf"):
        raise ValueError(f"bands must be 'combine' or 'pyhf', got {bands!r}")
    # pyhf's background-only expected test statistic at n_sigma, first to last: exp-2 ... exp+2
    nsig = ([float(-stats.norm.ppf(COMBINE_QUANTILES[k])) for k in _PYHF_ORDER] if bands == "combine"
            else [2.0, 1.0, 0.0, -1.0, -2.0])
    pyhf = import_pyhf()
    optimizers = []
    try:  # MINUIT (pyhf[minuit]) converges on these fits (1e6 events per bin) where SLSQP stops at its start;
        # tight first: at MINUIT's default tolerance 0.1 q_A of a demo card came out 4 % low (median +1.2 %)
        optimizers += [pyhf.optimize.minuit_optimizer(tolerance=t, strategy=2) for t in (1e-4, 1e-3, 1e-2)]
        optimizers.append(pyhf.optimize.minuit_optimizer(tolerance=0.1, strategy=1))
    except (ImportError, AttributeError, pyhf.exceptions.ImportBackendError):
        log.warning("pyhf without iminuit (pip install 'pyhf[minuit]'): SLSQP only, fits may fail")
    optimizers.append(pyhf.optimize.scipy_optimizer())
    ws = pyhf.Workspace(spec)
    model = ws.model(modifier_settings={"normsys": {"interpcode": interpcode},
                                        "histosys": {"interpcode": "code4p"}})
    data = ws.data(model)
    poi = model.config.poi_index
    hi_bound = float(model.config.suggested_bounds()[poi][1])
    cache: dict[float, np.ndarray] = {}

    def cls(mu: float) -> np.ndarray:
        if mu not in cache:
            res = None
            for opt in optimizers:
                pyhf.set_backend("numpy", opt)
                try:
                    with warnings.catch_warnings():  # MINUIT's Hesse with only the POI, CLs 0/0 far out
                        warnings.simplefilter("ignore")
                        calc = pyhf.infer.calculators.AsymptoticCalculator(data, model, test_stat="qtilde")
                        calc.teststatistic(mu)
                        sb_dist, b_dist = calc.distributions(mu)
                        res = [calc.pvalues(b_dist.expected_value(n), sb_dist, b_dist)[2] for n in nsig]
                    break
                except (pyhf.exceptions.FailedMinimization, AttributeError):
                    # AttributeError: pyhf 0.7.6's MINUIT wrapper on a fit with every parameter fixed
                    continue
            if res is None:
                raise RuntimeError(f"pyhf: no converged fit at r = {mu} (scaled)")
            cache[mu] = np.nan_to_num(np.asarray([float(v) for v in res]), nan=0.0)
        return cache[mu]

    scale = float((meta or {}).get("signal_scale", 1.0))
    out: dict[str, float] = {}
    # a failed MINUIT fit is retried with the next minimiser: pyhf's error log of it is noise here
    mixins_log = logging.getLogger("pyhf.optimize.mixins")
    level = mixins_log.level
    mixins_log.setLevel(logging.CRITICAL)
    try:
        _solve(out, cls, alpha, rtol, hi_bound, scale)
    finally:
        mixins_log.setLevel(level)
    return out


def _solve(out: dict[str, float], cls, alpha: float, rtol: float, hi_bound: float, scale: float) -> None:
    """Each quantile's root of ``cls(mu)[k] = alpha`` (bracketed from ``hi_bound``), times ``scale``."""
    for k, key in enumerate(_PYHF_ORDER):
        def f(mu: float, k: int = k) -> float:
            return float(cls(mu)[k]) - alpha
        lo, hi = 1e-3 * hi_bound, 0.05 * hi_bound
        while f(hi) > 0 and hi < hi_bound:
            lo, hi = hi, min(2.0 * hi, hi_bound)
        while f(lo) < 0 and lo > 1e-9:
            lo, hi = lo / 2.0, lo
        out[key] = float(optimize.brentq(f, lo, hi, rtol=rtol)) * scale
