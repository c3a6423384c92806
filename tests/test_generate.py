"""The generator: reproducible per seed, r_inv on truth, detector response physics."""

import json

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import embedded_file

from svjscout.exceptions import GenerationError
from svjscout.samples.detector import DetectorParams, is_invisible, respond
from svjscout.samples.generate import GenerationConfig, generate_file
from svjscout.samples.processes import process_settings

pytest.importorskip("pythia8mc")


def _arrays(path):
    with uproot.open(path) as f:
        return f["Events"].arrays(library="ak"), json.loads(str(f["svjscout_meta"]))


def test_same_seed_same_file_any_workers(tmp_path):
    a = generate_file(GenerationConfig("svj", 40, seed=7, chunk_size=20, workers=1), tmp_path / "a.root")
    b = generate_file(GenerationConfig("svj", 40, seed=7, chunk_size=20, workers=2), tmp_path / "b.root")
    c = generate_file(GenerationConfig("svj", 40, seed=8, chunk_size=20, workers=1), tmp_path / "c.root")
    ea, eb, ec = (_arrays(tmp_path / f"{n}.root")[0] for n in "abc")
    assert ak.to_list(ea.ScoutingParticle_pt) == ak.to_list(eb.ScoutingParticle_pt)
    assert np.array_equal(ak.to_numpy(ea.ScoutingMET_pt), ak.to_numpy(eb.ScoutingMET_pt))
    assert not np.array_equal(ak.to_numpy(ea.ScoutingMET_pt), ak.to_numpy(ec.ScoutingMET_pt))
    assert a["n_generated"] == b["n_generated"] == 40


def test_rinv_on_generator_truth(tmp_path):
    meta = generate_file(GenerationConfig("svj", 120, seed=11, rinv=0.3, mzprime=1500, chunk_size=60),
                         tmp_path / "s.root")
    events, _ = _arrays(tmp_path / "s.root")
    n_all = int(ak.sum(events.GenDark_nMesons))
    n_inv = int(ak.sum(events.GenDark_nInvisible))
    frac = n_inv / n_all
    # binomial error, inflated x2 for the correlation of mesons within an event
    sigma = 2 * np.sqrt(0.3 * 0.7 / n_all)
    assert n_all > 500
    assert abs(frac - 0.3) < 4 * sigma, (frac, sigma)
    assert meta["rinv_truth"] == pytest.approx(frac)
    # the known trap: no stable off-diagonal mesons (they decay too), so r_inv is not ~0.64
    settings = process_settings("svj", rinv=0.3)
    assert any(s.startswith("4900211:oneChannel") for s in settings)
    assert any(s.startswith("4900213:oneChannel") for s in settings)


def test_qcd_fake_met_exceeds_generator_invisible_pt(tmp_path):
    generate_file(GenerationConfig("qcd", 100, seed=5, chunk_size=100), tmp_path / "q.root")
    events, meta = _arrays(tmp_path / "q.root")
    pf_met = ak.to_numpy(events.ScoutingMET_pt)
    gen_met = ak.to_numpy(events.GenMET_pt)
    assert pf_met.mean() > 1.5 * gen_met.mean()
    with uproot.open(tmp_path / "q.root") as f:
        runs = f["Runs"].arrays(library="np")
    assert runs["genEventCount"][0] == 100 and meta["xsec_pb"] > 0
    assert runs["xsec"][0] == pytest.approx(meta["xsec_pb"])


def test_signal_has_harder_rt_than_qcd():
    """On the PF level (embedded sample, both skimmed at MET > 150): R_T-like MET/H_T is harder."""
    from svjscout.processors.features import EVENT_FEATURES  # noqa: F401 - import check only

    def rt_proxy(name):
        ev, _ = _arrays(embedded_file(name))
        pt = ev.ScoutingParticle_pt
        return ak.to_numpy(ev.ScoutingMET_pt / ak.sum(pt[pt > 1.0], axis=1))

    sig, qcd = rt_proxy("svj_mz2000_rinv0.3.root"), rt_proxy("qcd_pt500toinf.root")
    assert np.median(sig) > 1.2 * np.median(qcd)


def test_detector_response_basics():
    rng = np.random.default_rng(0)
    n = 20000
    pt = np.full(n, 100.0)
    eta = rng.uniform(-1, 1, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    ids = np.where(np.arange(n) % 2 == 0, 211, 130)
    charge = np.where(ids == 211, 1, 0)
    out = respond(pt, eta, phi, ids, charge, rng, DetectorParams(region_tail_prob=0.0, region_core_sigma=0.0,
                                                                  tail_prob=0.0))
    tracks = out["pt"][ids == 211]
    hadrons = out["pt"][ids == 130]
    assert np.std(tracks) / 100 == pytest.approx(np.hypot(0.005, 0.015), rel=0.1)
    assert np.std(hadrons) / 100 == pytest.approx(np.hypot(1 / np.sqrt(100 * np.cosh(eta[1::2])).mean(), 0.05), rel=0.15)
    assert is_invisible(np.array([12, -14, 51, 53, 211, 4900211])).tolist() == [True, True, True, True, False, True]


def test_bad_generation_options():
    with pytest.raises(GenerationError, match="met_min"):
        GenerationConfig("qcd", 10, met_min=200)
    with pytest.raises(GenerationError, match="unknown process"):
        GenerationConfig("susy", 10)


def test_pileup_overlay_adds_particles(tmp_path):
    base = generate_file(GenerationConfig("zjets", 12, seed=3, chunk_size=12), tmp_path / "nopu.root")
    pu = generate_file(GenerationConfig("zjets", 12, seed=3, chunk_size=12, pileup=20.0), tmp_path / "pu.root")
    a, _ = _arrays(tmp_path / "nopu.root")
    b, _ = _arrays(tmp_path / "pu.root")
    assert base["n_generated"] == pu["n_generated"] == 12
    # NanoAOD's pileup branches: 0 and 0 without pileup, the Poisson mean for every event with it
    assert np.all(ak.to_numpy(a.Pileup_nTrueInt) == 0) and np.all(ak.to_numpy(a.Pileup_nPU) == 0)
    assert np.all(ak.to_numpy(b.Pileup_nTrueInt) == np.float32(20.0))
    assert ak.sum(b.Pileup_nPU) == pu["n_pileup_events"] > 0 and base["n_pileup_events"] == 0
    # the hard events are the same; pileup adds ~20 x O(50) soft candidates per event
    assert ak.mean(ak.num(b.ScoutingParticle_pt)) > ak.mean(ak.num(a.ScoutingParticle_pt)) + 200


def _runs(path):
    with uproot.open(path) as f:
        return f["Runs"].arrays(library="ak")


def test_ps_weights_pileup_branches_and_sums(tmp_path):
    """PSWeight, Pileup_nTrueInt/nPU and the Runs sums, in NanoAOD's shapes, types and conventions."""
    n, mu = 200, 5.0
    meta = generate_file(GenerationConfig("svj", n, seed=21, chunk_size=100, pileup=mu), tmp_path / "s.root")
    with uproot.open(tmp_path / "s.root") as f:
        tree = f["Events"]
        assert np.dtype(tree["PSWeight"].interpretation.content.to_dtype).newbyteorder("=") == np.float32
        assert np.dtype(tree["nPSWeight"].interpretation.to_dtype).newbyteorder("=") == np.int32
        assert np.dtype(tree["Pileup_nTrueInt"].interpretation.to_dtype).newbyteorder("=") == np.float32
        assert np.dtype(tree["Pileup_nPU"].interpretation.to_dtype).newbyteorder("=") == np.int32
    events, _ = _arrays(tmp_path / "s.root")
    runs = _runs(tmp_path / "s.root")
    assert len(events) == n  # no filter: every generated event is written
    assert ak.all(events.nPSWeight == 4)
    ps = ak.to_numpy(events.PSWeight).astype(np.float64)  # (n, 4): ISR up, FSR up, ISR down, FSR down
    assert np.all(ps > 0) and np.all(np.isfinite(ps))
    assert np.all(np.std(ps, axis=0) > 0.05)  # every variation moves events, not all 1
    # Pythia's variations preserve unitarity (Mrenna & Skands, arXiv:1605.08352): the varied and the
    # nominal shower are both normalised, so E[PSWeight[i]] = 1 exactly and the total rate is
    # unchanged; the sample mean must agree within its own statistical error (4 sigma).
    sem = ps.std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(ps.mean(axis=0) - 1) < 4 * sem), (ps.mean(axis=0), sem)
    # CMS's FSRpTmin2Fac = 20: no O(100) FSR-up weights from emissions near the shower cut-off
    assert ps.max() < 50
    # Runs: NanoAOD's PSSumw = sum(genWeight * PSWeight[i]) / genEventSumw, genEventSumw2 = sum(w^2)
    gw = ak.to_numpy(events.genWeight).astype(np.float64)
    assert runs.genEventSumw[0] == pytest.approx(gw.sum()) and runs.genEventSumw2[0] == pytest.approx(np.sum(gw**2))
    assert runs.nPSSumw[0] == 4
    np.testing.assert_allclose(ak.to_numpy(runs.PSSumw[0]), (gw[:, None] * ps).sum(axis=0) / gw.sum(), rtol=1e-6)
    assert meta["ps_weights"][0] == "isrDefHi isr:muRfac=0.5"  # [0]: ISR=2 in NanoAOD's words = muRfac 0.5
    # pileup: nTrueInt is the Poisson mean, nPU the number drawn and overlaid
    assert np.all(ak.to_numpy(events.Pileup_nTrueInt) == np.float32(mu))
    n_pu = ak.to_numpy(events.Pileup_nPU)
    assert abs(n_pu.mean() - mu) < 3 * np.sqrt(mu / n), n_pu.mean()
    assert n_pu.sum() == meta["n_pileup_events"]  # the min-bias events Pythia generated, counted apart


def test_same_seed_bit_identical_branches_any_workers(tmp_path):
    """Every branch of Events and Runs, the new weights included, is identical for 1 and 2 workers."""
    cfgs = {w: GenerationConfig("svj", 100, seed=9, chunk_size=50, pileup=2.0, workers=w) for w in (1, 2)}
    for w, cfg in cfgs.items():
        generate_file(cfg, tmp_path / f"w{w}.root")
    trees = []
    for w in cfgs:
        with uproot.open(tmp_path / f"w{w}.root") as f:
            trees.append({t: f[t].arrays(library="np") for t in ("Events", "Runs")})
    a, b = trees
    for t in ("Events", "Runs"):
        assert a[t].keys() == b[t].keys()
        for key in a[t]:
            va, vb = a[t][key], b[t][key]
            if va.dtype == object:  # jagged: one array per event
                assert all(x.tobytes() == y.tobytes() for x, y in zip(va, vb)), key
            else:
                assert va.tobytes() == vb.tobytes(), key
    assert {"PSWeight", "Pileup_nPU", "Pileup_nTrueInt"} <= set(a["Events"]) and "PSSumw" in a["Runs"]


def test_dark_shower_does_not_vary_and_variations_can_be_off(tmp_path):
    """Only the SM showers' QCD emissions vary; without variations the PS branches are omitted."""
    # r_inv = 1, no ISR, no MPI: the only shower left is the Hidden Valley one (dark quarks, dark
    # gluons) and every dark meson decays invisibly, so no SM FSR either: all weights exactly 1
    dark = GenerationConfig("svj", 30, seed=2, rinv=1.0, chunk_size=30,
                            extra_settings=["PartonLevel:ISR = off", "PartonLevel:MPI = off"])
    generate_file(dark, tmp_path / "dark.root")
    events, _ = _arrays(tmp_path / "dark.root")
    assert np.all(ak.to_numpy(events.PSWeight) == 1.0)
    off = GenerationConfig("zjets", 12, seed=3, chunk_size=12, extra_settings=["UncertaintyBands:doVariations = off"])
    meta = generate_file(off, tmp_path / "off.root")
    with uproot.open(tmp_path / "off.root") as f:
        assert "PSWeight" not in f["Events"] and "PSSumw" not in f["Runs"]
        assert "genEventSumw2" in f["Runs"]
    assert meta["ps_weights"] is None
