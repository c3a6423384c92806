"""The twin's settings: :class:`TwinTrainConfig`, the constraint names and their default targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from svjscout.core import splits
from svjscout.core.cuts import Cuts
from svjscout.core.exceptions import ConfigError
from svjscout.models.closure import DEFAULT_PLANES

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


@dataclass
class TwinTrainConfig:
    """Settings of :func:`train_twin` (defaults: the design's recipe where it has one).

    Attributes:
        seed: seeds the minibatch sampling and the weight initialisation, and the split unless
            ``split_seed`` is given.
        split_seed: seed of the event split alone (None: ``seed``). With LundNet's split seed
            fixed here, ``seed`` can vary for a training-variance study on the same events.
        split: train/val/test fractions (sum 1); default and seed shared with LundNet
            (:mod:`svjscout.core.splits`): keep the test fraction <= LundNet's and the same seed.
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
        objective: ``bce`` (the design's recipe: BCE_X + BCE_Y) or ``analysis`` (maximise the
            expected ``<Z_A>`` of the binned ABCD analysis, models/abcd_objective.py; docs/twin.md).
        init_model: a twin ``twin_checkpoint.pt`` or ONNX to start from (None: random
            initialisation); its architecture replaces ``hidden`` / ``activation``.
        constraints: keep the MDMM constraints (False: the objective alone).
        temperature: (start, end) of the soft regions' temperature of the ``analysis`` objective
            (score units), annealed geometrically over ``epochs`` x ``batches_per_epoch`` steps.
        learn_wp: learn the thresholds (x0, y0) with the ``analysis`` objective (start: x0, y0).
        objective_mt_edges: M_T bin edges of the ``analysis`` objective (None: the analysis's
            card binning, ``AnalysisSettings.mt_edges``).
        objective_plane: the plane whose ``<Z_A>`` is maximised (the signal plane).
        b_floor: events added to the predicted background in the objective (None: one mean
            background MC weight of the plane, the sample's resolution).
    """

    seed: int = splits.DEFAULT_SEED
    split_seed: int | None = None
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
    objective: str = "bce"
    init_model: str | None = None
    constraints: bool = True
    temperature: tuple[float, float] = (0.05, 0.01)
    learn_wp: bool = True
    objective_mt_edges: tuple[float, ...] | None = None
    objective_plane: str = "SP"
    b_floor: float | None = None

    @property
    def event_split_seed(self) -> int:
        """The seed of the event split: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed

    def __post_init__(self) -> None:
        self.split = tuple(float(v) for v in self.split)
        self.hidden = tuple(int(v) for v in self.hidden)
        self.mt_edges = tuple(float(v) for v in self.mt_edges)
        self.planes = {str(k): (float(v[0]), float(v[1])) for k, v in dict(self.planes).items()}
        self.temperature = tuple(float(v) for v in self.temperature)
        if self.objective_mt_edges is not None:
            self.objective_mt_edges = tuple(float(v) for v in self.objective_mt_edges)
        self.eps = {**_DEFAULT_EPS, **{str(k): float(v) for k, v in dict(self.eps).items()}}
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the offending key."""
        if len(self.split) != 3 or min(self.split) <= 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"twin config key 'split' is {list(self.split)}, "
                              "expected 3 positive fractions summing to 1")
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
            raise ConfigError(f"twin config key 'eps' has unknown constraints {unknown}, "
                              f"expected some of {list(CONSTRAINTS)}")
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
            raise ConfigError(f"twin config key 'checkpoint_every' is {self.checkpoint_every!r}, "
                              "expected an integer >= 0")
        if str(self.device).split(":")[0] not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"twin config key 'device' is {self.device!r}, expected auto, cpu or cuda")
        if self.objective not in ("bce", "analysis"):
            raise ConfigError(f"twin config key 'objective' is {self.objective!r}, expected bce or analysis")
        if len(self.temperature) != 2 or not 0 < self.temperature[1] <= self.temperature[0]:
            raise ConfigError(f"twin config key 'temperature' is {list(self.temperature)}, expected "
                              "[start, end] with start >= end > 0")
        if self.objective_mt_edges is not None and (
                len(self.objective_mt_edges) < 2
                or any(b <= a for a, b in zip(self.objective_mt_edges, self.objective_mt_edges[1:]))):
            raise ConfigError(f"twin config key 'objective_mt_edges' is {list(self.objective_mt_edges)}, "
                              "expected >= 2 increasing values")
        if self.objective_plane not in self.planes:
            raise ConfigError(f"twin config key 'objective_plane' is {self.objective_plane!r}, expected one of "
                              f"{sorted(self.planes)}")
        if self.b_floor is not None and not float(self.b_floor) >= 0:
            raise ConfigError(f"twin config key 'b_floor' is {self.b_floor!r}, expected >= 0 or null")
        self.cuts()

    def cuts(self):
        """The analysis preselection as a :class:`~svjscout.processors.selection.Cuts`."""
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
        d["temperature"] = list(self.temperature)
        if self.objective_mt_edges is not None:
            d["objective_mt_edges"] = list(self.objective_mt_edges)
        d["analysis_cuts"] = self.cuts().model_dump()  # the cuts applied, defaults included
        return d
