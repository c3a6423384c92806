"""Per-bin non-closure uncertainties (svjscout.datacards.nonclosure)."""

import numpy as np
import pytest

from svjscout.core.exceptions import DatacardError
from svjscout.datacards import abcd_prediction, nonclosure_uncertainties
from svjscout.datacards.nonclosure import kappas_from_deltas, log_kappa, nonclosure_from_deltas, nonclosure_report
from svjscout.datacards.toys import CENTERS, build_xy_mt, factorised, falling

EDGES = [650.0, 1000.0, 1500.0]


def test_methods_on_explicit_deltas():
    dsp, dvp = [0.01, -0.03, np.nan], [0.02, 0.0, 0.1]
    ssp, svp = [0.005, 0.04, 0.01], [0.01, 0.01, 0.3]
    np.testing.assert_allclose(nonclosure_from_deltas(dsp, dvp, ssp, svp, "max"), [0.02, 0.04, 1.0])
    np.testing.assert_allclose(nonclosure_from_deltas(dsp, dvp, ssp, svp, "sp"), [0.01, 0.04, 1.0])
    np.testing.assert_allclose(nonclosure_from_deltas(dsp, dvp, ssp, svp, "vp"), [0.02, 0.01, 0.3])
    np.testing.assert_allclose(nonclosure_from_deltas(dsp, dvp, ssp, svp, "quadrature"),
                               [np.exp(np.hypot(np.log(1.02), np.log(1.005))) - 1,
                                np.exp(np.hypot(-np.log(0.97), np.log(1.04))) - 1, 1.0])
    np.testing.assert_allclose(nonclosure_from_deltas(dsp, dvp, ssp, svp, "max", floor=0.03), [0.03, 0.04, 1.0])
    with pytest.raises(DatacardError, match="bogus"):
        nonclosure_from_deltas(dsp, dvp, ssp, svp, "bogus")


def test_from_histogram_sp_closes_vp_correlated():
    sp = factorised(1e7, falling(3.0), falling(2.0), [2.0, 1.0])
    dens = 1.0 + 2.0 * (CENTERS[:, None] - 0.5) * (CENTERS[None, :] - 0.5)
    vp = sp * dens[:, :, None] * 0.3
    h = build_xy_mt({"bkg": {"SP": sp, "VP": vp}}, EDGES, 1e-6)
    ds = {"bkg": {"kind": "background"}}
    wp = (0.6, 0.6)
    tvp = abcd_prediction(h, ds, wp, plane="VP")
    tsp = abcd_prediction(h, ds, wp, plane="SP")
    u = nonclosure_uncertainties(h, ds, wp, method="max")
    # the significance rule: SP closes (delta compatible with 0), the VP non-closure is significant
    u_sig = nonclosure_uncertainties(h, ds, wp, method="significance")
    assert np.all(np.abs(tvp.delta) > 2 * tvp.sigma_delta)
    np.testing.assert_allclose(u_sig, np.maximum(log_kappa(tvp.delta) - 1, tsp.sigma_delta))
    np.testing.assert_allclose(u, np.maximum.reduce([log_kappa(tvp.delta) - 1, log_kappa(tsp.delta) - 1,
                                                     tsp.sigma_delta]))
    assert np.all(u > 0.01)
    np.testing.assert_allclose(nonclosure_uncertainties(h, ds, wp, method="sp"), tsp.sigma_delta)
    merged = nonclosure_uncertainties(h, ds, wp, method="vp", groups=[[0, 1]])
    assert merged.shape == (1,)


def test_vp_data_method_uses_data():
    sp = factorised(1e6, falling(3.0), falling(2.0), [1.0])
    data_vp = np.round(0.2 * sp)
    data_vp[30:, 30:] *= 2  # B region excess in data VP (x, y > 0.75)
    h = build_xy_mt({"bkg": {"SP": sp, "VP": 0.2 * sp}, "data": {"VP": data_vp}}, [650.0, 1000.0], 1e-6)
    ds = {"bkg": {"kind": "background"}, "data": {"kind": "data"}}
    u_mc = nonclosure_uncertainties(h, ds, (0.75, 0.75), method="vp")
    u_data = nonclosure_uncertainties(h, ds, (0.75, 0.75), method="vp_data")
    # data in B twice the prediction: delta = -0.5, a prediction low by a factor 2 needs kappa 2
    assert u_mc[0] < 1e-3 and u_data[0] == pytest.approx(1.0, rel=0.02)


def test_kappa_is_multiplicative():
    """A prediction low by a factor 2 (delta = -0.5) needs kappa 2; high by 1.5 (+0.5) needs 1.5."""
    assert log_kappa(-0.5) == pytest.approx(2.0) and log_kappa(0.5) == pytest.approx(1.5)
    k, src = kappas_from_deltas([-0.5, 0.5], [0.0, 0.0], [0.01, 0.01], [0.01, 0.01], "significance")
    np.testing.assert_allclose(k, [2.0, 1.5])
    assert src == ["SP non-closure", "SP non-closure"]
    # the old symmetric 1 + |delta| under-covered the low prediction: kappa 1.5 < 2
    assert k[0] >= 2.0


def test_closure_compatible_with_zero_gets_the_test_precision():
    # |delta| < 2 sigma: the test cannot resolve it, kappa = 1 + sigma (not 1 + |delta|, not 100 %)
    k, src = kappas_from_deltas([0.15, -0.3], [np.nan, 0.0], [0.1, 0.2], [np.nan, 0.05], "significance")
    np.testing.assert_allclose(k, [1.1, 1.2])
    assert src == ["SP precision", "SP precision"]
    # a VP non-closure within its (large) statistical error does not widen it, a significant one does
    k, src = kappas_from_deltas([0.0, 0.0], [0.8, 0.8], [0.1, 0.1], [0.5, 0.1], "significance")
    np.testing.assert_allclose(k, [1.1, 1.8])
    assert src == ["SP precision", "VP non-closure"]
    # the old rule took |delta_VP| = 0.8 at face value in both bins
    np.testing.assert_allclose(nonclosure_from_deltas([0.0, 0.0], [0.8, 0.8], [0.1, 0.1], [0.5, 0.1], "max"),
                               [0.8, 0.8])


def test_report_has_neff_and_is_json_safe():
    import json

    sp = factorised(1e4, falling(3.0), falling(2.0), [1.0, 1.0])
    h = build_xy_mt({"bkg": {"SP": sp, "VP": 0.3 * sp}}, EDGES, 1e-6)
    ds = {"bkg": {"kind": "background"}}
    from svjscout.datacards.regions import region_yields

    ysp, yvp = (region_yields(h, ds, (0.6, 0.6), plane=p) for p in ("SP", "VP"))
    rep = nonclosure_report(ysp, yvp)
    json.dumps(rep, allow_nan=False)
    for i, b in enumerate(rep["bins"]):
        for k, r in enumerate("ABCD"):
            assert b["SP"]["n_eff"][r] == pytest.approx(ysp.n[k, i] ** 2 / ysp.var[k, i])
    assert rep["bins"][-1]["mt"] == "[1000, inf)"


def test_vp_without_enough_mc_is_not_used():
    # delta_VP = -0.98 +- 0.03 "significant" on two events per region: not a closure test
    k, src = kappas_from_deltas([0.0], [-0.976], [0.2], [0.03], "significance", vp_usable=[False])
    assert k[0] == pytest.approx(1.2) and src == ["SP precision"]
    k, _ = kappas_from_deltas([0.0], [-0.976], [0.2], [0.03], "significance", vp_usable=[True])
    assert k[0] == pytest.approx(1 / 0.024, rel=1e-6) or k[0] == 11.0  # clipped at 1 + cap


def test_continuous_kappa_closed_form():
    """Default rule: ln kappa = sqrt(ln^2(1 + delta) + s^2), s = sigma / (1 + delta) (log-space error)."""
    dsp, ssp = np.array([-0.5, 0.5, 0.0, 0.07]), np.array([0.01, 0.3, 0.2, 0.41])
    k, src = kappas_from_deltas(dsp, np.zeros(4), ssp, np.full(4, 0.01), vp_usable=[False] * 4)
    np.testing.assert_allclose(k, np.exp(np.sqrt(np.log1p(dsp) ** 2 + (ssp / (1 + dsp)) ** 2)), rtol=1e-12)
    assert k[0] == pytest.approx(2.0, rel=1e-3)  # a well-measured factor-2 deficit: kappa 2, as log_kappa
    assert k[2] == pytest.approx(np.exp(0.2))  # closure exactly 1: its precision
    assert src == ["SP closure (+) precision"] * 4
    # VP widens only by what it shows beyond its error, where it has the statistics
    k, src = kappas_from_deltas([0.0], [1.0], [0.1], [0.2], vp_usable=[True])
    assert k[0] == pytest.approx(np.exp(np.log(2.0) - 0.1)) and src == ["VP non-closure beyond its error"]
    k, _ = kappas_from_deltas([0.0], [1.0], [0.1], [0.2], vp_usable=[False])
    assert k[0] == pytest.approx(np.exp(0.1))


def test_continuous_kappa_has_no_jump_at_the_significance_threshold():
    """The significance rule jumps from 1 + sigma to |delta| at 2 sigma; the default does not."""
    sigma, eps = 0.1, 1e-6
    below, above = 2 * sigma - eps, 2 * sigma + eps
    k_sig = [kappas_from_deltas([d], [0.0], [sigma], [1.0], "significance")[0][0] for d in (below, above)]
    k_cont = [kappas_from_deltas([d], [0.0], [sigma], [1.0])[0][0] for d in (below, above)]
    assert k_sig[1] - k_sig[0] > 0.05  # 1.1 -> 1.2
    assert abs(k_cont[1] - k_cont[0]) < 1e-5
    # and it grows monotonically with |delta| and with sigma
    grid = np.linspace(0.0, 1.0, 51)
    kk = kappas_from_deltas(grid, np.zeros_like(grid), np.full_like(grid, sigma), np.ones_like(grid))[0]
    assert np.all(np.diff(kk) > 0)
