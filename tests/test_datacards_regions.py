"""Region yields from cumulative sums (svjscout.datacards.regions)."""

import numpy as np
import pytest

from svjscout.core.exceptions import HistogramError
from svjscout.datacards.regions import (
    cumulative_2d,
    parse_wp,
    region_yields,
    regions_from_cumsum,
    snap_threshold,
)
from svjscout.datacards.toys import build_xy_mt, empty_xy_mt


def test_cumsum_regions_match_slicing():
    rng = np.random.default_rng(1)
    arr = rng.random((3, 40, 40, 2))
    S = cumulative_2d(arr)
    ix, iy = np.array([0, 7, 40]), np.array([3, 20])
    R = regions_from_cumsum(S, ix, iy)
    assert R.shape == (4, 3, 3, 2, 2)
    for a, i in enumerate(ix):
        for b, j in enumerate(iy):
            np.testing.assert_allclose(R[0, :, a, b], arr[:, i:, :j].sum((1, 2)))
            np.testing.assert_allclose(R[1, :, a, b], arr[:, i:, j:].sum((1, 2)))
            np.testing.assert_allclose(R[2, :, a, b], arr[:, :i, :j].sum((1, 2)))
            np.testing.assert_allclose(R[3, :, a, b], arr[:, :i, j:].sum((1, 2)))


def test_region_yields_sum_datasets_and_planes():
    a = np.zeros((40, 40, 2))
    a[35, 2] = [1.0, 2.0]  # A at (0.775, 0.875)
    a[35, 36] = [3.0, 0.0]  # B
    a[0, 0] = [4.0, 4.0]  # C
    a[1, 39] = [0.0, 5.0]  # D
    h = build_xy_mt({"q1": {"SP": a}, "q2": {"SP": 2 * a, "VP": a}, "sig": {"SP": a}}, [650.0, 1000.0, 2000.0], 0.5)
    ds = {"q1": {"kind": "background"}, "q2": {"kind": "background"}, "sig": {"kind": "signal"}}
    y = region_yields(h, ds, "0.775,0.875")
    np.testing.assert_allclose(y.n, 3 * np.array([[1, 2], [3, 0], [4, 4], [0, 5]]))
    np.testing.assert_allclose(y.var, 0.5 * y.n)
    assert y.wp == (0.775, 0.875) and y.plane == "SP"
    yv = region_yields(h, ds, (0.775, 0.875), plane="VP", which=["q2"])
    np.testing.assert_allclose(yv.n, [[1, 2], [3, 0], [4, 4], [0, 5]])
    m = y.merged([[0, 1]])
    np.testing.assert_allclose(m.n[:, 0], y.n.sum(1))
    assert list(m.edges) == [650.0, 2000.0] and m.groups == [[0, 1]]


def test_snap_and_parse():
    edges = np.linspace(0, 1, 41)
    assert snap_threshold(0.775, edges, "x") == 31
    assert snap_threshold(0.1 + 1e-12, edges, "x") == 4
    with pytest.raises(HistogramError, match=r"x0=0\.33.*0\.325 and 0\.35"):
        snap_threshold(0.33, edges, "x")
    assert parse_wp({"x0": 0.5, "y0": 0.25}) == (0.5, 0.25)
    with pytest.raises(HistogramError, match="X0,Y0"):
        parse_wp("0.5")


def test_unknown_kind_plane_and_dataset():
    h = empty_xy_mt(["a"])
    ds = {"a": {"kind": "background"}}
    with pytest.raises(HistogramError, match="plane 'XP'"):
        region_yields(h, ds, (0.5, 0.5), plane="XP")
    with pytest.raises(HistogramError, match="kind 'signal'"):
        region_yields(h, ds, (0.5, 0.5), which="signal")
    with pytest.raises(HistogramError, match="'zz'"):
        region_yields(h, ds, (0.5, 0.5), which=["zz"])
    with pytest.raises(HistogramError, match="absent from xy_mt"):
        region_yields(h, {**ds, "b": {"kind": "background"}}, (0.5, 0.5))


def _mt_abcd_from(h, wp):
    import hist

    from svjscout.datacards.regions import cumulative_2d

    m = hist.Hist(hist.axis.StrCategory(list(h.axes["dataset"]), growth=True, name="dataset"),
                  hist.axis.StrCategory(["SP", "VP"], name="plane"),
                  hist.axis.StrCategory(["A", "B", "C", "D"], name="region"),
                  hist.axis.Variable(h.axes["mt"].edges, name="mt"), storage=hist.storage.Weight())
    ix, iy = int(round(wp[0] * 40)), int(round(wp[1] * 40))
    v = m.view(flow=False)
    v["value"] = np.moveaxis(regions_from_cumsum(cumulative_2d(h.values(flow=False)), ix, iy)[:, :, :, 0, 0], 0, 2)
    v["variance"] = np.moveaxis(regions_from_cumsum(cumulative_2d(h.variances(flow=False)), ix, iy)[:, :, :, 0, 0],
                                0, 2)
    return m


def test_mt_abcd_consistency_and_yields():
    from svjscout.datacards.regions import check_mt_abcd, yields_from_mt_abcd
    from svjscout.datacards.toys import realistic_toy

    h, ds = realistic_toy(n_mt=3, n_signal=1, n_background=2)
    wp = (0.775, 0.875)
    m = _mt_abcd_from(h, wp)
    assert check_mt_abcd(m, h, wp) < 1e-6
    a = region_yields(h, ds, wp, plane="VP", which="background")
    b = yields_from_mt_abcd(m, ds, wp, plane="VP", which="background")
    np.testing.assert_allclose(a.n, b.n)
    np.testing.assert_allclose(a.var, b.var)
    with pytest.raises(HistogramError, match="dataset 'qcd', plane SP, region A"):
        check_mt_abcd(m, h, (0.75, 0.875))


def test_an_empty_region_is_exactly_zero_next_to_large_yields():
    # weights spanning 10 orders of magnitude: differences of cumulative sums leave rounding
    # (e.g. -3e-13) in an empty region, which the report showed as a negative n_B and a NaN
    # error; the yields at one working point are direct sums
    rng = np.random.default_rng(4)
    a = rng.uniform(0, 1, (40, 40, 2)) * rng.choice([1e-3, 1, 1e3], (40, 40, 2)) * 1e5
    a[24:, 24:] = 0  # B at (0.6, 0.6) is empty
    s = cumulative_2d(a)
    assert np.any(regions_from_cumsum(s, 24, 24)[1] != 0)  # the cumulative sums do leave rounding here
    h = build_xy_mt({"q": {"SP": a}}, [650.0, 1000.0, 2000.0], 0.5)
    y = region_yields(h, {"q": {"kind": "background"}}, (0.6, 0.6))
    assert np.all(y.n[1] == 0.0) and np.all(y.var[1] == 0.0)
    np.testing.assert_allclose(y.n[2], a[:24, :24].sum((0, 1)), rtol=1e-12)
