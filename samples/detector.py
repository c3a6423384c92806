"""Fast detector response: stable generator particles -> scouting PF candidates and MET.

A deliberately simple, documented parametrisation of the CMS Run-2 detector as seen by the
HLT particle flow. Units: GeV, radians. Every random number comes from the caller's
:class:`numpy.random.Generator`, so a seed fixes the output.

=====================  ==============================================================
particle               response
=====================  ==============================================================
neutrinos, dark        invisible (12, 14, 16, 51, 53, any stable 49xxxxx): real MET
invisibles
charged, |eta| < 2.5   track: pT smeared by sigma/pT = 0.5 % (+) 0.015 % x pT/GeV
                       (1.5 % at 100 GeV, 15 % at 1 TeV); kept if pT > 0.5 GeV.
                       PF id 211 (hadron), 11 (electron), 13 (muon, |eta| < 2.4)
charged, |eta| >= 2.5  no track: deposited in the calorimeters like a neutral hadron
photons, |eta| < 3.0   ECAL: sigma/E = 3 %/sqrt(E) (+) 0.5 % (+) 0.2 GeV/E; PF id 22
neutral hadrons        HCAL (|eta| < 3.0): sigma/E = 100 %/sqrt(E) (+) 5 %; PF id 130
(+ photons/hadrons     HF (3.0 <= |eta| < 5.0): sigma/E = 150 %/sqrt(E) (+) 10 %;
in the forward region) PF id 1 (hadronic) or 2 (electromagnetic)
HCAL/HF response tail  with probability 3 % a hadronic deposit keeps only a fraction
                       uniform in [0.2, 1] of its energy (punch-through, dead cells)
regional response      the detector is tiled in 0.5 x 0.5 (eta, phi) regions; per event
                       every region gets a response factor applied to all candidates in
                       it: Gaussian core (sigma 4 %) and, with probability 4 %, a tail
                       uniform in [0.2, 0.8] (HLT calibration non-uniformity, cracks,
                       masked channels, tracking failures in dense jet cores). This
                       correlated, jet-sized mismeasurement is what gives QCD dijets the
                       fake MET of the scouting phase space; it is deliberately generous so
                       that the small samples we can afford contain QCD events that pass
                       R_T > 0.24
neutral thresholds     E > 1 GeV (photons 0.5 GeV) and pT > 0.5 GeV
=====================  ==============================================================

Direction (eta, phi) is kept from the generator particle (calorimeter granularity is far finer
than an AK8 jet). The PF candidate mass is the pion mass for charged hadrons, the lepton mass
for leptons and 0 for neutrals. MET = minus the vector sum of all PF candidates' pT.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PION_MASS = 0.13957
ELECTRON_MASS = 0.000511
MUON_MASS = 0.10566

#: Invisible particles: neutrinos and the stable dark-sector states.
INVISIBLE_IDS = frozenset({12, 14, 16, 51, 53})


@dataclass(frozen=True)
class DetectorParams:
    """Parameters of the fast detector response (defaults: the table in the module doc)."""

    tracker_eta: float = 2.5
    muon_eta: float = 2.4
    track_pt_min: float = 0.5
    track_res_const: float = 0.005
    track_res_slope: float = 1.5e-4  # per GeV
    calo_eta: float = 3.0
    hf_eta: float = 5.0
    ecal_stoch: float = 0.03
    ecal_const: float = 0.005
    ecal_noise: float = 0.2
    hcal_stoch: float = 1.0
    hcal_const: float = 0.05
    hf_stoch: float = 1.5
    hf_const: float = 0.10
    tail_prob: float = 0.03
    tail_min: float = 0.2
    photon_e_min: float = 0.5
    neutral_e_min: float = 1.0
    neutral_pt_min: float = 0.5
    region_size: float = 0.5
    region_core_sigma: float = 0.04
    region_tail_prob: float = 0.04
    region_tail_min: float = 0.2
    region_tail_max: float = 0.8


def is_invisible(pdg_id: np.ndarray) -> np.ndarray:
    """Boolean mask of invisible particles (neutrinos, stable dark states 51/53, 49xxxxx)."""
    a = np.abs(pdg_id)
    return np.isin(a, list(INVISIBLE_IDS)) | ((a >= 4900000) & (a < 5000000))


def regional_response(
    eta: np.ndarray, phi: np.ndarray, event_index: np.ndarray, rng: np.random.Generator,
    params: DetectorParams = DetectorParams(),
) -> np.ndarray:
    """Per-particle response factor of its (event, eta-phi region): see the module table.

    Args:
        eta, phi: flat 1-D arrays of particle directions.
        event_index: flat 1-D array, the event each particle belongs to (0 ... n_events - 1).
    """
    p = params
    n_eta = int(np.ceil(10.0 / p.region_size))
    n_phi = int(np.ceil(2 * np.pi / p.region_size))
    i_eta = np.clip(((eta + 5.0) / p.region_size).astype(np.int64), 0, n_eta - 1)
    i_phi = np.clip(((phi + np.pi) / p.region_size).astype(np.int64), 0, n_phi - 1)
    n_events = int(event_index.max()) + 1 if len(event_index) else 0
    shape = (n_events, n_eta, n_phi)
    factor = 1.0 + p.region_core_sigma * rng.standard_normal(shape)
    tail = rng.random(shape) < p.region_tail_prob
    factor[tail] = rng.uniform(p.region_tail_min, p.region_tail_max, int(tail.sum()))
    return np.maximum(factor[event_index, i_eta, i_phi], 0.0)


def respond(
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    pdg_id: np.ndarray,
    charge: np.ndarray,
    rng: np.random.Generator,
    params: DetectorParams = DetectorParams(),
    event_index: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Turn one event's stable generator particles into PF candidates.

    Args:
        pt, eta, phi, pdg_id, charge: 1-D arrays, one entry per stable final-state particle
            (GeV, radians).
        rng: the random generator (seeded by the caller).
        params: detector parameters.
        event_index: the event of each particle when many events are passed flattened
            (default: all particles in one event); needed for the regional response.

    Returns:
        dict of 1-D arrays ``pt, eta, phi, mass, pdgId, charge`` (float32 / int32) with one
        entry per input particle, and ``keep``, the mask of particles that became PF
        candidates. The arrays may be the flattened particles of many events: the response is
        per particle.

    >>> rng = np.random.default_rng(1)
    >>> pf = respond(np.array([50., 30., 20.]), np.array([0., 1., 0.5]), np.zeros(3),
    ...              np.array([211, 12, 22]), np.array([1, 0, 0]), rng)
    >>> pf["pdgId"][pf["keep"]].tolist()   # the neutrino is invisible
    [211, 22]
    """
    p = params
    abs_id = np.abs(pdg_id)
    visible = ~is_invisible(pdg_id)
    aeta = np.abs(eta)
    energy = pt * np.cosh(eta)

    is_charged = (charge != 0) & visible
    tracked = is_charged & (aeta < p.tracker_eta)
    is_muon = tracked & (abs_id == 13)
    tracked &= ~(is_muon & (aeta >= p.muon_eta))
    is_photon_like = visible & ~tracked & ((abs_id == 22) | (abs_id == 11))
    is_hadron_like = visible & ~tracked & ~is_photon_like & (abs_id != 13)
    in_hf = aeta >= p.calo_eta

    out_pt = np.zeros_like(pt)
    out_e = np.zeros_like(pt)
    out_id = np.zeros(pt.shape, dtype=np.int32)
    keep = np.zeros(pt.shape, dtype=bool)

    # tracks
    res = np.hypot(p.track_res_const, p.track_res_slope * pt)
    smeared = pt * (1.0 + res * rng.standard_normal(pt.shape))
    sel = tracked & (smeared > p.track_pt_min)
    out_pt[sel] = smeared[sel]
    out_id[tracked] = np.where(abs_id[tracked] == 11, 11, np.where(abs_id[tracked] == 13, 13, 211))
    keep |= sel

    # calorimeters: one resolution per deposit kind
    gauss = rng.standard_normal(pt.shape)
    tail_u = rng.random(pt.shape)
    tail_f = rng.uniform(p.tail_min, 1.0, pt.shape)
    e_safe = np.maximum(energy, 1e-3)
    ecal = is_photon_like & ~in_hf & (aeta < p.calo_eta)
    hcal = is_hadron_like & ~in_hf
    hf = (is_photon_like | is_hadron_like) & in_hf & (aeta < p.hf_eta)
    sigma = np.zeros_like(pt)
    sigma[ecal] = np.sqrt(
        (p.ecal_stoch / np.sqrt(e_safe[ecal])) ** 2 + p.ecal_const**2 + (p.ecal_noise / e_safe[ecal]) ** 2
    )
    sigma[hcal] = np.hypot(p.hcal_stoch / np.sqrt(e_safe[hcal]), p.hcal_const)
    sigma[hf] = np.hypot(p.hf_stoch / np.sqrt(e_safe[hf]), p.hf_const)
    calo = ecal | hcal | hf
    e_meas = energy * np.maximum(1.0 + sigma * gauss, 0.0)
    hadronic = hcal | (hf & is_hadron_like)
    tail = hadronic & (tail_u < p.tail_prob)
    e_meas[tail] *= tail_f[tail]
    e_min = np.where(ecal | (hf & is_photon_like), p.photon_e_min, p.neutral_e_min)
    pt_meas = e_meas / np.cosh(eta)
    sel = calo & (e_meas > e_min) & (pt_meas > p.neutral_pt_min)
    out_pt[sel] = pt_meas[sel]
    out_id[ecal] = 22
    out_id[hcal] = 130
    out_id[hf & is_hadron_like] = 1
    out_id[hf & is_photon_like] = 2
    keep |= sel

    mass = np.zeros_like(pt)
    mass[out_id == 211] = PION_MASS
    mass[out_id == 11] = ELECTRON_MASS
    mass[out_id == 13] = MUON_MASS
    q = np.where(np.isin(out_id, (211, 11, 13)), charge, 0)

    if event_index is None:
        event_index = np.zeros(pt.shape, dtype=np.int64)
    out_pt = out_pt * regional_response(eta, phi, event_index, rng, p)
    signed_id = out_id * np.where(np.isin(out_id, (211, 11, 13)), np.sign(pdg_id), 1)
    return {
        "pt": out_pt.astype(np.float32),
        "eta": eta.astype(np.float32),
        "phi": phi.astype(np.float32),
        "mass": mass.astype(np.float32),
        "pdgId": signed_id.astype(np.int32),
        "charge": q.astype(np.int32),
        "keep": keep,
    }


def missing_pt(pt: np.ndarray, phi: np.ndarray) -> tuple[float, float]:
    """MET (magnitude, phi) = minus the vector sum of the given transverse momenta (GeV, rad)."""
    px = -float(np.sum(pt * np.cos(phi)))
    py = -float(np.sum(pt * np.sin(phi)))
    return float(np.hypot(px, py)), float(np.arctan2(py, px))
