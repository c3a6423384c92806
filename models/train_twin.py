"""Training of the twin MLPs X, Y with BCE + DisCo + closure constraints under MDMM (docs/physics.md).

Recipe (defaults = the design, every knob in :class:`TwinTrainConfig`):

* the skim parquet files are concatenated and split globally 40/20/40 (train/val/test) by a
  permutation drawn from ``seed`` (deterministic for the same files in the same order);
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
* early stopping on the validation figure ``BCE_X + BCE_Y + sum_j max(0, L_j - eps_j)``.

Outputs in ``out_dir``: ``twin.onnx``, ``twin_checkpoint.pt``, ``report.md``, ``report.json``,
``history.png``, ``multipliers.png``, ``xy_plane.png``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from svjscout import __version__
from svjscout.exceptions import ConfigError, InputFileError
from svjscout.models.closure import DEFAULT_PLANES, plane_closures, plane_occupancies
from svjscout.models.disco import dcorr
from svjscout.models.mdmm import MDMM, Constraint
from svjscout.models.twin import TwinMLP, export_twin_onnx
from svjscout.processors.features import EVENT_FEATURES

log = logging.getLogger(__name__)

__all__ = ["TwinTrainConfig", "TwinTrainResult", "SkimData", "load_skim", "compute_lundnet_scores", "train_twin",
           "CONSTRAINTS", "load_checkpoint", "training_weights", "constraint_floors", "effective_eps",
           "null_scores"]

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


@dataclass
class TwinTrainConfig:
    """Settings of :func:`train_twin` (defaults: the design's recipe where it has one).

    Attributes:
        seed: seeds the split, the minibatch sampling and the weight initialisation.
        split: train/val/test fractions (sum 1).
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
    """

    seed: int = 1
    split: tuple[float, float, float] = (0.4, 0.2, 0.4)
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
                    "floor_draws"):
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

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, **overrides: Any) -> "TwinTrainConfig":
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
    def from_yaml(cls, path: str | Path | None, **overrides: Any) -> "TwinTrainConfig":
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
        return d


@dataclass
class SkimData:
    """Columns of the skim needed for training, as numpy arrays of length N.

    Attributes:
        features: (N, 12) float32 in :data:`EVENT_FEATURES` order (GeV, rad, dimensionless).
        mt: (N,) M_T in GeV.  deta: (N,) deta(J0, J1).  weight: (N,) physics weight.
        label: (N,) 1 signal / 0 background.  mzprime, rinv: (N,) signal point (NaN for background).
        dataset: (N,) str.  event: (N,) uint64.
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

    def __len__(self) -> int:
        return len(self.label)

    def take(self, idx: np.ndarray) -> "SkimData":
        """Rows ``idx``."""
        return SkimData(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass
class TwinTrainResult:
    """What :func:`train_twin` produced.

    Attributes:
        onnx_path, checkpoint_path, report_md, report_json: files written.
        plots: name -> PNG path.
        history: per-epoch records (epoch 0 = before training).
        test_metrics: AUCs, dCorr values and closures on the test split.
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


def _read_one(path: Path, lundnet_model: str | None, batch: int) -> dict[str, np.ndarray]:
    import awkward as ak
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InputFileError(f"{path}: skim file not found")
    try:
        names = set(pq.read_schema(str(path)).names)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types
        raise InputFileError(f"{path}: not a readable parquet file: {err}") from err
    needed = [c for c in (*EVENT_FEATURES, *_SCALAR_COLUMNS) if not c.startswith("lundnet_")]
    missing = [c for c in needed if c not in names]
    if missing:
        raise InputFileError(f"{path}: skim columns {missing} missing")
    cols = needed + [c for c in ("lundnet_j0", "lundnet_j1") if c in names]
    arr = ak.from_parquet(str(path), columns=cols)
    out: dict[str, np.ndarray] = {}
    for c in cols:
        if c == "dataset":
            out[c] = np.asarray(ak.to_list(arr[c]), dtype=object)
        else:
            out[c] = ak.to_numpy(arr[c]).astype(np.uint64 if c == "event" else np.float64)
    n = len(arr)
    for jet in ("j0", "j1"):
        col = f"lundnet_{jet}"
        have = out.get(col, np.full(n, np.nan))
        todo = ~np.isfinite(have)
        if todo.any():
            if lundnet_model is None:
                why = "missing" if col not in names else f"NaN in {int(todo.sum())} rows"
                raise InputFileError(f"{path}: column '{col}' is {why}; pass a LundNet ONNX model "
                                     f"(config key 'lundnet_model', option --lundnet) to compute it")
            for c in (f"lund_{jet}", f"lund_{jet}_mask"):
                if c not in names:
                    raise InputFileError(f"{path}: column '{c}' missing, needed to compute '{col}'")
            lund = ak.from_parquet(str(path), columns=[f"lund_{jet}", f"lund_{jet}_mask"])
            idx = np.flatnonzero(todo)
            have = have.copy()
            have[idx] = compute_lundnet_scores(lund[f"lund_{jet}"][idx], lund[f"lund_{jet}_mask"][idx],
                                               lundnet_model, batch)
            log.info("%s: computed %s for %d events with %s", path, col, len(idx), lundnet_model)
        out[col] = have
    return out


def load_skim(paths: Sequence[str | Path], lundnet_model: str | None = None, batch: int = 4096) -> SkimData:
    """Read and concatenate skim parquet files (computing missing LundNet scores).

    Args:
        paths: parquet files written by the processors.
        lundnet_model: LundNet ONNX file, used where ``lundnet_j0/j1`` are missing or NaN.
        batch: jets per onnxruntime call.

    Returns:
        :class:`SkimData`. Raises :class:`InputFileError` naming file and column on bad input.
    """
    if not paths:
        raise InputFileError("no skim files given")
    parts = [(Path(p), _read_one(Path(p), lundnet_model, batch)) for p in paths]
    cat = {k: np.concatenate([d[k] for _, d in parts]) for k in parts[0][1]}
    features = np.stack([cat[c] for c in EVENT_FEATURES], axis=1).astype(np.float32)
    for j, c in enumerate(EVENT_FEATURES):
        bad = ~np.isfinite(features[:, j])
        if bad.any():
            raise InputFileError(f"{[str(p) for p, _ in parts]}: column '{c}' has {int(bad.sum())} non-finite values")
    for c in ("mt", "deta", "weight", "label"):
        bad = ~np.isfinite(cat[c])
        if bad.any():
            raise InputFileError(f"{[str(p) for p, _ in parts]}: column '{c}' has {int(bad.sum())} non-finite values")
    labels = cat["label"]
    if not np.all((labels == 0) | (labels == 1)):
        raise InputFileError(f"{[str(p) for p, _ in parts]}: column 'label' has values other than 0 and 1")
    return SkimData(features=features, mt=cat["mt"], deta=cat["deta"], weight=cat["weight"],
                    label=labels.astype(np.float32), mzprime=cat["mzprime"], rinv=cat["rinv"],
                    dataset=cat["dataset"], event=cat["event"])


def _split(n: int, fractions: Sequence[float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_val]), np.sort(perm[n_train + n_val:])


def _signal_points(d: SkimData) -> list[tuple[float, float]]:
    sig = d.label == 1
    pts = {(float(m), float(r)) for m, r in zip(d.mzprime[sig], d.rinv[sig])}
    return sorted(pts)


def training_weights(d: SkimData, ratio: float, balance_points: bool) -> np.ndarray:
    """Class-rescaled weights: sum(sig)/sum(bkg) = ``ratio`` and mean weight 1; (N,) float64.
    Negative weights are refused (:mod:`svjscout.models.weights`)."""
    from svjscout.models.weights import require_nonnegative

    w = require_nonnegative(d.weight, "the twin skim", d.dataset).copy()
    sig = d.label == 1
    if balance_points and sig.any():
        for m, r in _signal_points(d):
            sel = sig & (d.mzprime == m) & (d.rinv == r)
            total = w[sel].sum()
            if total != 0:
                w[sel] /= total
    s_b, s_s = w[~sig].sum(), w[sig].sum()
    n = len(w)
    if s_b > 0:
        w[~sig] *= n / (1 + ratio) / s_b
    if s_s > 0:
        w[sig] *= n * ratio / (1 + ratio) / s_s
    return w


# ----------------------------------------------------------------------------- losses
class _Tensors:
    """torch views of one split."""

    def __init__(self, d: SkimData, w_train: np.ndarray):
        self.f = torch.from_numpy(d.features)
        self.label = torch.from_numpy(d.label.astype(np.float32))
        self.w = torch.from_numpy(w_train.astype(np.float32))
        self.w_phys = torch.from_numpy(d.weight.astype(np.float32))
        self.mt = torch.from_numpy(d.mt.astype(np.float32))
        self.deta = torch.from_numpy(d.deta.astype(np.float32))
        self.n = len(d)


def _loss_terms(model: TwinMLP, t: _Tensors, idx: torch.Tensor | None, cfg: TwinTrainConfig
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Objective and constraint values on rows ``idx`` (all rows if None)."""
    sl = slice(None) if idx is None else idx
    f, lab, w = t.f[sl], t.label[sl], t.w[sl]
    lx, ly = model.logits(f)
    wsum = w.sum().clamp_min(1e-12)
    bce_x = (w * F.binary_cross_entropy_with_logits(lx, lab, reduction="none")).sum() / wsum
    bce_y = (w * F.binary_cross_entropy_with_logits(ly, lab, reduction="none")).sum() / wsum
    x, y = torch.sigmoid(lx), torch.sigmoid(ly)
    b = lab == 0
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


def constraint_floors(t: "_Tensors", cfg: TwinTrainConfig, resample: bool, seed: int,
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
        b = t.label[idx] == 0
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
    from sklearn.metrics import roc_auc_score

    if len(np.unique(label)) < 2:
        return float("nan")
    return float(roc_auc_score(label, score, sample_weight=weight))


def _test_metrics(model: TwinMLP, d: SkimData, cfg: TwinTrainConfig) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    from svjscout.models.closure import soft_counts
    from svjscout.models.disco import dcorr_numpy

    with torch.no_grad():
        xs, ys = model(torch.from_numpy(d.features))
    x, y = xs.numpy().astype(np.float64), ys.numpy().astype(np.float64)
    sig, bkg = d.label == 1, d.label == 0
    w = d.weight.astype(np.float64)
    metrics: dict[str, Any] = {"n_test": int(len(d)), "n_test_signal": int(sig.sum()), "n_test_background": int(bkg.sum())}
    metrics["auc_all"] = {"x": _auc(d.label, x, w), "y": _auc(d.label, y, w)}
    per_point = {}
    for m, r in _signal_points(d):
        sel = bkg | (sig & (d.mzprime == m) & (d.rinv == r))
        per_point[f"mz{m:g}_rinv{r:g}"] = {"mzprime": m, "rinv": r, "x": _auc(d.label[sel], x[sel], w[sel]),
                                          "y": _auc(d.label[sel], y[sel], w[sel])}
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
        if cfg.floor_policy != "off":
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
        ax.set_title(f"test {title}")
    fig.tight_layout()
    path = out_dir / "xy_plane.png"
    fig.savefig(path, dpi=100)
    return path


def _write_report(out_dir: Path, summary: dict[str, Any], history: list[dict[str, Any]],
                  metrics: dict[str, Any], plots: Mapping[str, Path]) -> tuple[Path, Path]:
    js = out_dir / "report.json"
    js.write_text(json.dumps({"summary": summary, "history": history, "test": metrics}, indent=1, default=float))
    lines = [
        "# Twin MLP training report",
        "",
        f"svjscout {__version__}; best epoch {summary['best_epoch']} of {summary['epochs_run']}; "
        f"train/val/test events {summary['n_train']}/{summary['n_val']}/{summary['n_test']}.",
        "",
        "## Test AUCs (weighted, signal point vs all background)",
        "",
        "| signal point | AUC X | AUC Y |",
        "|---|---|---|",
        f"| all | {metrics['auc_all']['x']:.4f} | {metrics['auc_all']['y']:.4f} |",
    ]
    for name, a in metrics["auc_per_point"].items():
        lines.append(f"| {name} | {a['x']:.4f} | {a['y']:.4f} |")
    eps = summary["config"]["eps"]
    eps_used = summary.get("eps_used", eps)
    floors = summary.get("floors", {})
    test_floor = metrics.get("floors", {})

    def fl(where: Mapping[str, Any], k: str) -> str:
        return f"{where[k][0]:.4f} +- {where[k][1]:.4f}" if k in where else "-"

    lines += ["", "## Test background decorrelation and closure", "",
              "Floor: the value of a perfect pair (X, Y independent of each other, M_T and deta) on a sample of "
              "this size (mean +- sd, docs/twin.md); targets below the training floor are raised to it "
              f"(floor_policy = {summary['config'].get('floor_policy', 'off')}).", "",
              "| term | test value | test floor | eps configured | eps trained | train floor |", "|---|---|---|---|---|---|"]
    kappa = summary["config"]["kappa"]
    test_values = {**metrics.get("dcorr", {}), **{k: v for k, v in metrics.get("closure_soft", {}).items()},
                   **metrics.get("occupancy_soft", {})}
    for k, v in test_values.items():
        label = k if k.startswith("dcorr") else f"{k} (soft, kappa={kappa:g})"
        lines.append(f"| {label} | {v:.4f} | {fl(test_floor, k)} | {eps[k]:g} | {eps_used[k]:.4g} | "
                     f"{fl(floors.get('train', {}), k)} |")
    for k, v in metrics.get("closure_hard", {}).items():
        lines.append(f"| {k} (hard cuts) | {v:.4f} | | | | |")
    counts = metrics.get("abcd_counts_background", {})
    if counts:
        lines += ["", "Test background in the regions at (x0, y0) (weighted, hard cuts):", "",
                  "| plane | A | B | C | D |", "|---|---|---|---|---|"]
        for plane, c in counts.items():
            tot = sum(c.values()) or 1.0
            lines.append(f"| {plane} | " + " | ".join(f"{c[r] / tot:.3f}" for r in "ABCD") + " |")
    last = history[-1]
    lines += ["", "## MDMM multipliers (last epoch)", "", "| constraint | lambda |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in last.get("multipliers", {}).items()]
    lines += ["", "## Plots", ""] + [f"![{k}]({p.name})" for k, p in plots.items()]
    md = out_dir / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return md, js


# ----------------------------------------------------------------------------- training
class _NullProgress:
    """Stand-in for a rich Progress when the bar is off."""

    def __enter__(self) -> "_NullProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def train_twin(skim_paths: Sequence[str | Path], out_dir: str | Path,
               config: TwinTrainConfig | Mapping[str, Any] | None = None) -> TwinTrainResult:
    """Train the twin MLPs on skim parquet files and write ONNX, checkpoint and report.

    Args:
        skim_paths: skim parquet files (columns: the 12 features, mt, deta, weight, label, ...).
        out_dir: output folder (created).
        config: :class:`TwinTrainConfig`, a mapping of its keys, or None (defaults).

    Returns:
        :class:`TwinTrainResult`.
    """
    from svjscout.jobs.progress import make_progress, progress_enabled

    cfg = config if isinstance(config, TwinTrainConfig) else TwinTrainConfig.from_mapping(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    data = load_skim(skim_paths, cfg.lundnet_model, cfg.lundnet_batch)
    i_tr, i_va, i_te = _split(len(data), cfg.split, cfg.seed)
    d_tr, d_va, d_te = data.take(i_tr), data.take(i_va), data.take(i_te)
    for name, d in (("train", d_tr), ("validation", d_va)):
        if (d.label == 0).sum() < 2 or (d.label == 1).sum() < 1:
            raise InputFileError(f"{[str(p) for p in skim_paths]}: the {name} split has "
                                 f"{int((d.label == 0).sum())} background and {int((d.label == 1).sum())} signal "
                                 "events; need >= 2 background and >= 1 signal")
    t_tr = _Tensors(d_tr, training_weights(d_tr, cfg.signal_to_background, cfg.balance_signal_points))
    t_va = _Tensors(d_va, training_weights(d_va, cfg.signal_to_background, cfg.balance_signal_points))
    val_idx = None
    if t_va.n > cfg.val_max_events:
        val_idx = torch.randperm(t_va.n, generator=gen)[: cfg.val_max_events]

    floors: dict[str, dict[str, tuple[float, float]]] = {}
    if cfg.floor_policy != "off":
        floors["train"] = constraint_floors(t_tr, cfg, resample=True, seed=cfg.seed + 1)
        floors["val"] = constraint_floors(t_va, cfg, resample=False, seed=cfg.seed + 2, rows=val_idx)
    eps_used, below = effective_eps(cfg, floors.get("train"))
    eps_val, _ = effective_eps(cfg, floors.get("val"), eps_used)
    for n in below:
        mean, sd = floors["train"][n]
        log.warning("twin: eps(%s) = %g is below its noise floor on this training sample (%.4f +- %.4f)%s", n,
                    cfg.eps[n], mean, sd, f"; training with {eps_used[n]:.4f}" if cfg.floor_policy == "adjust" else "")

    model = TwinMLP(len(EVENT_FEATURES), cfg.hidden, cfg.activation, cfg.dropout)
    model.set_standardisation(d_tr.features, np.abs(t_tr.w.numpy()))
    mdmm = MDMM([Constraint(n, eps_used[n], _per_name(cfg.alpha, n, 1.0), _per_name(cfg.rho, n, 1.0))
                 for n in CONSTRAINTS])
    opt = torch.optim.Adam([
        {"params": list(model.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": list(mdmm.parameters()), "lr": cfg.mdmm_lr, "weight_decay": 0.0},
    ])

    def evaluate() -> dict[str, Any]:
        model.eval()
        with torch.no_grad():
            bce, parts, vals = _loss_terms(model, t_va, val_idx, cfg)
        model.train()
        rec = {k: float(v) for k, v in parts.items()} | {k: float(v) for k, v in vals.items()}
        rec["bce"] = float(bce)
        return rec

    history: list[dict[str, Any]] = []
    val0 = evaluate()
    fig0 = _validation_figure(val0["bce"], val0, eps_val)
    history.append({"epoch": 0, "val": val0, "val_figure": fig0})
    best = (fig0, 0, copy.deepcopy(model.state_dict()), copy.deepcopy(mdmm.state_dict()))
    log.info("epoch 0: val BCE %.4f, figure %.4f", val0["bce"], fig0)
    stale = 0
    t0 = time.time()
    epoch = 0
    with (make_progress() if cfg.progress and progress_enabled() else _NullProgress()) as progress:
        task = progress.add_task("twin MLPs", total=cfg.epochs)
        for epoch in range(1, cfg.epochs + 1):
            sums: dict[str, float] = {}
            for _ in range(cfg.batches_per_epoch):
                idx = torch.randint(t_tr.n, (cfg.batch_size,), generator=gen)
                bce, parts, vals = _loss_terms(model, t_tr, idx, cfg)
                res = mdmm(bce, vals)
                opt.zero_grad(set_to_none=True)
                res.loss.backward()
                opt.step()
                rec = {"loss": _f(res.loss), "bce": _f(bce)} | {k: _f(v) for k, v in parts.items()} | \
                    {k: _f(v) for k, v in vals.items()}
                for k, v in rec.items():
                    sums[k] = sums.get(k, 0.0) + v / cfg.batches_per_epoch
            val = evaluate()
            figure = _validation_figure(val["bce"], val, eps_val)
            summ = mdmm.summary()
            history.append({
                "epoch": epoch, "train": sums, "val": val, "val_figure": figure,
                "multipliers": {k: s["lambda"] for k, s in summ.items()},
                "slacks": {k: s["slack"] for k, s in summ.items()},
            })
            improved = figure < best[0] - cfg.min_delta
            if improved:
                best = (figure, epoch, copy.deepcopy(model.state_dict()), copy.deepcopy(mdmm.state_dict()))
                stale = 0
            else:
                stale += 1
            log.info("epoch %d: train loss %.4f BCE %.4f | val BCE %.4f figure %.4f%s", epoch, sums["loss"],
                     sums["bce"], val["bce"], figure, " *" if improved else "")
            progress.update(task, advance=1, description=f"twin MLPs val {figure:.4f}")
            if stale >= cfg.patience:
                log.info("early stopping after epoch %d (best %d)", epoch, best[1])
                break
    train_seconds = time.time() - t0

    model.load_state_dict(best[2])
    mdmm.load_state_dict(best[3])
    model.eval()
    metrics, x_te, y_te = _test_metrics(model, d_te, cfg)

    summary = {
        "svjscout_version": __version__,
        "skims": [str(p) for p in skim_paths],
        "n_train": int(len(d_tr)), "n_val": int(len(d_va)), "n_test": int(len(d_te)),
        "n_train_signal": int((d_tr.label == 1).sum()), "n_train_background": int((d_tr.label == 0).sum()),
        "datasets": sorted({str(s) for s in data.dataset}),
        "signal_points": [list(p) for p in _signal_points(data)],
        "best_epoch": int(best[1]), "epochs_run": int(epoch), "best_val_figure": float(best[0]),
        "train_seconds": round(train_seconds, 1),
        "eps_used": eps_used, "eps_validation": eps_val, "eps_below_floor": below,
        "floors": {k: {n: list(v) for n, v in f.items()} for k, f in floors.items()},
        "config": cfg.as_dict(),
    }
    auc = {"all": metrics["auc_all"], **{k: {"x": v["x"], "y": v["y"]} for k, v in metrics["auc_per_point"].items()}}
    training_meta = {k: v for k, v in summary.items() if k != "config"} | {
        "config": {k: v for k, v in summary["config"].items() if k not in ("progress", "num_threads")},
        "auc": auc, "test_dcorr": metrics.get("dcorr", {}), "test_closure": metrics.get("closure_hard", {}),
    }
    onnx_path = export_twin_onnx(model, out / "twin.onnx", training_meta, auc=auc)
    ckpt = out / "twin_checkpoint.pt"
    torch.save({"model": model.state_dict(), "hparams": model.hparams, "mdmm": mdmm.state_dict(),
                "mdmm_summary": mdmm.summary(), "optimizer": opt.state_dict(), "config": cfg.as_dict(),
                "eps_used": eps_used, "best_epoch": int(best[1]), "epochs_run": int(epoch), "features": list(EVENT_FEATURES),
                "version": __version__}, ckpt)
    plots = _plot_history(history, out)
    plots["xy_plane"] = _plot_plane(d_te, x_te, y_te, cfg, out)
    md, js = _write_report(out, summary, history, metrics, plots)
    log.info("twin training done: best epoch %d, test AUC X %.3f Y %.3f; wrote %s", best[1],
             metrics["auc_all"]["x"], metrics["auc_all"]["y"], out)
    return TwinTrainResult(onnx_path=onnx_path, checkpoint_path=ckpt, report_md=md, report_json=js, plots=plots,
                           history=history, test_metrics=metrics, best_epoch=int(best[1]), model=model)


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

