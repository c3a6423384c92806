"""The analysis-aware objective of the twin (``objective: analysis``): ``<Z_A>`` of the binned ABCD
analysis (:mod:`svjscout.models.abcd_objective`) on the training split, with annealed soft
regions and optionally learned thresholds; and the start from a trained pair (``init_model``).

Training events: the analysis-selected events of the training split in the objective's plane
(``objective_plane``, default SP), all of them in every step while they number at most
``batch_size`` (a deterministic full-batch gradient), else ``batch_size`` drawn uniformly with
replacement (yields scaled by N / batch_size, unbiased). Yields are in events at the skim's
luminosity divided by the split's fraction (and the reservoir's sampling fraction), so that
they estimate the full sample's. Validation and test figures use hard cuts (the real analysis)
at the current thresholds.
"""

from __future__ import annotations

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
from svjscout.models.abcd_objective import ObjectiveSettings, abcd_significance
from svjscout.models.closure import plane_mask
from svjscout.models.export import read_metadata
from svjscout.models.twin import TwinMLP
from svjscout.models.twin_training.checkpoint import load_checkpoint
from svjscout.models.twin_training.config import TwinTrainConfig
from svjscout.models.twin_training.data import SkimData, analysis_mask
from svjscout.processors.settings import AnalysisSettings

__all__ = ["AnalysisObjective", "load_twin_init", "objective_edges"]

_WP_LO, _WP_HI = 0.1, 0.9  # the scan's in-bounds range of the thresholds
_HARD_T = 1e-6  # "temperature" of the hard-cut evaluation (scores are float32: steps of ~1e-7)


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


class AnalysisObjective(nn.Module):
    """``<Z_A>`` of the training split, the annealing and the (learned) thresholds.

    Args:
        cfg: the training settings.
        train: the training split's events (all rows of the split, or a uniform sample of
            them); ``sample_fraction``: that sample's share of the split's events.
        points: the signal points (m_Z', r_inv), in the order of the report.
        device: torch device.
    """

    def __init__(self, cfg: TwinTrainConfig, train: SkimData, points: list[tuple[float, float]],
                 sample_fraction: float = 1.0, device: Any = "cpu"):
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
        self.settings = ObjectiveSettings(mt_edges=self.edges, yield_scale=scale, b_floor=b_floor)

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

    def _z(self, model: TwinMLP, ev: dict[str, torch.Tensor], settings: ObjectiveSettings, temperature: float,
           rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        sl = slice(None) if rows is None else rows
        lx, ly = model.logits(ev["f"][sl])
        x0, y0 = self.thresholds()
        return abcd_significance(torch.sigmoid(lx), torch.sigmoid(ly), ev["w"][sl], ev["point"][sl], ev["mt"][sl],
                                 x0, y0, temperature, settings, len(self.points), ev["group"][sl])

    def training_value(self, model: TwinMLP, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The soft ``<Z_A>`` of the training split at the current temperature (advances the annealing)."""
        ev, n, rows = self.train_t, int(self.train_t["w"].numel()), None
        settings = self.settings
        if n > self.cfg.batch_size:
            rows = torch.randint(n, (self.cfg.batch_size,), generator=gen).to(self.device)
            settings = replace(settings, yield_scale=settings.yield_scale * n / len(rows))
        out = self._z(model, ev, settings, self.temperature(), rows)
        self.steps += 1
        return out

    def hard_value(self, model: TwinMLP, d: SkimData, fraction: float) -> dict[str, Any]:
        """``<Z_A>`` with hard cuts at the current thresholds on events of a split holding
        ``fraction`` of the sample (validation, test); floats for reports."""
        key = (id(d), str(self.device))  # the validation split is evaluated every epoch: build its view once
        if key not in self._views or self._views[key][0] is not d:
            self._views[key] = (d, self.tensors(d))
        ev = self._views[key][1]
        if ev is None:
            return {"z_mean": 0.0, "z_points": {}, "x0": self.wp()[0], "y0": self.wp()[1]}
        settings = replace(self.settings, yield_scale=1.0 / fraction)
        with torch.no_grad():
            out = self._z(model, ev, settings, _HARD_T)
        x0, y0 = self.wp()
        return {"z_mean": float(out["z_mean"]),
                "z_points": {f"{m:g}_{r:g}": float(z) for (m, r), z in zip(self.points, out["z_points"].tolist())},
                "x0": x0, "y0": y0,
                "nonclosure_rel": [float(v) for v in (out["var_nonclosure"].sqrt() / out["nhat"].clamp_min(1e-300))],
                "b": [float(v) for v in out["b"]]}
