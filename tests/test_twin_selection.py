"""Choose on one half of the parents, quote on the other; paired bootstrap over parents
(models/twin_training/selection.py, issue 29 item 5)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from svjscout.core.exceptions import ConfigError
from svjscout.models.twin_training.selection import (
    bootstrap_replicas,
    cross_select,
    paired_bootstrap,
    parent_half,
)


def _clustered(seed: int, n_parents: int = 400):
    rng = np.random.default_rng(seed)
    copies = rng.integers(1, 5, n_parents)
    p = np.repeat(np.arange(n_parents), copies)
    v = rng.normal(size=n_parents)[p] + 0.1 * rng.normal(size=len(p))
    return p, v


def test_halves_keep_copies_together_and_are_balanced():
    p, _ = _clustered(0, 3000)
    ds = np.full(len(p), "qcd", dtype=object)
    h = parent_half(ds, np.ones(len(p)), np.ones(len(p)), p + 1)
    assert set(np.unique(h)) == {0, 1}
    for b in np.unique(p)[:200]:
        assert len(set(h[p == b])) == 1
    first = h[np.r_[True, p[1:] != p[:-1]]]
    assert abs(first.mean() - 0.5) < 4 * 0.5 / np.sqrt(len(first))


def test_cross_selection_removes_the_winners_curse():
    """50 candidates with the same true figure (0): the figure quoted on the events that chose the
    winner is biased upwards, the other half's is not."""
    rng = np.random.default_rng(1)
    same, cross = [], []
    for _rep in range(40):
        n = 400
        noise = rng.normal(size=(50, n))  # per candidate and event, mean 0
        half = (rng.random(n) < 0.5).astype(np.int8)
        res = cross_select(50, lambda c, m: float(noise[c, m].mean()), half)  # noqa: B023
        same.append(np.mean(res.same_half))
        cross.append(res.quote)
        assert res.table.shape == (2, 50) and res.same_half[0] == res.table[0].max()
    se = 1 / np.sqrt(200) / np.sqrt(40)  # sd of one half-mean / sqrt(repetitions), roughly
    assert abs(np.mean(cross)) < 4 * se
    assert np.mean(same) > 10 * se  # E[max of 50 N(0, 1/200)] ~ 2.25 / sqrt(200) ~ 14 se
    with pytest.raises(ConfigError, match="half"):
        cross_select(2, lambda c, m: 0.0, np.zeros(5))


def test_bootstrap_over_parents_matches_the_true_spread_row_bootstrap_does_not():
    p, _ = _clustered(2)
    reps = bootstrap_replicas(p, 50, seed=3)
    assert reps.shape == (50, len(p))
    for b in np.unique(p)[:50]:
        assert np.all(reps[:, p == b] == reps[:, p == b][:, :1])  # one weight per parent
    # spread of a weighted mean over fresh samples vs the block and the row bootstrap on one sample
    truth = [np.mean(_clustered(s)[1]) for s in range(100, 300)]
    p, v = _clustered(5)

    def stat(m):
        return float(np.sum(m * v) / np.sum(m))

    block = paired_bootstrap([stat], p, n_boot=300, seed=0)[0]
    row = paired_bootstrap([stat], np.arange(len(p)), n_boot=300, seed=0)[0]
    t_sd = float(np.std(truth, ddof=1))
    assert 0.75 < block.sd / t_sd < 1.33, (block.sd, t_sd)
    assert row.sd < 0.75 * t_sd, (row.sd, t_sd)
    assert block.lo < stat(np.ones(len(p))) < block.hi


def test_paired_difference_is_tighter_than_unpaired():
    p, v = _clustered(6)
    rng = np.random.default_rng(7)
    v2 = v + 0.05 + 0.02 * rng.normal(size=len(v))  # B = A + a small improvement, shared fluctuations

    def a(m):
        return float(np.sum(m * v) / np.sum(m))

    def b(m):
        return float(np.sum(m * v2) / np.sum(m))

    ia, ib, diff = paired_bootstrap([a, b], p, n_boot=200, seed=1, level=0.95)
    assert diff.value == pytest.approx(b(np.ones(len(p))) - a(np.ones(len(p))))
    assert diff.sd < 0.2 * np.hypot(ia.sd, ib.sd)  # paired: the shared part cancels
    assert diff.lo > 0 and diff.p_le_0 == 0.0
    assert ia.lo < ia.value < ia.hi
    with pytest.raises(ConfigError, match="level"):
        paired_bootstrap([a], p, level=1.5)
    with pytest.raises(ConfigError, match="n_boot"):
        bootstrap_replicas(p, 1)
