"""Event generation: Pythia 8 -> fast detector response -> scouting-format ROOT file.

The data path of one file::

    Pythia 8 (settings from :mod:`svjscout.samples.processes`), chunks of ``chunk_size`` events
      -> optional generator-level H_T pre-filter (visible particles, |eta| < 3)
      -> optional pileup overlay (Pythia minimum-bias, Poisson mean ``pileup``)
      -> fast detector response (:mod:`svjscout.samples.detector`) -> PF candidates, MET
      -> optional PF-MET skim (``met_min``)
      -> ROOT file via uproot: ``Events`` (ScoutingNano names) + ``Runs`` (generated count, sums of
         weights, cross section) + ``svjscout_meta`` (JSON: process, options, settings)

The ``layout`` (samples/layouts.py) names the branches: ``scoutingnano_run3``, the default
(CMS's current ScoutingNano: ``ScoutingPFCandidate_*`` with ``vertexIndex``,
charged pileup written, ``ScoutingPrimaryVertex_*`` from samples/vertices.py,
``ScoutingRho_fixedGridRhoFastjetAll`` from samples/energy_density.py, ``DST_HT410_PFScouting``
from samples/trigger.py, ``GenDarkQuark_*`` from samples/truth.py; docs/samples.md) or
``svjscout`` (the files before the regeneration: ``ScoutingParticle_*``, charged pileup removed).

Branches for the systematics, in NanoAOD's conventions (CMSSW ``GenWeightsTableProducer`` and
``NPUTablesProducer``):

* ``PSWeight`` (``nPSWeight`` = 4, float32): Pythia's parton-shower variation weights relative to
  the nominal weight (w_var / w_nominal), order of :data:`~svjscout.samples.processes.PS_WEIGHTS`:
  [0] ISR=2 FSR=1 (``isr:muRfac=0.5``, ISR up), [1] ISR=1 FSR=2 (``fsr:muRfac=0.5``, FSR up),
  [2] ISR=0.5 FSR=1 (``isr:muRfac=2``, ISR down), [3] ISR=1 FSR=0.5 (``fsr:muRfac=2``, FSR down).
  Only the SM showers' QCD emissions vary; the Hidden Valley shower does not. Omitted (with
  ``PSSumw``) if the settings switch the variations off (``UncertaintyBands:doVariations = off``).
* ``Pileup_nTrueInt`` (float32): the Poisson mean the number of overlaid min-bias events is drawn
  from, i.e. ``--pileup`` for every event; ``Pileup_nPU`` (int32): the number drawn and overlaid.
  Both 0 without pileup.
* ``Runs``: ``genEventSumw2`` (sum of genWeight^2) and ``PSSumw`` (``nPSSumw`` = 4): sum over all
  generated events of genWeight * PSWeight[i], divided by ``genEventSumw`` (NanoAOD's convention).
  Like ``genEventSumw``, both count the events removed by the pre-filter and the skim.

Detector copies (``detector_copies`` = K, the rebalance-and-smear idea of CMS's MET-tail
studies): every generated event that passes the H_T filter is measured once at particle level and
then K times at jet level with independent seeds (samples/detector.py); each copy passing the MET
skim is written as an event with its parent's id (``parent``, unique per file; with ``run`` = the
seed, unique per dataset) and ``genWeight`` = w / K, where w is Pythia's weight of the parent (1,
or the inverse pT-hat bias with ``bias_power``). ``genEventCount``/``genEventSumw`` count parents,
so sum over every copy of genWeight = genEventSumw and the normalisation stays exact. Copies of one
parent are correlated: the processor's errors sum the copies' weights per parent before squaring.

Tail biasing (``tail_bias`` = B > 1): the fake MET that lets QCD pass R_T > 0.24 comes mostly from
the rare non-Gaussian jet response (probability p = 1e-3 per jet). In the copies, jets with
generator pT >= ``tail_bias_pt_min`` are drawn in the tail with probability q = min(B p, 0.5)
instead, and each copy's genWeight is multiplied by the likelihood ratio, prod over those jets of
p/q (tail) or (1-p)/(1-q) (core) (importance sampling): weighted yields are unbiased estimates of
the physical ones, the sum of a file's genWeight equals ``genEventSumw`` in expectation (exactly
without biasing), and the weights' spread is counted by Kish's effective number of events.

Stratified tail copies (``tail_strata``, opt-in, with ``tail_bias`` = 1 and K >= 3): instead of a
random tail draw, the K copies of a parent are split deterministically among the hard-jet tail
configurations (no hard jet in the tail, exactly hard jet j, two or more), the chosen jets forced
into the tail, each copy weighted by the configuration's physical probability over its number of
copies (:func:`svjscout.samples.detector.tail_strata_copies`; docs/generation_efficiency.md).

Decay repeats (``decay_repeats`` = n >= 1, opt-in; n > 1 with the parent roulette): the weakly
decaying b and c hadrons are left undecayed by the event generator and every event holding one is
repeated n times (n = 1: decayed once, the same events as with n > 1, like for like), each
repeat with its own decays of all of them (a second Pythia that only decays) and 1/n of the
event's weight; the roulette keeps a repeat with real MET and, of the others, one in n
on average (:mod:`svjscout.samples.repeats`). The repeats share ``parent``; ``event`` counts
(parent, repeat, copy). Events without heavy hadrons are not repeated.

Written PF candidates cover the ECAL/HCAL acceptance (|eta| < 3); HF cells (3 < |eta| < 5) enter
the MET but are not written (``write_hf`` writes them): with pileup they are ~350 per event, a
third of the file, and only the few AK8 jets at |eta| ~ 2.4 could reach them.

Chunk ``k`` is always generated with the same seed, derived from ``(seed, k)``; each finished chunk
is stored in ``OUT.parts`` (:mod:`svjscout.samples.parts`: an interrupted run resumes from them)
and the file is assembled from the parts in chunk order, so it is identical whatever runs the
chunks (local processes, a dask cluster: :mod:`svjscout.jobs.generation`), their number and the
interruptions (docs/generation.md).

Normalisation: the processors weight MC events by ``genWeight * xsec * lumi / genEventSumw``, with
``genEventSumw`` from the ``Runs`` tree, which counts *every* generated event, including those
removed by the pre-filter and the skim. Both filters must therefore be looser than the analysis
selection; ``met_min`` <= 156 GeV is (R_T > 0.24 and M_T > 650 GeV imply MET > 156 GeV) and
``ht_min`` below 410 GeV on the sum of visible particle pT is (every AK4 jet's pT is at most the
scalar sum of its constituents').
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from svjscout import __version__
from svjscout.core.constants import DEFAULT_PILEUP
from svjscout.core.cuts import Cuts
from svjscout.core.exceptions import GenerationError
from svjscout.core.progress import make_progress
from svjscout.core.rootfiles import open_root
from svjscout.samples import detector, efficiency, energy_density, parts, repeats, trigger, vertices
from svjscout.samples.layouts import LAYOUTS, PF_WRITTEN
from svjscout.samples.processes import (
    BASE,
    DARK_INVISIBLES,
    DEFAULT_BIAS,
    K_FACTORS,
    MINBIAS,
    PROCESSES,
    PS_WEIGHTS,
    XSEC_OVERRIDE,
    process_settings,
)
from svjscout.samples.truth import dark_quarks
from svjscout.samples.zprime_xsec import SOURCE as ZPRIME_XSEC_SOURCE
from svjscout.samples.zprime_xsec import zprime_xsec

log = logging.getLogger(__name__)

PB_PER_MB = 1e9


def bias_power_default_text() -> str:
    """The default of ``--bias-power`` in words, from :data:`DEFAULT_BIAS` (``generate --help``).

    >>> bias_power_default_text()
    'Default: 2 for qcd, 0 (unbiased) otherwise.'
    """
    per_process = ", ".join(f"{power:g} for {process}" for process, power in sorted(DEFAULT_BIAS.items()))
    return f"Default: {per_process}, 0 (unbiased) otherwise."


def reference_signal_xsec(mzprime: float) -> float:
    """The benchmark's signal cross section in pb at ``mzprime`` GeV.

    SVJProduction's whole Z' table (final EXO-19-020 values, 500-5100 GeV, embedded with its
    source in :mod:`svjscout.samples.zprime_xsec`), log-linear between its points; outside the
    table, give the cross section with ``--xsec``. Pythia's Hidden Valley ``Zv`` couplings to
    quarks are not the benchmark's, so its ``sigmaGen`` never normalises the signal.

    >>> reference_signal_xsec(2000.0), reference_signal_xsec(2500.0)
    (0.4537, 0.1304)
    """
    return zprime_xsec(mzprime)


@dataclass
class GenerationConfig:
    """Everything that defines a generated file (also written into its metadata)."""

    process: str
    events: int
    seed: int = 1
    mzprime: float = 2000.0
    rinv: float = 0.3
    m_dark: float = 20.0
    pthat_min: float | None = None
    pthat_max: float | None = None
    bias_power: float | None = None
    ht_min: float = 0.0
    met_min: float = 0.0
    pileup: float = DEFAULT_PILEUP  # Run-2 like, as `svjscout generate --pileup`; 0 switches it off
    pileup_library: int = 1000
    write_hf: bool = False
    layout: str = "scoutingnano_run3"  # output layout (samples/layouts.py): CMS's Run-3 ScoutingNano or svjscout
    write_truth: bool = False  # scoutingnano_run3 only: also GenPFCandidate_interaction (truth per candidate)
    detector_copies: int = 1
    tail_bias: float = 1.0
    tail_bias_pt_min: float = 50.0
    tail_strata: bool = False  # stratified tail copies over which hard jet is in the tail (replaces tail_bias)
    resample_particles: bool = False
    detector: dict = field(default_factory=dict)
    chunk_size: int = 500
    workers: int = 1
    xsec: float | None = None
    dataset: str | None = None
    extra_settings: list[str] = field(default_factory=list)
    # generation efficiency (issue 30, samples/efficiency.py; opt-in, off by default)
    roulette: bool = False  # parent roulette before pileup and detector (weights 1/p)
    roulette_p_min: float = 0.3  # keep probability of parents predicted not to pass, in (0, 1]
    roulette_mt: float = 400.0  # GeV: parents with generator-level M_T above are always kept
    roulette_nu_pt: float = 30.0  # GeV: parents with invisible |sum pT| above are always kept
    roulette_rt: float = 0.15  # parents with generator-level R_T above are always kept
    shared_pileup: bool = False  # one pruned pileup library per file instead of one per chunk
    decay_repeats: int = 0  # n >= 1: b/c hadrons decayed n times per event by a second Pythia (samples/repeats.py)
    roulette_p_soft: float = 1.0  # keep probability of real-MET rows below roulette_nu_pt_hard (1: all kept)
    roulette_nu_pt_hard: float = 80.0  # GeV: rows with invisible |sum pT| above have hard real MET
    real_met_copies: int = 0  # k >= 1: detector copies of the hard real-MET rows (weights x K / k); 0: K

    def __post_init__(self) -> None:
        efficiency.validate(self)  # roulette_* and shared_pileup (GenerationError naming the field)
        if self.process not in PROCESSES:
            raise GenerationError(f"unknown process {self.process!r}; expected one of {sorted(PROCESSES)}")
        if self.layout not in LAYOUTS:
            raise GenerationError(f"layout: unknown layout {self.layout!r}; expected one of {sorted(LAYOUTS)}")
        if self.write_truth and not LAYOUTS[self.layout].reco:
            raise GenerationError(f"write_truth: the per-candidate truth needs a layout with vertices "
                                  f"({sorted(k for k, v in LAYOUTS.items() if v.reco)}), got {self.layout!r}")
        if self.events <= 0:
            raise GenerationError(f"--events must be positive, got {self.events}")
        if self.process == "svj" and self.xsec is None:
            reference_signal_xsec(self.mzprime)  # outside the table: fail before generating, naming its range
        cuts = Cuts()  # the skims may only drop events the preselection drops
        if self.met_min > cuts.met_min:
            raise GenerationError(f"met_min = {self.met_min} GeV is tighter than the preselection's implied MET > "
                                  f"{cuts.met_min:g} GeV (R_T > {cuts.rt_min:g} and M_T > {cuts.mt_min:g} GeV)")
        if self.ht_min > cuts.ht_min:
            raise GenerationError(f"ht_min = {self.ht_min} GeV is tighter than the H_T > {cuts.ht_min:g} GeV trigger")
        if self.detector_copies < 1:
            raise GenerationError(f"--detector-copies must be >= 1, got {self.detector_copies}")
        if self.tail_bias < 1.0:
            raise GenerationError(f"--tail-bias must be >= 1, got {self.tail_bias}")
        if not isinstance(self.tail_strata, bool):
            raise GenerationError(f"tail_strata must be true or false, got {self.tail_strata!r}")
        if self.tail_strata and self.tail_bias != 1.0:
            raise GenerationError(f"tail_strata replaces the tail bias: set tail_bias = 1 (got {self.tail_bias})")
        if self.tail_strata and self.detector_copies < 3:
            raise GenerationError(f"tail_strata needs detector_copies >= 3 (no tail, one hard jet, two or more), "
                                  f"got {self.detector_copies}")
        if self.pileup < 0 or self.pileup_library < 1:
            raise GenerationError("--pileup must be >= 0 and --pileup-library >= 1")
        known = set(detector.DetectorParams.__dataclass_fields__)
        unknown = sorted(set(self.detector) - known)
        if unknown:
            raise GenerationError(f"unknown detector parameter(s) {unknown}; known: {sorted(known)}")
        self.detector_params  # noqa: B018 -- validates the values now (ConfigError naming the parameter)

    @property
    def dataset_name(self) -> str:
        if self.dataset:
            return self.dataset
        if self.process == "svj":
            return f"svj_mz{self.mzprime:g}_rinv{self.rinv:g}"
        return self.process

    @property
    def detector_params(self) -> detector.DetectorParams:
        """The detector of this file; a layout with the vertex association writes the charged pileup
        candidates (``chs`` off: CHS is the reader's) unless ``detector`` sets ``chs``."""
        params = dict(self.detector)
        if LAYOUTS[self.layout].reco:
            params.setdefault("chs", False)
        return detector.DetectorParams(**params)

    def settings(self) -> list[str]:
        """The event generator's Pythia lines (with decay repeats: the heavy hadrons left undecayed)."""
        stable = repeats.stable_settings(repeats.HEAVY_HADRONS) if self.decay_repeats >= 1 else []
        return process_settings(
            self.process, mzprime=self.mzprime, rinv=self.rinv, pthat_min=self.pthat_min,
            pthat_max=self.pthat_max, bias_power=self.bias_power, m_dark=self.m_dark,
        ) + stable + list(self.extra_settings)


def chunk_seed(seed: int, chunk: int) -> int:
    """Pythia seed of chunk ``chunk`` (Pythia accepts 1 ... 900,000,000)."""
    return 1 + (seed * 1_000_003 + chunk * 7_919) % 899_999_999


def _make_pythia(settings: list[str], seed: int):
    import pythia8mc  # generate extra: only generation needs Pythia (reading generated files does not)

    pythia = pythia8mc.Pythia("", False)
    for line in settings:
        if not pythia.readString(line):
            raise GenerationError(f"Pythia rejected the setting {line!r}")
    pythia.readString(f"Random:seed = {seed}")
    if not pythia.init():
        raise GenerationError("Pythia initialisation failed; settings: " + "; ".join(settings))
    return pythia


def _charges(pythia, ids: np.ndarray) -> np.ndarray:
    uniq, inverse = np.unique(ids, return_inverse=True)
    table = np.array([pythia.particleData.charge(int(i)) for i in uniq], dtype=np.float64)
    return np.rint(table[inverse]).astype(np.int32)


def _final_state(pythia, batch) -> dict[str, ak.Array]:
    """Stable final-state particles of a ``nextBatch`` result, jagged per event."""
    prt = batch.prt
    final = prt.status > 0
    fs = prt[final]
    px, py, pz = fs.p.px, fs.p.py, fs.p.pz
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-9))
    phi = np.arctan2(py, px)
    counts = ak.num(fs.id)
    flat_ids = ak.to_numpy(ak.flatten(fs.id))
    charge = ak.unflatten(_charges(pythia, flat_ids), counts)
    return {"pt": pt, "eta": eta, "phi": phi, "id": fs.id, "charge": charge,
            "pileup": ak.zeros_like(fs.id, dtype=bool)}


def is_dark_hadron(pdg_id) -> np.ndarray:
    """Dark hadrons: |id| in 4900111 ... 4900999 (dark mesons and baryons; not dark quarks/gluons)."""
    a = np.abs(np.asarray(pdg_id))
    return (a >= 4900110) & (a <= 4900999)


def _dark_truth(batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per event: (dark hadrons, those that end invisible, those left stable in the final state).

    Every dark hadron on the event record counts (any |id| 49001xx-49009xx), last copies only
    (Pythia keeps recoil copies with the same id). A hadron ends invisible if it decays to the
    stable dark states (51/53) *or* is itself stable (then it is invisible too: an unconfigured
    species). ``nStable`` must be 0 with the benchmark's settings.
    """
    prt = batch.prt
    counts = ak.num(prt.id)
    aid = ak.to_numpy(ak.flatten(abs(prt.id)))
    d1 = ak.to_numpy(ak.flatten(prt.daughter1))
    status = ak.to_numpy(ak.flatten(prt.status))
    offsets = np.repeat(np.concatenate([[0], np.cumsum(ak.to_numpy(counts))[:-1]]), ak.to_numpy(counts))
    daughter_id = aid[np.where(d1 > 0, offsets + d1, 0)]
    hadron = is_dark_hadron(aid)
    final = status > 0
    last = hadron & (final | ((d1 > 0) & (daughter_id != aid)))
    invisible = last & (final | np.isin(daughter_id, DARK_INVISIBLES))
    stable = last & final

    def per_event(mask):
        return ak.to_numpy(ak.sum(ak.unflatten(mask, counts), axis=1))

    return per_event(last), per_event(invisible), per_event(stable)


def _ps_weights(pythia, batch) -> np.ndarray | None:
    """Per event of a ``nextBatch`` result: the PS_WEIGHTS variations / the nominal weight.

    Shape (n_events, 4), float64; None if Pythia computes no shower variations. Pythia lower-cases
    the group names of ``UncertaintyBands:List``; its weight 0 is the nominal ("Weight").
    """
    names = [str(n).lower() for n in pythia.infoPython().weightNameVector()]
    wanted = [name.lower() for name, _ in PS_WEIGHTS]
    if not all(n in names for n in wanted):
        return None
    if len(batch) == 0:
        return np.zeros((0, len(wanted)))
    w = np.asarray(ak.to_numpy(ak.to_regular(batch.info.weights, axis=1)), dtype=np.float64)
    if w.shape[1] != len(names):
        raise GenerationError(f"Pythia returned {w.shape[1]} weights per event for {len(names)} names {names}")
    return w[:, [names.index(n) for n in wanted]] / w[:, :1]


def _nominal_weights(batch) -> np.ndarray:
    """Pythia's nominal event weight (1 unbiased; the inverse bias with pT-hat biasing)."""
    if len(batch) == 0:
        return np.zeros(0)
    return np.asarray(ak.to_numpy(batch.info.weights[:, 0]), dtype=np.float64)


#: Precision kept in the stored PF candidates' floats, as NanoAOD does for its PF candidates
#: (mantissa bits): pT and mass 10, eta and phi 12. Relative precision 2^-11 (0.05 %) on pT and
#: ~1e-4 rad in phi, far below the detector resolution; makes the files ~2x smaller.
PF_MANTISSA_BITS = {"pt": 10, "mass": 10, "eta": 12, "phi": 12}


def reduce_precision(x: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 values to ``bits`` mantissa bits (NanoAOD's ``precision``), ties to even.

    >>> float(reduce_precision(np.array([1.0 + 2**-12], dtype=np.float32), 10)[0])
    1.0
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    drop = 23 - bits
    u = x.view(np.uint32).astype(np.uint64)
    half = np.uint64(1 << (drop - 1))
    lsb = (u >> np.uint64(drop)) & np.uint64(1)
    u = ((u + half - np.uint64(1) + lsb) >> np.uint64(drop)) << np.uint64(drop)
    return u.astype(np.uint32).view(np.float32)


def generate_chunk(cfg: GenerationConfig, chunk: int, n_events: int) -> dict:
    """Generate chunk ``chunk`` of a file: returns the columns to write and the chunk's counts.

    Each generated (parent) event that passes the generator-level H_T filter goes through the
    detector ``cfg.detector_copies`` = K times: the particle-level response once, the jet-level
    response (:func:`svjscout.samples.detector.jet_factors`) once per copy with its own seed.
    Every copy that passes the MET skim is written with its parent's id (``parent``) and weight
    genWeight / K; copies of one parent are contiguous.
    """
    clock = {"t": time.perf_counter()}
    timing: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.perf_counter()
        timing[name] = timing.get(name, 0.0) + now - clock["t"]
        clock["t"] = now

    seed = chunk_seed(cfg.seed, chunk)
    pythia = _make_pythia(cfg.settings(), seed)
    rng = np.random.default_rng([cfg.seed, chunk, 7])
    params = cfg.detector_params
    n_copies = cfg.detector_copies
    batch = pythia.nextBatch(n_events)
    n_generated = len(batch)
    w_parent = w_generated = _nominal_weights(batch)  # w_parent: per row (per repeat with decay repeats)
    fs = _final_state(pythia, batch)
    n_dark, n_dark_inv, n_dark_stable = dark_counts = _dark_truth(batch)  # per event (per row after repeats)
    reco = LAYOUTS[cfg.layout].reco  # vertices, rho, trigger bits, dark quarks (samples/layouts.py)
    dq = dark_quarks(batch) if reco else None
    ps = _ps_weights(pythia, batch)
    ps_sumw = None if ps is None else (w_parent[:, None] * ps).sum(axis=0)  # sum of w * PSWeight[i]
    lap("pythia")
    reps = None
    if cfg.decay_repeats >= 1:  # rows: every event with b/c hadrons n times, each with its own decays
        gun = repeats.DecayGun(BASE, chunk_seed(cfg.seed + repeats.DECAY_SEED_OFFSET, chunk))
        fs_events = fs
        fs, reps = repeats.repeat_decays(fs, repeats.HEAVY_CODES, cfg.decay_repeats, gun,
                                         lambda ids: _charges(pythia, ids))
        w_parent = w_parent[reps.origin] * reps.share  # each repeat carries 1/n of its event's weight
        ps, n_dark, n_dark_inv, n_dark_stable = (None if a is None else a[reps.origin]
                                                 for a in (ps, n_dark, n_dark_inv, n_dark_stable))
        dq = None if dq is None else {k: v[reps.origin] for k, v in dq.items()}
        lap("decay_repeats")
        chosen = efficiency.choose_parents(cfg, chunk, fs_events, cfg.ht_min, rows=(fs, reps))
    else:
        chosen = efficiency.choose_parents(cfg, chunk, fs, cfg.ht_min)  # parent roulette (issue 30): None unless on
    lap("roulette")
    if reco:  # the interaction of each particle: 0 the hard scatter, k the k-th pileup event
        fs["vertex"] = ak.values_astype(ak.zeros_like(fs["id"]), np.int64)

    n_pu = np.zeros(len(fs["id"]), dtype=np.int64)
    n_pu_events = 0
    if cfg.pileup > 0:
        fs, n_pu, n_pu_events = _overlay_pileup(fs, cfg, chunk, rng, None if chosen is None else chosen.kept)
    lap("pileup")

    flat_ids = ak.to_numpy(ak.flatten(fs["id"]))
    visible = ~ak.unflatten(detector.is_invisible(flat_ids), ak.num(fs["id"]))
    central = abs(fs["eta"]) < 3.0
    hard = ~fs["pileup"]
    # generator H_T filter on the hard scatter's visible particles (pileup adds a few GeV per jet)
    ht_gen = ak.to_numpy(ak.sum(fs["pt"][visible & central & hard], axis=1))
    inv_pt = fs["pt"][~visible]
    inv_phi = fs["phi"][~visible]
    gen_met_x = -ak.to_numpy(ak.sum(inv_pt * np.cos(inv_phi), axis=1))  # invisibles carry +pT; MET points along them
    gen_met_y = -ak.to_numpy(ak.sum(inv_pt * np.sin(inv_phi), axis=1))
    gen_met_pt = np.hypot(gen_met_x, gen_met_y)
    gen_met_phi = np.arctan2(-gen_met_y, -gen_met_x)

    parents = np.flatnonzero(ht_gen >= cfg.ht_min)
    w_written = w_parent
    if chosen is not None:  # the kept parents, weights w / p (sumw still counts every generated event)
        parents, w_written = chosen.apply(parents, w_parent)
    sub = {k: v[parents] for k, v in fs.items()}
    counts = ak.to_numpy(ak.num(sub["pt"]))
    flat = {k: ak.to_numpy(ak.flatten(v)) for k, v in sub.items()}
    event_index = np.repeat(np.arange(len(parents)), counts)
    vis = ~detector.is_invisible(flat["id"])
    if not params.jet_pileup:  # pileup enters once, through the overlay: jets of the hard scatter only
        vis &= ~flat["pileup"]
    jet = detector.generator_jets(flat["pt"], flat["eta"], flat["phi"], vis & (np.abs(flat["eta"]) < 5.0),
                                  counts, params)
    lap("generator_jets")
    meas = detector.measure(flat["pt"], flat["eta"], flat["phi"], flat["id"], flat["charge"], event_index,
                            len(parents), rng, params, pileup=flat["pileup"], jet=jet, vertex=flat.get("vertex"))
    lap("detector_particles")
    verts = None
    if reco:  # vertices from the tracks (the same for every copy); their own random stream
        vrng = np.random.default_rng([cfg.seed, chunk, 13])
        truth = vertices.true_positions(n_pu[parents], vrng, params)
        t = meas.tracks
        verts = vertices.reconstruct(n_pu[parents], t["event"], t["vertex"], t["pt"], truth, vrng, params)
        lap("vertices")

    pieces = []  # (copy, passing parent positions, their candidates, met, met phi, tail weight ratio)
    q = None
    if cfg.tail_bias != 1.0:  # importance sampling of the jet-response tail (hard jets only)
        q = np.where(meas.jets["pt"] >= cfg.tail_bias_pt_min,
                     min(cfg.tail_bias * params.jet_tail_prob, 0.5), params.jet_tail_prob)
    if cfg.tail_strata:  # stratified over which hard jet is in the tail (detector.tail_strata_copies)
        hard = meas.jets["pt"] >= cfg.tail_bias_pt_min
        srng = np.random.default_rng([cfg.seed, chunk, 17])  # its own stream: the copies' streams stay as they are
        forced, strata_w = detector.tail_strata_copies(meas.jets["event"], hard, len(parents), n_copies,
                                                       params.jet_tail_prob, srng)
    few = None  # hard real-MET rows with fewer copies (real_met_copies): copies >= k leave them out
    if cfg.real_met_copies and cfg.real_met_copies < n_copies and chosen is not None:
        few = efficiency.hard_real_met({k: v[parents] for k, v in chosen.features.items()},
                                       efficiency.settings_of(cfg))
        meas_rest = detector.restrict(meas, ~few)  # the other rows' cells and tracks only (the copies' cost)
    for copy in range(n_copies):
        crng = np.random.default_rng([cfg.seed, chunk, copy, 11])
        if cfg.resample_particles and copy > 0:  # brute force: the whole detector again per copy
            meas = detector.measure(flat["pt"], flat["eta"], flat["phi"], flat["id"], flat["charge"], event_index,
                                    len(parents), crng, params, pileup=flat["pileup"], jet=jet,
                                    vertex=flat.get("vertex"))
        if cfg.tail_strata:  # the copy's weight P_s / (copies in s), times K (genWeight divides by K)
            factors, tail = detector.stratified_jet_factors(meas, crng, params, hard, forced[copy])
            ratio = n_copies * strata_w[copy]
        else:  # every row draws, so the other rows' copies are those of K copies, draw for draw
            factors, tail = detector.jet_factors(meas, crng, params, tail_prob=q)
            ratio = np.ones(len(parents)) if q is None else detector.tail_weight(meas, tail, q, params)
        only_rest = few is not None and copy >= cfg.real_met_copies
        if few is not None:  # the hard real-MET rows' k copies stand for K: each weighs K / k
            ratio = np.where(few, ratio * (n_copies / cfg.real_met_copies), ratio)
        met_pt, met_phi = detector.missing_pt_per_event(meas_rest if only_rest else meas, factors, params)
        ok = met_pt >= cfg.met_min
        if only_rest:
            ok &= ~few
        passing = np.flatnonzero(ok)
        if len(passing) == 0:
            continue
        cands = detector.candidates(meas, factors, params, events=passing)  # only the copies written
        extras = _reco_extras(cands, passing, verts) if reco else None  # from all candidates, HF included
        if not cfg.write_hf:  # HF cells enter the MET above but are not written (see the module doc)
            hf = np.isin(cands["pdgId"], (1, 2))
            cands = {k: v[~hf] for k, v in cands.items()}
        pieces.append((copy, passing, cands, met_pt, met_phi, ratio, extras))

    lap("detector_copies")
    columns = _assemble(cfg, chunk, parents, pieces, w_written, ps, n_pu, gen_met_pt, gen_met_phi,
                        n_dark, n_dark_inv, n_dark_stable, verts=verts, dark_quark=dq, repeats=reps)
    lap("assemble")
    info = pythia.infoPython()
    return {
        "columns": columns,
        "n_generated": n_generated,
        "sumw": float(w_generated.sum()),
        "sumw2": float(np.square(w_generated).sum()),
        "ps_sumw": ps_sumw,
        "n_pileup_events": n_pu_events,
        "n_parents_detected": len(parents),  # rows (repeats) with decay repeats
        **({} if reps is None else {"n_rows": len(reps.origin), "n_repeated": int(np.sum(reps.n_rep > 1))}),
        "n_written": len(columns["event"]),
        "sigma_gen_pb": info.sigmaGen() * PB_PER_MB,
        "sigma_err_pb": info.sigmaErr() * PB_PER_MB,
        "n_dark": int(dark_counts[0].sum()),  # per generated event
        "n_dark_inv": int(dark_counts[1].sum()),
        "n_dark_stable": int(dark_counts[2].sum()),
        "timing": timing,  # seconds per step (returned, never written: files stay bit-identical)
        **({} if chosen is None else {"roulette": chosen.record()}),
    }


def _reco_extras(cands: dict, passing: np.ndarray, verts: vertices.Vertices) -> dict[str, np.ndarray]:
    """One copy's reconstruction extras (layouts with ``reco``, samples/layouts.py).

    From all candidates of the copy's passing events (HF cells included, written or not): rho
    (``fixedGridRhoFastjetAll``) and the HLT H_T (rho-offset-corrected jets) per passing event; adds each candidate's
    ``vertexIndex`` to ``cands`` (tracks: their vertex's index, -1 unreconstructed; cells: -1).
    """
    local = np.searchsorted(passing, cands["event"])
    order = np.argsort(local, kind="stable")
    n = len(passing)
    kin = [cands[k] for k in ("pt", "eta", "phi", "mass")]
    rho = energy_density.fixed_grid_rho(local, *kin, n)
    ht = trigger.hlt_ht(local[order], *(v[order] for v in kin), n, rho=rho)  # offset-corrected jets, as the HLT
    cands["vertexIndex"] = verts.index_of(cands["event"], cands["vertex"])
    return {"rho": rho, "ht": ht}


def _assemble(cfg, chunk, parents, pieces, w_parent, ps, n_pu, gen_met_pt, gen_met_phi,
              n_dark, n_dark_inv, n_dark_stable, verts=None, dark_quark=None, repeats=None) -> dict:
    """The written copies as NanoAOD-like columns, ordered by (parent, copy), in ``cfg.layout``.

    With decay repeats (``repeats``, :class:`svjscout.samples.repeats.Repeats`) the per-event
    arrays are per row: a row's ``parent`` is its generated event's, its ``event`` counts
    (parent, repeat, copy).
    """
    n_copies = cfg.detector_copies
    layout = LAYOUTS[cfg.layout]
    rows_parent, rows_copy = [], []
    for copy, passing, _cands, _met_pt, _met_phi, _, _extras in pieces:
        rows_parent.append(passing)
        rows_copy.append(np.full(len(passing), copy))
    if rows_parent:
        local = np.concatenate(rows_parent)
        copies = np.concatenate(rows_copy)
    else:
        local = np.zeros(0, dtype=np.int64)
        copies = np.zeros(0, dtype=np.int64)
    order = np.lexsort((copies, local))
    local, copies = local[order], copies[order]
    # candidates of each written row, in row order
    by_copy = {copy: (cands, met_pt, met_phi, ratio, extras)
               for copy, _, cands, met_pt, met_phi, ratio, extras in pieces}
    met = np.zeros(len(local))
    met_phi_out = np.zeros(len(local))
    tail_ratio = np.ones(len(local))
    rho = np.zeros(len(local))
    ht = np.zeros(len(local))
    fields = PF_WRITTEN + (("vertexIndex",) if layout.reco else ()) + (("vertex",) if cfg.write_truth else ())
    per_row = []
    for copy in np.unique(copies):
        rows = np.flatnonzero(copies == copy)
        cands, met_pt, met_phi, ratio, extras = by_copy[int(copy)]
        tail_ratio[rows] = ratio[local[rows]]
        met[rows] = met_pt[local[rows]]
        met_phi_out[rows] = met_phi[local[rows]]
        if extras is not None:  # per passing event of the copy, in the copy's passing order
            pos_in_copy = np.searchsorted(pieces_passing(pieces, int(copy)), local[rows])
            rho[rows] = extras["rho"][pos_in_copy]
            ht[rows] = extras["ht"][pos_in_copy]
        # row of each candidate (the copy's candidates are those of its passing events): the
        # position of its event among this copy's rows
        pos = np.searchsorted(local[rows], cands["event"])
        per_row.append((rows[pos], {k: cands[k] for k in fields}))
    if per_row:
        row_of = np.concatenate([r for r, _ in per_row])
        cols = {k: np.concatenate([c[k] for _, c in per_row]) for k in fields}
    else:
        row_of = np.zeros(0, dtype=np.int64)
        cols = {k: np.zeros(0) for k in fields}
    # sort candidates by (row, decreasing pT)
    corder = np.lexsort((-cols["pt"], row_of))
    row_of = row_of[corder]
    cols = {k: v[corder] for k, v in cols.items()}
    counts = np.bincount(row_of, minlength=len(local))
    for k, bits in PF_MANTISSA_BITS.items():
        cols[k] = reduce_precision(cols[k], bits)
    cols["pdgId"] = cols["pdgId"].astype(np.int32)
    cols["charge"] = cols["charge"].astype(np.int32)
    truth = cols.pop("vertex", None)
    if layout.reco:
        cols["vertexIndex"] = cols["vertexIndex"].astype(np.int32)
    cands = ak.zip({k: ak.unflatten(v, counts) for k, v in cols.items()})

    gen = parents[local]  # index of the parent (the row with decay repeats) within the chunk
    origin, rep = (gen, 0) if repeats is None else (repeats.origin[gen], repeats.rep[gen])
    parent_number = chunk * cfg.chunk_size + origin + 1
    n = len(local)
    columns = {
        "run": np.full(n, cfg.seed, dtype=np.uint32),  # run = generator seed: unique across files
        "luminosityBlock": np.full(n, chunk + 1, dtype=np.uint32),
        "event": (((parent_number - 1) * max(cfg.decay_repeats, 1) + rep) * n_copies + copies + 1).astype(np.uint64),
        "parent": parent_number.astype(np.uint64),
        "genWeight": (w_parent[gen] * tail_ratio / n_copies).astype(np.float32),
        **({} if ps is None else {"PSWeight": ak.from_regular(ps[gen].astype(np.float32), axis=1)}),
        "Pileup_nTrueInt": np.full(n, cfg.pileup, dtype=np.float32),
        "Pileup_nPU": n_pu[gen].astype(np.int32),
        layout.pf: cands,
        "ScoutingMET_pt": met.astype(np.float32),
        "ScoutingMET_phi": met_phi_out.astype(np.float32),
        **(_reco_columns(verts, local, rho, ht) if layout.reco else {}),
        "GenMET_pt": gen_met_pt[gen].astype(np.float32),
        "GenMET_phi": gen_met_phi[gen].astype(np.float32),
        "GenDark_nHadrons": n_dark[gen].astype(np.int32),
        "GenDark_nInvisible": n_dark_inv[gen].astype(np.int32),
        "GenDark_nStable": n_dark_stable[gen].astype(np.int32),
    }
    if dark_quark is not None:
        columns["GenDarkQuark"] = ak.zip({k: v[gen] for k, v in dark_quark.items()})
    if truth is not None:  # not a CMS branch: the true interaction of each candidate (0 hard scatter)
        columns["GenPFCandidate"] = ak.zip({"interaction": ak.unflatten(truth.astype(np.int32), counts)})
    return columns


def pieces_passing(pieces: list, copy: int) -> np.ndarray:
    """The passing parent positions of detector copy ``copy`` among ``pieces``."""
    return next(p[1] for p in pieces if p[0] == copy)


def _reco_columns(verts: vertices.Vertices, local: np.ndarray, rho: np.ndarray, ht: np.ndarray) -> dict:
    """Vertices (those of each row's parent), rho and the trigger bits of the written rows."""
    vcounts = verts.counts
    vfirst = np.concatenate([[0], np.cumsum(vcounts)[:-1]])
    n_take = vcounts[local]
    start = np.repeat(vfirst[local] - (np.cumsum(n_take) - n_take), n_take)
    take = start + np.arange(int(n_take.sum()))
    # floats with 10 mantissa bits, as run3scouting_cff.py's vertex table (precision=10)
    pv_cols = {k: (reduce_precision(v[take], 10) if v.dtype == np.float32 else v[take])
               for k, v in verts.columns.items()}
    pv = ak.zip({k: ak.unflatten(v, vcounts[local]) for k, v in pv_cols.items()})
    return {
        "ScoutingRho_fixedGridRhoFastjetAll": rho.astype(np.float32),
        "ScoutingPrimaryVertex": pv,
        **trigger.trigger_bits(ht),
    }


def _overlay_pileup(fs: dict, cfg: GenerationConfig, chunk: int, rng: np.random.Generator,
                    events: np.ndarray | None = None) -> tuple[dict, np.ndarray, int]:
    """Add Poisson(cfg.pileup) minimum-bias Pythia events to every event of the chunk.

    The minimum-bias events come from a per-chunk library of ``cfg.pileup_library`` events
    (the same tune and decay settings as the hard scatter, :data:`~svjscout.samples.processes.MINBIAS`)
    drawn with replacement, as CMS's pre-mixed pileup libraries are: with a mean of 35 a chunk of
    500 events needs 17,500 overlays, and generating each costs more than the hard event.
    With ``cfg.shared_pileup`` one library per file (seed), built once per process and pruned of
    the particles the detector never sees (:func:`svjscout.samples.efficiency.shared_library`).
    ``events`` (a boolean mask, the roulette's kept parents): only those events get their pileup
    (the others none); the draws are those every event gets without it (same random stream).
    Returns the merged particles (``pileup`` True for the overlaid ones), the number drawn per
    event (NanoAOD's ``Pileup_nPU``) and the number of minimum-bias events Pythia generated
    (with a shared library: its size, counted in chunk 0).
    """
    n_events = len(fs["pt"])
    n_pu = rng.poisson(cfg.pileup, n_events)
    total = int(n_pu.sum())
    if total == 0:
        return fs, n_pu, 0
    if cfg.shared_pileup:
        lib, _ = efficiency.shared_library(cfg, chunk_seed(cfg.seed + 104_729, 999_983), _minbias_library)
        n_lib = cfg.pileup_library
        n_made = n_lib if chunk == 0 else 0
    else:
        n_lib = n_made = min(total, cfg.pileup_library)
        lib = _minbias_library(chunk_seed(cfg.seed + 104_729, chunk), n_lib)
    draw = rng.integers(0, n_lib, total)
    n_overlaid = n_pu if events is None else np.where(events, n_pu, 0)
    if events is not None:
        draw = draw[np.repeat(events, n_pu)]
    per_event = ak.to_numpy(ak.sum(ak.unflatten(ak.num(lib["id"])[draw], n_overlaid), axis=1))  # pileup particles
    merged = {}
    for key, hard in fs.items():
        if key == "vertex":  # the overlaid event's number in its event, 1 ... n: its interaction (layouts.py)
            nth = np.arange(len(draw)) - np.repeat(np.cumsum(n_overlaid) - n_overlaid, n_overlaid) + 1
            pu = np.repeat(nth, ak.to_numpy(ak.num(lib["id"])[draw]))
            merged[key] = ak.concatenate([hard, ak.unflatten(pu, per_event)], axis=1)
            continue
        merged[key] = ak.concatenate([hard, ak.unflatten(ak.flatten(lib[key][draw]), per_event)], axis=1)
    return merged, n_pu, n_made


def _minbias_library(seed: int, n_lib: int) -> dict:
    """``n_lib`` minimum-bias events' final state (Pythia seeded with ``seed``), ``pileup`` True."""
    mb = _make_pythia(MINBIAS, seed)
    mb_batch = mb.nextBatch(n_lib)
    if len(mb_batch) != n_lib:
        raise GenerationError(f"pileup: Pythia returned {len(mb_batch)} of {n_lib} minimum-bias events")
    lib = _final_state(mb, mb_batch)
    lib["pileup"] = ak.ones_like(lib["id"], dtype=bool)
    return lib


def _chunks(cfg: GenerationConfig) -> list[tuple[int, int]]:
    n_full, rest = divmod(cfg.events, cfg.chunk_size)
    sizes = [cfg.chunk_size] * n_full + ([rest] if rest else [])
    return list(enumerate(sizes))


def _run_chunk(args):
    """One chunk (a picklable task for process pools and dask): ``(chunk, n_events, result)``."""
    cfg, chunk, n = args
    return chunk, n, generate_chunk(cfg, chunk, n)


#: ``map_chunks(fn, tasks)``: runs ``fn`` on every task, yields the results in any order
ChunkMapper = Callable[[Callable[[Any], Any], list], Iterable]


def local_mapper(workers: int) -> ChunkMapper:
    """The default :data:`ChunkMapper`: in this process, or ``workers`` spawned processes."""
    def run(fn, tasks):
        if workers <= 1 or len(tasks) <= 1:
            yield from map(fn, tasks)
            return
        with mp.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
            yield from pool.imap_unordered(fn, tasks)
    return run


def select_chunks(spec: str | None, n_chunks: int) -> list[int]:
    """The chunks named by ``--chunks`` (``A:B`` as a Python slice, ``A:``, ``:B`` or ``K``).

    >>> select_chunks("2:4", 10), select_chunks("8:", 10), select_chunks("3", 10), select_chunks(None, 2)
    ([2, 3], [8, 9], [3], [0, 1])
    """
    if spec is None:
        return list(range(n_chunks))
    text = spec.strip()
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            chosen = list(range(n_chunks))[slice(int(a) if a.strip() else None, int(b) if b.strip() else None)]
        else:
            k = int(text)
            if not 0 <= k < n_chunks:
                raise GenerationError(f"--chunks {spec}: chunk {k} is outside 0..{n_chunks - 1} "
                                      f"({n_chunks} chunk(s) in this file)")
            chosen = [k]
    except ValueError as err:
        raise GenerationError(f"--chunks {spec!r}: expected A:B, A:, :B or K (chunk numbers, from 0)") from err
    if not chosen:
        raise GenerationError(f"--chunks {spec}: no chunk of 0..{n_chunks - 1} selected")
    return chosen


def generate_file(cfg: GenerationConfig, out: str | Path, progress: bool = False, *, chunks: str | None = None,
                  map_chunks: ChunkMapper | None = None, keep_parts: bool = False, fresh: bool = False,
                  parts_dir: str | Path | None = None) -> dict:
    """Generate ``cfg.events`` events into the ROOT file ``out``; return the file's summary.

    Every finished chunk is stored in the parts folder (``OUT.parts``, :mod:`svjscout.samples.parts`)
    as it arrives; chunks already stored by an interrupted run with the same configuration are not
    generated again (another configuration's part is refused, naming what differs; ``fresh``
    deletes them first). ``chunks`` (``--chunks A:B``) generates only those chunks: the file is
    assembled once every chunk is stored, from the parts in chunk order, and the parts folder is
    removed unless ``keep_parts``. ``map_chunks`` runs the chunks (default: :func:`local_mapper`
    with ``cfg.workers`` processes; :mod:`svjscout.jobs.generation` gives dask's). Per-chunk seeds:
    the file does not depend on the mapper, the number of workers or the interruptions.

    Returns the file's metadata (plus ``timing`` and ``parts``), or, while chunks are missing,
    ``{"complete": False, ...}`` with the counts of stored and missing chunks.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plan = dict(_chunks(cfg))
    store = parts.PartStore(parts_dir or parts.parts_folder(out), parts.identity(cfg, _pythia_version(), __version__))
    if fresh:
        store.remove()
    stored = set(store.stored())
    for chunk in sorted(stored):
        if chunk not in plan:
            raise GenerationError(f"{store.sidecar_path(chunk)}: chunk {chunk} is not a chunk of this file "
                                  f"({len(plan)} chunk(s) of {cfg.chunk_size} events); delete {store.folder} "
                                  f"(or pass --fresh) to start again")
        store.check(chunk, plan[chunk])  # another configuration's part: refused before any work
    wanted = select_chunks(chunks, len(plan))
    tasks = [(cfg, chunk, plan[chunk]) for chunk in wanted if chunk not in stored]
    timing: dict[str, float] = {}
    mapper = map_chunks or local_mapper(cfg.workers)
    if stored and tasks:
        log.info("%s: %d chunk(s) stored, %d to generate", store.folder, len(stored), len(tasks))
    with _progress(progress, f"generate {cfg.dataset_name}", sum(n for _, _, n in tasks)) as bar:
        results = mapper(_run_chunk, tasks)
        try:
            for chunk, n, res in results:
                t0 = time.perf_counter()
                store.save(chunk, n, res)
                timing["store"] = timing.get("store", 0.0) + time.perf_counter() - t0
                for step, sec in res["timing"].items():
                    timing[step] = timing.get(step, 0.0) + sec
                stored.add(chunk)
                bar(n)
        finally:
            close = getattr(results, "close", None)
            if close is not None:  # a generator: stops its pool now, also when a chunk failed
                close()
    missing = sorted(set(plan) - stored)
    if missing:
        log.info("%s: %d of %d chunk(s) stored; run again without --chunks to finish %s", store.folder,
                 len(stored), len(plan), out)
        return {"complete": False, "dataset": cfg.dataset_name, "parts": str(store.folder),
                "n_chunks": len(plan), "n_stored": len(stored), "missing": missing, "timing": timing}
    meta = _write_file(cfg, out, store, plan, timing)
    if not keep_parts:
        store.remove()
    return {**meta, "timing": timing, "parts": None if not keep_parts else str(store.folder)}


def _write_file(cfg: GenerationConfig, out: Path, store: parts.PartStore, plan: dict[int, int],
                timing: dict[str, float]) -> dict:
    """Assemble ``out`` from the stored parts in chunk order (temporary name, then rename)."""
    totals = {"n_generated": 0, "sumw": 0.0, "sumw2": 0.0, "n_written": 0, "n_dark": 0, "n_dark_inv": 0,
              "n_dark_stable": 0, "n_pileup_events": 0, "n_parents_detected": 0}
    ps_sumw = None
    sigma, sigma_err = [], []
    tmp = out.with_name(f".{out.name}.{os.getpid()}.part")  # two array tasks may assemble at once
    # ZSTD 5: read and decompressed ~17x faster than LZMA 6 for ~14 % larger files
    # (benchmarks/bench_processor.py); CMS NanoAOD's central LZMA 9 reads as slowly as LZMA 6
    with uproot.recreate(tmp, compression=uproot.ZSTD(5)) as fout:
        tree = None
        for chunk in sorted(plan):
            res = store.load(chunk, plan[chunk])
            cols = res["columns"]
            if tree is None:
                tree = fout.mktree("Events", _branch_types(cols))
            t0 = time.perf_counter()
            tree.extend(cols)
            timing["write"] = timing.get("write", 0.0) + time.perf_counter() - t0
            for key in totals:
                totals[key] += res[key]
            if res["ps_sumw"] is not None:
                ps_sumw = res["ps_sumw"] if ps_sumw is None else ps_sumw + res["ps_sumw"]
            sigma.append(res["sigma_gen_pb"])
            sigma_err.append(res["sigma_err_pb"])
        sigma_gen = float(np.mean(sigma))
        sigma_gen_err = float(np.sqrt(np.sum(np.square(sigma_err))) / len(sigma_err))
        xsec, xsec_source = normalisation(cfg, sigma_gen)
        runs = {
            "run": np.array([cfg.seed], dtype=np.uint32),
            "genEventCount": np.array([totals["n_generated"]], dtype=np.int64),
            "genEventSumw": np.array([totals["sumw"]], dtype=np.float64),
            "genEventSumw2": np.array([totals["sumw2"]], dtype=np.float64),
            "xsec": np.array([xsec], dtype=np.float64),
            "nDetectorCopies": np.array([cfg.detector_copies], dtype=np.int32),
        }
        if cfg.decay_repeats >= 1:  # event = ((parent - 1) * nDecayRepeats + repeat) * nDetectorCopies + copy + 1
            runs["nDecayRepeats"] = np.array([cfg.decay_repeats], dtype=np.int32)
        if ps_sumw is not None:  # NanoAOD: sum of genWeight * PSWeight[i], divided by genEventSumw
            runs["PSSumw"] = ak.Array([ps_sumw / totals["sumw"]])
        fout.mktree("Runs", _branch_types(runs)).extend(runs)
        meta = {
            "svjscout_version": __version__,
            "dataset": cfg.dataset_name,
            "config": asdict(cfg),
            "settings": cfg.settings(),
            "pythia_version": _pythia_version(),
            "chunk_seeds": {"pythia": "1 + (seed * 1000003 + chunk * 7919) % 899999999",
                            "detector": "numpy default_rng([seed, chunk, 7]); copy k: [seed, chunk, k, 11]",
                            "pileup": "Pythia seed of chunk with seed + 104729",
                            **({"decays": f"Pythia seed of chunk with seed + {repeats.DECAY_SEED_OFFSET}"}
                               if cfg.decay_repeats >= 1 else {})},
            "detector_params": asdict(cfg.detector_params),
            "xsec_pb": xsec,
            "xsec_source": xsec_source,
            "pythia_sigma_gen_pb": sigma_gen,
            "pythia_sigma_err_pb": sigma_gen_err,
            **totals,
            "ps_weights": [f"{name} {var}" for name, var in PS_WEIGHTS] if ps_sumw is not None else None,
            "rinv_truth": totals["n_dark_inv"] / totals["n_dark"] if totals["n_dark"] else None,
        }
        fout["svjscout_meta"] = json.dumps(meta, sort_keys=True)
    tmp.replace(out)
    log.info("wrote %s: %d/%d events", out, totals["n_written"], totals["n_generated"])
    return meta


def normalisation(cfg: GenerationConfig, sigma_gen: float) -> tuple[float, str]:
    """(cross section in pb, its source) of a file: ``--xsec``, the signal benchmark's table,
    a higher-order cross section or Pythia's ``sigmaGen`` times a K factor (processes.py)."""
    if cfg.xsec is not None:
        return cfg.xsec, "--xsec"
    if cfg.process == "svj":
        return reference_signal_xsec(cfg.mzprime), ZPRIME_XSEC_SOURCE
    if cfg.process in XSEC_OVERRIDE:
        if cfg.pthat_min is not None or cfg.pthat_max is not None:
            return sigma_gen, "Pythia sigmaGen (LO; a pT-hat window disables the inclusive override)"
        value, source = XSEC_OVERRIDE[cfg.process]
        return value, source
    k, source = K_FACTORS.get(cfg.process, (1.0, "LO"))
    return k * sigma_gen, f"Pythia sigmaGen x K = {k:g} ({source})"


def _pythia_version() -> str:
    try:
        return version("pythia8mc")
    except Exception:  # noqa: BLE001 - metadata only
        return "unknown"


def _branch_types(cols: dict) -> dict:
    """uproot ``mktree`` types: a jagged record becomes a NanoAOD collection (``nX``, ``X_field``)."""
    return {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in cols.items()}


class _progress:
    """Context manager yielding an ``advance(n)`` callable; a rich bar on stderr if enabled."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        self._p = make_progress()
        self._p.__enter__()
        task = self._p.add_task(self.label, total=self.total)
        return lambda n: self._p.advance(task, n)

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
        return False


def read_metadata(path: str | Path) -> dict:
    """The ``svjscout_meta`` JSON of a generated file (a bad file: :class:`InputFileError` naming it)."""
    with open_root(str(path), "its svjscout_meta object") as f:
        return json.loads(str(f["svjscout_meta"]))
