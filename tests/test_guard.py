"""The minimum-statistics guard, the log-space closure test and the parent split (issue 27, items 1-4)."""

import numpy as np
import pytest
from scipy import stats

from svjscout.core.exceptions import DatacardError, UnbackedError
from svjscout.datacards import ScanRules, scan_working_points, write_datacards
from svjscout.datacards.abcd import chi2_test, closure, predict
from svjscout.datacards.choice import choose_working_point
from svjscout.datacards.guard import Guard, guarded_groups, kish_neff, nhat_rel_err
from svjscout.datacards.parents import StatInputs
from svjscout.datacards.regions import region_yields
from svjscout.datacards.split import half_of, split_halves
from svjscout.datacards.toys import build_xy_mt, factorised, falling
from svjscout.processors.histograms import book
from svjscout.processors.normalize import flat_bins

EDGES = [650.0, 1000.0, 1500.0, 3000.0]
REGION_XY = {"A": (0.8, 0.2), "B": (0.8, 0.8), "C": (0.2, 0.2), "D": (0.2, 0.8)}


def _weights(n_events, weight):
    return np.full(n_events, float(weight))


def test_guard_on_hand_made_yields_with_known_neff():
    """Equal weights: N_eff = number of events; one event of weight 9 among three of 1: N_eff 144/84."""
    n = np.full((4, 3), 100.0)
    var = np.full((4, 3), 10.0)  # N_eff 1,000 everywhere but where set
    n[1] = [12.0, 30.0, 12.0]
    var[1] = [84.0, 90.0, 84.0]  # bins 0 and 2: N_eff 1.71; bin 1: N_eff 10
    np.testing.assert_allclose(kish_neff(n[1], var[1]), [144 / 84, 10.0, 144 / 84])
    groups, merges, verdict = guarded_groups(n, var, Guard(min_neff=10, max_rel_err=np.inf))
    # bin 0 merges up into 1: (42)^2 / 174 = 10.1 >= 10; bin 2 alone (1.71) merges down into [0, 1]
    assert groups == [[0, 1, 2]] and len(merges) == 2 and verdict.backed
    assert "B N_eff 1.7" in merges[0]["reason"]
    # at 11: [0, 1] (10.1) is still short, all three merged hold (54)^2 / 258 = 11.3
    groups, _, verdict = guarded_groups(n, var, Guard(min_neff=11, max_rel_err=np.inf))
    assert groups == [[0, 1, 2]] and verdict.backed
    g, _, v = guarded_groups(n, var, Guard(min_neff=12, max_rel_err=np.inf), edges=EDGES)
    assert not v.backed and "M_T [650, inf) (all bins merged): B N_eff 11.3" in v.reasons[0]


def test_guard_bounds_the_relative_error_of_the_prediction():
    # N_eff 16 in A, C and D: rel. error of n_A n_D / n_C = sqrt(3/16) = 0.433
    n = np.array([[16.0], [50.0], [16.0], [16.0]])
    var = n.copy()
    assert float(nhat_rel_err(n, var)[0]) == pytest.approx(np.sqrt(3 / 16))
    assert guarded_groups(n, var, Guard(10, 0.5))[2].backed
    v = guarded_groups(n, var, Guard(10, 0.4))[2]
    assert not v.backed and "nhat_B rel. MC error 0.43" in v.reasons[0]
    with pytest.raises(DatacardError, match="max_rel_err"):
        Guard(10, 0.0)


def test_a_closure_off_by_20x_fails_where_the_linear_pull_passed():
    """10 events per region, prediction 20x the truth in B: the linear pull (nhat - n_B)/sqrt(...)
    is capped near 1/rel. error and passes at 2 sigma; the log-space pull does not."""
    n_a = n_c = n_d = 10.0
    n_b = 10.0  # 10 events of weight 1 in B; A: 10 events of weight 20, so the prediction is 200
    nhat, var = predict(n_a * 20, n_c, n_d, (n_a * 20) ** 2 / 10, 10.0, 10.0)
    linear = (nhat - n_b) / np.sqrt(var + n_b)
    assert abs(linear) < 2.0  # the old test passed this (1.73)
    delta, sigma, pull = closure(nhat, var, n_b, n_b)
    assert delta == pytest.approx(19.0) and pull == pytest.approx(np.log(20.0) / np.sqrt(0.4))  # 4.7 sigma
    chi2, ndf, p = chi2_test(np.array([pull]))
    assert p < 1e-5
    # one side empty: an infinite pull, the test fails (it used to give |pull| = 1)
    _, _, pull = closure(np.array([1099.0]), np.array([0.0]), np.array([0.0]), np.array([0.0]))
    assert np.isinf(pull[0]) and chi2_test(pull)[2] == 0.0
    _, _, pull = closure(np.array([0.0]), np.array([0.0]), np.array([1099.0]), np.array([1099.0**2]))
    assert pull[0] == -np.inf


def test_closure_test_has_its_nominal_size_at_the_guard():
    """Toys with 10-20 weighted events per region and a true closure: the log-space chi2 rejects
    about 5 % at p < 0.05 (the linear one, with big weights, is not the point here: its size)."""
    rng = np.random.default_rng(7)
    mu = np.array([15.0, 12.0, 20.0, 16.0])  # expected events per region, B true = A D / C ... scaled below
    mu[1] = mu[0] * mu[3] / mu[2]
    w = 3.7
    n_toys, n_bins = 4000, 3
    counts = rng.poisson(mu[:, None, None], size=(4, n_toys, n_bins)).astype(float)
    n, v = counts * w, counts * w**2
    nhat, var = predict(n[0], n[2], n[3], v[0], v[2], v[3])
    _, _, pull = closure(nhat, var, n[1], v[1])
    ok = np.all(counts > 0, axis=(0, 2))  # the guard would merge toys with an empty region
    chi2 = np.sum(pull[ok] ** 2, axis=-1)
    frac = float(np.mean(stats.chi2.sf(chi2, n_bins) < 0.05))
    assert 0.02 < frac < 0.10, frac


def _toy(norm):
    bkg = factorised(norm, falling(3.0), falling(3.0), [3.0, 2.0, 1.0])
    sig = np.zeros((40, 40, 3))
    sig[30:, 30:, :] = 1.0
    h = build_xy_mt({"bkg": {"SP": bkg, "VP": 0.3 * bkg}, "svj": {"SP": sig}}, EDGES, 1.0)
    ds = {"bkg": {"kind": "background"}, "svj": {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3}}
    return h, ds


def test_scan_never_chooses_a_point_the_guard_fails():
    h, ds = _toy(2000.0)  # weight 1: a few events in the tight corners
    res = scan_working_points(h, ds, grid=9)
    t = res.table
    assert (~t.pass_guard).any() and t.pass_guard.any()
    best = t[np.isclose(t.x0, res.best[0]) & np.isclose(t.y0, res.best[1])].iloc[0]
    assert best.pass_guard and best.neff_min >= 10
    # every region of every fit bin of every guarded point holds N_eff >= 10 (recomputed by hand)
    for _, row in t[t.pass_guard].iterrows():
        y = region_yields(h, ds, (row.x0, row.y0))
        groups = guarded_groups(y.n, y.var, Guard())[0]
        assert len(groups) == row.n_fit_bins
        assert np.all(y.merged(groups).neff >= 10)


def test_no_background_after_the_preselection_is_refused(tmp_path):
    """A tiny sample with no background MC at all in the fit plane: no card, an error saying why."""
    h, ds = _toy(2000.0)
    h.view(flow=True)["value"][0] = 0.0
    h.view(flow=True)["variance"][0] = 0.0
    with pytest.raises(UnbackedError, match="A empty, B empty, C empty, D empty"):
        write_datacards(h, ds, (0.5, 0.5), tmp_path)
    assert not (tmp_path / "datacards").exists()
    index = write_datacards(h, ds, (0.5, 0.5), tmp_path, allow_unbacked=True, validate=False)
    assert index["backed"] is False and index["verdict"]["label"] == "UNBACKED"
    text = (tmp_path / "datacards" / "svj_mz2000_rinv0.3" / "datacard.txt").read_text()
    assert text.startswith("# UNBACKED: ")


def _parent_output(n_parents=400, copies=4, seed=3):
    """A processor-like output: detector copies of parents filled into xy_mt with parent records."""
    rng = np.random.default_rng(seed)
    h = book(EDGES, ["bkg", "svj"])["xy_mt"]
    fills = {}
    for ds, scale in (("bkg", 50.0), ("svj", 1.0)):
        keys = np.repeat(rng.integers(1, 2**62, n_parents, dtype=np.uint64), copies)
        x = np.clip(rng.beta(2 if ds == "bkg" else 5, 5 if ds == "bkg" else 2, len(keys)), 0, 0.999)
        y = np.clip(rng.beta(2 if ds == "bkg" else 5, 5 if ds == "bkg" else 2, len(keys)), 0, 0.999)
        mt = rng.uniform(700, 2900, len(keys))
        w = np.full(len(keys), scale / copies)
        h.fill(dataset=ds, plane="SP", x=x, y=y, mt=mt, weight=w)
        h.fill(dataset=ds, plane="VP", x=x, y=y, mt=mt, weight=w)
        b_sp = flat_bins(h, dataset=ds, plane="SP", x=x, y=y, mt=mt)
        b_vp = flat_bins(h, dataset=ds, plane="VP", x=x, y=y, mt=mt)
        fills[ds] = {"key": np.concatenate([keys, keys]), "bin": np.concatenate([b_sp, b_vp]),
                     "weight": np.concatenate([w, w])}
    datasets = {"bkg": {"kind": "background"}, "svj": {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3}}
    return {"hists": {"xy_mt": h}, "parent_fills": fills, "datasets": datasets}


def test_split_by_parent_is_disjoint_complete_and_deterministic():
    out = _parent_output()
    halves = split_halves(out, seed=0)
    full = out["hists"]["xy_mt"].values(flow=True)
    sel, quo = (halves[k]["hists"]["xy_mt"] for k in ("select", "quote"))
    np.testing.assert_allclose((sel.values(flow=True) + quo.values(flow=True)) / 2, full, rtol=1e-12, atol=1e-9)
    ks = set(halves["select"]["parent_fills"]["bkg"]["key"].tolist())
    kq = set(halves["quote"]["parent_fills"]["bkg"]["key"].tolist())
    assert ks and kq and not ks & kq  # a parent's copies all go to one half
    assert 0.35 < len(ks) / (len(ks) + len(kq)) < 0.65
    again = split_halves(out, seed=0)["select"]["hists"]["xy_mt"]
    np.testing.assert_array_equal(again.values(flow=True), sel.values(flow=True))
    other = split_halves(out, seed=1)["select"]["hists"]["xy_mt"]
    assert not np.array_equal(other.values(flow=True), sel.values(flow=True))
    assert half_of(np.array([5], np.uint64), 0)[0] == half_of(np.array([5], np.uint64), 0)[0]
    # each half's variances are parent-grouped: sum over parents of (2 x the parent's weight in the bin)^2
    full_in, sel_in = StatInputs.from_output(out), StatInputs.from_output(halves["select"])
    y_full = region_yields(full_in.xy_mt, out["datasets"], (0.5, 0.5), which="background", parents=full_in.parents)
    y_sel = region_yields(sel, out["datasets"], (0.5, 0.5), which="background", parents=sel_in.parents)
    assert np.all(y_sel.var > 0) and np.all(y_full.var > 0)
    assert np.mean(y_sel.var / y_full.var) == pytest.approx(2.0, rel=0.35)  # half the parents, weights x2


def test_split_refused_without_parent_records():
    out = _parent_output()
    del out["parent_fills"]["svj"]
    from svjscout.core.exceptions import HistogramError

    with pytest.raises(HistogramError, match="'svj' has no parent records"):
        split_halves(out)
    choice = choose_working_point(out, ScanRules(), grid=5)
    assert not choice.split and any("could not be split" in c for c in choice.caveats)


def test_choice_is_quoted_on_the_other_half():
    out = _parent_output(n_parents=3000)
    choice = choose_working_point(out, ScanRules(), grid=9)
    assert choice.split and "half 'select'" in choice.source
    quote = StatInputs.from_output(split_halves(out)["quote"])
    assert quote.parents is not None  # the half's own records, split with its histogram
    row = scan_working_points(quote, out["datasets"], grid=([choice.wp[0]], [choice.wp[1]]), quiet=True).table.iloc[0]
    assert choice.row["z_mean"] == pytest.approx(row.z_mean) and choice.row["neff_min"] == pytest.approx(row.neff_min)
    assert choice.inputs.xy_mt.values(flow=True).sum() == pytest.approx(quote.xy_mt.values(flow=True).sum())
    assert choice.backed == (not choice.reasons) and (choice.verdict().startswith("backed") == choice.backed)
