"""Event generation: Pythia 8 -> fast detector response -> scouting-format ROOT file.

The data path of one file::

    Pythia 8 (settings from :mod:`svjscout.samples.processes`), chunks of ``chunk_size`` events
      -> optional generator-level H_T pre-filter (visible particles, |eta| < 3)
      -> optional pileup overlay (Pythia minimum-bias, Poisson mean ``pileup``)
      -> fast detector response (:mod:`svjscout.samples.detector`) -> PF candidates, MET
      -> optional PF-MET skim (``met_min``)
      -> ROOT file via uproot: ``Events`` (ScoutingNano names) + ``Runs`` (generated count, sums of
         weights, cross section) + ``svjscout_meta`` (JSON: process, options, settings)

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

Chunk ``k`` is always generated with the same seed, derived from ``(seed, k)``, and chunks are
written in order, so a file is identical whatever the number of worker processes.

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
import math
import multiprocessing as mp
from dataclasses import asdict, dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from svjscout import __version__
from svjscout.exceptions import GenerationError
from svjscout.samples import detector
from svjscout.samples.processes import DARK_INVISIBLES, DARK_MESONS, PROCESSES, PS_WEIGHTS, process_settings

log = logging.getLogger(__name__)

PB_PER_MB = 1e9


def reference_signal_xsec(mzprime: float) -> float:
    """Illustrative s-channel Z' -> dark quarks cross section in pb at 13 TeV.

    Pythia's Hidden Valley ``Zv`` couplings to quarks are not those of the CMS benchmark
    (leptophobic Z' with g_q = 0.25), so its ``sigmaGen`` is not used to normalise the signal.
    This smooth parametrisation, sigma = 0.1 pb x exp(-(m_Z' - 2000 GeV) / 450 GeV), has the
    size and fall-off of the benchmark's published curve to a factor ~2; it is an illustration
    for limits on the signal strength r, and is overridden with ``--xsec``.

    >>> round(reference_signal_xsec(2000.0), 3)
    0.1
    """
    return 0.1 * math.exp(-(mzprime - 2000.0) / 450.0)


@dataclass
class GenerationConfig:
    """Everything that defines a generated file (also written into its metadata)."""

    process: str
    events: int
    seed: int = 1
    mzprime: float = 2000.0
    rinv: float = 0.3
    pthat_min: float | None = None
    pthat_max: float | None = None
    ht_min: float = 0.0
    met_min: float = 0.0
    pileup: float = 0.0
    chunk_size: int = 500
    workers: int = 1
    xsec: float | None = None
    dataset: str | None = None
    extra_settings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.process not in PROCESSES:
            raise GenerationError(f"unknown process {self.process!r}; expected one of {sorted(PROCESSES)}")
        if self.events <= 0:
            raise GenerationError(f"--events must be positive, got {self.events}")
        if self.met_min > 156.0:
            raise GenerationError(
                f"met_min = {self.met_min} GeV is tighter than the preselection's implied MET > 156 GeV"
            )
        if self.ht_min > 410.0:
            raise GenerationError(f"ht_min = {self.ht_min} GeV is tighter than the H_T > 410 GeV trigger")

    @property
    def dataset_name(self) -> str:
        if self.dataset:
            return self.dataset
        if self.process == "svj":
            return f"svj_mz{self.mzprime:g}_rinv{self.rinv:g}"
        return self.process

    def settings(self) -> list[str]:
        return process_settings(
            self.process, mzprime=self.mzprime, rinv=self.rinv, pthat_min=self.pthat_min, pthat_max=self.pthat_max
        ) + list(self.extra_settings)


def chunk_seed(seed: int, chunk: int) -> int:
    """Pythia seed of chunk ``chunk`` (Pythia accepts 1 ... 900,000,000)."""
    return 1 + (seed * 1_000_003 + chunk * 7_919) % 899_999_999


def _make_pythia(settings: list[str], seed: int):
    import pythia8mc

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
    return {"pt": pt, "eta": eta, "phi": phi, "id": fs.id, "charge": charge}


def _dark_truth(batch) -> tuple[np.ndarray, np.ndarray]:
    """Per event: (number of dark mesons, number that decayed to invisible states).

    Only the last copy of each meson is counted (Pythia keeps recoil copies with the same id).
    """
    prt = batch.prt
    aid = abs(prt.id)
    d1 = prt.daughter1
    safe = ak.where(d1 > 0, d1, 0)
    daughter_id = abs(prt.id[safe])
    is_meson = np.isin(ak.to_numpy(ak.flatten(aid)), DARK_MESONS)
    is_meson = ak.unflatten(is_meson, ak.num(aid))
    last_copy = is_meson & (daughter_id != aid) & (d1 > 0)
    invisible = last_copy & ak.unflatten(
        np.isin(ak.to_numpy(ak.flatten(daughter_id)), DARK_INVISIBLES), ak.num(aid)
    )
    return ak.to_numpy(ak.sum(last_copy, axis=1)), ak.to_numpy(ak.sum(invisible, axis=1))


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


def generate_chunk(cfg: GenerationConfig, chunk: int, n_events: int) -> dict:
    """Generate chunk ``chunk`` of a file: returns the columns to write and the chunk's counts."""
    seed = chunk_seed(cfg.seed, chunk)
    pythia = _make_pythia(cfg.settings(), seed)
    rng = np.random.default_rng([cfg.seed, chunk, 7])
    batch = pythia.nextBatch(n_events)
    n_generated = len(batch)
    fs = _final_state(pythia, batch)
    n_dark, n_dark_inv = _dark_truth(batch)
    ps = _ps_weights(pythia, batch)

    n_pu = np.zeros(n_generated, dtype=np.int64)
    n_pu_events = 0
    if cfg.pileup > 0:
        fs, n_pu, n_pu_events = _overlay_pileup(fs, cfg, chunk, rng)

    visible = ~ak.unflatten(detector.is_invisible(ak.to_numpy(ak.flatten(fs["id"]))), ak.num(fs["id"]))
    central = abs(fs["eta"]) < 3.0
    ht_gen = ak.to_numpy(ak.sum(fs["pt"][visible & central], axis=1))
    inv_pt = fs["pt"][~visible]
    inv_phi = fs["phi"][~visible]
    gen_met_x = -ak.to_numpy(ak.sum(inv_pt * np.cos(inv_phi), axis=1))  # invisibles carry +pT; MET points along them
    gen_met_y = -ak.to_numpy(ak.sum(inv_pt * np.sin(inv_phi), axis=1))
    gen_met_pt = np.hypot(gen_met_x, gen_met_y)
    gen_met_phi = np.arctan2(-gen_met_y, -gen_met_x)

    counts = ak.num(fs["pt"])
    flat = {k: ak.to_numpy(ak.flatten(v)) for k, v in fs.items()}
    event_index = np.repeat(np.arange(len(counts)), ak.to_numpy(counts))
    pf = detector.respond(flat["pt"], flat["eta"], flat["phi"], flat["id"], flat["charge"], rng, event_index=event_index)
    keep = ak.unflatten(pf.pop("keep"), counts)
    cands = ak.zip({k: ak.unflatten(v, counts) for k, v in pf.items()})[keep]
    cands = cands[ak.argsort(cands.pt, axis=1, ascending=False, stable=True)]
    met_x = -ak.to_numpy(ak.sum(cands.pt * np.cos(cands.phi), axis=1))
    met_y = -ak.to_numpy(ak.sum(cands.pt * np.sin(cands.phi), axis=1))
    met_pt = np.hypot(met_x, met_y)
    met_phi = np.arctan2(met_y, met_x)

    passed = (ht_gen >= cfg.ht_min) & (met_pt >= cfg.met_min)
    index = np.flatnonzero(passed)
    event_number = chunk * cfg.chunk_size + index + 1
    columns = {
        "run": np.ones(len(index), dtype=np.uint32),
        "luminosityBlock": np.full(len(index), chunk + 1, dtype=np.uint32),
        "event": event_number.astype(np.uint64),
        "genWeight": np.ones(len(index), dtype=np.float32),
        **({} if ps is None else {"PSWeight": ak.from_regular(ps[index].astype(np.float32), axis=1)}),
        "Pileup_nTrueInt": np.full(len(index), cfg.pileup, dtype=np.float32),
        "Pileup_nPU": n_pu[index].astype(np.int32),
        "ScoutingParticle": cands[index],
        "ScoutingMET_pt": met_pt[index].astype(np.float32),
        "ScoutingMET_phi": met_phi[index].astype(np.float32),
        "GenMET_pt": gen_met_pt[index].astype(np.float32),
        "GenMET_phi": gen_met_phi[index].astype(np.float32),
        "GenDark_nMesons": n_dark[index].astype(np.int32),
        "GenDark_nInvisible": n_dark_inv[index].astype(np.int32),
    }
    info = pythia.infoPython()
    return {
        "columns": columns,
        "n_generated": n_generated,
        "sumw": float(n_generated),  # genWeight = 1
        "sumw2": float(n_generated),
        "ps_sumw": None if ps is None else ps.sum(axis=0),  # sum of genWeight * PSWeight[i], every event
        "n_pileup_events": n_pu_events,
        "n_written": len(index),
        "sigma_gen_pb": info.sigmaGen() * PB_PER_MB,
        "sigma_err_pb": info.sigmaErr() * PB_PER_MB,
        "n_dark": int(n_dark.sum()),
        "n_dark_inv": int(n_dark_inv.sum()),
    }


def _overlay_pileup(fs: dict, cfg: GenerationConfig, chunk: int, rng: np.random.Generator) -> tuple[dict, np.ndarray, int]:
    """Add Poisson(cfg.pileup) minimum-bias Pythia events to every event of the chunk.

    Returns the merged particles, the number drawn per event (NanoAOD's ``Pileup_nPU``) and the
    number of minimum-bias events Pythia generated for the chunk (their sum, checked).
    """
    n_events = len(fs["pt"])
    n_pu = rng.poisson(cfg.pileup, n_events)
    total = int(n_pu.sum())
    if total == 0:
        return fs, n_pu, 0
    mb = _make_pythia(
        ["Beams:eCM = 13000.", "SoftQCD:nonDiffractive = on", "Next:numberCount = 0", "Next:numberShowEvent = 0",
         "Next:numberShowInfo = 0", "Next:numberShowProcess = 0", "Init:showChangedParticleData = off",
         "Init:showChangedSettings = off", "Init:showProcesses = off", "Random:setSeed = on"],
        chunk_seed(cfg.seed + 104_729, chunk),
    )
    mb_batch = mb.nextBatch(total)
    if len(mb_batch) != total:
        raise GenerationError(f"pileup: Pythia returned {len(mb_batch)} of {total} minimum-bias events")
    pu = _final_state(mb, mb_batch)
    merged = {}
    for key in fs:
        per_pu = pu[key]
        grouped = ak.unflatten(ak.flatten(per_pu), ak.to_numpy(
            ak.sum(ak.unflatten(ak.num(per_pu), n_pu), axis=1)))
        merged[key] = ak.concatenate([fs[key], grouped], axis=1)
    return merged, n_pu, len(mb_batch)


def _chunks(cfg: GenerationConfig) -> list[tuple[int, int]]:
    n_full, rest = divmod(cfg.events, cfg.chunk_size)
    sizes = [cfg.chunk_size] * n_full + ([rest] if rest else [])
    return list(enumerate(sizes))


def _run_chunk(args):
    cfg, chunk, n = args
    return generate_chunk(cfg, chunk, n)


def generate_file(cfg: GenerationConfig, out: str | Path, progress: bool = False) -> dict:
    """Generate ``cfg.events`` events into the ROOT file ``out``; return the file's summary.

    Chunks run in ``cfg.workers`` processes; the file does not depend on that number.
    """
    import uproot

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tasks = [(cfg, chunk, n) for chunk, n in _chunks(cfg)]
    totals = {"n_generated": 0, "sumw": 0.0, "sumw2": 0.0, "n_written": 0, "n_dark": 0, "n_dark_inv": 0,
              "n_pileup_events": 0}
    ps_sumw = None
    sigma, sigma_err = [], []
    tmp = out.with_suffix(out.suffix + ".part")
    ctx = mp.get_context("spawn") if cfg.workers > 1 else None
    pool = ctx.Pool(cfg.workers) if ctx else None
    results = pool.imap(_run_chunk, tasks) if pool else map(_run_chunk, tasks)
    try:
        # ZSTD 5: read and decompressed ~17x faster than LZMA 6 for ~14 % larger files
        # (benchmarks/bench_processor.py); CMS NanoAOD's central LZMA 9 reads as slowly as LZMA 6
        with uproot.recreate(tmp, compression=uproot.ZSTD(5)) as fout, _progress(progress, f"generate {cfg.dataset_name}", cfg.events) as bar:
            tree = None
            for (_, _, n), res in zip(tasks, results):
                cols = res["columns"]
                if tree is None:
                    tree = fout.mktree("Events", _branch_types(cols))
                tree.extend(cols)
                for key in totals:
                    totals[key] += res[key]
                if res["ps_sumw"] is not None:
                    ps_sumw = res["ps_sumw"] if ps_sumw is None else ps_sumw + res["ps_sumw"]
                sigma.append(res["sigma_gen_pb"])
                sigma_err.append(res["sigma_err_pb"])
                bar(n)
            sigma_gen = float(np.mean(sigma))
            sigma_gen_err = float(np.sqrt(np.sum(np.square(sigma_err))) / len(sigma_err))
            xsec = cfg.xsec if cfg.xsec is not None else (
                reference_signal_xsec(cfg.mzprime) if cfg.process == "svj" else sigma_gen
            )
            runs = {
                "run": np.array([1], dtype=np.uint32),
                "genEventCount": np.array([totals["n_generated"]], dtype=np.int64),
                "genEventSumw": np.array([totals["sumw"]], dtype=np.float64),
                "genEventSumw2": np.array([totals["sumw2"]], dtype=np.float64),
                "xsec": np.array([xsec], dtype=np.float64),
            }
            if ps_sumw is not None:  # NanoAOD: sum of genWeight * PSWeight[i], divided by genEventSumw
                runs["PSSumw"] = ak.Array([ps_sumw / totals["sumw"]])
            fout.mktree("Runs", _branch_types(runs)).extend(runs)
            meta = {
                "svjscout_version": __version__,
                "dataset": cfg.dataset_name,
                "config": asdict(cfg),
                "settings": cfg.settings(),
                "xsec_pb": xsec,
                "pythia_sigma_gen_pb": sigma_gen,
                "pythia_sigma_err_pb": sigma_gen_err,
                **totals,
                "ps_weights": [f"{name} {var}" for name, var in PS_WEIGHTS] if ps_sumw is not None else None,
                "rinv_truth": totals["n_dark_inv"] / totals["n_dark"] if totals["n_dark"] else None,
            }
            fout["svjscout_meta"] = json.dumps(meta, sort_keys=True)
    finally:
        if pool:
            pool.close()
            pool.join()
    tmp.replace(out)
    log.info("wrote %s: %d/%d events", out, totals["n_written"], totals["n_generated"])
    return meta


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
        from svjscout.jobs.progress import make_progress

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
    from svjscout.processors.files import open_root

    with open_root(str(path), "its svjscout_meta object") as f:
        return json.loads(str(f["svjscout_meta"]))
