"""The twin's metrics on a split: weighted AUCs (per signal point, baselines), dCorr, soft and
hard closures, region occupancies, and the check of the constrained terms against their targets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from svjscout.core.features import EVENT_FEATURES
from svjscout.core.regions import REGIONS
from svjscout.models.closure import plane_occupancies, reduce_closures, wp_closures
from svjscout.models.disco import dcorr_numpy
from svjscout.models.training.metrics import orientation, point_weights, weighted_auc
from svjscout.models.twin import TwinMLP
from svjscout.models.twin_training.config import TwinTrainConfig
from svjscout.models.twin_training.data import SkimData, _points, _signal_points, _Tensors
from svjscout.models.twin_training.losses import constraint_floors, eval_wps

#: kappa of the "hard-cut" closures (sigmoid(kappa u) is a step to float precision).
HARD_KAPPA = 1e7


def hard_closures(x: np.ndarray, y: np.ndarray, w: np.ndarray, deta: np.ndarray, mt: np.ndarray,
                  wps, cfg: TwinTrainConfig) -> dict[str, np.ndarray]:
    """Hard-cut closures of background events at k working points ``wps`` ((k, 2)).

    Returns:
        ``closure_<plane>`` (k,), ``closure_bins_<plane>`` (k,) the worst filled M_T bin and
        ``bins_<plane>`` (k, nbins) every bin's C_i; NaN where ``n_A n_D + n_B n_C = 0`` (an empty
        region pair: the closure is undefined there), also for bins without events;
        ``neff_min_<plane>`` (k,) the smallest Kish N_eff of the four regions.
    """
    t = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in dict(x=x, y=y, w=w, deta=deta, mt=mt).items()}
    table = wp_closures(t["x"], t["y"], t["w"], t["deta"], t["mt"], torch.as_tensor(np.asarray(wps, np.float64)),
                        HARD_KAPPA, cfg.mt_edges, cfg.planes)
    out: dict[str, np.ndarray] = {}
    for name, res in table.items():
        c, n = res["closure"].numpy(), res["counts"].numpy()
        out[f"closure_{name}"] = np.where(n[:, 0] * n[:, 3] + n[:, 1] * n[:, 2] > 0, c, np.nan)
        bc, bn = res["bin_closure"].numpy(), res["bin_counts"].numpy()  # (k, nb), (nb, k, 4)
        ok = (bn[..., 0] * bn[..., 3] + bn[..., 1] * bn[..., 2] > 0).T & res["filled"].numpy()[None, :]
        bins = np.where(ok, bc, np.nan)
        out[f"bins_{name}"] = bins
        worst = np.full(len(bins), np.nan)
        has = ok.any(axis=1)
        worst[has] = np.nanmax(bins[has], axis=1)
        out[f"closure_bins_{name}"] = worst
        out[f"neff_min_{name}"] = res["neff"].min(-1).values.numpy()  # smallest region N_eff (M_T-integrated)
    return out


def closure_at_wps(x: np.ndarray, y: np.ndarray, w: np.ndarray, deta: np.ndarray, mt: np.ndarray,
                   cfg: TwinTrainConfig) -> dict[str, Any]:
    """Hard-cut closure at the working point used (``report_wp``), at every listed working point
    (``closure_wps``) and over the grid of ``closure_wp_range``: its worst point and median over the
    usable points (closure defined and every region with N_eff >= ``closure_min_neff``).

    Returns:
        ``{"report_wp": row, "listed": [row, ...], "grid": {"n": k, "worst": {term: row},
        "median": {term: value}, "usable": {term: count}, "rows": [row, ...]}}``; a row is ``{"x0",
        "y0", "closure_<plane>", "closure_bins_<plane>", "bins_<plane>": [C_i], "neff_min_<plane>"}``
        (NaN: undefined, see :func:`hard_closures`).
    """
    listed = [tuple(p) for p in (cfg.closure_wps or ())]
    gx, gy = cfg.closure_wp_grid()
    grid = [(a, b) for a in gx for b in gy]
    wps = [cfg.reference_wp, *listed, *grid]
    hc = hard_closures(x, y, w, deta, mt, wps, cfg)

    def row(i: int) -> dict[str, Any]:
        r: dict[str, Any] = {"x0": float(wps[i][0]), "y0": float(wps[i][1])}
        for k, v in hc.items():
            r[k] = [float(b) for b in v[i]] if k.startswith("bins_") else float(v[i])
        return r

    out: dict[str, Any] = {"report_wp": row(0), "listed": [row(1 + i) for i in range(len(listed))]}
    if grid:
        first = 1 + len(listed)
        rows = [row(first + i) for i in range(len(grid))]
        terms = [k for k in hc if k.startswith("closure_")]
        worst, median, usable = {}, {}, {}
        for k in terms:
            plane = k.rsplit("_", 1)[1]
            vals = hc[k][first:]
            ok = np.isfinite(vals) & (hc[f"neff_min_{plane}"][first:] >= cfg.closure_min_neff)
            usable[k] = int(ok.sum())
            vals = np.where(ok, vals, np.nan)
            worst[k] = rows[int(np.nanargmax(vals))] if ok.any() else None
            median[k] = float(np.median(vals[ok])) if ok.any() else float("nan")
        out["grid"] = {"n": len(grid), "x": list(gx), "y": list(gy), "worst": worst, "median": median,
                       "usable": usable, "min_neff": float(cfg.closure_min_neff), "rows": rows}
    return out


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
    the training split; default +1). Closure: ``closure_soft`` the constrained values (soft, folded
    over the evaluation working points as in training), ``closure_hard`` / ``closure_hard_bins``
    with hard cuts at ``report_wp`` (the worst M_T bin / every bin), ``closure_at_wps`` at every
    listed and grid working point (:func:`closure_at_wps`).
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
        # the constrained quantities as trained: soft, folded over every evaluation working point
        soft = reduce_closures(wp_closures(t["x"], t["y"], t["w"], t["deta"], t["mt"], eval_wps(cfg), cfg.kappa,
                                           cfg.mt_edges, cfg.planes),
                               cfg.closure_reduce, cfg.bin_reduce, cfg.closure_temperature, cfg.closure_min_neff)
        metrics["closure_soft"] = {k: float(v) for k, v in soft.items()}
        metrics["occupancy_soft"] = {k: float(v) for k, v in plane_occupancies(
            t["x"], t["y"], t["w"], t["deta"], cfg.x0, cfg.y0, cfg.kappa, cfg.min_region_fraction, cfg.planes).items()}
        if floors and cfg.floor_policy != "off":
            metrics["floors"] = {n: list(v) for n, v in constraint_floors(
                _Tensors(d, d.weight), cfg, resample=False, seed=cfg.seed + 3).items()}
        # hard cuts: at the working point used (report_wp), the listed ones and the range's grid
        at = closure_at_wps(xb, yb, wb, d.deta[bkg], mtb, cfg)
        metrics["closure_at_wps"] = at
        ref = at["report_wp"]
        metrics["closure_wp"] = [ref["x0"], ref["y0"]]
        metrics["closure_hard"] = {k: v for k, v in ref.items() if k.startswith("closure_")}
        metrics["closure_hard_bins"] = {k[len("bins_"):]: v for k, v in ref.items() if k.startswith("bins_")}
        metrics["closure_hard_neff_min"] = {k[len("neff_min_"):]: v for k, v in ref.items()
                                            if k.startswith("neff_min_")}
        wp = torch.tensor([list(cfg.reference_wp)], dtype=torch.float64)
        table = wp_closures(t["x"], t["y"], t["w"], t["deta"], t["mt"], wp, HARD_KAPPA, None, cfg.planes)
        metrics["abcd_counts_background"] = {
            name: dict(zip(REGIONS, (float(v) for v in res["counts"][0]))) for name, res in table.items()}
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
