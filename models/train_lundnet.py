"""Training of LundNet on the parquet skim: data loading, split, weights, loop, evaluation, report.

Jets: J0 and J1 of every skim event; label 1 for signal events, 0 for background events.

* Split: train / validation / test by *event* (both jets of an event in the same subset),
  :mod:`svjscout.models.splits`: a hash of (seed, dataset, run, luminosityBlock, parent), the
  same split as the twin's (its test events are inside LundNet's test events); deterministic,
  independent of file paths, file order and row order; detector copies of one generated event
  stay together.
* Weights (per subset): background jets keep their physics weight (cross section), every
  signal point gets the same total weight, then both classes are scaled to the same sum
  (half the number of jets each). Negative physics weights are set to 0 for training.
* Loss: weighted binary cross entropy on the logit, normalised by the batch sum of weights.
  Adam (learning rate halved after 2 epochs without validation improvement), early stopping
  on the validation loss (best state restored).
* Evaluation on the test subset with the exported ONNX model: weighted ROC AUC per signal
  point vs each background process and vs all backgrounds, all signal vs all backgrounds, and
  two baselines (number of primary declusterings; jet mass = exp(ln_m) of the first node).

Outputs in ``out_dir``: ``lundnet.onnx`` (+ metadata), ``lundnet_checkpoint.pt``,
``report.md``, ``report.json``, ``roc.png``, ``scores.png``, ``loss.png``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from svjscout.exceptions import ConfigError, InputFileError
from svjscout.models import splits
from svjscout.models.splits import SPLIT_NAMES, TEST, TRAIN, VAL  # noqa: F401 - re-exported
from svjscout.processors.lund import LUND_FEATURES

log = logging.getLogger(__name__)

#: Columns of the skim read by the training.
SKIM_COLUMNS = ("lund_j0", "lund_j0_mask", "lund_j1", "lund_j1_mask", "weight", "dataset", "label", "event")
#: Optional columns of the split key (:mod:`svjscout.models.splits`).
SPLIT_KEY_COLUMNS = ("run", "luminosityBlock", "parent")


@dataclass
class TrainConfig:
    """Settings of :func:`train_lundnet`.

    Attributes:
        model: the network configuration (:data:`svjscout.models.lundnet.SMALL` by default).
        epochs: maximum number of epochs.
        batch_size: jets per optimisation step.
        lr: Adam learning rate (initial).
        patience: epochs without validation-loss improvement before stopping.
        lr_patience, lr_factor: the learning rate is multiplied by ``lr_factor`` after
            ``lr_patience`` epochs without validation-loss improvement (``lr_factor=1``: constant).
        seed: seed of the split, the initialisation and the batch order.
        device: ``auto`` (CUDA if available) | ``cpu`` | ``cuda[:n]`` (CUDA untested offline).
        threads: torch CPU threads.
        val_fraction, test_fraction: fractions of events in the validation / test subsets
            (defaults: :data:`svjscout.models.splits.DEFAULT_FRACTIONS`, shared with the twin).
        progress: show a rich progress bar (also off with ``SVJSCOUT_NO_PROGRESS=1``).
        command: the command line, recorded in the report.
        one_copy_per_parent: keep one detector copy per parent (:func:`load_skim`).
        buffer_jets: training jets held in memory at once (row groups streamed into shuffled
            buffers of this size; every jet visited once per epoch).
        checkpoint_every: also write the training state every this many steps (0: epoch ends).
        resume: continue from ``out_dir/train_state.pt`` if it exists.
    """

    model: Any = None
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    patience: int = 5
    lr_patience: int = 2
    lr_factor: float = 0.5
    seed: int = splits.DEFAULT_SEED
    device: str = "cpu"
    threads: int = 2
    val_fraction: float = splits.DEFAULT_FRACTIONS[1]
    test_fraction: float = splits.DEFAULT_FRACTIONS[2]
    progress: bool = True
    command: str | None = None
    one_copy_per_parent: bool = True
    buffer_jets: int = 500_000
    checkpoint_every: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        from svjscout.models.lundnet import SMALL

        if self.model is None:
            self.model = SMALL
        for key in ("epochs", "batch_size", "patience", "threads", "buffer_jets"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} is {getattr(self, key)}, expected >= 1")
        if not 0 < self.lr_factor <= 1:
            raise ConfigError(f"train.lr_factor is {self.lr_factor}, expected in (0, 1]")
        if not (0 < self.val_fraction and 0 < self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise ConfigError(
                f"train.val_fraction={self.val_fraction}, train.test_fraction={self.test_fraction}: "
                "expected both > 0 with a sum < 1"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        out["model"] = self.model.to_dict()
        return out


@dataclass
class JetSet:
    """Jets of the skim, two per event (J0 then J1 of each event, interleaved).

    Attributes:
        lund: float32 (n_jets, max_len, 5), all :data:`LUND_FEATURES`, zero padded.
        mask: bool (n_jets, max_len), True on real nodes.
        label: int8 (n_jets,), 1 signal, 0 background.
        weight: float64 (n_jets,), the event's physics weight.
        dataset: str (n_jets,), dataset name.
        split: int8 (n_jets,), 0 train, 1 val, 2 test.
        files: the files read.
    """

    lund: np.ndarray
    mask: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    dataset: np.ndarray
    split: np.ndarray
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, which: int) -> "JetSet":
        """The jets of one split (TRAIN, VAL or TEST)."""
        sel = self.split == which
        return JetSet(self.lund[sel], self.mask[sel], self.label[sel], self.weight[sel],
                      self.dataset[sel], self.split[sel], self.files)


@dataclass
class TrainResult:
    """What :func:`train_lundnet` produced."""

    onnx_path: Path
    checkpoint_path: Path
    report_md: Path
    report_json: Path
    auc: dict[str, Any]
    baselines: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int
    n_parameters: int


# ------------------------------------------------------------------------------------ data
def _skim_files(paths: Sequence[str | Path]) -> list[Path]:
    from svjscout.models.training.data import skim_files

    return skim_files(paths)


def _fixed_length(arr: np.ndarray, max_len: int) -> np.ndarray:
    """Truncate or zero-pad axis 1 to ``max_len``."""
    if arr.shape[1] >= max_len:
        return arr[:, :max_len]
    pad = [(0, 0)] * arr.ndim
    pad[1] = (0, max_len - arr.shape[1])
    return np.pad(arr, pad)


def load_skim(paths: Sequence[str | Path], max_len: int, seed: int = splits.DEFAULT_SEED,
              val_fraction: float = splits.DEFAULT_FRACTIONS[1],
              test_fraction: float = splits.DEFAULT_FRACTIONS[2], one_copy_per_parent: bool = True) -> JetSet:
    """Read skim parquet files (or directories of them) into a :class:`JetSet`.

    Detector copies (samples with ``--detector-copies``) share their parent's particles: their
    jets differ only by the jet-level calorimeter response, so for a jet tagger they are near
    duplicates. With ``one_copy_per_parent`` (the default) each parent keeps one row, its
    first copy (lowest ``event``), weighted with the sum of its copies' weights; the split is by
    parent either way.

    Args:
        paths: parquet files or directories (every ``*.parquet`` below, recursively: the
            processors write ``SKIM_DIR/<dataset>/<chunk>.parquet``).
        max_len: nodes per jet kept (longer sequences truncated, shorter zero padded).
        seed, val_fraction, test_fraction: the per-event split (:mod:`svjscout.models.splits`,
            keyed by dataset, run, luminosityBlock and parent; ``parent`` falls back to ``event``).

    Raises:
        InputFileError: a file is missing, unreadable, lacks a column of :data:`SKIM_COLUMNS`,
            or its Lund arrays do not have 5 features.
    """
    import awkward as ak

    keys = ("lund_j0", "mask_j0", "lund_j1", "mask_j1", "label", "weight", "dataset", "event", *SPLIT_KEY_COLUMNS)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    files = _skim_files(paths)
    for path in files:
        try:
            arr = ak.from_parquet(str(path))
        except Exception as err:  # pyarrow raises many types
            raise InputFileError(f"{path}: cannot read parquet skim ({err})") from err
        missing = [c for c in SKIM_COLUMNS if c not in arr.fields]
        if missing:
            raise InputFileError(f"{path}: skim column(s) {missing} missing, found {arr.fields}")
        if len(arr) == 0:
            log.warning("%s: empty skim, skipped", path)
            continue
        n = len(arr)
        for j in ("j0", "j1"):
            try:
                lund = np.asarray(ak.to_numpy(arr[f"lund_{j}"]), dtype=np.float32)
                mask = np.asarray(ak.to_numpy(arr[f"lund_{j}_mask"]), dtype=bool)
            except ValueError as err:
                raise InputFileError(f"{path}: column 'lund_{j}' is not a regular (N, L, 5) array ({err})") from err
            if lund.ndim != 3 or lund.shape[2] != len(LUND_FEATURES) or mask.shape != lund.shape[:2]:
                raise InputFileError(
                    f"{path}: column 'lund_{j}' has shape {lund.shape} (mask {mask.shape}), "
                    f"expected (N, L, {len(LUND_FEATURES)}) and (N, L)"
                )
            parts[f"lund_{j}"].append(_fixed_length(lund, max_len))
            parts[f"mask_{j}"].append(_fixed_length(mask, max_len))
        parts["label"].append(np.asarray(ak.to_numpy(arr["label"])).astype(np.int8))
        parts["weight"].append(np.asarray(ak.to_numpy(arr["weight"]), dtype=np.float64))
        parts["dataset"].append(np.asarray(ak.to_list(arr["dataset"]), dtype=object))
        parts["event"].append(np.asarray(ak.to_numpy(arr["event"])).astype(np.uint64))
        for c in SPLIT_KEY_COLUMNS:  # absent: run/lumi 0, parent = event (splits.key_columns)
            parts[c].append(np.asarray(ak.to_numpy(arr[c])).astype(np.uint64) if c in arr.fields
                            else parts["event"][-1] if c == "parent" else np.zeros(n, np.uint64))
        log.info("%s: %d events", path, n)
    if not parts["label"]:
        raise InputFileError(f"{[str(f) for f in files]}: all skim files are empty")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    if one_copy_per_parent:
        cat = _one_copy_per_parent(cat)
    split = splits.assign(splits.split_u(cat["dataset"], cat["run"], cat["luminosityBlock"], cat["parent"], seed),
                          val_fraction, test_fraction)

    def interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty((2 * len(a),) + a.shape[1:], dtype=a.dtype)
        out[0::2], out[1::2] = a, b
        return out

    def twice(a: np.ndarray) -> np.ndarray:
        return np.repeat(a, 2, axis=0)

    return JetSet(
        lund=interleave(cat["lund_j0"], cat["lund_j1"]),
        mask=interleave(cat["mask_j0"], cat["mask_j1"]),
        label=twice(cat["label"]),
        weight=twice(cat["weight"]),
        dataset=twice(cat["dataset"]),
        split=twice(split),
        files=[str(f) for f in files],
    )


def _one_copy_per_parent(cat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keep the first copy (lowest event) of every (dataset, run, lumi, parent), with the parent's
    summed weight; rows stay in (dataset, run, lumi, parent) order, independent of file order."""
    _, ds = np.unique(cat["dataset"].astype(str), return_inverse=True)
    order = np.lexsort((cat["event"], cat["parent"], cat["luminosityBlock"], cat["run"], ds))
    key = np.stack([ds[order].astype(np.uint64), cat["run"][order], cat["luminosityBlock"][order],
                    cat["parent"][order]], axis=1)
    first = np.r_[True, np.any(key[1:] != key[:-1], axis=1)]
    group = np.cumsum(first) - 1
    weight = np.bincount(group, cat["weight"][order])
    out = {k: v[order][first] for k, v in cat.items()}
    out["weight"] = weight
    return out


def training_weights(label: np.ndarray, weight: np.ndarray, dataset: np.ndarray) -> np.ndarray:
    """Class-balanced weights (n_jets,): background by physics weight, every signal point the
    same total, each class summing to half the number of jets. Negative weights are refused
    (:mod:`svjscout.models.weights`). The streamed training applies the same
    :class:`~svjscout.models.training.data.ClassWeights` with sums over the stream."""
    from svjscout.models.training.data import ClassWeights

    cw = ClassWeights(1.0, True, "uniform")
    cw.add(label, weight, dataset, "the LundNet skim", dataset)
    return cw.apply(label, weight, dataset)


# ------------------------------------------------------------------------------------ metrics
from svjscout.models.training.metrics import weighted_auc  # noqa: E402 - re-exported


def process_of(dataset: str) -> str:
    """Physics process of a dataset name: the part before a ``_pt`` bin suffix
    (``qcd_pt300to500`` -> ``qcd``)."""
    return str(dataset).split("_pt")[0]


def background_groups(dataset: np.ndarray, label: np.ndarray) -> dict[str, np.ndarray]:
    """Background columns of the AUC table: ``{name: boolean selection}`` with every background
    dataset, every process made of several datasets (e.g. ``qcd`` = all ``qcd_pt*`` bins, by
    physics weight) and ``all``."""
    bkg = label == 0
    names = sorted(set(dataset[bkg]))
    groups = {name: bkg & (dataset == name) for name in names}
    procs = np.array([process_of(d) for d in dataset], dtype=object)
    for proc in sorted({process_of(n) for n in names}):
        members = [n for n in names if process_of(n) == proc]
        if len(members) > 1 and proc not in groups:
            groups[proc] = bkg & (procs == proc)
    groups["all"] = bkg
    return groups


def auc_table(score: np.ndarray, label: np.ndarray, weight: np.ndarray, dataset: np.ndarray) -> dict[str, dict[str, float]]:
    """``{signal point or "all": {background dataset, multi-dataset process or "all": AUC}}``."""
    sig_points = sorted(set(dataset[label == 1]))
    groups = background_groups(dataset, label)
    table: dict[str, dict[str, float]] = {}
    for point in sig_points + ["all"]:
        s_sel = (label == 1) if point == "all" else (dataset == point)
        row = {}
        for proc, b_sel in groups.items():
            sel = s_sel | b_sel
            row[proc] = weighted_auc(score[sel], label[sel], weight[sel])
        table[point] = row
    return table


def baseline_scores(lund: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Baseline discriminants per jet: number of primary declusterings; jet mass (GeV) =
    exp(ln_m) of the first node (0 for a jet without nodes)."""
    n_decl = mask.sum(axis=1).astype(np.float64)
    i_m = LUND_FEATURES.index("ln_m")
    mass = np.where(mask[:, 0], np.exp(lund[:, 0, i_m].astype(np.float64)), 0.0)
    return {"n_declusterings": n_decl, "jet_mass": mass}


# ------------------------------------------------------------------------------------ streaming
class _JetStream:
    """The skim streamed for LundNet (models/training/data.py): a scan for the class weights, the
    node normalisation and the data summary, then row groups read on demand. One copy per parent
    is kept *within each row group* (copies of one generated event are consecutive rows of the
    generated files, so they share a row group unless a chunk boundary cuts them: then the parent
    keeps one row per row group, its weight shared between them; both in the same subset).
    Training visits every jet once per epoch: row groups in a random order, buffers of about
    ``buffer_jets`` jets shuffled inside (seeded by seed, epoch and buffer)."""

    def __init__(self, paths: Sequence[str | Path], config: "TrainConfig", feat_idx: list[int], device):
        from svjscout.models.training.data import ClassWeights, Reservoir, SkimSource

        self.config, self.feat_idx, self.device = config, feat_idx, device
        self.max_len = config.model.max_len
        self.source = SkimSource(paths, SKIM_COLUMNS)
        self.files = [str(f) for f in self.source.files]
        self.weights = {s: ClassWeights(1.0, True, "uniform") for s in SPLIT_NAMES}
        self.kept = {s: [] for s in SPLIT_NAMES}
        self.summary: dict[str, dict[str, Any]] = {}
        n_f = len(LUND_FEATURES)
        self.norm = np.zeros((3, n_f))  # count, sum, sum of squares of the training jets' real nodes
        base = Reservoir(200_000, config.seed + 21)
        for rg in self.source.row_groups:
            ev = self._events(rg)
            for i, name in enumerate(SPLIT_NAMES):
                sel = ev["split"] == i
                self.kept[name].append(2 * int(sel.sum()))
                self.weights[name].add(ev["label"][sel], ev["weight"][sel], ev["dataset"][sel],
                                       str(self.source.path(rg)), ev["dataset"][sel])
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
        import awkward as ak

        path = self.source.path(rg)
        cols = self.source.read(rg, [*SKIM_COLUMNS, *SPLIT_KEY_COLUMNS])
        n = len(cols["label"])
        ev: dict[str, np.ndarray] = {}
        for j in ("j0", "j1"):
            try:
                lund = np.asarray(ak.to_numpy(cols[f"lund_{j}"]), dtype=np.float32) if n else np.zeros((0, 1, 5), np.float32)
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
        if self.config.one_copy_per_parent and n:
            ev = _one_copy_per_parent(ev)
        c = self.config
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
        import torch

        return (torch.from_numpy(np.ascontiguousarray(jets["lund"][:, :, self.feat_idx])),
                torch.from_numpy(jets["mask"].astype(np.float32)),
                torch.from_numpy(jets["label"].astype(np.float32)),
                torch.from_numpy(jets["w_train"].astype(np.float32)))

    def plan(self, epoch: int) -> list[list[int]]:
        from svjscout.models.training.data import plan_buffers, rng

        return plan_buffers(self.kept["train"], self.config.buffer_jets, rng(self.config.seed, 7, epoch))

    def n_steps(self, epoch: int) -> int:
        b = self.config.batch_size
        return sum(math.ceil(sum(self.kept["train"][i] for i in buf) / b) for buf in self.plan(epoch))

    def steps(self, epoch: int, start: int):
        """(step, (x, mask, label, weight)) for the minibatches ``start``.. of an epoch; buffers
        before ``start`` are skipped unread."""
        import torch

        from svjscout.models.training.data import torch_generator

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


def _interleave_events(ev: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Events -> jets: J0 then J1 of every event."""
    def inter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty((2 * len(a),) + a.shape[1:], dtype=a.dtype)
        out[0::2], out[1::2] = a, b
        return out

    return {"lund": inter(ev["lund_j0"], ev["lund_j1"]), "mask": inter(ev["mask_j0"], ev["mask_j1"]),
            **{k: np.repeat(ev[k], 2, axis=0) for k in ("label", "weight", "dataset")}}


# ------------------------------------------------------------------------------------ training
def _weighted_bce(logits, target, w):
    import torch

    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per * w).sum() / w.sum().clamp(min=1e-12)


def _trimmed(x, m):
    """Drop trailing all-padding node slots of a batch (real nodes come first: exact)."""
    length = max(int(m.sum(dim=1).max()), 1) if len(m) else 1
    return x[:, :length], m[:, :length]


def _validation_loss(model, stream: _JetStream, device, batch_size: int = 4096) -> float:
    """Weighted BCE over the validation jets, streamed row group by row group."""
    import torch

    model.eval()
    num, den = 0.0, 0.0
    with torch.no_grad():
        for jets in stream.subset(VAL):
            x, m, y, w = stream.tensors(jets)
            for i in range(0, len(x), batch_size):
                xb, mb = _trimmed(x[i : i + batch_size], m[i : i + batch_size])
                per = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(xb.to(device), mb.to(device)), y[i : i + batch_size].to(device), reduction="none")
                wb = w[i : i + batch_size].to(device)
                num += float((per * wb).sum())
                den += float(wb.sum())
    return num / max(den, 1e-12)


def train_lundnet(skim_paths: Sequence[str | Path], out_dir: str | Path, config: TrainConfig | None = None,
                  stop_after: int | None = None) -> TrainResult | None:
    """Train LundNet on skim files and write the model, checkpoint and report to ``out_dir``.

    The skim is streamed in row groups (:class:`_JetStream`); the loop, checkpoints and resume are
    :class:`svjscout.models.training.loop.TrainLoop` (training state in ``out_dir/train_state.pt``).

    Args:
        skim_paths: parquet skim files or directories of them (columns :data:`SKIM_COLUMNS`).
        out_dir: output folder (created).
        config: training settings (defaults: :class:`TrainConfig`).
        stop_after: stop after this many steps, leaving the training state (returns None; tests).

    Returns:
        A :class:`TrainResult` (paths, test AUCs, baselines, history).

    Raises:
        InputFileError: unreadable skim; ConfigError: a subset lacks signal or background.
    """
    import torch

    from svjscout.models.lundnet import LundNet, count_parameters
    from svjscout.models.training.data import resolve_device
    from svjscout.models.training.loop import LoopSettings, TrainLoop

    config = config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mcfg = config.model
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    det_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        feat_idx = [LUND_FEATURES.index(f) for f in mcfg.features]
        stream = _JetStream(skim_paths, config, feat_idx, device)
        for name in SPLIT_NAMES:
            labels = {v["label"] for v in stream.summary.values() if v[name] > 0}
            if labels != {0, 1}:
                n = sum(v[name] for v in stream.summary.values())
                raise ConfigError(f"{name} subset: {n} jets, needs both signal and background jets")
        model = LundNet(mcfg)
        count, s1, s2 = stream.norm[:, feat_idx]
        if count[0] < 2:
            raise ValueError(f"set_normalisation: {int(count[0])} real nodes, expected >= 2")
        mean = s1 / count[0]
        var = np.maximum(s2 - count[0] * mean ** 2, 0.0) / (count[0] - 1)
        model.feat_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        model.feat_std.copy_(torch.as_tensor(np.sqrt(var), dtype=torch.float32).clamp(min=1e-6))
        n_params = count_parameters(model)
        log.info("LundNet %s: %d parameters, %d/%d/%d train/val/test jets", mcfg.block_widths, n_params,
                 *(sum(stream.kept[s]) for s in SPLIT_NAMES))
        model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=config.lr_factor, patience=config.lr_patience)
        t_epoch = [time.perf_counter()]

        def step(batch):
            xb, mb, yb, wb = batch
            xb, mb = _trimmed(xb, mb)
            wb = wb.to(device)
            loss = _weighted_bce(model(xb.to(device), mb.to(device)), yb.to(device), wb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"train_loss": float(loss.detach())}, float(wb.sum())

        def evaluate():
            loss = _validation_loss(model, stream, device)
            model.train()
            return loss, {"val_loss": loss}

        def make_record(epoch, train, figure, val):
            rec = {"epoch": epoch, "train_loss": train.get("train_loss", float("nan")), "val_loss": figure,
                   "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t_epoch[0]}
            t_epoch[0] = time.perf_counter()
            return rec

        settings = LoopSettings(epochs=config.epochs, patience=config.patience, min_delta=1e-6,
                                checkpoint_path=out / "train_state.pt", checkpoint_every=config.checkpoint_every,
                                progress=config.progress, label="LundNet")
        loop = TrainLoop(model, opt, settings, steps=stream.steps, n_steps=stream.n_steps, step=step,
                         evaluate=evaluate, make_record=make_record, scheduler=sched)
        run = loop.run(resume=config.resume, stop_after=stop_after)
    finally:
        torch.use_deterministic_algorithms(det_before)
    if run.interrupted:
        torch.set_num_threads(threads_before)
        return None
    model.to("cpu").eval()
    try:
        return _finish(model, stream, feat_idx, run.history, run.best_epoch, n_params, run.seconds, out, config)
    finally:
        torch.set_num_threads(threads_before)


def _finish(model, stream: _JetStream, feat_idx, history, best_epoch, n_params, train_seconds, out,
            config) -> TrainResult:
    """Export, test evaluation (streamed), baselines, checkpoint and report (see :func:`train_lundnet`)."""
    import torch

    from svjscout.models.lundnet import export_lundnet_onnx, load_lundnet_session
    from svjscout.models.training.metrics import orientation
    from svjscout.models.training.report import write_json

    mcfg = config.model
    summary = _data_summary(stream)
    training_summary = {
        "files": [f"{Path(f).parent.name}/{Path(f).name}" for f in stream.files],
        "jets": {s: sum(stream.kept[s]) for s in SPLIT_NAMES},
        "datasets": sorted(stream.summary),
        "epochs_run": len(history), "best_epoch": best_epoch, "seed": config.seed,
        "split": {"seed": config.seed, "val_fraction": config.val_fraction, "test_fraction": config.test_fraction,
                  "key": list(splits.KEY_COLUMNS)},
        "batch_size": config.batch_size, "lr": config.lr, "max_len": mcfg.max_len,
        "block_widths": list(mcfg.block_widths), "fusion": mcfg.fusion, "head": mcfg.head,
        "command": config.command,
    }
    # test pass 1 (torch): scores, labels, weights, datasets and baselines of the test jets
    keep: dict[str, list[np.ndarray]] = {k: [] for k in ("score_torch", "label", "w", "dataset", "n_declusterings",
                                                          "jet_mass")}
    for jets in stream.subset(TEST):
        x = np.ascontiguousarray(jets["lund"][:, :, feat_idx])
        keep["score_torch"].append(model.predict(x, jets["mask"]))
        keep["label"].append(jets["label"])
        keep["w"].append(jets["w_train"])
        keep["dataset"].append(jets["dataset"])
        for k, v in baseline_scores(jets["lund"], jets["mask"]).items():
            keep[k].append(v)
    test = {k: np.concatenate(v) for k, v in keep.items()}
    label, w_test, dataset = test["label"], test["w"], test["dataset"]
    table = auc_table(test["score_torch"], label, w_test, dataset)  # provisional, for the metadata
    auc_meta = {k: row["all"] for k, row in table.items()}
    onnx_path = export_lundnet_onnx(model, out / "lundnet.onnx", mcfg.features, training_summary, auc_meta)
    # test pass 2 (the exported ONNX model): the reported scores
    sess = load_lundnet_session(onnx_path, threads=config.threads)
    onnx_scores = [sess.run(["score"], {"lund": np.ascontiguousarray(j["lund"][:, :, feat_idx]),
                                        "mask": j["mask"].astype(np.float32)})[0] for j in stream.subset(TEST)]
    score = np.concatenate(onnx_scores) if onnx_scores else np.zeros(0, np.float32)
    max_diff = float(np.max(np.abs(score - test["score_torch"]))) if len(score) else 0.0
    table = auc_table(score, label, w_test, dataset)

    # baselines: orientation fixed on the training subset
    bt = stream.base_train
    w_bt = stream.weights["train"].apply(bt["label"], bt["weight"], bt["dataset"])
    base_test = {k: test[k] for k in ("n_declusterings", "jet_mass")}
    baselines: dict[str, Any] = {}
    for name, s_test in base_test.items():
        sign = orientation(bt[name], bt["label"], w_bt)
        baselines[name] = {"sign": sign, "auc": auc_table(sign * s_test, label, w_test, dataset)}

    ckpt = out / "lundnet_checkpoint.pt"
    torch.save({"state_dict": model.state_dict(), "model_config": mcfg.to_dict(),
                "train_config": config.to_dict(), "history": history, "best_epoch": best_epoch}, ckpt)
    report = {
        "command": config.command, "config": config.to_dict(), "n_parameters": n_params,
        "data": summary, "history": history, "best_epoch": best_epoch,
        "train_seconds": train_seconds, "auc": table, "baselines": baselines,
        "onnx_vs_torch_max_abs_diff": max_diff, "onnx": onnx_path.name,
    }
    rj = write_json(out / "report.json", report, sort_keys=True)
    _plots(out, score, label, dataset, w_test, base_test, baselines, history)
    rm = out / "report.md"
    rm.write_text(_markdown(report))
    log.info("wrote %s, %s, %s", onnx_path, ckpt, rm)
    return TrainResult(onnx_path, ckpt, rm, rj, table, baselines, history, best_epoch, n_params)


def _data_summary(stream: _JetStream) -> dict[str, Any]:
    out: dict[str, Any] = {"files": stream.files, "datasets": {}}
    for name in sorted(stream.summary):
        rec = stream.summary[name]
        n = sum(rec[s] for s in SPLIT_NAMES)
        out["datasets"][name] = {"label": rec["label"], **{s: rec[s] for s in SPLIT_NAMES},
                                 "mean_nodes": rec["nodes"] / max(n, 1)}
    return out


# ------------------------------------------------------------------------------------ report
def _plots(out: Path, score, label, dataset, w_test, base_test, baselines, history) -> None:
    from svjscout.models.training.metrics import roc
    from svjscout.models.training.report import new_figure, save_figure

    points = sorted(set(dataset[label == 1]))
    procs = sorted(set(dataset[label == 0]))
    bkg = label == 0

    fig, ax = new_figure(6, 5)
    for point in points + ["all"]:
        sel = bkg | ((label == 1) if point == "all" else (dataset == point))
        tpr, fpr = roc(score[sel], label[sel], w_test[sel])
        ax.plot(tpr, np.clip(fpr, 1e-6, None), lw=2 if point == "all" else 1,
                label=f"LundNet {point}" if point != "all" else "LundNet, all signal")
    for name, s in base_test.items():
        tpr, fpr = roc(baselines[name]["sign"] * s, label, w_test)
        ax.plot(tpr, np.clip(fpr, 1e-6, None), ls="--", label=f"baseline {name}, all signal")
    ax.set_yscale("log")
    ax.set_xlabel("signal efficiency")
    ax.set_ylabel("background efficiency (all backgrounds)")
    ax.set_title("LundNet ROC (test jets)")
    ax.legend(fontsize=7)
    save_figure(fig, out / "roc.png", dpi=110)

    fig, ax = new_figure(6, 4.5)
    bins = np.linspace(0, 1, 26)
    for name in points + procs:
        sel = dataset == name
        if sel.sum() == 0 or w_test[sel].sum() <= 0:
            continue
        ax.hist(score[sel], bins=bins, weights=w_test[sel], density=True, histtype="step",
                ls="-" if name in points else "--", label=name)
    ax.set_xlabel("LundNet score")
    ax.set_ylabel("normalised (weighted)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    save_figure(fig, out / "scores.png", dpi=110)

    fig, ax = new_figure(5, 3.5)
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], label="train")
    ax.plot(ep, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted BCE")
    ax.legend()
    save_figure(fig, out / "loss.png", dpi=110)


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    table = report["auc"]
    points = [k for k in table if k != "all"] + ["all"]
    procs = [k for k in table["all"] if k != "all"] + ["all"]
    lines = [
        "# LundNet training report",
        "",
        f"Command: `{report['command'] or 'train_lundnet(...)'}`",
        "",
        f"Model: blocks {cfg['model']['block_widths']}, fusion {cfg['model']['fusion']}, head "
        f"{cfg['model']['head']}, features {cfg['model']['features']}, max_len {cfg['model']['max_len']}, "
        f"{report['n_parameters']} parameters. Adam lr {cfg['lr']}, batch {cfg['batch_size']}, seed "
        f"{cfg['seed']}, lr x{cfg['lr_factor']} after {cfg['lr_patience']} flat epochs, "
        f"best epoch {report['best_epoch']} of {len(report['history'])} "
        f"(patience {cfg['patience']}), {report['train_seconds']:.0f} s on {cfg['device']} "
        f"({cfg['threads']} threads). ONNX vs torch on the test jets: max |diff| "
        f"{report['onnx_vs_torch_max_abs_diff']:.1e}.",
        "",
        "## Data (jets; J0 and J1 of every event)",
        "",
        "| dataset | label | train | val | test | mean nodes |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in report["data"]["datasets"].items():
        lines.append(f"| {name} | {d['label']} | {d['train']} | {d['val']} | {d['test']} | {d['mean_nodes']:.1f} |")
    lines += [
        "",
        "## Test (untouched) AUC, LundNet (rows: signal points; columns: background processes)",
        "",
        "Test (untouched: early stopping used the validation subset only). Weighted ROC AUC (sklearn); "
        "background by physics weight, every signal point normalised to the same total weight (also in "
        "\"all\"; the twin's report weights its signal the same way).",
        "",
        "| signal \\ background | " + " | ".join(procs) + " |",
        "|---|" + "---|" * len(procs),
    ]
    for point in points:
        lines.append(f"| {point} | " + " | ".join(_fmt(table[point][p]) for p in procs) + " |")
    lines += [
        "",
        "## Baselines (test (untouched) AUC vs all backgrounds; sign fixed on the training subset)",
        "",
        "| signal | LundNet | " + " | ".join(report["baselines"]) + " |",
        "|---|---|" + "---|" * len(report["baselines"]),
    ]
    for point in points:
        vals = [_fmt(b["auc"][point]["all"]) for b in report["baselines"].values()]
        lines.append(f"| {point} | {_fmt(table[point]['all'])} | " + " | ".join(vals) + " |")
    lines += ["", "![ROC](roc.png)", "", "![scores](scores.png)", "", "![loss](loss.png)", ""]
    return "\n".join(lines)


def evaluate_lundnet_onnx(onnx_path: str | Path, skim_paths: Sequence[str | Path], seed: int = splits.DEFAULT_SEED,
                          val_fraction: float = splits.DEFAULT_FRACTIONS[1],
                          test_fraction: float = splits.DEFAULT_FRACTIONS[2], subset: str = "test") -> dict[str, Any]:
    """Evaluate a LundNet ONNX file on one subset of skim files.

    The per-event split (:mod:`svjscout.models.splits`) is a hash of (seed, dataset, run,
    luminosityBlock, parent), so with the seed and fractions of the training the ``test`` subset
    of any skim of the same generated files (e.g. a tighter preselection) holds only events that
    were in the training's test subset.

    Args:
        onnx_path: a LundNet model written by :func:`svjscout.models.lundnet.export_lundnet_onnx`.
        skim_paths: parquet skim files or folders.
        seed, val_fraction, test_fraction: the split used in training.
        subset: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        ``{"auc": auc_table, "baselines": {name: auc_table}, "baseline_signs": {name: +-1},
        "jets": {dataset: n_jets}}`` with the weights of :func:`training_weights` (every signal
        point the same total); the baselines are oriented on the *train* subset of the same skim,
        never on the subset evaluated.

    Raises:
        ConfigError: unknown ``subset``; ModelMismatchError: the model's features are not Lund
        node features; InputFileError: unreadable skim.
    """
    from svjscout.exceptions import ModelMismatchError
    from svjscout.models.export import read_metadata
    from svjscout.models.lundnet import load_lundnet_session

    if subset not in SPLIT_NAMES:
        raise ConfigError(f"evaluate: subset is {subset!r}, expected one of {SPLIT_NAMES}")
    meta = read_metadata(onnx_path)
    features = meta.get("features") or []
    unknown = [f for f in features if f not in LUND_FEATURES]
    if not features or unknown:
        raise ModelMismatchError(f"{onnx_path}: metadata key 'features' is {features}, expected names from {LUND_FEATURES}")
    max_len = int(meta.get("max_len", 32))
    every = load_skim(skim_paths, max_len, seed, val_fraction, test_fraction)
    jets = every.subset(SPLIT_NAMES.index(subset))
    w = training_weights(jets.label, jets.weight, jets.dataset)
    train = every.subset(TRAIN)
    w_train = training_weights(train.label, train.weight, train.dataset) if len(train) else np.zeros(0)
    base_train = baseline_scores(train.lund, train.mask)
    sess = load_lundnet_session(onnx_path)
    x = np.ascontiguousarray(jets.lund[:, :, [LUND_FEATURES.index(f) for f in features]])
    score = sess.run(["score"], {"lund": x, "mask": jets.mask.astype(np.float32)})[0]
    baselines, signs = {}, {}
    for name, s in baseline_scores(jets.lund, jets.mask).items():
        on_train = weighted_auc(base_train[name], train.label, w_train) if len(train) else float("nan")
        signs[name] = -1.0 if on_train < 0.5 else 1.0  # NaN (no training jets of both classes): as is
        baselines[name] = auc_table(signs[name] * s, jets.label, w, jets.dataset)
    return {"auc": auc_table(score, jets.label, w, jets.dataset), "baselines": baselines, "baseline_signs": signs,
            "jets": {str(d): int((jets.dataset == d).sum()) for d in sorted(set(jets.dataset))}}
