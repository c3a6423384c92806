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
    # the shipped v1 detector (CHS in the detector: the svjscout layout's)
    v1 = GenerationConfig("qcd", 10, layout="svjscout", detector={"jet_pileup": True, "jer_noise": 2.5})
    assert v1.detector_params == DetectorParams.shipped_v1()


# -- reconstruction extras of the scoutingnano_run3 layout (issue 31 item 2) ----------------------
# rho, vertices and the trigger emulation on hand-made events, against independent references


def _rho_loop(pt, eta, phi, mass):
    """fixedGridRhoFastjetAll of one event by a direct loop over 18 x 11 cells of |y| < 5 (FastJet's
    rectangular grid for maxRapidity 5, gridSpacing 0.55), median over every cell."""
    import math

    n_y, n_phi = 18, 11
    dy, dphi = 10.0 / n_y, 2 * math.pi / n_phi
    sums = [[0.0] * n_phi for _ in range(n_y)]
    for p, e, f, m in zip(pt, eta, phi, mass):
        y = math.asinh(p * math.sinh(e) / math.sqrt(p * p + m * m))
        if not -5.0 <= y < 5.0:
            continue
        f = f % (2 * math.pi)
        sums[int((y + 5.0) // dy)][min(int(f // dphi), n_phi - 1)] += p
    cells = sorted(s for row in sums for s in row)
    return 0.5 * (cells[98] + cells[99]) / (dy * dphi)


def _rho_events():
    rng = np.random.default_rng(3)
    events = []
    for n in (0, 1, 150, 600, 2000):  # empty, a single candidate, sparse (median 0) to dense
        events.append((rng.exponential(2.0, n), rng.uniform(-5.6, 5.6, n), rng.uniform(-np.pi, np.pi, n),
                       np.where(rng.random(n) < 0.5, 0.13957, 0.0)))
    # the edges: y = -5 exactly is inside, y = 5 outside, phi = +-pi, a massive candidate whose y != eta
    events.append((np.array([3.0, 4.0, 5.0, 6.0, 7.0]), np.array([-5.0, 5.0, 0.1, 0.1, 2.0]),
                   np.array([np.pi, -np.pi, np.pi, -np.pi, 0.3]), np.array([0.0, 0.0, 0.0, 0.0, 4.0])))
    return events


def test_fixed_grid_rho_equals_a_direct_loop_and_fastjet_grid_median():
    import fastjet

    from svjscout.samples.energy_density import fixed_grid_rho

    events = _rho_events()
    flat = [np.concatenate([e[i] for e in events]) for i in range(4)]
    index = np.repeat(np.arange(len(events)), [len(e[0]) for e in events])
    rho = fixed_grid_rho(index, *flat, len(events))
    loop = [_rho_loop(*e) for e in events]
    np.testing.assert_allclose(rho, loop, rtol=1e-12, atol=0)
    assert rho[0] == 0.0 and rho[1] == 0.0 and rho[-2] > 5.0  # empty, single and dense events
    for (pt, eta, phi, m), value in zip(events[1:4], rho[1:4]):  # FastJet's own estimator (CMS's producer)
        est = fastjet._swig.GridMedianBackgroundEstimator(5.0, 0.55)
        particles = fastjet._swig.vectorPJ()
        for a, b, c, d in zip(pt, eta, phi, m):
            pj = fastjet._swig.PseudoJet(0.0, 0.0, 0.0, 0.0)
            pj.reset_PtYPhiM(float(a), float(np.arcsinh(a * np.sinh(b) / np.hypot(a, d))), float(c), float(d))
            particles.push_back(pj)
        est.set_particles(particles)
        assert est.rho() == pytest.approx(value, rel=1e-12, abs=1e-12)


def test_vertices_reconstruction_merging_order_and_association_on_hand_made_events():
    from svjscout.samples.vertices import reconstruct

    p = DetectorParams()
    # event 0: hard scatter (3 tracks of 50 GeV) at z = 0; pileup 1 (4 soft tracks) at z = 1 cm; pileup 2
    #   (1 track: not reconstructed) at z = -2; pileup 3 (2 tracks) 0.05 mm from the hard scatter (merged
    #   into it); pileup 4 (5 tracks of 2 GeV, more sum pT^2 than pileup 1) at z = 3 and pileup 5 (2 tracks)
    #   0.08 mm from it (merged into 4)
    # event 1: no pileup, the hard scatter has 1 track only: no vertex -> one invalid beam-spot vertex
    n_pu = np.array([5, 0])
    truth = {"x": np.zeros(7), "y": np.zeros(7), "z": np.array([0.0, 1.0, -2.0, 0.005, 3.0, 3.008, 0.0])}
    vtx_tracks = {0: [50.0] * 3, 1: [1.0] * 4, 2: [1.0], 3: [0.7] * 2, 4: [2.0] * 5, 5: [0.6] * 2}
    t_event = np.r_[np.zeros(sum(len(v) for v in vtx_tracks.values()), int), [1]]
    t_vertex = np.r_[np.concatenate([[k] * len(v) for k, v in vtx_tracks.items()]), [0]]
    t_pt = np.r_[np.concatenate(list(vtx_tracks.values())), [30.0]]
    v = reconstruct(n_pu, t_event, t_vertex, t_pt, truth, np.random.default_rng(1), p)

    assert v.counts.tolist() == [3, 1]
    c = v.columns
    assert c["tracksSize"].tolist() == [5, 7, 4, 0]  # by sum pT^2: HS(+3), 4(+5), 1; the fake vertex
    assert c["ndof"].tolist() == [7, 11, 5, 0] and c["isValidVtx"].tolist() == [True, True, True, False]
    assert {k: str(a.dtype) for k, a in c.items()} == {
        "x": "float32", "y": "float32", "z": "float32", "xError": "float32", "yError": "float32",
        "zError": "float32", "tracksSize": "int32", "chi2": "float32", "ndof": "int32", "isValidVtx": "bool"}
    expect = {0: 0, 1: 2, 2: -1, 3: 0, 4: 1, 5: 1}  # true vertex -> vertexIndex
    assert v.track_index.tolist() == [expect[k] for k in t_vertex[:-1]] + [-1]
    assert v.merged.tolist() == [2, 0]
    assert abs(c["z"][0]) < 5 * p.vertex_res_z / np.sqrt(5) and abs(c["z"][1] - 3.0) < 5 * p.vertex_res_z / np.sqrt(7)
    assert v.index_of(np.array([0, 0, 0, 1]), np.array([5, 2, -1, 0])).tolist() == [1, -1, -1, -1]
    with pytest.raises(ConfigError, match="vertex_merge_dz"):
        DetectorParams(vertex_merge_dz=-0.01)
    # no track in any event (and an empty batch): one invalid beam-spot vertex per event
    none = np.zeros(0, dtype=int)
    w = reconstruct(np.array([0, 3]), none, none, np.zeros(0), {k: np.zeros(5) for k in "xyz"},
                    np.random.default_rng(2), p)
    assert w.counts.tolist() == [1, 1] and not w.columns["isValidVtx"].any()
    assert w.true_index.tolist() == [-1] * 5
    empty = reconstruct(none, none, none, np.zeros(0), {k: np.zeros(0) for k in "xyz"}, np.random.default_rng(2), p)
    assert len(empty.counts) == 0 and all(len(a) == 0 for a in empty.columns.values())


def test_hlt_ht_equals_the_processor_trigger_emulation():
    import awkward as ak

    from svjscout.processors.jets import cluster, ht
    from svjscout.samples.trigger import hlt_ht, trigger_bits

    rng = np.random.default_rng(5)
    counts = np.array([0, 3, 400, 250, 800])
    n = int(counts.sum())
    pt = rng.exponential(3.0, n)
    pt[rng.random(n) < 0.02] *= 60.0  # hard candidates make jets above 30 GeV
    eta, phi = rng.uniform(-3.5, 3.5, n), rng.uniform(-np.pi, np.pi, n)
    mass = np.where(rng.random(n) < 0.6, 0.13957, 0.0)
    event = np.repeat(np.arange(len(counts)), counts)
    ours = hlt_ht(event, pt, eta, phi, mass, len(counts))
    pf = ak.zip({k: ak.unflatten(v, counts) for k, v in {"pt": pt, "eta": eta, "phi": phi, "mass": mass}.items()})
    reference = ht(cluster(pf, 0.4))  # processors/selection.py's H_T: AK4, pT > 30 GeV, |eta| < 2.5
    np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-9)
    assert ours[0] == 0.0 and ours[-1] > 410.0
    assert trigger_bits(ours)["DST_HT410_PFScouting"].tolist() == (reference > 410.0).tolist()
    # the HLT's corrected jets: each jet's pT minus rho * pi R^2 before the 30 GeV threshold and the sum
    rho = np.array([0.0, 5.0, 20.0, 35.0, 30.0])
    jets = cluster(pf, 0.4)
    corrected = jets.pt - ak.Array(rho)[:, None] * np.pi * 0.4**2
    keep = (corrected > 30.0) & (abs(jets.eta) < 2.5)
    expected = ak.to_numpy(ak.sum(corrected[keep], axis=1))
    with_offset = hlt_ht(event, pt, eta, phi, mass, len(counts), rho=rho)
    np.testing.assert_allclose(with_offset, expected, rtol=1e-9, atol=1e-9)
    assert np.all(with_offset[2:] < ours[2:])  # the offset lowers every event with jets


def test_stratified_factors_reduce_to_the_physical_draw_and_force_the_tail():
    """``stratified_jet_factors`` without hard jets is ``jet_factors`` (same seed, same numbers);
    with every hard jet's tail switched off, no hard jet is in the tail and the Gaussian core is
    the same; a forced jet gets a factor in the tail's range [jet_tail_min, jet_tail_max]."""
    from svjscout.samples.detector import Measured, stratified_jet_factors

    params = DetectorParams(jet_tail_prob=0.3)
    n = 2000
    meas = Measured(n_events=n, tracks={}, cells={},
                    jets={"pt": np.full(n, 100.0), "calo_pt": np.full(n, 60.0), "sigma": np.full(n, 6.0),
                          "event": np.arange(n)})
    none = np.zeros(n, dtype=bool)
    f0, t0 = jet_factors(meas, np.random.default_rng(5), params)
    f1, t1 = stratified_jet_factors(meas, np.random.default_rng(5), params, none, none)
    np.testing.assert_array_equal(f0, f1)
    np.testing.assert_array_equal(t0, t1)
    assert 0.25 < t0.mean() < 0.35
    hard = np.ones(n, dtype=bool)
    forced = np.arange(n) % 2 == 0
    f2, t2 = stratified_jet_factors(meas, np.random.default_rng(5), params, hard, forced)
    np.testing.assert_array_equal(t2, forced)
    core = np.maximum(1.0 + 6.0 * np.random.default_rng(5).standard_normal(n) / 60.0, 0.0)
    np.testing.assert_allclose(f2[~forced], core[~forced])
    assert f2[forced].min() >= params.jet_tail_min and f2[forced].max() <= params.jet_tail_max
