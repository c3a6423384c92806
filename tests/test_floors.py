"""Noise floors by block permutation among parents (models/twin_training/floors.py, issue 29 item 4)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from svjscout.core.exceptions import ConfigError
from svjscout.models.twin_training.floors import (
    TWIN_DCORR_PAIRS,
    block_permutation,
    dcorr_values,
    parent_codes,
    permutation_floors,
    twin_dcorr_floors,
)


def _clustered(seed: int, n_parents: int = 300):
    """Parents with 1-4 detector copies; x and y independent between parents, near-equal within one."""
    rng = np.random.default_rng(seed)
    copies = rng.integers(1, 5, n_parents)
    p = np.repeat(np.arange(n_parents), copies)
    xp, yp = rng.normal(size=n_parents), rng.exponential(size=n_parents)
    x = xp[p] + 0.1 * rng.normal(size=len(p))
    y = yp[p] + 0.1 * rng.normal(size=len(p))
    w = rng.uniform(0.5, 1.5, len(p))
    return x, y, w, p


def test_block_permutation_moves_whole_blocks_among_equal_sizes():
    rng = np.random.default_rng(0)
    parent = np.repeat(np.arange(500), rng.integers(1, 5, 500))
    shuffle = rng.permutation(len(parent))
    parent = parent[shuffle]  # blocks not contiguous
    strata = (parent % 3).astype(str)
    values = np.arange(len(parent), dtype=float)
    idx = block_permutation(parent, np.random.default_rng(1), strata=strata)
    assert np.array_equal(np.sort(idx), np.arange(len(parent)))
    moved = values[idx]
    blocks = {b: np.flatnonzero(parent == b) for b in np.unique(parent)}
    source_of = {}
    for b, rows in blocks.items():
        src = {int(parent[i]) for i in idx[rows]}
        assert len(src) == 1  # a block takes the values of one block ...
        s = src.pop()
        assert len(blocks[s]) == len(rows) and strata[blocks[s][0]] == strata[rows[0]]  # ... of its size and stratum
        np.testing.assert_array_equal(moved[rows], values[blocks[s]])  # copy by copy
        source_of[b] = s
    assert len(set(source_of.values())) == len(blocks)  # a bijection
    assert sum(b != s for b, s in source_of.items()) > 0.8 * len(blocks)
    # deterministic for a seed; other seeds differ; row level without parents
    np.testing.assert_array_equal(idx, block_permutation(parent, np.random.default_rng(1), strata=strata))
    assert not np.array_equal(idx, block_permutation(parent, np.random.default_rng(2), strata=strata))
    row = block_permutation(None, np.random.default_rng(1), n=10)
    assert sorted(row) == list(range(10))


def test_parent_codes_group_copies_and_separate_datasets():
    ds = np.array(["a", "a", "a", "b", "b"], dtype=object)
    code = parent_codes(ds, [1, 1, 1, 1, 1], [2, 2, 3, 2, 2], [7, 7, 7, 7, 8])
    assert code[0] == code[1] and len(set(code)) == 4


@pytest.mark.parametrize("estimator", ["v", "u"])
def test_block_floor_matches_the_true_null_row_floor_does_not(estimator):
    """Under independence between parents the observed value's distribution over fresh samples is
    the true floor: the block permutation of one sample reproduces it, a row permutation (which
    ignores the copies) underestimates it."""
    fn = dcorr_values({"d": ("x", "y")}, estimator)
    truth = []
    for s in range(60):
        x, y, w, _ = _clustered(s)
        truth.append(fn({"x": x, "y": y}, w)["d"])
    t_mean, t_sd = float(np.mean(truth)), float(np.std(truth, ddof=1))
    x, y, w, p = _clustered(1000)
    block = permutation_floors({"x": x, "y": y}, w, p, fn, "x", n_draws=60, seed=0)["d"]
    row = permutation_floors({"x": x, "y": y}, w, None, fn, "x", n_draws=60, seed=0)["d"]
    assert abs(block.mean - t_mean) < 0.25 * t_sd + 3 * t_sd / np.sqrt(60), (block.mean, t_mean, t_sd)
    assert 0.5 < block.sd / t_sd < 2.0
    assert row.mean < 0.8 * t_mean, (row.mean, t_mean)
    assert block.mean - row.mean > 3 * block.sd / np.sqrt(60)
    if estimator == "u":  # the row-level null of the bias-corrected estimator is ~0
        assert abs(row.mean) < 4 * row.sd / np.sqrt(60)


def test_twin_floors_flag_a_dependence_and_not_its_absence():
    x, y, w, p = _clustered(7)
    rng = np.random.default_rng(8)
    mt = 500 + 100 * x + 10 * rng.normal(size=len(x))  # X depends on M_T; Y does not
    deta = rng.uniform(-2, 2, len(x))
    floors = twin_dcorr_floors(x, y, mt, deta, w, p, n_draws=40, seed=3)
    assert list(floors) == list(TWIN_DCORR_PAIRS)
    assert floors["dcorr_x_mt"].z > 10 and floors["dcorr_x_mt"].p_value == pytest.approx(1 / 41)
    for k in ("dcorr_xy", "dcorr_y_mt", "dcorr_x_deta", "dcorr_y_deta"):
        assert abs(floors[k].z) < 4.5, (k, floors[k].to_dict())
    again = twin_dcorr_floors(x, y, mt, deta, w, p, n_draws=40, seed=3)
    assert all(np.array_equal(floors[k].draws, again[k].draws) for k in floors)


def test_value_fn_plugs_in_and_errors_name_the_key():
    x, y, w, p = _clustered(3, 60)

    def closure_like(cols, weights):  # any callback: e.g. a weighted ABCD closure
        a = (cols["x"] > 0.5) & (cols["y"] > 1.0)
        b = (cols["x"] > 0.5) & (cols["y"] <= 1.0)
        c = (cols["x"] <= 0.5) & (cols["y"] > 1.0)
        d = (cols["x"] <= 0.5) & (cols["y"] <= 1.0)
        n = {k: float(weights[m].sum()) for k, m in zip("abcd", (a, b, c, d))}
        return {"closure": abs(n["a"] * n["d"] / (n["b"] * n["c"]) - 1)}

    fl = permutation_floors({"x": x, "y": y}, w, p, closure_like, "x", n_draws=10)
    assert fl["closure"].draws.shape == (10,) and fl["closure"].sd > 0
    with pytest.raises(ConfigError, match="'score'"):
        permutation_floors({"x": x, "y": y}, w, p, closure_like, "score")
    with pytest.raises(ConfigError, match="n_draws"):
        permutation_floors({"x": x, "y": y}, w, p, closure_like, "x", n_draws=1)
    with pytest.raises(ConfigError, match="'y' has"):
        permutation_floors({"x": x, "y": y[:-1]}, w, p, closure_like, "x")
    with pytest.raises(ConfigError, match="estimator"):
        dcorr_values({"d": ("x", "y")}, "w")


# -- ABCD closure floors -------------------------------------------------------------------------

def test_abcd_nonclosure_by_hand():
    from svjscout.models.twin_training.floors import abcd_nonclosure

    # A: x>=.5,y<.5 (w 2+1); B: x>=.5,y>=.5 (w 4); C: x<.5,y<.5 (w 1.5); D: x<.5,y>=.5 (w 3)
    x = np.array([0.9, 0.6, 0.7, 0.2, 0.1, 0.3])
    y = np.array([0.1, 0.2, 0.8, 0.3, 0.6, 0.5])
    w = np.array([2.0, 1.0, 4.0, 1.5, 1.0, 2.0])
    pred = 3.0 * 3.0 / 1.5
    assert abcd_nonclosure(x, y, w, (0.5, 0.5)) == pytest.approx(abs(4.0 - pred) / pred)
    assert np.isnan(abcd_nonclosure(x[:3], y[:3], w[:3], (0.5, 0.5)))  # no C, D: undefined


def test_closure_floor_matches_the_hypergeometric_closed_form():
    """Independent X, Y, unit weights, one event per parent: the permutation keeps both margins, so
    n_B is hypergeometric; the floor of |r| is sqrt(2/pi) sd(r) with sd(r) = sd(n_B) (1/n_A + 1/n_B +
    1/n_C + 1/n_D) (delta method)."""
    from svjscout.models.twin_training.floors import twin_closure_floors

    rng = np.random.default_rng(5)
    n = 40_000
    x, y = rng.random(n), rng.random(n)
    deta = np.full(n, 0.5)
    wp = (0.7, 0.8)
    f = twin_closure_floors(x, y, deta, None, None, {"wp": wp}, {"SP": (0.0, 1.5)}, n_draws=300,
                            seed=3)["closure_SP_wp"]
    r1, c1 = np.sum(x >= wp[0]), np.sum(y >= wp[1])
    var_b = r1 * c1 * (n - r1) * (n - c1) / (n ** 2 * (n - 1))
    nb = r1 * c1 / n
    na, nd = r1 - nb, c1 - nb
    nc = n - r1 - c1 + nb
    sd_r = np.sqrt(var_b) * (1 / na + 1 / nb + 1 / nc + 1 / nd)
    assert f.mean == pytest.approx(np.sqrt(2 / np.pi) * sd_r, rel=0.12)
    assert abs(f.z) < 3  # the observed sample is one more draw of the same null


def test_closure_floor_sees_dependence_and_parent_copies():
    from svjscout.models.twin_training.floors import twin_closure_floors

    rng = np.random.default_rng(8)
    n_par, k = 3000, 5
    xp, yp = rng.random(n_par), rng.random(n_par)
    x, y = np.repeat(xp, k) + rng.normal(0, 0.01, n_par * k), np.repeat(yp, k) + rng.normal(0, 0.01, n_par * k)
    parent = np.repeat(np.arange(n_par), k)
    deta = np.zeros(n_par * k)
    args = ({"wp": (0.6, 0.6)}, {"SP": (0.0, 1.5)})
    rows = twin_closure_floors(x, y, deta, None, None, *args, n_draws=200, seed=1)["closure_SP_wp"]
    blocks = twin_closure_floors(x, y, deta, None, parent, *args, n_draws=200, seed=1)["closure_SP_wp"]
    # copies of one parent move together: the floor is ~sqrt(k) wider than a row-level permutation's
    assert blocks.mean / rows.mean == pytest.approx(np.sqrt(k), rel=0.25)
    # a dependence of Y on X: far above the floor
    y_dep = np.clip(y + 0.3 * (x > 0.6), 0, 1)
    dep = twin_closure_floors(x, y_dep, deta, None, parent, *args, n_draws=100, seed=2)["closure_SP_wp"]
    assert dep.z > 10
