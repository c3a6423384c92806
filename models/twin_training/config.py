"""The twin's settings: :class:`TwinTrainConfig`, the constraint names and their default targets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from svjscout.core import splits
from svjscout.core.cuts import Cuts
from svjscout.core.exceptions import ConfigError
from svjscout.models.closure import DEFAULT_PLANES, REDUCTIONS
from svjscout.models.mdmm import PROJECTIONS

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
        split: 4 fractions (train, val, select, final) (default :data:`splits.DEFAULT_FRACTIONS4`,
            issue 29): training, validation (epochs, early stopping), working-point selection
            (``select``) and an untouched ``final`` subset on which every quoted figure (test
            metrics, report, ONNX metadata) is computed; it must nest in LundNet's 3-way split
            (:func:`splits.check_nested4`: final <= LundNet's test fraction, select + final <=
            its val + test, the same seed). 3 fractions (train, val, test): the split before
            issue 29 (jobs/twin_train_shipped.yaml), figures on ``test``, no select subset.
            docs/training_data.md.
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
        balance_signal_points: give every (mzprime, rinv) point the same total weight first (default
            True: the AUCs and ``<Z_A>`` weigh the signal points equally, so the BCE does too).
        x0, y0: reference working point: the occupancy constraints, the null scores of the noise
            floors, the plane figure, the start of ``objective: analysis``, ``report_wp`` by
            default, and the closure terms' only working point when ``closure_wps`` and
            ``closure_wp_range`` are both null (the behaviour before issue 29).
        closure_wps: fixed working points [[x0, y0], ...] of the closure terms, used at every step
            (None: none).
        closure_wp_range: ``{x: [lo, hi], y: [lo, hi]}``: the closure terms also hold at
            ``closure_wps_per_step`` working points drawn per step (uniformly, seeded) from the
            grid of multiples of ``closure_wp_step`` inside this range; validation and test
            evaluate every grid point (None: no range). Default x, y in [0.3, 0.9] (docs/twin.md).
        closure_wp_step: grid step of the drawn working points (0.025: the cards' 40 score bins,
            the grid of the datacards scan, 33 x 33 points in [0.1, 0.9]).
        closure_wps_per_step: working points drawn from ``closure_wp_range`` per training step.
        closure_reduce: ``max`` | ``smooth_max`` | ``mean``: fold of the closure values over the
            working points (the constraint value).
        closure_min_neff: a working point (and an M_T bin) enters the closure terms only where each
            of its four soft regions holds Kish N_eff >= this (the datacards scan's guard
            ``min_neff``, 10: the analysis cannot use the others and their closure is noise; 0:
            every point, the behaviour before issue 29).
        closure_temperature: temperature T of ``smooth_max`` (closure units):
            ``T log(mean exp(C / T))``, at most ``T log k`` below the max of k values.
        report_wp: the working point the analysis uses ([x0, y0]; None: (x0, y0)): the report
            states the hard-cut closure there.
        kappa: sharpness of the soft step ``sigmoid(kappa u)`` (1/score units).
        planes: plane name -> [lo, hi) on |deta|.
        mt_edges: M_T bin edges in GeV for the per-bin closure.
        bin_reduce: ``max`` (default: the worst bin; one bad bin cannot hide) | ``smooth_max`` |
            ``mean`` fold of the per-bin closures.
        eps: constraint name -> bound (all of :data:`CONSTRAINTS`; missing ones take defaults).
        min_region_fraction: every control region A, C, D of each plane must hold at least this
            fraction of the plane's background (soft counts); the ``occupancy_<plane>``
            constraints (0 switches them off). Not in docs/physics.md: see ``docs/twin.md``.
        floor_policy: ``adjust`` | ``warn`` | ``off``: what to do with a target ``eps`` below the
            constraint's synthetic noise floor on this sample (see :func:`constraint_floors`).
            ``adjust`` trains with ``max(eps, floor)`` and logs it, ``warn`` only logs (the
            default of jobs/twin_train.yaml: eps is chosen on physics, not raised to floors).
        permutation_floor_draws: after training, the noise floor of every dCorr constraint on the
            trained scores of the quoted (final) subset's background by block permutation among
            parents (:func:`~.floors.twin_dcorr_floors`), this many draws (0: none). The report
            states value, floor mean +- sd and z.
        permutation_floor_estimator: ``u`` (bias-corrected dCorr^2, ~0 under independence at any
            sample size) | ``v`` (the V-statistic dCorr the constraints use).
        floor_draws: null draws per floor estimate.
        floor_sigmas: floor = mean + ``floor_sigmas`` x standard deviation of the null values.
        floor_tail_fraction: fraction of the null scores above x0 (and above y0).
        alpha, rho: MDMM scale and damping (one value for all constraints, or per name).
        mdmm_projection: ``clamp`` (multipliers kept >= 0 after every step: projected dual
            ascent, models/mdmm.py) | ``none`` (the unprojected update of models before issue 29).
        patience: early-stopping patience in epochs.
        min_delta: minimal improvement of the validation figure.
        val_max_events: cap on validation events per evaluation (random fixed subset).
        lundnet_model: LundNet ONNX file used when ``lundnet_j0/j1`` are missing or NaN.
        lundnet_batch: jets per onnxruntime call.
        lundnet_oof: path of the ``lundnet_oof.parquet`` written by ``train_lundnet`` with
            ``crossfit_k`` > 0 (None: off). The twin's train and val events then take their
            ``lundnet_j0/j1`` from it (out-of-fold scores, looked up by dataset, run, lumi, event;
            a missing event is an error naming the file and the event); select/final (test) keep
            the deployed model's scores (the skim's, or ``lundnet_model``'s).
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
        nonclosure_halves: ``analysis``: the non-closure term from two halves of the parents,
            ``(n_B - nhat)_1 (n_B - nhat)_2`` (unbiased for delta^2, not fittable; false: the
            square of the same events). docs/analysis_objective.md, for this key and those below.
        neff_min: ``analysis``: background Kish N_eff every region and M_T bin should hold (the
            scan's rule, 10); also the rule of the working point chosen for stopping.
        neff_weight: ``analysis``: weight of the penalty ``sum relu(1 - N_eff / neff_min)^2`` (0: off).
        bootstrap_replicas: ``analysis``: Poisson-bootstrap replicas per step (weights
            ``w x Poisson(1)`` per parent, seeded); 0: the plain sample.
        bootstrap_sd: ``analysis``: maximise ``mean - bootstrap_sd x sd`` of the replicas' Z.
        stop_wp: ``analysis``: ``selected`` (early stopping on the hard-cut Z at the working point
            chosen on half of the validation parents, quoted on the other half) or ``learned``
            (the hard-cut Z of all validation at the learned thresholds).
        stop_bootstrap: ``analysis``: bootstrap replicas over parents of the report's 68 %
            intervals (0: none).
        trust_region: ``analysis``: weight of ``mean((x - x_init)^2 + (y - y_init)^2)`` towards
            the scores of ``init_model`` (0: off).
        init_multipliers: ``analysis``: start the MDMM multipliers from ``init_model``'s (clamped
            at 0) instead of 0.
        closure_at_wp: ``analysis``: the MDMM closure and occupancy at the current (learned)
            thresholds too, not only at (x0, y0) / the configured working points.
        signal_contamination: ``analysis``: signal in A, C and D enters the ABCD prediction (as
            in the datacards).
        nonclosure_grad: ``analysis``: the non-closure term passes its gradient (false: its value
            enters Z without gradient, so its noise cannot be fitted; closure is left to MDMM).
    """

    seed: int = splits.DEFAULT_SEED
    split_seed: int | None = None
    split: tuple[float, ...] = splits.DEFAULT_FRACTIONS4
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
    balance_signal_points: bool = True
    x0: float = 0.775
    y0: float = 0.875
    closure_wps: tuple[tuple[float, float], ...] | None = None
    closure_wp_range: dict[str, tuple[float, float]] | None = field(
        default_factory=lambda: {"x": (0.3, 0.9), "y": (0.3, 0.9)})
    closure_wp_step: float = 0.025
    closure_wps_per_step: int = 4
    closure_reduce: str = "max"
    closure_temperature: float = 0.01
    closure_min_neff: float = 10.0
    report_wp: tuple[float, float] | None = None
    kappa: float = 50.0
    planes: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PLANES))
    mt_edges: tuple[float, ...] = (650.0, 750.0, 850.0, 1000.0, 1200.0, 1500.0, 2000.0, 3000.0, 6000.0)
    bin_reduce: str = "max"
    eps: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_EPS))
    min_region_fraction: float = 0.02
    floor_policy: str = "adjust"
    floor_draws: int = 8
    floor_sigmas: float = 1.0
    permutation_floor_draws: int = 50
    permutation_floor_estimator: str = "u"
    floor_tail_fraction: float = 0.2
    alpha: float | dict[str, float] = 1.0
    rho: float | dict[str, float] = 1.0
    mdmm_projection: str = "clamp"
    patience: int = 20
    min_delta: float = 0.0
    val_max_events: int = 200_000
    lundnet_model: str | None = None
    lundnet_batch: int = 4096
    lundnet_oof: str | None = None
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
    nonclosure_halves: bool = True
    neff_min: float = 10.0
    neff_weight: float = 1.0
    bootstrap_replicas: int = 8
    bootstrap_sd: float = 1.0
    stop_wp: str = "selected"
    stop_bootstrap: int = 200
    trust_region: float = 10.0
    init_multipliers: bool = True
    closure_at_wp: bool = True
    signal_contamination: bool = True
    nonclosure_grad: bool = True

    @property
    def four_way(self) -> bool:
        """True with 4 split fractions (train, val, select, final)."""
        return len(self.split) == 4

    @property
    def quoted_fraction(self) -> float:
        """Fraction of the subset every quoted figure is on: ``final`` (4-way) or ``test`` (3-way)."""
        return float(self.split[-1])

    @property
    def quoted_subset(self) -> str:
        """Name of the subset every quoted figure is on: ``final`` or ``test``."""
        return "final" if self.four_way else "test"

    @property
    def event_split_seed(self) -> int:
        """The seed of the event split: ``split_seed``, else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed

    def __post_init__(self) -> None:
        self.split = tuple(float(v) for v in self.split)
        if isinstance(self.lundnet_oof, Path):
            self.lundnet_oof = str(self.lundnet_oof)
        self.hidden = tuple(int(v) for v in self.hidden)
        self.mt_edges = tuple(float(v) for v in self.mt_edges)
        self.planes = {str(k): (float(v[0]), float(v[1])) for k, v in dict(self.planes).items()}
        self.temperature = tuple(float(v) for v in self.temperature)
        if self.objective_mt_edges is not None:
            self.objective_mt_edges = tuple(float(v) for v in self.objective_mt_edges)
        self.eps = {**_DEFAULT_EPS, **{str(k): float(v) for k, v in dict(self.eps).items()}}
        self._normalise_wps()
        self.validate()

    def _normalise_wps(self) -> None:
        """Working-point keys to tuples of floats (ConfigError naming the key on a wrong shape)."""
        def pair(value: Any, key: str) -> tuple[float, float]:
            try:
                a, b = (float(v) for v in value)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"twin config key '{key}' has {value!r}, expected a pair [x0, y0]") from err
            return a, b

        if self.closure_wps is not None:
            if isinstance(self.closure_wps, (str, bytes)) or not hasattr(self.closure_wps, "__iter__"):
                raise ConfigError(f"twin config key 'closure_wps' is {self.closure_wps!r}, "
                                  "expected a list of [x0, y0] pairs or null")
            self.closure_wps = tuple(pair(v, "closure_wps") for v in self.closure_wps)
        if self.report_wp is not None:
            self.report_wp = pair(self.report_wp, "report_wp")
        if self.closure_wp_range is not None:
            rng = self.closure_wp_range
            if not isinstance(rng, Mapping) or set(rng) != {"x", "y"}:
                raise ConfigError(f"twin config key 'closure_wp_range' is {rng!r}, "
                                  "expected {x: [lo, hi], y: [lo, hi]} or null")
            self.closure_wp_range = {k: pair(rng[k], f"closure_wp_range.{k}") for k in ("x", "y")}

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the offending key."""
        if len(self.split) not in (3, 4) or min(self.split) <= 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(f"twin config key 'split' is {list(self.split)}, expected 4 (train, val, select, "
                              "final) or 3 (train, val, test) positive fractions summing to 1")
        if not isinstance(self.permutation_floor_draws, int) or isinstance(self.permutation_floor_draws, bool) \
                or self.permutation_floor_draws < 0 or self.permutation_floor_draws == 1:
            raise ConfigError(f"twin config key 'permutation_floor_draws' is {self.permutation_floor_draws!r}, "
                              "expected 0 (off) or an integer >= 2")
        if self.permutation_floor_estimator not in ("u", "v"):
            raise ConfigError(f"twin config key 'permutation_floor_estimator' is "
                              f"{self.permutation_floor_estimator!r}, expected u or v")
        if self.lundnet_oof is not None and (not isinstance(self.lundnet_oof, str) or not self.lundnet_oof):
            raise ConfigError(f"twin config key 'lundnet_oof' is {self.lundnet_oof!r}, expected a path or null")
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
        for key in ("bin_reduce", "closure_reduce"):
            if getattr(self, key) not in REDUCTIONS:
                raise ConfigError(f"twin config key '{key}' is {getattr(self, key)!r}, expected one of "
                                  f"{list(REDUCTIONS)}")
        if not float(self.closure_min_neff) >= 0:
            raise ConfigError(f"twin config key 'closure_min_neff' is {self.closure_min_neff!r}, expected >= 0")
        if not float(self.closure_temperature) > 0:
            raise ConfigError(f"twin config key 'closure_temperature' is {self.closure_temperature!r}, expected > 0")
        if self.mdmm_projection not in PROJECTIONS:
            raise ConfigError(f"twin config key 'mdmm_projection' is {self.mdmm_projection!r}, expected one of "
                              f"{list(PROJECTIONS)}")
        for i, (a, b) in enumerate(self.closure_wps or ()):
            if not (0 < a < 1 and 0 < b < 1):
                raise ConfigError(f"twin config key 'closure_wps' entry {i} is [{a}, {b}], "
                                  "expected thresholds in (0, 1)")
        if self.report_wp is not None and not all(0 < v < 1 for v in self.report_wp):
            raise ConfigError(f"twin config key 'report_wp' is {list(self.report_wp)}, expected thresholds in (0, 1)")
        if not 0 < float(self.closure_wp_step) <= 0.5:
            raise ConfigError(f"twin config key 'closure_wp_step' is {self.closure_wp_step!r}, expected in (0, 0.5]")
        if not isinstance(self.closure_wps_per_step, int) or self.closure_wps_per_step < 1:
            raise ConfigError(f"twin config key 'closure_wps_per_step' is {self.closure_wps_per_step!r}, "
                              "expected a positive integer")
        if self.closure_wp_range is not None:
            for axis, (lo, hi) in self.closure_wp_range.items():
                if not 0 < lo <= hi < 1:
                    raise ConfigError(f"twin config key 'closure_wp_range.{axis}' is [{lo}, {hi}], expected "
                                      "0 < lo <= hi < 1")
            xs, ys = self.closure_wp_grid()
            if not len(xs) or not len(ys):
                raise ConfigError(f"twin config key 'closure_wp_range' {self.closure_wp_range} holds no multiple of "
                                  f"closure_wp_step = {self.closure_wp_step}")
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
        for key in ("nonclosure_halves", "init_multipliers", "closure_at_wp", "signal_contamination",
                    "nonclosure_grad"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"twin config key '{key}' is {getattr(self, key)!r}, expected true or false")
        for key in ("neff_min", "neff_weight", "bootstrap_sd", "trust_region"):
            if not (isinstance(getattr(self, key), (int, float)) and math.isfinite(getattr(self, key))
                    and getattr(self, key) >= 0):
                raise ConfigError(f"twin config key '{key}' is {getattr(self, key)!r}, expected a number >= 0")
        for key in ("bootstrap_replicas", "stop_bootstrap"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value == 1:
                raise ConfigError(f"twin config key '{key}' is {value!r}, expected 0 (off) or an integer >= 2")
        if self.stop_wp not in ("selected", "learned"):
            raise ConfigError(f"twin config key 'stop_wp' is {self.stop_wp!r}, expected selected or learned")
        self.cuts()

    def closure_wp_grid(self) -> tuple[list[float], list[float]]:
        """The thresholds on X and on Y of the drawn working points: the multiples of
        ``closure_wp_step`` inside ``closure_wp_range`` (empty lists without a range)."""
        if self.closure_wp_range is None:
            return [], []
        step = float(self.closure_wp_step)

        def axis(lo: float, hi: float) -> list[float]:
            first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
            return [round(i * step, 10) for i in range(first, last + 1)]

        return axis(*self.closure_wp_range["x"]), axis(*self.closure_wp_range["y"])

    @property
    def reference_wp(self) -> tuple[float, float]:
        """The working point the report states closure at: ``report_wp``, else (x0, y0)."""
        return tuple(self.report_wp) if self.report_wp is not None else (float(self.x0), float(self.y0))

    def closure_eval_wps(self) -> list[tuple[float, float]]:
        """Working points of the closure terms on validation and test: ``closure_wps`` and every
        grid point of ``closure_wp_range``; (x0, y0) alone when both are null."""
        fixed = list(self.closure_wps or ())
        xs, ys = self.closure_wp_grid()
        grid = [(a, b) for a in xs for b in ys]
        wps = fixed + [p for p in grid if p not in fixed]
        return wps or [(float(self.x0), float(self.y0))]

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
        d["closure_wps"] = None if self.closure_wps is None else [list(p) for p in self.closure_wps]
        d["closure_wp_range"] = (None if self.closure_wp_range is None
                                 else {k: list(v) for k, v in self.closure_wp_range.items()})
        d["report_wp"] = None if self.report_wp is None else list(self.report_wp)
        if self.objective_mt_edges is not None:
            d["objective_mt_edges"] = list(self.objective_mt_edges)
        d["analysis_cuts"] = self.cuts().model_dump()  # the cuts applied, defaults included
        return d
