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

Weights: histograms are filled with ``genWeight`` (1 for data) and every dataset is scaled by
``xsec * lumi / sumw`` in :func:`finalize`, with ``sumw`` the dataset's sum of generator weights
over all its files (from the ``Runs`` trees), not per chunk. Filling unit-size weights and
scaling once makes the histograms bit-identical whatever the chunking or the number of workers
(sums of integers are exact in float64); the cutflow's weighted column is scaled the same way.

Statistical errors of detector copies: a generated ("parent") event passed K times through the
detector response gives K correlated events (branch ``parent``, weights ``w_parent / K``). The
variance of a bin is then ``sum_p (sum_{i in p, i in bin} w_i)^2`` over parents p, not the
``sum_i w_i^2`` that the histogram's Weight storage accumulates. For MC events with a
``parent`` branch every chunk returns its ``xy_mt`` fills (``output["parent_fills"]``: parent
key, flat bin, weight) and :func:`finalize` replaces the ``xy_mt`` variances by the
parent-grouped ones (:func:`parent_grouped_variance`). Files without ``parent`` (data, K = 1,
older samples) are unchanged.

One subset of the event split (``analysis.event_subset``, :class:`EventSubset`): first in each
chunk, from the event-id branches only, every event gets its subset from :func:`svjscout.core.splits.split_of` with
the key the skim writes, ``(dataset, run, luminosityBlock, parent)`` (``parent`` the skim's
column, ``(run << 40) | parent``, or ``| event`` without a ``parent`` branch), and only the chosen
subset's events go on (the others are counted as ``not_in_subset``, never clustered; the
cutflow's ``all`` row counts the events kept). So the events kept with ``subset: test`` are
exactly the skim's events that the trainers put in their test subset. MC yields are scaled by
``1 / fraction`` of the subset in :func:`finalize` (with ``xsec * lumi / sumw``; the skim's
``weight`` column too): the histograms and the weighted cutflow estimate the full sample's
yields, and their variances (``x 1 / fraction^2``) the larger statistical error of the subset.
Data are refused (no model is trained on data; the split of data events means nothing).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Literal

import awkward as ak
import numpy as np
from coffea import processor
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from svjscout.core.constants import LUMI_RUN2_PB
from svjscout.core.exceptions import ConfigError
from svjscout.core.parents import group_fills, parent_grouped_variance
from svjscout.core import splits
from svjscout.processors import histograms as H
from svjscout.processors.features import EVENT_FEATURES, event_features
from svjscout.processors.jets import cluster, ht
from svjscout.processors.prefilter import prefilter, scalar_pt_sum
from svjscout.processors.variations import CLUSTER_MARGIN, SystematicsSettings
from svjscout.processors.schema import BranchMap
from svjscout.processors.selection import CUT_ORDER, Cuts, cutflow, plane_of, preselection

log = logging.getLogger(__name__)


class DatasetInfo(BaseModel):
    """What the processor needs to know about a dataset."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["signal", "background", "data"]
    xsec: float | None = None  # pb
    sumw: float | None = None  # sum of genWeight over all generated events of the dataset
    mzprime: float | None = None
    rinv: float | None = None

    @property
    def is_mc(self) -> bool:
        return self.kind != "data"

    def norm(self, lumi: float) -> float:
        """xsec * lumi / sumw for MC (lumi in pb^-1), 1 for data."""
        if not self.is_mc:
            return 1.0
        if not self.xsec or not self.sumw:
            raise ConfigError(f"MC dataset needs xsec and sumw > 0, got xsec={self.xsec}, sumw={self.sumw}")
        return self.xsec * lumi / self.sumw


class EventSubset(BaseModel):
    """``analysis.event_subset``: process one subset of the shared train/val/test event split.

    The split is :mod:`svjscout.core.splits` (the one both trainers use): ``seed`` and
    ``fractions`` (train, val, test) must be those the models were trained with to select their
    held-out events (the defaults are the trainers' defaults).
    """

    model_config = ConfigDict(extra="forbid")

    subset: Literal["train", "val", "test"]
    seed: int = splits.DEFAULT_SEED
    fractions: tuple[float, float, float] = splits.DEFAULT_FRACTIONS

    @field_validator("fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v):
        if any(not (0 < f < 1) for f in v):
            raise ValueError(f"fractions (train, val, test) must each be in (0, 1), got {list(v)}")
        if abs(sum(v) - 1) > 1e-6:
            raise ValueError(f"fractions (train, val, test) must sum to 1, got {list(v)} (sum {sum(v):.6g})")
        return v

    @property
    def code(self) -> int:
        """The subset's code in :mod:`svjscout.core.splits` (``TRAIN``, ``VAL``, ``TEST``)."""
        return splits.SPLIT_NAMES.index(self.subset)

    @property
    def fraction(self) -> float:
        """The expected fraction of events in the subset (MC yields are scaled by its inverse)."""
        return float(self.fractions[self.code])


def check_event_subset(subset: EventSubset | None, kinds: dict[str, str]) -> None:
    """Refuse ``analysis.event_subset`` with a data dataset (``kinds``: dataset -> kind)."""
    data = sorted(name for name, kind in kinds.items() if kind == "data")
    if subset is not None and data:
        raise ConfigError(f"analysis.event_subset ({subset.subset!r}) selects MC events of the training split; "
                          f"dataset(s) {data} are data (kind: data): run them in a job without event_subset")


class AnalysisSettings(BaseModel):
    """Cuts, binning, working point, models and luminosity (the ``analysis`` block of a job)."""

    model_config = ConfigDict(extra="forbid")

    cuts: Cuts = Field(default_factory=Cuts)
    mt_edges: list[float] = [650.0, 800.0, 1000.0, 1300.0, 1700.0, 2500.0]
    wp: tuple[float, float] = (0.775, 0.875)
    score_bins: int = 40
    lund_max_len: int = 32
    prefilter: bool = True  # skip the clustering of events proven to fail the preselection
    systematics: SystematicsSettings = Field(default_factory=SystematicsSettings)  # processors/variations.py
    lundnet_model: str | None = None
    twin_model: str | None = None
    lumi: float = LUMI_RUN2_PB  # pb^-1
    event_subset: EventSubset | None = None  # one subset of the train/val/test split (None: all events)

    @model_validator(mode="after")
    def _wp_on_score_edges(self):
        # the regions are sums of xy_mt bins everywhere (processor, scan, cards): the WP must be
        # a bin edge of the score axes, checked when the job is read
        import hist

        edges = np.asarray(self.mt_edges, dtype=float)
        if edges.size < 2 or not np.all(np.isfinite(edges)) or not np.all(np.diff(edges) > 0):
            raise ValueError(f"analysis.mt_edges must be at least two finite, strictly increasing values in GeV, got "
                             f"{list(self.mt_edges)}")
        if not (np.isfinite(self.lumi) and self.lumi > 0):
            raise ValueError(f"analysis.lumi must be a positive integrated luminosity in pb^-1, got {self.lumi!r}")
        if self.score_bins < 1:
            raise ValueError(f"analysis.score_bins must be >= 1, got {self.score_bins}")
        axis = hist.axis.Regular(self.score_bins, 0, 1)
        for name, v in zip(("analysis.wp[0] (x0)", "analysis.wp[1] (y0)"), self.wp):
            if not (np.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} = {v!r} is outside [0, 1]: the X and Y scores are probabilities")
            H.edge_index(axis, v, name)
        return self


class ProcessorConfig(AnalysisSettings):
    """Settings of :class:`SVJProcessor`: the analysis settings plus datasets, schema, skim."""

    datasets: dict[str, DatasetInfo] = {}
    branch_map: BranchMap = Field(default_factory=BranchMap)
    skim_dir: str | None = None

    def subset_scale(self, info: DatasetInfo) -> float:
        """``1 / fraction`` of ``analysis.event_subset`` for MC (1 without a subset): the yields of
        the subset's events scaled to estimate those of the full sample."""
        if self.event_subset is None or not info.is_mc:
            return 1.0
        return 1.0 / self.event_subset.fraction


class _Stopwatch:
    """Seconds per stage of one chunk (``output["timing"]``, summed over chunks by coffea)."""

    def __init__(self):
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


class SVJProcessor(processor.ProcessorABC):
    """coffea processor of the SVJ scouting search (stateless, picklable).

    Output: ``{"hists": {name: hist.Hist}, "cutflow": {dataset: {"raw": array, "weighted": array}},
    "counts": {dataset: {...}}}``; the cutflow arrays follow ``["all", *CUT_ORDER]``. MC chunks
    whose events have a ``parent`` branch add ``"parent_fills": {dataset: {"key", "bin",
    "weight"}}`` (column accumulators, concatenated across chunks; see :func:`finalize`).
    """

    def __init__(self, config: ProcessorConfig):
        self.config = config
        if config.skim_dir is None and (config.lundnet_model is None or config.twin_model is None):
            raise ConfigError("analysis.lundnet_model and analysis.twin_model are required to fill histograms")
        check_event_subset(config.event_subset, {name: info.kind for name, info in config.datasets.items()})

    # -- the data path ----------------------------------------------------------------------
    def process(self, events):
        cfg = self.config
        dataset = events.metadata["dataset"]
        if dataset not in cfg.datasets:
            raise ConfigError(f"dataset {dataset!r} is not in the job's datasets {sorted(cfg.datasets)}")
        info = cfg.datasets[dataset]
        bmap, cuts = cfg.branch_map, cfg.cuts
        counts = _empty_counts()
        counts["events"], counts["chunks"] = len(events), 1
        watch = _Stopwatch()
        if cfg.event_subset is not None:  # before anything is computed: dropped events cost nothing
            check_event_subset(cfg.event_subset, {dataset: info.kind})
            in_subset = self._in_subset(events, dataset)
            counts["not_in_subset"] = int(np.count_nonzero(~in_subset))
            if counts["not_in_subset"]:
                events = events[in_subset]

        pf = bmap.pf_candidates(events)
        finite = np.isfinite(pf.pt) & np.isfinite(pf.eta) & np.isfinite(pf.phi) & np.isfinite(pf.mass) & (pf.pt > 0)
        counts["nonfinite_candidates"] = int(ak.sum(~finite))
        pf = pf[finite]
        met_pt, met_phi = bmap.met(events)
        gen_w = bmap.gen_weight_of(events, info.is_mc)
        clean = np.isfinite(met_pt) & np.isfinite(met_phi) & np.isfinite(gen_w)
        counts["nonfinite_events"] = int(np.count_nonzero(~clean))
        met_pt, met_phi, gen_w = (np.where(clean, a, 0.0) for a in (met_pt, met_phi, gen_w))
        pf = ak.materialize(pf) if hasattr(ak, "materialize") else pf
        watch.lap("read")

        # events the prefilter rejects cannot pass the preselection (processors/prefilter.py): with
        # analysis.prefilter they are not clustered; the cutflow's prefilter row is the same either way
        pre = prefilter(met_pt, scalar_pt_sum(pf), cuts)
        # systematic variations (MC signal): every event clustered (the prefilter's bounds hold for
        # the nominal cuts only) and jets kept down to CLUSTER_MARGIN x the thresholds
        vary = cfg.systematics.enabled and info.kind == "signal" and cfg.skim_dir is None
        margin = CLUSTER_MARGIN if vary else 1.0
        keep = pre if (cfg.prefilter and not vary) else np.ones(len(events), bool)
        counts["not_clustered"] = int(np.count_nonzero(~keep))
        sub = np.flatnonzero(keep)
        pf_kept = pf if len(sub) == len(events) else pf[sub]
        watch.lap("prefilter")

        ak4 = cluster(pf_kept, 0.4, ptmin=cuts.ak4_pt_min * margin)
        watch.lap("ak4")
        ak8 = cluster(pf_kept, 0.8, ptmin=cuts.ak8_pt_min * margin, constituents=True)
        ak8 = ak8[abs(ak8.eta) <= cuts.ak8_abs_eta_max]
        ak8_all = ak8
        if vary:  # the nominal: exactly the jets a clustering at the threshold gives
            ak8 = ak8[ak8.pt >= cuts.ak8_pt_min]
        watch.lap("ak8")
        # per-event quantities of the clustered events, scattered back to all events (zeros for
        # those not clustered: they fail the prefilter row, so no later row depends on them)
        n_ak8, ht_all = np.zeros(len(events), int), np.zeros(len(events))
        if len(sub):
            n_ak8[sub] = ak.to_numpy(ak.num(ak8.pt))
            ht_all[sub] = ht(ak4, cuts.ak4_pt_min, cuts.ak4_abs_eta_max)
        counts["fewer_than_two_jets"] = int(np.count_nonzero(n_ak8[sub] < 2))  # of the events clustered
        if len(sub):
            j0, j1 = (_scatter(j, sub, len(events)) for j in _leading_two(ak8))
        else:  # nothing clustered (clustering an empty chunk gives jets of unknown type)
            j0 = j1 = {k: np.zeros(len(events)) for k in ("pt", "eta", "phi", "mass")}
        feats = event_features(j0, j1, met_pt, met_phi)
        sel = preselection(clean, ht_all, n_ak8, feats, cuts, prefilter=pre)
        flow = cutflow(sel, gen_w)
        out_flow = {dataset: {"raw": np.array(flow["raw"]), "weighted": np.array(flow["weighted"])}}

        passing = sel.all(*CUT_ORDER[1:])  # the cuts themselves; the prefilter only follows from them
        lost = passing & ~pre
        if lost.any():  # only possible without analysis.prefilter, which is how this is checked
            raise RuntimeError(f"prefilter bug: {int(lost.sum())} events of {dataset} pass every cut but fail "
                               "the prefilter (processors/prefilter.py); report this with the input file")
        idx = np.flatnonzero(passing)
        if len(idx) == 0:
            counts["chunks_without_selected"] = 1
        watch.lap("features+selection")
        lund, mask = self._lund(ak8[np.searchsorted(sub, idx)])  # idx are among sub (they pass the prefilter)
        watch.lap("lund")
        feats = {k: v[idx] for k, v in feats.items()}
        w = gen_w[idx]
        if cfg.skim_dir is not None:
            self._write_skim(events, dataset, info, feats, lund, mask, w, idx)
            watch.lap("skim")
            return {"cutflow": out_flow, "counts": {dataset: counts}, "timing": watch.seconds}

        from svjscout.processors.inference import LundNetScorer, TwinScorer, analysis_planes
        from svjscout.processors.lund import LUND_FEATURES

        lundnet = LundNetScorer(cfg.lundnet_model, tuple(LUND_FEATURES), max_len=cfg.lund_max_len)
        feats["lundnet_j0"] = lundnet(lund[0], mask[0])
        feats["lundnet_j1"] = lundnet(lund[1], mask[1])
        twin = TwinScorer(cfg.twin_model, EVENT_FEATURES, planes=analysis_planes(cfg.cuts), lundnet=cfg.lundnet_model)
        x, y = twin(np.stack([feats[f] for f in EVENT_FEATURES], axis=1))
        watch.lap("onnx")
        parents = bmap.parent_keys(events) if info.is_mc else None
        hists, xy_bins = self._fill(dataset, feats, x, y, w, lund, mask)
        watch.lap("fill")
        if vary:
            hists["xy_mt_syst"] = self._variations(events, dataset, ak8_all, ak4, pf_kept, met_pt, met_phi, gen_w,
                                                   clean, ht_all, idx, feats, x, y, counts)
            watch.lap("systematics")
        out = {"hists": hists, "cutflow": out_flow, "counts": {dataset: counts}, "timing": watch.seconds}
        if parents is not None:
            out["parent_fills"] = {dataset: parent_fills(parents[idx], xy_bins, w)}
        return out

    def _in_subset(self, events, dataset: str) -> np.ndarray:
        """Per event, whether it is in ``analysis.event_subset``: :func:`splits.split_of` of the
        key the skim writes (:meth:`_write_skim`'s ``run``, ``luminosityBlock``, ``parent``)."""
        sub = self.config.event_subset
        bmap = self.config.branch_map
        ids = bmap.event_ids(events)
        code = splits.split_of(np.full(len(events), dataset, dtype=object), ids[:, 0], ids[:, 1],
                               bmap.parent_keys_or_events(events), sub.seed, sub.fractions)
        return code == sub.code

    def _variations(self, events, dataset, ak8, ak4, pf, met_pt, met_phi, gen_w, clean, ht_nom, idx_nom, feats_nom,
                    x_nom, y_nom, counts) -> "hist.Hist":
        """``xy_mt_syst`` of one chunk: every variation of processors/variations.py, filled like xy_mt."""
        from svjscout.processors import corrections as C
        from svjscout.processors import variations as V
        from svjscout.processors.inference import LundNetScorer, TwinScorer, analysis_planes
        from svjscout.processors.lund import LUND_FEATURES

        cfg, s, cuts = self.config, self.config.systematics, self.config.cuts
        cset = C.load_corrections(s.payload)
        names = V.variation_names(s)
        h = H.book_syst(cfg.mt_edges, sorted(d for d, i in cfg.datasets.items() if i.kind == "signal"), names,
                        cfg.score_bins)
        n = len(events)
        ones8, ones4 = ak.ones_like(ak8.pt), ak.ones_like(ak4.pt)
        kin = []  # (name, AK8 factors, AK4 factors, MET shift)
        if "jes" in s.sources:
            for d, sgn in (("up", 1.0), ("down", -1.0)):
                kin.append((f"jes_{d}", C.jes_factor(cset, ak8.pt, ak8.eta, sgn), C.jes_factor(cset, ak4.pt, ak4.eta, sgn),
                            None))
        if "jer" in s.sources:
            ids = cfg.branch_map.event_ids(events)
            seeds = C.jet_seeds(ids[:, 0], ids[:, 1], ids[:, 2], ak8.pt, salt=8)  # the clustering's jet order
            for d in ("up", "down"):
                kin.append((f"jer_{d}", C.jer_factor(cset, ak8.pt, ak8.eta, d, seeds), ones4, None))
        if "unclustered" in s.sources:
            ux = ak.to_numpy(ak.sum(pf.pt * np.cos(pf.phi), axis=1)) - ak.to_numpy(ak.sum(ak4.pt * np.cos(ak4.phi), axis=1))
            uy = ak.to_numpy(ak.sum(pf.pt * np.sin(pf.phi), axis=1)) - ak.to_numpy(ak.sum(ak4.pt * np.sin(ak4.phi), axis=1))
            a = s.unclustered_scale
            kin += [("unclustered_up", ones8, ones4, (-a * ux, -a * uy)), ("unclustered_down", ones8, ones4, (a * ux, a * uy))]
        results = []
        for name, f8, f4, shift in kin:
            feats, passing, (i0, i1), (f0, f1) = V.vary_event(f8, ak8, f4, ak4, met_pt, met_phi, shift, cuts, clean)
            results.append((name, feats, np.flatnonzero(passing), i0, i1, f0, f1))
        ev = np.concatenate([np.concatenate([r[2], r[2]]) for r in results]) if results else np.zeros(0, int)
        jt = np.concatenate([np.concatenate([r[3][r[2]], r[4][r[2]]]) for r in results]) if results else np.zeros(0, int)
        pairs = np.unique(np.column_stack([ev, jt]), axis=0) if len(ev) else np.zeros((0, 2), int)
        lookup, lund, mask = V.lund_cache(ak8, pairs[:, 0], pairs[:, 1], cfg.lund_max_len)
        lundnet = LundNetScorer(cfg.lundnet_model, tuple(LUND_FEATURES), max_len=cfg.lund_max_len)
        twin = TwinScorer(cfg.twin_model, EVENT_FEATURES, planes=analysis_planes(cuts), lundnet=cfg.lundnet_model)
        for name, feats, idx, i0, i1, f0, f1 in results:
            f = {k: v[idx] for k, v in feats.items()}
            for tag, jets, fac in (("j0", i0, f0), ("j1", i1, f1)):
                arr, m = V.shifted_lund(lookup, lund, mask, idx, jets[idx], fac[idx])
                f[f"lundnet_{tag}"] = lundnet(arr, m)
            x, y = twin(np.stack([f[k] for k in EVENT_FEATURES], axis=1))
            self._fill_syst(h, dataset, name, f, x, y, gen_w[idx])
        # weight variations: the nominal events, features and scores
        ratio = {}
        if "trigger" in s.sources:
            nom = C.trigger_sf(cset, ht_nom, "nom")
            for d in ("up", "down"):
                ratio[f"trigger_{d}"] = C.trigger_sf(cset, ht_nom, d) / nom
        if "pileup" in s.sources:
            n_true = _optional_branch(events, "Pileup_nTrueInt")
            if n_true is None:
                counts["syst_skipped_pileup"] = counts.get("syst_skipped_pileup", 0) + n
            else:
                nom = C.pileup_weight(cset, n_true, "nom")
                for d in ("up", "down"):
                    ratio[f"pileup_{d}"] = C.pileup_weight(cset, n_true, d) / nom
        ps = _optional_branch(events, "PSWeight") if {"isr", "fsr"} & set(s.sources) else None
        for src, (iu, idn) in (("isr", (0, 2)), ("fsr", (1, 3))):
            if src not in s.sources:
                continue
            if ps is None:
                counts[f"syst_skipped_{src}"] = counts.get(f"syst_skipped_{src}", 0) + n
                continue
            ratio[f"{src}_up"], ratio[f"{src}_down"] = ps[:, iu], ps[:, idn]
        for name, r in ratio.items():
            self._fill_syst(h, dataset, name, feats_nom, x_nom, y_nom, gen_w[idx_nom] * np.asarray(r)[idx_nom])
        return h

    def _fill_syst(self, h, dataset, name, feats, x, y, w) -> None:
        cfg = self.config
        h.fill(dataset=dataset, syst=name, plane=plane_of(feats["deta"], cfg.cuts), x=H.clip_scores(x),
               y=H.clip_scores(y), mt=H.clip_mt(feats["mt"], cfg.mt_edges), weight=w)

    def postprocess(self, accumulator):
        return accumulator

    # -- steps --------------------------------------------------------------------------------
    def _lund(self, jets) -> tuple[list[np.ndarray], list[np.ndarray]]:
        from svjscout.processors.lund import pad_lund, primary_lund_declusterings

        L = self.config.lund_max_len
        lund, mask = [], []
        for i in (0, 1):
            if len(jets) == 0:
                lund.append(np.zeros((0, L, 5), np.float32))
                mask.append(np.zeros((0, L), bool))
                continue
            nodes = primary_lund_declusterings(jets.constituents[:, i])
            arr, m = pad_lund(nodes, L)
            lund.append(np.asarray(arr, dtype=np.float32))
            mask.append(np.asarray(m, dtype=bool))
        return lund, mask

    def _fill(self, dataset, feats, x, y, w, lund, mask) -> tuple[dict, np.ndarray]:
        """The chunk's histograms and, per event, the flat ``xy_mt`` bin it filled (:func:`flat_bins`)."""
        cfg = self.config
        hists = H.book(cfg.mt_edges, sorted(cfg.datasets), cfg.score_bins)
        plane = plane_of(feats["deta"], cfg.cuts)
        mt = H.clip_mt(feats["mt"], cfg.mt_edges)
        xs, ys = H.clip_scores(x), H.clip_scores(y)
        region = H.region_of(xs, ys, *cfg.wp, bins=cfg.score_bins)
        hists["mt_abcd"].fill(dataset=dataset, plane=plane, region=region, mt=mt, weight=w)
        hists["xy_mt"].fill(dataset=dataset, plane=plane, x=xs, y=ys, mt=mt, weight=w)
        xy_bins = flat_bins(hists["xy_mt"], dataset=dataset, plane=plane, x=xs, y=ys, mt=mt)
        hists["met"].fill(dataset=dataset, met=feats["met"], weight=w)
        hists["rt"].fill(dataset=dataset, rt=feats["rt"], weight=w)
        hists["dphi_min"].fill(dataset=dataset, dphi_min=feats["dphi_min"], weight=w)
        hists["jet_pt"].fill(dataset=dataset, jet="J0", pt=feats["pt_j0"], weight=w)
        hists["jet_pt"].fill(dataset=dataset, jet="J1", pt=feats["pt_j1"], weight=w)
        for arr, m in zip(lund, mask):
            node_w = np.broadcast_to(w[:, None], m.shape)[m]
            hists["lund_plane"].fill(dataset=dataset, ln_inv_delta=-arr[..., 1][m], ln_kt=arr[..., 0][m],
                                     weight=node_w)
        return hists, xy_bins

    def _write_skim(self, events, dataset, info, feats, lund, mask, w, idx) -> None:
        cfg = self.config
        n = len(idx)
        ids = cfg.branch_map.event_ids(events)[idx] if n else np.zeros((0, 3), np.uint64)
        cols = {f: feats[f].astype(np.float32) for f in EVENT_FEATURES if f in feats}
        cols.update({
            "lundnet_j0": np.full(n, np.nan, np.float32), "lundnet_j1": np.full(n, np.nan, np.float32),
            "mt": feats["mt"].astype(np.float32), "deta": feats["deta"].astype(np.float32),
            "pt_j0": feats["pt_j0"].astype(np.float32), "pt_j1": feats["pt_j1"].astype(np.float32),
            "weight": (w * (info.norm(cfg.lumi) * cfg.subset_scale(info))).astype(np.float64),
            "gen_weight": w.astype(np.float64),
            "dataset": np.array([dataset] * n, dtype=object), "label": np.full(n, int(info.kind == "signal"), np.int8),
            "mzprime": np.full(n, np.nan if info.mzprime is None else info.mzprime, np.float32),
            "rinv": np.full(n, np.nan if info.rinv is None else info.rinv, np.float32),
            "run": ids[:, 0], "luminosityBlock": ids[:, 1], "event": ids[:, 2],
            # (run << 40) | parent, or | event without a parent branch (every event its own parent)
            "parent": cfg.branch_map.parent_keys_or_events(events)[idx] if n else np.zeros(0, np.uint64),
            "lund_j0": lund[0], "lund_j0_mask": mask[0], "lund_j1": lund[1], "lund_j1_mask": mask[1],
        })
        table = ak.zip({k: ak.Array(list(v)) if k == "dataset" else ak.from_numpy(np.ascontiguousarray(v))
                        for k, v in cols.items()}, depth_limit=1)
        meta = events.metadata
        key = f"{meta.get('filename', '')}:{meta.get('entrystart', 0)}:{meta.get('entrystop', 0)}"
        name = hashlib.sha1(key.encode()).hexdigest()[:16]
        out = Path(cfg.skim_dir) / dataset
        out.mkdir(parents=True, exist_ok=True)
        ak.to_parquet(table, out / f"{name}.parquet")


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


def flat_bins(h, **coords) -> np.ndarray:
    """Per entry, the flat index into ``h.view(flow=True)`` (C order) of the bin a fill with
    these coordinates lands in (scalars broadcast; flow bins included, like the fill)."""
    idx = []
    for ax in h.axes:
        i = np.asarray(ax.index(coords[ax.name]), dtype=np.int64)
        idx.append(i + 1 if ax.traits.underflow else i)
    idx = np.broadcast_arrays(*idx)
    return np.ravel_multi_index(idx, h.view(flow=True).shape).astype(np.int64)


def parent_fills(keys: np.ndarray, bins: np.ndarray, weights: np.ndarray) -> dict:
    """One chunk's record of histogram fills: parent key (uint64), flat bin (int64), weight
    (float64) per filled event, as coffea column accumulators (concatenated when chunks merge)."""
    return {"key": processor.column_accumulator(np.asarray(keys, dtype=np.uint64)),
            "bin": processor.column_accumulator(np.asarray(bins, dtype=np.int64)),
            "weight": processor.column_accumulator(np.asarray(weights, dtype=np.float64))}


def _parent_grouped_xy_mt(output: dict) -> dict:
    """Replace the unscaled ``xy_mt`` variances of the datasets in ``output["parent_fills"]`` by
    the parent-grouped ones (:func:`parent_grouped_variance`); returns a summary per dataset.

    Every selected event fills ``xy_mt`` once, so a dataset whose records number its cutflow's
    last row has all its fills recorded and its variance is the grouped one. A dataset mixing
    files with and without ``parent`` keeps the Weight storage's ``sum w^2`` and adds the
    recorded parents' cross terms (grouped - naive). Where no parent has two fills in one bin
    the variance is left as filled (it is ``sum w^2`` already, bit for bit).

    ``output["parent_fills"]`` becomes the compact, sorted per-(parent, bin) sums
    (:func:`group_fills`; plain numpy arrays), which :func:`finalize` scales like the histograms.
    """
    fills = output.get("parent_fills") or {}
    h = output.get("hists", {}).get("xy_mt")
    summary, grouped = {}, {}
    view = h.view(flow=True) if h is not None else None
    names = list(h.axes["dataset"]) if h is not None else []
    for dataset in sorted(fills):
        rec = {k: (v.value if isinstance(v, processor.column_accumulator) else np.asarray(v))
               for k, v in fills[dataset].items()}
        n = len(rec["weight"])
        selected = int(output.get("cutflow", {}).get(dataset, {}).get("raw", [0])[-1])
        complete = n == selected
        gk, gb, gw = group_fills(rec["key"], rec["bin"], rec["weight"])
        grouped[dataset] = {"key": gk, "bin": gb, "weight": gw}
        summary[dataset] = {"fills": n, "selected": selected, "parent_bins": len(gw), "complete": complete}
        if len(gw) == n or dataset not in names:
            continue
        shape, i = view.shape, names.index(dataset)
        var = np.bincount(gb, weights=gw**2, minlength=view.size).reshape(shape)[i]
        if complete:
            view.variance[i] = var
        else:
            order = np.lexsort((rec["weight"], rec["bin"]))
            naive = np.bincount(rec["bin"][order], weights=rec["weight"][order] ** 2,
                                minlength=view.size).reshape(shape)[i]
            view.variance[i] = view.variance[i] + (var - naive)
            log.info("dataset %r: %d of %d selected events have a parent id; their copies' correlations are "
                     "added to the xy_mt variances", dataset, n, selected)
    if fills:
        output["parent_fills"] = grouped
    return summary


def _parent_grouped_mt_abcd(output: dict, config: ProcessorConfig) -> None:
    """The same for ``mt_abcd`` (complete datasets only), grouped per (parent, region, M_T bin):
    a parent's copies in different ``xy_mt`` bins of one region add before squaring too."""
    h, xy = output.get("hists", {}).get("mt_abcd"), output.get("hists", {}).get("xy_mt")
    if h is None or xy is None:
        return
    view, xy_shape = h.view(flow=True), xy.view(flow=True).shape
    names = list(h.axes["dataset"])
    ix0 = H.edge_index(xy.axes["x"], config.wp[0], "x0") + 1  # flow layout: bin i at i + 1
    iy0 = H.edge_index(xy.axes["y"], config.wp[1], "y0") + 1
    # region index in mt_abcd's axis per (x above, y above): A = (1, 0), B = (1, 1), C = (0, 0), D = (0, 1)
    region = np.array([[h.axes["region"].index(r) for r in ("C", "D")], [h.axes["region"].index(r) for r in ("A", "B")]])
    for dataset, s in output.get("parent_errors", {}).items():
        if not s["complete"] or s["parent_bins"] == s["fills"] or dataset not in names:
            continue
        rec = output["parent_fills"][dataset]
        d, p, ix, iy, imt = np.unravel_index(rec["bin"], xy_shape)
        bins = np.ravel_multi_index((d, p, region[(ix >= ix0).astype(int), (iy >= iy0).astype(int)], imt), view.shape)
        var = parent_grouped_variance(rec["key"], bins, rec["weight"], view.size)[0]
        i = names.index(dataset)
        view.variance[i] = var.reshape(view.shape)[i]


def finalize(output: dict, config: ProcessorConfig) -> dict:
    """Scale every dataset by ``xsec * lumi / sumw`` (in place) and return ``output``.

    With ``analysis.event_subset`` MC datasets are scaled by ``1 / fraction`` of the subset too
    (:meth:`ProcessorConfig.subset_scale`): the yields of the full sample, estimated.

    Values scale by the factor, variances by its square; the cutflow's weighted column too.
    Before scaling, the ``xy_mt`` variances of datasets with detector copies become
    ``sum_p (sum_{i in p} w_i)^2`` per bin over parents p (:func:`_parent_grouped_xy_mt`), and
    those of ``mt_abcd`` the same per region and M_T bin (:func:`_parent_grouped_mt_abcd`).
    ``output["parent_fills"]`` then holds, per such dataset, the scaled weight sums of each
    (parent key, flat ``xy_mt`` bin) (``{"key", "bin", "weight"}`` arrays), from which the
    variance of any union of bins (an ABCD region) can be grouped by parent too, and
    ``output["parent_errors"]`` summarises them (``{dataset: {fills, selected, parent_bins,
    complete}}``). Both are absent without parent ids. The records are attached (scaled) to
    ``xy_mt`` (:func:`svjscout.datacards.parents.attach`) for the region variances downstream.
    """
    summary = _parent_grouped_xy_mt(output)
    if summary:
        output["parent_errors"] = summary
        _parent_grouped_mt_abcd(output, config)
    hists = output.get("hists", {})
    for dataset, info in config.datasets.items():
        norm = info.norm(config.lumi) * config.subset_scale(info)
        if dataset in output.get("parent_fills", {}):
            output["parent_fills"][dataset]["weight"] = output["parent_fills"][dataset]["weight"] * norm
        for h in hists.values():
            if dataset not in h.axes["dataset"]:
                continue
            i = h.axes["dataset"].index(dataset)
            view = h.view(flow=True)
            view.value[i] *= norm
            view.variance[i] *= norm**2
        if dataset in output.get("cutflow", {}):
            output["cutflow"][dataset]["weighted"] = output["cutflow"][dataset]["weighted"] * norm
    if output.get("parent_fills"):
        # the scaled records travel on xy_mt: every region and M_T-group variance summed from it
        # downstream (mt_abcd_at, closure, cards, scan) is parent-aware (svjscout.datacards.parents)
        from svjscout.datacards.parents import attach

        attach(output)
    return output


def cutflow_table(output: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{dataset: {cut: {"raw": n, "weighted": w}}}`` from a processor output (JSON-ready)."""
    names = ["all", *CUT_ORDER]
    return {ds: {name: {"raw": float(c["raw"][i]), "weighted": float(c["weighted"][i])} for i, name in enumerate(names)}
            for ds, c in sorted(output.get("cutflow", {}).items())}


def _optional_branch(events, name: str):
    """A per-event branch (``X_y`` is field ``y`` of collection ``X``) as numpy, or None if absent."""
    from svjscout.processors.schema import _branch
    from svjscout.core.exceptions import MissingBranchError

    try:
        arr = _branch(events, name)
    except MissingBranchError:
        return None
    if arr.ndim > 1:  # a NanoAOD vector branch (nX + X), e.g. PSWeight: (events, 4)
        arr = ak.to_regular(arr, axis=1)
    return ak.to_numpy(arr).astype(np.float64)
