"""ABCD prediction, closure and chi2 (svjscout.datacards.abcd)."""

import numpy as np
import pytest

from svjscout.core.exceptions import HistogramError
from svjscout.datacards import abcd_prediction
from svjscout.datacards.toys import CENTERS, build_xy_mt, factorised, falling

EDGES = [650.0, 1000.0, 1500.0, 3000.0]
BKG = {"bkg": {"kind": "background"}}


def _hist(arr_sp, arr_vp=None, weight=1.0):
    c = {"SP": arr_sp}
    if arr_vp is not None:
        c["VP"] = arr_vp
    return build_xy_mt({"bkg": c}, EDGES, weight)


def test_factorising_background_closes_exactly():
    arr = factorised(1e5, falling(4.0), falling(2.5), [5.0, 2.0, 1.0])
    t = abcd_prediction(_hist(arr, 0.2 * arr, weight=0.3), BKG, (0.775, 0.875))
    np.testing.assert_allclose(t.delta, 0.0, atol=1e-12)
    np.testing.assert_allclose(t.pull, 0.0, atol=1e-9)
    assert t.chi2 == pytest.approx(0.0, abs=1e-15)
    assert t.ndf == 3 and t.pvalue == pytest.approx(1.0)
    tv = abcd_prediction(_hist(arr, 0.2 * arr, weight=0.3), BKG, (0.775, 0.875), plane="VP")
    np.testing.assert_allclose(tv.delta, 0.0, atol=1e-12)
    np.testing.assert_allclose(tv.n_A, 0.2 * t.n_A)


def test_correlated_background_gives_analytic_delta():
    # density 1 + k (x - 1/2)(y - 1/2): the midpoint rule is exact for it, so region integrals are
    # n_R = N/1600 * 1600 * [area_R + k Ix_R Iy_R] with Ix(x>x0) = 1/8 - (x0-1/2)^2/2 = -Ix(x<x0)
    k, x0, y0, N = 3.0, 0.75, 0.6, 1e6
    dens = 1.0 + k * (CENTERS[:, None] - 0.5) * (CENTERS[None, :] - 0.5)
    arr = N / 1600.0 * dens[:, :, None] * np.array([1.0, 0.5, 0.25])[None, None, :]
    t = abcd_prediction(_hist(arr, weight=1e-4), BKG, (x0, y0))
    ix_hi = 1 / 8 - (x0 - 0.5) ** 2 / 2
    iy_hi = 1 / 8 - (y0 - 0.5) ** 2 / 2
    nA = (1 - x0) * y0 + k * ix_hi * (-iy_hi)
    nB = (1 - x0) * (1 - y0) + k * ix_hi * iy_hi
    nC = x0 * y0 + k * (-ix_hi) * (-iy_hi)
    nD = x0 * (1 - y0) + k * (-ix_hi) * iy_hi
    expected = nA * nD / (nC * nB) - 1
    assert abs(expected) > 0.05
    np.testing.assert_allclose(t.delta, expected, rtol=1e-9)
    np.testing.assert_allclose(t.n_B, N * nB * np.array([1.0, 0.5, 0.25]), rtol=1e-9)
    assert np.all(np.abs(t.pull) > 5) and t.pvalue < 1e-6


def test_uncertainties_from_sumw2_and_poisson_for_data():
    arr = factorised(1e4, falling(1.0), falling(1.0), [1.0, 1.0, 1.0])
    w = 0.25
    h = build_xy_mt({"bkg": {"SP": arr}, "data": {"SP": np.round(arr)}}, EDGES, {"bkg": w, "data": 7.0})
    ds = {"bkg": {"kind": "background"}, "data": {"kind": "data"}}
    t = abcd_prediction(h, ds, (0.5, 0.5))
    np.testing.assert_allclose(t.var_A, w * t.n_A)
    rel2 = w / t.n_A + w / t.n_C + w / t.n_D
    np.testing.assert_allclose(t.sigma_nhat_B, t.nhat_B * np.sqrt(rel2))
    # log-space pull: ln(nhat / n_B) over the relative errors of both sides
    np.testing.assert_allclose(t.pull, np.log(t.nhat_B / t.n_B) / np.sqrt(rel2 + w / t.n_B), rtol=1e-7, atol=1e-12)
    td = abcd_prediction(h, ds, (0.5, 0.5), which="data")
    np.testing.assert_allclose(td.var_C, td.n_C)  # Poisson, not the stored variance (7 n)


def test_empty_control_region_gives_nan_not_warning():
    arr = np.zeros((40, 40, 3))
    arr[30:, 30:, :] = 1.0  # only region B populated at (0.5, 0.5)
    t = abcd_prediction(_hist(arr), BKG, (0.5, 0.5))
    assert np.all(np.isnan(t.nhat_B)) and t.ndf == 0


def test_off_grid_working_point_names_the_value():
    arr = factorised(1e3, falling(1.0), falling(1.0), [1.0, 1.0, 1.0])
    with pytest.raises(HistogramError, match=r"x0=0\.78"):
        abcd_prediction(_hist(arr), BKG, (0.78, 0.875))


def test_missing_dataset_and_axis_are_named():
    arr = factorised(1e3, falling(1.0), falling(1.0), [1.0, 1.0, 1.0])
    with pytest.raises(HistogramError, match="data"):
        abcd_prediction(_hist(arr), {**BKG, "data": {"kind": "data"}}, (0.5, 0.5), which="data")
    import hist

    h = hist.Hist(hist.axis.StrCategory(["bkg"], name="dataset"), hist.axis.Regular(4, 0, 1, name="x"))
    with pytest.raises(HistogramError, match="plane"):
        abcd_prediction(h, BKG, (0.5, 0.5))


def test_table_to_dataframe():
    arr = factorised(1e3, falling(1.0), falling(1.0), [1.0, 2.0, 3.0])
    df = abcd_prediction(_hist(arr), BKG, (0.5, 0.5)).to_dataframe()
    assert list(df.mt_low) == EDGES[:-1] and "nhat_B" in df and len(df) == 3
