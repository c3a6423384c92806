"""Emulated HLT decisions written into simulated files, named as NanoAOD names HLT paths.

NanoAOD writes each HLT path as a bool branch named after the path without its version suffix
(``DST_HT410_PFScouting_v*`` -> ``DST_HT410_PFScouting``). Simulation here has no HLT, so the
generator writes the emulated decision and data and simulation go through the same reader.

``DST_HT410_PFScouting`` (the Run-2 2017/18 PF-scouting H_T path): H_T > 410 GeV, with H_T the
scalar sum of the pT of the anti-kT R = 0.4 jets with pT > 30 GeV and |eta| < 2.5, the HLT's
``hltPFHTJet30``. The HLT computes it from ``hltAK4PFJetsCorrected`` (cms-sw/cmssw HLT
configurations: ``hltPFHTJet30`` takes ``jetsLabel = hltAK4PFJetsCorrected``): jets clustered
from *all* PF candidates (charged pileup included: the HLT jets are not CHS jets), then corrected,
whose first step (L1FastJet) subtracts the pileup offset rho x A. The emulation does the same
with the event's ``fixedGridRhoFastjetAll`` and A = pi R^2 (the catchment area of a hard anti-kT
jet), no further (L2L3) correction (this detector's jet response is 1 by construction):
pT_corr = pT - rho pi R^2. Without that offset, pileup at 35 interactions raises the H_T of QCD
events by ~150 GeV on average over the H_T of CHS jets (measured, docs/samples.md); with it the
emulated bit agrees with the uncorrected CHS-jet H_T > 410 of the analysis' emulation
(processors/selection.py) in ~93 % of QCD events. Jets are clustered with FastJet on the
detector-level candidates of each written event (HF cells included, written or not), not taken
from the generator jets: the decision is the one the detector copy's candidates give. Units: GeV.
"""

from __future__ import annotations

import fastjet
import fastjet._ext  # the multi-event C++ interface
import numpy as np

#: Path name (NanoAOD branch) -> H_T threshold in GeV.
HT_PATHS = {"DST_HT410_PFScouting": 410.0}
HT_JET_PT_MIN = 30.0
HT_JET_ETA_MAX = 2.5
HT_JET_RADIUS = 0.4


def hlt_ht(event: np.ndarray, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray,
           n_events: int, rho: np.ndarray | None = None) -> np.ndarray:
    """H_T per event (GeV): AK4 jets (corrected pT > 30 GeV, |eta| < 2.5) from flat candidates.

    ``event``: the event index (0 ... n_events - 1) of each candidate, sorted (candidates of an
    event contiguous). ``rho`` (per event, GeV): each jet's pT is corrected by the L1FastJet-like
    offset, pT - rho pi R^2, before the threshold and the sum (None: uncorrected jets).
    """
    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
    event = np.asarray(event, dtype=np.int64)
    if len(event) and np.any(np.diff(event) < 0):
        raise ValueError("hlt_ht: candidates must be grouped by event (event index non-decreasing)")
    counts = np.bincount(event, minlength=n_events).astype(np.int64)
    stops = np.cumsum(counts)
    starts = stops - counts
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + np.square(np.asarray(mass, dtype=np.float64)))
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, HT_JET_RADIUS)
    res = fastjet._ext.interfacemulti(*(np.ascontiguousarray(a) for a in (px, py, pz, e)), starts, stops, jetdef)
    jpx, jpy, jpz, _, joff = res.to_numpy(HT_JET_PT_MIN)
    jpt = np.hypot(np.asarray(jpx), np.asarray(jpy))
    jeta = np.arcsinh(np.asarray(jpz) / np.maximum(jpt, 1e-12))
    n_jets = np.diff(np.asarray(joff, dtype=np.int64)).astype(np.int64)
    jet_event = np.repeat(np.arange(n_events), n_jets)
    if rho is not None:  # L1FastJet-like pileup offset (the HLT's corrected jets)
        jpt = jpt - np.asarray(rho, dtype=np.float64)[jet_event] * np.pi * HT_JET_RADIUS**2
    good = (jpt > HT_JET_PT_MIN) & (np.abs(jeta) < HT_JET_ETA_MAX)
    return np.bincount(jet_event[good], jpt[good], n_events)


def trigger_bits(ht: np.ndarray) -> dict[str, np.ndarray]:
    """The emulated decision of every path of :data:`HT_PATHS` (bool per event).

    >>> trigger_bits(np.array([400.0, 420.0]))["DST_HT410_PFScouting"].tolist()
    [False, True]
    """
    return {path: np.asarray(ht) > threshold for path, threshold in HT_PATHS.items()}
