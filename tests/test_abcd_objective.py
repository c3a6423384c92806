"""The differentiable ABCD significance (models/abcd_objective.py): against the scan's numpy
implementation, closed forms, hard-cut yields counted by hand, and finite-difference gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svjscout.datacards.significance import asimov_z, mean_z, rescale_factors
from svjscout.models.abcd_objective import (
    ObjectiveSettings,
    abcd_significance,
    asimov_z2,
    binned_yields,
    soft_memberships,
)

EDGES = (650.0, 900.0, 1300.0, 2000.0)


def _events(seed: int = 3, n_bkg: int = 400, n_sig: int = 120, n_points: int = 2):
    g = np.random.default_rng(seed)
    x = np.concatenate([g.beta(2, 5, n_bkg), g.beta(5, 2, n_sig)])
    y = np.concatenate([g.beta(2, 4, n_bkg), g.beta(4, 2, n_sig)])
    w = np.concatenate([g.uniform(50, 150, n_bkg), g.uniform(0.5, 2.0, n_sig)])
    point = np.concatenate([-np.ones(n_bkg, int), g.integers(0, n_points, n_sig)])
    mt = np.concatenate([650 + g.exponential(300, n_bkg), g.uniform(700, 2600, n_sig)])
    return x, y, w, point, mt


def _t(a, dtype=torch.float64):
    return torch.as_tensor(np.asarray(a), dtype=dtype)


@pytest.mark.parametrize("sigma_rel", [0.0, 1e-7, 0.05, 0.3, 2.0])
def test_asimov_z2_matches_the_scan_formula(sigma_rel):
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    s = np.array([0.1, 1.0, 10.0, 50.0, 300.0, 1e4])
    b = np.array([1.0, 5.0, 100.0, 20.0, 1e4, 3e5])
    sigma = sigma_rel * b
    z_t = torch.sqrt(asimov_z2(_t(s), _t(b), _t(sigma ** 2))).numpy()
    # the scan's numpy implementation (datacards/significance.py): same formula, other code; it
    # takes the log of a ratio where this one uses log1p, so it agrees to its own rounding
    np.testing.assert_allclose(z_t, asimov_z(s, b, sigma), rtol=1e-6, atol=1e-12)
    # the formula at 50 digits
    ref = []
    for si, bi, gi in zip(s, b, sigma):
        si, bi, g2 = mp.mpf(si), mp.mpf(bi), mp.mpf(gi) ** 2
        if g2 == 0:
            z2 = 2 * ((si + bi) * mp.log(1 + si / bi) - si)
        else:
            z2 = 2 * ((si + bi) * mp.log((si + bi) * (bi + g2) / (bi ** 2 + (si + bi) * g2))
                      - bi ** 2 / g2 * mp.log(1 + g2 * si / (bi * (bi + g2))))
        ref.append(float(mp.sqrt(z2)))
    np.testing.assert_allclose(z_t, ref, rtol=1e-9 if sigma_rel != 1e-7 else 1e-6, atol=1e-14)


def test_asimov_z2_closed_forms():
    # sigma -> 0 and s << b: Z -> s / sqrt(b); with sigma: s / sqrt(b + sigma^2)
    s, b = _t([1.0]), _t([1e6])
    assert float(torch.sqrt(asimov_z2(s, b, _t([0.0])))) == pytest.approx(1e-3, rel=1e-5)
    z = float(torch.sqrt(asimov_z2(s, b, _t([1e6 ** 2 * 0.01 ** 2]))))  # 1 % uncertainty
    assert z == pytest.approx(1.0 / np.sqrt(1e6 + 1e8), rel=1e-3)


def test_hard_limit_equals_yields_counted_by_hand():
    x, y, w, point, mt = _events()
    x0, y0 = 0.45, 0.55
    keep = (np.abs(x - x0) > 0.01) & (np.abs(y - y0) > 0.01)  # no event on a threshold
    x, y, w, point, mt = (a[keep] for a in (x, y, w, point, mt))
    st = ObjectiveSettings(mt_edges=EDGES, yield_scale=2.0, n_min=1e-3, b_floor=0.0)
    out = abcd_significance(_t(x), _t(y), _t(w), _t(point, torch.int64), _t(mt), x0, y0, 1e-5, st, 2)
    # by hand: hard regions, M_T bins with overflow in the last bin
    b_idx = np.clip(np.digitize(mt, EDGES) - 1, 0, len(EDGES) - 2)
    reg = np.where(x > x0, np.where(y > y0, 1, 0), np.where(y > y0, 3, 2))  # A0 B1 C2 D3
    nb, vb = np.zeros((3, 4)), np.zeros((3, 4))
    ns = np.zeros((2, 3, 4))
    for i in range(len(x)):
        if point[i] < 0:
            nb[b_idx[i], reg[i]] += 2 * w[i]
            vb[b_idx[i], reg[i]] += (2 * w[i]) ** 2
        else:
            ns[point[i], b_idx[i], reg[i]] += 2 * w[i]
    np.testing.assert_allclose(out["n_bkg"].numpy(), nb, rtol=1e-9)
    nhat = nb[:, 0] * nb[:, 3] / nb[:, 2]
    np.testing.assert_allclose(out["nhat"].numpy(), nhat, rtol=1e-9)
    sigma2 = nhat ** 2 * (1 / nb[:, 0] + 1 / nb[:, 2] + 1 / nb[:, 3]) + (nb[:, 1] - nhat) ** 2 + \
        vb[:, 1] + nhat ** 2 * (vb[:, 0] / nb[:, 0] ** 2 + vb[:, 2] / nb[:, 2] ** 2 + vb[:, 3] / nb[:, 3] ** 2)
    np.testing.assert_allclose(out["sigma2"].numpy(), sigma2, rtol=1e-9)
    stilde = ns[:, :, 1] * rescale_factors(ns.sum(axis=(1, 2)), 0)[:, None]
    z_ref = mean_z(stilde, nhat[None, :], np.sqrt(sigma2)[None, :])
    assert float(out["z_mean"]) == pytest.approx(float(z_ref), rel=1e-7)


def test_copies_of_one_parent_count_once():
    g = np.random.default_rng(5)
    n, k = 50, 4
    memb = soft_memberships(_t(g.uniform(size=n)), _t(g.uniform(size=n)), 0.5, 0.5, 0.1)
    w = _t(g.uniform(1, 2, n))
    cell = torch.as_tensor(g.integers(0, 3, n))
    n_par, v_par = binned_yields(memb, w, cell, 3)
    # k identical copies of every parent, weight w / k: the same yields and the parents' variance
    rep = torch.arange(n).repeat_interleave(k)
    n_cp, v_cp = binned_yields(memb[rep], w[rep] / k, cell[rep], 3, group=rep)
    torch.testing.assert_close(n_cp, n_par, rtol=1e-12, atol=0)
    torch.testing.assert_close(v_cp, v_par, rtol=1e-12, atol=0)
    # treated as independent events instead, the variance is k times too small
    _, v_naive = binned_yields(memb[rep], w[rep] / k, cell[rep], 3)
    torch.testing.assert_close(v_naive * k, v_par, rtol=1e-12, atol=0)


def _objective(st: ObjectiveSettings, point, mt, w, temperature=0.05, group=None):
    def f(x, y, x0, y0):
        return abcd_significance(x, y, w, point, mt, x0, y0, temperature, st, 2, group)["z_mean"]
    return f


@pytest.mark.parametrize("terms", [(True, True, True), (True, False, False), (False, False, False)])
def test_gradients_match_finite_differences(terms):
    x, y, w, point, mt = _events(seed=7, n_bkg=60, n_sig=30)
    st = ObjectiveSettings(mt_edges=EDGES, yield_scale=1.5, b_floor=10.0, data_stat=terms[0], nonclosure=terms[1],
                           mc_stat=terms[2])
    group = _t(np.arange(len(x)) // 2, torch.int64)  # pairs of copies
    f = _objective(st, _t(point, torch.int64), _t(mt), _t(w), group=group)
    inputs = tuple(_t(a).requires_grad_() for a in (x, y, [0.45], [0.5]))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-7, atol=1e-6, rtol=1e-4)


def test_gradients_through_a_nearly_empty_control_region():
    # C (both scores low) holds one background event deep in the tail of its soft step: the
    # division by n_C is steep but finite, and autograd still matches finite differences
    x, y, w, point, mt = _events(seed=11, n_bkg=40, n_sig=20)
    bkg = point < 0
    x[bkg] = np.maximum(x[bkg], 0.62)
    x[0], y[0] = 0.3, 0.3
    st = ObjectiveSettings(mt_edges=(650.0, 6000.0), b_floor=1.0)
    f = _objective(st, _t(point, torch.int64), _t(mt), _t(w), temperature=0.03)
    inputs = tuple(_t(a).requires_grad_() for a in (x, y, [0.5], [0.5]))
    val = f(*inputs)
    grads = torch.autograd.grad(val, inputs)
    assert all(bool(torch.isfinite(gr).all()) for gr in grads)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-8, atol=1e-6, rtol=1e-4)


def test_no_nan_gradient_without_background_uncertainty():
    x, y, w, point, mt = _events(seed=2, n_bkg=50, n_sig=20)
    st = ObjectiveSettings(mt_edges=EDGES, data_stat=False, nonclosure=False, mc_stat=False)
    xt, yt = _t(x).requires_grad_(), _t(y).requires_grad_()
    z = abcd_significance(xt, yt, _t(w), _t(point, torch.int64), _t(mt), 0.5, 0.5, 0.05, st, 2)["z_mean"]
    z.backward()
    assert torch.isfinite(xt.grad).all() and torch.isfinite(yt.grad).all()
    assert float(xt.grad[point >= 0].abs().sum()) > 0


def test_better_separation_gives_a_larger_significance():
    x, y, w, point, mt = _events(seed=4)
    st = ObjectiveSettings(mt_edges=EDGES, b_floor=1.0)
    sig = point >= 0
    z = []
    for shift in (0.0, 0.2):
        xs, ys = x.copy(), y.copy()
        xs[sig] = np.clip(xs[sig] + shift, 0, 1)
        ys[sig] = np.clip(ys[sig] + shift, 0, 1)
        z.append(float(abcd_significance(_t(xs), _t(ys), _t(w), _t(point, torch.int64), _t(mt), 0.6, 0.6, 0.02,
                                         st, 2)["z_mean"]))
    assert z[1] > 1.2 * z[0]
