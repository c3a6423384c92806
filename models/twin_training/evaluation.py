"""The twin's metrics on a split: weighted AUCs (per signal point, baselines), dCorr, soft and
hard closures, region occupancies, and the check of the constrained terms against their targets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from svjscout.core.features import EVENT_FEATURES
from svjscout.core.regions import REGIONS
from svjscout.models.closure import plane_closures, plane_occupancies, soft_counts
from svjscout.models.disco import dcorr_numpy
from svjscout.models.training.metrics import orientation, point_weights, weighted_auc
from svjscout.models.twin import TwinMLP
from svjscout.models.twin_training.config import TwinTrainConfig
from svjscout.models.twin_training.data import SkimData, _points, _signal_points, _Tensors
from svjscout.models.twin_training.losses import constraint_floors


def _auc(label: np.ndarray, score: np.ndarray, weight: np.ndarray) -> float:
    return weighted_auc(score, label, weight)


def auc_weights(d: SkimData) -> np.ndarray:
    """Weights of every reported AUC (:func:`svjscout.models.training.metrics.point_weights`, the
    LundNet report's convention): background by physics weight, every signal point (m_Z', r_inv)
    normalised to the same total weight."""
    return point_weights(d.label, d.weight, _points(d))


def baseline_scores(d: SkimData) -> dict[str, np.ndarray]:
    """Baseline discriminants per event: the sum of the two LundNet scores and every input feature."""
    f = {name: d.features[:, i].astype(np.float64) for i, name in enumerate(EVENT_FEATURES)}
    return {"lundnet_sum": f["lundnet_j0"] + f["lundnet_j1"], **f}


def baseline_signs(d_train: SkimData) -> dict[str, float]:
    """Orientation (+1 / -1) of every baseline, chosen on *training* events (never on the
    events evaluated): -1 where the weighted AUC on ``d_train`` is below 0.5."""
    w = auc_weights(d_train)
    return {k: orientation(v, d_train.label, w) for k, v in baseline_scores(d_train).items()}


def _test_metrics(model: TwinMLP, d: SkimData, cfg: TwinTrainConfig, signs: Mapping[str, float] | None = None,
                  floors: bool = True) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics of ``model`` on the events ``d`` (the test or the validation split, analysis selection).

    AUC weights: :func:`auc_weights`. Baselines oriented by ``signs`` (:func:`baseline_signs` of
    the training split; default +1).
    """
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
            metrics["abcd_counts_background"][name] = dict(zip(REGIONS, (float(v) for v in n)))
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
