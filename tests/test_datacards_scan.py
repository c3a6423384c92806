"""Vectorised working-point scan (svjscout.datacards.scan)."""

import os

import numpy as np
import pytest
from scipy import stats

from svjscout.core.exceptions import HistogramError
from svjscout.datacards import ScanRules, scan_working_points, write_scan
from svjscout.datacards.scan import plateau_mask
from svjscout.datacards.significance import asimov_z
from svjscout.datacards.toys import build_xy_mt, factorised, falling, realistic_toy

EDGES = [650.0, 1000.0, 2000.0]
#: the statistics guard off (no M_T bin merged): the per-bin formulas compared with a brute force
NO_GUARD = {"min_neff": 0.0, "max_rel_err": np.inf}


def _known_optimum_toy():
    bkg = factorised(1e6, falling(5.0), falling(4.0), [3.0, 1.0])
    sig = np.zeros((40, 40, 2))
    sig[28, 28, :] = [40.0, 60.0]  # bin [0.700, 0.725) x [0.700, 0.725)
    sig2 = np.zeros((40, 40, 2))
    sig2[28, 28, :] = [10.0, 10.0]
    h = build_xy_mt({"bkg": {"SP": bkg, "VP": 0.2 * bkg}, "s1": {"SP": sig}, "s2": {"SP": sig2}}, EDGES, 0.01)
    ds = {"bkg": {"kind": "background"}, "s1": {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3},
          "s2": {"kind": "signal", "mzprime": 3000.0, "rinv": 0.3}}
    return h, ds


def test_scan_finds_known_optimum():
    # factorised background: perfect closure everywhere; all signal in the bin starting at (0.7, 0.7):
    # the tightest cut keeping it is the optimum (background falls monotonically)
    h, ds = _known_optimum_toy()
    res = scan_working_points(h, ds)
    assert res.best == pytest.approx((0.7, 0.7))
    assert not res.fallback
    row = res.table[(np.isclose(res.table.x0, 0.7)) & (np.isclose(res.table.y0, 0.7))].iloc[0]
    assert row.passes and row.delta_total == pytest.approx(0.0, abs=1e-12) and row.r_max == 0.0
    assert len(res.table) == 33 * 33
    # tighter than the signal bin: no signal, so the point fails the r_max rule
    tight = res.table[(np.isclose(res.table.x0, 0.75)) & (np.isclose(res.table.y0, 0.75))].iloc[0]
    assert tight.z_mean == 0.0 and tight.r_max == np.inf and not tight.passes


def _brute(h, ds, x0, y0, ref, u=None):
    vals = h.values(flow=False)
    var = h.variances(flow=False)
    names = list(h.axes["dataset"])
    ix, iy = int(round(x0 * 40)), int(round(y0 * 40))

    def regions(a):
        return np.array([a[ix:, :iy].sum((0, 1)), a[ix:, iy:].sum((0, 1)),
                         a[:ix, :iy].sum((0, 1)), a[:ix, iy:].sum((0, 1))])

    bk = [names.index(n) for n, m in ds.items() if m["kind"] == "background"]
    sg = [n for n, m in ds.items() if m["kind"] == "signal"]
    b = regions(vals[bk, 0].sum(0))
    vb = regions(var[bk, 0].sum(0))
    nhat = b[0] * b[3] / b[2]
    vn = nhat**2 * (vb[0] / b[0] ** 2 + vb[2] / b[2] ** 2 + vb[3] / b[3] ** 2)
    # log-space closure pulls: ln(nhat / n_B) over the relative errors of both sides
    chi2 = np.sum(np.log(nhat / b[1]) ** 2 / (vn / nhat**2 + vb[1] / b[1] ** 2))
    p = stats.chi2.sf(chi2, len(nhat))
    delta = nhat.sum() / b[1].sum() - 1
    pull = np.log(nhat.sum() / b[1].sum()) / np.sqrt(vn.sum() / nhat.sum() ** 2 + vb[1].sum() / b[1].sum() ** 2)
    sigma = nhat * np.sqrt(1 / b[0] + 1 / b[2] + 1 / b[3])
    if u is not None:
        sigma = np.sqrt(sigma**2 + (np.asarray(u) * nhat) ** 2)
    tot_ref = vals[names.index(ref), 0].sum()
    zs, rs = [], []
    for n in sg:
        s = regions(vals[names.index(n), 0])
        st = s[1] * tot_ref / vals[names.index(n), 0].sum()
        zs.append(np.sqrt(sum(asimov_z(st[i], nhat[i], sigma[i]) ** 2 for i in range(len(nhat)))))
        si, bi = s.sum(1), b.sum(1)
        rs.append(max((si[r] / bi[r]) / (si[1] / bi[1]) for r in (0, 2, 3)))
    return {"z_mean": np.mean(zs), "pvalue": p, "delta_total": delta, "pull_total": pull, "r_max": max(rs),
            "chi2": chi2}


@pytest.mark.parametrize("x0,y0", [(0.1, 0.9), (0.5, 0.5), (0.775, 0.875), (0.9, 0.1), (0.325, 0.6)])
def test_vectorised_scan_matches_brute_force(x0, y0):
    h, ds = realistic_toy(n_mt=4, n_signal=3, n_background=3)
    res = scan_working_points(h, ds, reference="svj_mz2000_rinv0.3", rules=ScanRules(fom_nonclosure=False, **NO_GUARD))
    row = res.table[(np.isclose(res.table.x0, x0)) & (np.isclose(res.table.y0, y0))].iloc[0]
    assert row.n_fit_bins == 4 and row.pass_guard  # no bin merged
    ref = _brute(h, ds, x0, y0, "svj_mz2000_rinv0.3")
    for k, v in ref.items():
        assert row[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


@pytest.mark.parametrize("x0,y0", [(0.5, 0.5), (0.775, 0.875), (0.325, 0.6)])
def test_figure_of_merit_carries_the_cards_nonclosure(x0, y0, tmp_path):
    """<Z_A> with sigma_b^2 = stat^2 + (u nhat)^2, u the non-closure of the card written at that point."""
    from svjscout.datacards import write_datacards

    h, ds = realistic_toy(n_mt=4, n_signal=3, n_background=3)
    index = write_datacards(h, ds, (x0, y0), tmp_path, **NO_GUARD, allow_unbacked=True)
    assert index["mt_groups"] == [[0], [1], [2], [3]]
    u = np.array(index["nonclosure_kappa"]) - 1
    res = scan_working_points(h, ds, reference="svj_mz2000_rinv0.3", rules=ScanRules(**NO_GUARD))
    row = res.table[(np.isclose(res.table.x0, x0)) & (np.isclose(res.table.y0, y0))].iloc[0]
    with_nc = _brute(h, ds, x0, y0, "svj_mz2000_rinv0.3", u=u)["z_mean"]
    without = _brute(h, ds, x0, y0, "svj_mz2000_rinv0.3")["z_mean"]
    assert row["z_mean"] == pytest.approx(with_nc, rel=1e-9) and with_nc < without


def test_fallback_when_no_point_passes():
    h, ds = _known_optimum_toy()
    res = scan_working_points(h, ds, grid=9, rules=ScanRules(r_max=-1.0))
    assert res.fallback and not res.table.passes.any()
    assert "FALLBACK" in res.report and "pass_rmax" in res.report
    assert res.best == pytest.approx((0.7, 0.7))  # fewest failed rules (only r_max), highest <Z_A>


def test_plateau_requires_neighbours():
    ok = np.ones((5, 5), bool)
    ok[2, 2] = False
    pm = plateau_mask(ok)
    assert pm.sum() == 25 - 9 and not pm[1, 1] and pm[0, 0] and not pm[3, 3] and pm[4, 0]


def test_custom_grid_and_off_grid_error():
    h, ds = _known_optimum_toy()
    res = scan_working_points(h, ds, grid=([0.5, 0.7], [0.7]))
    assert list(res.table.x0) == [0.5, 0.7] and res.best == (0.7, 0.7)
    raw = scan_working_points(h, ds, grid=(np.linspace(0.1, 0.9, 33), np.linspace(0.1, 0.9, 33)))
    assert 0.3 in set(raw.table.x0) and raw.best == (0.7, 0.7)  # snapped to the exact edge values
    with pytest.raises(HistogramError, match="y0=0.71"):
        scan_working_points(h, ds, grid=([0.5], [0.71]))
    with pytest.raises(HistogramError, match="reference"):
        scan_working_points(h, ds, reference="nope")


@pytest.mark.slow
def test_write_scan(tmp_path):
    h, ds = _known_optimum_toy()
    res = scan_working_points(h, ds, grid=([0.6, 0.65, 0.7], [0.6, 0.65, 0.7]))
    paths = write_scan(res, tmp_path)
    names = {os.path.basename(p) for p in paths}
    assert {"scan.csv", "scan_best.json"} | {f"scan_{m}.{e}" for m in ("z_mean", "pvalue", "delta_total", "pull_total",
                                                                        "r_max", "neff_min", "failed_rules",
                                                                        "rule_failures")
                                             for e in ("pdf", "png")} <= names
    import pandas as pd

    df = pd.read_csv(tmp_path / "scan.csv")
    assert len(df) == 9 and {"z_mean", "pvalue", "plateau", "delta_total", "pull_total", "r_max", "pass_guard",
                             "neff_min", "n_fit_bins", "passes"} <= set(df.columns)


def test_per_bin_rules_fail_where_the_integrated_ones_pass():
    """The demo's pattern: non-closures of opposite sign per M_T bin cancel in the M_T-integrated sum."""
    bkg = factorised(1e7, falling(3.0), falling(2.0), [1.0, 1.0])
    bkg[31:, 35:, 0] *= 1.25  # region B at (0.775, 0.875), M_T bin 0: prediction 20 % low
    bkg[31:, 35:, 1] *= 0.75  # bin 1: prediction 33 % high; the B totals still add up
    sig = np.zeros((40, 40, 2))
    sig[38, 38, :] = [5.0, 5.0]
    h = build_xy_mt({"bkg": {"SP": bkg, "VP": 0.2 * bkg}, "s": {"SP": sig}}, EDGES, 1e-4)
    ds = {"bkg": {"kind": "background"}, "s": {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3}}
    res = scan_working_points(h, ds, grid=(np.array([0.775]), np.array([0.875])))
    row = res.table.iloc[0]
    assert abs(row.delta_total) < 1e-9 and abs(row.pull_total) < 1e-6  # integrated: "closes"
    assert row.delta_bins == pytest.approx(1 / 0.75 - 1, rel=1e-6)  # per bin: it does not
    assert row.pull_bins > 100 and row.delta_sig_bins == row.delta_bins  # 1e7 events: significant
    assert not row.pass_delta and not row.pass_pull
    # the same pattern on 1e3 events: |delta_i| > 5 % but within 2 sigma, the per-bin rule passes
    small = build_xy_mt({"bkg": {"SP": bkg * 1e-4, "VP": 0.2e-4 * bkg}, "s": {"SP": sig}}, EDGES, 1.0)
    row = scan_working_points(small, ds, grid=(np.array([0.775]), np.array([0.875])),
                              rules=ScanRules(**NO_GUARD)).table.iloc[0]
    assert row.delta_bins > 0.05 and row.delta_sig_bins == 0.0 and row.pass_delta
