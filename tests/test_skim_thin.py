"""Thinning the detector copies of a skim (samples/skim.py thin_copies, commands_skim --max-copies-per-parent)
and the Russian roulette on light copies (light_floors, roulette_light, commands_skim --light-roulette).

The thinned weighted sum must be an unbiased estimate of the full one: checked exactly (the
expectation of every copy's kept weight equals its weight, by enumerating the draws over many
seeds against the closed form k / m x m / k = 1) and on a real file through the processor.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import uproot
from conftest import embedded_file

from svjscout.jobs.commands_skim import preselected_columns
from svjscout.samples.skim import light_floors, roulette_light, thin_copies


def _toy(n_parents=40, seed=3):
    rng = np.random.default_rng(seed)
    m = rng.integers(1, 9, n_parents)
    parent = np.repeat(np.arange(1, n_parents + 1), m)
    event = np.arange(len(parent)) * 7 + 11
    w = rng.exponential(1.0, len(parent))
    return np.full(len(parent), 5), parent, event, w, m


@pytest.mark.parametrize("k", [1, 2, 3])
def test_each_parent_keeps_min_m_k_copies_with_weights_m_over_k(k):
    run, parent, event, _, m = _toy()
    keep, factor = thin_copies(run, parent, event, k, seed=9)
    kept_per_parent = np.bincount(parent[keep], minlength=len(m) + 1)[1:]
    assert np.array_equal(kept_per_parent, np.minimum(m, k))
    np.testing.assert_allclose(factor[keep], np.maximum(m / k, 1.0)[parent[keep] - 1])
    assert np.all(factor[~keep] == 1.0)


def test_thinning_is_unbiased_copy_by_copy():
    run, parent, event, w, m = _toy()
    k, n_seeds = 2, 3000
    total = np.zeros(len(w))
    for s in range(n_seeds):
        keep, factor = thin_copies(run, parent, event, k, seed=s)
        total += np.where(keep, w * factor, 0.0)
    mean = total / n_seeds
    # per copy: kept with probability p = min(1, k / m), then weight w / p: mean w, variance w^2 (1 - p) / p
    p = np.minimum(1.0, k / m[parent - 1])
    err = w * np.sqrt((1 - p) / p / n_seeds)
    pulls = (mean - w)[p < 1] / err[p < 1]
    assert np.all(np.abs(pulls) < 4.5)
    assert abs(pulls.mean()) < 4 / np.sqrt(len(pulls))
    np.testing.assert_allclose(mean[p == 1], w[p == 1], rtol=1e-12)


def test_the_draw_depends_on_the_copies_not_their_order():
    run, parent, event, _, _ = _toy()
    keep, factor = thin_copies(run, parent, event, 2, seed=4)
    perm = np.random.default_rng(0).permutation(len(event))
    keep2, factor2 = thin_copies(run[perm], parent[perm], event[perm], 2, seed=4)
    assert np.array_equal(keep2, keep[perm]) and np.array_equal(factor2, factor[perm])
    other, _ = thin_copies(run, parent, event, 2, seed=5)
    assert not np.array_equal(other, keep)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_k_is_refused(bad):
    with pytest.raises(ValueError, match="max copies per parent"):
        thin_copies(np.ones(2), np.ones(2), np.arange(2), bad)


def test_the_thinned_skim_of_a_file_keeps_its_yield_within_the_added_variance(tmp_path):
    src = embedded_file("ttbar.root")  # 3 detector copies per parent, skimmed: parents pass in 1-3 copies
    cols = ("run", "event", "parent", "gen_weight")
    full = preselected_columns(src, cols)
    out = tmp_path / "thin.root"
    res = subprocess.run([sys.executable, "-m", "svjscout.jobs.commands_skim", str(src), str(out),
                          "--max-copies-per-parent", "1", "--thin-seed", "2"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    thin = preselected_columns(out, cols)
    _, m = np.unique(full["parent"], return_counts=True)
    assert len(thin["event"]) == len(m) < len(full["event"])  # one copy per parent, every parent kept
    assert len(np.unique(thin["parent"])) == len(m)
    with uproot.open(src) as f, uproot.open(out) as g:  # the normalisation is unchanged
        assert f["Runs"]["genEventSumw"].array(library="np")[0] == g["Runs"]["genEventSumw"].array(library="np")[0]
        w_in = dict(zip(f["Events"]["event"].array(library="np").tolist(),
                        f["Events"]["genWeight"].array(library="np").tolist()))
        ev_out = g["Events"]["event"].array(library="np")
        w_out = g["Events"]["genWeight"].array(library="np")
    # each kept copy carries its weight times m / 1
    parent_of = dict(zip(full["event"].tolist(), full["parent"].tolist()))
    m_of = dict(zip(*np.unique(full["parent"], return_counts=True)))
    for e, w in zip(ev_out.tolist(), w_out.tolist()):
        assert w == pytest.approx(w_in[e] * m_of[parent_of[e]], rel=1e-6)
    # the yield: the thinned sum against the full one, within the variance the thinning adds
    # (per parent: m sum w_c^2 - (sum w_c)^2, the variance of m w_c for a uniform pick)
    inv = np.unique(full["parent"], return_inverse=True)[1]
    s1 = np.bincount(inv, full["gen_weight"])
    s2 = np.bincount(inv, full["gen_weight"] ** 2)
    var = np.sum(m * s2 - s1**2)
    diff = thin["gen_weight"].sum() - full["gen_weight"].sum()
    assert abs(diff) <= 4 * np.sqrt(var) + 1e-6 * full["gen_weight"].sum()


def _light_toy(n=300, seed=5):
    """Rows with weights spread over four decades (a pT-hat-biased sample), 1-3 rows per parent."""
    rng = np.random.default_rng(seed)
    w = 10 ** rng.uniform(-4, 0, n)
    parent = np.sort(rng.integers(1, n // 2, n))
    return np.full(n, 7), parent, np.arange(n) * 3 + 1, w


def test_roulette_is_unbiased_row_by_row_with_the_closed_form_variance():
    run, parent, event, w = _light_toy()
    floor = np.full(len(w), np.quantile(w, 0.7))
    n_seeds = 3000
    s1, s2, cell_sums = np.zeros(len(w)), np.zeros(len(w)), np.zeros(n_seeds)
    for s in range(n_seeds):
        keep, factor = roulette_light(w, floor, run, parent, event, seed=s)
        kept_w = np.where(keep, w * factor, 0.0)
        assert np.all(kept_w[keep & (w < floor)] == pytest.approx(floor[0]))  # a kept light row weighs the floor
        s1 += kept_w
        s2 += kept_w**2
        cell_sums[s] = kept_w.sum()
    mean = s1 / n_seeds
    light = w < floor
    # per light row: kept with p = w / t, weight t: mean w, variance w (t - w)
    var = w * (floor - w)
    pulls = (mean - w)[light] / np.sqrt(var[light] / n_seeds)
    assert np.all(np.abs(pulls) < 4.5) and abs(pulls.mean()) < 4 / np.sqrt(light.sum())
    np.testing.assert_allclose(mean[~light], w[~light], rtol=1e-12)  # heavy rows: always kept, unchanged
    # the variance of the sum: the closed form the floors are chosen with (relative error of a
    # variance over 3000 draws ~ sqrt(2 / 3000) = 2.6 %)
    assert np.var(cell_sums) == pytest.approx(var[light].sum(), rel=0.12)


def _expected_n_eff(w, parent, t):
    """Expected Kish N_eff over parents after the roulette at floor t, written out row by row."""
    sums = {}
    for wi, p in zip(w.tolist(), parent.tolist()):
        sums[p] = sums.get(p, 0.0) + wi
    added = sum(wi * (t - wi) for wi in w.tolist() if wi < t)
    return sum(w) ** 2 / (sum(v * v for v in sums.values()) + added)


@pytest.mark.parametrize("loss", [0.005, 0.01, 0.05])
def test_light_floors_is_the_largest_floor_within_the_loss(loss):
    _, parent, _, w = _light_toy(seed=11)
    cell = (np.arange(len(w)) % 3)
    floors = light_floors(w, parent, cell, loss)
    assert set(floors) == {0, 1, 2}
    for c, t in floors.items():
        m = cell == c
        ref = _expected_n_eff(w[m], parent[m], 0.0)
        assert t > np.min(w[m])  # the toy's light rows are worth rouletting
        assert _expected_n_eff(w[m], parent[m], t) >= (1 - loss) * ref - 1e-9
        heavier = np.sort(w[m][w[m] > t])
        if len(heavier):  # the next candidate costs more than the loss
            assert _expected_n_eff(w[m], parent[m], heavier[0]) < (1 - loss) * ref


def test_roulette_draw_depends_on_the_rows_not_their_order():
    run, parent, event, w = _light_toy()
    floor = np.full(len(w), np.median(w))
    keep, factor = roulette_light(w, floor, run, parent, event, seed=4)
    perm = np.random.default_rng(0).permutation(len(w))
    keep2, factor2 = roulette_light(w[perm], floor[perm], run[perm], parent[perm], event[perm], seed=4)
    assert np.array_equal(keep2, keep[perm]) and np.array_equal(factor2, factor[perm])
    assert not np.array_equal(roulette_light(w, floor, run, parent, event, seed=5)[0], keep)


def test_row_uniforms_are_uniform_and_independent_of_neighbouring_keys():
    from scipy import stats

    from svjscout.samples.skim import _row_uniforms
    n = 20000
    u = _row_uniforms(3, np.full(n, 5), np.arange(n), np.arange(n) * 2 + 1)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 4 / np.sqrt(n)  # consecutive keys: uncorrelated
    v = _row_uniforms(4, np.full(n, 5), np.arange(n), np.arange(n) * 2 + 1)
    assert abs(np.corrcoef(u, v)[0, 1]) < 4 / np.sqrt(n)  # another seed: another draw


def test_roulette_bad_values_are_refused():
    with pytest.raises(ValueError, match="N_eff loss"):
        light_floors(np.ones(3), np.arange(3), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="N_eff loss"):
        light_floors(np.ones(3), np.arange(3), np.zeros(3), -0.1)
    with pytest.raises(ValueError, match="finite, non-negative"):
        roulette_light(np.array([1.0, np.nan]), np.ones(2), np.ones(2), np.arange(2), np.arange(2))
    res = subprocess.run([sys.executable, "-m", "svjscout.jobs.commands_skim", "in.root", "out.root",
                          "--light-roulette", "1.5"], capture_output=True, text=True)
    assert res.returncode == 2 and "--light-roulette must be in (0, 1)" in res.stderr


def test_the_light_roulette_of_a_file_raises_light_copies_to_their_cells_floor(tmp_path):
    from svjscout.processors.settings import AnalysisSettings

    src = embedded_file("qcd.root")
    cols = ("run", "event", "parent", "gen_weight", "mt", "deta")
    full = preselected_columns(src, cols)
    out = tmp_path / "roulette.root"
    res = subprocess.run([sys.executable, "-m", "svjscout.jobs.commands_skim", str(src), str(out),
                          "--light-roulette", "0.05", "--thin-seed", "3"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # the cells as the analysis bins them: SP / VP by |deta|, M_T bins (the last one open)
    settings = AnalysisSettings()
    edges = np.asarray(settings.mt_edges)
    mt_bin = np.clip(np.searchsorted(edges, full["mt"], side="right") - 1, 0, len(edges) - 2)
    cell = (full["deta"] >= settings.cuts.sp_deta_max) * 100 + mt_bin
    floors = light_floors(full["gen_weight"], full["parent"], cell, 0.05)
    floor = np.array([floors[c] for c in cell.tolist()])
    assert np.any(full["gen_weight"] < floor)  # something to roulette in a pT-hat-biased QCD file
    with uproot.open(src) as f, uproot.open(out) as g:
        assert f["Runs"]["genEventSumw"].array(library="np")[0] == g["Runs"]["genEventSumw"].array(library="np")[0]
        w_out = dict(zip(g["Events"]["event"].array(library="np").tolist(),
                         g["Events"]["genWeight"].array(library="np").tolist()))
    w_in = full["gen_weight"]
    kept = np.array([e in w_out for e in full["event"].tolist()])
    assert np.all(kept[w_in >= floor])  # heavy copies are all kept, with their weight
    assert kept.sum() < len(kept)
    for e, w, t in zip(full["event"][kept].tolist(), w_in[kept].tolist(), floor[kept].tolist()):
        assert w_out[e] == pytest.approx(max(w, t), rel=1e-6)
    # the yield within the variance the roulette adds (sum of w (t - w) over light copies)
    light = w_in < floor
    sigma = np.sqrt(np.sum(w_in[light] * (floor[light] - w_in[light])))
    assert abs(sum(w_out.values()) - w_in.sum()) <= 4 * sigma + 1e-6 * w_in.sum()
