"""The twin's skim columns: :class:`SkimData`, reading row groups (computing missing LundNet
scores), the split codes, the analysis preselection mask, the class weights and the torch
views of a split (:class:`_Tensors`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import onnxruntime as ort
import torch

from svjscout.core import splits
from svjscout.core.exceptions import InputFileError
from svjscout.core.features import EVENT_FEATURES
from svjscout.models.training.data import KEY_COLUMNS, ClassWeights, SkimSource, key_columns

log = logging.getLogger("svjscout.models.train_twin")  # the trainer's logger name, as before the split

_SCALAR_COLUMNS = ("mt", "deta", "weight", "label", "mzprime", "rinv", "event", "dataset")


@dataclass
class SkimData:
    """Columns of the skim needed for training, as numpy arrays of length N.

    Attributes:
        features: (N, 12) float32 in :data:`EVENT_FEATURES` order (GeV, rad, dimensionless).
        mt: (N,) M_T in GeV.  deta: (N,) deta(J0, J1).  weight: (N,) physics weight.
        label: (N,) 1 signal / 0 background.  mzprime, rinv: (N,) signal point (NaN for background).
        dataset: (N,) str.  event: (N,) uint64.
        run, lumi, parent: (N,) uint64 split key (:mod:`svjscout.core.splits`); None: 0, 0 and
            ``event`` (skims without these columns).
    """

    features: np.ndarray
    mt: np.ndarray
    deta: np.ndarray
    weight: np.ndarray
    label: np.ndarray
    mzprime: np.ndarray
    rinv: np.ndarray
    dataset: np.ndarray
    event: np.ndarray
    run: np.ndarray | None = None
    lumi: np.ndarray | None = None
    parent: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.label)
        self.run = np.zeros(n, np.uint64) if self.run is None else np.asarray(self.run, np.uint64)
        self.lumi = np.zeros(n, np.uint64) if self.lumi is None else np.asarray(self.lumi, np.uint64)
        self.parent = np.asarray(self.event if self.parent is None else self.parent, np.uint64)

    def __len__(self) -> int:
        return len(self.label)

    def take(self, idx: np.ndarray) -> SkimData:
        """Rows ``idx``."""
        return SkimData(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def _to_numpy_padded(arr, mask_arr, length: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Awkward (N, var|L, 5) Lund nodes and (N, var|L) masks -> (N, L, 5) and (N, L) float32."""
    counts = np.asarray(ak.num(arr, axis=1))
    n = len(counts)
    lmax = int(counts.max()) if n else 0
    big_l = max(lmax, 1) if length is None else int(length)
    flat = np.asarray(ak.to_numpy(ak.flatten(arr, axis=1)), dtype=np.float32).reshape(-1, 5)
    mflat = np.asarray(ak.to_numpy(ak.flatten(mask_arr, axis=1)), dtype=np.float32).reshape(-1)
    rows = np.repeat(np.arange(n), counts)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = cols < big_l
    out = np.zeros((n, big_l, 5), dtype=np.float32)
    mask = np.zeros((n, big_l), dtype=np.float32)
    out[rows[keep], cols[keep]] = flat[keep]
    mask[rows[keep], cols[keep]] = mflat[keep]
    return out, mask


def compute_lundnet_scores(lund, lund_mask, model_path: str | Path, batch: int = 4096) -> np.ndarray:
    """LundNet scores with onnxruntime.

    Args:
        lund: awkward or numpy (N, L, 5) Lund nodes (ln kt, ln Delta, ln z, ln m, psi).
        lund_mask: (N, L) bool / float validity mask.
        model_path: LundNet ONNX file (inputs ``lund`` (N, L, 5), ``mask`` (N, L); output ``score``).
        batch: jets per onnxruntime call.

    Returns:
        (N,) float32 scores.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise InputFileError(f"{model_path}: LundNet ONNX model not found (config key 'lundnet_model')")
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    if set(inputs) != {"lund", "mask"}:
        raise InputFileError(f"{model_path}: LundNet inputs are {sorted(inputs)}, expected ['lund', 'mask']")
    static_l = inputs["lund"].shape[1] if isinstance(inputs["lund"].shape[1], int) else None
    x, m = _to_numpy_padded(lund, lund_mask, static_l)
    n = len(x)
    scores = np.empty(n, dtype=np.float32)
    for s in range(0, n, batch):
        out = sess.run(["score"], {"lund": x[s:s + batch], "mask": m[s:s + batch]})[0]
        scores[s:s + batch] = np.asarray(out, dtype=np.float32).reshape(-1)
    return scores


def _source(paths: Sequence[str | Path]):
    if not paths:
        raise InputFileError("no skim files given")
    needed = [c for c in (*EVENT_FEATURES, *_SCALAR_COLUMNS) if not c.startswith("lundnet_")]
    return SkimSource(paths, needed)


def _read_rows(source, rg, lundnet_model: str | None, batch: int) -> SkimData:
    """One row group of the skim as :class:`SkimData` (computing missing LundNet scores)."""
    path = source.path(rg)
    needed = [c for c in (*EVENT_FEATURES, *_SCALAR_COLUMNS) if not c.startswith("lundnet_")]
    # KEY_COLUMNS: optional columns of the split key (absent: run/lumi 0, parent = event; svjscout/core/splits.py)
    cols = source.read(rg, [*needed, "lundnet_j0", "lundnet_j1", *KEY_COLUMNS])
    n = len(cols["label"])
    for jet in ("j0", "j1"):
        col = f"lundnet_{jet}"
        have = np.asarray(cols.get(col, np.full(n, np.nan)), dtype=np.float64)
        todo = ~np.isfinite(have)
        if todo.any():
            if lundnet_model is None:
                why = "missing" if col not in cols else f"NaN in {int(todo.sum())} rows"
                raise InputFileError(f"{path}: column '{col}' is {why}; pass a LundNet ONNX model "
                                     f"(config key 'lundnet_model', option --lundnet) to compute it")
            for c in (f"lund_{jet}", f"lund_{jet}_mask"):
                if not source.has(rg, c):
                    raise InputFileError(f"{path}: column '{c}' missing, needed to compute '{col}'")
            lund = source.read(rg, [f"lund_{jet}", f"lund_{jet}_mask"])
            idx = np.flatnonzero(todo)
            have = have.copy()
            have[idx] = compute_lundnet_scores(lund[f"lund_{jet}"][idx], lund[f"lund_{jet}_mask"][idx],
                                               lundnet_model, batch)
            log.info("%s: computed %s for %d events with %s", path, col, len(idx), lundnet_model)
        cols[col] = have
    features = np.stack([np.asarray(cols[c], dtype=np.float64) for c in EVENT_FEATURES], axis=1).astype(np.float32)
    for j, c in enumerate(EVENT_FEATURES):
        bad = ~np.isfinite(features[:, j])
        if bad.any():
            raise InputFileError(f"{[str(path)]}: column '{c}' has {int(bad.sum())} non-finite values")
    scal = {c: np.asarray(cols[c], dtype=np.float64) for c in ("mt", "deta", "weight", "label", "mzprime", "rinv")}
    for c in ("mt", "deta", "weight", "label"):
        bad = ~np.isfinite(scal[c])
        if bad.any():
            raise InputFileError(f"{[str(path)]}: column '{c}' has {int(bad.sum())} non-finite values")
    if not np.all((scal["label"] == 0) | (scal["label"] == 1)):
        raise InputFileError(f"{[str(path)]}: column 'label' has values other than 0 and 1")
    run, lumi, parent = key_columns(cols)
    return SkimData(features=features, mt=scal["mt"], deta=scal["deta"], weight=scal["weight"],
                    label=scal["label"].astype(np.float32), mzprime=scal["mzprime"], rinv=scal["rinv"],
                    dataset=np.asarray(cols["dataset"], dtype=object),
                    event=np.asarray(cols["event"]).astype(np.uint64),
                    run=run, lumi=lumi, parent=parent)


def concat(parts: Sequence[SkimData]) -> SkimData:
    """Rows of several :class:`SkimData`, in order."""
    return SkimData(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(SkimData)})


def load_skim(paths: Sequence[str | Path], lundnet_model: str | None = None, batch: int = 4096) -> SkimData:
    """Read and concatenate skim parquet files into memory (computing missing LundNet scores).

    Training streams the skim instead (:class:`_TwinStream`); this is for tests and small samples.

    Args:
        paths: parquet files written by the processors.
        lundnet_model: LundNet ONNX file, used where ``lundnet_j0/j1`` are missing or NaN.
        batch: jets per onnxruntime call.

    Returns:
        :class:`SkimData`. Raises :class:`InputFileError` naming file and column on bad input.
    """
    source = _source(paths)
    parts = [_read_rows(source, rg, lundnet_model, batch) for rg in source.row_groups]
    if not parts:
        raise InputFileError(f"{[str(p) for p in paths]}: the skim files hold no row")
    return concat(parts)


def split_codes(d: SkimData, fractions: Sequence[float] = splits.DEFAULT_FRACTIONS,
                seed: int = splits.DEFAULT_SEED) -> np.ndarray:
    """Per-event subset codes: 3 fractions (train, val, test) give :data:`splits.TRAIN`/``VAL``/``TEST``
    (the split LundNet uses); 4 (train, val, select, final) give ``TRAIN``/``VAL``/``SELECT``/``FINAL``
    (:func:`splits.split4_of`, the same ``u``, nested in LundNet's)."""
    if len(fractions) == 4:
        return splits.split4_of(d.dataset, d.run, d.lumi, d.parent, seed, fractions)
    return splits.split_of(d.dataset, d.run, d.lumi, d.parent, seed, fractions)


def analysis_mask(d: SkimData, cuts) -> np.ndarray:
    """Events passing the analysis preselection ``cuts`` (a :class:`~svjscout.processors.selection.Cuts`),
    from the skim's columns: R_T > rt_min, M_T > mt_min, dphi_min < dphi_min_max, |deta| < deta_max
    (the cuts of processors/selection.py ``preselection`` that a training skim may loosen; the
    trigger and jet cuts are applied when the skim is written)."""
    f = {name: d.features[:, i] for i, name in enumerate(EVENT_FEATURES)}
    return ((f["rt"] > cuts.rt_min) & (d.mt > cuts.mt_min) & (f["dphi_min"] < cuts.dphi_min_max)
            & (np.abs(d.deta) < cuts.deta_max))


def _signal_points(d: SkimData) -> list[tuple[float, float]]:
    sig = d.label == 1
    pts = {(float(m), float(r)) for m, r in zip(d.mzprime[sig], d.rinv[sig])}
    return sorted(pts)


def _points(d: SkimData) -> np.ndarray:
    """(N, 2) signal-point keys (m_Z', r_inv)."""
    return np.stack([d.mzprime, d.rinv], axis=1)


def _class_weights(cfg_ratio: float, balance_points: bool):
    return ClassWeights(cfg_ratio, balance_points, empty_group="keep")


def training_weights(d: SkimData, ratio: float, balance_points: bool) -> np.ndarray:
    """Class-rescaled weights: sum(sig)/sum(bkg) = ``ratio`` and mean weight 1; (N,) float64.
    Negative weights are refused (:mod:`svjscout.models.weights`). Streamed training computes the
    same from sums over the stream (:class:`~svjscout.models.training.data.ClassWeights`)."""
    cw = _class_weights(ratio, balance_points)
    cw.add(d.label, d.weight, _points(d), "the twin skim", d.dataset)
    return cw.apply(d.label, d.weight, _points(d))


class _Tensors:
    """torch views of one split; ``ana``: the events that enter the constraints (analysis selection)."""

    def __init__(self, d: SkimData, w_train: np.ndarray, ana: np.ndarray | None = None, device: Any = "cpu"):
        def t(a: np.ndarray, dtype=np.float32) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)).to(device)

        self.f = t(d.features)
        self.label = t(d.label)
        self.w = t(w_train)
        self.w_phys = t(d.weight)
        self.mt = t(d.mt)
        self.deta = t(d.deta)
        self.ana = t(np.ones(len(d), bool) if ana is None else ana, bool)
        self.n = len(d)
