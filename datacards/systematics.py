"""Signal systematics of the ABCD datacards: detector/theory sources, signal MC statistics, luminosity.

Input: next to the nominal ``xy_mt`` the processor fills ``xy_mt_syst`` with axes
``(dataset, syst, plane, x, y, mt)`` (signal datasets only; ``syst`` a StrCategory of
``"<source>_up"``/``"<source>_down"``; same x, y, M_T binning as ``xy_mt``; Weight storage;
already scaled like ``xy_mt``, i.e. xsec x lumi / sumw). :func:`.toys.build_xy_mt_syst` builds one from
arrays (tests, demos).

The signal MC behind a card is thin (a channel holds a few raw events), so the cards treat it
the way Combine analyses treat thin signal MC (:func:`signal_systematics`, per signal point):

* **sources** (``jes``, ``jer``, ``unclustered``, ``pileup``, ``trigger``, ``isr``, ``fsr``, ...):
  one row per source, named after it, correlated across all channels and signal points, acting
  as a **normalisation per region**: for region R of A, B, C, D the effect of a variation is
  ``delta = Y_var(R) / Y_nom(R) - 1`` of the M_T-integrated signal of that region (every M_T bin
  of the region summed), and every channel ``R_i`` (M_T bin i) with signal carries that one
  kappa pair. Per region, not one pair for the whole card: a score shift moves signal between
  regions (out of B into A or D), which a card-wide normalisation would cancel; M_T-integrated
  because a few events per M_T bin cannot measure a shape (a per-bin ratio of 1-8 events is a
  single-event migration, not an effect);

  - *event-correlated MC error*: the variation and the nominal are built from the same events,
    so the error of ``delta`` comes from what changes between them, per event
    ``sum_e (w_var,e - w_nom,e)^2``, not from the errors of the two yields. ``xy_mt_syst`` stores
    per-cell sums only (cells = the ``x, y, M_T`` bins; ``s`` = sumw, ``q`` = sumw2), so that
    variance is estimated cell by cell (:func:`difference_variance`) and summed over the region,
    by how the source changes the events (:func:`source_kind`): a *weight* source (pileup,
    trigger, isr, fsr: the events keep their cells) ``q_v + q_n - 2 wbar s_v`` with ``wbar =
    q_n / s_n``, exact for equal-weight events whatever their individual ratios; a *kinematic*
    source (jes, jer, unclustered: the events keep their weights and move) ``|q_v - q_n|``, the
    squared weights of the events that left or entered the cell, exact where a cell only loses
    or only gains events (an event moving between two cells of one region counts twice:
    conservative; a cell that loses and gains at once is underestimated); another source the
    larger of the two. The signal's corner cells hold many events (its scores pile up near 1),
    which is why the cell's occupancy must enter: the naive ``(sqrt(q_v) - sqrt(q_n))^2`` gives
    one event leaving an 11-event cell a tenth of its variance. ``max_cell_n_eff`` (the largest
    Kish N_eff of a nominal cell of the region) and ``sigma_bound`` (``sqrt(sumw2_var +
    sumw2_nom)`` of the region, a strict upper bound for non-negative weights) are recorded too;
  - *pruning*: a region's effect is **pruned** (``-`` in its channels) when its largest
    ``|delta|`` is below ``min_effect`` (default 0.1 %) or when neither variation reaches
    ``prune_sigma`` (default 2) times its event-correlated error ``z = |delta| / sigma``. A net
    migration of k equal-weight events has z = sqrt(k): one event is exactly 1 sigma, so the
    default needs the coherent net move of >= 4 events. A source pruned in every region is no
    row of the card and is listed (with its numbers) in ``pruned`` / ``skipped``;
  - *one-sided* (both variations on the same side of nominal, or one of them zero):
    **symmetrised** as in CMS practice, to the larger ``|ln kappa|``: one symmetric lnN ``k``
    with ``k = k_up`` when the up variation is the larger, ``k = 1 / k_down`` when the down one
    is (the larger variation keeps its direction, the other side mirrors it in ln kappa);
  - a kept variation that empties the region (yield <= 0: all its events migrated out, or
    negative weights) cannot be a log-normal: the region takes the other variation mirrored
    (symmetric, as above), or is pruned when that is empty too. **A kappa of 0 is never clipped
    to 0.1.** Kappas outside ``[0.1, 10]`` are still clipped (recorded), but only from a
    region whose effect is significant;
  - two-sided effects: the pair ``kdown/kup`` (Combine's asymmetric lnN);
  - a source whose up or down variation is missing for the dataset, or whose variation
    histograms are all zero, is no nuisance; the reason is recorded in ``skipped``.

* **signal MC statistics** per channel, Combine's ``autoMCStats`` logic for one process: the
  Kish effective count ``N_eff = (sum w)^2 / sum w^2`` of the channel's signal (parent-aware
  variances, :mod:`.parents`); for ``N_eff >= mcstat_neff_min`` (default 10) a Gaussian-like
  ``mcstat_<channel> lnN 1 + sqrt(sumw2)/sumw`` (= ``1 + 1/sqrt(N_eff)``); below, a Poisson
  (gamma) term ``mcstat_<channel> gmN N alpha`` on ``sig`` in that channel (``-`` elsewhere)
  with ``N = N_eff`` rounded to the nearest integer (at least 1) and ``alpha = yield / N``, so
  that ``N * alpha`` equals the rate. Channels without signal get no term.
  :meth:`SignalSystematics.card_rows` returns :class:`CardRow` rows with ``kind`` ``"lnN"`` or
  ``"gmN"`` (and ``count`` = N); :func:`row_tokens` writes one as card tokens (the card writer
  does). With ``gmn=False`` those channels keep the lnN ``1 + 1/sqrt(N_eff)`` and the index says
  so (``mcstat_gmn_wanted``);

* luminosity: ``lumi`` lnN (``lumi_unc``, default 1.016) as before, or any set of rows
  ``{name: kappa}`` from the configuration (e.g. ``{"lumi_2018": 1.025, "lumi_corr": 1.02}``:
  an uncorrelated per-era part and a part correlated between eras), each on ``sig`` in every
  channel.

The background stays data-driven (rateParams) and gets no detector systematics.

Configuration (:func:`systematics_config`): ``None`` = everything on; ``False`` = off; a mapping
(or the job's ``systematics`` model) with ``enabled``, ``sources`` (a list of the sources to use,
or ``{source: bool}``), ``<source>: bool`` (or ``{enabled: bool, ...}``), ``mcstat: bool``,
``lumi: {name: kappa}`` (a number means ``{"lumi": number}``), ``prune_sigma``, ``min_effect`` and
``mcstat_neff_min`` (numbers). Other keys (payload names, eras, ...) belong to the processor and
are ignored here.

Example:
    >>> cfg = systematics_config({"jer": False, "lumi": {"lumi_2018": 1.025}, "prune_sigma": 1.5})
    >>> cfg.use("jes"), cfg.use("jer"), cfg.lumi, cfg.prune_sigma
    (True, False, {'lumi_2018': 1.025}, 1.5)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from svjscout.core.constants import LUMI_UNCERTAINTY, MCSTAT_NEFF_MIN, MIN_EFFECT, PRUNE_SIGMA
from svjscout.core.exceptions import DatacardError, HistogramError
from svjscout.core.formats import card_number
from svjscout.core.regions import REGIONS
from svjscout.processors.variations import SOURCES, SystematicsSettings

from . import style as st
from .parents import ParentRecords
from .regions import parse_wp, plane_arrays, region_yields, snap_threshold

log = logging.getLogger(__name__)

SYST_AXES: tuple[str, ...] = ("dataset", "syst", "plane", "x", "y", "mt")
#: display order of the sources the processor fills (others follow alphabetically)
KNOWN_SOURCES: tuple[str, ...] = ("jes", "jer", "unclustered", "pileup", "trigger", "isr", "fsr", "pdf", "scale")
REGION_NAMES: tuple[str, ...] = tuple(REGIONS)
#: sources that change the weights of the events (which keep their cells), and those that move the
#: events (which keep their weights): processors/variations.py. Others: "unknown".
WEIGHT_SOURCES: tuple[str, ...] = ("pileup", "trigger", "isr", "fsr", "pdf", "scale")
KINEMATIC_SOURCES: tuple[str, ...] = ("jes", "jer", "unclustered")
KAPPA_RANGE: tuple[float, float] = (0.1, 10.0)
TINY = 1e-4  # |ln k| below this: a variation with no effect (one-sided test, mirroring)
MCSTAT_MIN = 1e-3  # relative MC statistical error below this: no mcstat nuisance


# --------------------------------------------------------------------------------------------
# configuration


def _switch(v, key: str) -> bool:
    if isinstance(v, Mapping):
        v = v.get("enabled", True)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    raise DatacardError(f"systematics.{key} must be true/false (or a mapping with 'enabled'), got {v!r}")


def systematics_config(obj=None) -> SystematicsSettings:
    """The job's one systematics model (:class:`~svjscout.processors.variations.SystematicsSettings`,
    ``analysis.systematics``) from what a caller of the card writer gives.

    A :class:`SystematicsSettings` is used as it is (the job's route). From Python, the writer
    called with ``None`` uses every variation of the ``xy_mt_syst`` it is given (enabled, all
    sources), ``False`` none; a mapping holds the model's keys (``enabled`` true unless it says
    otherwise) and, as shorthands, ``sources`` as ``{source: bool}`` and ``<source>: bool`` (or
    ``{enabled: bool}``); other keys (the processor's payload names, eras, ...) are ignored here.

    Raises:
        DatacardError: a switch that is not a bool, a lumi kappa that is not a positive number, a
            threshold (``prune_sigma``, ``min_effect``, ``mcstat_neff_min``) that is not a number >= 0,
            an unknown source (each names its key).
    """
    if isinstance(obj, SystematicsSettings):
        return obj
    if obj is None or isinstance(obj, (bool, np.bool_)):
        return SystematicsSettings(enabled=True if obj is None else bool(obj), sources=None)
    if not isinstance(obj, Mapping):
        if hasattr(obj, "model_dump"):
            obj = obj.model_dump()
        elif hasattr(obj, "__dict__"):
            obj = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
        else:
            raise DatacardError("systematics configuration must be a mapping, a bool or None, "
                                f"got {type(obj).__name__}")
    fields = set(SystematicsSettings.model_fields)
    data = {k: v for k, v in obj.items() if k in fields and v is not None}
    data["enabled"] = _switch(obj.get("enabled", True), "enabled")
    if "mcstat" in data:
        data["mcstat"] = _switch(data["mcstat"], "mcstat")
    src = obj.get("sources")
    switches = {str(k): _switch(v, str(k)) for k, v in obj.items()
                if k not in fields and (isinstance(v, (bool, np.bool_)) or (isinstance(v, Mapping) and "enabled" in v))}
    if isinstance(src, Mapping):
        switches.update({str(k): _switch(v, f"sources.{k}") for k, v in src.items()})
    elif isinstance(src, (list, tuple)):
        data["sources"] = [str(k) for k in src]
    elif src is not None:
        raise DatacardError(f"systematics.sources must be a list of sources or {{source: bool}}, got {src!r}")
    if not isinstance(src, (list, tuple)):
        # every source unless switched off: the registry's and any switched on by name
        off = {k for k, v in switches.items() if not v}
        named = [*SOURCES, *(k for k, v in switches.items() if v and k not in SOURCES)]
        data["sources"] = None if not off else [s for s in named if s not in off]
    for key in ("prune_sigma", "min_effect", "mcstat_neff_min"):
        if isinstance(data.get(key), (bool, np.bool_)):
            raise DatacardError(f"systematics.{key} must be a number, got {data[key]!r}")
    try:
        return SystematicsSettings.model_validate(data, context={"any_source": True})
    except ValidationError as err:
        problems = "; ".join(f"systematics.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
        raise DatacardError(problems) from None


# --------------------------------------------------------------------------------------------
# the xy_mt_syst histogram


def check_syst_histogram(xy_mt_syst, xy_mt) -> None:
    """Raise :class:`HistogramError` unless ``xy_mt_syst`` has the axes of :data:`SYST_AXES` and the
    x, y, M_T binning and planes of ``xy_mt``."""
    names = [ax.name for ax in xy_mt_syst.axes]
    missing = [a for a in SYST_AXES if a not in names]
    if missing:
        raise HistogramError(f"xy_mt_syst histogram lacks axis/axes {missing}; found {names}, expected "
                             f"{list(SYST_AXES)}")
    for a in ("x", "y", "mt"):
        e1, e2 = np.asarray(xy_mt_syst.axes[a].edges, float), np.asarray(xy_mt.axes[a].edges, float)
        if e1.shape != e2.shape or not np.allclose(e1, e2):
            raise HistogramError(f"xy_mt_syst axis '{a}' edges {e1.tolist()} differ from xy_mt's {e2.tolist()}")


def source_names(systs: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(sources, unrecognised)`` from the names of the ``syst`` axis (``<source>_up``/``_down``)."""
    found, other = [], []
    for s in systs:
        for suf in ("_up", "_down"):
            if s.endswith(suf) and len(s) > len(suf):
                found.append(s[: -len(suf)])
                break
        else:
            other.append(s)
    found = list(dict.fromkeys(found))
    order = {s: i for i, s in enumerate(KNOWN_SOURCES)}
    return sorted(found, key=lambda s: (order.get(s, len(order)), s)), other


class _SystArrays:
    """Values and variances of ``xy_mt_syst`` for one dataset and plane, ``(nx, ny, n_mt)`` per syst."""

    def __init__(self, xy_mt_syst, dataset: str, plane: str):
        order = [ax.name for ax in xy_mt_syst.axes]
        self.systs = list(xy_mt_syst.axes["syst"])
        self.datasets = list(xy_mt_syst.axes["dataset"])
        planes = list(xy_mt_syst.axes["plane"])
        if plane not in planes:
            raise HistogramError(f"plane '{plane}' not in xy_mt_syst plane axis {planes}")
        self.present = dataset in self.datasets
        self._vals = self._vars = None
        if self.present:
            perm = [order.index(a) for a in SYST_AXES]
            d = self.datasets.index(dataset)
            vals = np.transpose(np.asarray(xy_mt_syst.values(flow=False)), perm)
            self._vals = vals[d]  # (syst, plane, x, y, mt), a view
            var = xy_mt_syst.variances(flow=False)
            # no variances stored (Double storage): unit weights, as plane_arrays does for xy_mt
            self._vars = np.abs(self._vals) if var is None else np.transpose(np.asarray(var), perm)[d]
            self._plane = planes.index(plane)

    def has(self, syst: str) -> bool:
        return self.present and syst in self.systs

    def empty(self, syst: str) -> bool:
        """True when the variation holds nothing for this dataset (all planes all zero)."""
        return not np.any(self._vals[self.systs.index(syst)])

    def plane(self, syst: str) -> np.ndarray:
        return np.asarray(self._vals[self.systs.index(syst), self._plane], dtype=float)

    def plane_var(self, syst: str) -> np.ndarray:
        return np.asarray(self._vars[self.systs.index(syst), self._plane], dtype=float)


# --------------------------------------------------------------------------------------------
# the effect of one source on the M_T-integrated signal of each region


def region_slices(ix: int, iy: int) -> list[tuple[slice, slice]]:
    """``(x slice, y slice)`` of regions A, B, C, D of an ``(nx, ny, ...)`` array at threshold
    indices ``ix, iy`` (A: X>x0,Y<y0  B: X>x0,Y>y0  C: X<x0,Y<y0  D: X<x0,Y>y0)."""
    return [(slice(ix, None), slice(None, iy)), (slice(ix, None), slice(iy, None)),
            (slice(None, ix), slice(None, iy)), (slice(None, ix), slice(iy, None))]


def source_kind(source: str) -> str:
    """How a source changes the events (processors/variations.py): ``"weight"`` (every event keeps
    its cell, its weight changes: pileup, trigger, isr, fsr, pdf, scale), ``"kinematic"`` (every
    event keeps its weight and may change cell: jes, jer, unclustered) or ``"unknown"``."""
    return "weight" if source in WEIGHT_SOURCES else ("kinematic" if source in KINEMATIC_SOURCES else "unknown")


def difference_variance(nom: np.ndarray, nom_var: np.ndarray, var: np.ndarray, var_var: np.ndarray,
                        kind: str = "unknown") -> np.ndarray:
    """Per cell, the estimated MC variance of ``Y_var - Y_nom``, ``sum_e (w_var,e - w_nom,e)^2`` over the
    cell's events, from the cell sums (``s`` = sumw, ``q`` = sumw2, nominal ``n``, variation ``v``):

    * ``"weight"``: ``q_v + q_n - 2 wbar s_v`` with ``wbar = q_n / s_n`` the cell's mean nominal
      weight: exact when the cell's events have equal nominal weights, whatever their ratios
      (``sum w^2 (r_e - 1)^2 = q_v - 2 w sum w r_e + q_n``); never below the strict lower bound
      ``(sqrt(q_v) - sqrt(q_n))^2`` (triangle inequality);
    * ``"kinematic"``: ``|q_v - q_n|``, the squared weights of the events that left or entered
      the cell: exact where a cell only loses or only gains events (an event that moves between
      two cells of one region counts in both: conservative);
    * ``"unknown"``: the larger of the two.
    """
    sn, qn = np.asarray(nom, float), np.clip(np.asarray(nom_var, float), 0, None)
    sv, qv = np.asarray(var, float), np.clip(np.asarray(var_var, float), 0, None)
    mink = (np.sqrt(qv) - np.sqrt(qn)) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        wbar = np.where(sn > 0, qn / np.where(sn > 0, sn, 1.0), 0.0)
    weight = np.maximum(qv + qn - 2.0 * wbar * sv, mink)
    moved = np.abs(qv - qn)
    if kind == "weight":
        return weight
    if kind == "kinematic":
        return moved
    return np.maximum(weight, moved)


def variation_effect(nom: np.ndarray, nom_var: np.ndarray, var: np.ndarray, var_var: np.ndarray,
                     kind: str = "unknown") -> dict:
    """Relative effect of one variation on the sum of some cells, with its event-correlated error.

    Args:
        nom, nom_var: nominal sumw and sumw2 of the cells (any shape).
        var, var_var: the variation's sumw and sumw2 of the same cells.
        kind: how the source changes the events (:func:`source_kind`, :func:`difference_variance`).

    Returns:
        ``{"nominal", "yield", "effect", "sigma", "z", "sigma_bound"}``: ``effect = Y_var / Y_nom - 1``;
        ``sigma`` its event-correlated MC error ``sqrt(sum_cells difference_variance) / Y_nom``;
        ``z = |effect| / sigma`` (0 for no effect, inf for an effect with sigma 0);
        ``sigma_bound = sqrt(sumw2_var + sumw2_nom) / Y_nom``, a strict upper bound of the error for
        non-negative weights. None values where ``Y_nom <= 0``.
    """
    n0, y = float(np.sum(nom)), float(np.sum(var))
    d2 = float(np.sum(difference_variance(nom, nom_var, var, var_var, kind)))
    bound = float(np.sqrt(max(float(np.sum(var_var)) + float(np.sum(nom_var)), 0.0)))
    if not n0 > 0:
        return {"nominal": n0, "yield": y, "effect": None, "sigma": None, "z": None, "sigma_bound": None}
    eff, sig = y / n0 - 1.0, np.sqrt(d2) / n0
    z = abs(eff) / sig if sig > 0 else (0.0 if eff == 0 else float("inf"))
    return {"nominal": n0, "yield": y, "effect": eff, "sigma": float(sig), "z": float(z), "sigma_bound": bound / n0}


def _kish(n: float, v: float) -> float:
    return float(n * n / v) if v > 0 and n > 0 else 0.0


def _pc(v: float) -> str:
    return f"{100 * v:+.1f} %"


def decide_region(up: dict, down: dict, prune_sigma: float = PRUNE_SIGMA, min_effect: float = MIN_EFFECT,
                  kappa_range: tuple[float, float] = KAPPA_RANGE, tiny: float = TINY) -> dict:
    """What the card carries for one region from the effects of the two variations
    (:func:`variation_effect`): ``{"status", "why", "kappa", "text", "symmetrised", "emptied", "clips"}``.

    ``status``: ``"no signal"`` (nominal <= 0), ``"pruned"`` or ``"kept"``; ``kappa``: ``[kdown, kup]``
    (kept; ``kdown = 1 / kup`` when symmetrised); ``text`` the card value (``k`` symmetric or
    ``kdown/kup``). Rules: see the module docstring.
    """
    out = {"status": "kept", "why": "", "kappa": None, "text": None, "symmetrised": False, "emptied": [], "clips": []}
    if up["effect"] is None:
        return {**out, "status": "no signal", "why": "no signal in the region"}
    e = {"up": up["effect"], "down": down["effect"]}
    z = {"up": up["z"], "down": down["z"]}
    big = max(("up", "down"), key=lambda k: (abs(e[k]), k))
    zmax = max(z.values())
    if abs(e[big]) < min_effect:
        return {**out, "status": "pruned", "why": f"effect below {100 * min_effect:g} % (largest {_pc(e[big])})"}
    if zmax < prune_sigma:
        return {**out, "status": "pruned",
                "why": f"compatible with MC noise: up {_pc(e['up'])} ({z['up']:.1f} sigma), down {_pc(e['down'])} "
                       f"({z['down']:.1f} sigma) of the event-correlated MC error, both below {prune_sigma:g} sigma"}
    k = {v: 1.0 + e[v] for v in ("up", "down")}
    out["emptied"] = [v for v in ("up", "down") if not k[v] > 0]
    lnk = {v: (float(np.log(k[v])) if k[v] > 0 else None) for v in k}
    sym = None  # symmetric kappa: theta = +1 multiplies the yield by sym
    if out["emptied"]:
        other = "down" if out["emptied"] == ["up"] else ("up" if out["emptied"] == ["down"] else None)
        if other is None or abs(lnk[other]) < tiny:
            return {**out, "status": "pruned",
                    "why": "the variation(s) " + " and ".join(out["emptied"]) + " empty the region (all its signal "
                           "migrates out); a log-normal cannot describe a total loss and the other side has no effect"}
        sym = k[other] if other == "up" else 1.0 / k[other]
        out["why"] = (f"the {out['emptied'][0]} variation empties the region (a log-normal cannot describe a total "
                      f"loss): symmetrised from the {other} variation ({_pc(e[other])})")
    elif (k["up"] - 1.0) * (k["down"] - 1.0) >= 0 or min(abs(lnk["up"]), abs(lnk["down"])) < tiny:
        # one-sided: the larger |ln k| for both directions, the larger variation keeping its direction
        larger = "up" if abs(lnk["up"]) >= abs(lnk["down"]) else "down"
        sym = k["up"] if larger == "up" else 1.0 / k["down"]
        out["why"] = (f"one-sided (up {_pc(e['up'])}, down {_pc(e['down'])}): symmetrised to the larger, "
                      f"the {larger} variation")
    lo, hi = kappa_range
    if sym is not None:
        out["symmetrised"] = True
        ks = float(np.clip(sym, lo, hi))
        if ks != sym:
            out["clips"].append({"variation": "symmetric", "kappa": float(sym), "clipped_to": ks})
        out["kappa"], out["text"] = [1.0 / ks, ks], kappa_text(ks)
        return out
    kd, ku = (float(np.clip(k[v], lo, hi)) for v in ("down", "up"))
    for v, kc in (("down", kd), ("up", ku)):
        if kc != k[v]:
            out["clips"].append({"variation": v, "kappa": float(k[v]), "clipped_to": kc})
    out["kappa"], out["text"] = [kd, ku], kappa_text((kd, ku))
    return out


def source_regions(nom: np.ndarray, nom_var: np.ndarray, up: tuple[np.ndarray, np.ndarray],
                   down: tuple[np.ndarray, np.ndarray], ix: int, iy: int, cfg: SystematicsSettings | None = None,
                   kappa_range: tuple[float, float] = KAPPA_RANGE, tiny: float = TINY,
                   kind: str = "unknown") -> list[dict]:
    """Per region A, B, C, D: the M_T-integrated effect of both variations of one source and what the
    card carries (:func:`variation_effect`, :func:`decide_region`).

    Args:
        nom, nom_var: nominal sumw, sumw2 cells ``(nx, ny, n_mt)`` (the M_T bins to integrate).
        up, down: ``(sumw, sumw2)`` of the variations, same shape.
        ix, iy: threshold indices of the working point.
        cfg: thresholds (``prune_sigma``, ``min_effect``).
        kind: how the source changes the events (:func:`source_kind`).

    Returns:
        four dicts ``{"region", "nominal", "n_eff", "max_cell_n_eff", "up", "down", **decision}``.
    """
    cfg = cfg or systematics_config(None)
    out = []
    for r, (xs, ys) in enumerate(region_slices(ix, iy)):
        n0, v0 = nom[xs, ys], nom_var[xs, ys]
        eff = {k: variation_effect(n0, v0, a[0][xs, ys], a[1][xs, ys], kind) for k, a in (("up", up), ("down", down))}
        with np.errstate(divide="ignore", invalid="ignore"):
            cell = np.where((v0 > 0) & (n0 > 0), n0 ** 2 / np.where(v0 > 0, v0, 1.0), 0.0)
        rec = {"region": REGIONS[r], "kind": kind, "nominal": float(n0.sum()),
               "n_eff": _kish(float(n0.sum()), float(v0.sum())),
               "max_cell_n_eff": float(cell.max()) if cell.size else 0.0, **eff}
        rec.update(decide_region(eff["up"], eff["down"], cfg.prune_sigma, cfg.min_effect, kappa_range, tiny))
        out.append(rec)
    return out


# --------------------------------------------------------------------------------------------
# the nuisances of one signal point


def kappa_text(v) -> str:
    """Card text of a kappa: a number (symmetric) or ``kdown/kup`` (pair)."""
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple, np.ndarray)):
        return f"{card_number(float(v[0]))}/{card_number(float(v[1]))}"
    return card_number(float(v))


class CardRow(tuple):
    """One signal row of a card: the tuple ``(name, {(region index, bin): text})`` (so ``name, values
    = row`` works) with ``kind`` (``"lnN"`` or ``"gmN"``) and ``count`` (gmN's N, else None).

    For a gmN row the text of its channel is ``alpha``; the card line is ``name gmN N`` and then
    ``alpha`` in the sig column of that channel and ``-`` in every other column (:func:`row_tokens`).
    """

    def __new__(cls, name: str, values: Mapping, kind: str = "lnN", count: int | None = None):
        self = super().__new__(cls, (name, dict(values)))
        self.kind, self.count = kind, count
        return self

    @property
    def name(self) -> str:
        return self[0]

    @property
    def values(self) -> dict:
        return self[1]


def row_tokens(row, ridx: Sequence[tuple[int, int]], procs: Sequence[str] = ("sig", "bkg")) -> list[str]:
    """Card tokens of one signal row: ``[name, kind, (N for gmN), value per column]``, the columns
    being ``ridx`` (channel order, ``(region index, bin)``) times ``procs``; values on ``sig`` only.

    Works for a :class:`CardRow` and for a plain ``(name, values)`` pair (an lnN row).
    """
    name, values = row[0], row[1]
    kind, count = getattr(row, "kind", "lnN"), getattr(row, "count", None)
    head = [name, kind] + ([str(int(count))] if kind == "gmN" else [])
    return head + [values.get(ri, "-") if p == "sig" else "-" for ri in ridx for p in procs]


@dataclass
class SignalSystematics:
    """The signal nuisances of one card.

    Attributes:
        dataset, plane: the signal dataset and the fit plane.
        channels: channel names, shape ``(4, n)`` as the yields (rows A, B, C, D).
        nominal: the signal yields of the channels, ``(4, n)``.
        sources: ``{source: {"regions": [4 region records of source_regions], "kappa": {(r, i): text},
            "B": {"up", "down"}, ...}}`` for every source written to the card.
        pruned: the same for sources pruned in every region (not in the card).
        skipped: ``{source: reason}`` for sources that are no nuisance of this card (pruned ones too).
        mcstat: ``{(r, i): kappa}`` of the lnN MC-statistics terms; mcstat_gmn: ``{(r, i): {"N", "alpha",
            "n_eff"}}`` of the gmN terms; mcstat_n_eff: ``{(r, i): N_eff}`` of every channel with signal;
            mcstat_gmn_wanted: channels below the N_eff threshold written as lnN because the writer
            cannot write gmN; mcstat_skipped: ``{channel: reason}``; mcstat_b_total: relative MC stat.
            error of the total signal in B.
        lumi: ``{name: kappa}`` rows on the signal in every channel.
        not_positive: channels whose nominal signal is <= 0 (``-`` in every source row).
        config: the thresholds used.
    """

    dataset: str
    plane: str
    channels: list[list[str]]
    nominal: np.ndarray
    sources: dict[str, dict] = field(default_factory=dict)
    pruned: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    mcstat: dict[tuple[int, int], float] = field(default_factory=dict)
    mcstat_gmn: dict[tuple[int, int], dict] = field(default_factory=dict)
    mcstat_n_eff: dict[tuple[int, int], float] = field(default_factory=dict)
    mcstat_gmn_wanted: list[str] = field(default_factory=list)
    mcstat_skipped: dict[str, str] = field(default_factory=dict)
    mcstat_clips: list[dict] = field(default_factory=list)
    mcstat_b_total: float | None = None
    lumi: dict = field(default_factory=dict)
    not_positive: list[str] = field(default_factory=list)
    unrecognised: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def card_rows(self) -> list[CardRow]:
        """Rows for :func:`.writer.format_card`: sources (lnN, symmetric ``k`` or ``kdown/kup``), then
        ``mcstat_<channel>`` in channel order (lnN ``k``, or gmN with ``count`` N and ``alpha`` as the
        channel's text). Each row is a :class:`CardRow`: ``name, values = row`` as before, and
        ``row.kind``/``row.count`` for the type; :func:`row_tokens` gives the card tokens."""
        rows = [CardRow(src, info["kappa"]) for src, info in self.sources.items()]
        n = len(self.channels[0]) if self.channels else 0
        for r in range(len(REGIONS)):
            for i in range(n):
                name = f"mcstat_{self.channels[r][i]}"
                if (r, i) in self.mcstat:
                    rows.append(CardRow(name, {(r, i): kappa_text(self.mcstat[(r, i)])}))
                elif (r, i) in self.mcstat_gmn:
                    g = self.mcstat_gmn[(r, i)]
                    rows.append(CardRow(name, {(r, i): kappa_text(g["alpha"])}, "gmN", g["N"]))
        return rows

    def nuisance_names(self) -> list[str]:
        return [row[0] for row in self.card_rows()]

    def _source_index(self, s: str, info: dict) -> dict:
        regs = {}
        for rec in info["regions"]:
            regs[rec["region"]] = {k: rec[k] for k in ("status", "why", "kind", "nominal", "n_eff", "max_cell_n_eff",
                                                       "up", "down", "symmetrised", "emptied", "clips")}
            regs[rec["region"]]["kappa"] = rec["kappa"]
            regs[rec["region"]]["card"] = rec["text"]
        return {"nuisance": s if s in self.sources else None, "B": info["B"], "regions": regs,
                "channels": [self.channels[r][i] for r, i in info["kappa"]],
                "kappa": {self.channels[r][i]: t for (r, i), t in info["kappa"].items()},
                "symmetrised": [rec["region"] for rec in info["regions"] if rec["symmetrised"]],
                "pruned_regions": [rec["region"] for rec in info["regions"] if rec["status"] == "pruned"],
                "clips": [{"region": rec["region"], **c} for rec in info["regions"] for c in rec["clips"]],
                "emptied": [{"region": rec["region"],
                             "variation": v} for rec in info["regions"] for v in rec["emptied"]]}

    def to_index(self) -> dict:
        """JSON-safe record for ``index.json``: per source (kept or pruned) the per-region effects with
        their event-correlated errors and significances, the decision and the card values; the MC
        statistics terms per channel; the luminosity rows."""
        ch = lambda ri: self.channels[ri[0]][ri[1]]  # noqa: E731
        mc = {}
        for ri in sorted(set(self.mcstat) | set(self.mcstat_gmn)):
            rec = {"channel": ch(ri), "yield": float(self.nominal[ri]), "n_eff": self.mcstat_n_eff.get(ri)}
            if ri in self.mcstat:
                rec.update({"type": "lnN", "kappa": float(self.mcstat[ri])})
            else:
                rec.update({"type": "gmN", "N": int(self.mcstat_gmn[ri]["N"]),
                            "alpha": float(self.mcstat_gmn[ri]["alpha"])})
            mc[f"mcstat_{ch(ri)}"] = rec
        nb = float(self.nominal[1].sum()) if self.nominal.size else 0.0
        return {
            "dataset": self.dataset, "plane": self.plane, "signal_B": nb, "convention": dict(self.config),
            "sources": {s: self._source_index(s, i) for s, i in self.sources.items()},
            "pruned": {s: self._source_index(s, i) for s, i in self.pruned.items()},
            "skipped": dict(self.skipped), "mcstat": mc, "mcstat_skipped": dict(self.mcstat_skipped),
            "mcstat_gmn_wanted": list(self.mcstat_gmn_wanted), "mcstat_clips": self.mcstat_clips,
            "mcstat_B_total": self.mcstat_b_total,
            "lumi": {k: (list(v) if isinstance(v, (list, tuple)) else float(v)) for k, v in self.lumi.items()},
            "nominal_not_positive": self.not_positive, "unrecognised_syst_names": self.unrecognised,
        }


def mcstat_term(n: float, var: float, neff_min: float = MCSTAT_NEFF_MIN, mcstat_min: float = MCSTAT_MIN) -> dict:
    """The MC-statistics term of one channel (Combine's autoMCStats logic for one process).

    Returns:
        ``{"type": "lnN", "kappa", "n_eff"}`` for ``N_eff >= neff_min``; ``{"type": "gmN", "N", "alpha",
        "n_eff"}`` below (``N = round(N_eff)`` >= 1, ``alpha = n / N``); ``{"type": None, "why"}`` for no
        term (no signal, no variance, relative error below ``mcstat_min``).
    """
    if not n > 0:
        return {"type": None, "why": "no signal (yield <= 0)"}
    if not var > 0:
        return {"type": None, "why": "no MC variance recorded"}
    neff = n * n / var
    if neff >= neff_min:
        rel = float(np.sqrt(var) / n)
        if rel < mcstat_min:
            return {"type": None, "why": f"relative MC stat. error {rel:.2g} < {mcstat_min:g}", "n_eff": neff}
        return {"type": "lnN", "kappa": 1.0 + rel, "n_eff": neff}
    N = max(1, int(np.floor(neff + 0.5)))
    return {"type": "gmN", "N": N, "alpha": float(n / N), "n_eff": neff}


def signal_systematics(xy_mt, xy_mt_syst, datasets: Mapping[str, Mapping], wp, groups: Sequence[Sequence[int]],
                       signal: str, plane: str = "SP", config=None, lumi_unc: float = LUMI_UNCERTAINTY,
                       kappa_range: tuple[float, float] = KAPPA_RANGE, tiny: float = TINY,
                       mcstat_min: float = MCSTAT_MIN, gmn: bool = True,
                       card_xy_mt=None, parents: ParentRecords | None = None) -> SignalSystematics:
    """The signal nuisances of the card of ``signal`` (see the module docstring).

    Args:
        xy_mt: nominal histogram ``(dataset, plane, x, y, mt)``.
        xy_mt_syst: variations ``(dataset, syst, plane, x, y, mt)`` or None (no sources then).
        datasets: dataset metadata.
        wp: working point ``(x0, y0)``.
        groups: M_T bin groups of the card (from :func:`.writer.merge_groups`); the sources'
            effects integrate the M_T bins of these groups.
        signal: the signal dataset.
        plane: the fit plane ("SP").
        config: :func:`systematics_config` input (None: all on, default thresholds).
        lumi_unc: kappa of the ``lumi`` row when the configuration names no lumi rows.
        kappa_range: kappas of significant effects are clipped into it (recorded).
        tiny: ``|ln k|`` below this: a variation without effect (one-sided test).
        mcstat_min: relative MC statistical error below this: no ``mcstat_<channel>``.
        gmn: whether MC-statistics terms below the N_eff threshold are gmN rows (True, what the
            card writer writes with :func:`row_tokens`) or lnN ``1 + 1/sqrt(N_eff)`` (False).
        card_xy_mt: the histogram the card's signal rates come from when it is not ``xy_mt``
            (cards written from a half of the MC while ``xy_mt_syst`` was filled with the full
            ``xy_mt``): the channels with signal and the MC-statistics terms (gmN ``N * alpha``
            must equal the rate) come from it, the sources' relative effects from ``xy_mt``.
        parents: the parent records of the histogram the rates come from (``card_xy_mt``, else
            ``xy_mt``): parent-aware MC-statistics terms; None: per-bin variances.

    Returns:
        :class:`SignalSystematics`.
    """
    cfg = systematics_config(config)
    gmn = bool(gmn)
    x0, y0 = parse_wp(wp)
    rates_h = xy_mt if card_xy_mt is None else card_xy_mt
    nom = region_yields(rates_h, datasets, (x0, y0), plane=plane, which=[signal], poisson=False,
                        parents=parents).merged(groups)
    n = nom.n.shape[1]
    chans = [[f"{plane}_{R}_{i}" for i in range(n)] for R in REGIONS]
    conv = {"integration": "M_T-integrated yield per region (A, B, C, D); one kappa for every M_T bin of the region",
            "prune_sigma": cfg.prune_sigma, "min_effect": cfg.min_effect, "mcstat_neff_min": cfg.mcstat_neff_min,
            "symmetrisation": "one-sided: the larger |ln kappa| for both directions",
            "error": "event-correlated, per cell: weight sources q_v + q_n - 2 wbar s_v, kinematic |q_v - q_n|",
            "gmN_rows": gmn}
    out = SignalSystematics(signal, plane, chans, nom.n.copy(), lumi=cfg.lumi_rows(lumi_unc), config=conv)
    out.not_positive = [chans[r][i] for r in range(len(REGIONS)) for i in range(n) if not nom.n[r, i] > 0]
    lo, hi = kappa_range

    if cfg.mcstat:
        for r in range(len(REGIONS)):
            for i in range(n):
                c = chans[r][i]
                t = mcstat_term(float(nom.n[r, i]), float(nom.var[r, i]), cfg.mcstat_neff_min, mcstat_min)
                if t.get("n_eff") is not None:
                    out.mcstat_n_eff[(r, i)] = float(t["n_eff"])
                if t["type"] is None:
                    out.mcstat_skipped[c] = t["why"]
                elif t["type"] == "gmN" and gmn:
                    out.mcstat_gmn[(r, i)] = {"N": t["N"], "alpha": t["alpha"], "n_eff": t["n_eff"]}
                else:
                    if t["type"] == "gmN":  # the writer cannot write gmN: the Gaussian-like term instead
                        out.mcstat_gmn_wanted.append(c)
                        t = {"kappa": 1.0 + 1.0 / np.sqrt(t["n_eff"])}
                    k = float(t["kappa"])
                    if k > hi:
                        out.mcstat_clips.append({"channel": c, "kappa": k, "clipped_to": hi})
                        k = hi
                    out.mcstat[(r, i)] = k
        if out.mcstat_gmn_wanted:
            log.warning("signal %s: %d channel(s) with signal N_eff < %g written as lnN 1 + 1/sqrt(N_eff), not gmN "
                        "(the card writer has no gmN rows): %s", signal, len(out.mcstat_gmn_wanted),
                        cfg.mcstat_neff_min, ", ".join(out.mcstat_gmn_wanted))
        # the B total's variance: with detector copies, a parent's copies in different bins add first
        nb, vb = nom.n[1].sum(), (nom.var[1].sum() if nom.parents is None else nom.group_var(range(n))[1])
        out.mcstat_b_total = float(np.sqrt(max(vb, 0.0)) / nb) if nb > 0 else None

    if xy_mt_syst is None:
        return out
    check_syst_histogram(xy_mt_syst, xy_mt)
    arrays = _SystArrays(xy_mt_syst, signal, plane)
    sources, out.unrecognised = source_names(list(xy_mt_syst.axes["syst"]))
    ix = snap_threshold(x0, xy_mt_syst.axes["x"].edges, "x")
    iy = snap_threshold(y0, xy_mt_syst.axes["y"].edges, "y")
    mt_bins = sorted({int(b) for g in groups for b in g})
    nom_cells, nom_cvar = (a[..., mt_bins] for a in plane_arrays(xy_mt, [signal], plane))
    for s in sorted(set(cfg.sources or ()) - set(sources)):
        out.skipped[s] = "switched on in the configuration but not in xy_mt_syst"
    for src in sources:
        if not cfg.use(src):
            out.skipped[src] = "switched off in the configuration"
            continue
        names = {"up": f"{src}_up", "down": f"{src}_down"}
        if not arrays.present:
            out.skipped[src] = f"dataset '{signal}' not in xy_mt_syst"
            continue
        absent = [v for v in names.values() if not arrays.has(v)]
        if absent:
            out.skipped[src] = f"variation(s) {absent} missing from xy_mt_syst"
            continue
        empty = [v for v in names.values() if arrays.empty(v)]
        if empty:
            out.skipped[src] = f"variation(s) {empty} empty (all zero) for this dataset: not available"
            continue
        var = {k: (arrays.plane(v)[..., mt_bins], arrays.plane_var(v)[..., mt_bins]) for k, v in names.items()}
        regs = source_regions(nom_cells, nom_cvar, var["up"], var["down"], ix, iy, cfg, kappa_range, tiny,
                              source_kind(src))
        kappa = {(r, i): regs[r]["text"] for r in range(len(REGIONS)) if regs[r]["status"] == "kept"
                 for i in range(n) if nom.n[r, i] > 0}
        info = {"regions": regs, "kappa": kappa, "B": {k: regs[1][k]["effect"] for k in ("up", "down")}}
        clips = [{"region": rec["region"], **c} for rec in regs for c in rec["clips"]]
        if clips:
            log.warning("signal %s, %s: kappas of significant effects clipped into [%g, %g]: %s", signal, src, lo, hi,
                        "; ".join(f"region {c['region']} {c['variation']} {c['kappa']:.4g} -> {c['clipped_to']:g}"
                                  for c in clips))
        if kappa:
            out.sources[src] = info
            continue
        out.pruned[src] = info
        with_signal = [rec for rec in regs if rec["status"] != "no signal"]
        if not with_signal:
            out.skipped[src] = "no region with signal"
            continue
        best = max(with_signal, key=lambda rec: max(rec["up"]["z"], rec["down"]["z"]))
        zb = max(best["up"]["z"], best["down"]["z"])
        out.skipped[src] = (f"pruned in every region with signal: compatible with MC noise or below "
                            f"{100 * cfg.min_effect:g} % (largest significance {zb:.1f} sigma, region "
                            f"{best['region']}: "
                            f"up {_pc(best['up']['effect'])}, down {_pc(best['down']['effect'])}; threshold "
                            f"{cfg.prune_sigma:g} sigma)")
    return out


# --------------------------------------------------------------------------------------------
# summary.md and the plots


def _lumi_pct(v) -> str:
    if isinstance(v, (list, tuple)):
        return f"{100 * (float(v[1]) - 1):+.2f} % / {100 * (float(v[0]) - 1):+.2f} %"
    return f"±{100 * (float(v) - 1):.2f} %"


def _pm(eff: Mapping) -> str:
    if eff.get("effect") is None:
        return "n/a"
    return f"{100 * eff['effect']:+.1f} ± {100 * eff['sigma']:.1f} %"


def _region_cell(reg: Mapping | None) -> str:
    """One region of one source in words: what the card carries and why."""
    if reg is None or reg["status"] == "no signal":
        return "no signal"
    z = max(reg["up"]["z"], reg["down"]["z"])
    meas = f"up {_pm(reg['up'])}, down {_pm(reg['down'])}, {z:.1f}σ"
    if reg["status"] == "pruned":
        if reg["why"].startswith("effect below"):
            return f"pruned, {reg['why']}"
        if "MC noise" in reg["why"]:
            return f"pruned, MC noise ({meas})"
        return f"pruned ({reg['why']})"
    card = f"`{reg['card']}`"
    notes = []
    if reg["symmetrised"]:
        notes.append("symmetrised: " + ("one-sided" if not reg["emptied"]
                                        else f"{reg['emptied'][0]} empties the region"))
    if reg["clips"]:
        notes.append("clipped to [0.1, 10]")
    return f"{card} ({meas}" + ("; " + "; ".join(notes) if notes else "") + ")"


def _mcstat_words(s: Mapping) -> list[str]:
    mc = s.get("mcstat") or {}
    if not mc and not s.get("mcstat_skipped"):
        return []
    conv = s.get("convention") or {}
    thr = conv.get("mcstat_neff_min", MCSTAT_NEFF_MIN)
    gmn = [v for v in mc.values() if v["type"] == "gmN"]
    lnn = [v for v in mc.values() if v["type"] == "lnN"]
    parts = []
    if gmn:
        parts.append(f"gmN (Poisson) in {len(gmn)} channel(s) with N_eff < {thr:g}: " + ", ".join(
            f"{v['channel']} N = {v['N']} (N_eff {v['n_eff']:.1f}, α {v['alpha']:.4g})" for v in gmn))
    if lnn:
        parts.append(f"lnN in {len(lnn)} channel(s): " + ", ".join(
            f"{v['channel']} κ = {v['kappa']:.4g} (N_eff {v['n_eff']:.1f})" if v.get("n_eff") is not None
            else f"{v['channel']} κ = {v['kappa']:.4g}" for v in lnn))
    words = ["Signal MC statistics (one term per channel): " + ("; ".join(parts) or "none") + "."]
    if s.get("mcstat_gmn_wanted"):
        words.append(f"Channels below N_eff {thr:g} written as lnN 1 + 1/sqrt(N_eff) because the card writer has no "
                     f"gmN rows: {', '.join(s['mcstat_gmn_wanted'])}.")
    tot = s.get("mcstat_B_total")
    if tot is not None:
        words.append(f"Relative MC error of the total signal in B: {100 * tot:.1f} %.")
    return [" ".join(words), ""]


def summary_lines(index: Mapping) -> list[str]:
    """Markdown lines of the "Signal systematics" section of ``summary.md`` from ``index.json``.

    One table per signal point: per source whether it is a row of the card, and per region A, B, C,
    D what the card carries (the kappa text), the measured up/down effect on the M_T-integrated
    signal with its event-correlated MC error and significance, and why a region was pruned or
    symmetrised; sources not available with their reason; the luminosity rows; then the signal MC
    statistics terms per channel (gmN or lnN with N_eff) in words.
    """
    lines = ["## Signal systematics", ""]
    meta = index.get("systematics") or {}
    points = {p: m["systematics"] for p, m in sorted((index.get("points") or {}).items()) if m.get("systematics")}
    if not meta.get("applied") or not points:
        reason = meta.get("reason") or "not computed for these cards"
        return lines + [f"No signal systematics in the cards ({reason}); the signal carries the `lumi` lnN "
                        f"{index.get('lumi_unc', '')} only.", ""]
    plane = index.get("plane", "SP")
    conv = next(iter(points.values())).get("convention") or {}
    ps, me, thr = conv.get("prune_sigma", PRUNE_SIGMA), conv.get("min_effect", MIN_EFFECT), conv.get(
        "mcstat_neff_min", MCSTAT_NEFF_MIN)
    lines += [
        f"What the cards carry. Each source is one nuisance, correlated across channels and signal points, that "
        f"scales the signal of each region (A, B, C, D of {plane}) by one kappa: the variation's M_T-integrated "
        "yield in the region over the nominal, the same for every M_T bin of the region (the signal MC is too thin "
        "for M_T shapes). The error of an effect is the MC statistics of the events that change between the "
        "variation and the nominal (the same events make both), estimated cell by cell; a region's effect is "
        f"pruned when below {100 * me:g} % or when neither variation reaches {ps:g}σ of that error (one migrated "
        "event is 1σ), and a source pruned in every region is not in the card. One-sided variations (both on the "
        "same side) are symmetrised to the larger |ln κ|; a written kappa is `κ` (symmetric) or `κdown/κup`. "
        f"Signal MC statistics follow Combine's autoMCStats: per channel lnN 1 + 1/sqrt(N_eff) for N_eff ≥ {thr:g}, "
        "a gmN (Poisson) term below. The background stays data-driven (rateParams) and has none. Per channel and "
        "per region details: `datacards/index.json` (`points.<point>.systematics`).", ""]
    for point, s in points.items():
        lines += [f"### {point}", "", "| source | in the card | A | B | C | D |", "|---|---|---|---|---|---|"]
        for kept, group in ((True, s.get("sources") or {}), (False, s.get("pruned") or {})):
            for src, info in group.items():
                regs = info.get("regions") or {}
                if kept:
                    where = [R for R in REGION_NAMES if (regs.get(R) or {}).get("status") == "kept"]
                    head = f"yes, in region{'s' if len(where) > 1 else ''} {', '.join(where)}"
                else:
                    head = "no: pruned in every region"
                lines.append(f"| {src} | {head} | " + " | ".join(_region_cell(regs.get(R)) for R in REGION_NAMES)
                             + " |")
        for src, why in s["skipped"].items():
            if src not in (s.get("pruned") or {}):
                lines.append(f"| {src} | no: {why} | - | - | - | - |")
        for name, k in s["lumi"].items():
            lines.append(f"| {name} | yes, every channel: {_lumi_pct(k)} | | | | |")
        lines.append("")
        lines += _mcstat_words(s)
    return lines


def plot_systematics(xy_mt, xy_mt_syst, datasets: Mapping[str, Mapping], wp, outdir: str | os.PathLike,
                     signal: str | None = None, plane: str = "SP", style=None, config=None,
                     groups: Sequence[Sequence[int]] | None = None) -> list[str]:
    """What the cards carry for each source, one figure per source (``syst_<source>``), for one signal
    point: per region A, B, C, D the measured effect of the up and down variations on the
    M_T-integrated signal with its event-correlated MC error (error bars), the kappas the card
    writes (``kappa - 1`` as horizontal bars, symmetrised ones marked) and the pruned regions
    (grey, with their significance): the numbers of ``summary.md``'s table.

    ``signal``: the dataset (default: the signal in ``xy_mt_syst`` with the largest nominal yield
    in region B). ``config``: the systematics configuration of the cards (thresholds);
    ``groups``: the M_T bins integrated (default all). Sources without both variations (or all
    zero) for it are left out.
    """
    style = style or st.DEFAULT
    cfg = systematics_config(config)
    check_syst_histogram(xy_mt_syst, xy_mt)
    x0, y0 = parse_wp(wp)
    ix = snap_threshold(x0, xy_mt.axes["x"].edges, "x")
    iy = snap_threshold(y0, xy_mt.axes["y"].edges, "y")
    cands = [d for d in xy_mt_syst.axes["dataset"] if d in list(xy_mt.axes["dataset"])]
    if signal is None:
        if not cands:
            log.warning("no signal dataset of xy_mt_syst is in xy_mt: no systematics plots")
            return []
        totals = {d: float(_region_b(region_yields_plane(xy_mt, d, plane), ix, iy).sum()) for d in cands}
        signal = max(cands, key=lambda d: (totals[d], d))
    nom, nom_var = plane_arrays(xy_mt, [signal], plane)
    mt_bins = sorted({int(b) for g in groups for b in g}) if groups else list(range(nom.shape[-1]))
    nom, nom_var = nom[..., mt_bins], nom_var[..., mt_bins]
    arrays = _SystArrays(xy_mt_syst, signal, plane)
    sources, _ = source_names(list(xy_mt_syst.axes["syst"]))
    plt = st.pyplot()
    paths: list[str] = []
    colours = {"up": "#e42536", "down": "#5790fc"}
    for src in sources:
        names = {"up": f"{src}_up", "down": f"{src}_down"}
        if not all(arrays.has(v) and not arrays.empty(v) for v in names.values()):
            continue
        var = {k: (arrays.plane(v)[..., mt_bins], arrays.plane_var(v)[..., mt_bins]) for k, v in names.items()}
        regs = source_regions(nom, nom_var, var["up"], var["down"], ix, iy, cfg, kind=source_kind(src))
        fig, ax = plt.subplots(figsize=(10, 8))
        xs = np.arange(4)
        ax.axhline(0.0, color="black", linewidth=1)
        vals = [0.0]
        drawn_card = {"up": False, "down": False}
        for r, rec in enumerate(regs):
            if rec["status"] == "pruned":
                ax.axvspan(r - 0.45, r + 0.45, color="#9c9ca1", alpha=0.25, linewidth=0,
                           label="pruned (not in the card)" if not any(q["status"] == "pruned" for q in regs[:r])
                           else None)
            if rec["status"] == "no signal":
                ax.text(r, 0.0, "no signal", ha="center", va="bottom", fontsize=13, color="#717581")
                continue
            for k, dx in (("up", -0.12), ("down", 0.12)):
                e = rec[k]
                ax.errorbar([r + dx], [100 * e["effect"]], yerr=[100 * e["sigma"]], fmt="o", color=colours[k],
                            markersize=8, capsize=4,
                            label=f"{src} {k}: effect ± event-correlated MC error" if r == min(
                                q for q, rr in enumerate(regs) if rr["status"] != "no signal") else None)
                vals += [100 * (e["effect"] + e["sigma"]), 100 * (e["effect"] - e["sigma"])]
            if rec["status"] == "kept":
                kd, ku = rec["kappa"]
                for k, kv, dx in (("up", ku, -0.12), ("down", kd, 0.12)):
                    ax.hlines(100 * (kv - 1), r + dx - 0.17, r + dx + 0.17, colors=colours[k], linewidth=3,
                              linestyles="-" if not rec["symmetrised"] else "--",
                              label=rf"card: $\kappa_{{{k}}} - 1$" if not drawn_card[k] else None)
                    drawn_card[k] = True
                    vals.append(100 * (kv - 1))
                label = f"{rec['text']}" + (" (sym.)" if rec["symmetrised"] else "")
            else:
                label = "pruned"
            z = max(rec["up"]["z"], rec["down"]["z"])
            ax.annotate(f"{label}\n{z:.1f}σ", (r, 0), xytext=(0, -8), textcoords="offset points", ha="center",
                        va="top", fontsize=12, annotation_clip=False, xycoords=("data", "axes fraction"))
        finite = [v for v in vals if np.isfinite(v)]
        lo, hi = min(finite), max(finite)
        span = max(hi - lo, 2.0)
        ax.set_ylim(lo - 0.1 * span, hi + 0.9 * span)  # headroom for the legend (no overlap search: no noise)
        ax.set_xlim(-0.5, 3.5)
        ax.set_xticks(xs, [f"region {R}" for R in REGIONS])
        ax.tick_params(axis="x", pad=38)
        ax.set_ylabel(r"effect on the $M_{T}$-integrated signal [%]", fontsize=18)
        title = (f"{st.signal_label(datasets.get(signal), signal)}\n{st.PLANE_NAMES.get(plane, plane)}, "
                 f"(x0, y0) = ({x0:.3f}, {y0:.3f}); pruned below {cfg.prune_sigma:g}σ or {100 * cfg.min_effect:g} %\n"
                 + (f"{src} in the card: region(s) " + ", ".join(q["region"] for q in regs if q["status"] == "kept")
                    if any(q["status"] == "kept" for q in regs)
                    else f"{src}: not in the card (pruned in every region)"))
        ax.legend(loc="upper right", fontsize=13, title=title, title_fontsize=12, frameon=False)
        st.cms_label(ax, style)
        paths += st.save(fig, outdir, f"syst_{src}", style)
    return paths


def _region_b(arr: np.ndarray, ix: int, iy: int) -> np.ndarray:
    return arr[ix:, iy:, :].sum(axis=(0, 1))


def region_yields_plane(xy_mt, dataset: str, plane: str) -> np.ndarray:
    """Values of ``xy_mt`` for one dataset and plane, ``(nx, ny, n_mt)``."""
    return plane_arrays(xy_mt, [dataset], plane)[0]
