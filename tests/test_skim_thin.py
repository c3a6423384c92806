"""Thinning the detector copies of a skim (samples/skim.py thin_copies, commands_skim --max-copies-per-parent).

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
from svjscout.samples.skim import thin_copies


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
    src = embedded_file("qcd_s202.root")
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
