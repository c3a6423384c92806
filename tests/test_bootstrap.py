"""Paired Poisson bootstrap over parents (datacards/bootstrap.py): counts, replicas, closed-form
spread, pairing, and the limits figure on cards."""

import numpy as np
import pytest
from conftest import benchmark_module
from scipy import stats

from svjscout.core.exceptions import DatacardError, HistogramError
from svjscout.datacards.bootstrap import (
    auc_figure,
    binned_auc,
    bootstrap,
    limits_figure,
    paired_difference,
    paired_ratio,
    parent_counts,
    percentile_interval,
    resample,
)
from svjscout.datacards.parents import StatInputs
from svjscout.datacards.split import quote_half, split_halves
from svjscout.processors.histograms import book
from svjscout.processors.normalize import flat_bins

EDGES = [650.0, 1000.0, 1500.0, 3000.0]


def _output(n_parents=500, seed=2, scale=1.0):
    """xy_mt with parent records: 1-3 copies per parent; a background and a signal dataset."""
    rng = np.random.default_rng(seed)
    h = book(EDGES, ["bkg", "svj"])["xy_mt"]
    fills = {}
    for ds, norm, a, b in (("bkg", 40.0, 2, 5), ("svj", 1.0, 5, 2)):
        copies = rng.integers(1, 4, n_parents)
        keys = np.repeat(rng.integers(1, 2**62, n_parents, dtype=np.uint64), copies)
        x, y = (np.clip(rng.beta(a, b, len(keys)), 0, 0.999) for _ in range(2))
        mt = rng.uniform(700, 2900, len(keys))
        w = norm * scale * rng.uniform(0.5, 1.5, len(keys)) / np.repeat(copies, copies)
        h.fill(dataset=ds, plane="SP", x=x, y=y, mt=mt, weight=w)
        fills[ds] = {"key": keys, "bin": flat_bins(h, dataset=ds, plane="SP", x=x, y=y, mt=mt), "weight": w}
    datasets = {"bkg": {"kind": "background"}, "svj": {"kind": "signal", "mzprime": 2000.0, "rinv": 0.3,
                                                         "xsec": 1.0}}
    return {"hists": {"xy_mt": h}, "parent_fills": fills, "datasets": datasets}


def test_counts_are_poisson_and_fixed_by_identity():
    keys = np.arange(1, 100_001, dtype=np.uint64)
    m = parent_counts("qcd", keys, 3, seed=7)
    freq = np.bincount(m, minlength=6)[:6] / len(m)
    np.testing.assert_allclose(freq, stats.poisson(1).pmf(np.arange(6)), atol=0.004)
    order = np.random.default_rng(0).permutation(len(keys))
    assert np.array_equal(parent_counts("qcd", keys[order], 3, seed=7), m[order])  # by key, not position
    assert (parent_counts("qcd", keys, 4, seed=7) == m).mean() < 0.5  # replicas differ
    assert (parent_counts("ttbar", keys, 3, seed=7) == m).mean() < 0.5  # datasets differ
    assert (parent_counts("qcd", keys, 3, seed=8) == m).mean() < 0.5  # seeds differ


def test_replica_is_the_resampled_population():
    """Values sum m w, variances sum m (per-parent-bin w)^2 (each draw a distinct parent), by hand."""
    out = _output()
    rep = resample(out, 5, seed=1)
    view = rep["hists"]["xy_mt"].view(flow=True)
    for ds in ("bkg", "svj"):
        f = out["parent_fills"][ds]
        m = parent_counts(ds, f["key"], 5, seed=1)
        i = list(rep["hists"]["xy_mt"].axes["dataset"]).index(ds)
        size = view[i].size
        # the records here are per copy (not grouped by parent and bin): group them first
        groups: dict = {}
        for key, b, w, mm in zip(f["key"].tolist(), f["bin"].tolist(), f["weight"].tolist(), m.tolist()):
            groups.setdefault((key, b), [0.0, mm])[0] += w
        want_v, want_var = np.zeros(size), np.zeros(size)
        for (_, b), (wsum, mm) in groups.items():
            want_v[b - i * size] += mm * wsum
            want_var[b - i * size] += mm * wsum**2
        np.testing.assert_allclose(view[i]["value"].ravel(), want_v, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(view[i]["variance"].ravel(), want_var, rtol=1e-10, atol=1e-12)
        # each draw of a parent is a distinct parent: as many distinct keys as draws
        draws = dict(zip(f["key"].tolist(), m.tolist()))
        assert len(np.unique(rep["parent_fills"][ds]["key"])) == sum(draws.values()) > 0


def test_bootstrap_spread_matches_closed_form_and_pairs():
    """sd of the replicas' total = sqrt(sum_p W_p^2) (Poisson bootstrap, closed form); two runs
    over the same parents (the second's weights x1.1) give a ratio of exactly 1.1 in every replica."""
    out = _output(n_parents=400)
    total = lambda inputs: {"bkg": float(inputs.xy_mt[{"dataset": "bkg"}].sum(flow=True).value)}  # noqa: E731
    reps = bootstrap(out, total, n_boot=400, seed=3)["bkg"]
    f = out["parent_fills"]["bkg"]
    _, inv = np.unique(f["key"], return_inverse=True)
    w_parent = np.bincount(inv.ravel(), weights=f["weight"])
    assert reps.std(ddof=1) == pytest.approx(np.sqrt((w_parent**2).sum()), rel=0.12)
    assert reps.mean() == pytest.approx(w_parent.sum(), rel=3 * np.sqrt((w_parent**2).sum() / 400) / w_parent.sum())
    other = _output(n_parents=400, scale=1.1)
    reps_b = bootstrap(other, total, n_boot=50, seed=3)["bkg"]
    med, lo, hi, n = paired_ratio(reps[:50], reps_b)
    assert n == 50 and med == pytest.approx(1.1, rel=1e-12) and lo == pytest.approx(1.1) and hi == pytest.approx(1.1)
    unpaired = bootstrap(other, total, n_boot=50, seed=4)["bkg"] / reps[:50]
    assert np.std(unpaired) > 0.02  # without pairing the ratio scatters
    assert percentile_interval(np.arange(5.0)) == (pytest.approx(np.nan, nan_ok=True),) * 2
    with pytest.raises(DatacardError, match="n_boot"):
        bootstrap(out, total, n_boot=1)


def test_resample_refuses_events_without_records():
    out = _output()
    del out["parent_fills"]["svj"]
    with pytest.raises(HistogramError, match="'svj' has events but no parent records"):
        resample(out, 0)


def test_limits_figure_on_the_quote_half(tmp_path):
    """The figure writes cards at the working point and reads their quick limits; on replica
    inputs it gives one limit per signal point, the cards' largest kappa and the guard's verdict."""
    out = _output(n_parents=3000)
    out["wp"] = {"x0": 0.5, "y0": 0.5, "split": True, "split_seed": 0}
    half = quote_half(out)
    assert half["hists"]["xy_mt"].sum(flow=True).value == pytest.approx(
        split_halves(out)["quote"]["hists"]["xy_mt"].sum(flow=True).value)
    reps = bootstrap(half, limits_figure(out["datasets"], (0.5, 0.5)), n_boot=3, seed=0)
    (point,) = set(reps) - {"kappa_max", "backed"}
    assert point.startswith("svj_mz2000")
    assert np.all(np.isfinite(reps[point])) and np.all(reps[point] > 0)
    assert np.all(reps["kappa_max"] >= 1) and set(reps["backed"].tolist()) <= {0.0, 1.0}
    assert len(set(reps[point].tolist())) > 1  # the replicas differ


def test_auc_figure_equals_sklearn_on_the_binned_scores():
    """The figure's AUC per signal point, from xy_mt over both planes and every M_T bin (flow bins
    included), equals scikit-learn's weighted AUC of the events' binned scores (ties half)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    h = book(EDGES, ["bkg", "bkg2", "svj"])["xy_mt"]
    events = {}
    for ds, plane, a, b, n in (("bkg", "SP", 2, 5, 700), ("bkg2", "VP", 2, 3, 300), ("svj", "SP", 5, 2, 400)):
        x, y = rng.beta(a, b, n), rng.beta(b, a, n)
        x[:3] = 1.0  # the overflow bin of the score axis
        mt = rng.uniform(500, 3500, n)  # both M_T flow bins too
        w = rng.uniform(0.2, 2.0, n)
        h.fill(dataset=ds, plane=plane, x=x, y=y, mt=mt, weight=w)
        events[ds] = (x, y, w)
    datasets = {"bkg": {"kind": "background"}, "bkg2": {"kind": "background"}, "svj": {"kind": "signal"}}
    vals = auc_figure(datasets)(StatInputs(h))
    edges = np.asarray(h.axes["x"].edges)
    for i, axis in enumerate(("x", "y")):
        score = np.concatenate([np.digitize(events[d][i], edges) for d in ("svj", "bkg", "bkg2")])
        label = np.r_[np.ones(400), np.zeros(1000)]
        weight = np.concatenate([events[d][2] for d in ("svj", "bkg", "bkg2")])
        assert vals[f"auc_{axis}:svj"] == pytest.approx(roc_auc_score(label, score, sample_weight=weight), abs=1e-12)
    assert vals["auc_x:svj"] > 0.8 and vals["auc_y:svj"] < 0.2
    assert np.isnan(binned_auc(np.ones(4), np.zeros(4)))


def test_paired_difference():
    a = np.array([0.7, 0.8, np.nan, 0.75] * 5)
    med, lo, hi, n = paired_difference(a, a + 0.02)
    assert n == 15 and med == pytest.approx(0.02) and lo == pytest.approx(0.02) and hi == pytest.approx(0.02)


@pytest.mark.slow
def test_compare_twin_pairs_bootstrap_on_a_run(tmp_path, small_job, monkeypatch, capsys):
    """`svjscout run` with the working point chosen on `select` and quoted on `final`, then the
    comparison script's bootstrap: its central figures are the run's own limits, and a run
    compared with itself has a paired ratio of exactly 1 in every replica."""
    import json

    from svjscout.jobs.config import load_job
    from svjscout.jobs.main_job import run_job

    cfg = load_job(tmp_path / "job.yaml", {"analysis.event_subset": {"subset": ["select", "final"]},
                                          "scan.enabled": True, "scan.split_on": "subsets", "scan.points": 9,
                                          "validation.enabled": False})
    out = tmp_path / "run"
    run_job(cfg, out, progress=False)
    from svjscout.jobs.commands_datacards import _load_output

    rec = _load_output(str(out / "histograms.coffea"))["wp"]
    assert rec["split"] and "'final' subset" in rec["source"]
    assert rec["split_subsets"] == {"select": [3, pytest.approx(2.0)], "quote": [4, pytest.approx(2.0)]}
    mod = benchmark_module("compare_twin_pairs")
    reps, central = mod._replicas(out, 12, 0)
    limits = json.loads((out / "limits.json").read_text())
    for point, lim in limits.items():
        if isinstance(lim, dict) and "exp0" in lim:
            assert central[point] == pytest.approx(lim["exp0"], rel=1e-9), point
            assert len(reps[point]) == 12 and np.isfinite(reps[point]).sum() >= 10
    n_points = sum(1 for lim in limits.values() if isinstance(lim, dict) and "exp0" in lim)
    for point, lim in limits.items():
        if isinstance(lim, dict) and "exp0" in lim:
            for axis in ("x", "y"):
                assert 0.0 < central[f"auc_{axis}:{point}"] < 1.0
                assert np.isfinite(reps[f"auc_{axis}:{point}"]).sum() >= 10
    # the main table's AUCs are the same central figures, with the N_eff behind them
    quoted = mod._quoted_aucs(out)
    assert {k: v for k, v in quoted.items() if k.startswith("auc_")} == {
        k: v for k, v in central.items() if k.startswith("auc_")}
    assert quoted["neff:background"] > 0 and all(quoted[f"neff:{p}"] > 0 for p in limits
                                                  if isinstance(limits[p], dict) and "exp0" in limits[p])
    table = mod.bootstrap_table({"a@1": out, "b@1": out}, 12, "a", 0)
    assert "1.000 [1.000, 1.000] (12 replicas)" in table
    assert "+0.000 [+0.000, +0.000] (difference, 12 replicas)" in table
    # the target counts the limits and the kappa only, not the AUCs
    assert "target" in table and "NOT met" in table and f"({n_points + 1} comparisons" in table
    # the main table: a pair's report gives its dCorr terms beside their permutation floors
    report = tmp_path / "report.json"
    floors = {"dcorr_xy": {"observed": 0.0123, "mean": 0.004, "sd": 0.005, "z": 1.66, "n_draws": 50}}
    report.write_text(json.dumps({"test": {"dcorr": {"dcorr_xy": 0.2}}, "summary": {
        "best_epoch": 3, "epochs_run": 5, "permutation_floors": {"subset": "final", "terms": floors}}}))
    monkeypatch.setattr("sys.argv", ["compare_twin_pairs", f"a={out}:{report}", f"b={out}"])
    mod.main()
    main_table = capsys.readouterr().out
    row = next(r for r in main_table.splitlines() if r.startswith("| dcorr_xy:"))
    assert row.endswith("| 0.0123 (floor 0.0040 +- 0.0050, z 1.7) | - |")
    auc_rows = [r for r in main_table.splitlines() if r.startswith("| AUC of X / Y on the quoted events")]
    assert len(auc_rows) == n_points
    for r in auc_rows:  # "not backed" exactly where the signal's or the background's N_eff is below 10
        point = r.split(" | ")[0].rsplit(", ", 1)[1]
        low = min(quoted[f"neff:{point}"], quoted["neff:background"]) < 10
        assert r.split(" | ")[1].endswith(", not backed: N_eff < 10)" if low else ")") and "(N_eff " in r
