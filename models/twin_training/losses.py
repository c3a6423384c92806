"""The twin's loss: BCE_X + BCE_Y and the constraints bounded under MDMM (dCorr, closure,
occupancy), their noise floors on a finite sample and the targets trained with.

Closure terms hold at several working points (issue 29): ``closure_<plane>`` and
``closure_bins_<plane>`` are the ``closure_reduce`` fold (default max) over the working points of
the step (:func:`closure_wps_for_step`: ``closure_wps`` plus ``closure_wps_per_step`` points drawn
from the grid of ``closure_wp_range``) or, on validation and test, over every working point of
:meth:`TwinTrainConfig.closure_eval_wps`; the per-bin term folds the M_T bins first
(``bin_reduce``, default max)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from svjscout.models.closure import plane_occupancies, reduce_closures, wp_closures
from svjscout.models.disco import dcorr
from svjscout.models.twin import TwinMLP
from svjscout.models.twin_training.config import CONSTRAINTS, TwinTrainConfig
from svjscout.models.twin_training.data import _Tensors


def closure_wps_for_step(cfg: TwinTrainConfig, gen: torch.Generator) -> torch.Tensor:
    """The working points of one training step, (k, 2) float64: every ``closure_wps`` entry, then
    ``closure_wps_per_step`` points drawn uniformly (with replacement, from ``gen``) among the grid
    points of ``closure_wp_range``; (x0, y0) alone when both keys are null. Vectorised: two
    integer draws, whatever the grid's size."""
    fixed = [list(p) for p in (cfg.closure_wps or ())]
    xs, ys = cfg.closure_wp_grid()
    parts = [torch.tensor(fixed, dtype=torch.float64).reshape(-1, 2)]
    if xs:
        k = cfg.closure_wps_per_step
        ix = torch.randint(len(xs), (k,), generator=gen)
        iy = torch.randint(len(ys), (k,), generator=gen)
        parts.append(torch.stack([torch.tensor(xs, dtype=torch.float64)[ix],
                                  torch.tensor(ys, dtype=torch.float64)[iy]], dim=1))
    wps = torch.cat(parts)
    if not len(wps):
        wps = torch.tensor([[float(cfg.x0), float(cfg.y0)]], dtype=torch.float64)
    return wps


def eval_wps(cfg: TwinTrainConfig) -> torch.Tensor:
    """:meth:`TwinTrainConfig.closure_eval_wps` as a (k, 2) float64 tensor."""
    return torch.tensor(cfg.closure_eval_wps(), dtype=torch.float64).reshape(-1, 2)


def _loss_terms(model: TwinMLP, t: _Tensors, idx: torch.Tensor | None, cfg: TwinTrainConfig,
                norm: float | None = None, wps: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Objective and constraint values on rows ``idx`` (all rows if None); the closure terms at
    the working points ``wps`` ((k, 2); None: every working point of ``cfg.closure_eval_wps()``).

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
    values = _constraint_values(x[b], y[b], t.w_phys[sl][b], t.mt[sl][b], t.deta[sl][b], cfg, wps)
    return bce_x + bce_y, {"bce_x": bce_x, "bce_y": bce_y}, values


def _constraint_values(xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor, mtb: torch.Tensor,
                       detab: torch.Tensor, cfg: TwinTrainConfig,
                       wps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every constraint of :data:`CONSTRAINTS` on background scores, weights, M_T and deta; the
    closures at ``wps`` (None: :func:`eval_wps`), folded by ``closure_reduce`` / ``bin_reduce``;
    the occupancy at (x0, y0)."""
    values = {
        "dcorr_xy": dcorr(xb, yb, wb),
        "dcorr_x_mt": dcorr(xb, mtb, wb),
        "dcorr_y_mt": dcorr(yb, mtb, wb),
        "dcorr_x_deta": dcorr(xb, detab.abs(), wb),
        "dcorr_y_deta": dcorr(yb, detab.abs(), wb),
    }
    table = wp_closures(xb, yb, wb, detab, mtb, eval_wps(cfg) if wps is None else wps, cfg.kappa, cfg.mt_edges,
                        cfg.planes)
    values.update({k: v.to(xb.dtype) for k, v in reduce_closures(table, cfg.closure_reduce, cfg.bin_reduce,
                                                                   cfg.closure_temperature,
                                                                   cfg.closure_min_neff).items()})
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
    evaluates the whole split, or its ``rows`` (the validation subset). The closure terms use the
    working points training uses: drawn per draw like a step (:func:`closure_wps_for_step`) with
    ``resample=True``, every evaluation working point otherwise. The V-statistic dCorr and the
    closures of a finite sample are positive even then (about ``1/sqrt(n_eff)``), so a target ``eps`` below the
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
        wps = closure_wps_for_step(cfg, gen) if resample else None
        with torch.no_grad():
            vals = _constraint_values(xn[sel], yn[sel], t.w_phys[sel], t.mt[sel], t.deta[sel], cfg, wps)
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
