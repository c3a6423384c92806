"""The skim streamed for the twin's training (:class:`_TwinStream`, on models/training/data.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.core.features import EVENT_FEATURES
from svjscout.core.modelmeta import file_sha256
from svjscout.models.lundnet_training.crossfit import lookup_oof, oof_table_model, read_oof_table
from svjscout.models.training.data import Reservoir, _keys, allocate_batches, plan_buffers, rng
from svjscout.models.twin_training.config import TwinTrainConfig
from svjscout.models.twin_training.data import (
    SkimData,
    _class_weights,
    _points,
    _read_rows,
    _signal_points,
    _source,
    _Tensors,
    analysis_mask,
    concat,
    split_codes,
)
from svjscout.models.twin_training.losses import closure_wps_for_step

_J0, _J1 = EVENT_FEATURES.index("lundnet_j0"), EVENT_FEATURES.index("lundnet_j1")


def _check_oof_model(cfg: TwinTrainConfig, table_model: str | None) -> bool:
    """Refuse an out-of-fold table written beside another LundNet than the one the twin computes its
    scores with (``lundnet_model``): the table's events are then not that model's training events, and
    the events outside it could be. Returns whether the table was shown to be that model's; where it
    was not (no stamp: a table written before it; no model file), the events outside the table are
    refused where they turn up (:meth:`_TwinStream._use_oof`)."""
    if table_model is None or not cfg.lundnet_model or not Path(cfg.lundnet_model).is_file():
        return False
    deployed = file_sha256(cfg.lundnet_model)
    if deployed != table_model:
        raise ConfigError(f"twin config key 'lundnet_oof': {cfg.lundnet_oof} was written beside the LundNet of "
                          f"SHA-256 {table_model[:12]}..., not {cfg.lundnet_model} ({deployed[:12]}...): pass the "
                          "model and the table of one `svjscout train lundnet --crossfit-k K` run")
    return True


def _group_moments(features: np.ndarray, weight: np.ndarray, group: np.ndarray, n_groups: int) -> dict[int, np.ndarray]:
    """Per group g (of ``n_groups``, ``group`` in 0..n_groups-1): the (6, F) moments [sum w, sum w f,
    sum w f^2, count, sum f, sum f^2] of the rows in it (present groups only), with one
    ``bincount`` per moment and feature: O(rows x features), not O(rows x groups), so the 33
    signal points of the design's grid cost no more than 2."""
    f = features.astype(np.float64)
    w = np.asarray(weight, dtype=np.float64)
    nf = f.shape[1]
    count = np.bincount(group, minlength=n_groups).astype(np.float64)
    wsum = np.bincount(group, w, minlength=n_groups)

    def per_feature(values: np.ndarray) -> np.ndarray:  # (n_groups, F)
        return np.stack([np.bincount(group, values[:, j], minlength=n_groups) for j in range(nf)], axis=1)

    wf, wf2 = per_feature(w[:, None] * f), per_feature(w[:, None] * f ** 2)
    sf, sf2 = per_feature(f), per_feature(f ** 2)
    ones = np.ones(nf)
    return {g: np.stack([wsum[g] * ones, wf[g], wf2[g], count[g] * ones, sf[g], sf2[g]])
            for g in range(n_groups) if count[g] > 0}


class _TwinStream:
    """The skim streamed for the twin (models/training/data.py): one scan for the weights, the
    standardisation, the counters and the held-out reservoirs (``val``; ``select`` and ``test`` =
    the final subset with the 4-way split, ``test`` and an empty ``select`` with the 3-way one;
    with ``lundnet_oof`` the train and val rows take the out-of-fold LundNet scores), then per-epoch buffers of training
    events from which the minibatches are drawn (uniformly with replacement inside a buffer,
    buffers chosen by systematic sampling: unbiased, see the data module)."""

    def __init__(self, paths: Sequence[str | Path], cfg: TwinTrainConfig, device):
        self.cfg, self.device = cfg, device
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.wp_gen = torch.Generator().manual_seed(cfg.seed + 17)  # the closure working points per step
        self.source = _source(paths)
        self.cuts = cfg.cuts()
        self.weights = _class_weights(cfg.signal_to_background, cfg.balance_signal_points)
        self.kept: list[int] = []
        keep_cols = [f.name for f in fields(SkimData)]
        res_train = Reservoir(max(cfg.val_max_events, cfg.batch_size), cfg.seed + 11)
        res_val = Reservoir(cfg.val_max_events, cfg.seed + 12)
        res_test = Reservoir(cfg.test_max_events, cfg.seed + 13)
        res_select = Reservoir(cfg.test_max_events, cfg.seed + 14)
        # the quoted subset: FINAL of the 4-way split, TEST of the 3-way one (splits.py)
        quoted = splits.FINAL if cfg.four_way else splits.TEST
        self._oof_table: dict[str, np.ndarray] | None = None
        self._oof_cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.n_oof = self.n_oof_unseen = 0
        self._oof_same_model = False  # the table is shown to belong to the model the twin scores with
        if cfg.lundnet_oof:
            self._oof_table = read_oof_table(cfg.lundnet_oof)
            self._oof_same_model = _check_oof_model(cfg, oof_table_model(cfg.lundnet_oof))
        self.n_skim = self.n_pass = self.n_train_constraints = 0
        self.n_signal = self.n_background = 0
        self.datasets: set[str] = set()
        points: set[tuple[float, float]] = set()
        moments: dict[Any, np.ndarray] = {}  # group -> [sum w, sum w f, sum w f^2, count, sum f, sum f^2]
        for rg in self.source.row_groups:
            d, ana, code, train = self._rows(rg)
            self.kept.append(int(train.sum()))
            self.n_skim += len(d)
            self.n_pass += int(ana.sum())
            self.n_train_constraints += int((train & ana).sum())
            self.datasets |= {str(s) for s in d.dataset}
            points |= set(_signal_points(d))
            dt = d.take(np.flatnonzero(train))
            self.n_signal += int((dt.label == 1).sum())
            self.n_background += int((dt.label == 0).sum())
            self.weights.add(dt.label, dt.weight, _points(dt), str(self.source.path(rg)), dt.dataset)
            sig = dt.label == 1
            keys, inv = _keys(_points(dt)[sig]) if sig.any() else ([], np.zeros(0, int))
            group = np.zeros(len(dt), int)  # 0: background, 1 + i: signal point keys[i]
            group[sig] = inv + 1
            for g, add in _group_moments(dt.features, dt.weight, group, len(keys) + 1).items():
                key = "background" if g == 0 else keys[g - 1]
                moments[key] = moments.get(key, 0) + add
            rows = np.arange(rg.start, rg.start + rg.rows)
            for res, sel in ((res_train, train), (res_val, (code == splits.VAL) & ana),
                             (res_test, (code == quoted) & ana), (res_select, (code == splits.SELECT) & ana)):
                res.add({c: getattr(d, c)[sel] for c in keep_cols} | {"ana": ana[sel]}, rows[sel])
        self.points = sorted(points)
        self.n_train = sum(self.kept)
        self.mean_weight = self._standardisation(moments)
        self.train_sample, self.ana_sample = self._take(res_train, keep_cols)
        self.val, _ = self._take(res_val, keep_cols)
        self.test, _ = self._take(res_test, keep_cols)  # the quoted subset: final (4-way) or test (3-way)
        self.select, _ = self._take(res_select, keep_cols)  # the working-point selection subset (4-way; else empty)

    @staticmethod
    def _take(res, keep_cols) -> tuple[SkimData, np.ndarray]:
        out = res.result([*keep_cols, "ana"])
        if not out:
            empty = SkimData(features=np.zeros((0, len(EVENT_FEATURES)), np.float32), **{
                c: np.zeros(0) for c in ("mt", "deta", "weight", "label", "mzprime", "rinv")},
                dataset=np.zeros(0, object), event=np.zeros(0, np.uint64))
            return empty, np.zeros(0, bool)
        return SkimData(**{c: out[c] for c in keep_cols}), out["ana"].astype(bool)

    def _rows(self, rg) -> tuple[SkimData, np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.cfg
        d = _read_rows(self.source, rg, cfg.lundnet_model, cfg.lundnet_batch)
        code = split_codes(d, cfg.split, cfg.event_split_seed)
        if self._oof_table is not None:
            self._use_oof(d, code, rg)
        ana = analysis_mask(d, self.cuts)
        train = (code == splits.TRAIN) & (ana if cfg.bce_selection == "analysis" else True)
        return d, ana, code, train

    @staticmethod
    def _oof_rows(code: np.ndarray) -> np.ndarray:
        """The events that take out-of-fold LundNet scores: train and val (select/final/test keep
        the deployed model's)."""
        return (code == splits.TRAIN) | (code == splits.VAL)

    def _use_oof(self, d: SkimData, code: np.ndarray, rg) -> None:
        """Replace ``lundnet_j0/j1`` of the train and val rows of ``d`` (one row group) by the
        out-of-fold scores of ``lundnet_oof`` (:func:`lookup_oof`; looked up once per row group,
        the streamed epochs reuse them)."""
        key = (str(self.source.path(rg)), int(rg.start))
        if key not in self._oof_cache:
            rows = np.flatnonzero(self._oof_rows(code))
            what = f"{key[0]} (twin config key 'lundnet_oof': {self.cfg.lundnet_oof})"
            j0, j1, found = lookup_oof(self._oof_table, d.dataset[rows], d.run[rows], d.lumi[rows], d.event[rows],
                                       what=what)
            if not found.all() and not self._oof_same_model:
                raise InputFileError(f"{what}: {int((~found).sum())} train/val event(s) come from files outside "
                                     "LundNet's skim, and the table does not name the LundNet it belongs to (a "
                                     "table written before the model stamp) or no LundNet model is given "
                                     "(--lundnet): it cannot be told that the deployed model never saw them; pass "
                                     "the model and the table of one `svjscout train lundnet --crossfit-k K` run")
            # events outside LundNet's skim (found False) keep the deployed model's scores: the table is
            # that model's (_check_oof_model) and holds every event of its skim, so it never saw them
            self.n_oof += int(found.sum())
            self.n_oof_unseen += int((~found).sum())
            self._oof_cache[key] = (rows[found], j0[found], j1[found])
        rows, j0, j1 = self._oof_cache[key]
        d.features[rows, _J0] = j0
        d.features[rows, _J1] = j1

    def _standardisation(self, moments: Mapping[Any, np.ndarray]) -> float:
        """Weighted mean and std of the training features with the training weights (from the
        per-group moments and the class factors); returns the mean training weight."""
        f_b, f_s, per = self.weights.factors()
        s0 = s1 = s2 = 0.0
        for key, m in moments.items():
            if key == "background":
                a, b = f_b, 0.0
            else:
                mult, off = per.get(key, (0.0, 0.0))
                a, b = f_s * mult, f_s * off
            s0 = s0 + a * m[0] + b * m[3]
            s1 = s1 + a * m[1] + b * m[4]
            s2 = s2 + a * m[2] + b * m[5]
        if not np.any(s0 > 0):
            self.feature_mean = np.zeros(len(EVENT_FEATURES))
            self.feature_std = np.ones(len(EVENT_FEATURES))
            return 1.0
        mean = s1 / s0
        std = np.sqrt(np.maximum(s2 / s0 - mean ** 2, 0.0))
        self.feature_mean, self.feature_std = mean, np.where(std > 0, std, 1.0)
        return float(s0[0] / max(self.n_train, 1))

    def buffer(self, rgs: Sequence[int]) -> _Tensors:
        """Training events of some row groups, with training weights, on the device."""
        parts, anas = [], []
        for i in sorted(rgs):  # file order inside a buffer
            d, ana, _, train = self._rows(self.source.row_groups[i])
            parts.append(d.take(np.flatnonzero(train)))
            anas.append(ana[train])
        d = concat(parts)
        w = self.weights.apply(d.label, d.weight, _points(d))
        return _Tensors(d, w, np.concatenate(anas), device=self.device)

    def plan(self, epoch: int) -> tuple[list[list[int]], np.ndarray]:
        """Buffers (row groups) and the buffer of every minibatch of an epoch (seeded by seed, epoch)."""
        g = rng(self.cfg.seed, 7, epoch)
        bufs = plan_buffers(self.kept, self.cfg.buffer_events, g)
        sizes = [sum(self.kept[i] for i in b) for b in bufs]
        return bufs, allocate_batches(sizes, self.cfg.batches_per_epoch, g)

    def state_dict(self) -> dict[str, Any]:
        """The minibatch and working-point generators' states (saved in the training state)."""
        return {"generator": self.gen.get_state(), "wp_generator": self.wp_gen.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.gen.set_state(state["generator"])
        if "wp_generator" in state:  # training states written before issue 29 have none
            self.wp_gen.set_state(state["wp_generator"])

    def steps(self, epoch: int, start: int):
        """(step, (tensors, rows, working points)) for the minibatches ``start``.. of an epoch: rows
        drawn with one generator seeded by ``seed`` (its state is in the training state, so a
        resumed run draws what the interrupted one would have), inside the buffer of the step; the
        closure working points of the step (:func:`~.losses.closure_wps_for_step`) from a second one."""
        bufs, which = self.plan(epoch)
        loaded, t = None, None
        for j in range(start, self.cfg.batches_per_epoch):
            if which[j] != loaded:
                loaded, t = which[j], None
                t = self.buffer(bufs[which[j]])
            idx = torch.randint(t.n, (self.cfg.batch_size,), generator=self.gen)
            yield j, (t, idx.to(self.device), closure_wps_for_step(self.cfg, self.wp_gen))
