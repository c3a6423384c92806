"""Cross-fitted LundNet scores for the twin: k folds by parent, out-of-fold scores (issue 29, item 5).

The twin takes LundNet's jet scores as inputs. Scored with the deployed LundNet, the twin's
*training* events are events LundNet was trained on: their scores are sharper than on unseen
events, so the twin learns on inputs distributed differently from those it meets at test time
and in the analysis. Cross-fitting removes that:

* every event gets a fold ``j = floor(k * u')`` from a hash of its parent key
  (:func:`svjscout.core.splits.fold_of`: the copies of one generated event share the fold; the
  fold does not depend on file or row order and is independent of the train/val/test subsets);
* model ``j`` is trained on the fitting jets (``fit_mask``, e.g. LundNet's training subset)
  outside fold ``j``; it scores every jet *in* fold ``j``. Every jet's out-of-fold score thus
  comes from a model that never saw it (nor any copy of its parent);
* the deployed LundNet (the ONNX file the processor runs) stays one model, the full one trained
  by :func:`~svjscout.models.lundnet_training.train.train_lundnet`. The twin trains (and
  early-stops) on out-of-fold scores, whose distribution is that of the full model's scores on
  unseen events (up to the (k-1)/k training size); the twin's select/final events are unseen
  by the full model (the 4-way split nests in LundNet's 3-way one,
  :func:`svjscout.core.splits.check_nested4`), so they can be scored by the deployed model, as
  the analysis does.

The fold models are trained in memory for a fixed number of epochs (:class:`CrossFitConfig`);
:func:`crossfit_skim` reads a skim (every detector copy), and :func:`write_oof_table` writes the
scores keyed by (dataset, run, luminosityBlock, parent, event) for the twin's loader.
Documentation: ``docs/training_data.md``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import torch

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.core.features import LUND_FEATURES
from svjscout.models.lundnet import SMALL, LundNet, LundNetConfig
from svjscout.models.lundnet_training.data import load_skim, training_weights

log = logging.getLogger("svjscout.models.train_lundnet")

__all__ = ["CrossFitConfig", "CrossFitResult", "fit_lundnet_arrays", "crossfit_lundnet", "crossfit_skim",
           "write_oof_table", "read_oof_table", "lookup_oof", "oof_table_model", "OOF_MODEL_KEY"]


@dataclass
class CrossFitConfig:
    """Settings of the k-fold cross-fit (:func:`crossfit_lundnet`).

    Attributes:
        model: the network configuration (``None``: :data:`svjscout.models.lundnet.SMALL`).
        k: number of folds (>= 2).
        epochs: epochs per fold model (fixed: the fold models are not early-stopped; use the
            full model's best epoch).
        batch_size: jets per optimisation step.
        lr: Adam learning rate.
        seed: seed of the folds (hash of the parent key, :func:`svjscout.core.splits.fold_of`) and
            of the fold models' initialisation and batch order (fold ``j`` uses ``seed + j``).
        threads: torch CPU threads.
        device: ``cpu`` | ``cuda[:n]``.
    """

    model: Any = None
    k: int = 5
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = splits.DEFAULT_SEED
    threads: int = 2
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = SMALL
        if not isinstance(self.model, LundNetConfig):
            raise ConfigError(f"crossfit.model is {type(self.model).__name__}, expected a LundNetConfig")
        if int(self.k) < 2:
            raise ConfigError(f"crossfit.k is {self.k}, expected >= 2")
        for key in ("epochs", "batch_size", "threads"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"crossfit.{key} is {getattr(self, key)}, expected >= 1")
        if not float(self.lr) > 0:
            raise ConfigError(f"crossfit.lr is {self.lr}, expected > 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        out["model"] = self.model.to_dict()
        return out


@dataclass
class CrossFitResult:
    """Out-of-fold scores and what produced them.

    Attributes:
        scores: float32 (n_jets,), each jet's score from the model of its fold.
        fold: int16 (n_jets,), the jet's fold.
        train_index: per fold ``j``, the indices of the jets model ``j`` was trained on
            (``fit_mask & fold != j``).
        models: the k fold models (evaluation mode, on the CPU).
        config: the settings.
    """

    scores: np.ndarray
    fold: np.ndarray
    train_index: list[np.ndarray]
    models: list[LundNet] = field(repr=False)
    config: CrossFitConfig


def fit_lundnet_arrays(lund: np.ndarray, mask: np.ndarray, label: np.ndarray, weight: np.ndarray,
                       dataset: np.ndarray, config: CrossFitConfig, seed: int) -> LundNet:
    """Train one LundNet in memory for ``config.epochs`` epochs on the given jets.

    Same loss and weights as :func:`~svjscout.models.lundnet_training.train.train_lundnet`:
    the class-balanced weights of :func:`~svjscout.models.lundnet_training.data.training_weights`,
    a weighted BCE on the logits normalised by the batch sum of weights, Adam. The feature
    normalisation is set from these jets.

    Args:
        lund: float32 (n, L, F) node features in ``config.model.features`` order; mask (n, L).
        label, weight, dataset: (n,) per jet.
        config: settings; seed: the initialisation / batch-order seed.

    Returns:
        the trained model in evaluation mode, on the CPU.
    """
    if len(np.unique(label)) != 2:
        raise ConfigError(f"crossfit: a fold's training jets have labels {sorted(set(label.tolist()))}, "
                          "need both signal and background (more events or fewer folds, key 'crossfit.k')")
    device = torch.device(config.device)
    torch.manual_seed(int(seed))
    model = LundNet(config.model)
    model.set_normalisation(lund, mask)
    model.to(device).train()
    w = training_weights(label, weight, dataset)
    x_all = torch.as_tensor(np.ascontiguousarray(lund, dtype=np.float32))
    m_all = torch.as_tensor(np.asarray(mask, dtype=np.float32))
    y_all = torch.as_tensor(np.asarray(label, dtype=np.float32))
    w_all = torch.as_tensor(np.asarray(w, dtype=np.float32))
    opt = torch.optim.Adam(model.parameters(), lr=float(config.lr))
    gen = torch.Generator().manual_seed(int(seed))
    n, b = len(x_all), int(config.batch_size)
    for _ in range(int(config.epochs)):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, b):
            idx = perm[i:i + b]
            if len(idx) < 2:  # batch norm needs two jets
                continue
            mb = m_all[idx]
            length = max(int(mb.sum(dim=1).max()), 1)
            logits = model(x_all[idx, :length].to(device), mb[:, :length].to(device))
            wb = w_all[idx].to(device)
            per = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_all[idx].to(device), reduction="none")
            loss = (per * wb).sum() / wb.sum().clamp(min=1e-12)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.to("cpu").eval()


def crossfit_lundnet(lund: np.ndarray, mask: np.ndarray, label: np.ndarray, weight: np.ndarray,
                     dataset: np.ndarray, fold: np.ndarray, config: CrossFitConfig | None = None,
                     fit_mask: np.ndarray | None = None) -> CrossFitResult:
    """k fold models, each trained without its fold; every jet scored by the model of its fold.

    Args:
        lund, mask, label, weight, dataset: the jets; ``lund`` (n, L, F) with all
            :data:`~svjscout.core.features.LUND_FEATURES` or the model's features in order.
        fold: (n_jets,) fold of every jet in ``0..k-1`` (:func:`svjscout.core.splits.fold_of` of the
            jet's event: the jets and copies of one parent share it).
        config: settings (``config.k`` folds).
        fit_mask: (n_jets,) bool, jets a fold model may train on (e.g. LundNet's training
            subset); ``None``: all.

    Returns:
        :class:`CrossFitResult`.
    """
    config = config or CrossFitConfig()
    fold = np.asarray(fold).astype(np.int16).reshape(-1)
    n = len(fold)
    if not (len(lund) == len(mask) == len(label) == len(weight) == len(dataset) == n):
        raise ConfigError(f"crossfit: lengths lund {len(lund)}, mask {len(mask)}, label {len(label)}, "
                          f"weight {len(weight)}, dataset {len(dataset)}, fold {n} differ")
    if n and (fold.min() < 0 or fold.max() >= config.k):
        raise ConfigError(f"crossfit: folds in [{fold.min()}, {fold.max()}], expected 0..{config.k - 1} "
                          "(key 'crossfit.k')")
    fit = np.ones(n, bool) if fit_mask is None else np.asarray(fit_mask, bool).reshape(-1)
    if len(fit) != n:
        raise ConfigError(f"crossfit: fit_mask has {len(fit)} jets, expected {n}")
    features = tuple(config.model.features)
    if lund.shape[-1] == len(features):
        x = lund  # already in the model's feature order
    elif lund.shape[-1] == len(LUND_FEATURES):
        x = lund[..., [LUND_FEATURES.index(f) for f in features]]
    else:
        raise ConfigError(f"crossfit: jets have {lund.shape[-1]} features, expected {len(features)} "
                          f"({features}) or all {len(LUND_FEATURES)} of LUND_FEATURES")
    scores = np.full(n, np.nan, np.float32)
    models, train_index = [], []
    threads_before = torch.get_num_threads()
    det_before = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(int(config.threads))
    torch.use_deterministic_algorithms(True)
    try:
        for j in range(int(config.k)):
            tr = np.flatnonzero(fit & (fold != j))
            model = fit_lundnet_arrays(x[tr], mask[tr], label[tr], weight[tr], dataset[tr], config,
                                       int(config.seed) + j)
            held = np.flatnonzero(fold == j)
            if len(held):
                scores[held] = model.predict(x[held], mask[held])
            log.info("cross-fit fold %d/%d: trained on %d jets, scored %d", j + 1, config.k, len(tr), len(held))
            models.append(model)
            train_index.append(tr)
    finally:
        torch.use_deterministic_algorithms(det_before)
        torch.set_num_threads(threads_before)
    return CrossFitResult(scores, fold, train_index, models, config)


def crossfit_skim(paths: Sequence[str | Path], config: CrossFitConfig | None = None,
                  split_fractions: Sequence[float] = splits.DEFAULT_FRACTIONS,
                  fit_subset: int | None = splits.TRAIN) -> tuple[dict[str, np.ndarray], CrossFitResult]:
    """Cross-fit on a skim: every detector copy scored out of fold, folds by parent.

    The fold models train on the jets of ``fit_subset`` (default LundNet's training subset of the
    3-way split with ``config.seed`` and ``split_fractions``; ``None``: every jet). Every copy is
    kept (weights as written: the copies of a parent sum to its weight).

    Returns:
        (per-event columns ``dataset, run, luminosityBlock, parent, event, lundnet_j0, lundnet_j1,
        lundnet_fold`` (:func:`write_oof_table`), the :class:`CrossFitResult` per jet).
    """
    config = config or CrossFitConfig()
    train, val, test = (float(f) for f in split_fractions)
    jets = load_skim(paths, config.model.max_len, seed=config.seed, val_fraction=val, test_fraction=test,
                     one_copy_per_parent=False)
    ev = jets.keys
    fold_ev = splits.fold_of(ev["dataset"], ev["run"], ev["luminosityBlock"], ev["parent"], config.k, config.seed)
    fold = np.repeat(fold_ev, 2)
    fit = None if fit_subset is None else jets.split == int(fit_subset)
    res = crossfit_lundnet(jets.lund, jets.mask, jets.label, jets.weight, jets.dataset, fold, config, fit)
    table = {**{k: ev[k] for k in ("dataset", "run", "luminosityBlock", "parent", "event")},
             "lundnet_j0": res.scores[0::2], "lundnet_j1": res.scores[1::2], "lundnet_fold": fold_ev}
    return table, res


#: Parquet key-value metadata of the table: the SHA-256 of the deployed LundNet (the full model
#: trained beside the fold models on the same skim), so that the twin can tell that the table and the
#: model it deploys belong together (:func:`oof_table_model`).
OOF_MODEL_KEY = "svjscout.lundnet_sha256"


def write_oof_table(table: dict[str, np.ndarray], path: str | Path, model_sha256: str | None = None) -> Path:
    """Write :func:`crossfit_skim`'s per-event table as parquet (one row per event); ``model_sha256``
    (the deployed LundNet's :func:`~svjscout.core.modelmeta.file_sha256`) goes to its metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {k: (ak.Array([str(s) for s in v]) if k == "dataset" else np.ascontiguousarray(v)) for k, v in table.items()}
    arrow = ak.to_arrow_table(ak.zip(cols, depth_limit=1))
    if model_sha256:
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), OOF_MODEL_KEY: model_sha256})
    pq.write_table(arrow, str(path))
    return path


def oof_table_model(path: str | Path) -> str | None:
    """The SHA-256 of the LundNet the table was written with (None: a table without it)."""
    try:
        meta = pq.read_schema(str(path)).metadata or {}
    except Exception as err:  # pyarrow raises many types
        raise InputFileError(f"{path}: cannot read the out-of-fold LundNet table ({err})") from err
    value = meta.get(OOF_MODEL_KEY.encode())
    return value.decode() if value else None


def read_oof_table(path: str | Path) -> dict[str, np.ndarray]:
    """Read a table written by :func:`write_oof_table` (dataset as str objects, keys uint64)."""
    path = Path(path)
    try:
        arr = ak.from_parquet(str(path))
    except Exception as err:  # pyarrow raises many types
        raise InputFileError(f"{path}: cannot read the out-of-fold LundNet table ({err})") from err
    need = ("dataset", "run", "luminosityBlock", "event", "lundnet_j0", "lundnet_j1")
    missing = [c for c in need if c not in arr.fields]
    if missing:
        raise InputFileError(f"{path}: out-of-fold table lacks column(s) {missing}")
    out = {k: np.asarray(ak.to_numpy(arr[k])) for k in arr.fields if k != "dataset"}
    out["dataset"] = np.asarray(ak.to_list(arr["dataset"]), dtype=object)
    return out


def lookup_oof(table: dict[str, np.ndarray], dataset: np.ndarray, run, lumi, event,
               what: str = "skim") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold (J0, J1) scores of events identified by (dataset, run, luminosityBlock, event).

    ``run``/``lumi`` may be None (0, as in the split key). For the twin's loader: replace its
    ``lundnet_j0``/``lundnet_j1`` by these on the events it trains and early-stops on.

    The table holds every event of LundNet's skim. An event of a (dataset, run, luminosityBlock)
    that the table does not hold at all comes from a file outside that skim (e.g. the twin's
    further QCD files): LundNet never saw it, so the deployed model's score is already an unseen
    one; it is returned as not found (``found`` False, scores NaN) for the caller to keep. An event
    missing from a block the table does hold means the two skims disagree: an error.

    Returns:
        ``(j0, j1, found)``.

    Raises:
        InputFileError: an event of a block the table holds is not in it (``what`` names the
        events' source).
    """
    def key(ds, r, lb, ev=None):
        n = len(ds)
        r = np.zeros(n, np.uint64) if r is None else np.asarray(r).astype(np.uint64)
        lb = np.zeros(n, np.uint64) if lb is None else np.asarray(lb).astype(np.uint64)
        ds = np.asarray(ds).astype(str)
        if ev is None:
            return np.array([f"{d}|{a}|{b}" for d, a, b in zip(ds, r, lb)], dtype=object)
        return np.array([f"{d}|{a}|{b}|{e}" for d, a, b, e in zip(ds, r, lb, np.asarray(ev).astype(np.uint64))],
                        dtype=object)

    def find(tkey, qkey):
        order = np.argsort(tkey)
        pos = np.searchsorted(tkey[order], qkey)
        pos = np.minimum(pos, len(order) - 1) if len(order) else pos
        found = (tkey[order][pos] == qkey) if len(order) else np.zeros(len(qkey), bool)
        return found, (order[pos] if len(order) else pos)

    tkey = key(table["dataset"], table["run"], table["luminosityBlock"], table["event"])
    qkey = key(dataset, run, lumi, event)
    found, rows = find(tkey, qkey)
    if not found.all():
        block_t = np.unique(key(table["dataset"], table["run"], table["luminosityBlock"]))
        block_q = key(dataset, run, lumi)
        held, _ = find(block_t, block_q)
        bad = ~found & held
        if bad.any():
            raise InputFileError(f"{what}: {int(bad.sum())} event(s) not in the out-of-fold LundNet table, "
                                 f"though their (dataset, run, luminosityBlock) is, e.g. {qkey[bad][:3].tolist()} "
                                 "(dataset|run|lumi|event): the table was not made from the skim these events "
                                 "come from")
    j0 = np.full(len(qkey), np.nan, np.float32)
    j1 = np.full(len(qkey), np.nan, np.float32)
    j0[found] = np.asarray(table["lundnet_j0"])[rows[found]]
    j1[found] = np.asarray(table["lundnet_j1"])[rows[found]]
    return j0, j1, found
