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

import copy
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

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
        device: torch device ("cpu", "cuda", ...).
        threads: torch CPU threads.
        val_fraction, test_fraction: fractions of events in the validation / test subsets
            (defaults: :data:`svjscout.models.splits.DEFAULT_FRACTIONS`, shared with the twin).
        progress: show a rich progress bar (also off with ``SVJSCOUT_NO_PROGRESS=1``).
        command: the command line, recorded in the report.
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

    def __post_init__(self) -> None:
        from svjscout.models.lundnet import SMALL

        if self.model is None:
            self.model = SMALL
        for key in ("epochs", "batch_size", "patience", "threads"):
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
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.parquet"))
            if not found:
                raise InputFileError(f"{p}: directory holds no *.parquet skim file (searched recursively)")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise InputFileError(f"{p}: skim file not found")
    if not files:
        raise InputFileError("no skim file given")
    return files


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
    (:mod:`svjscout.models.weights`)."""
    from svjscout.models.weights import require_nonnegative

    w = require_nonnegative(weight, "the LundNet skim", dataset)
    out = np.zeros_like(w)
    sig = label == 1
    for name in np.unique(dataset[sig]):
        sel = sig & (dataset == name)
        total = w[sel].sum()
        out[sel] = w[sel] / total if total > 0 else 1.0 / sel.sum()
    bkg = ~sig
    out[bkg] = w[bkg]
    half = 0.5 * len(w)
    for cls in (sig, bkg):
        total = out[cls].sum()
        if cls.any():
            out[cls] *= half / total if total > 0 else 0.0
    return out


# ------------------------------------------------------------------------------------ metrics
def weighted_auc(score: np.ndarray, label: np.ndarray, weight: np.ndarray) -> float:
    """Weighted ROC AUC (sklearn), NaN when a class is absent."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(label)) < 2:
        return float("nan")
    return float(roc_auc_score(label, score, sample_weight=weight))


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


# ------------------------------------------------------------------------------------ training
def _batches(n: int, batch_size: int, generator) -> list:
    import torch

    perm = torch.randperm(n, generator=generator)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def _weighted_bce(logits, target, w):
    import torch

    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per * w).sum() / w.sum().clamp(min=1e-12)


def _evaluate_loss(model, x, m, y, w, device, batch_size: int = 4096) -> float:
    import torch

    model.eval()
    num, den = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb, mb = _trimmed(x[i : i + batch_size], m[i : i + batch_size])
            logits = model(xb.to(device), mb.to(device))
            per = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, y[i : i + batch_size].to(device), reduction="none")
            wb = w[i : i + batch_size].to(device)
            num += float((per * wb).sum())
            den += float(wb.sum())
    return num / max(den, 1e-12)


def _trimmed(x, m):
    """Drop trailing all-padding node slots of a batch (real nodes come first: exact)."""
    length = max(int(m.sum(dim=1).max()), 1) if len(m) else 1
    return x[:, :length], m[:, :length]


def train_model(model, train: tuple, val: tuple, config: TrainConfig) -> tuple[list[dict], int]:
    """Optimise ``model`` in place (best validation state restored).

    Args:
        model: a :class:`~svjscout.models.lundnet.LundNet` (normalisation already set).
        train, val: ``(x, mask, label, weight)`` torch tensors, float32 (n, L, F), (n, L),
            (n,), (n,).
        config: the training settings (epochs, batch size, lr, patience, seed, device).

    Returns:
        ``(history, best_epoch)``: per-epoch dicts ``epoch, train_loss, val_loss, seconds``;
        the 1-based epoch whose state was kept.
    """
    import torch

    from svjscout.jobs.progress import make_progress

    device = torch.device(config.device)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=config.lr_factor, patience=config.lr_patience)
    gen = torch.Generator().manual_seed(config.seed)
    x, m, y, w = train
    best, best_state, best_epoch, bad = math.inf, None, 0, 0
    history: list[dict] = []
    n_steps = math.ceil(len(x) / config.batch_size)
    progress = make_progress()
    if not config.progress:
        progress.disable = True
    with progress:
        task = progress.add_task("LundNet epoch 1", total=config.epochs * n_steps)
        for epoch in range(1, config.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            tot, tot_w = 0.0, 0.0
            for idx in _batches(len(x), config.batch_size, gen):
                xb, mb = _trimmed(x[idx], m[idx])
                wb = w[idx].to(device)
                loss = _weighted_bce(model(xb.to(device), mb.to(device)), y[idx].to(device), wb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * float(wb.sum())
                tot_w += float(wb.sum())
                progress.advance(task)
            val_loss = _evaluate_loss(model, *val, device)
            rec = {"epoch": epoch, "train_loss": tot / max(tot_w, 1e-12), "val_loss": val_loss,
                   "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
            sched.step(val_loss)
            history.append(rec)
            log.info("epoch %d: train loss %.4f, val loss %.4f (%.1f s)", epoch, rec["train_loss"], val_loss, rec["seconds"])
            progress.update(task, description=f"LundNet epoch {epoch} val {val_loss:.4f}")
            if val_loss < best - 1e-6:
                best, best_epoch, bad = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
                if bad >= config.patience:
                    log.info("early stop after epoch %d (best %d)", epoch, best_epoch)
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu").eval()
    return history, best_epoch


def _tensors(jets: JetSet, feat_idx: list[int]):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(jets.lund[:, :, feat_idx]))
    m = torch.from_numpy(jets.mask.astype(np.float32))
    y = torch.from_numpy(jets.label.astype(np.float32))
    w = torch.from_numpy(training_weights(jets.label, jets.weight, jets.dataset).astype(np.float32))
    return x, m, y, w


def train_lundnet(skim_paths: Sequence[str | Path], out_dir: str | Path, config: TrainConfig | None = None) -> TrainResult:
    """Train LundNet on skim files and write the model, checkpoint and report to ``out_dir``.

    Args:
        skim_paths: parquet skim files or directories of them (columns :data:`SKIM_COLUMNS`).
        out_dir: output folder (created).
        config: training settings (defaults: :class:`TrainConfig`).

    Returns:
        A :class:`TrainResult` (paths, test AUCs, baselines, history).

    Raises:
        InputFileError: unreadable skim; ConfigError: a subset lacks signal or background.
    """
    import torch

    from svjscout.models.lundnet import LundNet, count_parameters

    config = config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mcfg = config.model
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    det_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    t_start = time.perf_counter()
    try:
        jets = load_skim(skim_paths, mcfg.max_len, config.seed, config.val_fraction, config.test_fraction)
        subsets = {name: jets.subset(i) for i, name in enumerate(SPLIT_NAMES)}
        for name, sub in subsets.items():
            if not ((sub.label == 1).any() and (sub.label == 0).any()):
                raise ConfigError(f"{name} subset: {len(sub)} jets, needs both signal and background jets")
        feat_idx = [LUND_FEATURES.index(f) for f in mcfg.features]
        train_t, val_t = _tensors(subsets["train"], feat_idx), _tensors(subsets["val"], feat_idx)
        model = LundNet(mcfg)
        model.set_normalisation(train_t[0].numpy(), subsets["train"].mask)
        n_params = count_parameters(model)
        log.info("LundNet %s: %d parameters, %d/%d/%d train/val/test jets", mcfg.block_widths, n_params,
                 len(subsets["train"]), len(subsets["val"]), len(subsets["test"]))
        history, best_epoch = train_model(model, train_t, val_t, config)
    finally:
        torch.use_deterministic_algorithms(det_before)
    train_seconds = time.perf_counter() - t_start
    try:
        return _finish(model, jets, subsets, feat_idx, history, best_epoch, n_params, train_seconds, out, config)
    finally:
        torch.set_num_threads(threads_before)


def _finish(model, jets, subsets, feat_idx, history, best_epoch, n_params, train_seconds, out, config) -> TrainResult:
    """Export, test evaluation, baselines, checkpoint and report (see :func:`train_lundnet`)."""
    import torch

    from svjscout.models.lundnet import export_lundnet_onnx, load_lundnet_session

    mcfg = config.model

    # test evaluation with the exported model
    test = subsets["test"]
    w_test = training_weights(test.label, test.weight, test.dataset)
    summary = _data_summary(jets, subsets)
    training_summary = {
        "files": [f"{Path(f).parent.name}/{Path(f).name}" for f in jets.files],
        "jets": {k: len(v) for k, v in subsets.items()},
        "datasets": sorted(str(d) for d in set(jets.dataset)),
        "epochs_run": len(history), "best_epoch": best_epoch, "seed": config.seed,
        "split": {"seed": config.seed, "val_fraction": config.val_fraction, "test_fraction": config.test_fraction,
                  "key": list(splits.KEY_COLUMNS)},
        "batch_size": config.batch_size, "lr": config.lr, "max_len": mcfg.max_len,
        "block_widths": list(mcfg.block_widths), "fusion": mcfg.fusion, "head": mcfg.head,
        "command": config.command,
    }
    # provisional AUC from torch for the metadata, replaced by the ONNX evaluation below
    x_test = np.ascontiguousarray(test.lund[:, :, feat_idx])
    score_torch = model.predict(x_test, test.mask)
    table = auc_table(score_torch, test.label, w_test, test.dataset)
    auc_meta = {k: row["all"] for k, row in table.items()}
    onnx_path = export_lundnet_onnx(model, out / "lundnet.onnx", mcfg.features, training_summary, auc_meta)
    sess = load_lundnet_session(onnx_path, threads=config.threads)
    score = sess.run(["score"], {"lund": x_test, "mask": test.mask.astype(np.float32)})[0]
    max_diff = float(np.max(np.abs(score - score_torch))) if len(score) else 0.0
    table = auc_table(score, test.label, w_test, test.dataset)

    # baselines: orientation fixed on the training subset
    train_sub = subsets["train"]
    w_train = training_weights(train_sub.label, train_sub.weight, train_sub.dataset)
    base_train = baseline_scores(train_sub.lund, train_sub.mask)
    base_test = baseline_scores(test.lund, test.mask)
    baselines: dict[str, Any] = {}
    for name, s_test in base_test.items():
        sign = 1.0 if weighted_auc(base_train[name], train_sub.label, w_train) >= 0.5 else -1.0
        baselines[name] = {"sign": sign, "auc": auc_table(sign * s_test, test.label, w_test, test.dataset)}

    ckpt = out / "lundnet_checkpoint.pt"
    torch.save({"state_dict": model.state_dict(), "model_config": mcfg.to_dict(),
                "train_config": config.to_dict(), "history": history, "best_epoch": best_epoch}, ckpt)
    report = {
        "command": config.command, "config": config.to_dict(), "n_parameters": n_params,
        "data": summary, "history": history, "best_epoch": best_epoch,
        "train_seconds": train_seconds, "auc": table, "baselines": baselines,
        "onnx_vs_torch_max_abs_diff": max_diff, "onnx": onnx_path.name,
    }
    rj = out / "report.json"
    rj.write_text(json.dumps(report, indent=1, sort_keys=True, default=_json_default))
    _plots(out, score, test, w_test, base_test, baselines, history)
    rm = out / "report.md"
    rm.write_text(_markdown(report))
    log.info("wrote %s, %s, %s", onnx_path, ckpt, rm)
    return TrainResult(onnx_path, ckpt, rm, rj, table, baselines, history, best_epoch, n_params)


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def _data_summary(jets: JetSet, subsets: dict[str, JetSet]) -> dict[str, Any]:
    out: dict[str, Any] = {"files": jets.files, "datasets": {}}
    for name in sorted(set(jets.dataset)):
        sel = jets.dataset == name
        out["datasets"][name] = {
            "label": int(jets.label[sel][0]),
            **{k: int((v.dataset == name).sum()) for k, v in subsets.items()},
            "mean_nodes": float(jets.mask[sel].sum(axis=1).mean()),
        }
    return out


# ------------------------------------------------------------------------------------ report
def _plots(out: Path, score, test: JetSet, w_test, base_test, baselines, history) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    points = sorted(set(test.dataset[test.label == 1]))
    procs = sorted(set(test.dataset[test.label == 0]))
    bkg = test.label == 0

    fig, ax = plt.subplots(figsize=(6, 5))
    for point in points + ["all"]:
        sel = bkg | ((test.label == 1) if point == "all" else (test.dataset == point))
        fpr, tpr, _ = roc_curve(test.label[sel], score[sel], sample_weight=w_test[sel])
        ax.plot(tpr, np.clip(fpr, 1e-6, None), lw=2 if point == "all" else 1,
                label=f"LundNet {point}" if point != "all" else "LundNet, all signal")
    sel = np.ones(len(test), dtype=bool)
    for name, s in base_test.items():
        fpr, tpr, _ = roc_curve(test.label, baselines[name]["sign"] * s, sample_weight=w_test)
        ax.plot(tpr, np.clip(fpr, 1e-6, None), ls="--", label=f"baseline {name}, all signal")
    ax.set_yscale("log")
    ax.set_xlabel("signal efficiency")
    ax.set_ylabel("background efficiency (all backgrounds)")
    ax.set_title("LundNet ROC (test jets)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    bins = np.linspace(0, 1, 26)
    for name in points + procs:
        sel = test.dataset == name
        if sel.sum() == 0 or w_test[sel].sum() <= 0:
            continue
        ax.hist(score[sel], bins=bins, weights=w_test[sel], density=True, histtype="step",
                ls="-" if name in points else "--", label=name)
    ax.set_xlabel("LundNet score")
    ax.set_ylabel("normalised (weighted)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], label="train")
    ax.plot(ep, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted BCE")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=110)
    plt.close(fig)


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
