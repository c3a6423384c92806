"""Systematic variations of the signal, computed in the processor's pass (columnar, MC only).

Each variation is a version of the event's jets, MET or weight; everything downstream is
recomputed from it: H_T, the leading AK8 jets, M_T, R_T, dphi_min, the preselection, the Lund
features, the LundNet and twin scores, and the regions. The result fills ``xy_mt_syst`` (axes
dataset, syst, plane, x, y, mt), which the datacards turn into one nuisance per source.

Sources (``analysis.systematics``, payload :mod:`svjscout.processors.corrections`):

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
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from pydantic import BaseModel, ConfigDict

from svjscout.processors.features import event_features
from svjscout.processors.selection import CUT_ORDER, preselection

SOURCES = ("jes", "jer", "unclustered", "pileup", "trigger", "isr", "fsr")
#: AK8 jets are clustered down to this fraction of ak8_pt_min for datasets with variations, so
#: that a jet varied up across the threshold is there (the nominal keeps only jets >= the cut).
CLUSTER_MARGIN = 0.6


class SystematicsSettings(BaseModel):
    """``analysis.systematics``: which variations the processor computes (MC signal only)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    payload: str = "shipped:illustrative_run2"
    sources: list[str] = list(SOURCES)
    unclustered_scale: float = 0.1
    # for the cards (datacards/systematics.py): signal MC statistics per channel, luminosity rows
    mcstat: bool = True
    lumi: dict[str, float] | None = None  # {name: kappa}, e.g. {lumi_2018: 1.025}; null: datacards.lumi_unc

    def model_post_init(self, __context) -> None:
        bad = [s for s in self.sources if s not in SOURCES]
        if bad:
            raise ValueError(f"analysis.systematics.sources: unknown {bad}, expected some of {list(SOURCES)}")


def variation_names(settings: SystematicsSettings) -> list[str]:
    return [f"{s}_{d}" for s in settings.sources for d in ("up", "down")] if settings.enabled else []


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
    from svjscout.processors.lund import pad_lund, primary_lund_declusterings

    if len(pairs_event) == 0:
        return {}, np.zeros((0, max_len, 5), np.float32), np.zeros((0, max_len), bool)
    cons = ak8.constituents[pairs_event, pairs_jet]
    arr, m = pad_lund(primary_lund_declusterings(cons), max_len)
    lookup = {(int(e), int(j)): r for r, (e, j) in enumerate(zip(pairs_event, pairs_jet))}
    return lookup, np.asarray(arr, np.float32), np.asarray(m, bool)


def shifted_lund(lookup, lund, mask, events: np.ndarray, jets: np.ndarray, factors: np.ndarray):
    """Lund arrays of the given jets with every node's ln kt and ln m shifted by ``ln(factor)``
    (a jet whose constituents are all scaled by ``factor`` has the same C-A history)."""
    from svjscout.processors.lund import LUND_FEATURES

    rows = np.array([lookup[(int(e), int(j))] for e, j in zip(events, jets)], dtype=int)
    arr = lund[rows].copy() if len(rows) else lund[:0].copy()
    m = mask[rows] if len(rows) else mask[:0]
    shift = np.log(np.asarray(factors, np.float64)).astype(np.float32)[:, None]
    for feat in ("ln_kt", "ln_m"):
        k = LUND_FEATURES.index(feat)
        arr[..., k] = np.where(m, arr[..., k] + shift, arr[..., k])
    return arr, m
