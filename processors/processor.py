"""The svjscout coffea processor: scouting events -> ABCD histograms (or a training skim).

The data path of :meth:`SVJProcessor.process`, top to bottom:

1. PF candidates and MET through the schema mapping; non-finite candidates dropped (counted);
2. the prefilter (processors/prefilter.py): events whose MET or scalar PF pT sum proves they
   fail the preselection are not clustered (``analysis.prefilter``; the cutflow's first row);
   for the rest, AK4 jets -> H_T (trigger emulation); AK8 jets with constituents (fastjet);
3. event features, M_T, R_T, deta of J0, J1 and MET; the preselection and its cutflow;
4. for preselected events: C-A primary Lund planes of J0 and J1, padded to ``lund_max_len``;
5. LundNet on J0 and J1, then the twin MLPs X and Y (onnxruntime);
6. histograms (or, in skim mode, one parquet file per chunk).

Each step is a short method of :class:`SVJProcessor` (``_read``, ``_prefilter``, ``_cluster``,
``_select``, ``_lund``, ``_infer``, ``_fill``); they pass one :class:`Chunk` along. The
systematic variations are the registry of :mod:`svjscout.processors.variations`; the skim is
:mod:`svjscout.processors.skim`.

Memory (docs/performance.md): a chunk is read and processed in batches of
``analysis.batch_events`` events, FastJet runs on parts of :data:`CLUSTER_EVENTS` events, and a
chunk's histograms have its own dataset only on their dataset axis (``normalize`` puts the sum on
every dataset's); the output is bit-identical to one batch with every dataset booked.

Weights: histograms are filled with ``genWeight`` (1 for data); :meth:`SVJProcessor.postprocess`
scales every dataset by ``xsec * lumi / sumw`` (:func:`svjscout.processors.normalize.normalize`,
a pure, idempotent function, which also makes the variances of detector copies parent-grouped
from ``output["parent_fills"]``), with ``sumw`` the dataset's sum of generator weights over all
its files (from the ``Runs`` trees), not per chunk. So coffea's ``processor.Runner`` (which calls
``postprocess``) returns normalised histograms.

coffea's dask-awkward mode (``coffea.dataset_tools.apply_to_fileset``): given dask-awkward events,
:meth:`SVJProcessor.process` maps the same eager pipeline over the partitions with
``dask.delayed`` and returns a delayed output of the dataset, reduced and normalised (compute it
with ``dask.compute`` and add the datasets with ``coffea.processor.accumulate``).

Subsets of the event split (``analysis.event_subset``, :class:`EventSubset`): first in each
chunk, from the event-id branches only, every event gets its subset from :func:`svjscout.core.splits.split_of`
(:func:`~svjscout.core.splits.split4_of` for the 4-way split) with
the key the skim writes, ``(dataset, run, luminosityBlock, parent)`` (``parent`` the skim's
column, ``(run << 40) | parent``, or ``| event`` without a ``parent`` branch), and only the chosen
subsets' events go on (the others are counted as ``not_in_subset``, never clustered; the
cutflow's ``all`` row counts the events kept). So the events kept with ``subset: test`` are
exactly the skim's events that the trainers put in their test subset. MC yields are scaled by
``1 / fraction`` of the subset by :func:`~svjscout.processors.normalize.normalize` (with
``xsec * lumi / sumw``; the skim's ``weight`` column too): the histograms and the weighted
cutflow estimate the full sample's yields, and their variances (``x 1 / fraction^2``) the larger
statistical error of the subset. With several subsets (``[select, final]``) the parent records
(``parent_fills``) carry each fill's subset code (``subset``), so that the working point can be
chosen on one subset and quoted on the other (``scan.split_on: subsets``, :mod:`svjscout.datacards.split`).
Data are refused (no model is trained on data; the split of data events means nothing).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import awkward as ak
import dask
import dask_awkward as dak
import numpy as np
import uproot
from coffea import processor
from coffea.analysis_tools import PackedSelection
from coffea.nanoevents import NanoEventsFactory

from svjscout.core.exceptions import ConfigError, MissingBranchError
from svjscout.core.features import EVENT_FEATURES, LUND_FEATURES
from svjscout.processors import corrections as C
from svjscout.processors import dataquality as DQ
from svjscout.processors import histograms as H
from svjscout.processors import jec as J
from svjscout.processors import variations as V
from svjscout.processors.features import event_features
from svjscout.processors.inference import LundNetScorer, TwinScorer, analysis_planes
from svjscout.processors.jets import cluster, ht
from svjscout.processors.lund import pad_lund, primary_lund_declusterings
from svjscout.processors.normalize import flat_bins, normalize, parent_fills
from svjscout.processors.prefilter import clean_candidates, prefilter, scalar_pt_sum
from svjscout.processors.schema import KINEMATIC_FIELDS
from svjscout.processors.selection import CUT_ORDER, cutflow, plane_of, preselection
from svjscout.processors.settings import AnalysisSettings, DatasetInfo, EventSubset, ProcessorConfig, check_event_subset
from svjscout.processors.skim import write_skim
from svjscout.processors.variations import CLUSTER_MARGIN

__all__ = ["SVJProcessor", "ProcessorConfig", "AnalysisSettings", "DatasetInfo", "EventSubset", "check_event_subset",
           "cutflow_table", "Chunk"]

log = logging.getLogger(__name__)

#: Partitions of a dataset added per task when the dask-awkward mode reduces them.
TREE_REDUCTION = 8

#: Events clustered per FastJet call: one call keeps the C++ cluster sequences of all its events
#: until it returns (~300 kB per event of ~700 PF candidates), so a batch is clustered in parts of
#: this many events (the jets are per event: the same whatever the parts; docs/performance.md).
CLUSTER_EVENTS = 500


class _Stopwatch:
    """Seconds per stage of one chunk (``output["timing"]``, summed over chunks by coffea)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._t
        self._t = now


def _empty_counts() -> dict[str, int]:
    # fewer_than_two_jets counts among the events clustered: those passing the prefilter (all
    # events with analysis.prefilter false); not_clustered = the events the prefilter skipped;
    # not_in_subset = the events outside analysis.event_subset (events = cutflow "all" + not_in_subset)
    return {"events": 0, "not_in_subset": 0, "nonfinite_candidates": 0, "nonfinite_events": 0,
            "fewer_than_two_jets": 0, "not_clustered": 0, "chunks": 0, "chunks_without_selected": 0}


def _empty_quality() -> dict[str, int]:
    # output["data_quality"][dataset] (processors/dataquality.py; summed over chunks like counts):
    # hlt_from_bits / hlt_emulated = events whose trigger decision was read from the file / is the
    # emulation alone (the trigger row); no_vertices = MC events without vertices (good_vertex not
    # applied); chs_removed = PF candidates of pileup vertices dropped; chs_not_applied = events of
    # files without the vertex index; hem_weighted = MC events weighted by the HEM fraction
    return {"hlt_from_bits": 0, "hlt_emulated": 0, "no_vertices": 0, "chs_removed": 0, "chs_not_applied": 0,
            "hem_weighted": 0}


@dataclass
class Chunk:
    """What the stages of one chunk pass along (per event over the chunk's events unless noted).

    The fields after ``watch`` are the stages' results: each is set by the stage named above it
    (``_read``, ``_prefilter``, ...) and read only by later ones, so none has a placeholder value.
    """

    events: ak.Array
    metadata: dict
    dataset: str
    info: DatasetInfo
    counts: dict = field(default_factory=_empty_counts)
    quality_counts: dict = field(default_factory=_empty_quality)
    watch: _Stopwatch = field(default_factory=_Stopwatch)
    # read
    pf: ak.Array = field(init=False)
    met_pt: np.ndarray = field(init=False)
    met_phi: np.ndarray = field(init=False)
    gen_w: np.ndarray = field(init=False)
    clean: np.ndarray = field(init=False)
    era: str | None = None
    quality: dict = field(init=False)  # data-quality rows known before clustering (lumi_mask, hlt, good_vertex)
    dq_pass: np.ndarray = field(init=False)  # every data-quality row passed (set by _select)
    # prefilter: the events clustered (sub), their PF candidates; vary: systematic variations on
    pre: np.ndarray = field(init=False)
    vary: bool = False
    jec: bool = False  # the jets are corrected (analysis.corrections: an era whose JEC is not the identity)
    sub: np.ndarray = field(init=False)
    pf_kept: ak.Array = field(init=False)
    # cluster (over the clustered events)
    ak4: ak.Array = field(init=False)
    ak8: ak.Array = field(init=False)
    ak8_all: ak.Array = field(init=False)
    n_ak8: np.ndarray = field(init=False)
    ht_all: np.ndarray = field(init=False)
    # features and selection
    feats: dict = field(init=False)
    passes: dict = field(init=False)  # per cut of CUT_ORDER: which events pass it
    idx: np.ndarray = field(init=False)  # the selected events
    # lund, inference (over the selected events)
    lund: list = field(init=False)
    mask: list = field(init=False)
    jet_axes: dict = field(init=False)  # skim mode: eta, phi of J0 and J1 of the selected events
    w: np.ndarray = field(init=False)
    x: np.ndarray = field(init=False)
    y: np.ndarray = field(init=False)
    # fill: the Lund-plane nodes of J0 and J1 (ln 1/Delta, ln kt, weight), the parent records (MC with parents)
    lund_nodes: list = field(init=False)
    parent_rec: tuple | None = None
    subset_code: np.ndarray | None = None  # per event, with several subsets of analysis.event_subset

    @property
    def n(self) -> int:
        return len(self.events)

    #: what :meth:`SVJProcessor._output` needs of a batch once its stages have run
    KEEP = ("dataset", "passes", "gen_w", "lund_nodes", "parent_rec", "counts", "quality_counts", "watch", "metadata",
            "info")

    def release(self) -> None:
        """Drop the batch's events, candidates, jets and Lund planes (all but :attr:`KEEP`)."""
        for name in list(vars(self)):
            if name not in self.KEEP:
                delattr(self, name)


class SVJProcessor(processor.ProcessorABC):
    """coffea processor of the SVJ scouting search (stateless, picklable).

    Built from the settings (:class:`ProcessorConfig`, with each dataset's kind, cross section and
    sum of weights); from a job file use :func:`svjscout.processor_from_job`.

    Output of :meth:`process` (one chunk; its histograms' dataset axis holds the chunk's dataset
    only, until :meth:`postprocess`): ``{"hists": {name: hist.Hist}, "cutflow": {dataset:
    {"raw": array, "weighted": array}}, "counts": {dataset: {...}}, "timing": {stage: s}}``; the
    cutflow arrays follow ``["all", *CUT_ORDER]``. MC chunks whose events have a ``parent`` branch
    add ``"parent_fills": {dataset: {"key", "bin", "weight"[, "subset"]}}`` (column accumulators, concatenated
    across chunks). :meth:`postprocess` normalises the summed output
    (:func:`~svjscout.processors.normalize.normalize`).
    """

    def __init__(self, config: ProcessorConfig):
        self.config = config
        if config.skim_dir is None and (config.lundnet_model is None or config.twin_model is None):
            raise ConfigError("analysis.lundnet_model and analysis.twin_model are required to fill histograms")
        check_event_subset(config.event_subset, {name: info.kind for name, info in config.datasets.items()})

    # -- coffea's interface -------------------------------------------------------------------
    def process(self, events):
        """One chunk's output; with dask-awkward events, a delayed output of the whole dataset."""
        if isinstance(events, dak.Array):
            return self._process_dask(events)
        return self._process(events, events.metadata)

    def postprocess(self, accumulator):
        """The summed output normalised (a new output; one already normalised comes back as it is)."""
        return normalize(accumulator, self.config)

    # -- the data path ----------------------------------------------------------------------
    def _process(self, events, metadata) -> dict:
        """One chunk, in batches of ``analysis.batch_events`` events (:meth:`_batches`).

        Reading, clustering, Lund planes and inference run batch by batch, so a worker's memory is
        bounded by the batch, not the chunk (issue 33); the chunk's histograms are booked once and
        filled batch after batch in event order, and its cutflow and parent records are computed on
        the batches' per-event results put back together: the output is bit-identical to one batch
        (tests/test_chunk_outputs.py). A skim writes one file per chunk: it is never batched.
        """
        size = self.config.batch_events
        if not size or len(events) <= size or self.config.skim_dir is not None:
            return self._process_batches([events], metadata)
        return self._process_batches(self._batches(events, metadata, size), metadata)

    def _batches(self, events, metadata, size: int):
        """The chunk's events in batches of ``size``, each read from the file on its own (the
        chunk's entry range, as coffea's Runner describes it in ``metadata``), so that only one
        batch's branches are in memory; events without that description are sliced instead."""
        n = len(events)
        path, tree = metadata.get("filename"), metadata.get("treename")
        start, stop = metadata.get("entrystart"), metadata.get("entrystop")
        if not (path and tree and start is not None and stop is not None and stop - start == n
                and ("://" in str(path) or os.path.exists(str(path)))):
            for a in range(0, n, size):
                yield events[a:a + size]
            return
        with uproot.open({path: None}, array_cache=None) as f:  # a batch's arrays go with the batch
            for a in range(start, stop, size):
                b = min(a + size, stop)
                yield NanoEventsFactory.from_root(f, treepath=tree, schemaclass=self.config.branch_map.schema_class(),
                                                  mode="virtual",
                                                  entry_start=a, entry_stop=b,
                                                  metadata={**metadata, "entrystart": a, "entrystop": b}).events()

    def _process_batches(self, batches, metadata) -> dict:
        """Run the stages on each batch; one output for them all (as if they were one batch)."""
        cfg = self.config
        skim = cfg.skim_dir is not None
        hists = syst = None
        done: list[Chunk] = []
        counts: dict[str, int] = _empty_counts()
        timing: dict[str, float] = {}
        for events in batches:
            c = self._read(events, metadata)
            self._prefilter(c)
            self._cluster(c)
            self._select(c)
            self._lund(c)
            if skim:
                write_skim(cfg, c.events, c.dataset, c.info, c.feats, c.lund, c.mask, c.w, c.idx,
                           jet_axes=c.jet_axes)
                c.watch.lap("skim")
            else:
                self._infer(c)
                if hists is None:  # this chunk's dataset only (a growing axis); normalize() adds the others
                    hists = H.book(cfg.mt_edges, [c.dataset], cfg.score_bins, growth=True)
                    if c.vary:
                        syst = H.book_syst(cfg.mt_edges, [c.dataset], V.variation_names(cfg.systematics),
                                           cfg.score_bins, growth=True)
                self._fill(c, hists, syst)
            for k, v in c.counts.items():
                counts[k] = counts.get(k, 0) + v
            for k, v in c.watch.seconds.items():
                timing[k] = timing.get(k, 0.0) + v
            c.release()
            done.append(c)
        return self._output(done, hists, syst, counts, timing)

    def _output(self, done: list[Chunk], hists, syst, counts: dict, timing: dict) -> dict:
        """The chunk's output from its batches: the cutflow of all their events, the lund_plane
        fills (J0 of every event, then J1) and the parent records, in event order."""
        c0 = done[0]
        sel = PackedSelection()
        for name in CUT_ORDER:
            sel.add(name, np.concatenate([c.passes[name] for c in done]))
        flow = cutflow(sel, np.concatenate([c.gen_w for c in done]))
        counts["chunks"] = 1
        counts["chunks_without_selected"] = int(flow["raw"][-1] == 0)
        quality = _empty_quality()
        for c in done:
            for k, v in c.quality_counts.items():
                quality[k] += v
        out: dict = {"cutflow": {c0.dataset: {"raw": np.array(flow["raw"]), "weighted": np.array(flow["weighted"])}},
                     "counts": {c0.dataset: counts}, "data_quality": {c0.dataset: quality}, "timing": timing}
        if hists is None:  # a skim
            return out
        watch = _Stopwatch()
        for j in (0, 1):
            nodes = [c.lund_nodes[j] for c in done]
            hists["lund_plane"].fill(dataset=c0.dataset, ln_inv_delta=np.concatenate([n[0] for n in nodes]),
                                     ln_kt=np.concatenate([n[1] for n in nodes]),
                                     weight=np.concatenate([n[2] for n in nodes]))
        if syst is not None:
            hists["xy_mt_syst"] = syst
        out["hists"] = hists
        recs = [c.parent_rec for c in done if c.parent_rec is not None]
        if recs:  # MC with parent ids: every batch has its records
            cols = [np.concatenate([r[i] for r in recs]) for i in range(3)]
            subset = np.concatenate([r[3] for r in recs]) if recs[0][3] is not None else None
            out["parent_fills"] = {c0.dataset: parent_fills(cols[0], cols[1], cols[2], subset=subset)}
        watch.lap("fill")
        timing["fill"] = timing.get("fill", 0.0) + watch.seconds["fill"]
        return out

    def _read(self, events, metadata) -> Chunk:
        """The chunk's subset (``analysis.event_subset``), PF candidates, MET and weights; non-finite ones counted."""
        cfg = self.config
        dataset = metadata["dataset"]
        if dataset not in cfg.datasets:
            raise ConfigError(f"dataset {dataset!r} is not in the job's datasets {sorted(cfg.datasets)}")
        info = cfg.datasets[dataset]
        bmap = cfg.branch_map
        c = Chunk(events=events, metadata=metadata, dataset=dataset, info=info)
        c.counts["events"], c.counts["chunks"] = len(events), 1
        if cfg.event_subset is not None:  # before anything is computed: dropped events cost nothing
            check_event_subset(cfg.event_subset, {dataset: info.kind})
            code = self._subset_codes(events, dataset, cfg.event_subset)
            in_subset = np.isin(code, cfg.event_subset.codes)
            c.counts["not_in_subset"] = int(np.count_nonzero(~in_subset))
            if c.counts["not_in_subset"]:
                c.events = events = events[in_subset]
            if len(cfg.event_subset.names) > 1:
                c.subset_code = np.asarray(code[in_subset], dtype=np.int8)
        dq = cfg.data_quality
        c.era = dq.era_of(dataset)
        vertex = bmap.pf_vertex_index(events) if dq.chs.enabled else None  # CHS where the file has the index
        if dq.chs.enabled and vertex is None:
            c.quality_counts["chs_not_applied"] = len(events)
        if vertex is None and not dq.jet_id.enabled:
            pf = bmap.pf_kinematics(events)  # pt, eta, phi, mass: pdgId and charge are never read
            pf, c.counts["nonfinite_candidates"] = clean_candidates(pf)  # finite, pt > 0 (on the flat buffers)
        else:  # the jet ID reads pdgId (issue 33: only then); CHS drops candidates of pileup vertices
            fields = KINEMATIC_FIELDS + (("pdgId",) if dq.jet_id.enabled else ())
            pf, c.counts["nonfinite_candidates"], c.quality_counts["chs_removed"] = DQ.select_candidates(
                bmap.pf_candidates(events, fields), vertex)
        met_pt, met_phi = bmap.met(events)
        gen_w = bmap.gen_weight_of(events, info.is_mc)
        c.clean = np.isfinite(met_pt) & np.isfinite(met_phi) & np.isfinite(gen_w)
        c.counts["nonfinite_events"] = int(np.count_nonzero(~c.clean))
        c.met_pt, c.met_phi, c.gen_w = (np.where(c.clean, a, 0.0) for a in (met_pt, met_phi, gen_w))
        c.pf = ak.materialize(pf) if hasattr(ak, "materialize") else pf
        c.quality = self._event_quality(c)
        c.watch.lap("read")
        return c

    def _event_quality(self, c: Chunk) -> dict[str, np.ndarray]:
        """The data-quality rows read from the event (``lumi_mask``, ``hlt``, ``good_vertex``); a row a
        stage does not apply to the chunk is left out (every event passes it). Data without the
        trigger bits or the vertices are refused (names the file and the branches)."""
        cfg, events, info = self.config, c.events, c.info
        dq, bmap = cfg.data_quality, cfg.branch_map
        fn = str(c.metadata.get("filename", "the input file"))
        rows: dict[str, np.ndarray] = {}
        mask = dq.lumi_masks.get(c.dataset) if not info.is_mc else None
        if mask:
            ids = bmap.event_ids(events)
            rows["lumi_mask"] = DQ.lumi_mask(mask, ids[:, 0], ids[:, 1])
        paths = dq.trigger.paths_of(c.era)
        bits, missing = None, paths
        if not (info.is_mc and dq.trigger.mc == "emulation"):
            bits, _, missing = DQ.trigger_bits(events, paths, bmap.trigger_branches)
        if bits is not None:
            rows["hlt"] = bits
            c.quality_counts["hlt_from_bits"] = c.n
        elif not info.is_mc:
            raise DQ.missing_bits_error(fn, c.dataset, c.era, missing)
        elif dq.trigger.mc == "bits":
            raise MissingBranchError(f"{fn}: dataset {c.dataset!r} has none of the trigger branches {missing} "
                                     "(analysis.data_quality.trigger.mc: bits; 'auto' falls back to the emulation)")
        else:
            c.quality_counts["hlt_emulated"] = c.n
        if dq.vertex.enabled:
            good = DQ.good_vertex(events, bmap.pv_collection, bmap.pv_fields, dq.vertex)
            if good is not None:
                rows["good_vertex"] = good
            elif not info.is_mc:
                raise MissingBranchError(f"{fn}: dataset {c.dataset!r} is data but has no primary vertices "
                                         f"({bmap.pv_collection}_x, _y, _z, _ndof; schema.pv_collection): the "
                                         "good-vertex requirement cannot be applied (analysis.data_quality.vertex)")
            else:
                c.quality_counts["no_vertices"] = c.n
        return rows

    def _prefilter(self, c: Chunk) -> None:
        """Which events are clustered: those the prefilter cannot reject (all with variations)."""
        cfg = self.config
        # jets corrected (analysis.corrections; an identity JEC, our simulation's, is skipped: the
        # jets, MET and cuts are then exactly the uncorrected ones)
        c.jec = J.jec_active(C.load_era(cfg.corrections.for_era(c.era)), cfg.corrections, not c.info.is_mc)
        bound = cfg.corrections.max_jec_factor
        # events the prefilter rejects cannot pass the preselection (processors/prefilter.py): with
        # analysis.prefilter they are not clustered; the cutflow's prefilter row is the same either way
        if not c.jec:
            c.pre = prefilter(c.met_pt, scalar_pt_sum(c.pf), cfg.cuts)
        elif bound is None:  # corrected jets without a bound on the factor: nothing is proven to fail
            c.pre = np.ones(c.n, bool)
        else:  # H_T and the AK8 pT bounded by max_jec_factor x S; the MET bound only on the raw MET
            c.pre = prefilter(c.met_pt, scalar_pt_sum(c.pf), cfg.cuts, max_factor=bound,
                              met_bound=not cfg.corrections.type1_met)
        # systematic variations (MC signal): every event clustered (the prefilter's bounds hold for
        # the nominal cuts only) and jets kept down to CLUSTER_MARGIN x the thresholds
        c.vary = cfg.systematics.enabled and c.info.kind == "signal" and cfg.skim_dir is None
        keep = c.pre if (cfg.prefilter and not c.vary) else np.ones(c.n, bool)
        c.counts["not_clustered"] = int(np.count_nonzero(~keep))
        c.sub = np.flatnonzero(keep)
        c.pf_kept = c.pf if len(c.sub) == c.n else c.pf[c.sub]
        c.watch.lap("prefilter")

    def _cluster(self, c: Chunk) -> None:
        """AK4 jets (H_T) and AK8 jets with constituents of the clustered events, corrected (JEC,
        type-1 MET) where the era's JEC is not the identity; scattered back."""
        cfg = self.config
        cuts = cfg.cuts
        # corrected jets may cross the thresholds: clustered down to CLUSTER_MARGIN x them (and the
        # AK4 jets down to the type-1 threshold), cut after the correction
        margin = CLUSTER_MARGIN if (c.vary or c.jec) else 1.0
        t1 = c.jec and cfg.corrections.type1_met
        ak4_min = min(cuts.ak4_pt_min, J.T1_PT_MIN) if t1 else cuts.ak4_pt_min
        c.ak4 = _cluster_in_parts(c.pf_kept, 0.4, ptmin=ak4_min * margin)
        c.watch.lap("ak4")
        ak8 = _cluster_in_parts(c.pf_kept, 0.8, ptmin=cuts.ak8_pt_min * margin, constituents=True)
        if c.jec and len(c.sub):
            c.ak4, ak8 = self._corrected(c, c.ak4, ak8, t1)
            c.watch.lap("jec")
        c.ak8_all = ak8 = ak8[abs(ak8.eta) <= cuts.ak8_abs_eta_max]
        if c.vary or c.jec:  # the nominal: exactly the jets above the threshold
            ak8 = ak8[ak8.pt >= cuts.ak8_pt_min]
        c.ak8 = ak8
        c.watch.lap("ak8")
        # per-event quantities of the clustered events, scattered back to all events (zeros for
        # those not clustered: they fail the prefilter row, so no later row depends on them)
        c.n_ak8, c.ht_all = np.zeros(c.n, int), np.zeros(c.n)
        if len(c.sub):
            c.n_ak8[c.sub] = ak.to_numpy(ak.num(ak8.pt))
            c.ht_all[c.sub] = ht(c.ak4, cuts.ak4_pt_min, cuts.ak4_abs_eta_max)
        c.counts["fewer_than_two_jets"] = int(np.count_nonzero(c.n_ak8[c.sub] < 2))  # of the events clustered

    def _corrected(self, c: Chunk, ak4: ak.Array, ak8: ak.Array, t1: bool) -> tuple[ak.Array, ak.Array]:
        """(AK4, AK8) jets of the clustered events with the era's compound JEC (L1L2L3; data: of the
        event's run period, with the residual), re-sorted; MET type-1 from the AK4 jets (part of
        :meth:`_cluster`; processors/jec.py)."""
        cfg = self.config
        era = C.load_era(cfg.corrections.for_era(c.era))
        is_data = not c.info.is_mc
        rho = J.event_rho(c.events)
        if rho is None:
            if era.needs_rho("ak4", is_data) or era.needs_rho("ak8", is_data):
                raise MissingBranchError(
                    f"{c.metadata.get('filename', 'the input file')}: dataset {c.dataset!r}: the JEC of era "
                    f"{era.spec.name} has an L1FastJet level (input Rho) but the file has none of the rho branches "
                    f"{list(J.RHO_BRANCHES)} (analysis.corrections; docs/corrections.md)")
            rho = np.zeros(c.n)
        rho, run = rho[c.sub], (cfg.branch_map.event_ids(c.events)[c.sub, 0] if is_data else None)
        out, factors = [], []
        for jets, name, radius in ((ak4, "ak4", 0.4), (ak8, "ak8", 0.8)):
            f, f_l1 = J.jec_factors(era, name, is_data, jets.pt, jets.eta, J.jet_area(radius, ak.flatten(jets.pt)),
                                    rho, run)
            if name == "ak4" and t1:  # MET_T1 = MET_raw - sum (pT_corr - pT_L1), AK4 jets with pT_corr > 15 GeV
                mpt, mphi = J.type1_met(c.met_pt[c.sub], c.met_phi[c.sub], jets.pt, jets.phi, f, f_l1)
                ok = c.clean[c.sub]
                c.met_pt[c.sub[ok]], c.met_phi[c.sub[ok]] = mpt[ok], mphi[ok]
            factors.append(ak.to_numpy(ak.flatten(f)))
            out.append(J.corrected_jets(jets, f))
        flat = np.concatenate(factors)
        bound = cfg.corrections.max_jec_factor
        if bound is not None and len(flat) and flat.max() > bound:
            raise ConfigError(f"analysis.corrections.max_jec_factor = {bound}: a jet of dataset {c.dataset!r} has "
                              f"a JEC factor {flat.max():.4g} (era {era.spec.name}); the prefilter's bound would not "
                              "hold: raise it or set it to null (the prefilter is then off with this JEC)")
        # a raw jet below CLUSTER_MARGIN x a threshold reaches it only with a factor above 1 / CLUSTER_MARGIN
        c.counts["jec_above_margin"] = int(np.count_nonzero(flat > 1.0 / CLUSTER_MARGIN))
        return out[0], out[1]

    def _select(self, c: Chunk) -> None:
        """Event features of J0, J1 and MET, the preselection and its cutflow; the selected events."""
        if len(c.sub):
            j0, j1 = (_scatter(j, c.sub, c.n) for j in _leading_two(c.ak8))
        else:  # nothing clustered (clustering an empty chunk gives jets of unknown type)
            j0 = j1 = {k: np.zeros(c.n) for k in ("pt", "eta", "phi", "mass")}
        c.feats = event_features(j0, j1, c.met_pt, c.met_phi)
        quality = {**c.quality, **self._jet_quality(c)}
        c.dq_pass = np.logical_and.reduce([np.asarray(v, bool) for v in quality.values()] + [np.ones(c.n, bool)])
        sel = preselection(c.clean, c.ht_all, c.n_ak8, c.feats, self.config.cuts, prefilter=c.pre, quality=quality)
        c.passes = {name: sel.all(name) for name in CUT_ORDER}  # the chunk's cutflow: _output
        passing = sel.all(*CUT_ORDER[1:])  # the cuts themselves; the prefilter only follows from them
        lost = passing & ~c.pre
        if lost.any():  # only possible without analysis.prefilter, which is how this is checked
            raise RuntimeError(f"prefilter bug: {int(lost.sum())} events of {c.dataset} pass every cut but fail "
                               "the prefilter (processors/prefilter.py); report this with the input file")
        c.idx = np.flatnonzero(passing)
        c.watch.lap("features+selection")

    def _jet_quality(self, c: Chunk) -> dict[str, np.ndarray]:
        """The data-quality rows on the jets (``jet_id``, ``hem_veto``, ``phi_spike``) over all events
        (events not clustered pass: they fail the prefilter row); multiplies ``c.gen_w`` by the MC
        HEM weight and the trigger scale factor where they apply."""
        cfg, dq = self.config, self.config.data_quality
        rows: dict[str, np.ndarray] = {}
        clustered = len(c.sub) > 0

        def scatter(sub_values: np.ndarray, fill: bool) -> np.ndarray:
            full = np.full(c.n, fill, bool)
            if clustered:
                full[c.sub] = sub_values
            return full

        if dq.jet_id.enabled:
            ok = ak.to_numpy(ak.all(DQ.jet_id(c.ak8, dq.jet_id), axis=1)) if clustered else np.ones(0, bool)
            rows["jet_id"] = scatter(ok, True)
        if dq.hem.enabled and c.era in dq.hem.eras and not (c.info.is_mc and dq.hem.mc == "off"):
            hit = (DQ.hem_jets(c.ak4, dq.hem) | DQ.hem_jets(c.ak8_all, dq.hem)) if clustered else np.ones(0, bool)
            affected = scatter(hit, False)
            if not c.info.is_mc:
                run = cfg.branch_map.event_ids(c.events)[:, 0]
                rows["hem_veto"] = ~(affected & (run >= dq.hem.run_min))
            elif dq.hem.mc == "drop":
                rows["hem_veto"] = ~affected
            else:
                c.gen_w = np.where(affected, c.gen_w * (1.0 - dq.hem.mc_affected_fraction), c.gen_w)
                c.quality_counts["hem_weighted"] = int(np.count_nonzero(affected))
        if dq.phi_spike.map and c.era is not None:
            cells = DQ.load_phi_spike_map(dq.phi_spike.map).get(c.era)
            if cells is not None:
                veto = np.zeros(len(c.sub), bool)
                if clustered:
                    lead = ak.pad_none(c.ak8[["eta", "phi"]], dq.phi_spike.n_jets, axis=1, clip=True)
                    for i in range(dq.phi_spike.n_jets):
                        j = lead[:, i]
                        has = ~ak.to_numpy(ak.is_none(j.eta))
                        eta = ak.to_numpy(ak.fill_none(j.eta, 0.0)).astype(np.float64)
                        phi = ak.to_numpy(ak.fill_none(j.phi, 0.0)).astype(np.float64)
                        veto |= has & DQ.phi_spike_veto(eta, phi, *cells)
                rows["phi_spike"] = scatter(~veto, True)
        if c.info.is_mc and dq.trigger.scale_factor and clustered:
            sf = np.ones(c.n)
            cset = C.load_corrections(cfg.systematics.payload, era=C.load_era(cfg.corrections.for_era(c.era)))
            sf[c.sub] = np.asarray(C.trigger_sf(cset, c.ht_all[c.sub]), float)
            c.gen_w = c.gen_w * sf
        return rows

    def _lund(self, c: Chunk) -> None:
        """C-A primary Lund planes of J0 and J1 of the selected events, padded to ``lund_max_len``."""
        jets = c.ak8[np.searchsorted(c.sub, c.idx)]  # idx are among sub (they pass the prefilter)
        L = self.config.lund_max_len
        if self.config.skim_dir is not None:  # the jet axes, for the skim's dark-quark match
            c.jet_axes = {f"{k}_j{i}": (ak.to_numpy(jets[k][:, i]).astype(np.float64) if len(jets)
                                        else np.zeros(0)) for i in (0, 1) for k in ("eta", "phi")}
        c.lund, c.mask = [], []
        for i in (0, 1):
            if len(jets) == 0:
                c.lund.append(np.zeros((0, L, 5), np.float32))
                c.mask.append(np.zeros((0, L), bool))
                continue
            nodes = primary_lund_declusterings(jets.constituents[:, i])
            arr, m = pad_lund(nodes, L)
            c.lund.append(np.asarray(arr, dtype=np.float32))
            c.mask.append(np.asarray(m, dtype=bool))
        c.watch.lap("lund")
        c.feats = {k: v[c.idx] for k, v in c.feats.items()}
        c.w = c.gen_w[c.idx]

    def _scorers(self) -> tuple[LundNetScorer, TwinScorer]:
        cfg = self.config
        if cfg.lundnet_model is None or cfg.twin_model is None:  # refused in __init__ unless skim_dir (no scoring)
            raise ConfigError("analysis.lundnet_model and analysis.twin_model are required to fill histograms")
        lundnet = LundNetScorer(cfg.lundnet_model, tuple(LUND_FEATURES), max_len=cfg.lund_max_len)
        twin = TwinScorer(cfg.twin_model, EVENT_FEATURES, planes=analysis_planes(cfg.cuts), lundnet=cfg.lundnet_model)
        return lundnet, twin

    def _infer(self, c: Chunk) -> None:
        """LundNet on J0 and J1, then the twin MLPs X and Y (onnxruntime)."""
        lundnet, twin = self._scorers()
        c.feats["lundnet_j0"] = lundnet(c.lund[0], c.mask[0])
        c.feats["lundnet_j1"] = lundnet(c.lund[1], c.mask[1])
        c.x, c.y = twin(np.stack([c.feats[f] for f in EVENT_FEATURES], axis=1))
        c.watch.lap("onnx")

    def _fill(self, c: Chunk, hists: dict, syst) -> None:
        """Fill the chunk's histograms with this batch's selected events (the systematic variations'
        into ``syst``); keep its Lund-plane nodes and parent records for :meth:`_output`."""
        cfg = self.config
        parents = cfg.branch_map.parent_keys(c.events) if c.info.is_mc else None
        feats, w = c.feats, c.w
        plane = plane_of(feats["deta"], cfg.cuts)
        mt = H.clip_mt(feats["mt"], cfg.mt_edges)
        xs, ys = H.clip_scores(c.x), H.clip_scores(c.y)
        region = H.region_of(xs, ys, *cfg.wp, bins=cfg.score_bins)
        hists["mt_abcd"].fill(dataset=c.dataset, plane=plane, region=region, mt=mt, weight=w)
        hists["xy_mt"].fill(dataset=c.dataset, plane=plane, x=xs, y=ys, mt=mt, weight=w)
        xy_bins = flat_bins(hists["xy_mt"], {"dataset": sorted(cfg.datasets)}, dataset=c.dataset, plane=plane, x=xs,
                            y=ys, mt=mt)  # into the output's xy_mt (every dataset)
        hists["met"].fill(dataset=c.dataset, met=feats["met"], weight=w)
        hists["rt"].fill(dataset=c.dataset, rt=feats["rt"], weight=w)
        hists["dphi_min"].fill(dataset=c.dataset, dphi_min=feats["dphi_min"], weight=w)
        hists["jet_pt"].fill(dataset=c.dataset, jet="J0", pt=feats["pt_j0"], weight=w)
        hists["jet_pt"].fill(dataset=c.dataset, jet="J1", pt=feats["pt_j1"], weight=w)
        c.lund_nodes = []
        for arr, m in zip(c.lund, c.mask):
            node_w = np.broadcast_to(w[:, None], m.shape)[m]
            c.lund_nodes.append((-arr[..., 1][m], arr[..., 0][m], node_w))
        c.watch.lap("fill")
        if c.vary:
            self._variations(c, syst)
            c.watch.lap("systematics")
        if parents is not None:
            c.parent_rec = (np.asarray(parents[c.idx], dtype=np.uint64), xy_bins, np.asarray(w, dtype=np.float64),
                            None if c.subset_code is None else c.subset_code[c.idx])

    def _subset_codes(self, events, dataset: str, sub: EventSubset) -> np.ndarray:
        """Per event, its subset code in ``analysis.event_subset``'s split (:meth:`EventSubset.codes_of`
        of the key the skim writes: :func:`~svjscout.processors.skim.write_skim`'s ``run``,
        ``luminosityBlock``, ``parent``)."""
        bmap = self.config.branch_map
        ids = bmap.event_ids(events)
        return sub.codes_of(np.full(len(events), dataset, dtype=object), ids[:, 0], ids[:, 1],
                            bmap.parent_keys_or_events(events))

    def _variations(self, c: Chunk, h) -> None:
        """Fill ``xy_mt_syst`` (``h``) with one batch: every source of the registry
        (processors/variations.py), each variation's events recomputed and scored, filled like xy_mt."""
        cfg, s, cuts = self.config, self.config.systematics, self.config.cuts
        rho = J.event_rho(c.events)
        inputs = V.VariationInputs(events=c.events, branch_map=cfg.branch_map,
                                   cset=C.load_corrections(s.payload,
                                                           era=C.load_era(cfg.corrections.for_era(c.era))),
                                   settings=s, ak8=c.ak8_all, ak4=c.ak4, pf=c.pf_kept, ht_nom=c.ht_all,
                                   rho=None if rho is None else rho[c.sub])
        kin, ratio = V.variations(inputs, c.counts)
        results = []
        for var in kin:
            feats, passing, (i0, i1), (f0, f1) = V.vary_event(var.ak8_factors, c.ak8_all, var.ak4_factors, c.ak4,
                                                              c.met_pt, c.met_phi, var.met_shift, cuts,
                                                              c.clean & c.dq_pass)  # data quality: nominal jets
            results.append((var.name, feats, np.flatnonzero(passing), i0, i1, f0, f1))
        ev = np.concatenate([np.concatenate([r[2], r[2]]) for r in results]) if results else np.zeros(0, int)
        jt = (np.concatenate([np.concatenate([r[3][r[2]], r[4][r[2]]]) for r in results]) if results
              else np.zeros(0, int))
        pairs = np.unique(np.column_stack([ev, jt]), axis=0) if len(ev) else np.zeros((0, 2), int)
        lookup, lund, mask = V.lund_cache(c.ak8_all, pairs[:, 0], pairs[:, 1], cfg.lund_max_len)
        lundnet, twin = self._scorers()
        for name, feats, idx, i0, i1, f0, f1 in results:
            f = {k: v[idx] for k, v in feats.items()}
            for tag, jets, fac in (("j0", i0, f0), ("j1", i1, f1)):
                arr, m = V.shifted_lund(lookup, lund, mask, idx, jets[idx], fac[idx])
                f[f"lundnet_{tag}"] = lundnet(arr, m)
            x, y = twin(np.stack([f[k] for k in EVENT_FEATURES], axis=1))
            self._fill_syst(h, c.dataset, name, f, x, y, c.gen_w[idx])
        # weight variations: the nominal events, features and scores
        for name, r in ratio.items():
            self._fill_syst(h, c.dataset, name, c.feats, c.x, c.y, c.w * np.asarray(r)[c.idx])

    def _fill_syst(self, h, dataset, name, feats, x, y, w) -> None:
        cfg = self.config
        h.fill(dataset=dataset, syst=name, plane=plane_of(feats["deta"], cfg.cuts), x=H.clip_scores(x),
               y=H.clip_scores(y), mt=H.clip_mt(feats["mt"], cfg.mt_edges), weight=w)

    # -- coffea's dask-awkward mode -----------------------------------------------------------
    def _process_dask(self, events):
        """A delayed, normalised output of one dataset: the eager pipeline mapped over the partitions
        of dask-awkward ``events`` (``dask.delayed``), summed in a tree, normalised for the dataset."""
        metadata = dict(events.metadata or {})
        dataset = metadata.get("dataset")
        if dataset not in self.config.datasets:
            raise ConfigError(f"dataset {dataset!r} is not in the job's datasets {sorted(self.config.datasets)}")
        divisions = events.divisions if events.known_divisions else (None,) * (events.npartitions + 1)
        parts = []
        for i, part in enumerate(events.to_delayed()):
            meta = {**metadata, "filename": f"{dataset}#partition{i}", "entrystart": divisions[i] or i,
                    "entrystop": divisions[i + 1] or i + 1}
            parts.append(dask.delayed(self._process)(part, meta))
        while len(parts) > 1:
            parts = [dask.delayed(_accumulate)(parts[i:i + TREE_REDUCTION])
                     for i in range(0, len(parts), TREE_REDUCTION)]
        return dask.delayed(normalize)(parts[0], self.config, datasets=[dataset])


def _cluster_in_parts(pf: ak.Array, radius: float, **kwargs) -> ak.Array:
    """:func:`cluster` of ``pf`` in parts of :data:`CLUSTER_EVENTS` events, put back together."""
    if len(pf) <= CLUSTER_EVENTS:
        return cluster(pf, radius, **kwargs)
    return ak.concatenate([cluster(pf[a:a + CLUSTER_EVENTS], radius, **kwargs)
                           for a in range(0, len(pf), CLUSTER_EVENTS)])


def _accumulate(outputs: list[dict]) -> dict:
    return processor.accumulate(outputs)


def _scatter(jet: dict, sub: np.ndarray, n: int) -> dict:
    """A J0/J1 dict of the clustered events ``sub`` as arrays over all ``n`` events (zeros elsewhere)."""
    if len(sub) == n:
        return jet
    out = {}
    for k, v in jet.items():
        full = np.zeros(n, dtype=v.dtype)
        full[sub] = v
        out[k] = full
    return out


def _leading_two(jets) -> tuple[dict, dict]:
    """J0 and J1 as dicts of float64 arrays (zeros where an event has fewer jets)."""
    padded = ak.pad_none(jets[["pt", "eta", "phi", "mass"]], 2, axis=1, clip=True)
    out = []
    for i in (0, 1):
        j = padded[:, i]
        out.append({k: ak.to_numpy(ak.fill_none(j[k], 0.0)).astype(np.float64) for k in ("pt", "eta", "phi", "mass")})
    return out[0], out[1]


def cutflow_table(output: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{dataset: {cut: {"raw": n, "weighted": w}}}`` from a processor output (JSON-ready)."""
    names = ["all", *CUT_ORDER]
    return {ds: {name: {"raw": float(c["raw"][i]), "weighted": float(c["weighted"][i])} for i, name in enumerate(names)}
            for ds, c in sorted(output.get("cutflow", {}).items())}
