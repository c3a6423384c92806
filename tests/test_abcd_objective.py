"""The differentiable ABCD significance (models/abcd_objective.py): against the scan's numpy
implementation, closed forms, hard-cut yields counted by hand, and finite-difference gradients."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from svjscout.datacards.guard import kish_neff as guard_kish
from svjscout.datacards.significance import asimov_z, mean_z, rescale_factors
from svjscout.models.abcd_objective import (
    ObjectiveSettings,
    abcd_significance,
    asimov_z2,
    binned_yields,
    halves_nonclosure,
    mt_bin_index,
    neff_shortfall,
    parent_halves,
    significance_from_yields,
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


# --- issue 29: the objective made robust (docs/analysis_objective.md) ---------------------------

def _toy_background(g, n: int, rho: float = 0.0, copies: int = 2):
    """Background with X, Y independent of each other and of M_T (rho = 0: B = A D / C holds
    exactly in the population, bin by bin), or Y leaning on X (rho > 0); ``copies`` detector
    copies per parent, each with its own scores."""
    x = g.uniform(size=n)
    y = np.clip((1 - rho) * g.uniform(size=n) + rho * x, 0, 1)
    w = g.uniform(0.5, 1.5, n)
    mt = 650 + g.exponential(400, n)
    group = np.arange(n) // copies
    return x, y, w, mt, group


def _halves_and_square(draws, salt0: int = 0, x0=0.6, y0=0.6, temperature=0.05):
    """Per toy draw and bin: the halves product, the same-events square and the MC variance term
    (all draws in one call: draw k's bins are cells 3k .. 3k+2, its parents its own)."""
    x, y, w, mt, group = (np.concatenate(a) for a in zip(*draws))
    draw = np.concatenate([np.full(len(d[0]), k) for k, d in enumerate(draws)])
    memb = soft_memberships(_t(x), _t(y), x0, y0, temperature)
    cell = mt_bin_index(_t(mt), EDGES) + 3 * _t(draw, torch.int64)
    gid = _t(group + draw * (group.max() + 1), torch.int64)
    half = parent_halves(gid, salt0)
    k = len(draws)
    prod = halves_nonclosure(memb, _t(w), cell, 3 * k, half).reshape(k, 3)
    n, v = binned_yields(memb, _t(w), cell, 3 * k, gid)
    nhat = n[:, 0] * n[:, 3] / n[:, 2]
    var = v[:, 1] + nhat ** 2 * (v[:, 0] / n[:, 0] ** 2 + v[:, 2] / n[:, 2] ** 2 + v[:, 3] / n[:, 3] ** 2)
    return prod.numpy(), ((n[:, 1] - nhat) ** 2).reshape(k, 3).numpy(), var.reshape(k, 3).numpy()


def test_halves_nonclosure_is_unbiased_where_closure_holds_and_the_square_is_not():
    g = np.random.default_rng(29)
    # nearly hard regions: the MC variance term neglects the soft steps' overlaps
    prods, squares, variances = _halves_and_square([_toy_background(g, 3000) for _ in range(300)], temperature=0.005)
    sem = prods.std(axis=0) / np.sqrt(len(prods))
    # B = A D / C in the population: E[delta_1 delta_2] = 0 in every bin, within its error
    assert np.all(np.abs(prods.mean(axis=0)) < 3.5 * sem)
    # the same-events square is the MC variance of n_B - nhat (its noise), far from 0
    assert np.all(squares.mean(axis=0) > 5 * sem)
    sem_sq = squares.std(axis=0) / np.sqrt(len(squares))
    assert np.all(np.abs(squares.mean(axis=0) - variances.mean(axis=0)) < 3.5 * sem_sq + 0.1 * variances.mean(axis=0))


def test_halves_nonclosure_estimates_the_population_delta_squared():
    g = np.random.default_rng(31)
    # the population non-closure of a correlated pair, from a million events (per-event weights
    # scaled to the toy's size)
    xb, yb, wb, mtb, _ = _toy_background(g, 1_000_000, rho=0.3, copies=1)
    memb = soft_memberships(_t(xb), _t(yb), 0.6, 0.6, 0.05)
    n, _ = binned_yields(memb, _t(wb * 3000 / 1_000_000), mt_bin_index(_t(mtb), EDGES), 3)
    delta2 = ((n[:, 1] - n[:, 0] * n[:, 3] / n[:, 2]) ** 2).numpy()
    prods = _halves_and_square([_toy_background(g, 3000, rho=0.3) for _ in range(300)], salt0=5)[0]
    sem = prods.std(axis=0) / np.sqrt(len(prods))
    assert np.all(delta2 > 5 * sem)  # a real non-closure, resolved by the toys
    assert np.all(np.abs(prods.mean(axis=0) - delta2) < 3.5 * sem)


def test_parent_halves_keep_copies_together_and_split_evenly():
    group = torch.arange(99_999) // 3
    h = parent_halves(group, 7)
    assert set(h.unique().tolist()) == {0, 1}
    assert torch.equal(h[0::3], h[1::3]) and torch.equal(h[0::3], h[2::3])
    assert abs(float(h.double().mean()) - 0.5) < 0.01
    h2 = parent_halves(group, 8)  # another salt: another split, independent of the first
    assert abs(float((h == h2).double().mean()) - 0.5) < 0.01
    assert torch.equal(parent_halves(group, 7), h)  # deterministic


def test_objective_uses_the_positive_part_of_the_halves_product():
    x, y, w, point, mt = _events(seed=8, n_bkg=600)
    group = _t(np.arange(len(x)) // 2, torch.int64)
    st = ObjectiveSettings(mt_edges=EDGES, b_floor=1.0, nonclosure_halves=True)
    out = abcd_significance(_t(x), _t(y), _t(w), _t(point, torch.int64), _t(mt), 0.5, 0.5, 0.05, st, 2, group,
                            salt=3)
    prod = out["nonclosure_product"]
    torch.testing.assert_close(out["var_nonclosure"], prod.clamp_min(0), rtol=0, atol=0)
    torch.testing.assert_close(out["sigma2"], out["var_data_stat"] + prod.clamp_min(0) + out["var_mc_stat"])
    # a change of the salt changes the split (and so the product), not the yields
    out2 = abcd_significance(_t(x), _t(y), _t(w), _t(point, torch.int64), _t(mt), 0.5, 0.5, 0.05, st, 2, group,
                             salt=4)
    torch.testing.assert_close(out["n_bkg"], out2["n_bkg"])
    assert not torch.equal(out["nonclosure_product"], out2["nonclosure_product"])


def test_kish_neff_matches_numpy_on_hard_cuts():
    x, y, w, point, mt = _events(seed=12, n_bkg=500)
    st = ObjectiveSettings(mt_edges=EDGES, yield_scale=3.0)
    out = abcd_significance(_t(x), _t(y), _t(w), _t(point, torch.int64), _t(mt), 0.35, 0.4, 1e-7, st, 2)
    b = point < 0
    b_idx = np.clip(np.digitize(mt, EDGES) - 1, 0, len(EDGES) - 2)
    reg = np.where(x > 0.35, np.where(y > 0.4, 1, 0), np.where(y > 0.4, 3, 2))
    ref = np.zeros((3, 4))
    for i in range(3):
        for r in range(4):
            ww = 3.0 * w[b & (b_idx == i) & (reg == r)]
            ref[i, r] = ww.sum() ** 2 / (ww ** 2).sum() if len(ww) else 0.0
    np.testing.assert_allclose(out["neff"].numpy(), ref, rtol=1e-9)
    # the datacards' Kish (another implementation) on the same yields
    np.testing.assert_allclose(out["neff"].numpy(), guard_kish(out["n_bkg"].numpy(), (out["n_bkg"] ** 2 /
                               out["neff"].clamp_min(1e-300)).numpy()), rtol=1e-9)
    # the shortfall penalty: sum over cells of relu(1 - N_eff / 10)^2, by hand
    pen = float(neff_shortfall(out["neff"], 10.0))
    assert pen == pytest.approx(float(np.sum(np.maximum(0, 1 - ref / 10) ** 2)), rel=1e-9)
    assert float(neff_shortfall(out["neff"], 0.0)) == 0.0
    assert float(neff_shortfall(torch.zeros(2, 4, dtype=torch.float64), 10.0)) == 8.0  # 1 per empty cell


def test_signal_contamination_closed_form():
    # one bin; background A, B, C, D = 40, 10, 160, 40 (closes); signal in B and A only
    nb = _t([[40.0, 10.0, 160.0, 40.0]])
    vb = torch.zeros_like(nb)
    ns = _t([[[[3.0, 6.0, 0.0, 0.0]]]]).reshape(1, 1, 4)
    st = ObjectiveSettings(mt_edges=(0.0, 1.0), data_stat=True, nonclosure=False, mc_stat=False)
    plain = significance_from_yields(nb, vb, ns, st)
    cont = significance_from_yields(nb, vb, ns, replace(st, signal_contamination=True))
    nhat_c = 43.0 * 40.0 / 160.0  # the b-only fit absorbs s_A into A
    s_eff = 6.0 + 10.0 - nhat_c
    sig2 = nhat_c ** 2 * (1 / 43 + 1 / 160 + 1 / 40)
    z_ref = asimov_z(np.array([s_eff]), np.array([nhat_c]), np.sqrt([sig2]))[0]
    assert float(cont["z_mean"]) == pytest.approx(float(z_ref), rel=1e-6)
    z_plain = asimov_z(np.array([6.0]), np.array([10.0]), np.sqrt([100 * (1 / 40 + 1 / 160 + 1 / 40)]))[0]
    assert float(plain["z_mean"]) == pytest.approx(float(z_plain), rel=1e-6)
    assert float(cont["z_mean"]) < float(plain["z_mean"])
    # no signal outside B: the two models agree
    ns_b = _t([[[[0.0, 6.0, 0.0, 0.0]]]]).reshape(1, 1, 4)
    a = significance_from_yields(nb, vb, ns_b, st)["z_mean"]
    c = significance_from_yields(nb, vb, ns_b, replace(st, signal_contamination=True))["z_mean"]
    torch.testing.assert_close(a, c, rtol=1e-12, atol=0)


@pytest.mark.parametrize("halves", [False, True])
def test_gradients_with_halves_and_contamination(halves):
    x, y, w, point, mt = _events(seed=9, n_bkg=60, n_sig=30)
    st = ObjectiveSettings(mt_edges=EDGES, yield_scale=1.5, b_floor=10.0, nonclosure_halves=halves,
                           signal_contamination=True)
    group = _t(np.arange(len(x)) // 2, torch.int64)
    f = _objective(st, _t(point, torch.int64), _t(mt), _t(w), group=group)
    inputs = tuple(_t(a).requires_grad_() for a in (x, y, [0.45], [0.5]))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-7, atol=1e-6, rtol=1e-4)


def test_nonclosure_without_gradient_keeps_its_value():
    x, y, w, point, mt = _events(seed=13, n_bkg=300)
    group = _t(np.arange(len(x)) // 2, torch.int64)
    grads, vals = [], []
    for grad in (True, False):
        st = ObjectiveSettings(mt_edges=EDGES, b_floor=1.0, nonclosure_halves=True, nonclosure_grad=grad)
        xt = _t(x).requires_grad_()
        out = abcd_significance(xt, _t(y), _t(w), _t(point, torch.int64), _t(mt), 0.5, 0.5, 0.05, st, 2, group, salt=1)
        out["z_mean"].backward()
        vals.append(float(out["z_mean"].detach()))
        grads.append(xt.grad.clone())
    assert vals[0] == vals[1]
    assert not torch.allclose(grads[0], grads[1]) and bool(torch.isfinite(grads[1]).all())
    # without gradient, the non-closure term alone contributes nothing to d/dx
    st = ObjectiveSettings(mt_edges=EDGES, b_floor=1.0, nonclosure_halves=True, nonclosure_grad=False)
    xt = _t(x).requires_grad_()
    out = abcd_significance(xt, _t(y), _t(w), _t(point, torch.int64), _t(mt), 0.5, 0.5, 0.05, st, 2, group, salt=1)
    assert not out["var_nonclosure"].requires_grad
