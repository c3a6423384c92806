"""Pythia 8 settings of every process svjscout generates, each setting with its reason.

Every process is a list of ``readString`` lines. :func:`process_settings` returns them for a
process name and its options; :data:`PROCESSES` lists the valid names.

Signal (``svj``): the CMS s-channel semi-visible-jet benchmark (EXO-19-020 and its production
code). A leptophobic Z' (Pythia's Hidden Valley ``Zv``, PDG id 4900023) decays to a dark quark
pair; the dark sector is a confining SU(2) with two dark flavours of mass m_dark / 2 and dark
hadrons of mass m_dark = 20 GeV. The dark coupling runs at one loop from the confinement scale
Lambda_dark = 3.2 m_dark^0.8 (the benchmark's alpha_dark "peak" choice: 35.2 GeV at 20 GeV);
Pythia 8.3 uses ``HiddenValley:Lambda`` only with ``HiddenValley:setLambda = on`` -- without
it the coupling runs from ``alphaFSR`` at m_Z and Lambda comes out at ~3 MeV: 0.5 distinct dark
gluons per 2 TeV Z' event instead of ~13 (shower-made, status 51, each once; the event record holds
~26 dark-gluon entries with the recoil and hadronisation copies). The dark shower stops at pTminFSR = 1.1 Lambda_dark.

With ``separateFlav = on`` and two flavours, Pythia's HV fragmentation produces six dark-meson
species: the flavour-diagonal 4900111 / 4900113, the off-diagonal 4900211 / 4900213 and the
second diagonal 4900221 / 4900223 (pseudoscalar / vector each). Every one of them is configured
(:data:`DARK_MESONS`): mass m_dark, prompt, decaying with probability r_inv to a pair of stable
invisible dark states (PDG 51 for pseudoscalars, 53 for vectors) and otherwise to a quark pair:
pseudoscalars by mass insertion as in CMS's SVJProduction (branching fractions proportional to
m_q^2 with the quark masses run to the dark-hadron scale: at 20 GeV b bbar 94.3 %, c cbar 5.7 %,
u, d, s none), vectors democratically (u, d, s, c, b equally). A species left unconfigured keeps
Pythia's default mass and no decay: it is stable and, being 49xxxxx, invisible, which raises the
true invisible fraction (0.45 for a nominal 0.3).

Tune: CMS's CP5 (Pythia 8 Monash base, NNPDF3.1 NNLO PDF with alpha_s(m_Z) = 0.118 at second
order in every component, CMS's MPI and colour-reconnection parameters; the settings of CMSSW's
``PythiaCP5Settings_cfi``), the tune of every CMS Run-2 (2017-2018) sample. Pythia ships the
NNPDF3.1 NNLO grid (``PDF:pSet = 20``), so CP5 needs no LHAPDF.
"""

from __future__ import annotations

import math

from svjscout.core.exceptions import GenerationError

#: Valid process names of ``svjscout generate``.
PROCESSES = frozenset({"svj", "qcd", "ttbar", "wjets", "zjets"})

#: Dark-meson species produced by Pythia's HV fragmentation with ``HiddenValley:nFlav = 2`` and
#: ``separateFlav = on``: (pseudoscalar, vector) pairs of the diagonal 11, off-diagonal 21 and
#: second diagonal 22 flavour combinations.
DARK_PSEUDOSCALARS = (4900111, 4900211, 4900221)
DARK_VECTORS = (4900113, 4900213, 4900223)
DARK_MESONS = DARK_PSEUDOSCALARS + DARK_VECTORS
#: Stable invisible dark particles that carry r_inv (scalar 51, vector 53).
DARK_INVISIBLES = (51, 53)

#: The benchmark's dark-sector parameters: dark hadron mass (GeV) and the alpha_dark "peak"
#: prescription Lambda_dark = 3.2 m_dark^0.8, dark-shower cut-off pTminFSR = 1.1 Lambda_dark.
M_DARK = 20.0


def lambda_dark(m_dark: float = M_DARK) -> float:
    """Dark confinement scale (GeV) of the benchmark's alpha_dark "peak" choice.

    >>> round(lambda_dark(20.0), 1)
    35.2
    """
    return 3.2 * m_dark**0.8


#: Quark masses of SVJProduction's mass insertion (GeV; ids 2, 1, 3, 4, 5 in mass order): the PDG
#: MSbar masses m_q(m_q) its ``quarklist`` starts from, and its QCD scale Lambda (``massRunner``).
#: Source: cms-svj/SVJProduction ``python/svjHelper.py`` (last changed in commit 26f6008, 2023-02-08;
#: read at 75e6b04), classes ``quark``, ``massRunner``, ``quarklist`` and ``svjHelper.visibleDecay``.
SVJ_QUARK_MASSES = ((2, 0.0023), (1, 0.0048), (3, 0.095), (4, 1.275), (5, 4.18))
SVJ_QCD_LAMBDA = 0.218


def _alpha_s(q: float, nf: int) -> float:
    """One-loop alpha_s(Q) with Lambda = :data:`SVJ_QCD_LAMBDA` (SVJProduction's ``alphaS``)."""
    b = (33.0 - 2.0 * nf) / (12.0 * math.pi)
    return 1.0 / (b * math.log(q**2 / SVJ_QCD_LAMBDA**2))


def _one_c(nf: int) -> float:
    """1 + c_b (c' - b'): the two-loop factor of Ellis-Stirling-Webber's running mass (eq. 2.68)."""
    cb = 12.0 / (33.0 - 2.0 * nf)
    cp = (303.0 - 10.0 * nf) / (72.0 * math.pi)
    bp = (153.0 - 19.0 * nf) / (2.0 * math.pi * (33.0 - 2.0 * nf))
    return 1.0 + cb * (cp - bp)


def running_quark_masses(scale: float = M_DARK) -> dict[int, float]:
    """Quark masses run to ``scale`` (GeV) exactly as SVJProduction's ``quarklist.set(scale)``.

    Quarks with m_q < scale are active; with nf of them, the i-th lightest (nfq = i lighter active
    flavours) gets m(Q) = m_hat alpha_s(Q, nf)^c_b(nf) (1 + c_b(c' - b'))(nf), with the invariant
    mass m_hat = m_q / alpha_s(m_q, nfq)^c_b(nfq) / (1 + ...)(nfq) (Ellis, Stirling, Webber).
    A quark lighter than Lambda (alpha_s(m_q) < 0: u, d, s) gets 0, as in SVJProduction; an
    inactive one keeps its input mass. Only quarks with 2 m_q < scale are returned (the open
    decays). At 20 GeV: m_c = 0.845, m_b = 3.432 GeV.

    >>> {q: round(m, 3) for q, m in running_quark_masses(20.0).items()}
    {2: 0.0, 1: 0.0, 3: 0.0, 4: 0.845, 5: 3.432}
    """
    active = [(q, m) for q, m in SVJ_QUARK_MASSES if m < scale]
    nf = len(active)
    run = dict(SVJ_QUARK_MASSES)
    for nfq, (q, m) in enumerate(active):
        if _alpha_s(m, nfq) < 0:
            run[q] = 0.0
            continue
        cb_q, cb = 12.0 / (33.0 - 2.0 * nfq), 12.0 / (33.0 - 2.0 * nf)
        m_hat = m / _alpha_s(m, nfq) ** cb_q / _one_c(nfq)
        run[q] = m_hat * _alpha_s(scale, nf) ** cb * _one_c(nf)
    return {q: run[q] for q, m in SVJ_QUARK_MASSES if 2 * m < scale}


def mass_insertion_fractions(m_meson: float = M_DARK) -> dict[int, float]:
    """Pseudoscalar -> q qbar branching fractions by mass insertion, SVJProduction's recipe.

    BR(q qbar) = m_q(m_meson)^2 / sum over the open quarks, with the quark masses run to the
    dark-hadron scale (:func:`running_quark_masses`); no phase-space factor (SVJProduction's
    ``visibleDecay("massInsertion")``); democratic if every mass runs to zero. Channels with a
    zero fraction (u, d, s) are left out. At 20 GeV: b bbar 94.28 %, c cbar 5.72 %.

    >>> f = mass_insertion_fractions(20.0)
    >>> sorted(f), round(f[5], 4), round(f[4], 4)
    ([4, 5], 0.9428, 0.0572)
    """
    masses = running_quark_masses(m_meson)
    total = sum(m**2 for m in masses.values())
    if total == 0.0:
        return {q: 1.0 / len(masses) for q in masses}
    return {q: m**2 / total for q, m in masses.items() if m > 0.0}


#: Parton-shower variation weights written as NanoAOD's ``PSWeight``, in NanoAOD's order: (Pythia
#: weight-group name, shower variation). CMS's names (``isrDefHi`` ...) and factors (the "Def"
#: set of ``Configuration/Generator/python/PSweightsPythia/PythiaPSweightsSettings_cfi.py``).
#: ``muRfac`` multiplies the shower's renormalisation scale; ``muRfac = 0.5`` raises alpha_s, i.e.
#: more radiation: CMS's "Hi", the *up* variation, documented in NanoAOD as ``ISR=2`` / ``FSR=2``
#: (the factor on the emission rate's scale, 1/muRfac). So PSWeight[0] = ISR up, [1] = FSR up,
#: [2] = ISR down, [3] = FSR down.
PS_WEIGHTS = (
    ("isrDefHi", "isr:muRfac=0.5"),  # [0] ISR=2 FSR=1 (ISR up)
    ("fsrDefHi", "fsr:muRfac=0.5"),  # [1] ISR=1 FSR=2 (FSR up)
    ("isrDefLo", "isr:muRfac=2.0"),  # [2] ISR=0.5 FSR=1 (ISR down)
    ("fsrDefLo", "fsr:muRfac=2.0"),  # [3] ISR=1 FSR=0.5 (FSR down)
)

#: Default pT-hat windows (GeV) per background; overridable on the command line. QCD starts at
#: 170 GeV: dijets with pT-hat of 200-300 GeV still pass H_T > 410 GeV and M_T > 650 GeV once
#: ISR and the MET recoil add up (the window contributes after the preselection); the steeply
#: falling spectrum is populated evenly with pT-hat biasing (:data:`DEFAULT_BIAS`). ttbar is
#: inclusive (no pT-hat cut; the generator-level H_T filter selects the events instead).
DEFAULT_PTHAT = {
    "qcd": (170.0, None),
    "ttbar": (None, None),
    "wjets": (200.0, None),
    "zjets": (200.0, None),
    "svj": (None, None),
}

#: Default pT-hat bias power per process (Pythia's ``PhaseSpace:bias2Selection``: events are
#: sampled with an extra (pT-hat / pT-hat_min)^power and carry the inverse as their weight).
#: 4.5 would flatten the dijet spectrum (CMS's "Flat" samples), but two thirds of the QCD that
#: passes the preselection has a leading jet below 300 GeV. Effective preselected events (Kish,
#: over parents) per 1,000 generated QCD events with 40 detector copies: power 2 and tail x20
#: 9.4, power 3 and tail x20 6.9, power 2 and tail x100 7.2, power 4.5 and tail x100 2.4 (4,000
#: parents each, the last 40,000; pilots of samples/training/make.sh, docs/samples.md).
DEFAULT_BIAS = {"qcd": 2.0}

#: Cross sections that replace Pythia's leading-order ``sigmaGen`` (pb), or K factors on it, per
#: process, with their sources (also written into each file's metadata):
#:
#: * ttbar: 832 pb, the NNLO+NNLL inclusive cross section at 13 TeV for m_t = 172.5 GeV (Top++ 2.0,
#:   Czakon and Mitov; the LHC Top Working Group's reference value used by CMS and ATLAS).
#: * W+jets, Z+jets: K = 1.21 and 1.23. What they are: the inclusive factors CMS analyses put on
#:   MadGraph LO (MLM) W(-> l nu) + jets and Z(-> nu nu) + jets samples at 13 TeV, the ratio of the
#:   inclusive NNLO (FEWZ) cross section to the LO sample's (CMS's "SummaryTable1G25ns" lists
#:   K = 1.21 for the WJetsToLNu H_T bins), dominated by bosons at low pT. What they multiply here:
#:   Pythia's LO 2 -> 2 V + jet (``WeakBosonAndParton``) above pT-hat 200 GeV, another LO (other
#:   scales, one emission) in another region (pT(V) > 200 GeV), where the NLO QCD and the negative
#:   NLO electroweak (Sudakov) corrections depend on pT(V) (Lindert et al., arXiv:1705.04664). So
#:   they are an order-of-magnitude normalisation, not a prediction: Pythia's LO above 200 GeV
#:   moves by -11 % / +12 % under the 7-point scale variation (benchmarks/bench_vjets_xsec.py) and
#:   the boosted NLO QCD x EW factor is not the inclusive one; we assign +-20 % (docs/samples.md,
#:   "K factors of W and Z"). W and Z enter the analysis through the MC only (training and the
#:   expected-limit studies; the ABCD background in the cards is fitted).
#: * QCD: K = 1 (LO; the analysis estimates QCD from data with the ABCD method, so its normalisation
#:   enters only the training and the expected-limit studies).
XSEC_OVERRIDE = {"ttbar": (832.0, "NNLO+NNLL, Top++ 2.0 (Czakon, Mitov), m_t = 172.5 GeV")}
K_FACTORS = {
    "wjets": (1.21, "inclusive NNLO/LO factor of CMS's MadGraph LO W(-> l nu) + jets samples at 13 TeV, "
                    "applied to Pythia's LO W + jet above pT-hat 200 GeV; +-20 % (docs/samples.md)"),
    "zjets": (1.23, "inclusive NNLO/LO factor of CMS's MadGraph LO Z(-> nu nu) + jets samples at 13 TeV, "
                    "applied to Pythia's LO Z + jet above pT-hat 200 GeV; +-20 % (docs/samples.md)"),
    "qcd": (1.0, "LO (QCD is estimated from data with ABCD)"),
}

#: CMS's CP5 tune (CMSSW ``Configuration/Generator/python/MCTunes2017/PythiaCP5Settings_cfi``).
CP5 = [
    "Tune:pp = 14",
    "Tune:ee = 7",
    "MultipartonInteractions:ecmPow = 0.03344",
    "PDF:pSet = 20",  # NNPDF3.1 QCD+LUXQED NNLO, alpha_s(m_Z) = 0.118 (shipped with Pythia)
    "MultipartonInteractions:bProfile = 2",
    "MultipartonInteractions:pT0Ref = 1.41",
    "MultipartonInteractions:coreRadius = 0.7634",
    "MultipartonInteractions:coreFraction = 0.63",
    "ColourReconnection:range = 5.176",
    "SigmaTotal:zeroAXB = off",
    "SpaceShower:alphaSorder = 2",
    "SpaceShower:alphaSvalue = 0.118",
    "SigmaProcess:alphaSvalue = 0.118",
    "SigmaProcess:alphaSorder = 2",
    "MultipartonInteractions:alphaSvalue = 0.118",
    "MultipartonInteractions:alphaSorder = 2",
    "TimeShower:alphaSorder = 2",
    "TimeShower:alphaSvalue = 0.118",
]

#: Settings of every Pythia instance, hard scatter and minimum bias alike: the tune, quiet
#: output and CMS's decay convention.
BASE = [
    "Beams:eCM = 13000.",  # Run-2 centre-of-mass energy
    *CP5,
    "Next:numberCount = 0",  # no progress printout: we show our own progress bar
    "Next:numberShowEvent = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
    "Init:showChangedSettings = off",
    "Init:showChangedParticleData = off",
    "Init:showProcesses = off",
    "Init:showMultipartonInteractions = off",
    "Random:setSeed = on",  # the seed is set per chunk by the generator
    "ParticleDecays:limitTau0 = on",  # only particles with c*tau0 < 10 mm decay (CMS convention)
    "ParticleDecays:tau0Max = 10.",
]

#: Minimum-bias (pileup) events: non-diffractive inelastic collisions with the same tune and decays.
MINBIAS = BASE + ["SoftQCD:nonDiffractive = on"]

# Settings of every hard-scatter process.
_COMMON = BASE + [
    # Parton-shower ISR/FSR variation weights (Pythia's automated variations, Mrenna & Skands,
    # arXiv:1605.08352), written as NanoAOD's PSWeight; see PS_WEIGHTS for the order. Only QCD
    # emissions of the SM showers vary: the Hidden Valley (dark) shower gets weight 1.
    "UncertaintyBands:doVariations = on",
    "UncertaintyBands:List = {" + ", ".join(f"{name} {var}" for name, var in PS_WEIGHTS) + "}",
    # CMS's ranges (PythiaPSweightsSettings_cfi): FSR branchings are varied only above 20 x the
    # shower cut-off pT^2 (Pythia's default 4 gives FSR-up weights of O(100) from emissions near
    # the cut-off), ISR branchings down to the cut-off. Not taken from CMS, for CPU: MPI showers
    # are not varied (UncertaintyBands:MPIshowers, Pythia's default off; on costs ~3x) and the
    # trial oversampling stays at Pythia's default (CMS: 10; it only lowers the weights' variance).
    "UncertaintyBands:FSRpTmin2Fac = 20",
    "UncertaintyBands:ISRpTmin2Fac = 1",
]


def _svj(mzprime: float, rinv: float, m_dark: float = M_DARK) -> list[str]:
    if mzprime <= 0:
        raise GenerationError(f"svj: --mzprime must be positive, got {mzprime}")
    if not 0.0 <= rinv <= 1.0:
        raise GenerationError(f"svj: --rinv must be in [0, 1], got {rinv}")
    if m_dark <= 0 or 2 * m_dark >= mzprime:
        raise GenerationError(f"svj: m_dark = {m_dark} GeV must be positive and below m_Z'/2")
    lam = lambda_dark(m_dark)
    lines = [
        "HiddenValley:ffbar2Zv = on",  # s-channel q qbar -> Z' (HV Zv, id 4900023)
        f"4900023:m0 = {mzprime:g}",  # mediator mass
        f"4900023:mMin = {mzprime - 1:g}",  # narrow resonance ...
        f"4900023:mMax = {mzprime + 1:g}",
        "4900023:mWidth = 0.01",  # ... with negligible width
        "4900023:onMode = off",  # leptophobic: BR(Z' -> dark quarks) = 1
        "4900023:onIfAny = 4900101",
        "HiddenValley:Ngauge = 2",  # confining SU(2) dark colour
        "HiddenValley:nFlav = 2",  # two dark flavours
        "HiddenValley:spinFv = 0",  # no HV heavy fermions involved
        "HiddenValley:FSR = on",  # dark parton shower ...
        "HiddenValley:fragment = on",  # ... and dark hadronisation into dark mesons
        "HiddenValley:alphaOrder = 1",  # running dark coupling (one loop) ...
        "HiddenValley:setLambda = on",  # ... from Lambda below (else from alphaFSR at m_Z)
        f"HiddenValley:Lambda = {lam:.4f}",  # alpha_dark "peak": 3.2 m_dark^0.8
        f"HiddenValley:pTminFSR = {1.1 * lam:.4f}",  # dark shower cut-off 1.1 Lambda
        "HiddenValley:probVector = 0.75",  # vector : pseudoscalar = 3 : 1 (spin counting)
        "HiddenValley:separateFlav = on",  # every flavour combination gets its own properties
        f"4900101:m0 = {m_dark / 2:g}",  # dark quark mass m_dark / 2
        f"4900102:m0 = {m_dark / 2:g}",  # second dark flavour, mass-degenerate
    ]
    # Every dark meson: mass m_dark, prompt; invisible with probability r_inv, otherwise a quark
    # pair (meMode 91: Pythia showers and hadronises it): pseudoscalars by mass insertion, vectors
    # democratically.
    insertion = mass_insertion_fractions(m_dark)
    for pid in DARK_MESONS:
        vector = pid in DARK_VECTORS
        invisible = 53 if vector else 51
        lines += [
            f"{pid}:m0 = {m_dark:g}",
            f"{pid}:mWidth = 0.",
            f"{pid}:tau0 = 0.",  # prompt
            f"{pid}:mayDecay = on",
            f"{pid}:isResonance = off",
            f"{pid}:oneChannel = 1 {rinv:.6f} 0 {invisible} -{invisible}",
        ]
        fractions = {q: 0.2 for q in (1, 2, 3, 4, 5)} if vector else insertion
        for quark, frac in fractions.items():
            lines.append(f"{pid}:addChannel = 1 {(1.0 - rinv) * frac:.6f} 91 {quark} -{quark}")
    lines += [
        "51:m0 = 0.",  # stable invisible dark scalar (massless, no decay)
        "51:mayDecay = off",
        "51:isResonance = off",
        "53:m0 = 0.",  # stable invisible dark vector
        "53:mayDecay = off",
        "53:isResonance = off",
    ]
    return lines


def _pthat(lo: float | None, hi: float | None) -> list[str]:
    lines = []
    if lo is not None:
        lines.append(f"PhaseSpace:pTHatMin = {lo:g}")
    if hi is not None:
        lines.append(f"PhaseSpace:pTHatMax = {hi:g}")
    return lines


def process_settings(
    process: str,
    *,
    mzprime: float = 2000.0,
    rinv: float = 0.3,
    pthat_min: float | None = None,
    pthat_max: float | None = None,
    bias_power: float | None = None,
    m_dark: float = M_DARK,
) -> list[str]:
    """Return the Pythia 8 ``readString`` lines of a process.

    Args:
        process: one of :data:`PROCESSES`.
        mzprime: Z' mass in GeV (``svj`` only).
        rinv: invisible fraction of dark hadrons (``svj`` only).
        pthat_min, pthat_max: pT-hat window in GeV (backgrounds; ``None`` = default / open).
        bias_power: pT-hat bias power (``None``: :data:`DEFAULT_BIAS`; 0: unbiased). The events
            then carry weights (``genWeight``) that undo the bias.
        m_dark: dark hadron mass in GeV (``svj`` only; Lambda_dark and pTminFSR follow it).

    >>> any("4900211:oneChannel" in s for s in process_settings("svj", rinv=0.3))
    True
    >>> "HardQCD:all = on" in process_settings("qcd")
    True
    """
    if process not in PROCESSES:
        raise GenerationError(f"unknown process {process!r}; expected one of {sorted(PROCESSES)}")
    lo, hi = DEFAULT_PTHAT[process]
    lo = pthat_min if pthat_min is not None else lo
    hi = pthat_max if pthat_max is not None else hi
    lines = list(_COMMON)
    if process == "svj":
        return lines + _svj(mzprime, rinv, m_dark)
    if process == "qcd":
        lines += ["HardQCD:all = on"]  # all 2 -> 2 QCD processes, incl. heavy flavour
    elif process == "ttbar":
        lines += ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on"]  # inclusive top decays
    elif process == "wjets":
        lines += [
            "WeakBosonAndParton:qqbar2Wg = on",  # W + jet
            "WeakBosonAndParton:qg2Wq = on",
            "24:onMode = off",  # W -> l nu (e, mu, tau): real MET, lost leptons
            "24:onIfAny = 11 13 15",
        ]
    elif process == "zjets":
        lines += [
            "WeakBosonAndParton:qqbar2gmZg = on",  # Z + jet
            "WeakBosonAndParton:qg2gmZq = on",
            "WeakZ0:gmZmode = 2",  # pure Z, no photon interference
            "23:onMode = off",  # Z -> nu nu: the irreducible real-MET background
            "23:onIfAny = 12 14 16",
        ]
    power = DEFAULT_BIAS.get(process, 0.0) if bias_power is None else bias_power
    if power < 0:
        raise GenerationError(f"{process}: the pT-hat bias power must be >= 0, got {power}")
    if power > 0:
        if lo is None:
            raise GenerationError(f"{process}: pT-hat biasing needs a pT-hat minimum")
        lines += [
            "PhaseSpace:bias2Selection = on",  # sample with weight (pT-hat / ref)^power ...
            f"PhaseSpace:bias2SelectionPow = {power:g}",
            f"PhaseSpace:bias2SelectionRef = {lo:g}",  # ... event weight = its inverse
        ]
    return lines + _pthat(lo, hi)
