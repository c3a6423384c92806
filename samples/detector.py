"""Fast detector response: stable generator particles -> scouting PF candidates and MET.

A documented parametrisation of the CMS Run-2 detector as seen by the HLT particle flow (PF).
Units: GeV, radians. Every random number comes from the caller's :class:`numpy.random.Generator`,
so a seed fixes the output. The response has two levels:

**Particle level** (drawn once per generated event, :func:`measure`):

=====================  ==============================================================
particle               response
=====================  ==============================================================
neutrinos, dark        invisible (12, 14, 16, 51, 53, any 49xxxxx): real MET
invisibles
charged, |eta| < 2.5   track: pT smeared by sigma/pT = 0.5 % (+) 0.015 % x pT/GeV
                       (1.5 % at 100 GeV, 15 % at 1 TeV); kept if pT > 0.5 GeV.
                       PF id 211 (hadron), 11 (electron), 13 (muon, |eta| < 2.4).
                       Charged particles of pileup vertices are removed (charged-
                       hadron subtraction, CHS: PF associates tracks with vertices)
                       with ``chs`` (the ``svjscout`` layout); ``chs`` False keeps
                       them (the ``scoutingnano_run3`` layout, samples/layouts.py:
                       CHS on the written vertexIndex, in the reader)
charged, |eta| >= 2.5  no track: deposited in the calorimeters like a neutral
photons, |eta| < 3.0   ECAL: sigma/E = 3 %/sqrt(E) (+) 0.5 % (+) 0.2 GeV/E; PF id 22
neutral hadrons        HCAL (|eta| < 3.0): sigma/E = 100 %/sqrt(E) (+) 5 %; PF id 130
forward (3 <= |eta|    HF: sigma/E = 150 %/sqrt(E) (+) 10 %; PF id 1 (hadronic) or 2
< 5)                   (electromagnetic)
granularity            calorimeter deposits of one event are merged per cell: ECAL
                       0.0174 x 0.0174, HCAL 0.087 x 0.087, HF 0.175 x 0.175 in
                       (eta, phi) (CMS's tower sizes); one PF candidate per cell,
                       along the cell's summed momentum; thresholds on the cell:
                       E > 1 GeV (photons 0.5 GeV) and pT > 0.5 GeV; HF cells
                       pT > 1 GeV (HF's higher thresholds; pileup fills HF with
                       hundreds of soft cells per event otherwise)
=====================  ==============================================================

**Jet level** (:func:`jet_factors`, drawn per detector copy): the visible particles of the
*hard scatter* are clustered into generator AK4 jets (anti-kT R = 0.4, pT > 10 GeV); each jet's
*calorimeter* deposits (not its tracks or muons, which particle flow measures independently) get
one common response factor:

* Gaussian core: the jet's pT resolution becomes CMS's AK4 PF jet energy resolution *without its
  pileup part*, sigma/pT = N/pT (+) 90 %/sqrt(pT/GeV) (+) 4.5 % with N = 1 GeV (10.1 % at
  100 GeV, 6.9 % at 300 GeV, 5.3 % at 1 TeV; the stochastic and constant terms of the barrel
  resolution measured in CMS, JINST 12 (2017) P02014, Run-2 JER scale factors of ~1.1-1.2
  included). The particle-level smearing of the jet's constituents is subtracted in quadrature,
  so the total is the CMS value, and the jet-level fluctuation is carried by the calorimeter
  part alone.

**Pileup enters once** (issue 30): CMS's noise term N (~2.5-4 GeV at Run-2 pileup for R = 0.4)
is mostly the fluctuation of the pileup energy inside the jet cone, plus electronics noise. Here
pileup is simulated *at particle level* (overlaid minimum-bias Pythia events, their tracks removed
by CHS, their neutrals measured by the calorimeter response above), so the jet-level JER keeps
only the electronics-noise part of N (``jer_noise`` = 1 GeV: the ECAL+HCAL noise of a 0.4 cone
after PF's cell thresholds, an assumption of this parametrisation; the pileup part is what the
overlay itself produces). Pileup particles are never clustered into generator jets and never
receive a jet-level factor; where a calorimeter cell holds deposits of both, only its
hard-scatter fraction (scalar pT share) is scaled. Before issue 30 every generator jet,
pileup-only jets included, was clustered from hard-scatter *and* pileup particles and smeared
with N = 2.5 GeV on top of the overlay: pileup was counted twice (MET_x resolution in 200-300 GeV
dijets 44 GeV at pileup 35 instead of ~17 GeV without pileup). :meth:`DetectorParams.shipped_v1`
reproduces that detector (``jet_pileup = True``, ``jer_noise = 2.5``) for comparisons with
samples generated before the change.
* non-Gaussian tail: with probability 1e-3 per jet the calorimeter part keeps only a fraction
  uniform in [0, 0.5] of its energy (dead or masked calorimeter cells, cracks and HCAL
  punch-through; CMS's MET performance paper, JINST 14 (2019) P07004, and the "rebalance and
  smear" response templates of CMS's MET-tail estimates show tails at the 1e-3 level beyond
  the Gaussian core). The tail probability is a parameter (``jet_tail_prob``): doubling or
  halving it is the sample-level systematic variation of the fake-MET tail.

The PF candidate mass is the pion mass for charged hadrons, the lepton mass for leptons and 0
for neutrals. MET = minus the vector sum of all PF candidates' pT: with ``chs`` the removed
charged pileup enters neither the tracks nor the calorimeter deposits, so the MET is a CHS MET;
without, it is the PF MET over all candidates, the one the HLT computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import awkward as ak
import fastjet
import numpy as np

from svjscout.core.exceptions import ConfigError

PION_MASS = 0.13957
ELECTRON_MASS = 0.000511
MUON_MASS = 0.10566

#: Invisible particles: neutrinos and the stable dark-sector states.
INVISIBLE_IDS = frozenset({12, 14, 16, 51, 53})

#: Calorimeter kinds of a deposit: (PF id, cell size) -- ECAL, HCAL, HF hadronic, HF e.m.
CALO_KINDS = {0: 22, 1: 130, 2: 1, 3: 2}


@dataclass(frozen=True)
class DetectorParams:
    """Parameters of the fast detector response (defaults: the tables in the module doc).

    ``jet_pileup``: False (default): generator jets and their jet-level response (JER core and
    tail) act on hard-scatter particles only, pileup enters once, through the particle-level
    overlay. True: the pre-issue-30 detector, pileup particles clustered into the jets and
    smeared too (pileup counted twice); only with :meth:`shipped_v1`, to reproduce old samples.
    ``jer_noise``: the JER noise term N in GeV, electronics noise only (1 GeV; 2.5 before issue
    30, when it included pileup).
    ``beamspot_*``, ``vertex_*``: the primary vertices of layouts that write them (cm; the
    module doc of :mod:`svjscout.samples.vertices`); they draw nothing in the ``svjscout`` layout.
    """

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
    ecal_cell: float = 0.0174
    hcal_cell: float = 0.087
    hf_cell: float = 0.175
    photon_e_min: float = 0.5
    neutral_e_min: float = 1.0
    neutral_pt_min: float = 0.5
    hf_pt_min: float = 1.0
    chs: bool = True
    jet_radius: float = 0.4
    jet_pt_min: float = 10.0
    jer_noise: float = 1.0  # GeV, electronics noise only: pileup comes from the overlay
    jer_stoch: float = 0.9  # sqrt(GeV)
    jer_const: float = 0.045
    jet_tail_prob: float = 1e-3
    jet_tail_min: float = 0.0
    jet_tail_max: float = 0.5
    jet_pileup: bool = False
    # primary vertices (samples/vertices.py; cm): beam spot, reconstruction, merging, resolution
    beamspot_sigma_z: float = 3.5
    beamspot_sigma_xy: float = 0.001
    vertex_min_tracks: int = 2
    vertex_merge_dz: float = 0.01
    vertex_res_z: float = 0.02

    def __post_init__(self) -> None:
        for name in ("jer_noise", "jer_stoch", "jer_const", "jet_radius", "jet_pt_min", "beamspot_sigma_z",
                     "beamspot_sigma_xy", "vertex_min_tracks", "vertex_merge_dz", "vertex_res_z"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigError(f"detector parameter {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.jet_tail_prob <= 1.0:
            raise ConfigError(f"detector parameter jet_tail_prob must be in [0, 1], got {self.jet_tail_prob!r}")
        if not isinstance(self.jet_pileup, bool):
            raise ConfigError(f"detector parameter jet_pileup must be true or false, got {self.jet_pileup!r}")

    @classmethod
    def shipped_v1(cls, **overrides) -> DetectorParams:
        """The detector of the samples generated before issue 30 (pileup counted twice)."""
        return cls(**{"jet_pileup": True, "jer_noise": 2.5, **overrides})


def is_invisible(pdg_id: np.ndarray) -> np.ndarray:
    """Boolean mask of invisible particles (neutrinos, stable dark states 51/53, 49xxxxx)."""
    a = np.abs(pdg_id)
    return np.isin(a, list(INVISIBLE_IDS)) | ((a >= 4900000) & (a < 5000000))


def jer(pt: np.ndarray, params: DetectorParams = DetectorParams()) -> np.ndarray:
    """CMS-like relative AK4 jet pT resolution sigma/pT at jet pT ``pt`` (GeV).

    >>> [round(float(x), 3) for x in jer(np.array([100.0, 300.0, 1000.0]))]
    [0.101, 0.069, 0.053]
    """
    p = params
    pt = np.maximum(np.asarray(pt, dtype=np.float64), 1e-3)
    return np.sqrt((p.jer_noise / pt) ** 2 + p.jer_stoch**2 / pt + p.jer_const**2)


@dataclass
class Measured:
    """Particle-level measurement of a batch of events (flat arrays, ``event`` = event index).

    ``tracks``: charged PF candidates (fixed for every copy). ``cells``: merged calorimeter
    deposits with the generator jet they belong to (``jet``, -1 if none) and their smeared pT
    before any jet-level factor. ``jets``: generator AK4 jets (``pt``, ``calo_pt``, ``sigma``:
    the absolute jet-level Gaussian pT fluctuation to add).
    """

    n_events: int
    tracks: dict[str, np.ndarray]
    cells: dict[str, np.ndarray]
    jets: dict[str, np.ndarray]
    # what every detector copy recomputed (the tracks' pT sums, the cells' cos, sin, cosh and PF
    # thresholds): computed once, the same arithmetic, so every copy's numbers are bit-identical
    _static: dict = field(default_factory=dict, repr=False, compare=False)

    def static(self, params: DetectorParams) -> dict[str, np.ndarray]:
        """The copy-independent parts of :func:`cell_pt` and :func:`missing_pt_per_event`."""
        if self._static.get("key") != params:
            t, c, n = self.tracks, self.cells, self.n_events
            self._static.clear()
            self._static.update(
                key=params,
                track_px=np.bincount(t["event"], t["pt"] * np.cos(t["phi"]), n),
                track_py=np.bincount(t["event"], t["pt"] * np.sin(t["phi"]), n),
                cos=np.cos(c["phi"]), sin=np.sin(c["phi"]), cosh=np.cosh(c["eta"]),
                e_min=np.where((c["kind"] == 0) | (c["kind"] == 3), params.photon_e_min, params.neutral_e_min),
                pt_min=np.where(c["kind"] >= 2, params.hf_pt_min, params.neutral_pt_min))
        return self._static


def restrict(measured: Measured, events: np.ndarray) -> Measured:
    """The same measurement with only the tracks and cells of the events in the boolean mask
    ``events`` (jets and event indices unchanged, so :func:`jet_factors` draws as before); the
    per-event sums of the kept events (:func:`missing_pt_per_event`) are bit-identical, the
    others' are zero."""
    t_keep = events[measured.tracks["event"]]
    c_keep = events[measured.cells["event"]]
    return Measured(n_events=measured.n_events, tracks={k: v[t_keep] for k, v in measured.tracks.items()},
                    cells={k: v[c_keep] for k, v in measured.cells.items()}, jets=measured.jets)


def _track_response(pt, eta, abs_id, tracked, rng, p):
    res = np.hypot(p.track_res_const, p.track_res_slope * pt)
    smeared = pt * (1.0 + res * rng.standard_normal(pt.shape))
    pf_id = np.where(abs_id == 11, 11, np.where(abs_id == 13, 13, 211))
    keep = tracked & (smeared > p.track_pt_min)
    return smeared, pf_id, keep, res * pt


def _calo_kind(abs_id, eta, deposit, p):
    """Calorimeter kind (0 ECAL, 1 HCAL, 2 HF had, 3 HF e.m., -1 none) of each deposit."""
    aeta = np.abs(eta)
    em = (abs_id == 22) | (abs_id == 11)
    kind = np.full(abs_id.shape, -1, dtype=np.int8)
    central = deposit & (aeta < p.calo_eta)
    forward = deposit & (aeta >= p.calo_eta) & (aeta < p.hf_eta)
    kind[central & em] = 0
    kind[central & ~em] = 1
    kind[forward & ~em] = 2
    kind[forward & em] = 3
    return kind


def _calo_sigma(energy, kind, p):
    e = np.maximum(energy, 1e-3)
    sigma = np.zeros_like(e)
    m = kind == 0
    sigma[m] = np.sqrt((p.ecal_stoch / np.sqrt(e[m])) ** 2 + p.ecal_const**2 + (p.ecal_noise / e[m]) ** 2)
    m = kind == 1
    sigma[m] = np.hypot(p.hcal_stoch / np.sqrt(e[m]), p.hcal_const)
    m = kind >= 2
    sigma[m] = np.hypot(p.hf_stoch / np.sqrt(e[m]), p.hf_const)
    return sigma


def _merge_cells(event, kind, pt, eta, phi, jet, p):
    """Sum the deposits of each (event, kind, cell).

    A cell's jet is that of its hardest deposit (``jet_pileup``) or of its hardest deposit that
    belongs to a jet (default); ``jet_frac`` is the scalar-pT share of the cell's deposits that
    belong to a jet, the part a jet-level factor scales (1 for ``jet_pileup``, as before).
    """
    size = np.select([kind == 0, kind == 1], [p.ecal_cell, p.hcal_cell], p.hf_cell)
    i_eta = np.floor((eta + 5.0) / size).astype(np.int64)
    i_phi = np.floor((phi + np.pi) / size).astype(np.int64)
    key = ((event.astype(np.int64) * 4 + kind) * 1024 + i_eta) * 1024 + i_phi
    uniq, inverse = np.unique(key, return_inverse=True)
    n = len(uniq)
    px = np.bincount(inverse, pt * np.cos(phi), n)
    py = np.bincount(inverse, pt * np.sin(phi), n)
    pz = np.bincount(inverse, pt * np.sinh(eta), n)
    cpt = np.hypot(px, py)
    ceta = np.arcsinh(pz / np.maximum(cpt, 1e-9))
    cphi = np.arctan2(py, px)
    # jet of the hardest deposit: sort by (cell, [in a jet,] pt) and take the last of each cell
    in_jet = jet >= 0
    order = np.lexsort((pt, inverse)) if p.jet_pileup else np.lexsort((pt, in_jet, inverse))
    last = np.r_[inverse[order][1:] != inverse[order][:-1], True]
    cjet = np.empty(n, dtype=np.int64)
    cjet[inverse[order][last]] = jet[order][last]
    if p.jet_pileup:
        frac = np.ones(n)
    else:
        frac = np.bincount(inverse, pt * in_jet, n) / np.maximum(np.bincount(inverse, pt, n), 1e-12)
    ckind = (uniq // (1024 * 1024)) % 4
    cevent = uniq // (4 * 1024 * 1024)
    return {"event": cevent, "kind": ckind.astype(np.int8), "pt": cpt, "eta": ceta, "phi": cphi, "jet": cjet,
            "jet_frac": frac}


def measure(
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    pdg_id: np.ndarray,
    charge: np.ndarray,
    event: np.ndarray,
    n_events: int,
    rng: np.random.Generator,
    params: DetectorParams = DetectorParams(),
    pileup: np.ndarray | None = None,
    jet: np.ndarray | None = None,
    vertex: np.ndarray | None = None,
) -> Measured:
    """Particle-level response of many events' stable particles (flat 1-D arrays).

    Args:
        pt, eta, phi, pdg_id, charge: one entry per stable particle (GeV, rad).
        event: the event index (0 ... n_events - 1) of each particle.
        pileup: True for particles of overlaid pileup events (their tracks are removed by CHS).
        jet: the generator jet (global index) of each particle, -1 if none; from
            :func:`generator_jets` (default: no jets, no jet-level response). Unless
            ``params.jet_pileup``, pileup particles are taken out of their jets here (they get
            only their particle-level response), whatever the caller clustered.
        vertex: the true interaction of each particle (0 = hard scatter, k = the k-th overlaid
            pileup event); given, the tracks carry it (``tracks["vertex"]``) for the vertex
            association (:mod:`svjscout.samples.vertices`). It draws no random number.
    """
    p = params
    abs_id = np.abs(pdg_id)
    visible = ~is_invisible(pdg_id)
    aeta = np.abs(eta)
    pileup = np.zeros(pt.shape, dtype=bool) if pileup is None else np.asarray(pileup, dtype=bool)
    jet = np.full(pt.shape, -1, dtype=np.int64) if jet is None else jet
    n_jets = int(jet.max()) + 1 if len(jet) and jet.max() >= 0 else 0  # jet indices stay those of the caller
    if not p.jet_pileup:
        jet = np.where(pileup, -1, jet)

    charged = (charge != 0) & visible
    tracked = charged & (aeta < p.tracker_eta)
    tracked &= ~((abs_id == 13) & (aeta >= p.muon_eta))
    if p.chs:
        tracked &= ~pileup
        removed = charged & pileup & (aeta < p.tracker_eta)
    else:
        removed = np.zeros(pt.shape, dtype=bool)
    t_pt, t_id, t_keep, t_sigma = _track_response(pt, eta, abs_id, tracked, rng, p)
    mass = np.where(t_id == 11, ELECTRON_MASS, np.where(t_id == 13, MUON_MASS, PION_MASS))
    tracks = {
        "event": event[t_keep], "pt": t_pt[t_keep], "eta": eta[t_keep], "phi": phi[t_keep],
        "pdgId": (t_id * np.sign(pdg_id))[t_keep].astype(np.int32), "charge": charge[t_keep].astype(np.int32),
        "mass": mass[t_keep],
    }
    if vertex is not None:
        tracks["vertex"] = np.asarray(vertex, dtype=np.int64)[t_keep]

    deposit = visible & ~tracked & ~removed & (abs_id != 13)
    kind = _calo_kind(abs_id, eta, deposit, p)
    energy = pt * np.cosh(eta)
    sigma = _calo_sigma(energy, kind, p)
    factor = np.maximum(1.0 + sigma * rng.standard_normal(pt.shape), 0.0)
    d = kind >= 0
    cells = _merge_cells(event[d], kind[d], (pt * factor)[d], eta[d], phi[d], jet[d], p)

    # jets: generator pT, calorimeter pT and the jet-level Gaussian width still to add
    in_jet = (jet >= 0) & visible
    jet_pt = np.hypot(np.bincount(jet[in_jet], pt[in_jet] * np.cos(phi[in_jet]), n_jets),
                      np.bincount(jet[in_jet], pt[in_jet] * np.sin(phi[in_jet]), n_jets))
    var_particles = np.bincount(jet[in_jet & tracked], t_sigma[in_jet & tracked] ** 2, n_jets)
    calo_in_jet = in_jet & d
    var_particles += np.bincount(jet[calo_in_jet], (sigma * pt)[calo_in_jet] ** 2, n_jets)
    in_jet_cells = cells["jet"] >= 0
    calo_pt = np.bincount(cells["jet"][in_jet_cells], (cells["pt"] * cells["jet_frac"])[in_jet_cells], n_jets)
    extra = np.sqrt(np.maximum((jer(jet_pt, p) * jet_pt) ** 2 - var_particles, 0.0))
    jet_event = np.zeros(n_jets, dtype=np.int64)
    jet_event[jet[in_jet]] = event[in_jet]
    jets = {"pt": jet_pt, "calo_pt": calo_pt, "sigma": extra, "event": jet_event}
    return Measured(n_events=n_events, tracks=tracks, cells=cells, jets=jets)


def jet_factors(measured: Measured, rng: np.random.Generator, params: DetectorParams = DetectorParams(),
                tail_prob: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One detector copy's calorimeter response factor per generator jet (see the module doc).

    The Gaussian core shifts the jet's pT by N(0, sigma) carried by its calorimeter cells; with
    probability ``jet_tail_prob`` the cells instead keep a fraction uniform in
    [``jet_tail_min``, ``jet_tail_max``].

    Args:
        tail_prob: per-jet probability to *sample* the tail with (default: the physical
            ``jet_tail_prob`` for every jet); with another value the caller weights the copy by
            the likelihood ratio (:func:`tail_weight`).

    Returns:
        (factor per jet, mask of the jets drawn in the tail).
    """
    p = params
    jets = measured.jets
    n = len(jets["pt"])
    shift = jets["sigma"] * rng.standard_normal(n)
    factor = np.maximum(1.0 + shift / np.maximum(jets["calo_pt"], 1e-3), 0.0)
    q = np.full(n, p.jet_tail_prob) if tail_prob is None else tail_prob
    tail = rng.random(n) < q
    factor[tail] = rng.uniform(p.jet_tail_min, p.jet_tail_max, int(tail.sum()))
    return factor, tail


def tail_weight(measured: Measured, tail: np.ndarray, tail_prob: np.ndarray,
                params: DetectorParams = DetectorParams()) -> np.ndarray:
    """Per event: the likelihood ratio of a copy whose jet tails were sampled with ``tail_prob``.

    Product over the event's jets of p / q for a jet in the tail and (1 - p) / (1 - q) otherwise,
    with p the physical ``jet_tail_prob`` and q the sampling probability: importance sampling,
    so every weighted yield is an unbiased estimate of the physical one (E_q[ratio] = 1).
    """
    p = params.jet_tail_prob
    q = tail_prob
    log_r = np.where(tail, np.log(p / q), np.log((1.0 - p) / (1.0 - q)))
    return np.exp(np.bincount(measured.jets["event"], log_r, measured.n_events))


def tail_strata_allocation(n_hard: np.ndarray, n_copies: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic split of a parent's K = ``n_copies`` copies among the tail strata.

    Per parent with n_h hard jets: ``core`` copies in stratum 0 (no hard jet in the tail),
    ``multi`` (0 or 1) copy in stratum "2+" (two or more hard jets in the tail; only if n_h >= 2)
    and ``single`` copies in the strata "exactly hard jet j in the tail", spread round-robin over
    the n_h jets. Stratum 0 gets K - 1 - max(1, K // 4) copies (at least 1): at the full
    preselection most of the QCD yield passes in copies without a hard jet in the tail (real MET
    or the particle-level MET of a few parents), which need as many copies as the brute force
    gives them (docs/generation_efficiency.md, section 5); a parent without hard jets spends all
    K there. Needs K >= 3 (checked by the caller).

    >>> tail_strata_allocation(np.array([0, 1, 2, 5]), 40)
    (array([40, 29, 29, 29]), array([0, 0, 1, 1]), array([ 0, 11, 10, 10]))
    """
    n_hard = np.asarray(n_hard, dtype=np.int64)
    core = np.where(n_hard > 0, max(1, n_copies - 1 - max(1, n_copies // 4)), n_copies)
    multi = (n_hard >= 2).astype(np.int64)
    single = n_copies - core - multi
    return core, multi, single


def tail_strata_probabilities(n_hard: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical probabilities of the hard-jet tail configurations, per parent with n_h hard jets.

    (P0, Pj, P2): no hard jet in the tail (1-p)^n_h; exactly hard jet j (each j alike)
    p (1-p)^(n_h-1) (0 without hard jets); two or more 1 - P0 - n_h Pj (never below 0).
    """
    n = np.asarray(n_hard, dtype=np.float64)
    p0 = (1.0 - p) ** n
    pj = np.where(n > 0, p * (1.0 - p) ** np.maximum(n - 1.0, 0.0), 0.0)
    p2 = np.maximum(1.0 - p0 - n * pj, 0.0)
    return p0, pj, p2


def tail_strata_copies(jet_event: np.ndarray, hard: np.ndarray, n_events: int, n_copies: int, p: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified sampling of which hard jets are in the jet-response tail, for K copies.

    Replaces the random tail draw of the hard jets (``hard``: per jet, generator pT at or above
    the bias threshold) by strata over *which* hard jet is in the tail (allocation:
    :func:`tail_strata_allocation`, probabilities: :func:`tail_strata_probabilities`):

    * stratum 0 (``core`` copies): no hard jet in the tail, weight P0 / core;
    * stratum j (exactly hard jet j): the ``single`` copies go round-robin over the parent's hard
      jets from a random start o (uniform in 0 ... n_h - 1); jet j gets c_j copies, each with
      weight Pj / (c_j min(1, single / n_h)). With single >= n_h every jet has c_j >= 1 and this
      is plain stratification (Pj / c_j); with fewer copies than jets, each jet is chosen with
      probability single / n_h (the random start) and the weight is the Horvitz-Thompson one;
    * stratum "2+" (one copy, n_h >= 2): the number m of tail jets is drawn from its exact
      conditional law (binomial(n_h, p) given m >= 2), then m distinct hard jets uniformly;
      weight P2. Exact: nothing is neglected (for n_h = 2 it is both jets; m >= 3 has
      probability O(p^3)).

    The soft jets keep their physical tail draw (:func:`stratified_jet_factors`). For any
    observable f, sum over copies of weight x f is an unbiased estimate of its expectation over
    the physical detector; with single >= n_h the weights of a parent sum to exactly 1.

    Args:
        jet_event: event index of each jet (``Measured.jets["event"]``); hard: mask per jet.
        p: the physical tail probability per jet (``jet_tail_prob``).

    Returns:
        (forced, weight): ``forced[k]`` the mask of jets forced into the tail in copy k
        (n_copies x n_jets), ``weight[k]`` the weight of copy k of each event (n_copies x n_events);
        the caller multiplies by the parent's weight.
    """
    jet_event = np.asarray(jet_event, dtype=np.int64)
    hard = np.asarray(hard, dtype=bool)
    n_jets = len(jet_event)
    hard_idx = np.flatnonzero(hard)
    hard_idx = hard_idx[np.argsort(jet_event[hard_idx], kind="stable")]
    h_event = jet_event[hard_idx]
    n_hard = np.bincount(h_event, minlength=n_events)
    first = np.concatenate([[0], np.cumsum(n_hard)[:-1]])
    core, multi, single = tail_strata_allocation(n_hard, n_copies)
    p0, pj, p2 = tail_strata_probabilities(n_hard, p)
    start = np.floor(rng.random(n_events) * np.maximum(n_hard, 1)).astype(np.int64)  # the random start o
    forced = np.zeros((n_copies, n_jets), dtype=bool)
    weight = np.zeros((n_copies, n_events))
    events = np.arange(n_events)
    # stratum "2+": m from binomial(n_h, p) given m >= 2, then m distinct hard jets uniformly
    m = np.zeros(n_events, dtype=np.int64)
    u = rng.random(n_events)
    for nh in np.unique(n_hard[n_hard >= 2]):
        k = np.arange(2, nh + 1)
        sel = n_hard == nh
        if not 0.0 < p < 1.0:  # no tail at all (weight P2 = 0) or every jet in it
            m[sel] = nh if p >= 1.0 else 2
            continue
        log_c = np.array([math.lgamma(nh + 1) - math.lgamma(j + 1) - math.lgamma(nh - j + 1) for j in k])
        log_pmf = log_c + k * np.log(p) + (nh - k) * np.log1p(-p)
        pmf = np.exp(log_pmf - log_pmf.max())
        cdf = np.cumsum(pmf / pmf.sum())
        m[sel] = k[np.minimum(np.searchsorted(cdf, u[sel], side="right"), len(k) - 1)]
    keys = rng.random(len(hard_idx))
    order = np.lexsort((keys, h_event))  # within each event, the hard jets in a random order
    rank = np.empty(len(hard_idx), dtype=np.int64)
    rank[order] = np.arange(len(hard_idx)) - first[h_event[order]]
    in_multi = rank < m[h_event]
    for copy in range(n_copies):
        is_core = copy < core
        weight[copy, is_core] = (p0 / core)[is_core]
        is_multi = (copy == core) & (multi == 1)
        weight[copy, is_multi] = p2[is_multi]
        forced[copy, hard_idx[in_multi & is_multi[h_event]]] = True
        i = copy - core - multi  # position among the parent's single-tail copies
        is_single = (i >= 0) & (n_hard > 0)
        ev = events[is_single]
        nh = n_hard[ev]
        j = (start[ev] + i[ev]) % nh  # the rank of the hard jet in the tail
        forced[copy, hard_idx[first[ev] + j]] = True
        s = single[ev]
        c_j = s // nh + (((j - start[ev]) % nh) < (s % nh))
        weight[copy, ev] = pj[ev] / (c_j * np.minimum(1.0, s / nh))
    return forced, weight


def stratified_jet_factors(measured: Measured, rng: np.random.Generator, params: DetectorParams,
                           hard: np.ndarray, forced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`jet_factors` for one stratified copy (:func:`tail_strata_copies`).

    The Gaussian core for every jet; the physical tail (probability ``jet_tail_prob``) for the
    jets that are not ``hard``; no tail for the hard jets except those ``forced``, which get the
    tail's response (a fraction uniform in [``jet_tail_min``, ``jet_tail_max``]).
    """
    q = np.where(hard, 0.0, params.jet_tail_prob)
    factor, tail = jet_factors(measured, rng, params, tail_prob=q)
    n_forced = int(forced.sum())
    factor[forced] = rng.uniform(params.jet_tail_min, params.jet_tail_max, n_forced)
    return factor, tail | forced


def cell_pt(measured: Measured, factors: np.ndarray | None, params: DetectorParams = DetectorParams()):
    """Cell pT after the jet factors, and the mask of cells above the PF thresholds."""
    p = params
    c = measured.cells
    if factors is None or len(factors) == 0:
        pt = c["pt"]
    else:
        f = np.where(c["jet"] >= 0, factors[np.maximum(c["jet"], 0)], 1.0)
        frac = c.get("jet_frac")
        if frac is not None and not np.all(frac == 1.0):  # only the jets' share of a mixed cell
            f = np.where(frac == 1.0, f, 1.0 + (f - 1.0) * frac)
        pt = c["pt"] * f
    st = measured.static(p)
    energy = pt * st["cosh"]
    return pt, (energy > st["e_min"]) & (pt > st["pt_min"])


def missing_pt_per_event(measured: Measured, factors: np.ndarray | None,
                         params: DetectorParams = DetectorParams()) -> tuple[np.ndarray, np.ndarray]:
    """(MET, MET phi) of every event: minus the vector sum of its PF candidates' pT."""
    n = measured.n_events
    c = measured.cells
    pt, keep = cell_pt(measured, factors, params)
    st = measured.static(params)
    px = -(st["track_px"] + np.bincount(c["event"][keep], (pt * st["cos"])[keep], n))
    py = -(st["track_py"] + np.bincount(c["event"][keep], (pt * st["sin"])[keep], n))
    return np.hypot(px, py), np.arctan2(py, px)


def candidates(measured: Measured, factors: np.ndarray | None,
               params: DetectorParams = DetectorParams(), events: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Flat PF candidates (tracks then cells) with their ``event`` index, for one copy.

    ``events``: only the candidates of these event indices (default: every event).
    """
    t = measured.tracks
    c = measured.cells
    pt, keep = cell_pt(measured, factors, params)
    t_sel = slice(None) if events is None else np.isin(t["event"], events)
    if events is not None:
        keep = keep & np.isin(c["event"], events)
    kinds = np.array([CALO_KINDS[k] for k in range(4)], dtype=np.int32)
    n_cells = int(keep.sum())
    extra = {}
    if "vertex" in t:  # the true interaction of each track; cells (no track): -1
        extra["vertex"] = np.concatenate([t["vertex"][t_sel], np.full(n_cells, -1, dtype=np.int64)])
    return {
        **extra,
        "event": np.concatenate([t["event"][t_sel], c["event"][keep]]),
        "pt": np.concatenate([t["pt"][t_sel], pt[keep]]),
        "eta": np.concatenate([t["eta"][t_sel], c["eta"][keep]]),
        "phi": np.concatenate([t["phi"][t_sel], c["phi"][keep]]),
        "mass": np.concatenate([t["mass"][t_sel], np.zeros(n_cells)]),
        "pdgId": np.concatenate([t["pdgId"][t_sel], kinds[c["kind"][keep]]]),
        "charge": np.concatenate([t["charge"][t_sel], np.zeros(n_cells, dtype=np.int32)]),
    }


def generator_jets(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, visible: np.ndarray, counts: np.ndarray,
                   params: DetectorParams = DetectorParams()) -> np.ndarray:
    """Global generator-jet index (anti-kT, R = ``jet_radius``, pT > ``jet_pt_min``) per particle.

    Args:
        pt, eta, phi: flat particles of all events; ``counts``: particles per event;
        visible: mask of the particles to cluster (the others get -1).
    """
    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
    jet = np.full(len(pt), -1, dtype=np.int64)
    idx = np.flatnonzero(visible)
    if len(idx) == 0:
        return jet
    vis_counts = np.bincount(np.repeat(np.arange(len(counts)), counts)[idx], minlength=len(counts))
    mom = ak.zip({
        "px": ak.unflatten(pt[idx] * np.cos(phi[idx]), vis_counts),
        "py": ak.unflatten(pt[idx] * np.sin(phi[idx]), vis_counts),
        "pz": ak.unflatten(pt[idx] * np.sinh(eta[idx]), vis_counts),
        "E": ak.unflatten(pt[idx] * np.cosh(eta[idx]), vis_counts),
    })
    seq = fastjet.ClusterSequence(mom, fastjet.JetDefinition(fastjet.antikt_algorithm, params.jet_radius))
    cons = seq.constituent_index(min_pt=params.jet_pt_min)  # events x jets x local indices
    n_jets = ak.to_numpy(ak.num(cons, axis=1))
    offsets = np.concatenate([[0], np.cumsum(vis_counts)[:-1]])
    per_jet = ak.num(cons, axis=2)
    flat_local = ak.to_numpy(ak.flatten(cons, axis=None)).astype(np.int64)
    ev_of_jet = np.repeat(np.arange(len(counts)), n_jets)
    jet_global = np.repeat(np.arange(int(n_jets.sum())), ak.to_numpy(ak.flatten(per_jet)))
    local_to_vis = offsets[ev_of_jet[jet_global]] + flat_local
    jet[idx[local_to_vis]] = jet_global
    return jet
