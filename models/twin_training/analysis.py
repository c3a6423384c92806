"""The analysis-aware objective of the twin (``objective: analysis``): ``<Z_A>`` of the binned ABCD
analysis (:mod:`svjscout.models.abcd_objective`) on the training split, with annealed soft
regions and optionally learned thresholds; and the start from a trained pair (``init_model``).

Training events: the analysis-selected events of the training split in the objective's plane
(``objective_plane``, default SP), all of them in every step while they number at most
``batch_size``, else ``batch_size`` drawn uniformly with replacement (yields scaled by
N / batch_size, unbiased). Yields are in events at the skim's luminosity divided by the split's
fraction (and the reservoir's sampling fraction), so that they estimate the full sample's.
Validation and test figures use hard cuts (the real analysis).

What keeps the objective from fitting the noise of its own events (issue 29, item 6; each a
config key, docs/analysis_objective.md):

* ``nonclosure_halves``: the non-closure term from two halves of the parents, re-drawn every step
  (:func:`~svjscout.models.abcd_objective.halves_nonclosure`);
* ``neff_min`` / ``neff_weight``: the penalty ``neff_weight x sum relu(1 - N_eff / neff_min)^2``
  over the regions and M_T bins of the background (Kish N_eff in parents, soft memberships);
* ``bootstrap_replicas`` / ``bootstrap_sd``: every step evaluates ``R`` Poisson-bootstrap replicas
  (weights ``w x Poisson(1)`` per parent, seeded by ``seed`` and the step; the MC variances
  ``sum r (w g)^2``, linear in the factors like the yields, so that each replica is unbiased for
  the sample) and maximises ``mean(Z_r) - bootstrap_sd x sd(Z_r)``;
* ``stop_wp: selected``: early stopping on the hard-cut ``<Z_A>`` at a working point chosen on the
  grid of the scan (33 x 33 in [0.1, 0.9], N_eff >= ``neff_min``) on one half of the validation
  parents and quoted on the other half; the final report quotes it on the test split with
  bootstrap confidence intervals over parents;
* ``trust_region``: ``trust_region x mean((x - x_init)^2 + (y - y_init)^2)`` over the objective's
  events, towards the scores of the pair it started from; ``init_multipliers``: the MDMM
  multipliers of that pair loaded (clamped at 0), not restarted at 0; ``closure_at_wp``: the MDMM
  closure and occupancy constraints evaluated at the current (learned) thresholds;
* ``signal_contamination``: signal in A, C and D enters the prediction, as in the datacards.
* ``nonclosure_grad``: false keeps the non-closure's value in Z but not its gradient (the halves
  product is unbiased at a fixed network, but training still fits the sample's own non-closure
  through its gradient: docs/analysis_objective.md, benchmarks/bench_nonclosure_fit.py).

The objective's tensors and parameters live on the model's device.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.models.abcd_objective import (
    ObjectiveSettings,
    abcd_significance,
    kish_neff,
    mt_bin_index,
    neff_shortfall,
    parent_halves,
    significance_from_yields,
)
from svjscout.models.closure import plane_mask
from svjscout.models.export import read_metadata
from svjscout.models.twin import TwinMLP
from svjscout.models.twin_training.checkpoint import load_checkpoint
from svjscout.models.twin_training.config import TwinTrainConfig
from svjscout.models.twin_training.data import SkimData, analysis_mask
from svjscout.processors.settings import AnalysisSettings

__all__ = ["AnalysisObjective", "load_twin_init", "objective_edges", "init_multipliers", "region_grid",
           "poisson_replica_weights", "report_lines"]

log = logging.getLogger("svjscout.models.train_twin")

_WP_LO, _WP_HI = 0.1, 0.9  # the scan's in-bounds range of the thresholds
_HARD_T = 1e-6  # "temperature" of the hard-cut evaluation (scores are float32: steps of ~1e-7)
_GRID = np.round(np.linspace(_WP_LO, _WP_HI, 33), 10)  # the scan's default grid (datacards/scan.py)
_SELECT_SALT = 0x5E1EC7  # the fixed split of the validation parents: selection (0) / quote (1)


def objective_edges(cfg: TwinTrainConfig) -> tuple[float, ...]:
    """The M_T binning of the objective: ``objective_mt_edges`` or the analysis's card binning."""
    if cfg.objective_mt_edges is not None:
        return tuple(cfg.objective_mt_edges)
    return tuple(AnalysisSettings().mt_edges)


def load_twin_init(path: str | Path) -> TwinMLP:
    """A trained twin pair to start from: ``twin_checkpoint.pt`` or a twin ONNX written by
    :func:`~svjscout.models.twin.export_twin_onnx` (its initialisers are the state dict)."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: the twin model to start from (init_model) does not exist")
    if p.suffix == ".pt":
        return load_checkpoint(p)[0]
    try:
        meta = read_metadata(p)
        proto = onnx.load(str(p))
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise InputFileError(f"{p}: cannot read the twin ONNX to start from: {err}") from err
    cfg = (meta.get("training") or {}).get("config") or {}
    state = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in proto.graph.initializer}
    n_features = int(state["mean"].numel()) if "mean" in state else 0
    model = TwinMLP(n_features, cfg.get("hidden", (64, 64, 64)), cfg.get("activation", "silu"), 0.0)
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise InputFileError(f"{p}: not a twin ONNX of this version: initialisers {missing} missing")
    return model


def init_multipliers(path: str | Path) -> dict[str, float]:
    """The MDMM multipliers the pair at ``path`` ended with: a ``twin_checkpoint.pt``'s
    ``mdmm_summary`` or a twin ONNX's ``multipliers_shipped`` (empty if it records none)."""
    p = Path(path)
    if p.suffix == ".pt":
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
        return {k: float(v["lambda"]) for k, v in (ckpt.get("mdmm_summary") or {}).items()}
    training = read_metadata(p).get("training") or {}
    return {k: float(v) for k, v in (training.get("multipliers_shipped") or {}).items()}


def poisson_replica_weights(group: torch.Tensor, replicas: int, seed: int) -> torch.Tensor:
    """(replicas, n) Poisson(1) bootstrap factors, one per parent (``group`` ids >= 0, copies share
    it), drawn on the CPU from ``seed`` alone (the same on every device), on ``group``'s device."""
    gen = torch.Generator().manual_seed(int(seed))
    n_groups = int(group.max()) + 1 if group.numel() else 0
    lam = torch.ones(int(replicas), n_groups, dtype=torch.float64)
    return torch.poisson(lam, generator=gen).to(group.device)[:, group]


def region_grid(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, cell: torch.Tensor, n_cells: int,
                grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard-cut yields and sum of squared weights of every region at every grid point.

    Returns ``(n, v)``, each (gx, gy, n_cells, 4) in [A, B, C, D] order, for the thresholds
    ``(grid[i], grid[j])`` (regions as the analysis: A X > x0, Y <= y0; B X > x0, Y > y0; ...):
    one 2D histogram per cell in the grid's intervals, then suffix sums (like the scan)."""
    g = grid.numel()
    ok = cell >= 0
    x, y, w, cell = x[ok], y[ok], w[ok], cell[ok]
    ix = torch.bucketize(x.contiguous(), grid, right=False)  # number of grid values < x: X > grid[i] iff ix > i
    iy = torch.bucketize(y.contiguous(), grid, right=False)
    key = (cell * (g + 1) + ix) * (g + 1) + iy
    out = []
    for val in (w, w * w):
        h = torch.zeros(n_cells * (g + 1) * (g + 1), dtype=val.dtype, device=val.device).index_add(0, key, val)
        h = h.reshape(n_cells, g + 1, g + 1)
        hx = h.flip(1).cumsum(1).flip(1)[:, 1:, :]  # (cells, g, g+1): X above grid[i]
        tot_x = h.sum(1, keepdim=True)  # (cells, 1, g+1)
        above = hx.flip(2).cumsum(2).flip(2)[:, :, 1:]  # X above, Y above: (cells, g, g)
        xa_all = hx.sum(2)  # (cells, g)
        ya_all = tot_x.flip(2).cumsum(2).flip(2)[:, :, 1:]  # Y above (any X): (cells, 1, g)
        total = h.sum((1, 2))[:, None, None]
        reg_b = above
        reg_a = xa_all[:, :, None] - above
        reg_d = ya_all - above
        reg_c = total - reg_a - reg_b - reg_d
        out.append(torch.stack([reg_a, reg_b, reg_c, reg_d], dim=-1).permute(1, 2, 0, 3))
    return out[0], out[1]


class AnalysisObjective(nn.Module):
    """``<Z_A>`` of the training split, the annealing, the (learned) thresholds and the remedies
    against fitting the noise (module doc).

    Args:
        cfg: the training settings.
        train: the training split's events (all rows of the split, or a uniform sample of
            them); ``sample_fraction``: that sample's share of the split's events.
        points: the signal points (m_Z', r_inv), in the order of the report.
        device: torch device (the objective's tensors and parameters are moved there).
        anchor: the pair training starts from (``init_model``): its scores on the objective's
            events are the centre of the trust region (None: no trust region).
    """

    def __init__(self, cfg: TwinTrainConfig, train: SkimData, points: list[tuple[float, float]],
                 sample_fraction: float = 1.0, device: Any = "cpu", anchor: TwinMLP | None = None):
        super().__init__()
        self.cfg, self.points, self.device = cfg, [tuple(p) for p in points], device
        if cfg.objective_plane not in cfg.planes:
            raise ConfigError(f"twin config key 'objective_plane' is {cfg.objective_plane!r}, "
                              f"not one of the planes {sorted(cfg.planes)}")
        self.edges = objective_edges(cfg)
        self.total_steps = max(1, cfg.epochs * cfg.batches_per_epoch)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        if cfg.learn_wp:
            self.wp_raw = nn.Parameter(torch.tensor([self._raw(cfg.x0), self._raw(cfg.y0)], dtype=torch.float64))
        else:
            self.register_buffer("wp_raw", torch.tensor([self._raw(cfg.x0), self._raw(cfg.y0)], dtype=torch.float64))
        self._views: dict[tuple[int, str], tuple[SkimData, dict[str, torch.Tensor] | None]] = {}
        self.train_t = self.tensors(train)
        if (self.train_t is None or not bool((self.train_t["point"] >= 0).any())
                or not bool((self.train_t["point"] < 0).any())):
            raise InputFileError(f"analysis objective: the training split has no signal or no background events in "
                                 f"the plane {cfg.objective_plane} after the analysis preselection")
        w_bkg = self.train_t["w"][self.train_t["point"] < 0]
        scale = 1.0 / (cfg.split[0] * sample_fraction)
        b_floor = float(w_bkg.mean()) * scale if cfg.b_floor is None else float(cfg.b_floor)
        self.settings = ObjectiveSettings(mt_edges=self.edges, yield_scale=scale, b_floor=b_floor,
                                          nonclosure_halves=cfg.nonclosure_halves,
                                          signal_contamination=cfg.signal_contamination,
                                          nonclosure_grad=cfg.nonclosure_grad)
        #: the hard-cut evaluation: the scan's non-closure (same events), the cards' signal model
        self.hard_settings = replace(self.settings, nonclosure_halves=False)
        self.selected: tuple[float, float] | None = None  # working point chosen on validation parents
        # the chosen point met the N_eff rule only with the M_T bins summed: its <Z_A> is evaluated so,
        # on one M_T bin spanning the objective's edges
        self.selected_merged = False
        self.merged_edges = (self.edges[0], self.edges[-1])
        self.last_terms: dict[str, float] = {}
        n = int(self.train_t["w"].numel())
        self.has_anchor = anchor is not None and cfg.trust_region > 0
        if self.has_anchor:
            with torch.no_grad():
                dev = next(anchor.parameters()).device
                was_training = anchor.training
                anchor.eval()
                lx, ly = anchor.logits(self.train_t["f"].to(dev))
                anchor.train(was_training)
            self.register_buffer("anchor_xy", torch.stack([torch.sigmoid(lx), torch.sigmoid(ly)], 1)
                                 .to(device=self.device, dtype=torch.float64))
        else:
            self.register_buffer("anchor_xy", torch.zeros(n, 2, dtype=torch.float64, device=self.device))
        self.to(device)  # the learned thresholds with the model (the CUDA path)

    @staticmethod
    def _raw(v: float) -> float:
        u = (float(v) - _WP_LO) / (_WP_HI - _WP_LO)
        if not 0 < u < 1:
            raise ConfigError(f"twin config: threshold {v} outside ({_WP_LO}, {_WP_HI}), the scan's range")
        return math.log(u / (1 - u))

    def thresholds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, y0) in (0.1, 0.9)."""
        wp = _WP_LO + (_WP_HI - _WP_LO) * torch.sigmoid(self.wp_raw)
        return wp[0], wp[1]

    def wp(self) -> tuple[float, float]:
        """(x0, y0) as floats."""
        x0, y0 = self.thresholds()
        return float(x0.detach()), float(y0.detach())

    def temperature(self) -> float:
        """Geometric annealing from ``temperature[0]`` to ``temperature[1]`` over the planned steps."""
        t0, t1 = self.cfg.temperature
        frac = min(1.0, float(self.steps) / self.total_steps)
        return float(t0 * (t1 / t0) ** frac)

    def constraint_config(self) -> TwinTrainConfig:
        """The settings of the MDMM constraints for this step: with ``closure_at_wp`` the current
        thresholds are (x0, y0) (the occupancy's working point) and are added to ``closure_wps``
        (the working points every step's closure holds at, with those drawn from
        ``closure_wp_range``), so that the closure follows the thresholds as they move."""
        if not self.cfg.closure_at_wp:
            return self.cfg
        x0, y0 = self.wp()
        fixed = tuple(getattr(self.cfg, "closure_wps", None) or ())
        extra = {"closure_wps": fixed + ((x0, y0),)} if hasattr(self.cfg, "closure_wps") else {}
        return replace(self.cfg, x0=x0, y0=y0, **extra)

    def step_wps(self, wps: torch.Tensor | None) -> torch.Tensor | None:
        """The working points of a training step's closure terms ((k, 2); None: the evaluation
        points of :meth:`constraint_config`) plus, with ``closure_at_wp``, the current thresholds."""
        if wps is None or not self.cfg.closure_at_wp:
            return wps
        x0, y0 = self.wp()
        return torch.cat([wps, torch.tensor([[x0, y0]], dtype=wps.dtype, device=wps.device)])

    def load_multipliers(self, mdmm: nn.Module) -> dict[str, float]:
        """With ``init_multipliers`` and an ``init_model``, set the MDMM multipliers to the starting
        pair's (by constraint name, clamped at 0: a negative multiplier rewards violation, issue
        29); names the pair does not record keep their start. Returns what was loaded."""
        if not (self.cfg.init_multipliers and self.cfg.init_model and self.cfg.constraints):
            return {}
        try:
            values = init_multipliers(self.cfg.init_model)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
            raise InputFileError(f"{self.cfg.init_model}: cannot read the MDMM multipliers to start from "
                                 f"(init_multipliers): {err}") from err
        names = list(getattr(mdmm, "names", []))
        loaded = {n: max(0.0, values[n]) for n in names if n in values}
        with torch.no_grad():
            for i, n in enumerate(names):
                if n in loaded:
                    mdmm.lambdas[i] = loaded[n]
        clamped = sorted(n for n in loaded if values[n] < 0)
        log.info("twin: MDMM multipliers loaded from %s (%d of %d%s)", self.cfg.init_model, len(loaded), len(names),
                 f"; clamped to 0: {clamped}" if clamped else "")
        return loaded

    def tensors(self, d: SkimData) -> dict[str, torch.Tensor] | None:
        """The objective's view of events: analysis-selected, in the plane; point index, group."""
        cfg = self.cfg
        keep = analysis_mask(d, cfg.cuts()) & plane_mask(torch.as_tensor(d.deta),
                                                         cfg.planes[cfg.objective_plane]).numpy()
        d = d.take(np.flatnonzero(keep))
        if len(d) == 0:
            return None
        point = np.full(len(d), -1, np.int64)
        for k, (m, r) in enumerate(self.points):
            point[(d.label == 1) & np.isclose(d.mzprime, m) & np.isclose(d.rinv, r)] = k
        point[(d.label == 1) & (point < 0)] = -2  # a signal point unknown to the objective: left out
        _, group = np.unique(np.stack([d.dataset.astype(str), d.run.astype(str), d.parent.astype(str)], axis=1),
                             axis=0, return_inverse=True)
        ok = point >= -1

        def t(a, dtype):
            return torch.as_tensor(np.ascontiguousarray(a[ok]), dtype=dtype, device=self.device)

        return {"f": t(d.features, torch.float32), "w": t(d.weight, torch.float64), "mt": t(d.mt, torch.float64),
                "point": t(point, torch.int64), "group": t(group.reshape(-1), torch.int64)}

    def _scores(self, model: TwinMLP, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lx, ly = model.logits(f)
        return torch.sigmoid(lx), torch.sigmoid(ly)

    def _z_at(self, x, y, ev, w, x0, y0, settings, temperature, rows=None, salt: int = 0, replica=None):
        sl = slice(None) if rows is None else rows
        return abcd_significance(x, y, w, ev["point"][sl], ev["mt"][sl], x0, y0, temperature, settings,
                                 len(self.points), ev["group"][sl], salt=salt, replica=replica)

    def _z(self, model: TwinMLP, ev: dict[str, torch.Tensor], settings: ObjectiveSettings, temperature: float,
           rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        sl = slice(None) if rows is None else rows
        x, y = self._scores(model, ev["f"][sl])
        x0, y0 = self.thresholds()
        return self._z_at(x, y, ev, ev["w"][sl], x0, y0, settings, temperature, rows)

    def training_value(self, model: TwinMLP, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The soft objective of the training split at the current temperature (advances the annealing).

        Returns the keys of :func:`abcd_significance` for the full (or minibatch) sample without
        replicas, plus ``loss`` (0-d, what to minimise: ``-(mean_r Z_r - bootstrap_sd sd_r Z_r)``
        plus the N_eff and trust-region penalties), ``z_replicas`` (R,) and ``z_robust``. The
        terms as floats are kept in :attr:`last_terms` for the history."""
        cfg = self.cfg
        ev, n, rows = self.train_t, int(self.train_t["w"].numel()), None
        settings = self.settings
        if n > cfg.batch_size:
            rows = torch.randint(n, (cfg.batch_size,), generator=gen).to(self.device)
            settings = replace(settings, yield_scale=settings.yield_scale * n / len(rows))
        step = int(self.steps)
        sl = slice(None) if rows is None else rows
        x, y = self._scores(model, ev["f"][sl])
        x0, y0 = self.thresholds()
        temperature = self.temperature()
        w = ev["w"][sl]
        out = self._z_at(x, y, ev, w, x0, y0, settings, temperature, rows, salt=step)
        if cfg.bootstrap_replicas > 0:
            pw = poisson_replica_weights(ev["group"][sl], cfg.bootstrap_replicas, cfg.seed * 1_000_003 + step)
            zr = torch.stack([self._z_at(x, y, ev, w, x0, y0, settings, temperature, rows, salt=step,
                                         replica=pw[r])["z_mean"] for r in range(cfg.bootstrap_replicas)])
            sd = zr.std() if zr.numel() > 1 else torch.zeros_like(zr[0])
            robust = zr.mean() - cfg.bootstrap_sd * sd
        else:
            zr, sd, robust = out["z_mean"][None], torch.zeros_like(out["z_mean"]), out["z_mean"]
        neff_pen = neff_shortfall(out["neff"] * (1.0 if rows is None else n / len(rows)), cfg.neff_min)
        loss = -robust + cfg.neff_weight * neff_pen
        trust = torch.zeros_like(loss)
        if self.has_anchor:
            trust = ((torch.stack([x, y], 1).to(torch.float64) - self.anchor_xy[sl]) ** 2).sum(1).mean()
            loss = loss + cfg.trust_region * trust
        self.steps += 1
        self.last_terms = {"z_robust": float(robust.detach()), "z_replica_sd": float(sd.detach()),
                           "neff_penalty": float(neff_pen.detach()), "trust_distance": float(trust.detach()),
                           "neff_min_soft": float(out["neff"].detach().min())}
        return out | {"z_mean": zr.mean(), "loss": loss, "z_replicas": zr, "z_robust": robust}

    def _view(self, d: SkimData) -> dict[str, torch.Tensor] | None:
        key = (id(d), str(self.device))  # the validation split is evaluated every epoch: build its view once
        if key not in self._views or self._views[key][0] is not d:
            self._views[key] = (d, self.tensors(d))
        return self._views[key][1]

    def _hard_z(self, x, y, ev, mask, scale: float, wp: tuple[float, float], weights=None,
                merged: bool = False) -> dict[str, torch.Tensor]:
        """Hard-cut ``<Z_A>`` of the rows ``mask`` at ``wp`` (yields x ``scale``); ``weights``
        (R, n) bootstrap factors: then ``z_mean`` is (R,). ``merged``: the M_T bins summed into one
        (a point chosen with the N_eff rule on the summed bins, :meth:`choose_wp`)."""
        settings = replace(self.hard_settings, yield_scale=scale)
        if merged:
            settings = replace(settings, mt_edges=self.merged_edges)
        if weights is None:
            return self._z_at(x[mask], y[mask], _masked(ev, mask), ev["w"][mask], wp[0], wp[1], settings, _HARD_T)
        zs = [self._z_at(x[mask], y[mask], _masked(ev, mask), ev["w"][mask], wp[0], wp[1], settings, _HARD_T,
                         replica=weights[r][mask])["z_mean"] for r in range(weights.shape[0])]
        return {"z_mean": torch.stack(zs)}

    def choose_wp(self, x, y, ev, mask, scale: float) -> dict[str, Any]:
        """The working point of the scan's grid with the largest hard-cut ``<Z_A>`` on the rows
        ``mask`` among those where every region and M_T bin holds background N_eff >= ``neff_min``.

        Where no point does (a small subset: the select subset, a validation half), the rule is
        applied to the regions summed over the M_T bins (the cards merge bins until the guard
        holds); where none passes that either, the point is the one whose emptiest region holds the
        most background N_eff. Never the largest ``<Z_A>`` of the whole grid: without the rule that
        is where the background MC is emptiest and ``<Z_A>`` is noise (the first retrain on the
        training sample chose points with N_eff 0 and quoted ``<Z_A>`` ~100). ``neff_rule``: the
        per-bin rule held; ``neff_rule_level``: ``per_bin``, ``summed_bins`` or ``most_populated``."""
        settings = replace(self.hard_settings, yield_scale=scale)
        grid = torch.as_tensor(_GRID, dtype=torch.float64, device=x.device)
        n_bins, n_pts = len(self.edges) - 1, len(self.points)
        ev_m = _masked(ev, mask)
        xm, ym, w = x[mask].to(torch.float64), y[mask].to(torch.float64), ev_m["w"] * scale
        mbin = mt_bin_index(ev_m["mt"], self.edges)
        bkg = ev_m["point"] < 0
        nb, vb = region_grid(xm[bkg], ym[bkg], w[bkg], mbin[bkg], n_bins, grid)
        sig = ~bkg
        cell = torch.where(mbin[sig] >= 0, ev_m["point"][sig] * n_bins + mbin[sig], torch.full_like(mbin[sig], -1))
        ns, _ = region_grid(xm[sig], ym[sig], w[sig], cell, n_pts * n_bins, grid)
        ns = ns.reshape(grid.numel(), grid.numel(), n_pts, n_bins, 4)
        z = significance_from_yields(nb, vb, ns, settings)["z_mean"]  # (g, g)
        neff_min = kish_neff(nb, vb).amin(dim=(-2, -1))
        # summed over the M_T bins (a parent's copies in two bins: its cross term is left out, as a
        # fallback criterion only)
        neff_sum = kish_neff(nb.sum(dim=-2), vb.sum(dim=-2)).amin(dim=-1)
        ok = neff_min >= self.cfg.neff_min
        level = "per_bin"
        if not bool(ok.any()):
            ok, level = neff_sum >= self.cfg.neff_min, "summed_bins"
        if level != "per_bin":  # <Z_A> as the cards would have it: the M_T bins merged into one
            z = significance_from_yields(nb.sum(dim=-2, keepdim=True), vb.sum(dim=-2, keepdim=True),
                                         ns.sum(dim=-2, keepdim=True),
                                         replace(settings, mt_edges=self.merged_edges))["z_mean"]
        if bool(ok.any()):
            k = int(torch.argmax(torch.where(ok, z, torch.full_like(z, -math.inf))))
        else:
            level = "most_populated"
            k = int(torch.argmax(neff_sum))
        i, j = divmod(k, grid.numel())
        return {"x0": float(grid[i]), "y0": float(grid[j]), "z_select": float(z[i, j]),
                "merged_bins": level != "per_bin",
                "neff_min": float(neff_min[i, j]), "neff_min_summed": float(neff_sum[i, j]),
                "neff_rule": level == "per_bin", "neff_rule_level": level}

    def hard_value(self, model: TwinMLP, d: SkimData, fraction: float, choose: bool = True,
                   ci_replicas: int = 0, at_selected: bool = False) -> dict[str, Any]:
        """Hard-cut figures on events of a split holding ``fraction`` of the sample (validation,
        test); floats for reports.

        ``z_mean``: ``<Z_A>`` at the current (learned) thresholds on all of ``d``. ``z_stop``: the
        early-stopping figure: with ``stop_wp: selected`` and ``choose`` the working point is
        chosen on one half of ``d``'s parents (:meth:`choose_wp`, kept in :attr:`selected`) and
        ``<Z_A>`` quoted on the other half; with ``choose=False`` quoted on all of ``d`` at the
        working point chosen before; with ``stop_wp: learned`` it is ``z_mean``. ``ci_replicas``
        > 0 adds 68 % bootstrap intervals over parents (``z_mean_ci``, ``z_stop_ci``).
        ``at_selected``: ``z_stop`` at the selected working point whatever ``stop_wp`` (the final
        subset's quote of the point chosen on the select subset)."""
        ev = self._view(d)
        x0, y0 = self.wp()
        if ev is None:
            return {"z_mean": 0.0, "z_stop": 0.0, "z_points": {}, "x0": x0, "y0": y0}
        with torch.no_grad():
            x, y = self._scores(model, ev["f"])
            x, y = x.to(torch.float64), y.to(torch.float64)
            all_rows = torch.ones_like(ev["w"], dtype=torch.bool)
            out = self._hard_z(x, y, ev, all_rows, 1.0 / fraction, (x0, y0))
            res: dict[str, Any] = {
                "z_mean": float(out["z_mean"]),
                "z_points": {f"{m:g}_{r:g}": float(z) for (m, r), z in zip(self.points, out["z_points"].tolist())},
                "x0": x0, "y0": y0,
                "nonclosure_rel": [float(v) for v in (out["var_nonclosure"].sqrt() / out["nhat"].clamp_min(1e-300))],
                "b": [float(v) for v in out["b"]],
                "neff_min": float(out["neff"].min())}
            quote, scale, wp_stop = all_rows, 1.0 / fraction, (x0, y0)
            if self.cfg.stop_wp == "selected" or at_selected:
                if choose or self.selected is None:
                    half = parent_halves_of(ev["group"])
                    chosen = self.choose_wp(x, y, ev, half == 0, 2.0 / fraction)
                    self.selected, self.selected_merged = (chosen["x0"], chosen["y0"]), chosen["merged_bins"]
                    quote, scale = half == 1, 2.0 / fraction
                    res["selected"] = chosen | {"chosen_on": "half of the parents", "quoted_on": "the other half"}
                wp_stop = self.selected
                res["selected_wp"] = list(self.selected)
            merged = self.selected_merged and wp_stop == self.selected
            stop = self._hard_z(x, y, ev, quote, scale, wp_stop, merged=merged) \
                if quote is not all_rows or wp_stop != (x0, y0) or merged else out
            res["z_stop_merged_bins"] = bool(merged)
            res["z_stop"] = float(stop["z_mean"])
            res["z_stop_points"] = {f"{m:g}_{r:g}": float(z)
                                    for (m, r), z in zip(self.points, stop["z_points"].tolist())}
            if ci_replicas > 0:
                pw = poisson_replica_weights(ev["group"], ci_replicas, self.cfg.seed * 7919 + 17)
                for key, mask, sc, wp_, mg in (("z_mean", all_rows, 1.0 / fraction, (x0, y0), False),
                                               ("z_stop", quote, scale, wp_stop, merged)):
                    zr = self._hard_z(x, y, ev, mask, sc, wp_, pw, merged=mg)["z_mean"].cpu().numpy()
                    res[f"{key}_ci"] = [float(np.percentile(zr, 16)), float(np.percentile(zr, 84))]
                res["ci_replicas"] = int(ci_replicas)
        return res

    def select_wp(self, model: TwinMLP, d: SkimData, fraction: float) -> dict[str, Any]:
        """The working point chosen (:meth:`choose_wp`) on all the events of ``d`` (the select
        subset, holding ``fraction`` of the sample); kept in :attr:`selected`. An empty ``d``
        keeps the working point chosen before (``chosen_on`` says so)."""
        ev = self._view(d)
        if ev is None:
            return {"chosen_on": "nothing (the select subset holds no event of the plane): the validation choice",
                    "x0": None if self.selected is None else self.selected[0],
                    "y0": None if self.selected is None else self.selected[1]}
        with torch.no_grad():
            x, y = self._scores(model, ev["f"])
            x, y = x.to(torch.float64), y.to(torch.float64)
            chosen = self.choose_wp(x, y, ev, torch.ones_like(ev["w"], dtype=torch.bool), 1.0 / fraction)
        self.selected, self.selected_merged = (chosen["x0"], chosen["y0"]), chosen["merged_bins"]
        return chosen | {"chosen_on": "the select subset"}

    def final_report(self, model: TwinMLP, d_val: SkimData, d_test: SkimData, split: tuple[float, ...],
                     d_select: SkimData | None = None) -> dict[str, Any]:
        """The figures of the training report, with bootstrap intervals over parents: validation
        (the stopping figure: the working point chosen on half of its parents, quoted on the
        other half). 3-way split (``d_select`` None): test quoted at that working point and at the
        learned thresholds. 4-way (``split`` = train, val, select, final; ``d_test`` the final
        subset): the working point chosen on all of ``d_select`` (:meth:`select_wp`) and quoted
        on ``final`` (untouched by every choice), and at the learned thresholds."""
        n_ci = self.cfg.stop_bootstrap
        val = self.hard_value(model, d_val, split[1], choose=True, ci_replicas=n_ci)
        if d_select is None:
            test = self.hard_value(model, d_test, split[2], choose=False, ci_replicas=n_ci)
            return {"validation": val, "test": test, "stop_wp": self.cfg.stop_wp,
                    "selected_wp": None if self.selected is None else list(self.selected)}
        stop_wp = self.selected
        chosen = self.select_wp(model, d_select, split[2])
        final = self.hard_value(model, d_test, split[3], choose=False, ci_replicas=n_ci, at_selected=True)
        return {"validation": val, "final": final, "select": chosen, "stop_wp": self.cfg.stop_wp,
                "validation_wp": None if stop_wp is None else list(stop_wp),
                "selected_wp": None if self.selected is None else list(self.selected)}


def _rule_note(sel: dict[str, Any]) -> str:
    """How the working point met the N_eff rule (:meth:`AnalysisObjective.choose_wp`), for the report."""
    level = sel.get("neff_rule_level", "per_bin" if sel.get("neff_rule", True) else "none")
    if level == "per_bin":
        return ""
    if level == "summed_bins":
        return (", no grid point met the N_eff rule per M_T bin: chosen among those meeting it with the bins summed "
                f"(smallest N_eff {sel.get('neff_min_summed', float('nan')):.1f} there)")
    if level == "most_populated":
        return (", no grid point met the N_eff rule even with the M_T bins summed: the point whose emptiest region "
                f"holds the most background (N_eff {sel.get('neff_min_summed', float('nan')):.1f}); NOT BACKED")
    return ", no grid point met the N_eff rule"


def report_lines(obj: dict[str, Any]) -> list[str]:
    """Markdown lines of the report on the stopping figure (``summary["analysis_objective"]`` of
    :meth:`AnalysisObjective.final_report`): the working point chosen on half of the validation
    parents, ``<Z_A>`` quoted on the other half and on the test split, 68 % bootstrap intervals;
    with the 4-way split, the working point chosen on the select subset and quoted on final."""
    def ci(d: dict[str, Any], key: str) -> str:
        lo_hi = d.get(f"{key}_ci")
        return f"{d[key]:.3f}" + (f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "")

    if "final" in obj:
        val, final, sel = obj["validation"], obj["final"], obj.get("select", {})
        lines = []
        if obj.get("validation_wp"):
            vx, vy = obj["validation_wp"]
            lines += ["", f"Stopping figure (`stop_wp: {obj.get('stop_wp')}`): working point ({vx:.3f}, {vy:.3f}) "
                      "chosen on half of the validation parents, <Z_A> quoted on the other half: "
                      f"{ci(val, 'z_stop')}."]
        if not obj.get("selected_wp"):
            return lines
        x0, y0 = obj["selected_wp"]
        lines += ["", f"Working point of the quoted figures: ({x0:.3f}, {y0:.3f}), chosen on the scan's grid on "
                  f"{sel.get('chosen_on', 'the select subset')} (<Z_A> {sel.get('z_select', float('nan')):.3f} "
                  f"there, smallest background N_eff {sel.get('neff_min', float('nan')):.1f}"
                  + _rule_note(sel) + "); quoted on the "
                  "final subset (untouched by every choice) with 68 % bootstrap intervals over parents "
                  f"({final.get('ci_replicas', 0)} replicas):", "",
                  "| subset | <Z_A> at the chosen point | <Z_A> at the learned thresholds |", "|---|---|---|",
                  f"| final | {ci(final, 'z_stop')} | {ci(final, 'z_mean')} |"]
        return lines
    if obj.get("stop_wp") != "selected" or not obj.get("selected_wp"):
        return []
    val, test = obj["validation"], obj["test"]
    sel = val.get("selected", {})
    x0, y0 = obj["selected_wp"]
    return ["", f"Stopping figure (`stop_wp: selected`): working point ({x0:.3f}, {y0:.3f}) chosen on the scan's "
            f"grid on half of the validation parents (<Z_A> {sel.get('z_select', float('nan')):.3f} there, "
            f"smallest background N_eff {sel.get('neff_min', float('nan')):.1f}"
            + _rule_note(sel) + "); quoted with 68 % "
            f"bootstrap intervals over parents ({val.get('ci_replicas', 0)} replicas):", "",
            "| split | <Z_A> at the chosen point | <Z_A> at the learned thresholds |", "|---|---|---|",
            f"| validation, other half | {ci(val, 'z_stop')} | {ci(val, 'z_mean')} (all) |",
            f"| test | {ci(test, 'z_stop')} | {ci(test, 'z_mean')} |"]


def parent_halves_of(group: torch.Tensor) -> torch.Tensor:
    """The fixed selection (0) / quote (1) halves of the validation parents."""
    return parent_halves(group, _SELECT_SALT)


def _masked(ev: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[mask] for k, v in ev.items()}
