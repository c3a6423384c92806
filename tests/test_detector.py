"""samples/detector.py: pileup enters the MET once (issue 30 item 1).

Hand-made events with a closed-form expectation: pileup particles get only their particle-level
response, hard-scatter jets keep CMS's JER (without its pileup part), the old detector
(``DetectorParams.shipped_v1``) is still reachable, and a seed fixes every number.
"""

from __future__ import annotations

import numpy as np
import pytest

from svjscout.core.exceptions import ConfigError
from svjscout.samples.detector import (
    DetectorParams,
    candidates,
    cell_pt,
    generator_jets,
    jer,
    jet_factors,
    measure,
    missing_pt_per_event,
)


def _event(n_ev: int, with_pileup: bool = True):
    """Per event: a hard jet (10 charged + 10 neutral hadrons, 15 GeV each, at eta 0, phi 0),
    a pileup-only 'jet' (12 neutral hadrons of 3 GeV at eta 0.5, phi 2.5) and one pileup neutral
    (6 GeV) in the hard jet's core, in the HCAL cell of one of its neutrals."""
    hard_eta = np.r_[np.linspace(-0.1, 0.1, 10), np.linspace(-0.1, 0.1, 10) + 0.02]
    hard_phi = np.r_[np.linspace(-0.1, 0.1, 10), np.linspace(0.1, -0.1, 10)]
    pt = [np.full(20, 15.0)]
    eta = [hard_eta]
    phi = [hard_phi]
    ids = [np.r_[np.full(10, 211), np.full(10, 130)]]
    pileup = [np.zeros(20, bool)]
    jet_local = [np.zeros(20, int)]
    if with_pileup:
        pt += [np.full(12, 3.0), [6.0]]
        eta += [0.5 + np.linspace(-0.12, 0.12, 12), [hard_eta[15] + 0.001]]
        phi += [2.5 + np.linspace(0.12, -0.12, 12), [hard_phi[15] + 0.001]]
        ids += [np.full(12, 130), [130]]
        pileup += [np.ones(12, bool), [True]]
        jet_local += [np.ones(12, int), [0]]  # as an all-particle clustering would assign them
    one = {k: np.concatenate(v) for k, v in
           {"pt": pt, "eta": eta, "phi": phi, "id": ids, "pileup": pileup, "jet": jet_local}.items()}
    per = len(one["pt"])
    ev = np.repeat(np.arange(n_ev), per)
    arrays = {k: np.tile(v, n_ev) for k, v in one.items()}
    n_local = int(one["jet"].max()) + 1
    arrays["jet"] = arrays["jet"] + n_local * ev  # global jet index
    arrays["charge"] = (arrays["id"] == 211).astype(int)
    return arrays, ev


def _measure(arrays, ev, n_ev, params, seed=0):
    return measure(arrays["pt"], arrays["eta"], arrays["phi"], arrays["id"], arrays["charge"], ev, n_ev,
                   np.random.default_rng(seed), params, pileup=arrays["pileup"], jet=arrays["jet"])


def test_pileup_particles_get_only_their_particle_level_response():
    n_ev = 50
    arrays, ev = _event(n_ev)
    params = DetectorParams(jet_tail_prob=0.0)
    m = _measure(arrays, ev, n_ev, params)
    c = m.cells
    # the pileup-only jet's cells (eta ~ 0.5, phi ~ 2.5) belong to no jet: a factor never reaches them
    pu_cells = np.abs(c["phi"] - 2.5) < 0.3
    assert pu_cells.sum() > 0 and np.all(c["jet"][pu_cells] == -1)
    factors = np.full(len(m.jets["pt"]), 0.5)  # an extreme jet response, the same for every jet
    pt, _ = cell_pt(m, factors, params)
    assert pt[pu_cells] == pytest.approx(c["pt"][pu_cells], rel=0, abs=0)  # particle-level response only
    # the mixed cell (a hard neutral + the 6 GeV pileup neutral): only its hard share is scaled
    mixed = (c["jet"] >= 0) & (c["jet_frac"] < 1.0)
    assert n_ev - 3 <= mixed.sum() <= n_ev  # (a deposit smeared to 0 leaves a cell unmixed)
    hard_share = c["jet_frac"][mixed]
    assert np.all((hard_share > 0.3) & (hard_share < 1.0))
    assert pt[mixed] == pytest.approx(c["pt"][mixed] * (1.0 - 0.5 * hard_share), rel=1e-12)
    # the jets' calorimeter pT, which turns the jet-level shift into a factor, counts no pileup
    hard_cells = (c["jet"] >= 0)
    expected = np.bincount(c["jet"][hard_cells], (c["pt"] * c["jet_frac"])[hard_cells], len(m.jets["pt"]))
    assert m.jets["calo_pt"] == pytest.approx(expected)
    assert np.all(m.jets["pt"][1::2] == 0.0)  # the caller's pileup jets are emptied
    # the old detector scales the pileup-only jet too (the test can fail)
    old = DetectorParams.shipped_v1(jet_tail_prob=0.0)
    mo = _measure(arrays, ev, n_ev, old)
    pt_old, _ = cell_pt(mo, np.full(len(mo.jets["pt"]), 0.5), old)
    pu_old = np.abs(mo.cells["phi"] - 2.5) < 0.3
    assert pt_old[pu_old] == pytest.approx(0.5 * mo.cells["pt"][pu_old])


def test_hard_jet_width_does_not_depend_on_pileup():
    """The jet-level width of the hard jet is the same with and without the pileup particles
    (the pileup-only jet and the pileup neutral in its core): pileup is not in the JER."""
    n_ev = 20
    with_pu, ev = _event(n_ev)
    without, ev0 = _event(n_ev, with_pileup=False)
    params = DetectorParams()
    m1 = _measure(with_pu, ev, n_ev, params)
    m0 = _measure(without, ev0, n_ev, params)
    hard1 = m1.jets["pt"] > 0
    assert hard1.sum() == n_ev == len(m0.jets["pt"])
    assert m1.jets["pt"][hard1] == pytest.approx(m0.jets["pt"])  # generator pT of the hard scatter only
    # identical up to the particle-level smearing of the jet's own deposits (different draws)
    assert np.mean(m1.jets["sigma"][hard1]) == pytest.approx(np.mean(m0.jets["sigma"]), rel=0.02)
    old = DetectorParams.shipped_v1()
    mo = _measure(with_pu, ev, n_ev, old)
    assert np.all(mo.jets["pt"][0::2] > m0.jets["pt"])  # the old detector: pileup inside the hard jet


@pytest.mark.parametrize("jet_pt", [30.0, 100.0, 400.0])
def test_without_pileup_the_hard_jet_has_cms_jer(jet_pt):
    """Response width of one jet (half charged, half neutral) over many draws = jer(pT)."""
    n_ev, per = 4000, 20
    rng = np.random.default_rng(4)
    ev = np.repeat(np.arange(n_ev), per)
    pt = np.full(n_ev * per, jet_pt / per)
    eta = np.tile(np.linspace(-0.15, 0.15, per), n_ev)
    phi = np.tile(np.linspace(-0.05, 0.05, per)[::-1], n_ev)
    ids = np.tile(np.r_[np.full(per // 2, 211), np.full(per // 2, 130)], n_ev)
    charge = (ids == 211).astype(int)
    counts = np.full(n_ev, per)
    params = DetectorParams(jet_tail_prob=0.0)
    jet = generator_jets(pt, eta, phi, np.ones(len(pt), bool), counts, params)
    assert np.array_equal(jet, ev)  # one jet per event
    m = measure(pt, eta, phi, ids, charge, ev, n_ev, rng, params, jet=jet)
    f, _ = jet_factors(m, np.random.default_rng(5), params)
    c = candidates(m, f, params)
    keep = np.ones(len(c["pt"]), bool)
    px = np.bincount(c["event"][keep], (c["pt"] * np.cos(c["phi"]))[keep], n_ev)
    py = np.bincount(c["event"][keep], (c["pt"] * np.sin(c["phi"]))[keep], n_ev)
    true = np.hypot(np.bincount(ev, pt * np.cos(phi)), np.bincount(ev, pt * np.sin(phi)))
    resp = np.hypot(px, py) / true
    expected = jer(np.array([true.mean()]), params)[0]
    assert np.std(resp) == pytest.approx(expected, rel=0.08)
    # the closed form without the pileup part: N = 1 GeV (electronics noise) instead of 2.5 GeV
    assert expected == pytest.approx(np.sqrt((1.0 / true.mean()) ** 2 + 0.81 / true.mean() + 0.045**2), rel=1e-12)


def test_same_seed_same_response_and_different_seed_differs():
    n_ev = 30
    arrays, ev = _event(n_ev)
    params = DetectorParams(jet_tail_prob=0.2)

    def run(seed):
        m = _measure(arrays, ev, n_ev, params, seed)
        f, tail = jet_factors(m, np.random.default_rng([seed, 1]), params)
        return candidates(m, f, params), missing_pt_per_event(m, f, params)[0], tail

    a, b, c = run(3), run(3), run(4)
    for k in a[0]:
        assert np.array_equal(a[0][k], b[0][k]), k
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert not np.array_equal(a[1], c[1])


def test_detector_parameters_are_validated():
    with pytest.raises(ConfigError, match="jer_noise"):
        DetectorParams(jer_noise=-1.0)
    with pytest.raises(ConfigError, match="jet_tail_prob"):
        DetectorParams(jet_tail_prob=1.5)
    with pytest.raises(ConfigError, match="jet_pileup"):
        DetectorParams(jet_pileup="yes")
    from svjscout.samples.generate import GenerationConfig

    with pytest.raises(ConfigError, match="jer_noise"):
        GenerationConfig("qcd", 10, detector={"jer_noise": -2.0})
    assert GenerationConfig("qcd", 10, detector={"jet_pileup": True, "jer_noise": 2.5}).detector_params == \
        DetectorParams.shipped_v1()
