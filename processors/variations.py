"""Systematic variations of the signal, computed in the processor's pass (columnar, MC only).

Each variation is a version of the event's jets, MET or weight; everything downstream is
recomputed from it: H_T, the leading AK8 jets, M_T, R_T, dphi_min, the preselection, the Lund
features, the LundNet and twin scores, and the regions. The result fills ``xy_mt_syst`` (axes
dataset, syst, plane, x, y, mt), which the datacards turn into one nuisance per source.

Sources (``analysis.systematics``; the corrections of ``analysis.corrections``, in the CMS JSON POG
layout, :mod:`svjscout.processors.corrections`: the era's ``<JEC tag>_Total_<algo>`` JES
uncertainty of the AK4 and the AK8 jets, ``<JER tag>_ScaleFactor``/``_PtResolution``, the pileup
weights nominal/up/down and the trigger scale factor):

* ``jes``: every AK8 and AK4 jet scaled by ``1 +- u(pT, eta)``, its constituents by the same
  factor: the Cambridge-Aachen history, z, Delta and psi are unchanged, ln kt and ln m of every
  Lund node shift by ``ln(1 +- u)``, so no re-clustering is needed. MET type-1 style:
  ``MET_vec' = MET_vec - sum_jets (f - 1) pT_vec`` (MET is minus the visible pT).
* ``jer``: every AK8 jet smeared ``pT' = pT (1 + N(0,1) sigma_MC sqrt(s^2 - 1))`` with the
  data/MC resolution factor ``s`` up, and ``s`` down (no smearing where ``s <= 1``); the normal
  numbers are keyed on (run, lumi, event, jet index), so the result is the same for any chunking.
  The fast detector's resolution is taken as the nominal (no nominal smearing).
* ``unclustered``: the PF candidates outside the AK4 jets scaled by ``1 +- a`` (a = 0.1):
  ``MET_vec' = MET_vec -+ a U_vec``, U the sum of their pT vectors.
* ``pileup``, ``trigger``: weights, the ratio of the up/down correction to its nominal (pileup
  needs ``Pileup_nTrueInt``; the trigger H_T turn-on scale factor is evaluated at the event's H_T).
* ``isr``, ``fsr``: the parton-shower weights ``PSWeight`` (NanoAOD order: ISR up, FSR up, ISR down,
  FSR down), when the file has them.

A source whose input is missing (no ``PSWeight`` or ``Pileup_nTrueInt`` branch) is skipped and
counted (``counts["syst_skipped_<source>"]``); the datacards then carry no nuisance for it.
Nominal histograms are unchanged by all of this (the nominal corrections' central values are not
applied; only their uncertainties are).

The sources form a registry in the manner of pyhf's modifiers: each source is a registered
:class:`Source` object (:func:`register`, :data:`REGISTRY`) that, given the chunk's clustered
jets and events (:class:`VariationInputs`), yields its named variations: kinematic ones
(:class:`Kinematic`: AK8 and AK4 jet factors and a MET shift, from which the processor recomputes
the event) or weight ones (per-event ratios to the nominal weight). The processor loops over
the registry (:func:`variations`); adding a source is one registered class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import awkward as ak
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from svjscout.core.constants import MCSTAT_NEFF_MIN, MIN_EFFECT, PRUNE_SIGMA
from svjscout.core.features import LUND_FEATURES
from svjscout.processors import corrections as C
from svjscout.processors.features import event_features
from svjscout.processors.lund import pad_lund, primary_lund_declusterings
from svjscout.processors.schema import BranchMap, optional_branch
from svjscout.processors.selection import CUT_ORDER, preselection

#: AK8 jets are clustered down to this fraction of ak8_pt_min for datasets with variations, so
#: that a jet varied up across the threshold is there (the nominal keeps only jets >= the cut).
CLUSTER_MARGIN = 0.6


class Kinematic(NamedTuple):
    """One kinematic variation: per-jet factors of the AK8 and AK4 jets, and an extra MET (dx, dy)."""

    name: str
    ak8_factors: object
    ak4_factors: object
    met_shift: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class VariationInputs:
    """What a source sees of one chunk: the clustered jets (down to :data:`CLUSTER_MARGIN`), the
    PF candidates and MET, the nominal H_T, the corrections payload and the event branches."""

    events: object
    branch_map: BranchMap
    cset: object  # EraCorrections (analysis.corrections) or a CorrectionSet of analysis.systematics.payload
    settings: SystematicsSettings
    ak8: object
    ak4: object
    pf: object
    ht_nom: np.ndarray
    rho: np.ndarray | None = None  # per clustered event (the JER resolution's Rho input; None: 0)
    _branches: dict = field(default_factory=dict)

    def branch(self, name: str) -> np.ndarray | None:
        """An optional per-event branch as numpy (None if the file lacks it), read once."""
        if name not in self._branches:
            self._branches[name] = optional_branch(self.events, name)
        return self._branches[name]


class Source:
    """A registered source of systematic variations (a name, the kind, what it yields).

    Kinematic sources implement :meth:`kinematic`; weight sources :meth:`weights`, which returns
    None when the input it needs is missing (the source is then skipped and counted)."""

    name: ClassVar[str]
    kind: ClassVar[str]  # "kinematic" or "weight"

    def kinematic(self, x: VariationInputs) -> list[Kinematic]:
        return []

    def weights(self, x: VariationInputs) -> dict[str, np.ndarray] | None:
        return {}


#: name -> source, in the order variations are computed
REGISTRY: dict[str, Source] = {}


def register(cls: type[Source]) -> type[Source]:
    """Class decorator: add a :class:`Source` to :data:`REGISTRY` under its ``name``."""
    if cls.name in REGISTRY:
        raise ValueError(f"systematic source {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls()
    return cls


@register
class JES(Source):
    """Jet energy scale: every AK8 and AK4 jet (and its constituents) scaled by ``1 +- u(pT, eta)``."""

    name, kind = "jes", "kinematic"

    def kinematic(self, x):
        return [Kinematic(f"jes_{d}", C.jes_factor(x.cset, x.ak8.pt, x.ak8.eta, sgn, jets="ak8"),
                          C.jes_factor(x.cset, x.ak4.pt, x.ak4.eta, sgn, jets="ak4"))
                for d, sgn in (("up", 1.0), ("down", -1.0))]


@register
class JER(Source):
    """Jet energy resolution: AK8 jets smeared with the resolution factor up and down."""

    name, kind = "jer", "kinematic"

    def kinematic(self, x):
        ids = x.branch_map.event_ids(x.events)
        seeds = C.jet_seeds(ids[:, 0], ids[:, 1], ids[:, 2], x.ak8.pt, salt=8)  # the clustering's jet order
        ones4 = ak.ones_like(x.ak4.pt)
        rho = None if x.rho is None else ak.broadcast_arrays(ak.Array(x.rho), x.ak8.pt)[0]
        return [Kinematic(f"jer_{d}", C.jer_factor(x.cset, x.ak8.pt, x.ak8.eta, d, seeds, jets="ak8", rho=rho),
                          ones4)
                for d in ("up", "down")]


@register
class Unclustered(Source):
    """Unclustered energy: the PF candidates outside the AK4 jets scaled by ``1 +- a`` in MET."""

    name, kind = "unclustered", "kinematic"

    def kinematic(self, x):
        pf, ak4 = x.pf, x.ak4
        ux = ak.to_numpy(ak.sum(pf.pt * np.cos(pf.phi), axis=1)) - ak.to_numpy(ak.sum(ak4.pt * np.cos(ak4.phi), axis=1))
        uy = ak.to_numpy(ak.sum(pf.pt * np.sin(pf.phi), axis=1)) - ak.to_numpy(ak.sum(ak4.pt * np.sin(ak4.phi), axis=1))
        a = x.settings.unclustered_scale
        ones8, ones4 = ak.ones_like(x.ak8.pt), ak.ones_like(x.ak4.pt)
        return [Kinematic("unclustered_up", ones8, ones4, (-a * ux, -a * uy)),
                Kinematic("unclustered_down", ones8, ones4, (a * ux, a * uy))]


@register
class Pileup(Source):
    """Pileup reweighting up/down over nominal (needs ``Pileup_nTrueInt``)."""

    name, kind = "pileup", "weight"

    def weights(self, x):
        n_true = x.branch("Pileup_nTrueInt")
        if n_true is None:
            return None
        nom = C.pileup_weight(x.cset, n_true, "nom")
        return {f"pileup_{d}": C.pileup_weight(x.cset, n_true, d) / nom for d in ("up", "down")}


@register
class Trigger(Source):
    """The trigger H_T turn-on scale factor up/down over nominal, at the event's H_T."""

    name, kind = "trigger", "weight"

    def weights(self, x):
        nom = C.trigger_sf(x.cset, x.ht_nom, "nom")
        return {f"trigger_{d}": C.trigger_sf(x.cset, x.ht_nom, d) / nom for d in ("up", "down")}


class _PartonShower(Source):
    kind = "weight"
    columns: ClassVar[tuple[int, int]]  # (up, down) in PSWeight (ISR up, FSR up, ISR down, FSR down)

    def weights(self, x):
        ps = x.branch("PSWeight")
        if ps is None:
            return None
        up, down = self.columns
        return {f"{self.name}_up": ps[:, up], f"{self.name}_down": ps[:, down]}


@register
class ISR(_PartonShower):
    """Initial-state radiation: ``PSWeight`` columns 0 (up) and 2 (down)."""

    name, columns = "isr", (0, 2)


@register
class FSR(_PartonShower):
    """Final-state radiation: ``PSWeight`` columns 1 (up) and 3 (down)."""

    name, columns = "fsr", (1, 3)


#: The known sources, in registry order.
SOURCES = tuple(REGISTRY)


def variations(x: VariationInputs, counts: dict) -> tuple[list[Kinematic], dict[str, np.ndarray]]:
    """The chunk's kinematic variations and weight ratios of every selected source (registry order).

    A weight source whose input is missing adds ``len(events)`` to ``counts["syst_skipped_<source>"]``."""
    kin, ratio = [], {}
    for name, source in REGISTRY.items():
        if name not in x.settings.computed:
            continue
        if source.kind == "kinematic":
            kin += source.kinematic(x)
            continue
        w = source.weights(x)
        if w is None:
            counts[f"syst_skipped_{name}"] = counts.get(f"syst_skipped_{name}", 0) + len(x.ht_nom)
        else:
            ratio.update(w)
    return kin, ratio


class SystematicsSettings(BaseModel):
    """``analysis.systematics``: the signal systematics, one settings block for both stages that use
    it: which variations the processor computes (MC signal only: ``enabled``, ``payload``,
    ``sources``, ``unclustered_scale``) and how the cards carry them (``sources``, ``mcstat``,
    ``lumi``, ``prune_sigma``, ``min_effect``, ``mcstat_neff_min``; datacards/systematics.py).

    Off by default (the variations cost a second pass over every signal event). The card writer
    called from Python without settings uses every variation the ``xy_mt_syst`` it is given
    carries (:func:`svjscout.datacards.systematics.systematics_config`).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    #: null: the corrections of ``analysis.corrections`` (its era's files); ``shipped:illustrative_run2``
    #: (the shipped era svjscout_sim) or a five-name payload file (the former layout)
    payload: str | None = None
    #: the sources computed and carried by the cards (null: every one, for the cards every source
    #: of the ``xy_mt_syst`` they are given)
    sources: list[str] | None = list(SOURCES)
    unclustered_scale: float = 0.1
    #: signal MC statistics per channel in the cards
    mcstat: bool = True
    #: luminosity rows on the signal ``{name: kappa or [kdown, kup]}``, e.g. ``{lumi_2018: 1.025}``;
    #: null: one ``lumi`` row of ``datacards.lumi_unc``
    lumi: dict[str, float | list[float]] | None = None
    prune_sigma: float = Field(default=PRUNE_SIGMA, ge=0, allow_inf_nan=False)
    min_effect: float = Field(default=MIN_EFFECT, ge=0, allow_inf_nan=False)
    mcstat_neff_min: float = Field(default=MCSTAT_NEFF_MIN, ge=0, allow_inf_nan=False)

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # the card writer's Python callers may name the sources of a histogram of their own
        if v is None or (info.context or {}).get("any_source"):
            return v
        bad = [s for s in v if s not in SOURCES]
        if bad:
            raise ValueError(f"analysis.systematics.sources: unknown {bad}, expected some of {list(SOURCES)}")
        return v

    @field_validator("lumi", mode="before")
    @classmethod
    def _lumi_rows(cls, v):
        if v is None:
            return None
        rows = v if isinstance(v, Mapping) else {"lumi": v}
        return {str(name): _kappa(k, str(name)) for name, k in rows.items()}

    def use(self, source: str) -> bool:
        """Whether the cards carry ``source``."""
        return self.sources is None or source in self.sources

    @property
    def computed(self) -> tuple[str, ...]:
        """The sources the processor computes, in registry order where none are listed."""
        return SOURCES if self.sources is None else tuple(self.sources)

    def lumi_rows(self, lumi_unc: float) -> dict:
        """The luminosity rows ``{name: kappa}`` (``{"lumi": lumi_unc}`` unless configured)."""
        return {"lumi": lumi_unc} if self.lumi is None else dict(self.lumi)


def _kappa(v, name: str) -> float | list[float]:
    """A kappa (> 0) or a ``kdown/kup`` pair (``"0.98/1.02"`` or ``[0.98, 1.02]``)."""
    if isinstance(v, str) and "/" in v:
        v = v.split("/")
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"analysis.systematics.lumi.{name} must be a kappa or 'kdown/kup', got {v!r}")
        out = [_kappa(x, name) for x in v]
        return out
    try:
        if isinstance(v, bool):
            raise TypeError
        k = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"analysis.systematics.lumi.{name} must be a kappa (e.g. 1.025) or 'kdown/kup', "
                         f"got {v!r}") from None
    if not (np.isfinite(k) and k > 0):
        raise ValueError(f"analysis.systematics.lumi.{name}: kappa must be a finite number > 0, got {v!r}")
    return k


def variation_names(settings: SystematicsSettings) -> list[str]:
    return [f"{s}_{d}" for s in settings.computed for d in ("up", "down")] if settings.enabled else []


def _vec(pt, phi):
    return pt * np.cos(phi), pt * np.sin(phi)


def _padded(a, width: int, fill: float) -> np.ndarray:
    """A jagged (events x jets) array as a regular numpy array (events, width)."""
    return ak.to_numpy(ak.fill_none(ak.pad_none(a, width, clip=True), fill)).astype(np.float64)


def leading_two(pt, eta, phi, mass, min_pt: float):
    """The two leading jets (by varied pT) above ``min_pt``: (j0, j1 dicts of arrays, n jets, index arrays).

    Arguments are regular (events, width) numpy arrays, padding with pT -1."""
    good = pt >= min_pt
    n = good.sum(axis=1)
    order = np.argsort(np.where(good, -pt, np.inf), axis=1, kind="stable")
    rows = np.arange(len(pt))
    out, idxs = [], []
    for k in (0, 1):
        idx = order[:, k] if pt.shape[1] > k else np.zeros(len(pt), int)
        valid = n > k
        jet = {name: np.where(valid, arr[rows, idx] if arr.shape[1] > k else 0.0, 0.0)
               for name, arr in (("pt", pt), ("eta", eta), ("phi", phi), ("mass", mass))}
        out.append(jet)
        idxs.append(idx)
    return out[0], out[1], n, (idxs[0], idxs[1])


def vary_event(factors_ak8, ak8, ak4_factors, ak4, met_pt, met_phi, met_shift=None, cuts=None, clean=None):
    """Event features and selection of one variation.

    Args:
        factors_ak8: per AK8 jet scale factor (events x jets); ak8: the clustered AK8 jets.
        ak4_factors, ak4: the same for the AK4 jets (H_T).
        met_shift: extra (dx, dy) of MET (unclustered), or None.

    Returns:
        (feats, passing mask, (i0, i1) jet indices of the leading two, factors of those jets)
    """
    w8 = max(int(ak.max(ak.num(ak8.pt), initial=0)), 2)
    w4 = max(int(ak.max(ak.num(ak4.pt), initial=0)), 1)
    f = _padded(factors_ak8, w8, 1.0)
    pt0, eta, phi, m0 = (_padded(ak8[k], w8, v) for k, v in (("pt", -1.0), ("eta", 0.0), ("phi", 0.0), ("mass", 0.0)))
    real = pt0 > 0
    pt, mass = np.where(real, pt0 * f, -1.0), m0 * f
    dpt = np.where(real, pt0 * (f - 1.0), 0.0)
    mx, my = _vec(met_pt, met_phi)
    mx = mx - np.sum(dpt * np.cos(phi), axis=1)
    my = my - np.sum(dpt * np.sin(phi), axis=1)
    if met_shift is not None:
        mx, my = mx + met_shift[0], my + met_shift[1]
    met2, phi2 = np.hypot(mx, my), np.arctan2(my, mx)
    pt4 = _padded(ak4.pt, w4, 0.0) * _padded(ak4_factors, w4, 1.0)
    eta4 = _padded(ak4.eta, w4, 99.0)
    ht = np.sum(np.where((pt4 > cuts.ak4_pt_min) & (np.abs(eta4) < cuts.ak4_abs_eta_max), pt4, 0.0), axis=1)
    j0, j1, n, (i0, i1) = leading_two(pt, eta, phi, mass, cuts.ak8_pt_min)
    feats = event_features(j0, j1, met2, phi2)
    sel = preselection(clean, ht, n, feats, cuts)
    passing = sel.all(*CUT_ORDER[1:])
    rows = np.arange(len(n))
    return feats, passing, (i0, i1), (f[rows, i0], f[rows, i1])


def lund_cache(ak8, pairs_event: np.ndarray, pairs_jet: np.ndarray, max_len: int):
    """Lund arrays of the jets ``(pairs_event, pairs_jet)`` (unique pairs), computed once.

    Returns ``(lookup, lund, mask)``: ``lookup[(event, jet)] -> row``, lund (P, L, 5), mask (P, L).
    """
    if len(pairs_event) == 0:
        return {}, np.zeros((0, max_len, 5), np.float32), np.zeros((0, max_len), bool)
    cons = ak8.constituents[pairs_event, pairs_jet]
    arr, m = pad_lund(primary_lund_declusterings(cons), max_len)
    lookup = {(int(e), int(j)): r for r, (e, j) in enumerate(zip(pairs_event, pairs_jet))}
    return lookup, np.asarray(arr, np.float32), np.asarray(m, bool)


def shifted_lund(lookup, lund, mask, events: np.ndarray, jets: np.ndarray, factors: np.ndarray):
    """Lund arrays of the given jets with every node's ln kt and ln m shifted by ``ln(factor)``
    (a jet whose constituents are all scaled by ``factor`` has the same C-A history)."""
    rows = np.array([lookup[(int(e), int(j))] for e, j in zip(events, jets)], dtype=int)
    arr = lund[rows].copy() if len(rows) else lund[:0].copy()
    m = mask[rows] if len(rows) else mask[:0]
    shift = np.log(np.asarray(factors, np.float64)).astype(np.float32)[:, None]
    for feat in ("ln_kt", "ln_m"):
        k = LUND_FEATURES.index(feat)
        arr[..., k] = np.where(m, arr[..., k] + shift, arr[..., k])
    return arr, m
