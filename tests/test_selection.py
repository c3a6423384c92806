"""Cutflow: monotonic and equal to a direct numpy count of the same cuts."""

import numpy as np

from svjscout.processors.selection import CUT_ORDER, QUALITY_ROWS, Cuts, cutflow, plane_of, preselection


def test_cutflow_matches_numpy_and_is_monotonic():
    rng = np.random.default_rng(1)
    n = 5000
    cuts = Cuts()
    clean = rng.random(n) > 0.01
    ht = rng.uniform(0, 1500, n)
    n_ak8 = rng.integers(0, 4, n)
    feats = {"mt": rng.uniform(300, 3000, n), "rt": rng.uniform(0, 0.6, n), "dphi_min": rng.uniform(0, np.pi, n),
             "deta": rng.uniform(0, 4, n)}
    w = rng.choice([-1.0, 1.0, 2.0], n)
    pre = rng.random(n) > 0.2
    quality = {name: rng.random(n) > 0.05 for name in QUALITY_ROWS}  # the data-quality rows
    flow = cutflow(preselection(clean, ht, n_ak8, feats, cuts, prefilter=pre, quality=quality), w)
    assert flow["names"] == ["all", *CUT_ORDER]
    by_name = {"prefilter": pre, "clean": clean, "trigger": ht > 410, "two_ak8": n_ak8 >= 2, "mt": feats["mt"] > 650,
               "rt": feats["rt"] > 0.24, "dphi_min": feats["dphi_min"] < 0.8, "deta": feats["deta"] < 2.2, **quality}
    masks = [np.ones(n, bool)] + [by_name[name] for name in CUT_ORDER]
    running = np.ones(n, bool)
    for i, m in enumerate(masks):
        running &= m
        assert flow["raw"][i] == np.count_nonzero(running)
        assert flow["weighted"][i] == np.sum(w[running])
    assert all(a >= b for a, b in zip(flow["raw"], flow["raw"][1:]))
    # without the data-quality rows every event passes them: the other rows count what they did before them
    plain = cutflow(preselection(clean, ht, n_ak8, feats, cuts, prefilter=pre), w)
    running = np.ones(n, bool)
    for name, raw in zip(["all", *CUT_ORDER], plain["raw"]):
        running &= by_name[name] if name in by_name and name not in QUALITY_ROWS else True
        assert raw == np.count_nonzero(running), name


def test_plane_boundary():
    assert plane_of(np.array([1.4999, 1.5, 2.1]), Cuts()).tolist() == ["SP", "VP", "VP"]
