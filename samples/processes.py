"""Pythia 8 settings of every process svjscout generates, each setting with its reason.

Every process is a list of ``readString`` lines. :func:`process_settings` returns them for a
process name and its options; :data:`PROCESSES` lists the valid names.

Signal (``svj``): s-channel leptophobic Z' (Pythia's Hidden Valley ``Zv``, PDG id 4900023)
decaying to a dark quark pair; the dark sector is a confining SU(2) with two dark flavours,
dark quark mass 10 GeV and dark hadron mass 20 GeV (the CMS SVJ benchmark). Every dark meson
species that Pythia's HV fragmentation produces -- the flavour-diagonal pseudoscalar 4900111
and vector 4900113 *and* the off-diagonal 4900211 and 4900213 -- decays with probability
r_inv to a pair of stable invisible particles (PDG 51/53) and with probability 1 - r_inv promptly
to a Standard-Model quark pair. Giving the off-diagonal mesons decays too is essential: left
stable (Pythia's default), they are invisible and a nominal r_inv = 0.3 comes out near 0.64
on generator truth.
"""

from __future__ import annotations

from svjscout.exceptions import GenerationError

#: Valid process names of ``svjscout generate``.
PROCESSES = frozenset({"svj", "qcd", "ttbar", "wjets", "zjets"})

#: Dark-meson species produced by Pythia's HV fragmentation with ``HiddenValley:nFlav = 2``.
DARK_MESONS = (4900111, 4900113, 4900211, 4900213)
#: Stable invisible dark particles that carry r_inv (scalar 51, vector 53).
DARK_INVISIBLES = (51, 53)

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

#: Default pT-hat windows (GeV) per background: low edges chosen so that the events can reach
#: the scouting H_T > 410 GeV trigger and M_T > 650 GeV; overridable on the command line.
DEFAULT_PTHAT = {
    "qcd": (300.0, None),
    "ttbar": (150.0, None),
    "wjets": (200.0, None),
    "zjets": (200.0, None),
    "svj": (None, None),
}

# Settings shared by every process.
_COMMON = [
    "Beams:eCM = 13000.",  # Run-2 centre-of-mass energy
    "Tune:pp = 14",  # Monash 2013, Pythia's default pp tune (CP5-like for our purposes)
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


def _svj(mzprime: float, rinv: float) -> list[str]:
    if mzprime <= 0:
        raise GenerationError(f"svj: --mzprime must be positive, got {mzprime}")
    if not 0.0 <= rinv <= 1.0:
        raise GenerationError(f"svj: --rinv must be in [0, 1], got {rinv}")
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
        "HiddenValley:alphaOrder = 1",  # running dark coupling (one loop)
        "HiddenValley:Lambda = 20.",  # dark confinement scale ~ dark hadron mass
        "HiddenValley:pTminFSR = 22.",  # dark shower cut-off 1.1 x Lambda
        "HiddenValley:probVector = 0.75",  # vector : pseudoscalar = 3 : 1 (spin counting)
        "HiddenValley:separateFlav = on",  # off-diagonal mesons get their own properties
        "4900101:m0 = 10.",  # dark quark mass
        "4900102:m0 = 10.",  # second dark flavour, mass-degenerate
    ]
    # Every dark meson: mass 20 GeV, prompt; invisible with probability r_inv, otherwise a quark
    # pair (d, u, s, c, b equally: "democratic" decays, meMode 91 lets Pythia shower/hadronise).
    quark_frac = (1.0 - rinv) / 5.0
    for pid in DARK_MESONS:
        invisible = 53 if pid % 10 == 3 else 51
        lines += [
            f"{pid}:m0 = 20.",
            f"{pid}:mWidth = 0.",
            f"{pid}:tau0 = 0.",  # prompt
            f"{pid}:mayDecay = on",
            f"{pid}:isResonance = off",
            f"{pid}:oneChannel = 1 {rinv:.6f} 0 {invisible} -{invisible}",
        ]
        for quark in (1, 2, 3, 4, 5):
            lines.append(f"{pid}:addChannel = 1 {quark_frac:.6f} 91 {quark} -{quark}")
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
) -> list[str]:
    """Return the Pythia 8 ``readString`` lines of a process.

    Args:
        process: one of :data:`PROCESSES`.
        mzprime: Z' mass in GeV (``svj`` only).
        rinv: invisible fraction of dark hadrons (``svj`` only).
        pthat_min, pthat_max: pT-hat window in GeV (backgrounds; ``None`` = default / open).

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
        return lines + _svj(mzprime, rinv)
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
    return lines + _pthat(lo, hi)
