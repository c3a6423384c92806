"""LundNet's jets: the skim columns, :class:`JetSet` and :func:`load_skim` (in memory, one copy
per parent, the per-event split), events -> jets, and the class-balanced training weights."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.core.features import LUND_FEATURES
from svjscout.models.training.data import KEY_COLUMNS, ClassWeights, skim_files

log = logging.getLogger("svjscout.models.train_lundnet")  # the trainer's logger name, as before the split

#: Columns of the skim read by the training.
SKIM_COLUMNS = ("lund_j0", "lund_j0_mask", "lund_j1", "lund_j1_mask", "weight", "dataset", "label", "event")
#: Optional columns of the split key (:mod:`svjscout.core.splits`; the shared training layer's).
SPLIT_KEY_COLUMNS = KEY_COLUMNS
#: Optional columns: Delta R from J0 / J1 to the nearest generator dark quark (processors/skim.py;
#: NaN where the skim's file had no dark-quark record).
TRUTH_COLUMNS = ("dark_dr_j0", "dark_dr_j1")
#: ``signal_jet_label`` values: ``truth`` (a signal jet is signal if a dark quark is within
#: ``dark_match_dr``; an unmatched signal jet gets weight 0) or ``event`` (both jets of a signal event).
SIGNAL_JET_LABELS = frozenset({"truth", "event"})


def truth_factors(label: np.ndarray, dr_j0: np.ndarray, dr_j1: np.ndarray, mode: str,
                  match_dr: float) -> tuple[np.ndarray, np.ndarray]:
    """Per event, the factors of J0's and J1's weights from the dark-quark match.

    With ``mode == "truth"`` a jet of a signal event (``label == 1``) whose nearest dark quark is
    farther than ``match_dr`` is not a signal jet: factor 0 (it leaves the training, the validation
    loss and the AUCs). Jets of background events, matched signal jets and signal jets without a
    dark-quark record (NaN: files from before the generator wrote it) keep factor 1 (the latter are
    labelled by their event, as before; :func:`truth_summary` counts them). ``event``: all 1.

    Args:
        label: (n,) event labels (1 signal, 0 background).
        dr_j0, dr_j1: (n,) Delta R of J0, J1 to the nearest dark quark (NaN: unknown).

    >>> f0, f1 = truth_factors(np.array([1, 1, 0]), np.array([0.1, np.nan, 2.0]), np.array([1.5, 0.3, 3.0]),
    ...                        "truth", 0.8)
    >>> f0.tolist(), f1.tolist()
    ([1.0, 1.0, 1.0], [0.0, 1.0, 1.0])
    """
    if mode not in SIGNAL_JET_LABELS:
        raise ConfigError(f"signal_jet_label is {mode!r}; expected one of {sorted(SIGNAL_JET_LABELS)}")
    n = len(label)
    if mode == "event":
        return np.ones(n), np.ones(n)
    signal = np.asarray(label) == 1
    out = []
    for dr in (dr_j0, dr_j1):
        dr = np.asarray(dr, dtype=np.float64)
        out.append(np.where(signal & np.isfinite(dr) & (dr > match_dr), 0.0, 1.0))
    return out[0], out[1]


def truth_summary(label: np.ndarray, dr_j0: np.ndarray, dr_j1: np.ndarray, match_dr: float) -> dict[str, int]:
    """Signal jets by dark-quark match: ``matched`` (Delta R <= match_dr), ``unmatched``,
    ``no_truth`` (NaN), counted over J0 and J1 of the signal events."""
    signal = np.asarray(label) == 1
    dr = np.concatenate([np.asarray(dr_j0, np.float64)[signal], np.asarray(dr_j1, np.float64)[signal]])
    known = np.isfinite(dr)
    return {"matched": int(np.count_nonzero(known & (dr <= match_dr))),
            "unmatched": int(np.count_nonzero(known & (dr > match_dr))), "no_truth": int(np.count_nonzero(~known))}


def with_truth_factors(ev: dict[str, np.ndarray], cols: Mapping, mode: str, match_dr: float) -> dict[str, np.ndarray]:
    """``ev`` with ``dark_dr_j0/j1`` (from ``cols``, NaN where absent) and the weight factors
    ``jet_factor_j0/j1`` (:func:`truth_factors`) that :func:`_interleave_events` applies."""
    n = len(ev["label"])
    for c in TRUTH_COLUMNS:
        ev[c] = np.asarray(cols[c], dtype=np.float64) if c in cols else np.full(n, np.nan)
    ev["jet_factor_j0"], ev["jet_factor_j1"] = truth_factors(ev["label"], ev["dark_dr_j0"], ev["dark_dr_j1"],
                                                             mode, match_dr)
    return ev


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
        keys: per *event* (n_jets / 2), the identity columns ``dataset, run, luminosityBlock,
            parent, event`` (uint64 but the dataset), in the row order of the jets (J0 of event
            i is jet 2i); the k-fold cross-fit's fold key (:mod:`.crossfit`). ``None`` when unknown.
    """

    lund: np.ndarray
    mask: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    dataset: np.ndarray
    split: np.ndarray
    files: list[str] = field(default_factory=list)
    keys: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.label)

    def subset(self, which: int) -> JetSet:
        """The jets of one split (TRAIN, VAL or TEST)."""
        sel = self.split == which
        keys = None if self.keys is None else {k: v[sel[0::2]] for k, v in self.keys.items()}
        return JetSet(self.lund[sel], self.mask[sel], self.label[sel], self.weight[sel],
                      self.dataset[sel], self.split[sel], self.files, keys)


def _skim_files(paths: Sequence[str | Path]) -> list[Path]:
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
              test_fraction: float = splits.DEFAULT_FRACTIONS[2], one_copy_per_parent: bool = True,
              signal_jet_label: str = "truth", dark_match_dr: float = 0.8) -> JetSet:
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
        seed, val_fraction, test_fraction: the per-event split (:mod:`svjscout.core.splits`,
            keyed by dataset, run, luminosityBlock and parent; ``parent`` falls back to ``event``).
        signal_jet_label, dark_match_dr: the signal jets' labels (:func:`truth_factors`): with
            ``truth``, a signal jet farther than ``dark_match_dr`` from every dark quark gets weight 0.

    Raises:
        InputFileError: a file is missing, unreadable, lacks a column of :data:`SKIM_COLUMNS`,
            or its Lund arrays do not have 5 features.
    """
    keys = ("lund_j0", "mask_j0", "lund_j1", "mask_j1", "label", "weight", "dataset", "event", *SPLIT_KEY_COLUMNS,
            *TRUTH_COLUMNS)
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
        for c in TRUTH_COLUMNS:  # absent (skims made before the dark-quark match): NaN, labelled by event
            parts[c].append(np.asarray(ak.to_numpy(arr[c]), dtype=np.float64) if c in arr.fields
                            else np.full(n, np.nan))
        log.info("%s: %d events", path, n)
    if not parts["label"]:
        raise InputFileError(f"{[str(f) for f in files]}: all skim files are empty")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    if one_copy_per_parent:
        cat = _one_copy_per_parent(cat)
    cat = with_truth_factors(cat, cat, signal_jet_label, dark_match_dr)
    split = splits.assign(splits.split_u(cat["dataset"], cat["run"], cat["luminosityBlock"], cat["parent"], seed),
                          val_fraction, test_fraction)

    ident = {k: cat[k] for k in ("dataset", "run", "luminosityBlock", "parent", "event")}
    return JetSet(**_interleave_events(cat), split=np.repeat(split, 2, axis=0), files=[str(f) for f in files],
                  keys=ident)


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
    cw = ClassWeights(1.0, True, "uniform")
    cw.add(label, weight, dataset, "the LundNet skim", dataset)
    return cw.apply(label, weight, dataset)


def _interleave_events(ev: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Events -> jets: J0 then J1 of every event."""
    def inter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty((2 * len(a),) + a.shape[1:], dtype=a.dtype)
        out[0::2], out[1::2] = a, b
        return out

    out = {"lund": inter(ev["lund_j0"], ev["lund_j1"]), "mask": inter(ev["mask_j0"], ev["mask_j1"]),
           **{k: np.repeat(ev[k], 2, axis=0) for k in ("label", "weight", "dataset")}}
    if "jet_factor_j0" in ev:  # the dark-quark match (truth_factors): unmatched signal jets weigh 0
        out["weight"] = out["weight"] * inter(ev["jet_factor_j0"], ev["jet_factor_j1"])
    return out
