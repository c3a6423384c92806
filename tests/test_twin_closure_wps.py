"""Issue 29, part 1: the twin's closure terms at the working points the analysis uses, folded
with a max (over M_T bins and working points), the N_eff guard, the new config keys, signal
points balanced as the figure of merit weighs them, and a short training with the new defaults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from svjscout.core.exceptions import ConfigError
from svjscout.models.closure import (
    plane_closures,
    reduce,
    reduce_closures,
    soft_counts,
    soft_counts_grid,
    soft_counts_wps,
    wp_closures,
)

EDGES = [650.0, 900.0, 1300.0, 5000.0]
PLANES = {"SP": (0.0, 1.5), "VP": (1.5, 2.2)}


def _background(n: int, seed: int, rho: float = 0.0):
    """Scores with a correlation ``rho`` that grows with M_T (so the bins close differently)."""
    rng = np.random.default_rng(seed)
    mt = 650.0 + rng.exponential(400.0, n)
    a, b = rng.normal(size=n), rng.normal(size=n)
    r = rho * np.clip((mt - 650.0) / 1000.0, 0, 1)
    x = 1 / (1 + np.exp(-a))
    y = 1 / (1 + np.exp(-(r * a + np.sqrt(1 - r**2) * b)))
    w = rng.uniform(0.5, 1.5, n)
    deta = rng.uniform(-2.2, 2.2, n)
    return x, y, w, deta, mt


def _hard_numpy(x, y, w, deta, mt, wps, min_neff=0.0):
    """Independent hard-cut closures: plane -> (norm (k,), bins (k, nb), usable (k,), usable bins (k, nb))."""
    out = {}
    for name, (lo, hi) in PLANES.items():
        p = (np.abs(deta) >= lo) & (np.abs(deta) < hi)
        norm, bins, ok, ok_bins = [], [], [], []
        for x0, y0 in wps:
            def counts(m, x0=x0, y0=y0):
                regions = [(x > x0) & (y <= y0), (x > x0) & (y > y0), (x <= x0) & (y <= y0), (x <= x0) & (y > y0)]
                n = np.array([w[m & r].sum() for r in regions])
                n2 = np.array([(w[m & r] ** 2).sum() for r in regions])
                neff = np.where(n2 > 0, n**2 / np.where(n2 > 0, n2, 1), 0)
                c = abs(n[0] * n[3] - n[1] * n[2]) / max(n[0] * n[3] + n[1] * n[2], 1e-12)
                return c, neff.min()
            c, neff = counts(p)
            norm.append(c)
            ok.append(neff >= min_neff)
            row, row_ok = [], []
            for i in range(len(EDGES) - 1):
                cb, nb = counts(p & (mt >= EDGES[i]) & (mt < EDGES[i + 1]))
                row.append(cb)
                row_ok.append(nb >= min_neff)
            bins.append(row)
            ok_bins.append(row_ok)
        out[name] = (np.array(norm), np.array(bins), np.array(ok), np.array(ok_bins))
    return out


def _t(*arrays):
    return [torch.as_tensor(a, dtype=torch.float64) for a in arrays]


def test_grid_counts_equal_the_single_point_counts():
    x, y, w, deta, mt = _t(*_background(3000, 1, 0.5))
    xs = torch.tensor([0.3, 0.55, 0.9], dtype=torch.float64)
    ys = torch.tensor([0.35, 0.475, 0.8, 0.9], dtype=torch.float64)
    grid = soft_counts_grid(x, y, w, xs, ys, 50.0)
    for i, a in enumerate(xs.tolist()):
        for j, b in enumerate(ys.tolist()):
            assert torch.allclose(grid[i, j], soft_counts(x, y, w, a, b, 50.0), rtol=1e-10, atol=1e-9)
    wps = torch.tensor([[0.9, 0.475], [0.3, 0.8], [0.9, 0.475], [0.55, 0.35]], dtype=torch.float64)
    pairs = soft_counts_wps(x, y, w, wps, 50.0)
    for k, (a, b) in enumerate(wps.tolist()):
        assert torch.allclose(pairs[k], soft_counts(x, y, w, a, b, 50.0), rtol=1e-10, atol=1e-9)
    # one working point, every bin, the mean: the old plane_closures
    table = wp_closures(x, y, w, deta, mt, torch.tensor([[0.5, 0.6]], dtype=torch.float64), 50.0, EDGES, PLANES)
    old = plane_closures(x, y, w, deta, mt, 0.5, 0.6, 50.0, EDGES, PLANES, "mean")
    new = reduce_closures(table, "max", "mean", min_neff=0.0)
    for k, v in old.items():
        assert float(new[k]) == pytest.approx(float(v), rel=1e-9)


def test_closure_at_several_wps_is_the_hard_cut_closure_for_a_sharp_step():
    x, y, w, deta, mt = _background(6000, 2, 0.6)
    wps = [(0.9, 0.475), (0.3, 0.3), (0.5, 0.5), (0.875, 0.9), (0.7, 0.65)]
    ref = _hard_numpy(x, y, w, deta, mt, wps, min_neff=10.0)
    table = wp_closures(*_t(x, y, w, deta, mt), torch.tensor(wps, dtype=torch.float64), 1e7, EDGES, PLANES)
    for name, (norm, bins, ok, ok_bins) in ref.items():
        np.testing.assert_allclose(table[name]["closure"].numpy(), norm, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(table[name]["bin_closure"].numpy(), bins, rtol=1e-7, atol=1e-10)
        assert (table[name]["neff"].min(-1).values.numpy() >= 10.0).tolist() == ok.tolist()
        assert not ok_bins.all()  # the guard has something to exclude here (corner bins)
    out = reduce_closures(table, "max", "max", min_neff=10.0)
    for name, (norm, bins, ok, ok_bins) in ref.items():
        assert float(out[f"closure_{name}"]) == pytest.approx(norm[ok].max(), rel=1e-7)
        # the worst bin at the worst working point, over the usable ones
        assert float(out[f"closure_bins_{name}"]) == pytest.approx(bins[ok_bins].max(), rel=1e-7)
    # without the guard: the plain max over every working point and bin
    out0 = reduce_closures(table, "max", "max", min_neff=0.0)
    for name, (_, bins, _, _) in ref.items():
        assert float(out0[f"closure_bins_{name}"]) == pytest.approx(bins.max(), rel=1e-7)


def test_max_over_bins_is_the_worst_bin_and_smooth_max_is_bounded():
    # correlation only at high M_T: one bad bin among good ones
    x, y, w, deta, mt = _background(20000, 3, 0.9)
    wps = [(0.5, 0.5)]
    ref = _hard_numpy(x, y, w, deta, mt, wps)
    table = wp_closures(*_t(x, y, w, deta, mt), torch.tensor(wps, dtype=torch.float64), 1e7, EDGES, PLANES)
    bins = ref["SP"][1][0]
    assert bins.max() > 3 * bins.min()  # one bin is clearly worse
    mx = float(reduce_closures(table, "max", "max")["closure_bins_SP"])
    mean = float(reduce_closures(table, "max", "mean")["closure_bins_SP"])
    assert mx == pytest.approx(bins.max(), rel=1e-7) and mean == pytest.approx(bins.mean(), rel=1e-7)
    assert mean < 0.8 * mx  # a mean would hide the bad bin
    c = torch.tensor(bins)
    for t in (0.1, 0.01, 0.001):
        s = float(reduce(c, "smooth_max", t))
        assert mean - 1e-12 <= s <= mx + 1e-12 and s >= mx - t * np.log(len(bins)) - 1e-12
    assert float(reduce(c, "smooth_max", 1e-4)) == pytest.approx(mx, abs=1e-3)
    # masked reductions: an empty selection gives 0 with a finite gradient
    v = c.clone().requires_grad_(True)
    r = reduce(v, "smooth_max", 0.01, mask=torch.zeros_like(v, dtype=torch.bool))
    r.backward()
    assert float(r.detach()) == 0.0 and torch.isfinite(v.grad).all()


def test_new_keys_are_validated_and_the_old_single_point_is_reachable():
    from svjscout.models.twin_training.config import TwinTrainConfig
    from svjscout.models.twin_training.losses import closure_wps_for_step

    bad = [
        ({"closure_wps": [[0.9]]}, "closure_wps"),
        ({"closure_wps": 0.5}, "closure_wps"),
        ({"closure_wps": [[0.9, 1.2]]}, "closure_wps"),
        ({"closure_wp_range": {"x": [0.3, 0.9]}}, "closure_wp_range"),
        ({"closure_wp_range": {"x": [0.9, 0.3], "y": [0.3, 0.9]}}, r"closure_wp_range\.x"),
        ({"closure_wp_range": {"x": [0.31, 0.32], "y": [0.3, 0.9]}}, "closure_wp_range"),
        ({"closure_wp_step": 0.0}, "closure_wp_step"),
        ({"closure_wps_per_step": 0}, "closure_wps_per_step"),
        ({"closure_reduce": "median"}, "closure_reduce"),
        ({"bin_reduce": "sum"}, "bin_reduce"),
        ({"closure_temperature": 0.0}, "closure_temperature"),
        ({"closure_min_neff": -1}, "closure_min_neff"),
        ({"report_wp": [0.9, 0.475, 0.1]}, "report_wp"),
        ({"report_wp": [0.0, 0.5]}, "report_wp"),
        ({"mdmm_projection": "softplus"}, "mdmm_projection"),
    ]
    for mapping, key in bad:
        with pytest.raises(ConfigError, match=key):
            TwinTrainConfig.from_mapping(mapping)
    cfg = TwinTrainConfig()
    assert cfg.balance_signal_points and cfg.bin_reduce == "max" and cfg.closure_reduce == "max"
    assert cfg.mdmm_projection == "clamp" and cfg.closure_min_neff == 10.0
    xs, ys = cfg.closure_wp_grid()
    assert xs[0] == 0.3 and xs[-1] == 0.9 and len(xs) == len(ys) == 25  # the scan's 0.025 grid
    assert len(cfg.closure_eval_wps()) == 625 and cfg.reference_wp == (cfg.x0, cfg.y0)
    # the old behaviour: one working point (x0, y0)
    old = TwinTrainConfig.from_mapping({"x0": 0.5, "y0": 0.5, "closure_wp_range": None})
    assert old.closure_eval_wps() == [(0.5, 0.5)]
    assert closure_wps_for_step(old, torch.Generator().manual_seed(0)).tolist() == [[0.5, 0.5]]
    # fixed points every step, then draws on the grid inside the range; seeded
    cfg = TwinTrainConfig.from_mapping({"closure_wps": [[0.9, 0.475]], "closure_wps_per_step": 3,
                                        "report_wp": [0.9, 0.475]})
    assert cfg.reference_wp == (0.9, 0.475) and cfg.closure_eval_wps()[0] == (0.9, 0.475)
    assert len(cfg.closure_eval_wps()) == 625  # (0.9, 0.475) is a grid point too: not twice
    g = torch.Generator().manual_seed(5)
    draws = torch.cat([closure_wps_for_step(cfg, g)[None] for _ in range(3000)])
    assert draws.shape == (3000, 4, 2) and (draws[:, 0] == torch.tensor([0.9, 0.475], dtype=torch.float64)).all()
    pts = draws[:, 1:].reshape(-1, 2).numpy()
    assert pts.min() >= 0.3 - 1e-12 and pts.max() <= 0.9 + 1e-12
    np.testing.assert_allclose(pts / 0.025, np.round(pts / 0.025), atol=1e-9)
    counts = np.unique(np.round(pts / 0.025).astype(int), axis=0, return_counts=True)[1]
    assert len(counts) == 625 and counts.min() > 0  # every grid point is drawn (9000 draws, ~14 each)
    again = closure_wps_for_step(cfg, torch.Generator().manual_seed(5))
    assert torch.equal(again, draws[0])


def test_signal_points_balanced_on_a_33_point_grid():
    from svjscout.models.twin_training.data import SkimData, training_weights
    from svjscout.models.twin_training.stream import _group_moments

    rng = np.random.default_rng(4)
    masses = np.linspace(1000.0, 5000.0, 11)
    rinvs = (0.2, 0.3, 0.5)
    points = [(m, r) for m in masses for r in rinvs]
    assert len(points) == 33
    # very different yields per point (cross sections fall with the mass), plus background
    sizes = rng.integers(20, 400, len(points))
    label = np.concatenate([np.zeros(5000), *[np.ones(s) for s in sizes]])
    mz = np.concatenate([np.full(5000, np.nan), *[np.full(s, p[0]) for s, p in zip(sizes, points)]])
    ri = np.concatenate([np.full(5000, np.nan), *[np.full(s, p[1]) for s, p in zip(sizes, points)]])
    w = np.concatenate([rng.uniform(0.5, 2.0, 5000), *[rng.uniform(0.1, 1.0, s) * 3000 / p[0] ** 2
                                                          for s, p in zip(sizes, points)]])
    n = len(label)
    d = SkimData(features=rng.normal(size=(n, 12)).astype(np.float32), mt=np.full(n, 1000.0), deta=np.zeros(n),
                 weight=w, label=label, mzprime=mz, rinv=ri, dataset=np.array(["x"] * n, dtype=object),
                 event=np.arange(n, dtype=np.uint64))
    tw = training_weights(d, 1.5, True)
    sig = label == 1
    per_point = np.array([tw[sig & (mz == m) & (ri == r)].sum() for m, r in points])
    np.testing.assert_allclose(per_point, per_point.mean(), rtol=1e-10)  # every point the same weight
    assert tw[sig].sum() / tw[~sig].sum() == pytest.approx(1.5) and tw.mean() == pytest.approx(1.0)
    raw = np.array([w[sig & (mz == m) & (ri == r)].sum() for m, r in points])
    assert raw.max() / raw.min() > 20  # without balancing, the BCE would follow the cross sections
    # the standardisation moments per group: bincount (O(rows x features)) = the per-group loop
    group = np.zeros(n, int)
    keys = {p: i + 1 for i, p in enumerate(points)}
    group[sig] = [keys[(m, r)] for m, r in zip(mz[sig], ri[sig])]
    mom = _group_moments(d.features, w, group, 34)
    for g in (0, 1, 17, 33):
        f, wg = d.features[group == g].astype(np.float64), w[group == g]
        ones = np.ones(12)
        expect = np.stack([wg.sum() * ones, wg @ f, wg @ f**2, len(wg) * ones, f.sum(0), (f**2).sum(0)])
        np.testing.assert_allclose(mom[g], expect, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_short_training_with_the_new_defaults(tmp_path):
    """A few seconds of training on a skim whose background LundNet scores are correlated (X and Y
    read them, so dCorr(X, Y) starts above its target): the multipliers stay >= 0 at every epoch,
    the active ones grow, and the report states closure at the working point used and over the grid."""
    import awkward as ak
    from test_twin import _write_skim

    from svjscout.models.train_twin import load_checkpoint, train_twin

    path = _write_skim(tmp_path / "a.parquet", 3000, 11)
    arr = ak.from_parquet(str(path))
    rng = np.random.default_rng(0)
    l0 = ak.to_numpy(arr["lundnet_j0"])
    l1 = np.where(ak.to_numpy(arr["label"]) == 0, np.clip(l0 + rng.normal(0, 0.05, len(l0)), 0, 1),
                  ak.to_numpy(arr["lundnet_j1"]))
    arr = ak.with_field(arr, l1, "lundnet_j1")
    ak.to_parquet(arr, str(path))
    cfg = {"epochs": 5, "batches_per_epoch": 4, "batch_size": 1000, "lr": 1e-2, "mdmm_lr": 0.05, "alpha": 3.0,
           "seed": 3, "patience": 50, "progress": False, "mt_edges": [650, 900, 1300, 5000], "floor_draws": 2,
           "hidden": [16], "report_wp": [0.6, 0.5]}
    res = train_twin([path], tmp_path / "out", cfg)
    mult = [h["multipliers"] for h in res.history[1:]]
    assert min(min(m.values()) for m in mult) >= 0.0
    assert max(mult[-1].values()) > 0.0  # some constraint was active and its multiplier grew
    _, mdmm, ckpt = load_checkpoint(res.checkpoint_path)
    assert min(mdmm.multipliers().values()) >= 0.0 and ckpt["config"]["mdmm_projection"] == "clamp"
    report = json.loads(Path(res.report_json).read_text())
    test = report["test"]
    assert test["closure_wp"] == [0.6, 0.5]
    at = test["closure_at_wps"]
    assert at["report_wp"]["x0"] == 0.6 and at["grid"]["n"] == 625 and len(at["grid"]["rows"]) == 625
    # the hard-cut closure at the working point used, recomputed independently
    from svjscout.core import splits
    from svjscout.models.train_twin import TwinTrainConfig, analysis_mask, load_skim, split_codes

    data = load_skim([path])
    tc = TwinTrainConfig.from_mapping(cfg)
    code = split_codes(data, tc.split, tc.seed)
    quoted = splits.FINAL if len(tc.split) == 4 else splits.TEST  # the default 4-way split quotes on final
    te = data.take(np.flatnonzero((code == quoted) & analysis_mask(data, tc.cuts()) & (data.label == 0)))
    with torch.no_grad():
        xs, ys = res.model(torch.from_numpy(te.features))
    ref = _hard_numpy(xs.numpy().astype(np.float64), ys.numpy().astype(np.float64), te.weight.astype(np.float64),
                      te.deta, te.mt, [(0.6, 0.5)])
    assert test["closure_hard"]["closure_SP"] == pytest.approx(ref["SP"][0][0], rel=1e-6)
    md = Path(res.report_md).read_text()
    assert "Closure at the working point used (report_wp) (x0, y0) = (0.6, 0.5)" in md
    assert "grid working points of closure_wp_range" in md and "projected dual ascent" in md
    assert report["summary"]["config"]["balance_signal_points"] is True
