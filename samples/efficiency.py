"""Generation efficiency (issue 30): parent roulette before pileup and detector, shared pileup library.

Both are opt-in (:class:`~svjscout.samples.generate.GenerationConfig` fields ``roulette*`` and
``shared_pileup``); with them off, :func:`~svjscout.samples.generate.generate_chunk` returns the
same columns, value for value, as before (and with the roulette at ``roulette_p_min = 1`` too).
docs/generation_efficiency.md has the study and the table.

**Parent roulette** (Horvitz-Thompson sampling). Most QCD parents never pass the preselection
in any detector copy; each costs Pythia *and* the pileup overlay and the detector (three quarters
of the CPU). Before pileup and detector, every generated event gets generator-level features of
its hard scatter (:func:`hard_features`): the invisible particles' |sum pT| (neutrinos of
heavy-flavour decays: real MET), the visible H_T, and the M_T and R_T of the two leading
generator AK8 jets with that real MET. From them a keep probability p in [p_min, 1]
(:func:`keep_probability`; the study that chose it, on 2,000 brute-force parents with 40 copies:
no parent with generator M_T < 400 GeV passed, a quarter of them; the defaults M_T 400 GeV and
p_min 0.3 are the safer of the two measured settings, docs/generation_efficiency.md);
a dedicated random stream (numpy ``default_rng([seed, chunk, 13])``, one uniform number per
generated event) keeps the event with probability p, and a kept parent's weight is multiplied by
1/p. Every parent can be kept (p_min > 0), so every weighted yield is an unbiased estimate of the
brute-force one: E[sum over kept of w/p] = sum of w. The dropped parents still count in
``genEventCount``/``genEventSumw`` (the normalisation is that of every generated event, as with
the H_T pre-filter). The kept parents' pileup draws (how many minimum-bias events, which ones)
are those the brute-force file gives them: the same parents, like for like.

**Shared pileup library**: one minimum-bias library per file (per seed and library size), built
once per process and reused by every chunk, instead of one per chunk; only the particles the
detector can see are kept in it (nothing is measured or clustered beyond |eta| = 5; with the
detector's ``chs`` on, CHS removes the charged pileup particles inside the tracker before
anything sees them; invisibles stay, they enter ``GenMET``). The detector's response to every
kept particle is unchanged; only its random stream differs.

>>> float(keep_probability({"mt": np.array([0.0]), "nu_pt": np.array([50.0]), "rt": np.array([0.0])},
...                          RouletteSettings(p_min=0.1, nu_pt=30.0, rt=0.2))[0])
1.0
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import awkward as ak
import fastjet
import numpy as np

from svjscout.core.exceptions import GenerationError
from svjscout.samples import detector

log = logging.getLogger(__name__)

#: numpy stream of the roulette: ``default_rng([seed, chunk, ROULETTE_STREAM])``
ROULETTE_STREAM = 13
#: generator AK8 jets of the features: anti-kT R = 0.8 on the hard scatter's visible particles
GEN_AK8_RADIUS = 0.8
GEN_AK8_PT_MIN = 50.0
GEN_AK8_ABS_ETA_MAX = 2.4
FEATURES = ("nu_pt", "ht", "mt", "rt", "pt_j0")
#: the most decay repeats per event (samples/repeats.py) a configuration may ask for
MAX_DECAY_REPEATS = 1000


@dataclass(frozen=True)
class RouletteSettings:
    """The keep probability's parameters (see :func:`keep_probability`).

    p_min: the keep probability of a parent predicted never to pass (0 < p_min <= 1).
    mt: GeV; parents whose generator-level M_T (leading AK8 pair and the real MET) reaches it are
        kept (below it the detector would have to raise M_T past the 650 GeV cut).
    nu_pt: GeV; parents whose invisible |sum pT| reaches it are always kept.
    rt: parents whose generator-level R_T (real MET / M_T of the leading AK8 pair) reaches it are
        always kept.
    p_soft: the keep probability of the *soft* real-MET rows (kept only for their real MET, by
        ``nu_pt`` or ``rt``, with invisible |sum pT| below ``nu_pt_hard``): they need a detector
        fluctuation of ~100 GeV more to pass and carry little of the yield
        (docs/generation_efficiency.md, section 9); 1 keeps them all (the default).
    nu_pt_hard: GeV; real-MET rows at or above it are *hard*: always kept (and, with
        ``real_met_copies``, given fewer detector copies).
    """

    p_min: float = 0.3
    mt: float = 400.0
    nu_pt: float = 30.0
    rt: float = 0.15
    p_soft: float = 1.0
    nu_pt_hard: float = 80.0

    def __post_init__(self) -> None:
        if not 0.0 < self.p_min <= 1.0:
            raise GenerationError(f"roulette_p_min must be in (0, 1] (0 would bias: every parent must be "
                                  f"keepable), got {self.p_min!r}")
        if not self.mt >= 0.0:
            raise GenerationError(f"roulette_mt must be >= 0 GeV, got {self.mt!r}")
        if not self.nu_pt >= 0.0:
            raise GenerationError(f"roulette_nu_pt must be >= 0 GeV, got {self.nu_pt!r}")
        if not self.rt >= 0.0:
            raise GenerationError(f"roulette_rt must be >= 0, got {self.rt!r}")
        if not 0.0 < self.p_soft <= 1.0:
            raise GenerationError(f"roulette_p_soft must be in (0, 1] (0 would bias: every row must be "
                                  f"keepable), got {self.p_soft!r}")
        if not self.nu_pt_hard >= 0.0:
            raise GenerationError(f"roulette_nu_pt_hard must be >= 0 GeV, got {self.nu_pt_hard!r}")


def _gen_ak8(pt: ak.Array, eta: ak.Array, phi: ak.Array) -> dict[str, np.ndarray]:
    """The two leading generator AK8 jets (|eta| <= 2.4) per event: pt, eta, phi, mass (0 if absent)."""
    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
    mom = ak.zip({"px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pt * np.sinh(eta),
                  "E": pt * np.cosh(eta)})
    seq = fastjet.ClusterSequence(mom, fastjet.JetDefinition(fastjet.antikt_algorithm, GEN_AK8_RADIUS))
    jets = seq.inclusive_jets(min_pt=GEN_AK8_PT_MIN)
    jpt = np.hypot(jets.px, jets.py)
    jeta = np.arcsinh(jets.pz / np.maximum(jpt, 1e-9))
    jets = jets[(np.abs(jeta) <= GEN_AK8_ABS_ETA_MAX)]
    jets = jets[ak.argsort(np.hypot(jets.px, jets.py), axis=1, ascending=False)]
    out = {}
    for i in (0, 1):
        j = ak.pad_none(jets, 2, axis=1)[:, i]
        for comp in ("px", "py", "pz", "E"):
            out[f"{comp}{i}"] = ak.to_numpy(ak.fill_none(j[comp], 0.0)).astype(np.float64)
    return out


def hard_features(fs: dict[str, ak.Array], visible: ak.Array) -> dict[str, np.ndarray]:
    """Generator-level features of every event's hard scatter (before pileup and detector).

    Args:
        fs: the final state of :func:`~svjscout.samples.generate._final_state` (jagged per event:
            ``pt``, ``eta``, ``phi``, ``id``, ``pileup``), pileup not yet overlaid.
        visible: jagged mask of the visible particles.

    Returns:
        float64 arrays of shape (n_events,): ``nu_pt`` (|vector sum of the invisibles' pT|, GeV),
        ``ht`` (scalar sum of the visible |eta| < 3 pT, GeV; the generator H_T filter's), ``mt``
        (M_T of the two leading generator AK8 jets and the real MET, GeV; 0 with fewer than two),
        ``rt`` (nu_pt / mt; 0 without two jets), ``pt_j0`` (leading generator AK8 jet pT, GeV).
    """
    hard = ~fs["pileup"]
    mx, my, ht = _met_ht(fs, visible)
    vis = visible & hard & (abs(fs["eta"]) < 5.0)
    j = _gen_ak8(fs["pt"][vis], fs["eta"][vis], fs["phi"][vis])
    dijet = {"px": j["px0"] + j["px1"], "py": j["py0"] + j["py1"], "pz": j["pz0"] + j["pz1"],
             "E": j["E0"] + j["E1"], "two": (j["E1"] > 0) & (j["E0"] > 0), "pt_j0": np.hypot(j["px0"], j["py0"])}
    return with_met(dijet, mx, my, ht)


def _met_ht(fs: dict[str, ak.Array], visible: ak.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: the hard scatter's real MET vector (mx, my) and visible |eta| < 3 H_T."""
    hard = ~fs["pileup"]
    pt, eta, phi = fs["pt"], fs["eta"], fs["phi"]
    inv = ~visible & hard
    mx = -ak.to_numpy(ak.sum((pt * np.cos(phi))[inv], axis=1))
    my = -ak.to_numpy(ak.sum((pt * np.sin(phi))[inv], axis=1))
    ht = ak.to_numpy(ak.sum(pt[visible & hard & (abs(eta) < 3.0)], axis=1)).astype(np.float64)
    return mx, my, ht


def with_met(dijet: dict[str, np.ndarray], mx: np.ndarray, my: np.ndarray, ht: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`hard_features` from the leading generator AK8 pair (``dijet``: its summed 4-momentum,
    ``two``, ``pt_j0``) and a real MET vector: the features of a decay repeat reuse its event's pair."""
    nu_pt = np.hypot(mx, my)
    px, py, pz, e = dijet["px"], dijet["py"], dijet["pz"], dijet["E"]
    m2 = np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0)
    et_jj = np.sqrt(m2 + px**2 + py**2)
    mt2 = (et_jj + nu_pt) ** 2 - ((px + mx) ** 2 + (py + my) ** 2)
    mt = np.where(dijet["two"], np.sqrt(np.maximum(mt2, 0.0)), 0.0)
    rt = np.where(mt > 0, nu_pt / np.maximum(mt, 1e-9), 0.0)
    return {"nu_pt": nu_pt, "ht": ht, "mt": mt, "rt": rt, "pt_j0": dijet["pt_j0"], "_dijet": dijet}


def keep_probability(features: dict[str, np.ndarray], settings: RouletteSettings,
                     n_rep: np.ndarray | None = None) -> np.ndarray:
    """Keep probability of every event: 1 if its generator-level M_T reaches ``settings.mt``
    (the detector's fake MET, mostly its rare jet-response tail, can then make it pass) or it has
    real MET (``nu_pt >= settings.nu_pt`` or ``rt >= settings.rt``); ``settings.p_min`` otherwise
    (in the study no such parent passed, docs/generation_efficiency.md).

    ``n_rep`` (decay repeats, :mod:`svjscout.samples.repeats`): per row, how many repeats its
    event has; a repeat without real MET gets the probability above / n_rep (one such repeat per
    event on average goes on, as without repeats), one with real MET keeps 1.

    Soft real MET (``settings.p_soft`` < 1): a row kept only for its real MET (not for its M_T)
    whose invisible |sum pT| is below ``settings.nu_pt_hard`` gets ``p_soft`` instead of 1 (and no
    division by n_rep: a repeat's real MET is its own).

    >>> keep_probability({"mt": np.array([300.0, 300.0, 300.0, 700.0]), "nu_pt": np.array([5.0, 40.0, 5.0, 0.0]),
    ...                   "rt": np.array([0.01, 0.0, 0.3, 0.0])},
    ...                  RouletteSettings(p_min=0.1, mt=450.0, nu_pt=30.0, rt=0.2)).tolist()
    [0.1, 1.0, 1.0, 1.0]
    >>> keep_probability({"mt": np.array([300.0, 300.0, 700.0]), "nu_pt": np.array([5.0, 40.0, 5.0]),
    ...                   "rt": np.array([0.01, 0.0, 0.0])},
    ...                  RouletteSettings(p_min=0.1, mt=450.0, nu_pt=30.0, rt=0.2), np.array([20, 20, 1])).tolist()
    [0.005, 1.0, 1.0]
    >>> keep_probability({"mt": np.array([300.0, 300.0, 300.0, 300.0, 700.0]),
    ...                   "nu_pt": np.array([5.0, 40.0, 90.0, 5.0, 40.0]), "rt": np.array([0.01, 0.0, 0.0, 0.3, 0.0])},
    ...                  RouletteSettings(p_min=0.1, mt=450.0, nu_pt=30.0, rt=0.2, p_soft=0.25, nu_pt_hard=80.0),
    ...                  np.array([20, 20, 20, 20, 20])).tolist()
    [0.005, 0.25, 1.0, 0.25, 1.0]
    """
    real = (features["nu_pt"] >= settings.nu_pt) | (features["rt"] >= settings.rt)
    prob = np.where(real | (features["mt"] >= settings.mt), 1.0, settings.p_min)
    if n_rep is not None:
        prob = np.where(real, prob, prob / n_rep)
    if settings.p_soft < 1.0:
        soft = real & (features["nu_pt"] < settings.nu_pt_hard) & (features["mt"] < settings.mt)
        prob = np.where(soft, np.minimum(prob, settings.p_soft), prob)
    return prob


def hard_real_met(features: dict[str, np.ndarray], settings: RouletteSettings) -> np.ndarray:
    """Rows whose invisible |sum pT| reaches ``settings.nu_pt_hard`` (the hard real-MET rows)."""
    return features["nu_pt"] >= settings.nu_pt_hard


@dataclass
class Roulette:
    """One chunk's roulette: per generated event its features, keep probability and decision."""

    features: dict[str, np.ndarray]
    prob: np.ndarray
    kept: np.ndarray

    def apply(self, parents: np.ndarray, w_parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(kept parents, per generated event the weight to write: w / p for kept, w otherwise).

        ``parents``: positions (within the chunk) of the events passing the H_T filter; the
        ``genEventSumw`` of the chunk stays the sum of ``w_parent`` over every generated event.
        """
        weights = np.where(self.kept, w_parent / self.prob, w_parent)
        return parents[self.kept[parents]], weights

    def record(self) -> dict:
        """A compact summary for the chunk's result (studies, logs): counts, sum of 1/p over kept."""
        return {"n_events": len(self.prob), "n_kept": int(self.kept.sum()),
                "n_sure": int((self.prob >= 1.0).sum()), "sum_inv_p_kept": float(np.sum(1.0 / self.prob[self.kept]))}


def settings_of(cfg) -> RouletteSettings | None:
    """The roulette settings of a :class:`GenerationConfig` (None when the roulette is off)."""
    if not cfg.roulette:
        return None
    return RouletteSettings(p_min=cfg.roulette_p_min, mt=cfg.roulette_mt, nu_pt=cfg.roulette_nu_pt, rt=cfg.roulette_rt,
                            p_soft=cfg.roulette_p_soft, nu_pt_hard=cfg.roulette_nu_pt_hard)


def choose_parents(cfg, chunk: int, fs: dict[str, ak.Array], ht_min: float, rows=None) -> Roulette | None:
    """The roulette of chunk ``chunk`` on its hard-scatter final state ``fs`` (None when off).

    Events failing the generator H_T filter (``ht_min``) are not kept (they were never parents);
    the others with their keep probability, from the stream ``default_rng([seed, chunk, 13])``
    (one uniform per generated event, so a decision depends on the seed and the chunk only).

    ``rows`` = ``(fs_rows, repeats)`` with decay repeats (:mod:`svjscout.samples.repeats`): ``fs``
    is then the events' final state before the heavy-flavour decays (the generator AK8 pair is
    clustered once per event, the hadrons visible), and the roulette decides per row (one uniform
    per row): each row's real MET and H_T are its own, its M_T and R_T its event's pair with its MET.
    """
    settings = settings_of(cfg)
    if settings is None:
        return None
    feats = hard_features(fs, _visible(fs))
    n_rep = None
    if rows is not None:
        fs_rows, reps = rows
        mx, my, ht = _met_ht(fs_rows, _visible(fs_rows))
        feats = with_met({k: v[reps.origin] for k, v in feats["_dijet"].items()}, mx, my, ht)
        n_rep = reps.n_rep[reps.origin]
    prob = keep_probability(feats, settings, n_rep)
    kept = draw_keep(prob, cfg.seed, chunk) & (feats["ht"] >= ht_min)
    feats.pop("_dijet")
    return Roulette(features=feats, prob=prob, kept=kept)


def _visible(fs: dict[str, ak.Array]) -> ak.Array:
    return ~ak.unflatten(detector.is_invisible(ak.to_numpy(ak.flatten(fs["id"]))), ak.num(fs["id"]))


def draw_keep(prob: np.ndarray, seed: int, chunk: int) -> np.ndarray:
    """Keep each event with its probability ``prob``: one uniform per event from the roulette's
    own stream ``default_rng([seed, chunk, 13])`` (independent of Pythia's and the detector's).

    >>> draw_keep(np.array([1.0, 1.0, 1e-9]), seed=1, chunk=0).tolist()
    [True, True, False]
    """
    return np.random.default_rng([seed, chunk, ROULETTE_STREAM]).random(len(prob)) < prob


# --------------------------------------------------------------------------------------------
# shared pileup library

_LIBRARIES: dict[tuple, dict[str, ak.Array]] = {}


def prune_pileup(lib: dict[str, ak.Array], params: detector.DetectorParams) -> dict[str, ak.Array]:
    """Drop the pileup particles the detector never measures: visible beyond ``hf_eta`` (neither
    measured nor clustered) and, with ``chs`` on, the charged ones inside the tracker (CHS removes
    them before anything else sees them: no candidate, no vertex). Invisibles stay (``GenMET``).
    """
    flat_id = ak.to_numpy(ak.flatten(lib["id"]))
    invisible = detector.is_invisible(flat_id)
    aeta = np.abs(ak.to_numpy(ak.flatten(lib["eta"])))
    drop = ~invisible & (aeta >= params.hf_eta)
    if params.chs:
        charged = ak.to_numpy(ak.flatten(lib["charge"])) != 0
        drop |= ~invisible & charged & (aeta < params.tracker_eta)
    keep = ak.unflatten(~drop, ak.num(lib["id"]))
    return {k: v[keep] for k, v in lib.items()}


def shared_library(cfg, seed: int, make_library) -> tuple[dict[str, ak.Array], bool]:
    """The file's pileup library, built once per process: ``(library, built_now)``.

    ``make_library(seed, n)`` returns ``n`` minimum-bias events' final state (Pythia seeded with
    ``seed``, which the caller derives from ``cfg.seed`` only), so every chunk of a file, whichever
    process runs it, overlays the same library: the file does not depend on the number of workers.
    """
    key = (seed, cfg.pileup_library, tuple(sorted(asdict(cfg.detector_params).items())))
    if key in _LIBRARIES:
        return _LIBRARIES[key], False
    lib = prune_pileup(make_library(seed, cfg.pileup_library), cfg.detector_params)
    _LIBRARIES.clear()  # one file at a time per process: keep memory bounded
    _LIBRARIES[key] = lib
    return lib, True


def validate(cfg) -> None:
    """Check a :class:`GenerationConfig`'s efficiency fields (GenerationError naming the field)."""
    for name in ("roulette", "shared_pileup"):
        if not isinstance(getattr(cfg, name), bool):
            raise GenerationError(f"{name} must be true or false, got {getattr(cfg, name)!r}")
    RouletteSettings(p_min=cfg.roulette_p_min, mt=cfg.roulette_mt, nu_pt=cfg.roulette_nu_pt, rt=cfg.roulette_rt,
                     p_soft=cfg.roulette_p_soft, nu_pt_hard=cfg.roulette_nu_pt_hard)
    k_real = cfg.real_met_copies
    if isinstance(k_real, bool) or not isinstance(k_real, (int, np.integer)) or k_real < 0:
        raise GenerationError(f"real_met_copies must be an integer >= 0 (0: every row gets detector_copies), "
                              f"got {k_real!r}")
    if k_real:
        if not cfg.roulette:
            raise GenerationError("real_met_copies needs the roulette (roulette = true): it decides which rows "
                                  "have hard real MET")
        if k_real > cfg.detector_copies:
            raise GenerationError(f"real_met_copies = {k_real} exceeds detector_copies = {cfg.detector_copies}")
        if cfg.tail_strata or cfg.resample_particles:
            raise GenerationError("real_met_copies cannot be combined with tail_strata or resample_particles "
                                  "(their copies are not exchangeable draws)")
    n = cfg.decay_repeats
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= MAX_DECAY_REPEATS:
        raise GenerationError(f"decay_repeats must be an integer in [0, {MAX_DECAY_REPEATS}] (0: decays inline), "
                              f"got {n!r}")
    if n > 1 and not cfg.roulette:
        raise GenerationError(f"decay_repeats = {n} needs the roulette (roulette = true): without it every repeat "
                              f"would go through pileup and the detector, {n} times the CPU for the same parents")
