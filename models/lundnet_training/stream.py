"""The skim streamed for LundNet's training (:class:`_JetStream`, on models/training/data.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch

from svjscout.core import splits
from svjscout.core.exceptions import InputFileError
from svjscout.core.features import LUND_FEATURES
from svjscout.core.splits import SPLIT_NAMES, TRAIN
from svjscout.models.lundnet_training.config import TrainConfig
from svjscout.models.lundnet_training.data import (
    SKIM_COLUMNS,
    SPLIT_KEY_COLUMNS,
    TRUTH_COLUMNS,
    _fixed_length,
    _interleave_events,
    _one_copy_per_parent,
    truth_summary,
    with_truth_factors,
)
from svjscout.models.lundnet_training.evaluation import baseline_scores
from svjscout.models.training.data import ClassWeights, Reservoir, SkimSource, plan_buffers, rng, torch_generator


class _JetStream:
    """The skim streamed for LundNet (models/training/data.py): a scan for the class weights, the
    node normalisation and the data summary, then row groups read on demand. One copy per parent
    is kept *within each row group* (copies of one generated event are consecutive rows of the
    generated files, so they share a row group unless a chunk boundary cuts them: then the parent
    keeps one row per row group, its weight shared between them; both in the same subset).
    Training visits every jet once per epoch: row groups in a random order, buffers of about
    ``buffer_jets`` jets shuffled inside (seeded by seed, epoch and buffer)."""

    def __init__(self, paths: Sequence[str | Path], config: TrainConfig, feat_idx: list[int], device):
        self.config, self.feat_idx, self.device = config, feat_idx, device
        self.max_len = config.model.max_len
        self.source = SkimSource(paths, SKIM_COLUMNS)
        self.files = [str(f) for f in self.source.files]
        self.weights = {s: ClassWeights(1.0, True, "uniform") for s in SPLIT_NAMES}
        self.kept = {s: [] for s in SPLIT_NAMES}
        self.summary: dict[str, dict[str, Any]] = {}
        #: signal jets by dark-quark match (data.truth_summary), over every subset
        self.truth = {"matched": 0, "unmatched": 0, "no_truth": 0}
        n_f = len(LUND_FEATURES)
        self.norm = np.zeros((3, n_f))  # count, sum, sum of squares of the training jets' real nodes
        base = Reservoir(200_000, config.seed + 21)
        for rg in self.source.row_groups:
            ev = self._events(rg)
            for i, name in enumerate(SPLIT_NAMES):
                sel = ev["split"] == i
                self.kept[name].append(2 * int(sel.sum()))
                jet_w = ev["weight"][sel] * 0.5 * (ev["jet_factor_j0"][sel] + ev["jet_factor_j1"][sel])
                self.weights[name].add(ev["label"][sel], jet_w, ev["dataset"][sel],
                                       str(self.source.path(rg)), ev["dataset"][sel])
            for k, v in truth_summary(ev["label"], ev["dark_dr_j0"], ev["dark_dr_j1"],
                                      config.dark_match_dr).items():
                self.truth[k] += v
            for ds in np.unique(ev["dataset"].astype(str)):
                sel = ev["dataset"] == ds
                rec = self.summary.setdefault(ds, {"label": int(ev["label"][sel][0]), **{s: 0 for s in SPLIT_NAMES},
                                                   "nodes": 0.0})
                for i, name in enumerate(SPLIT_NAMES):
                    rec[name] += 2 * int((ev["split"][sel] == i).sum())
                rec["nodes"] += float(ev["mask_j0"][sel].sum() + ev["mask_j1"][sel].sum())
            tr = ev["split"] == TRAIN
            for j in ("j0", "j1"):
                real = ev[f"lund_{j}"][tr][ev[f"mask_{j}"][tr]].astype(np.float64)
                self.norm += np.stack([np.full(n_f, len(real)), real.sum(0), (real ** 2).sum(0)])
            jets = _interleave_events({k: v[tr] for k, v in ev.items()})
            scores = baseline_scores(jets["lund"], jets["mask"])
            rows = np.repeat(np.arange(rg.start, rg.start + rg.rows)[ev["row"][tr]], 2) * 2 + np.tile([0, 1], tr.sum())
            base.add({"label": jets["label"], "weight": jets["weight"], "dataset": jets["dataset"], **scores}, rows)
        if not any(self.kept[s] for s in SPLIT_NAMES) or not self.summary:
            raise InputFileError(f"{self.files}: all skim files are empty")
        self.base_train = base.result(["label", "weight", "dataset", "n_declusterings", "jet_mass"])

    def _events(self, rg) -> dict[str, np.ndarray]:
        """Events of one row group (one copy per parent), fixed-length Lund arrays and split codes."""
        path = self.source.path(rg)
        cols = self.source.read(rg, [*SKIM_COLUMNS, *SPLIT_KEY_COLUMNS, *TRUTH_COLUMNS])
        n = len(cols["label"])
        ev: dict[str, np.ndarray] = {}
        for j in ("j0", "j1"):
            try:
                lund = (np.asarray(ak.to_numpy(cols[f"lund_{j}"]), dtype=np.float32) if n
                        else np.zeros((0, 1, 5), np.float32))
                mask = np.asarray(ak.to_numpy(cols[f"lund_{j}_mask"]), dtype=bool) if n else np.zeros((0, 1), bool)
            except ValueError as err:
                raise InputFileError(f"{path}: column 'lund_{j}' is not a regular (N, L, 5) array ({err})") from err
            if lund.ndim != 3 or lund.shape[2] != len(LUND_FEATURES) or mask.shape != lund.shape[:2]:
                raise InputFileError(f"{path}: column 'lund_{j}' has shape {lund.shape} (mask {mask.shape}), "
                                     f"expected (N, L, {len(LUND_FEATURES)}) and (N, L)")
            ev[f"lund_{j}"], ev[f"mask_{j}"] = _fixed_length(lund, self.max_len), _fixed_length(mask, self.max_len)
        ev["label"] = np.asarray(cols["label"]).astype(np.int8)
        ev["weight"] = np.asarray(cols["weight"], dtype=np.float64)
        ev["dataset"] = np.asarray(cols["dataset"], dtype=object)
        ev["event"] = np.asarray(cols["event"]).astype(np.uint64)
        for c in SPLIT_KEY_COLUMNS:
            ev[c] = (np.asarray(cols[c]).astype(np.uint64) if c in cols
                     else ev["event"] if c == "parent" else np.zeros(n, np.uint64))
        ev["row"] = np.arange(n)
        for col in TRUTH_COLUMNS:  # before the copies are merged; NaN where the skim has no match
            ev[col] = np.asarray(cols[col], dtype=np.float64) if col in cols else np.full(n, np.nan)
        if self.config.one_copy_per_parent and n:
            ev = _one_copy_per_parent(ev)
        c = self.config
        ev = with_truth_factors(ev, ev, c.signal_jet_label, c.dark_match_dr)
        ev["split"] = splits.assign(splits.split_u(ev["dataset"], ev["run"], ev["luminosityBlock"], ev["parent"],
                                                   c.seed), c.val_fraction, c.test_fraction)
        return ev

    def jets(self, rgs: Sequence[int], which: int) -> dict[str, np.ndarray]:
        """Jets (J0, J1 interleaved) of subset ``which`` in some row groups, with training weights."""
        parts = []
        for i in sorted(rgs):
            ev = self._events(self.source.row_groups[i])
            parts.append(_interleave_events({k: v[ev["split"] == which] for k, v in ev.items()}))
        jets = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        jets["w_train"] = self.weights[SPLIT_NAMES[which]].apply(jets["label"], jets["weight"], jets["dataset"])
        return jets

    def tensors(self, jets: Mapping[str, np.ndarray]):
        return (torch.from_numpy(np.ascontiguousarray(jets["lund"][:, :, self.feat_idx])),
                torch.from_numpy(jets["mask"].astype(np.float32)),
                torch.from_numpy(jets["label"].astype(np.float32)),
                torch.from_numpy(jets["w_train"].astype(np.float32)))

    def plan(self, epoch: int) -> list[list[int]]:
        return plan_buffers(self.kept["train"], self.config.buffer_jets, rng(self.config.seed, 7, epoch))

    def n_steps(self, epoch: int) -> int:
        b = self.config.batch_size
        return sum(math.ceil(sum(self.kept["train"][i] for i in buf) / b) for buf in self.plan(epoch))

    def steps(self, epoch: int, start: int):
        """(step, (x, mask, label, weight)) for the minibatches ``start``.. of an epoch; buffers
        before ``start`` are skipped unread."""
        b, step = self.config.batch_size, 0
        for k, buf in enumerate(self.plan(epoch)):
            n_b = math.ceil(sum(self.kept["train"][i] for i in buf) / b)
            if step + n_b <= start:
                step += n_b
                continue
            x, m, y, w = self.tensors(self.jets(buf, TRAIN))
            perm = torch.randperm(len(x), generator=torch_generator(self.config.seed, epoch, k))
            for i in range(n_b):
                if step >= start:
                    idx = perm[i * b:(i + 1) * b]
                    yield step, (x[idx], m[idx], y[idx], w[idx])
                step += 1

    def subset(self, which: int):
        """(row groups' jets) of a subset, one row group at a time (validation and test passes)."""
        for i, n in enumerate(self.kept[SPLIT_NAMES[which]]):
            if n:
                yield self.jets([i], which)
