"""Training of the twin MLPs X, Y with BCE + DisCo + closure constraints under MDMM (docs/physics.md).

Recipe (defaults = the design, every knob in :class:`TwinTrainConfig`):

* the skim parquet files are concatenated and split by event with :mod:`svjscout.models.splits`
  (the split LundNet uses: a hash of seed, dataset, run, luminosityBlock and parent; default
  60/20/20 train/val/test, so the twin's test events are LundNet's test events; independent of
  file paths and of file and row order; copies of one generated event stay together);
* analysis selection (:func:`analysis_mask`, from a :class:`~svjscout.processors.selection.Cuts`,
  config key ``analysis_cuts``): the constraints (DisCo, closure, occupancy), the validation
  figure and every reported validation/test metric use only events that pass the analysis
  preselection; BCE uses them too (``bce_selection: analysis``) or every training event of the
  (possibly looser) skim (``bce_selection: loose``);
* within each split the physics weights are rescaled per class so that
  ``sum(signal weights) / sum(background weights) = 3/2`` and the mean weight is 1
  (optionally every signal point first gets the same total, ``balance_signal_points``);
* each epoch draws ``batches_per_epoch`` (5) minibatches of ``batch_size`` (55,000) events
  *uniformly* with replacement from the training split; the weights enter the losses
  (weighted BCE normalised by the sum of weights, weighted dCorr, weighted soft counts), so the
  expectation equals the weighted full-sample loss;
* objective ``BCE_X + BCE_Y``; constraints (on background only), each ``L_j <= eps_j`` under
  MDMM: ``dcorr_xy``, ``dcorr_x_mt``, ``dcorr_y_mt``, ``dcorr_x_deta``, ``dcorr_y_deta``
  (fast O(n log n) dCorr), ``closure_SP``, ``closure_VP`` (normalisation closure) and
  ``closure_bins_SP``, ``closure_bins_VP`` (per-M_T-bin closure folded by ``bin_reduce``);
* early stopping on the validation figure ``BCE_X + BCE_Y + sum_j max(0, L_j - eps_j)``: every
  choice is made on validation; the test split is evaluated once, after training, and reported
  as "test (untouched)".

Outputs in ``out_dir``: ``twin.onnx``, ``twin_checkpoint.pt``, ``report.md``, ``report.json``,
``history.png``, ``multipliers.png``, ``xy_plane.png``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from svjscout.models import splits
from svjscout.models.closure import DEFAULT_PLANES, plane_closures, plane_occupancies
from svjscout.models.disco import dcorr
from svjscout.models.mdmm import MDMM, Constraint
from svjscout.models.twin import TwinMLP, export_twin_onnx
from svjscout.processors.features import EVENT_FEATURES

from svjscout import __version__
from svjscout.exceptions import ConfigError, InputFileError

log = logging.getLogger(__name__)

__all__ = [
    "CONSTRAINTS",
    "DEFAULT_TRADEOFF_SETTINGS",
    "SkimData",
    "TwinTrainConfig",
    "TwinTrainResult",
    "analysis_mask",
    "auc_weights",
    "compute_lundnet_scores",
    "constraint_floors",
    "effective_eps",
    "fill_tradeoff_doc",
    "format_tradeoff",
    "load_checkpoint",
    "load_skim",
    "null_scores",
    "split_codes",
    "tradeoff_table",
    "train_twin",
    "training_weights",
]

#: Constraint names, in order.
CONSTRAINTS = (
    "dcorr_xy",
    "dcorr_x_mt",
    "dcorr_y_mt",
    "dcorr_x_deta",
    "dcorr_y_deta",
    "closure_SP",
    "closure_VP",
    "closure_bins_SP",
    "closure_bins_VP",
    "occupancy_SP",
    "occupancy_VP",
)

_DEFAULT_EPS = {
    "dcorr_xy": 0.05,
    "dcorr_x_mt": 0.10,
    "dcorr_y_mt": 0.10,
    "dcorr_x_deta": 0.10,
    "dcorr_y_deta": 0.10,
    "closure_SP": 0.02,
    "closure_VP": 0.02,
    "closure_bins_SP": 0.05,
    "closure_bins_VP": 0.05,
    "occupancy_SP": 0.0,
    "occupancy_VP": 0.0,
}

_SCALAR_COLUMNS = ("mt", "deta", "weight", "label", "mzprime", "rinv", "event", "dataset")
#: Optional skim columns of the split key (absent: run/lumi 0, parent = event; models/splits.py).
_KEY_COLUMNS = ("run", "luminosityBlock", "parent")


@dataclass
class TwinTrainConfig:
    """Settings of :func:`train_twin` (defaults: the design's recipe where it has one).

    Attributes:
        seed: seeds the split, the minibatch sampling and the weight initialisation.
        split: train/val/test fractions (sum 1); default and seed shared with LundNet
            (:mod:`svjscout.models.splits`): keep the test fraction <= LundNet's and the same seed.
        analysis_cuts: :class:`~svjscout.processors.selection.Cuts` keys (None: the analysis
            defaults; the CLI's ``--job`` takes them from a job's ``analysis.cuts``). Events
            failing them are left out of the constraints and of every validation/test metric.
        bce_selection: ``analysis`` (BCE on the events passing ``analysis_cuts`` too) or
            ``loose`` (BCE on every training event of the skim).
        epochs: maximum number of epochs.
        batches_per_epoch: minibatches per epoch.
        batch_size: events per minibatch (sampled uniformly with replacement).
        lr: Adam learning rate of the networks.
        mdmm_lr: Adam learning rate of the MDMM multipliers and slacks.
        weight_decay: Adam weight decay of the networks.
        hidden: hidden layer widths of each MLP.
        activation: ``relu`` | ``silu`` | ``gelu`` | ``tanh``.
        dropout: dropout after each hidden activation.
        signal_to_background: sum of signal / sum of background training weights.
        balance_signal_points: give every (mzprime, rinv) point the same total weight first.
        x0, y0: working point of the closure terms (score thresholds).
        kappa: sharpness of the soft step ``sigmoid(kappa u)`` (1/score units).
        planes: plane name -> [lo, hi) on |deta|.
        mt_edges: M_T bin edges in GeV for the per-bin closure.
        bin_reduce: ``mean`` | ``max`` fold of the per-bin closures.
        eps: constraint name -> bound (all of :data:`CONSTRAINTS`; missing ones take defaults).
        min_region_fraction: every control region A, C, D of each plane must hold at least this
            fraction of the plane's background (soft counts); the ``occupancy_<plane>``
            constraints (0 switches them off). Not in docs/physics.md: see ``docs/twin.md``.
        floor_policy: ``adjust`` | ``warn`` | ``off``: what to do with a target ``eps`` below the
            constraint's noise floor on this sample (see :func:`constraint_floors`). ``adjust``
            trains with ``max(eps, floor)`` and logs it, ``warn`` only logs.
        floor_draws: null draws per floor estimate.
        floor_sigmas: floor = mean + ``floor_sigmas`` x standard deviation of the null values.
        floor_tail_fraction: fraction of the null scores above x0 (and above y0).
        alpha, rho: MDMM scale and damping (one value for all constraints, or per name).
        patience: early-stopping patience in epochs.
        min_delta: minimal improvement of the validation figure.
        val_max_events: cap on validation events per evaluation (random fixed subset).
        lundnet_model: LundNet ONNX file used when ``lundnet_j0/j1`` are missing or NaN.
        lundnet_batch: jets per onnxruntime call.
        num_threads: torch intra-op threads (None: leave torch's default).
        progress: show a rich progress bar (also switched off by ``SVJSCOUT_NO_PROGRESS``).
        device: ``auto`` (CUDA if available) | ``cpu`` | ``cuda[:n]`` (CUDA untested offline).
        buffer_events: training events held in memory at once (row groups of the skim streamed
            into buffers of this size; minibatches drawn inside a buffer, models/training/data.py).
        test_max_events: cap on the test events evaluated (random fixed subset; None: all).
        checkpoint_every: also write the training state every this many steps (0: epoch ends).
        resume: continue from ``out_dir/train_state.pt`` if it exists.
    """

    seed: int = splits.DEFAULT_SEED
    split: tuple[float, float, float] = splits.DEFAULT_FRACTIONS
    analysis_cuts: dict[str, float] | None = None
    bce_selection: str = "analysis"
    epochs: int = 100
    batches_per_epoch: int = 5
    batch_size: int = 55_000
    lr: float = 1e-3
    mdmm_lr: float = 1e-2
    weight_decay: float = 0.0
    hidden: tuple[int, ...] = (64, 64, 64)
    activation: str = "silu"
    dropout: float = 0.0
    signal_to_background: float = 1.5
    balance_signal_points: bool = False
    x0: float = 0.775
    y0: float = 0.875
    kappa: float = 50.0
    planes: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PLANES))
    mt_edges: tuple[float, ...] = (650.0, 750.0, 850.0, 1000.0, 1200.0, 1500.0, 2000.0, 3000.0, 6000.0)
    bin_reduce: str = "mean"
    eps: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_EPS))
    min_region_fraction: float = 0.02
    floor_policy: str = "adjust"
    floor_draws: int = 8
    floor_sigmas: float = 1.0
    floor_tail_fraction: float = 0.2
    alpha: float | dict[str, float] = 1.0
    rho: float | dict[str, float] = 1.0
    patience: int = 20
    min_delta: float = 0.0
    val_max_events: int = 200_000
    lundnet_model: str | None = None
    lundnet_batch: int = 4096
    num_threads: int | None = None
    progress: bool = True
    device: str = "auto"
    buffer_events: int = 1_000_000
    test_max_events: int | None = None
    checkpoint_every: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        self.split = tuple(float(v) for v in self.split)
        self.hidden = tuple(int(v) for v in self.hidden)
        self.mt_edges = tuple(float(v) for v in self.mt_edges)
        self.planes = {str(k): (float(v[0]), float(v[1])) for k, v in dict(self.planes).items()}
        self.eps = {**_DEFAULT_EPS, **{str(k): float(v) for k, v in dict(self.eps).items()}}
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the offending key."""
        if len(self.split) != 3 or min(self.split) <= 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"twin config key 'split' is {list(self.split)}, expected 3 positive fractions summing to 1")
        for key in ("epochs", "batches_per_epoch", "batch_size", "patience", "val_max_events", "lundnet_batch",
                    "floor_draws", "buffer_events"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < (0 if key == "epochs" else 1):
                raise ConfigError(f"twin config key '{key}' is {value!r}, expected a positive integer")
        for key in ("lr", "mdmm_lr", "kappa", "signal_to_background"):
            if not float(getattr(self, key)) > 0:
                raise ConfigError(f"twin config key '{key}' is {getattr(self, key)!r}, expected > 0")
        unknown = sorted(set(self.eps) - set(CONSTRAINTS))
        if unknown:
            raise ConfigError(f"twin config key 'eps' has unknown constraints {unknown}, expected some of {list(CONSTRAINTS)}")
        for key in ("alpha", "rho"):
            value = getattr(self, key)
            if isinstance(value, Mapping):
                bad = sorted(set(value) - set(CONSTRAINTS))
                if bad:
                    raise ConfigError(f"twin config key '{key}' has unknown constraints {bad}")
        missing_planes = sorted({"SP", "VP"} - set(self.planes))
        if missing_planes:
            raise ConfigError(f"twin config key 'planes' lacks {missing_planes}")
        if self.bin_reduce not in ("mean", "max"):
            raise ConfigError(f"twin config key 'bin_reduce' is {self.bin_reduce!r}, expected 'mean' or 'max'")
        if len(self.mt_edges) < 2 or any(b <= a for a, b in zip(self.mt_edges, self.mt_edges[1:])):
            raise ConfigError(f"twin config key 'mt_edges' is {list(self.mt_edges)}, expected >= 2 increasing values")
        if self.floor_policy not in ("adjust", "warn", "off"):
            raise ConfigError(f"twin config key 'floor_policy' is {self.floor_policy!r}, expected adjust, warn or off")
        if not 0 <= float(self.min_region_fraction) < 0.25:
            raise ConfigError(f"twin config key 'min_region_fraction' is {self.min_region_fraction!r}, "
                              "expected in [0, 0.25)")
        if not 0 < float(self.floor_tail_fraction) < 1:
            raise ConfigError(f"twin config key 'floor_tail_fraction' is {self.floor_tail_fraction!r}, "
                              "expected in (0, 1)")
        if self.activation not in ("relu", "silu", "gelu", "tanh"):
            raise ConfigError(f"twin config key 'activation' is {self.activation!r}")
        if self.bce_selection not in ("analysis", "loose"):
            raise ConfigError(f"twin config key 'bce_selection' is {self.bce_selection!r}, expected analysis or loose")
        if self.test_max_events is not None and int(self.test_max_events) < 1:
            raise ConfigError(f"twin config key 'test_max_events' is {self.test_max_events!r}, expected >= 1 or null")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ConfigError(f"twin config key 'checkpoint_every' is {self.checkpoint_every!r}, expected an integer >= 0")
        if str(self.device).split(":")[0] not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"twin config key 'device' is {self.device!r}, expected auto, cpu or cuda")
        self.cuts()

    def cuts(self):
        """The analysis preselection as a :class:`~svjscout.processors.selection.Cuts`."""
        from pydantic import ValidationError
        from svjscout.processors.selection import Cuts

        try:
            return Cuts(**dict(self.analysis_cuts or {}))
        except (ValidationError, TypeError) as err:
            raise ConfigError(f"twin config key 'analysis_cuts': {err}") from err

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, **overrides: Any) -> TwinTrainConfig:
        """Build from a mapping (e.g. parsed YAML) plus keyword overrides (``None`` ones skipped)."""
        data = dict(mapping or {})
        data.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"twin config has unknown keys {unknown}; known: {sorted(names)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"twin config: {err}") from err

    @classmethod
    def from_yaml(cls, path: str | Path | None, **overrides: Any) -> TwinTrainConfig:
        """Read a YAML file (top-level mapping, optionally under a ``twin:`` key) plus overrides."""
        if path is None:
            return cls.from_mapping({}, **overrides)
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read the twin config: {err}") from err
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: expected a mapping at top level")
        if "twin" in data and isinstance(data["twin"], Mapping):
            data = data["twin"]
        return cls.from_mapping(data, **overrides)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict of the settings."""
        d = asdict(self)
        d["split"] = list(self.split)
        d["hidden"] = list(self.hidden)
        d["mt_edges"] = list(self.mt_edges)
        d["planes"] = {k: list(v) for k, v in self.planes.items()}
        d["analysis_cuts"] = self.cuts().model_dump()  # the cuts applied, defaults included
        return d


@dataclass
class SkimData:
    """Columns of the skim needed for training, as numpy arrays of length N.

    Attributes:
        features: (N, 12) float32 in :data:`EVENT_FEATURES` order (GeV, rad, dimensionless).
        mt: (N,) M_T in GeV.  deta: (N,) deta(J0, J1).  weight: (N,) physics weight.
        label: (N,) 1 signal / 0 background.  mzprime, rinv: (N,) signal point (NaN for background).
        dataset: (N,) str.  event: (N,) uint64.
        run, lumi, parent: (N,) uint64 split key (:mod:`svjscout.models.splits`); None: 0, 0 and
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


@dataclass
class TwinTrainResult:
    """What :func:`train_twin` produced.

    Attributes:
        onnx_path, checkpoint_path, report_md, report_json: files written.
        plots: name -> PNG path.
        history: per-epoch records (epoch 0 = before training).
        test_metrics: AUCs, dCorr values and closures on the test split (untouched, analysis selection).
        val_metrics: the same on the validation split (where every choice is made).
        best_epoch: epoch of the kept weights.
        model: the trained :class:`TwinMLP` (best epoch).
    """

    onnx_path: Path
    checkpoint_path: Path
    report_md: Path
    report_json: Path
    plots: dict[str, Path]
    history: list[dict[str, Any]]
    test_metrics: dict[str, Any]
    best_epoch: int
    model: TwinMLP
    val_metrics: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- data
def _to_numpy_padded(arr, mask_arr, length: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Awkward (N, var|L, 5) Lund nodes and (N, var|L) masks -> (N, L, 5) and (N, L) float32."""
    import awkward as ak

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
    import onnxruntime as ort

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
    from svjscout.models.training.data import SkimSource

    if not paths:
        raise InputFileError("no skim files given")
    needed = [c for c in (*EVENT_FEATURES, *_SCALAR_COLUMNS) if not c.startswith("lundnet_")]
    return SkimSource(paths, needed)


def _read_rows(source, rg, lundnet_model: str | None, batch: int) -> SkimData:
    """One row group of the skim as :class:`SkimData` (computing missing LundNet scores)."""
    path = source.path(rg)
    needed = [c for c in (*EVENT_FEATURES, *_SCALAR_COLUMNS) if not c.startswith("lundnet_")]
    cols = source.read(rg, [*needed, "lundnet_j0", "lundnet_j1", *_KEY_COLUMNS])
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
    from svjscout.models.training.data import key_columns

    run, lumi, parent = key_columns(cols)
    return SkimData(features=features, mt=scal["mt"], deta=scal["deta"], weight=scal["weight"],
                    label=scal["label"].astype(np.float32), mzprime=scal["mzprime"], rinv=scal["rinv"],
                    dataset=np.asarray(cols["dataset"], dtype=object), event=np.asarray(cols["event"]).astype(np.uint64),
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
    """Per-event subset codes (:data:`splits.TRAIN`/``VAL``/``TEST``): the split LundNet uses."""
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
    from svjscout.models.training.data import ClassWeights

    return ClassWeights(cfg_ratio, balance_points, empty_group="keep")


def training_weights(d: SkimData, ratio: float, balance_points: bool) -> np.ndarray:
    """Class-rescaled weights: sum(sig)/sum(bkg) = ``ratio`` and mean weight 1; (N,) float64.
    Negative weights are refused (:mod:`svjscout.models.weights`). Streamed training computes the
    same from sums over the stream (:class:`~svjscout.models.training.data.ClassWeights`)."""
    cw = _class_weights(ratio, balance_points)
    cw.add(d.label, d.weight, _points(d), "the twin skim", d.dataset)
    return cw.apply(d.label, d.weight, _points(d))


class _TwinStream:
    """The skim streamed for the twin (models/training/data.py): one scan for the weights, the
    standardisation, the counters and the held-out reservoirs, then per-epoch buffers of training
    events from which the minibatches are drawn (uniformly with replacement inside a buffer,
    buffers chosen by systematic sampling: unbiased, see the data module)."""

    def __init__(self, paths: Sequence[str | Path], cfg: TwinTrainConfig, device):
        from svjscout.models.training.data import Reservoir, _keys

        self.cfg, self.device = cfg, device
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.source = _source(paths)
        self.cuts = cfg.cuts()
        self.weights = _class_weights(cfg.signal_to_background, cfg.balance_signal_points)
        self.kept: list[int] = []
        keep_cols = [f.name for f in fields(SkimData)]
        res_train = Reservoir(max(cfg.val_max_events, cfg.batch_size), cfg.seed + 11)
        res_val = Reservoir(cfg.val_max_events, cfg.seed + 12)
        res_test = Reservoir(cfg.test_max_events, cfg.seed + 13)
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
            group = np.full(len(dt), -1)
            group[sig] = inv
            for g in np.unique(group):
                key = "background" if g < 0 else keys[g]
                f, w = dt.features[group == g].astype(np.float64), dt.weight[group == g]
                ones = np.ones(f.shape[1])
                add = np.stack([w.sum() * ones, w @ f, w @ f ** 2, len(w) * ones, f.sum(0), (f ** 2).sum(0)])
                moments[key] = moments.get(key, 0) + add
            rows = np.arange(rg.start, rg.start + rg.rows)
            for res, sel in ((res_train, train), (res_val, (code == splits.VAL) & ana),
                             (res_test, (code == splits.TEST) & ana)):
                res.add({c: getattr(d, c)[sel] for c in keep_cols} | {"ana": ana[sel]}, rows[sel])
        self.points = sorted(points)
        self.n_train = sum(self.kept)
        self.mean_weight = self._standardisation(moments)
        self.train_sample, self.ana_sample = self._take(res_train, keep_cols)
        self.val, _ = self._take(res_val, keep_cols)
        self.test, _ = self._take(res_test, keep_cols)

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
        ana = analysis_mask(d, self.cuts)
        code = split_codes(d, cfg.split, cfg.seed)
        train = (code == splits.TRAIN) & (ana if cfg.bce_selection == "analysis" else True)
        return d, ana, code, train

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
        from svjscout.models.training.data import allocate_batches, plan_buffers, rng

        g = rng(self.cfg.seed, 7, epoch)
        bufs = plan_buffers(self.kept, self.cfg.buffer_events, g)
        sizes = [sum(self.kept[i] for i in b) for b in bufs]
        return bufs, allocate_batches(sizes, self.cfg.batches_per_epoch, g)

    def state_dict(self) -> dict[str, Any]:
        """The minibatch generator's state (saved in the training state)."""
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.gen.set_state(state["generator"])

    def steps(self, epoch: int, start: int):
        """(step, (tensors, rows)) for the minibatches ``start``.. of an epoch: rows drawn with one
        generator seeded by ``seed`` (its state is in the training state, so a resumed run draws
        what the interrupted one would have), inside the buffer of the step."""
        bufs, which = self.plan(epoch)
        loaded, t = None, None
        for j in range(start, self.cfg.batches_per_epoch):
            if which[j] != loaded:
                loaded, t = which[j], None
                t = self.buffer(bufs[which[j]])
            idx = torch.randint(t.n, (self.cfg.batch_size,), generator=self.gen)
            yield j, (t, idx.to(self.device))


# ----------------------------------------------------------------------------- losses
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


def _loss_terms(model: TwinMLP, t: _Tensors, idx: torch.Tensor | None, cfg: TwinTrainConfig,
                norm: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Objective and constraint values on rows ``idx`` (all rows if None).

    The weighted BCE is divided by ``norm`` (training minibatches: the expected sum of weights of
    a minibatch, ``batch_size`` x the mean training weight, so that its expectation is the
    weighted BCE of the whole split), or by the sum of the weights of the rows (None)."""
    sl = slice(None) if idx is None else idx
    f, lab, w = t.f[sl], t.label[sl], t.w[sl]
    lx, ly = model.logits(f)
    wsum = w.sum().clamp_min(1e-12) if norm is None else torch.tensor(float(norm), device=w.device)
    bce_x = (w * F.binary_cross_entropy_with_logits(lx, lab, reduction="none")).sum() / wsum
    bce_y = (w * F.binary_cross_entropy_with_logits(ly, lab, reduction="none")).sum() / wsum
    x, y = torch.sigmoid(lx), torch.sigmoid(ly)
    b = (lab == 0) & t.ana[sl]  # constraints: analysis-selected background only
    values = _constraint_values(x[b], y[b], t.w_phys[sl][b], t.mt[sl][b], t.deta[sl][b], cfg)
    return bce_x + bce_y, {"bce_x": bce_x, "bce_y": bce_y}, values


def _constraint_values(xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor, mtb: torch.Tensor,
                       detab: torch.Tensor, cfg: TwinTrainConfig) -> dict[str, torch.Tensor]:
    """Every constraint of :data:`CONSTRAINTS` on background scores, weights, M_T and deta."""
    values = {
        "dcorr_xy": dcorr(xb, yb, wb),
        "dcorr_x_mt": dcorr(xb, mtb, wb),
        "dcorr_y_mt": dcorr(yb, mtb, wb),
        "dcorr_x_deta": dcorr(xb, detab.abs(), wb),
        "dcorr_y_deta": dcorr(yb, detab.abs(), wb),
    }
    values.update(plane_closures(xb, yb, wb, detab, mtb, cfg.x0, cfg.y0, cfg.kappa, cfg.mt_edges,
                                 cfg.planes, cfg.bin_reduce))
    values.update(plane_occupancies(xb, yb, wb, detab, cfg.x0, cfg.y0, cfg.kappa, cfg.min_region_fraction,
                                    cfg.planes))
    return values


def null_scores(u: torch.Tensor, threshold: float, tail_fraction: float) -> torch.Tensor:
    """Map uniform ``u`` in [0, 1) to scores in [0, 1) with ``P(score > threshold) = tail_fraction``.

    Piecewise linear: the lower ``1 - tail_fraction`` of ``u`` fills [0, threshold), the rest
    [threshold, 1), so both sides of the cut are spread out like a trained score's.
    """
    q = float(tail_fraction)
    lo = u < 1 - q
    return torch.where(lo, threshold * u / (1 - q), threshold + (1 - threshold) * (u - (1 - q)) / q)


def constraint_floors(t: _Tensors, cfg: TwinTrainConfig, resample: bool, seed: int,
                      rows: torch.Tensor | None = None) -> dict[str, tuple[float, float]]:
    """Noise floor of every constraint on this sample: its mean and spread for a perfect pair.

    The constraints are evaluated, exactly as in training, on null scores that satisfy all of
    them in the population: X and Y drawn independently of each other and of everything else
    (:func:`null_scores`, a fraction ``floor_tail_fraction`` above x0 and y0), one value per
    event so that resampled duplicates share it as a model's score would. ``resample=True``
    draws minibatches like the training loop (``batch_size`` with replacement), ``False``
    evaluates the whole split, or its ``rows`` (the validation subset). The V-statistic dCorr and the closures of a finite
    sample are positive even then (about ``1/sqrt(n_eff)``), so a target ``eps`` below the
    floor can only be met by degenerate scores (docs/twin.md).

    Returns:
        name -> (mean, standard deviation) over ``floor_draws`` draws.
    """
    gen = torch.Generator().manual_seed(int(seed))
    draws: dict[str, list[float]] = {n: [] for n in CONSTRAINTS}
    for _ in range(cfg.floor_draws):
        xn = null_scores(torch.rand(t.n, generator=gen), cfg.x0, cfg.floor_tail_fraction)
        yn = null_scores(torch.rand(t.n, generator=gen), cfg.y0, cfg.floor_tail_fraction)
        if resample:
            idx = torch.randint(t.n, (cfg.batch_size,), generator=gen)
        else:
            idx = torch.arange(t.n) if rows is None else rows
        b = (t.label[idx] == 0) & t.ana[idx]
        sel = idx[b]
        with torch.no_grad():
            vals = _constraint_values(xn[sel], yn[sel], t.w_phys[sel], t.mt[sel], t.deta[sel], cfg)
        for n in CONSTRAINTS:
            draws[n].append(float(vals[n]))
    return {n: (float(np.mean(v)), float(np.std(v))) for n, v in draws.items()}


def effective_eps(cfg: TwinTrainConfig, floors: Mapping[str, tuple[float, float]] | None,
                  eps: Mapping[str, float] | None = None) -> tuple[dict[str, float], list[str]]:
    """Targets to train with and the constraints whose eps (default ``cfg.eps``) is below the floor.

    ``floor_policy = adjust`` raises such targets to ``mean + floor_sigmas * sd``; ``warn`` and
    ``off`` keep them.
    """
    start = dict(cfg.eps if eps is None else eps)
    eps = dict(start)
    if floors is None:
        return eps, []
    below = []
    for n in CONSTRAINTS:
        floor = floors[n][0] + cfg.floor_sigmas * floors[n][1]
        if start[n] < floor:
            below.append(n)
            if cfg.floor_policy == "adjust":
                eps[n] = floor
    return eps, below


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _validation_figure(bce: float, values: Mapping[str, float], eps: Mapping[str, float]) -> float:
    return bce + sum(max(0.0, values[k] - eps[k]) for k in CONSTRAINTS)


def _per_name(value: float | Mapping[str, float], name: str, default: float) -> float:
    if isinstance(value, Mapping):
        return float(value.get(name, default))
    return float(value)


# ----------------------------------------------------------------------------- evaluation
def _auc(label: np.ndarray, score: np.ndarray, weight: np.ndarray) -> float:
    from svjscout.models.training.metrics import weighted_auc

    return weighted_auc(score, label, weight)


def auc_weights(d: SkimData) -> np.ndarray:
    """Weights of every reported AUC (:func:`svjscout.models.training.metrics.point_weights`, the
    LundNet report's convention): background by physics weight, every signal point (m_Z', r_inv)
    normalised to the same total weight."""
    from svjscout.models.training.metrics import point_weights

    return point_weights(d.label, d.weight, _points(d))


def baseline_scores(d: SkimData) -> dict[str, np.ndarray]:
    """Baseline discriminants per event: the sum of the two LundNet scores and every input feature."""
    f = {name: d.features[:, i].astype(np.float64) for i, name in enumerate(EVENT_FEATURES)}
    return {"lundnet_sum": f["lundnet_j0"] + f["lundnet_j1"], **f}


def baseline_signs(d_train: SkimData) -> dict[str, float]:
    """Orientation (+1 / -1) of every baseline, chosen on *training* events (never on the
    events evaluated): -1 where the weighted AUC on ``d_train`` is below 0.5."""
    from svjscout.models.training.metrics import orientation

    w = auc_weights(d_train)
    return {k: orientation(v, d_train.label, w) for k, v in baseline_scores(d_train).items()}


def _test_metrics(model: TwinMLP, d: SkimData, cfg: TwinTrainConfig, signs: Mapping[str, float] | None = None,
                  floors: bool = True) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics of ``model`` on the events ``d`` (the test or the validation split, analysis selection).

    AUC weights: :func:`auc_weights`. Baselines oriented by ``signs`` (:func:`baseline_signs` of
    the training split; default +1).
    """
    from svjscout.models.closure import soft_counts
    from svjscout.models.disco import dcorr_numpy

    dev = next(model.parameters()).device
    with torch.no_grad():
        xs, ys = model(torch.from_numpy(d.features).to(dev))
    x, y = xs.cpu().numpy().astype(np.float64), ys.cpu().numpy().astype(np.float64)
    sig, bkg = d.label == 1, d.label == 0
    w = d.weight.astype(np.float64)
    wa = auc_weights(d)
    metrics: dict[str, Any] = {"n_test": len(d), "n_test_signal": int(sig.sum()), "n_test_background": int(bkg.sum())}
    metrics["auc_weighting"] = "background: physics weight; every signal point normalised to the same total weight"
    metrics["auc_all"] = {"x": _auc(d.label, x, wa), "y": _auc(d.label, y, wa)}
    base = baseline_scores(d)
    signs = dict(signs or {})
    metrics["baseline_signs"] = {k: float(signs.get(k, 1.0)) for k in base}
    metrics["baselines_auc_all"] = {k: _auc(d.label, metrics["baseline_signs"][k] * v, wa) for k, v in base.items()}
    per_point = {}
    lsum = metrics["baseline_signs"]["lundnet_sum"] * base["lundnet_sum"]
    for m, r in _signal_points(d):
        sel = bkg | (sig & (d.mzprime == m) & (d.rinv == r))
        per_point[f"mz{m:g}_rinv{r:g}"] = {"mzprime": m, "rinv": r, "x": _auc(d.label[sel], x[sel], wa[sel]),
                                          "y": _auc(d.label[sel], y[sel], wa[sel]),
                                          "lundnet_sum": _auc(d.label[sel], lsum[sel], wa[sel])}
    metrics["auc_per_point"] = per_point
    if bkg.sum() >= 2:
        xb, yb, wb, mtb, db = x[bkg], y[bkg], w[bkg], d.mt[bkg], np.abs(d.deta[bkg])
        metrics["dcorr"] = {
            "dcorr_xy": dcorr_numpy(xb, yb, wb),
            "dcorr_x_mt": dcorr_numpy(xb, mtb, wb),
            "dcorr_y_mt": dcorr_numpy(yb, mtb, wb),
            "dcorr_x_deta": dcorr_numpy(xb, db, wb),
            "dcorr_y_deta": dcorr_numpy(yb, db, wb),
        }
        t = {k: torch.from_numpy(v) for k, v in dict(x=xb, y=yb, w=wb, mt=mtb, deta=d.deta[bkg]).items()}
        metrics["closure_soft"] = {k: float(v) for k, v in plane_closures(
            t["x"], t["y"], t["w"], t["deta"], t["mt"], cfg.x0, cfg.y0, cfg.kappa, cfg.mt_edges, cfg.planes,
            cfg.bin_reduce).items()}
        metrics["occupancy_soft"] = {k: float(v) for k, v in plane_occupancies(
            t["x"], t["y"], t["w"], t["deta"], cfg.x0, cfg.y0, cfg.kappa, cfg.min_region_fraction, cfg.planes).items()}
        if floors and cfg.floor_policy != "off":
            metrics["floors"] = {n: list(v) for n, v in constraint_floors(
                _Tensors(d, d.weight), cfg, resample=False, seed=cfg.seed + 3).items()}
        hard = plane_closures(t["x"], t["y"], t["w"], t["deta"], t["mt"], cfg.x0, cfg.y0, 1e7, cfg.mt_edges,
                              cfg.planes, cfg.bin_reduce)
        metrics["closure_hard"] = {k: float(v) for k, v in hard.items()}
        metrics["abcd_counts_background"] = {}
        for name, rng in cfg.planes.items():
            mask = (np.abs(d.deta[bkg]) >= rng[0]) & (np.abs(d.deta[bkg]) < rng[1])
            n = soft_counts(t["x"][mask], t["y"][mask], t["w"][mask], cfg.x0, cfg.y0, 1e7)
            metrics["abcd_counts_background"][name] = dict(zip("ABCD", (float(v) for v in n)))
            if float(n[0] * n[3] + n[1] * n[2]) <= 0:
                # an empty region pair: the hard-cut closure is undefined at this working point
                for key in (f"closure_{name}", f"closure_bins_{name}"):
                    if key in metrics["closure_hard"]:
                        metrics["closure_hard"][key] = float("nan")
    return metrics, x, y


def target_check(metrics: Mapping[str, Any], eps_trained: Mapping[str, float],
                 eps_configured: Mapping[str, float]) -> dict[str, Any]:
    """Every constrained term of ``metrics`` against its targets, computed (not asserted).

    Returns:
        ``{"terms": {name: {"value", "eps_trained", "eps_configured", "within_trained",
        "within_configured"}}, "fail_trained": [...], "fail_configured": [...]}`` over the dCorr
        terms and the soft closure and occupancy terms (the quantities the constraints bound).
    """
    values = {**metrics.get("dcorr", {}), **metrics.get("closure_soft", {}), **metrics.get("occupancy_soft", {})}
    terms = {}
    for k, v in values.items():
        v = float(v)
        terms[k] = {"value": v, "eps_trained": float(eps_trained[k]), "eps_configured": float(eps_configured[k]),
                    "within_trained": bool(v <= eps_trained[k]), "within_configured": bool(v <= eps_configured[k])}
    return {"terms": terms,
            "fail_trained": [k for k, t in terms.items() if not t["within_trained"]],
            "fail_configured": [k for k, t in terms.items() if not t["within_configured"]]}


# ----------------------------------------------------------------------------- plots and report
def _plot_history(history: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    from matplotlib.figure import Figure

    ep = [h["epoch"] for h in history if h["epoch"] > 0]
    hist = [h for h in history if h["epoch"] > 0]
    paths = {}
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for key in ("bce_x", "bce_y"):
        ax1.plot(ep, [h["train"][key] for h in hist], label=f"train {key}")
        ax1.plot(ep, [h["val"][key] for h in hist], "--", label=f"val {key}")
    ax1.plot(ep, [h["val_figure"] for h in hist], "k-", lw=2, label="val figure")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend(fontsize=7)
    for key in CONSTRAINTS:
        ax2.plot(ep, [h["train"][key] for h in hist], label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("constraint value (train)")
    ax2.set_yscale("log")
    ax2.legend(fontsize=6)
    fig.tight_layout()
    paths["history"] = out_dir / "history.png"
    fig.savefig(paths["history"], dpi=100)

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key in CONSTRAINTS:
        ax.plot(ep, [h["multipliers"][key] for h in hist], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MDMM multiplier lambda")
    ax.legend(fontsize=6)
    fig.tight_layout()
    paths["multipliers"] = out_dir / "multipliers.png"
    fig.savefig(paths["multipliers"], dpi=100)
    return paths


def _plot_plane(d: SkimData, x: np.ndarray, y: np.ndarray, cfg: TwinTrainConfig, out_dir: Path) -> Path:
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    bins = np.linspace(0, 1, 41)
    for ax, lab, title in ((axes[0], 0, "background"), (axes[1], 1, "signal (all points)")):
        sel = d.label == lab
        w = np.abs(d.weight[sel])
        if sel.sum() and w.sum() > 0:
            h, _, _ = np.histogram2d(x[sel], y[sel], bins=[bins, bins], weights=w)
            pos = h[h > 0]
            norm = LogNorm(vmin=pos.min(), vmax=pos.max()) if len(pos) and pos.max() > pos.min() else None
            mesh = ax.pcolormesh(bins, bins, np.where(h > 0, h, np.nan).T, norm=norm)
            fig.colorbar(mesh, ax=ax, label="weighted events")
        ax.axvline(cfg.x0, color="r")
        ax.axhline(cfg.y0, color="r")
        ax.set_xlabel("X score")
        ax.set_ylabel("Y score")
        ax.set_title(f"test (untouched) {title}")
    fig.tight_layout()
    path = out_dir / "xy_plane.png"
    fig.savefig(path, dpi=100)
    return path


def _auc_lines(metrics: Mapping[str, Any]) -> list[str]:
    lines = ["| signal point | AUC X | AUC Y | AUC LundNet J0 + J1 |", "|---|---|---|---|",
             f"| all | {metrics['auc_all']['x']:.4f} | {metrics['auc_all']['y']:.4f} | "
             f"{metrics.get('baselines_auc_all', {}).get('lundnet_sum', float('nan')):.4f} |"]
    for name, a in metrics["auc_per_point"].items():
        lines.append(f"| {name} | {a['x']:.4f} | {a['y']:.4f} | {a.get('lundnet_sum', float('nan')):.4f} |")
    return lines


def _closure_lines(metrics: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    lines = [f"Closure at the working point (x0, y0) = ({cfg['x0']:g}, {cfg['y0']:g}) with hard cuts, on "
             f"the {metrics.get('n_test_background', 0)} analysis-preselected background events:", "",
             "| term | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.get("closure_hard", {}).items()]
    counts = metrics.get("abcd_counts_background", {})
    if counts:
        lines += ["", "Background fractions in the regions (weighted, hard cuts):", "",
                  "| plane | A | B | C | D |", "|---|---|---|---|---|"]
        for plane, c in counts.items():
            tot = sum(c.values()) or 1.0
            lines.append(f"| {plane} | " + " | ".join(f"{c[r] / tot:.3f}" for r in "ABCD") + " |")
    return lines


def _write_report(out_dir: Path, summary: dict[str, Any], history: list[dict[str, Any]],
                  metrics: dict[str, Any], plots: Mapping[str, Path],
                  val_metrics: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    val_metrics = dict(val_metrics or {})
    from svjscout.models.training.report import write_report

    cfg = summary["config"]
    sel = summary.get("selection", {})
    lines = [
        "# Twin MLP training report",
        "",
        f"svjscout {__version__}; best epoch {summary['best_epoch']} of {summary['epochs_run']}; "
        f"train/val/test events {summary['n_train']}/{summary['n_val']}/{summary['n_test']}.",
        "",
        f"Split: models/splits.py, seed {cfg['seed']}, train/val/test fractions {list(cfg['split'])}, keyed by "
        "(dataset, run, luminosityBlock, parent): the split LundNet uses, so these test events are inside "
        "LundNet's test events (same seed and fractions).",
        "",
        f"Selection: every validation and test figure, the constraints and the validation figure use only events "
        f"passing the analysis preselection {sel.get('cuts', {})} (R_T > rt_min, M_T > mt_min, dphi_min < "
        f"dphi_min_max, |deta| < deta_max); BCE uses the `{cfg.get('bce_selection', 'analysis')}` selection. "
        f"Events of the skim passing it: {sel.get('n_pass', '-')} of {sel.get('n_skim', '-')}.",
        "",
        "Validation vs test: early stopping and every other choice use the validation split only; the test split "
        "is evaluated once, after training (\"test (untouched)\").",
        "",
        "AUC weights (here and in the LundNet report): background by physics weight, every signal point "
        "normalised to the same total weight, also in \"all\". Baselines (LundNet J0 + J1, single features) "
        "have their sign chosen on the training split.",
        "",
        "## Test (untouched) AUCs (weighted, signal point vs all background)",
        "",
        *_auc_lines(metrics),
    ]
    if metrics.get("baselines_auc_all"):
        lines += ["", "Baselines, test (untouched), all signal (sign from the training split):", "",
                  "| baseline | sign | AUC |", "|---|---|---|"]
        lines += [f"| {k} | {metrics['baseline_signs'][k]:+g} | {v:.4f} |" for k, v in metrics["baselines_auc_all"].items()]
    eps = cfg["eps"]
    eps_used = summary.get("eps_used", eps)
    floors = summary.get("floors", {})
    test_floor = metrics.get("floors", {})

    def fl(where: Mapping[str, Any], k: str) -> str:
        return f"{where[k][0]:.4f} +- {where[k][1]:.4f}" if k in where else "-"

    check = summary.get("test_targets") or target_check(metrics, eps_used, eps)
    lines += ["", "## Test (untouched) background decorrelation and closure", "",
              "Floor: the value of a perfect pair (X, Y independent of each other, M_T and deta) on a sample of "
              "this size (mean +- sd, docs/twin.md); targets below the training floor are raised to it "
              f"(floor_policy = {cfg.get('floor_policy', 'off')}). 'within' compares the test value with the "
              "trained eps (and the configured eps).", "",
              "| term | test value | test floor | eps configured | eps trained | train floor | within trained / configured |",
              "|---|---|---|---|---|---|---|"]
    kappa = cfg["kappa"]
    for k, t in check["terms"].items():
        label = k if k.startswith("dcorr") else f"{k} (soft, kappa={kappa:g})"
        ok = f"{'yes' if t['within_trained'] else 'NO'} / {'yes' if t['within_configured'] else 'NO'}"
        lines.append(f"| {label} | {t['value']:.4f} | {fl(test_floor, k)} | {eps[k]:g} | {eps_used[k]:.4g} | "
                     f"{fl(floors.get('train', {}), k)} | {ok} |")
    fails_t, fails_c = check["fail_trained"], check["fail_configured"]
    lines += ["", ("Every constrained term is within its trained eps on the test split." if not fails_t else
                   f"Terms above their trained eps on the test split: {', '.join(fails_t)}."),
              ("Every constrained term is within its configured eps." if not fails_c else
               f"Terms above their configured eps: {', '.join(fails_c)}."), ""]
    lines += _closure_lines(metrics, cfg)
    if val_metrics:
        lines += ["", "## Validation (used for early stopping; best epoch)", "", *_auc_lines(val_metrics), ""]
        vcheck = target_check(val_metrics, summary.get("eps_validation", eps_used), eps)
        lines += ["| term | validation value | eps (validation figure) | within |", "|---|---|---|---|"]
        lines += [f"| {k} | {t['value']:.4f} | {t['eps_trained']:.4g} | {'yes' if t['within_trained'] else 'NO'} |"
                  for k, t in vcheck["terms"].items()]
        lines += [""] + _closure_lines(val_metrics, cfg)
    mult = summary.get("multipliers_shipped") or history[summary["best_epoch"]].get("multipliers", {})
    lines += ["", f"## MDMM multipliers of the shipped model (best epoch {summary['best_epoch']})", "",
              "| constraint | lambda |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in mult.items()]
    return write_report(out_dir, lines, {"summary": summary, "history": history, "test": metrics,
                                         "validation": val_metrics}, plots)


# ----------------------------------------------------------------------------- training
def _check_lundnet_split(cfg: TwinTrainConfig) -> None:
    """Refuse a twin split whose test subset is not inside the LundNet model's (when the model
    records its split: LundNet models trained with models/splits.py)."""
    if not cfg.lundnet_model or not Path(cfg.lundnet_model).is_file():
        return
    from svjscout.models.export import read_metadata

    try:
        training = read_metadata(cfg.lundnet_model).get("training") or {}
    except Exception:  # noqa: BLE001 - an unreadable model is reported when it is used
        return
    rec = training.get("split") if isinstance(training, Mapping) else None
    if isinstance(rec, Mapping) and "test_fraction" in rec:
        splits.check_nested(cfg.split[2], rec["test_fraction"], cfg.seed, rec.get("seed", cfg.seed),
                            what=f"the twin's test subset inside that of {cfg.lundnet_model}")


def train_twin(skim_paths: Sequence[str | Path], out_dir: str | Path,
               config: TwinTrainConfig | Mapping[str, Any] | None = None,
               stop_after: int | None = None) -> TwinTrainResult | None:
    """Train the twin MLPs on skim parquet files and write ONNX, checkpoint and report.

    The skim is streamed in row groups (:class:`_TwinStream`); the loop, checkpoints and resume
    are :class:`svjscout.models.training.loop.TrainLoop` (training state in
    ``out_dir/train_state.pt``; ``resume`` continues from it).

    Args:
        skim_paths: skim parquet files (columns: the 12 features, mt, deta, weight, label, ...).
        out_dir: output folder (created).
        config: :class:`TwinTrainConfig`, a mapping of its keys, or None (defaults).
        stop_after: stop after this many optimisation steps, leaving the training state behind
            (what an interrupted job leaves; returns None). For tests.

    Returns:
        :class:`TwinTrainResult` (None with ``stop_after``).
    """
    from svjscout.models.training.data import resolve_device
    from svjscout.models.training.loop import LoopSettings, TrainLoop

    cfg = config if isinstance(config, TwinTrainConfig) else TwinTrainConfig.from_mapping(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    _check_lundnet_split(cfg)
    stream = _TwinStream(skim_paths, cfg, device)
    d_tr_ana = stream.train_sample.take(np.flatnonzero(stream.ana_sample))
    d_va, d_te = stream.val, stream.test
    selection = {"cuts": stream.cuts.model_dump(include={"mt_min", "rt_min", "dphi_min_max", "deta_max"}),
                 "bce_selection": cfg.bce_selection, "n_skim": stream.n_skim, "n_pass": stream.n_pass,
                 "n_train_bce": stream.n_train, "n_train_constraints": stream.n_train_constraints}
    log.info("twin: %d of %d skim events pass the analysis preselection %s", stream.n_pass, stream.n_skim,
             selection["cuts"])
    for name, d in (("train", d_tr_ana), ("validation", d_va)):
        if (d.label == 0).sum() < 2 or (d.label == 1).sum() < 1:
            raise InputFileError(f"{[str(p) for p in skim_paths]}: the {name} split has "
                                 f"{int((d.label == 0).sum())} background and {int((d.label == 1).sum())} signal "
                                 "events; need >= 2 background and >= 1 signal")
    t_sample = _Tensors(stream.train_sample, stream.weights.apply(
        stream.train_sample.label, stream.train_sample.weight, _points(stream.train_sample)), stream.ana_sample)
    t_va = _Tensors(d_va, training_weights(d_va, cfg.signal_to_background, cfg.balance_signal_points),
                    device=device)

    floors: dict[str, dict[str, tuple[float, float]]] = {}
    if cfg.floor_policy != "off":
        floors["train"] = constraint_floors(t_sample, cfg, resample=True, seed=cfg.seed + 1)
        t_va_cpu = _Tensors(d_va, d_va.weight)
        floors["val"] = constraint_floors(t_va_cpu, cfg, resample=False, seed=cfg.seed + 2)
    eps_used, below = effective_eps(cfg, floors.get("train"))
    eps_val, _ = effective_eps(cfg, floors.get("val"), eps_used)
    for n in below:
        mean, sd = floors["train"][n]
        log.warning("twin: eps(%s) = %g is below its noise floor on this training sample (%.4f +- %.4f)%s", n,
                    cfg.eps[n], mean, sd, f"; training with {eps_used[n]:.4f}" if cfg.floor_policy == "adjust" else "")

    model = TwinMLP(len(EVENT_FEATURES), cfg.hidden, cfg.activation, cfg.dropout)
    model.mean.copy_(torch.as_tensor(stream.feature_mean, dtype=torch.float32))
    model.std.copy_(torch.as_tensor(stream.feature_std, dtype=torch.float32))
    mdmm = MDMM([Constraint(n, eps_used[n], _per_name(cfg.alpha, n, 1.0), _per_name(cfg.rho, n, 1.0))
                 for n in CONSTRAINTS])
    model.to(device)
    mdmm.to(device)
    opt = torch.optim.Adam([
        {"params": list(model.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": list(mdmm.parameters()), "lr": cfg.mdmm_lr, "weight_decay": 0.0},
    ])
    norm = cfg.batch_size * stream.mean_weight

    def step(batch) -> tuple[dict[str, float], float]:
        t, idx = batch
        bce, parts, vals = _loss_terms(model, t, idx, cfg, norm)
        res = mdmm(bce, vals)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        opt.step()
        rec = {"loss": _f(res.loss), "bce": _f(bce)} | {k: _f(v) for k, v in parts.items()} | \
            {k: _f(v) for k, v in vals.items()}
        return rec, 1.0

    def evaluate() -> tuple[float, dict[str, Any]]:
        model.eval()
        with torch.no_grad():
            bce, parts, vals = _loss_terms(model, t_va, None, cfg)
        model.train()
        rec = {k: float(v) for k, v in parts.items()} | {k: float(v) for k, v in vals.items()}
        rec["bce"] = float(bce)
        return _validation_figure(rec["bce"], rec, eps_val), rec

    def make_record(epoch: int, train: Mapping[str, float], figure: float, val: Mapping[str, Any]) -> dict[str, Any]:
        if epoch == 0:
            return {"epoch": 0, "val": dict(val), "val_figure": figure}
        summ = mdmm.summary()
        return {"epoch": epoch, "train": dict(train), "val": dict(val), "val_figure": figure,
                "multipliers": {k: s["lambda"] for k, s in summ.items()},
                "slacks": {k: s["slack"] for k, s in summ.items()}}

    settings = LoopSettings(epochs=cfg.epochs, patience=cfg.patience, min_delta=cfg.min_delta, evaluate_initial=True,
                            checkpoint_path=out / "train_state.pt", checkpoint_every=cfg.checkpoint_every,
                            progress=cfg.progress, label="twin MLPs")
    loop = TrainLoop(model, opt, settings, steps=stream.steps, n_steps=lambda e: cfg.batches_per_epoch, step=step,
                     evaluate=evaluate, make_record=make_record, extra_modules={"mdmm": mdmm},
                     stateful={"stream": stream})
    run = loop.run(resume=cfg.resume, stop_after=stop_after)
    if run.interrupted:
        return None
    history = run.history

    model.to("cpu")
    mdmm.to("cpu")
    model.eval()
    signs = baseline_signs(d_tr_ana)  # baselines oriented on training events, never on those evaluated
    val_metrics, _, _ = _test_metrics(model, d_va, cfg, signs, floors=False)
    # the test split, evaluated once with the model chosen on validation
    metrics, x_te, y_te = _test_metrics(model, d_te, cfg, signs)
    test_targets = target_check(metrics, eps_used, cfg.eps)

    summary = {
        "svjscout_version": __version__,
        "skims": [str(p) for p in skim_paths],
        "n_train": stream.n_train, "n_val": len(d_va), "n_test": len(d_te),
        "n_train_signal": stream.n_signal, "n_train_background": stream.n_background,
        "datasets": sorted(stream.datasets),
        "signal_points": [list(p) for p in stream.points],
        "best_epoch": int(run.best_epoch), "epochs_run": int(run.epochs_run), "best_val_figure": float(run.best_figure),
        "train_seconds": round(run.seconds, 1),
        "eps_used": eps_used, "eps_validation": eps_val, "eps_below_floor": below,
        "selection": selection,
        "split": {"seed": cfg.seed, "fractions": list(cfg.split), "key": list(splits.KEY_COLUMNS)},
        "multipliers_shipped": {k: v["lambda"] for k, v in mdmm.summary().items()},
        "test_targets": test_targets,
        "floors": {k: {n: list(v) for n, v in f.items()} for k, f in floors.items()},
        "config": cfg.as_dict(),
    }
    auc = {"all": metrics["auc_all"], **{k: {"x": v["x"], "y": v["y"]} for k, v in metrics["auc_per_point"].items()}}
    skip = ("progress", "num_threads", "device", "resume", "checkpoint_every")
    training_meta = {k: v for k, v in summary.items() if k != "config"} | {
        "config": {k: v for k, v in summary["config"].items() if k not in skip},
        "auc": auc, "auc_weighting": metrics["auc_weighting"], "test_dcorr": metrics.get("dcorr", {}),
        "test_closure": metrics.get("closure_hard", {}),
    }
    onnx_path = export_twin_onnx(copy.deepcopy(model).cpu(), out / "twin.onnx", training_meta, auc=auc)
    ckpt = out / "twin_checkpoint.pt"
    torch.save({"model": model.state_dict(), "hparams": model.hparams, "mdmm": mdmm.state_dict(),
                "mdmm_summary": mdmm.summary(), "optimizer": opt.state_dict(), "config": cfg.as_dict(),
                "eps_used": eps_used, "best_epoch": int(run.best_epoch), "epochs_run": int(run.epochs_run),
                "features": list(EVENT_FEATURES), "version": __version__}, ckpt)
    plots = _plot_history(history, out)
    plots["xy_plane"] = _plot_plane(d_te, x_te, y_te, cfg, out)
    md, js = _write_report(out, summary, history, metrics, plots, val_metrics)
    log.info("twin training done: best epoch %d, test AUC X %.3f Y %.3f; wrote %s", run.best_epoch,
             metrics["auc_all"]["x"], metrics["auc_all"]["y"], out)
    return TwinTrainResult(onnx_path=onnx_path, checkpoint_path=ckpt, report_md=md, report_json=js, plots=plots,
                           history=history, test_metrics=metrics, best_epoch=int(run.best_epoch), model=model,
                           val_metrics=val_metrics)


def load_checkpoint(path: str | Path) -> tuple[TwinMLP, MDMM, dict[str, Any]]:
    """Rebuild the model and MDMM state from ``twin_checkpoint.pt``; returns (model, mdmm, checkpoint)."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    hp = ckpt["hparams"]
    model = TwinMLP(hp["n_features"], hp["hidden"], hp["activation"], hp["dropout"])
    model.load_state_dict(ckpt["model"])
    cfg = ckpt["config"]
    eps = ckpt.get("eps_used", cfg["eps"])
    mdmm = MDMM([Constraint(n, eps[n], _per_name(cfg["alpha"], n, 1.0), _per_name(cfg["rho"], n, 1.0))
                 for n in CONSTRAINTS])
    mdmm.load_state_dict(ckpt["mdmm"])
    return model, mdmm, ckpt



# ----------------------------------------------------------------------------- decorrelation trade-off
#: Settings of :func:`tradeoff_table` by default: no decorrelation (alpha 0: BCE only) and a few
#: MDMM scales and dCorr(X, Y) targets, each merged over the base config.
DEFAULT_TRADEOFF_SETTINGS: tuple[dict[str, Any], ...] = (
    {"alpha": 0.0},
    {"alpha": 1.0},
    {"alpha": 3.0},
    {"alpha": 10.0},
    {"alpha": 3.0, "eps": {"dcorr_xy": 0.10}},
    {"alpha": 3.0, "eps": {"dcorr_xy": 0.02}},
)

#: Markers of the placeholder table in docs/twin.md that :func:`fill_tradeoff_doc` replaces.
TRADEOFF_BEGIN = "<!-- tradeoff-table:begin (written by svjscout.models.train_twin.fill_tradeoff_doc) -->"
TRADEOFF_END = "<!-- tradeoff-table:end -->"


def _setting_label(setting: Mapping[str, Any]) -> str:
    parts = []
    for k, v in setting.items():
        if isinstance(v, Mapping):
            parts += [f"{k}.{kk}={vv:g}" if isinstance(vv, (int, float)) else f"{k}.{kk}={vv}" for kk, vv in v.items()]
        else:
            parts.append(f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}")
    return ", ".join(parts) or "base"


def tradeoff_table(skim_paths: Sequence[str | Path], out_dir: str | Path,
                   base_config: TwinTrainConfig | Mapping[str, Any] | str | Path | None = None,
                   settings: Sequence[Mapping[str, Any]] = DEFAULT_TRADEOFF_SETTINGS) -> list[dict[str, Any]]:
    """What decorrelation costs, measured ON VALIDATION: one twin training per setting.

    Each setting (a mapping of :class:`TwinTrainConfig` keys; ``eps`` merged key by key) is laid
    over ``base_config`` (a config, a mapping, or a YAML path such as ``jobs/twin_train.yaml``)
    and trained into ``out_dir/<i>/``. Every figure of a row comes from the validation split at
    the best epoch (analysis preselection); the test split is not looked at, so the table can be
    used to choose alpha / eps. Writes ``out_dir/tradeoff.md`` (:func:`format_tradeoff`) and
    ``tradeoff.json``; :func:`fill_tradeoff_doc` puts the table into docs/twin.md.

    Returns:
        one row per setting: ``setting``, ``label``, ``best_epoch``, ``auc_x``, ``auc_y``,
        ``auc_lundnet_sum`` (validation, all signal), ``dcorr_xy``, ``dcorr_x_mt``, ``dcorr_y_mt``,
        ``closure_SP``, ``closure_VP`` (hard cuts at the working point), ``closure_bins_SP``,
        ``closure_bins_VP``, ``n_val_background``.
    """
    if isinstance(base_config, (str, Path)):
        base = TwinTrainConfig.from_yaml(base_config).as_dict()
    elif isinstance(base_config, TwinTrainConfig):
        base = base_config.as_dict()
    else:
        base = dict(TwinTrainConfig.from_mapping(base_config).as_dict())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, setting in enumerate(settings):
        mapping = {**base, **{k: v for k, v in setting.items() if k != "eps"}}
        mapping["eps"] = {**base.get("eps", {}), **dict(setting.get("eps", {}))}
        res = train_twin(skim_paths, out / f"{i:02d}", TwinTrainConfig.from_mapping(mapping))
        v = res.val_metrics
        dc, hard = v.get("dcorr", {}), v.get("closure_hard", {})
        rows.append({
            "setting": dict(setting), "label": _setting_label(setting), "best_epoch": res.best_epoch,
            "auc_x": v["auc_all"]["x"], "auc_y": v["auc_all"]["y"],
            "auc_lundnet_sum": v.get("baselines_auc_all", {}).get("lundnet_sum", float("nan")),
            **{k: float(dc.get(k, float("nan"))) for k in ("dcorr_xy", "dcorr_x_mt", "dcorr_y_mt")},
            **{k: float(hard.get(k, float("nan"))) for k in ("closure_SP", "closure_VP", "closure_bins_SP",
                                                              "closure_bins_VP")},
            "n_val_background": int(v.get("n_test_background", 0)),
        })
    (out / "tradeoff.json").write_text(json.dumps(rows, indent=1, default=float))
    (out / "tradeoff.md").write_text(format_tradeoff(rows) + "\n")
    return rows


def format_tradeoff(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`tradeoff_table` rows (validation split)."""
    lines = ["| setting | best epoch | AUC X | AUC Y | AUC LundNet J0+J1 | dCorr(X,Y) | dCorr(X,M_T) | dCorr(Y,M_T) "
             "| closure SP | closure VP | closure bins SP | closure bins VP |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vals = [r["auc_x"], r["auc_y"], r["auc_lundnet_sum"], r["dcorr_xy"], r["dcorr_x_mt"], r["dcorr_y_mt"],
                r["closure_SP"], r["closure_VP"], r["closure_bins_SP"], r["closure_bins_VP"]]
        lines.append(f"| {r['label']} | {r['best_epoch']} | " + " | ".join(f"{float(x):.3f}" for x in vals) + " |")
    return "\n".join(lines)


def fill_tradeoff_doc(table_md: str, doc_path: str | Path | None = None) -> Path:
    """Replace the placeholder between :data:`TRADEOFF_BEGIN` and :data:`TRADEOFF_END` in
    ``doc_path`` (default: the repository's docs/twin.md) by ``table_md``; returns the path."""
    path = Path(doc_path) if doc_path is not None else Path(__file__).resolve().parent.parent / "docs" / "twin.md"
    text = path.read_text()
    a, b = text.find(TRADEOFF_BEGIN), text.find(TRADEOFF_END)
    if a < 0 or b < a:
        raise ConfigError(f"{path}: the trade-off markers {TRADEOFF_BEGIN!r} ... {TRADEOFF_END!r} are missing")
    path.write_text(text[: a + len(TRADEOFF_BEGIN)] + "\n" + table_md.strip() + "\n" + text[b:])
    return path
