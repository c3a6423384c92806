"""LundNet's evaluation: AUC tables (signal point x background dataset / process), the
baselines, and :func:`evaluate_lundnet_onnx` (an exported model on one subset of a skim)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError, ModelMismatchError
from svjscout.core.features import LUND_FEATURES
from svjscout.core.splits import SPLIT_NAMES, TRAIN
from svjscout.models.export import read_metadata
from svjscout.models.lundnet import load_lundnet_session
from svjscout.models.lundnet_training.data import load_skim, training_weights
from svjscout.models.training.metrics import weighted_auc


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


def auc_table(score: np.ndarray, label: np.ndarray, weight: np.ndarray,
              dataset: np.ndarray) -> dict[str, dict[str, float]]:
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


def evaluate_lundnet_onnx(onnx_path: str | Path, skim_paths: Sequence[str | Path], seed: int = splits.DEFAULT_SEED,
                          val_fraction: float = splits.DEFAULT_FRACTIONS[1],
                          test_fraction: float = splits.DEFAULT_FRACTIONS[2], subset: str = "test") -> dict[str, Any]:
    """Evaluate a LundNet ONNX file on one subset of skim files.

    The per-event split (:mod:`svjscout.core.splits`) is a hash of (seed, dataset, run,
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
    if subset not in SPLIT_NAMES:
        raise ConfigError(f"evaluate: subset is {subset!r}, expected one of {SPLIT_NAMES}")
    meta = read_metadata(onnx_path)
    features = meta.get("features") or []
    unknown = [f for f in features if f not in LUND_FEATURES]
    if not features or unknown:
        raise ModelMismatchError(f"{onnx_path}: metadata key 'features' is {features}, "
                                 f"expected names from {LUND_FEATURES}")
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
