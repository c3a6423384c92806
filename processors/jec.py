"""Jet energy corrections and type-1 MET, vectorised (docs/corrections.md).

The pure functions of the jet calibration, on flat numpy arrays (one entry per jet) or jagged
awkward ones (events x jets):

* :func:`compound_factors` -- CMS's factorised JEC: the levels of the compound ``L1L2L3Res``
  applied in order, each evaluated at the jet pT corrected by the levels before it (CMSSW's
  ``FactorizedJetCorrector``; correctionlib's compound correction with ``inputs_update: [JetPt]``,
  ``input_op: *``, ``output_op: *``). Returns the total factor and the factor after L1 alone (the
  type-1 MET needs both). The tests compare it to correctionlib's own compound evaluation.
* :func:`jet_area` -- the jet area for L1FastJet: the catchment area of an anti-kT jet of radius R
  is close to pi R^2 for hard jets (Cacciari, Salam, Soyez, JHEP 04 (2008) 005: 0.81 for R = 0.5
  hard jets vs pi R^2 = 0.785; FastJet's active areas need a ghosted clustering, not available in
  FastJet's multi-event interface we cluster with); we use pi R^2.
* :func:`type1_met` -- ``MET_T1 = MET_raw - sum_j (pT_corr,j - pT_L1,j)`` (vector sum over the AK4
  jets with corrected pT > 15 GeV), the CMS type-1 rule.
* :func:`corrected_jets` -- the jets with pT and mass (and the constituents, for the Lund planes)
  scaled by their factor, re-sorted by corrected pT.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from svjscout.processors.corrections.pog import PayloadError, evaluate_by_name
from svjscout.processors.schema import optional_branch

__all__ = ["jet_area", "compound_factors", "jec_factors", "type1_met", "corrected_jets", "T1_PT_MIN", "event_rho",
           "jec_active", "RHO_BRANCHES"]

#: Type-1 MET uses the AK4 jets with corrected pT above this (GeV), the CMS rule.
T1_PT_MIN = 15.0


def jet_area(radius: float, like) -> np.ndarray:
    """The area ``pi R^2`` for every jet of ``like`` (a flat array of one entry per jet)."""
    return np.full(len(like), np.pi * radius * radius)


def compound_factors(levels, eta, pt_raw, area, rho, run=None, where: str = "JEC") -> tuple[np.ndarray, np.ndarray]:
    """(total factor, factor after the first level) of the JEC levels, applied in order.

    Args:
        levels: correctionlib corrections (e.g. L1FastJet, L2Relative, L3Absolute, L2L3Residual);
            each is evaluated with its inputs matched by name (JetA, JetEta, JetPt, Rho, run).
        eta, pt_raw, area, rho, run: flat float arrays, one entry per jet (run may be None).

    Level k is evaluated at ``pt_raw * f_1 * ... * f_{k-1}``; the total is the product.
    """
    pt_raw = np.asarray(pt_raw, dtype=np.float64)
    total = np.ones(len(pt_raw))
    first = None
    values = {"JetEta": np.asarray(eta, np.float64), "JetA": np.asarray(area, np.float64),
              "Rho": np.asarray(rho, np.float64)}
    if run is not None:
        values["run"] = np.asarray(run, np.float64)
    for lvl in levels:
        f = evaluate_by_name(lvl, {**values, "JetPt": pt_raw * total}, f"{where}: {lvl.name}")
        total = total * f
        if first is None:
            first = total.copy()
    return total, (np.ones(len(pt_raw)) if first is None else first)


def jec_factors(era, jets: str, is_data: bool, pt, eta, area, rho_event, run_event=None):
    """Per jet (total, L1) factors of the era's compound JEC, for jagged jets (events x jets).

    Data: each event's run picks the period's tag (:attr:`EraSpec.jec_data`); a run outside every
    period is refused, naming it. Returns two jagged arrays of the layout of ``pt``.
    """
    counts = ak.to_numpy(ak.num(pt, axis=1)).astype(np.int64)
    fpt = ak.to_numpy(ak.flatten(pt)).astype(np.float64)
    feta = ak.to_numpy(ak.flatten(eta)).astype(np.float64)
    farea = ak.to_numpy(ak.flatten(area)).astype(np.float64) if isinstance(area, ak.Array) else np.asarray(area)
    rho = np.repeat(np.asarray(rho_event, np.float64), counts)
    run = None if run_event is None else np.repeat(np.asarray(run_event, np.int64), counts)
    total, l1 = np.ones(len(fpt)), np.ones(len(fpt))
    done = np.zeros(len(fpt), bool)
    for first, last, tag in era.jec_tags(is_data):
        sel = np.ones(len(fpt), bool) if run is None else (run >= first) & (run <= last)
        sel &= ~done
        if not sel.any():
            continue
        t, f1 = compound_factors(era.jec_levels(jets, tag), feta[sel], fpt[sel], farea[sel], rho[sel],
                                 None if run is None else run[sel], where=f"{era.path(jets)}")
        total[sel], l1[sel] = t, f1
        done |= sel
    if not done.all():
        bad = sorted(set(run[~done].tolist()))[:5] if run is not None else []
        raise PayloadError(f"era {era.spec.name}: run(s) {bad} are in no JEC data period "
                           f"(analysis.corrections.names.jec_data: {list(era.spec.jec_data)})")
    return ak.unflatten(total, counts), ak.unflatten(l1, counts)


def type1_met(met_pt, met_phi, pt_raw, phi, f_total, f_l1, pt_min: float = T1_PT_MIN):
    """Type-1 MET: ``MET_raw - sum_j (pT_corr - pT_L1)`` over the jets with ``pT_corr > pt_min``.

    ``pt_raw``, ``phi``, ``f_total``, ``f_l1`` are jagged (events x jets); ``pT_corr = f_total
    pT_raw``, ``pT_L1 = f_l1 pT_raw``. Returns (met_pt, met_phi) as float64 numpy arrays.
    """
    pt_corr = pt_raw * f_total
    use = pt_corr > pt_min
    d = ak.where(use, pt_corr - pt_raw * f_l1, 0.0)
    dx = ak.to_numpy(ak.sum(d * np.cos(phi), axis=1)).astype(np.float64)
    dy = ak.to_numpy(ak.sum(d * np.sin(phi), axis=1)).astype(np.float64)
    mx = np.asarray(met_pt, np.float64) * np.cos(met_phi) - dx
    my = np.asarray(met_pt, np.float64) * np.sin(met_phi) - dy
    return np.hypot(mx, my), np.arctan2(my, mx)


def corrected_jets(jets: ak.Array, factor: ak.Array) -> ak.Array:
    """The jets with ``pt`` and ``mass`` (and their constituents', when present: the Lund planes
    of a jet whose constituents are all scaled keep their C-A history) times their factor, sorted
    by decreasing corrected pT (stable: ties keep the clustering's order). Other fields are kept."""
    out = ak.with_field(jets, jets.pt * factor, "pt")
    out = ak.with_field(out, jets.mass * factor, "mass")
    if "constituents" in ak.fields(jets):
        c = jets.constituents
        c = ak.with_field(c, c.pt * factor, "pt")
        c = ak.with_field(c, c.mass * factor, "mass")
        out = ak.with_field(out, c, "constituents")
    order = ak.argsort(out.pt, axis=1, ascending=False, stable=True)
    return out[order]


#: Per-event rho branches, first found is used: Run-3 ScoutingNano, then the Run-2 scouting
#: ntuples (SVJProcessing's ``rho``) and offline NanoAOD's name.
RHO_BRANCHES = ("ScoutingRho_fixedGridRhoFastjetAll", "rho", "fixedGridRhoFastjetAll")


def event_rho(events) -> np.ndarray | None:
    """The event's rho (GeV) from the first of :data:`RHO_BRANCHES` the file has, or None."""
    for name in RHO_BRANCHES:
        v = optional_branch(events, name)
        if v is not None:
            return v
    return None


def jec_active(era, settings, is_data: bool) -> bool:
    """Whether the jets of a dataset are corrected: ``analysis.corrections.jec`` and an era whose
    compound JEC (AK4 or AK8; data: every period's) is not the identity."""
    return bool(settings.jec) and not (era.jec_identity("ak4", is_data) and era.jec_identity("ak8", is_data))
