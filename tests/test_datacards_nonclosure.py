"""Per-bin non-closure uncertainties (svjscout.datacards.nonclosure)."""

import numpy as np
import pytest

from svjscout.datacards import abcd_prediction, nonclosure_uncertainties
from svjscout.datacards.nonclosure import nonclosure_from_deltas
from svjscout.datacards.toys import CENTERS, build_xy_mt, factorised, falling
from svjscout.exceptions import DatacardError

EDGES = [650.0, 1000.0, 1500.0]


def test_methods_on_explicit_deltas():
    dsp, dvp = [0.01, -0.03, np.nan], [0.02, 0.0, 0.1]
    ssp, svp = [0.005, 0.04, 0.01], [0.01, 0.01, 0.3]
    np.testing.assert_allclose(nonclosure_from_deltas(dsp, dvp, ssp, svp, "max"), [0.02, 0.04, 1.0])
    np.testing.assert_allclose(nonclosure_from_deltas(dsp, dvp, ssp, svp, "sp"), [0.01, 0.04, 1.0])
    np.testing.assert_allclose(nonclosure_from_deltas(dsp, dvp, ssp, svp, "vp"), [0.02, 0.01, 0.3])
    np.testing.assert_allclose(nonclosure_from_deltas(dsp, dvp, ssp, svp, "quadrature"),
                               [np.hypot(0.02, 0.005), np.hypot(0.03, 0.04), 1.0])
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
    np.testing.assert_allclose(u, np.maximum(np.abs(tvp.delta), tsp.sigma_delta))
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
    assert u_mc[0] < 1e-3 and u_data[0] == pytest.approx(0.5, rel=0.02)
