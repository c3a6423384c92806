"""The generator: reproducible per seed, r_inv on truth, detector response physics."""

import json

import awkward as ak
import click
import numpy as np
import pytest
import uproot
from conftest import embedded_file

from svjscout.core.constants import DEFAULT_PILEUP
from svjscout.core.exceptions import GenerationError
from svjscout.jobs.cli import cli
from svjscout.samples.detector import DetectorParams, is_invisible
from svjscout.samples.generate import GenerationConfig, generate_file
from svjscout.samples.processes import process_settings

pytest.importorskip("pythia8mc")


def _arrays(path):
    with uproot.open(path) as f:
        return f["Events"].arrays(library="ak"), json.loads(str(f["svjscout_meta"]))


@pytest.mark.slow
def test_same_seed_same_file_any_workers(tmp_path):
    a = generate_file(GenerationConfig("svj", 40, pileup=0.0, seed=7, chunk_size=20, workers=1), tmp_path / "a.root")
    b = generate_file(GenerationConfig("svj", 40, pileup=0.0, seed=7, chunk_size=20, workers=2), tmp_path / "b.root")
    generate_file(GenerationConfig("svj", 40, pileup=0.0, seed=8, chunk_size=20, workers=1), tmp_path / "c.root")
    ea, eb, ec = (_arrays(tmp_path / f"{n}.root")[0] for n in "abc")
    assert ak.to_list(ea.ScoutingPFCandidate_pt) == ak.to_list(eb.ScoutingPFCandidate_pt)
    assert np.array_equal(ak.to_numpy(ea.ScoutingMET_pt), ak.to_numpy(eb.ScoutingMET_pt))
    assert not np.array_equal(ak.to_numpy(ea.ScoutingMET_pt), ak.to_numpy(ec.ScoutingMET_pt))
    assert a["n_generated"] == b["n_generated"] == 40


def _dark_record_counts(settings, n_events, seed):
    """Walk Pythia's event record particle by particle (independent of samples/generate.py)."""
    import pythia8mc

    p = pythia8mc.Pythia("", False)
    for line in settings:
        assert p.readString(line), line
    p.readString(f"Random:seed = {seed}")
    assert p.init()
    counts = {"hadrons": 0, "final_51_53": 0, "final_dark_other": 0, "dark_gluons": 0, "dark_gluon_entries": 0,
              "species": set(), "pseudo_visible": 0, "pseudo_to_b": 0}
    for _ in range(n_events):
        assert p.next()
        ev = p.event
        for i in range(ev.size()):
            prt = ev[i]
            a = abs(prt.id())
            if a == 4900021:
                counts["dark_gluon_entries"] += 1  # every record entry: recoil (52), hadronisation (7x) copies too
                counts["dark_gluons"] += prt.statusAbs() == 51  # distinct: each shower-made gluon once
            if prt.isFinal():
                if a in (51, 53):
                    counts["final_51_53"] += 1
                elif 4900000 <= a < 5000000:
                    counts["final_dark_other"] += 1
            if 4900110 <= a <= 4900999:
                d1 = prt.daughter1()
                if prt.isFinal() or abs(ev[d1].id()) != a:  # last copy of the hadron
                    counts["hadrons"] += 1
                    counts["species"].add(a)
                    if a % 10 == 1 and not prt.isFinal() and abs(ev[d1].id()) not in (51, 53):
                        counts["pseudo_visible"] += 1
                        counts["pseudo_to_b"] += abs(ev[d1].id()) == 5
    return counts


@pytest.mark.slow
def test_dark_sector_on_the_event_record():
    """Benchmark physics checked on Pythia's own event record, not on the generator's bookkeeping.

    Every dark hadron species is configured (none reaches the final state), each decays invisibly
    (to exactly two stable 51/53) with probability r_inv, the running dark coupling is on (~10
    distinct dark gluons per event at 1.5 TeV, ~13 at 2 TeV; 0.5 without setLambda), and
    pseudoscalars decay to b bbar 94 % of their visible decays (SVJProduction's mass insertion;
    tests/test_signal_benchmark.py measures it precisely).
    """
    rinv = 0.3
    c = _dark_record_counts(process_settings("svj", mzprime=1500, rinv=rinv), 40, seed=17)
    assert c["final_dark_other"] == 0  # only the intended invisibles (51/53) are stable
    assert {4900111, 4900113, 4900211, 4900213, 4900221, 4900223} <= c["species"], c["species"]
    assert 6 < c["dark_gluons"] / 40 < 16  # distinct emissions (status 51)
    assert c["dark_gluon_entries"] > 1.5 * c["dark_gluons"]  # the record's copies are not emissions
    n = c["hadrons"]
    frac = c["final_51_53"] / 2 / n  # every invisible decay gives a 51/53 pair
    sigma = 2 * np.sqrt(rinv * (1 - rinv) / n)  # binomial, x2 for correlations within an event
    assert n > 400
    assert abs(frac - rinv) < 4 * sigma, (frac, sigma)
    # mass insertion with running masses: pseudoscalar BR(b bbar) = 0.943 of the visible decays
    assert c["pseudo_to_b"] / c["pseudo_visible"] == pytest.approx(0.943, abs=0.05)


def test_generator_truth_branches(tmp_path):
    meta = generate_file(GenerationConfig("svj", 60, pileup=0.0, seed=11, rinv=0.3, mzprime=1500, chunk_size=30),
                         tmp_path / "s.root")
    events, _ = _arrays(tmp_path / "s.root")
    n_all = int(ak.sum(events.GenDark_nHadrons))
    assert int(ak.sum(events.GenDark_nStable)) == 0 and meta["n_dark_stable"] == 0
    frac = int(ak.sum(events.GenDark_nInvisible)) / n_all
    assert abs(frac - 0.3) < 4 * 2 * np.sqrt(0.21 / n_all)
    assert meta["rinv_truth"] == pytest.approx(frac)  # no filter: the written events are all of them
    assert meta["xsec_pb"] == pytest.approx(1.875) and "EXO-19-020" in meta["xsec_source"]
    assert meta["pythia_version"] != "unknown" and any("setLambda = on" in s for s in meta["settings"])


def test_benchmark_cross_sections():
    from svjscout.samples.generate import reference_signal_xsec

    assert [reference_signal_xsec(m) for m in (1500, 2000, 3000)] == [1.875, 0.4537, 0.0412]
    # SVJProduction's whole table (tests/test_signal_benchmark.py): 2.5 TeV is a table point, and
    # log-linear between points: the midpoint is the geometric mean of its neighbours
    assert reference_signal_xsec(2500) == 0.1304
    assert reference_signal_xsec(2550) == pytest.approx(np.sqrt(0.1304 * 0.1029), rel=1e-9)
    with pytest.raises(GenerationError, match="--xsec"):
        reference_signal_xsec(5200)


@pytest.mark.slow
def test_qcd_fake_met_exceeds_generator_invisible_pt(tmp_path):
    generate_file(GenerationConfig("qcd", 100, pileup=0.0, seed=5, chunk_size=100), tmp_path / "q.root")
    events, meta = _arrays(tmp_path / "q.root")
    pf_met = ak.to_numpy(events.ScoutingMET_pt)
    gen_met = ak.to_numpy(events.GenMET_pt)
    w = ak.to_numpy(events.genWeight)
    assert np.average(pf_met, weights=w) > 1.5 * np.average(gen_met, weights=w)
    with uproot.open(tmp_path / "q.root") as f:
        runs = f["Runs"].arrays(library="np")
    assert runs["genEventCount"][0] == 100 and meta["xsec_pb"] > 0
    assert runs["xsec"][0] == pytest.approx(meta["xsec_pb"])
    assert len(np.unique(w)) > 10  # pT-hat biased by default: weights undo the bias


def test_pthat_bias_weights_reproduce_the_unbiased_spectrum():
    """Pythia's bias2Selection with our weights: sigma(pT-hat > 400) / sigma is the unbiased value."""
    import pythia8mc

    from svjscout.samples.generate import _nominal_weights

    def run(power, n):
        p = pythia8mc.Pythia("", False)
        for line in process_settings("qcd", bias_power=power):
            if not line.startswith("UncertaintyBands"):
                assert p.readString(line)
        p.readString("PartonLevel:all = off")  # the hard process is all this needs
        p.readString("HadronLevel:all = off")
        p.readString("Random:seed = 3")
        assert p.init()
        b = p.nextBatch(n)
        return np.sqrt(ak.to_numpy(b.info.pT2Hat)), _nominal_weights(b)

    pt_u, w_u = run(0.0, 4000)
    pt_b, w_b = run(4.5, 4000)
    assert np.all(w_u == w_u[0]) and np.std(w_b) > 0
    f_u = np.mean(pt_u > 400)
    f_b = np.sum(w_b * (pt_b > 400)) / np.sum(w_b)
    err_u = np.sqrt(f_u * (1 - f_u) / len(pt_u))
    err_b = np.sqrt(np.sum((w_b * ((pt_b > 400) - f_b)) ** 2)) / np.sum(w_b)
    assert abs(f_u - f_b) < 4 * np.hypot(err_u, err_b), (f_u, f_b, err_u, err_b)
    assert np.mean(pt_b > 400) > 5 * f_u  # the tail is what biasing populates


def test_detector_copies_normalisation_and_parents(tmp_path):
    """K copies per parent: parent ids, weights genWeight/K, exact sums, resampled jets only."""
    k, n = 4, 30
    meta = generate_file(GenerationConfig("zjets", n, pileup=0.0, seed=8, chunk_size=15, detector_copies=k),
                         tmp_path / "z.root")
    events, _ = _arrays(tmp_path / "z.root")
    runs = _runs(tmp_path / "z.root")
    assert runs.genEventCount[0] == n and runs.nDetectorCopies[0] == k  # the Runs tree counts parents
    parent = ak.to_numpy(events.parent)
    assert len(events) == n * k and np.all(np.bincount(parent.astype(int))[1:] == k)
    assert np.all(np.diff(parent.astype(np.int64)) >= 0)  # copies of a parent are contiguous
    assert len(np.unique(ak.to_numpy(events.event))) == n * k
    gw = ak.to_numpy(events.genWeight).astype(np.float64)
    assert gw.sum() == pytest.approx(runs.genEventSumw[0], rel=1e-6)  # no skim: sum over copies = sumw
    assert meta["n_generated"] == n
    met = ak.to_numpy(events.ScoutingMET_pt).reshape(n, k)
    assert np.all(np.std(met, axis=1) > 0)  # each copy has its own jet response
    charged = events.ScoutingPFCandidate_charge != 0
    tracks = events.ScoutingPFCandidate_pt[charged]
    first = ak.to_list(ak.sort(tracks[0::k]))
    assert first == ak.to_list(ak.sort(tracks[1::k]))  # tracks are measured once per parent
    gen = ak.to_numpy(events.GenMET_pt).reshape(n, k)
    assert np.all(gen == gen[:, :1])


def test_detector_response_basics():
    from svjscout.samples.detector import jer, measure

    rng = np.random.default_rng(0)
    n = 20000
    pt = np.full(n, 100.0)
    eta = np.linspace(-1, 1, n)  # one particle per event, so no two deposits share a cell
    phi = np.zeros(n)
    ids = np.where(np.arange(n) % 2 == 0, 211, 130)
    charge = np.where(ids == 211, 1, 0)
    m = measure(pt, eta, phi, ids, charge, np.arange(n), n, rng, DetectorParams())
    tracks = m.tracks["pt"]
    hadrons = m.cells["pt"][m.cells["kind"] == 1]
    assert np.std(tracks) / 100 == pytest.approx(np.hypot(0.005, 0.015), rel=0.1)
    e = 100 * np.cosh(eta[1::2])
    assert np.std(hadrons / 100) == pytest.approx(np.sqrt(np.mean(1 / e + 0.05**2)), rel=0.1)
    assert is_invisible(np.array([12, -14, 51, 53, 211, 4900211])).tolist() == [True, True, True, True, False, True]
    # CMS-like JER without its pileup part, closed form: sqrt((1/pT)^2 + 0.9^2/pT + 0.045^2)
    assert jer(np.array([300.0]))[0] == pytest.approx(np.sqrt((1.0 / 300) ** 2 + 0.81 / 300 + 0.045**2))
    old = DetectorParams.shipped_v1()  # the pre-issue-30 detector: N = 2.5 GeV, pileup in the jets
    assert old.jet_pileup and jer(np.array([300.0]), old)[0] == pytest.approx(
        np.sqrt((2.5 / 300) ** 2 + 0.81 / 300 + 0.045**2))


def test_jet_response_core_is_cms_jer_and_tail_acts_on_calorimeter_only():
    """A 300 GeV jet of 20 charged + 20 neutral particles: total width = JER, tail only on neutrals."""
    from svjscout.samples.detector import candidates, jer, jet_factors, measure

    n_ev, per = 4000, 40
    rng = np.random.default_rng(1)
    ev = np.repeat(np.arange(n_ev), per)
    pt = np.full(n_ev * per, 300.0 / per)
    eta = np.tile(np.linspace(-0.15, 0.15, per), n_ev)
    phi = np.tile(np.linspace(-0.05, 0.05, per)[::-1], n_ev)
    ids = np.tile(np.r_[np.full(per // 2, 211), np.full(per // 2, 130)], n_ev)
    charge = (ids == 211).astype(int)
    jet = ev.copy()  # one generator jet per event
    params = DetectorParams(jet_tail_prob=0.0)
    m = measure(pt, eta, phi, ids, charge, ev, n_ev, rng, params, jet=jet)
    f, _ = jet_factors(m, np.random.default_rng(2), params)
    c = candidates(m, f, params)
    px = np.bincount(c["event"], c["pt"] * np.cos(c["phi"]), n_ev)
    py = np.bincount(c["event"], c["pt"] * np.sin(c["phi"]), n_ev)
    true = np.hypot(np.bincount(ev, pt * np.cos(phi)), np.bincount(ev, pt * np.sin(phi)))
    resp = np.hypot(px, py) / true
    assert np.std(resp) == pytest.approx(jer(np.array([true.mean()]))[0], rel=0.1)
    tail = DetectorParams(jet_tail_prob=1.0)  # every jet in the tail: calorimeter part loses 50-100 %
    f, _ = jet_factors(m, np.random.default_rng(3), tail)
    assert np.all((f >= 0) & (f <= 0.5))
    c = candidates(m, f, tail)
    charged_sum = np.bincount(c["event"], c["pt"] * (c["charge"] != 0), n_ev)
    assert charged_sum == pytest.approx(np.bincount(m.tracks["event"], m.tracks["pt"], n_ev))  # tracks untouched


def test_signal_met_is_real_and_qcd_yield_mostly_real_met():
    """Embedded sample, on the event record (GenMET = the invisible particles' summed pT): the signal's
    PF MET comes from invisible particles (GenMET ~ PF MET). Most of the preselected QCD *yield* is
    real MET too, the neutrinos of heavy-flavour decays (docs/generation_efficiency.md, sections
    6-7), with a minority from mismeasurement (GenMET << PF MET). (Before the skim most QCD copies
    are fake MET, but light; the embedded files keep one copy per parent and roulette the light
    ones, so only the yield is a statement about the physics.)"""

    def gen_over_pf(name):
        ev, _ = _arrays(embedded_file(name))
        return ak.to_numpy(ev.GenMET_pt / ev.ScoutingMET_pt), ak.to_numpy(ev.genWeight).astype(np.float64)

    sig, _ = gen_over_pf("svj_mz2000_rinv0.3.root")
    assert 0.7 < np.median(sig) < 1.3
    for name in ("qcd.root", "qcd_s204.root"):
        qcd, w = gen_over_pf(name)
        assert w[qcd > 0.5].sum() > 0.5 * w.sum(), name  # yield: mostly real MET
        assert 0.05 * w.sum() < w[qcd < 0.3].sum() < 0.5 * w.sum(), name  # and a fake-MET minority


def test_bad_generation_options():
    with pytest.raises(GenerationError, match="met_min"):
        GenerationConfig("qcd", 10, met_min=200)
    with pytest.raises(GenerationError, match="unknown process"):
        GenerationConfig("susy", 10)
    with pytest.raises(GenerationError, match="detector-copies"):
        GenerationConfig("qcd", 10, detector_copies=0)
    with pytest.raises(GenerationError, match="unknown detector parameter"):
        GenerationConfig("qcd", 10, detector={"region_tail_prob": 0.1})


@pytest.mark.slow
def test_pileup_overlay_adds_particles(tmp_path):
    # the svjscout layout: CHS in the detector, so the hard scatter's tracks can be compared
    base = generate_file(GenerationConfig("zjets", 12, pileup=0.0, seed=3, chunk_size=12, layout="svjscout"),
                         tmp_path / "nopu.root")
    pu = generate_file(GenerationConfig("zjets", 12, seed=3, chunk_size=12, pileup=20.0, layout="svjscout"),
                       tmp_path / "pu.root")
    a, _ = _arrays(tmp_path / "nopu.root")
    b, _ = _arrays(tmp_path / "pu.root")
    assert base["n_generated"] == pu["n_generated"] == 12
    # NanoAOD's pileup branches: 0 and 0 without pileup, the Poisson mean for every event with it
    assert np.all(ak.to_numpy(a.Pileup_nTrueInt) == 0) and np.all(ak.to_numpy(a.Pileup_nPU) == 0)
    assert np.all(ak.to_numpy(b.Pileup_nTrueInt) == np.float32(20.0))
    assert pu["n_pileup_events"] == min(int(ak.sum(b.Pileup_nPU)), 1000) > 0 and base["n_pileup_events"] == 0
    # the hard events are the same; pileup adds neutral cells (its tracks are removed by CHS)
    assert ak.mean(ak.num(b.ScoutingParticle_pt)) > ak.mean(ak.num(a.ScoutingParticle_pt)) + 50
    charged = lambda e: ak.sum(e.ScoutingParticle_charge != 0, axis=1)  # noqa: E731
    # (up to tracks at the 0.5 GeV threshold: the smearing draws differ once pileup is added)
    assert ak.max(abs(charged(b) - charged(a))) <= 3


def _runs(path):
    with uproot.open(path) as f:
        return f["Runs"].arrays(library="ak")


@pytest.mark.slow
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
    assert meta["n_pileup_events"] == min(n_pu.sum(), 2 * 1000)  # the library: <= 1000 per chunk


@pytest.mark.slow
def test_same_seed_bit_identical_branches_any_workers(tmp_path):
    """Every branch of Events and Runs, the new weights included, is identical for 1 and 2 workers."""
    cfgs = {w: GenerationConfig("svj", 100, seed=9, chunk_size=50, pileup=2.0, workers=w, detector_copies=2)
            for w in (1, 2)}
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
    assert {"PSWeight", "Pileup_nPU", "Pileup_nTrueInt", "parent"} <= set(a["Events"]) and "PSSumw" in a["Runs"]


def test_dark_shower_does_not_vary_and_variations_can_be_off(tmp_path):
    """Only the SM showers' QCD emissions vary; without variations the PS branches are omitted."""
    # r_inv = 1, no ISR, no MPI: the only shower left is the Hidden Valley one (dark quarks, dark
    # gluons) and every dark meson decays invisibly, so no SM FSR either: all weights exactly 1
    dark = GenerationConfig("svj", 30, pileup=0.0, seed=2, rinv=1.0, chunk_size=30,
                            extra_settings=["PartonLevel:ISR = off", "PartonLevel:MPI = off"])
    generate_file(dark, tmp_path / "dark.root")
    events, _ = _arrays(tmp_path / "dark.root")
    assert np.all(ak.to_numpy(events.PSWeight) == 1.0)
    off = GenerationConfig("zjets", 12, pileup=0.0, seed=3, chunk_size=12,
                           extra_settings=["UncertaintyBands:doVariations = off"])
    meta = generate_file(off, tmp_path / "off.root")
    with uproot.open(tmp_path / "off.root") as f:
        assert "PSWeight" not in f["Events"] and "PSSumw" not in f["Runs"]
        assert "genEventSumw2" in f["Runs"]
    assert meta["ps_weights"] is None


def test_tail_bias_is_unbiased_importance_sampling():
    """Jets sampled in the tail with q = 0.2 instead of p = 0.01, weighted by the likelihood ratio:
    the weighted tail rate is p (closed form) and the mean weight is 1."""
    from svjscout.samples.detector import Measured, jet_factors, tail_weight

    n_ev = 20000
    jets = {"pt": np.full(2 * n_ev, 300.0), "calo_pt": np.full(2 * n_ev, 100.0), "sigma": np.zeros(2 * n_ev),
            "event": np.repeat(np.arange(n_ev), 2)}
    m = Measured(n_events=n_ev, tracks={}, cells={}, jets=jets)
    params = DetectorParams(jet_tail_prob=0.01)
    q = np.full(2 * n_ev, 0.2)
    _, tail = jet_factors(m, np.random.default_rng(4), params, tail_prob=q)
    w = tail_weight(m, tail, q, params)
    assert tail.mean() == pytest.approx(0.2, abs=0.01)
    assert w.mean() == pytest.approx(1.0, abs=0.02)
    any_tail = np.bincount(jets["event"], tail, n_ev) > 0
    exact = 1 - (1 - 0.01) ** 2  # P(at least one of two jets in the tail), physical
    est = np.sum(w * any_tail) / n_ev
    err = np.std(w * any_tail) / np.sqrt(n_ev)
    assert abs(est - exact) < 4 * err, (est, exact, err)


def test_preselection_skim_is_lossless(tmp_path):
    """samples/skim.py: the skim keeps exactly the events the processor preselects, and the Runs
    tree and cross section of the input (so the normalisation is unchanged)."""
    from svjscout.jobs.commands_skim import preselected_ids
    from svjscout.samples.skim import write_subset

    src = embedded_file("svj_mz3000_rinv0.5.root")
    ids = preselected_ids(src)
    out = tmp_path / "skim.root"
    n = write_subset(src, out, lambda a: np.array([(int(r), int(lb), int(e)) in ids for r, lb, e in
                                                   zip(a.run, a.luminosityBlock, a.event)]), {"skim": "test"})
    assert 0 < n == len(ids)
    assert preselected_ids(out) == ids  # every kept event passes again, none is lost
    with uproot.open(src) as f, uproot.open(out) as g:
        a, b = f["Runs"].arrays(library="np"), g["Runs"].arrays(library="np")
        assert a.keys() == b.keys()
        for k in a:  # jagged branches (PSSumw) come as object arrays of arrays
            assert [np.asarray(x).tolist() for x in a[k]] == [np.asarray(x).tolist() for x in b[k]], k
        meta = json.loads(str(g["svjscout_meta"]))
        assert meta["xsec_pb"] == json.loads(str(f["svjscout_meta"]))["xsec_pb"] and meta["n_written"] == n
        assert g["Events"].num_entries == n < f["Events"].num_entries
        # every branch of the layout (collections rebuilt from their counters), same type, same values
        ev_in, ev_out = f["Events"], g["Events"]
        assert set(ev_in.keys()) == set(ev_out.keys())
        kept = np.isin(ev_in["event"].array(library="np"), ev_out["event"].array(library="np"))
        for k in ev_in.keys():
            assert ev_in[k].interpretation == ev_out[k].interpretation, k
            assert ak.to_list(ev_in[k].array()[kept]) == ak.to_list(ev_out[k].array()), k


def test_pileup_default_is_one_constant():
    """The generator's Python API and `svjscout generate --pileup` share one default (core.constants)."""
    generate = cli.get_command(click.Context(cli), "generate")  # the CLI loads its verbs when named
    option = next(p for p in generate.params if p.name == "pileup")
    assert GenerationConfig("qcd", 1).pileup == option.default == DEFAULT_PILEUP == 35.0


# -- what a generated file carries: the scoutingnano_run3 layout (issue 31 item 2) ---------------

RUN3_PF = {"pt": "float32", "eta": "float32", "phi": "float32", "mass": "float32", "pdgId": "int32",
           "charge": "int32", "vertexIndex": "int32"}
RUN3_PV = {"x": "float32", "y": "float32", "z": "float32", "xError": "float32", "yError": "float32",
           "zError": "float32", "tracksSize": "int32", "chi2": "float32", "ndof": "int32", "isValidVtx": "bool"}
#: today's svjscout layout, branch for branch (no new branch may appear in it)
SVJSCOUT_BRANCHES = {"run", "luminosityBlock", "event", "parent", "genWeight", "nPSWeight", "PSWeight",
                     "Pileup_nTrueInt", "Pileup_nPU", "nScoutingParticle",
                     *(f"ScoutingParticle_{f}" for f in ("pt", "eta", "phi", "mass", "pdgId", "charge")),
                     "ScoutingMET_pt", "ScoutingMET_phi", "GenMET_pt", "GenMET_phi", "GenDark_nHadrons",
                     "GenDark_nInvisible", "GenDark_nStable"}


@pytest.fixture(scope="module")
def run3_files(tmp_path_factory):
    """A signal (pileup 35, the truth per candidate and the HF cells written) and a QCD file (two
    detector copies) in the scoutingnano_run3 layout."""
    out = tmp_path_factory.mktemp("run3")
    svj = GenerationConfig("svj", 40, seed=11, pileup=35.0, pileup_library=200, chunk_size=40,
                           layout="scoutingnano_run3", write_truth=True, write_hf=True)
    qcd = GenerationConfig("qcd", 20, seed=12, pileup=10.0, pileup_library=100, chunk_size=20, detector_copies=2,
                           layout="scoutingnano_run3", extra_settings=["UncertaintyBands:doVariations = off"])
    generate_file(svj, out / "svj.root")
    generate_file(qcd, out / "qcd.root")
    return {"svj": (out / "svj.root", svj), "qcd": (out / "qcd.root", qcd)}


def _types(path, prefix):
    with uproot.open(path) as f:
        t = f["Events"]
        return {k[len(prefix) + 1:]: str(t[k].interpretation.content.to_dtype.newbyteorder("="))
                for k in t.keys() if k.startswith(prefix + "_")}


@pytest.mark.slow
def test_run3_layout_branches_names_and_types(run3_files):
    path, _ = run3_files["svj"]
    assert _types(path, "ScoutingPFCandidate") == RUN3_PF
    assert _types(path, "ScoutingPrimaryVertex") == RUN3_PV
    with uproot.open(path) as f:
        t = f["Events"]
        keys = set(t.keys())
        assert not any(k.startswith("ScoutingParticle") for k in keys)
        for name, dtype in {"ScoutingRho_fixedGridRhoFastjetAll": "float32", "DST_HT410_PFScouting": "bool",
                            "ScoutingMET_pt": "float32", "nScoutingPFCandidate": "int32",
                            "nScoutingPrimaryVertex": "int32", "nGenDarkQuark": "int32", "run": "uint32",
                            "luminosityBlock": "uint32", "event": "uint64"}.items():
            assert str(t[name].interpretation.to_dtype.newbyteorder("=")) == dtype, name
        # our own branches stay in both layouts
        assert {"parent", "genWeight", "Pileup_nPU", "Pileup_nTrueInt", "PSWeight", "GenMET_pt",
                "GenDark_nHadrons"} <= keys
        assert _types(path, "GenDarkQuark") == {"pt": "float32", "eta": "float32", "phi": "float32",
                                                "mass": "float32", "pdgId": "int32"}


@pytest.mark.slow
def test_run3_layout_is_read_by_the_processor_preset(run3_files):
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.processors.schema import BranchMap, check_file

    path, _ = run3_files["svj"]
    bmap = BranchMap.from_preset("scoutingnano_run3")
    assert check_file(str(path), bmap, is_mc=True) == 40
    events = NanoEventsFactory.from_root({str(path): bmap.tree}, schemaclass=bmap.schema_class(),
                                         mode="eager").events()
    pf = bmap.pf_candidates(events)
    ev, _ = _arrays(path)
    assert ak.to_list(pf.pt) == ak.to_list(ev.ScoutingPFCandidate_pt)
    assert ak.to_list(pf.charge) == ak.to_list(ev.ScoutingPFCandidate_charge)
    np.testing.assert_array_equal(bmap.met(events)[0], ak.to_numpy(ev.ScoutingMET_pt).astype(np.float64))


@pytest.mark.slow
def test_vertex_index_agrees_with_the_truth_and_the_vertices(run3_files):
    path, cfg = run3_files["svj"]
    ev, _ = _arrays(path)
    vi, inter = ev.ScoutingPFCandidate_vertexIndex, ev.GenPFCandidate_interaction
    charge, eta = ev.ScoutingPFCandidate_charge, ev.ScoutingPFCandidate_eta
    tracked = charge != 0  # PF candidates with a charge are tracks (charged particles without one are cells)
    assert ak.max(abs(eta[tracked])) <= cfg.detector_params.tracker_eta + 1e-3
    assert ak.all(vi[~tracked] == -1)  # neutrals, HF cells and charged particles without a track
    assert ak.all(inter[charge == 0] == -1)
    hs, pu = tracked & (inter == 0), tracked & (inter > 0)
    # the hard scatter is the first vertex (largest sum pT^2) in every event of this signal sample
    assert ak.all(vi[hs] == 0)
    # pileup tracks: their own vertex (> 0), the hard scatter's when merged into it (rare), -1 when
    # their interaction left fewer than 2 tracks (not reconstructed)
    n_pu_tracks = int(ak.sum(pu))
    assert n_pu_tracks > 10_000
    assert int(ak.sum(vi[pu] > 0)) > 0.95 * n_pu_tracks
    assert int(ak.sum(vi[pu] == 0)) < 0.03 * n_pu_tracks
    n_pv, n_pu = ak.to_numpy(ev.nScoutingPrimaryVertex), ak.to_numpy(ev.Pileup_nPU)
    for i in range(len(ev)):
        v, g = ak.to_numpy(vi[i][tracked[i]]), ak.to_numpy(inter[i][tracked[i]])
        # each vertex holds the tracks whose vertexIndex is its index, all of them written
        assert np.bincount(v[v >= 0], minlength=n_pv[i]).tolist() == ak.to_list(ev.ScoutingPrimaryVertex_tracksSize[i])
        # a true interaction goes to one vertex; -1 exactly for those with fewer than 2 tracks
        per_interaction = {int(k): set(v[g == k].tolist()) for k in np.unique(g)}
        assert all(len(s) == 1 for s in per_interaction.values())
        assert all((s == {-1}) == (np.sum(g == k) < 2) for k, s in per_interaction.items())
        # vertices = interactions with >= 2 tracks minus the merged ones (several interactions, one index)
        reconstructable = sum(s != {-1} for s in per_interaction.values())
        merged = reconstructable - len({next(iter(s)) for s in per_interaction.values() if s != {-1}})
        assert n_pv[i] == reconstructable - merged <= n_pu[i] + 1
        assert ak.to_list(ev.ScoutingPrimaryVertex_ndof[i]) == [2 * n - 3 for n in
                                                               ak.to_list(ev.ScoutingPrimaryVertex_tracksSize[i])]
        sumpt2 = np.bincount(v[v >= 0], ak.to_numpy(ev.ScoutingPFCandidate_pt[i][tracked[i]])[v >= 0] ** 2)
        assert np.all(np.diff(sumpt2) <= 1e-3 * sumpt2[:-1])  # ordered by sum pT^2, descending
    eff = n_pv.sum() / (n_pu + 1).sum()  # reconstruction efficiency (minimum-bias events with < 2 tracks)
    assert 0.7 < eff < 1.0
    assert ak.all(ev.ScoutingPrimaryVertex_isValidVtx)
    z = ak.to_numpy(ak.flatten(ev.ScoutingPrimaryVertex_z))
    assert 2.8 < np.std(z) < 4.2  # the beam spot's sigma_z = 3.5 cm


@pytest.mark.slow
def test_rho_and_trigger_bit_from_the_written_candidates(run3_files):
    from svjscout.processors.jets import cluster, ht

    path, _ = run3_files["svj"]  # written with --write-hf: the written candidates are all of them
    ev, _ = _arrays(path)
    pf = ak.zip({k: ev[f"ScoutingPFCandidate_{k}"] for k in ("pt", "eta", "phi", "mass")})
    from test_detector import _rho_loop

    rho = ak.to_numpy(ev.ScoutingRho_fixedGridRhoFastjetAll)
    # the file's rho is computed before the candidates' precision is reduced to NanoAOD's (10-12
    # mantissa bits): the loop on the written values agrees within a few per mille
    loop = np.array([_rho_loop(*(ak.to_numpy(pf[k][i]).astype(np.float64) for k in ("pt", "eta", "phi", "mass")))
                     for i in range(len(ev))])
    np.testing.assert_allclose(rho, loop, rtol=0.02)
    assert np.median(np.abs(rho / loop - 1)) < 2e-3
    assert 10.0 < np.median(rho) < 50.0  # GeV per unit area at pileup 35
    # the trigger bit: the processor's AK4 clustering of the written candidates, each jet corrected by
    # the HLT's pileup offset rho * pi R^2 with the file's rho (away from the threshold, where the
    # reduced precision cannot matter)
    jets = cluster(pf, 0.4)
    corrected = jets.pt - ak.Array(rho)[:, None] * np.pi * 0.4**2
    keep = (corrected > 30.0) & (abs(jets.eta) < 2.5)
    ht_hlt = ak.to_numpy(ak.sum(corrected[keep], axis=1))
    bit = ak.to_numpy(ev.DST_HT410_PFScouting)
    clear = np.abs(ht_hlt - 410.0) > 1.0
    assert clear.sum() > 0.9 * len(bit)
    assert np.array_equal(bit[clear], ht_hlt[clear] > 410.0)
    assert bit.sum() > 0.8 * len(bit)  # mZ' = 2 TeV signal: nearly all above 410 GeV
    assert np.all(ht_hlt <= ht(jets) + 1e-3)  # the offset only lowers H_T


@pytest.mark.slow
def test_dark_quarks_are_the_zprime_daughters_on_the_event_record(run3_files):
    """GenDarkQuark_* against Pythia's own event record, walked particle by particle (same seed)."""
    import pythia8mc

    from svjscout.samples.generate import chunk_seed

    path, cfg = run3_files["svj"]
    ev, _ = _arrays(path)
    assert ak.all(ak.num(ev.GenDarkQuark_pdgId) == 2)
    assert ak.to_list(ak.sort(ev.GenDarkQuark_pdgId, axis=1)) == [[-4900101, 4900101]] * len(ev)
    p = pythia8mc.Pythia("", False)
    for line in cfg.settings():
        assert p.readString(line), line
    p.readString(f"Random:seed = {chunk_seed(cfg.seed, 0)}")
    assert p.init()
    for i in range(len(ev)):  # one chunk, every event written once (no filter, one copy): row i = event i
        assert p.next()
        record = p.event
        zp = [j for j in range(record.size()) if record[j].id() == 4900023]
        last = zp[-1]  # the Z' that decays (last copy)
        daughters = [record[j] for j in range(record[last].daughter1(), record[last].daughter2() + 1)]
        quarks = [d for d in daughters if abs(d.id()) == 4900101]
        assert len(quarks) == 2
        assert [d.id() for d in quarks] == ak.to_list(ev.GenDarkQuark_pdgId[i])
        np.testing.assert_allclose([d.pT() for d in quarks], ak.to_list(ev.GenDarkQuark_pt[i]), rtol=1e-6)
        np.testing.assert_allclose([d.phi() for d in quarks], ak.to_list(ev.GenDarkQuark_phi[i]), rtol=1e-5,
                                   atol=1e-6)
        # their sum is the Z' (mass within its width; Pythia's record conserves momentum exactly)
        px = sum(d.px() for d in quarks) - record[last].px()
        assert abs(px) < 1e-6 * record[last].e()


@pytest.mark.slow
def test_run3_background_copies_share_vertices_and_have_no_dark_quarks(run3_files):
    path, _ = run3_files["qcd"]
    ev, _ = _arrays(path)
    assert ak.all(ev.nGenDarkQuark == 0)
    parent = ak.to_numpy(ev.parent)
    same = parent[1:] == parent[:-1]  # two copies of one generated event: the same vertices
    assert same.any()
    for i in np.flatnonzero(same):
        assert ak.to_list(ev.ScoutingPrimaryVertex_z[i]) == ak.to_list(ev.ScoutingPrimaryVertex_z[i + 1])
    assert set(ak.to_numpy(ev.DST_HT410_PFScouting).tolist()) <= {True, False}


@pytest.mark.slow
def test_svjscout_layout_unchanged_by_the_run3_machinery(tmp_path):
    """The svjscout layout keeps today's branches only, and the run3 layout with the detector's CHS on
    (``chs`` set explicitly) has the same candidates and MET: vertices, rho and the trigger emulation draw
    nothing from the detector's random streams (the files of a seed stay what they were; checked
    array for array against files of the code before the layout, docs/samples.md)."""
    base = dict(seed=5, pileup=10.0, pileup_library=100, chunk_size=12)
    generate_file(GenerationConfig("svj", 12, layout="svjscout", **base), tmp_path / "a.root")
    generate_file(GenerationConfig("svj", 12, detector={"chs": True}, **base), tmp_path / "b.root")
    ea, meta_a = _arrays(tmp_path / "a.root")
    eb, meta_b = _arrays(tmp_path / "b.root")
    with uproot.open(tmp_path / "a.root") as f:
        assert set(f["Events"].keys()) == SVJSCOUT_BRANCHES
    assert meta_a["detector_params"]["chs"] and meta_b["detector_params"]["chs"]
    for f in ("pt", "eta", "phi", "mass", "pdgId", "charge"):
        assert ak.to_list(ea[f"ScoutingParticle_{f}"]) == ak.to_list(eb[f"ScoutingPFCandidate_{f}"])
    for k in ("ScoutingMET_pt", "ScoutingMET_phi", "genWeight", "event", "Pileup_nPU", "GenMET_pt"):
        assert np.array_equal(ak.to_numpy(ea[k]), ak.to_numpy(eb[k])), k
    with pytest.raises(GenerationError, match="layout"):
        GenerationConfig("svj", 10, layout="nanoaod")
    with pytest.raises(GenerationError, match="write_truth"):
        GenerationConfig("svj", 10, layout="svjscout", write_truth=True)
    # the default layout is CMS's Run-3 ScoutingNano; its detector writes the charged pileup (CHS moves
    # to the reader), the svjscout layout's removes it
    assert GenerationConfig("svj", 10).layout == "scoutingnano_run3"
    assert GenerationConfig("svj", 10).detector_params.chs is False
    assert GenerationConfig("svj", 10, layout="svjscout").detector_params.chs is True


@pytest.mark.slow
def test_svjscout_run_processes_a_run3_layout_file(run3_files, toy_models, tmp_path):
    """`svjscout run`'s processing (run_processor) reads a generated scoutingnano_run3 file through the
    preset end to end: every generated event enters the cutflow."""
    from svjscout.jobs.config import load_job
    from svjscout.jobs.runner import run_processor

    path, cfg = run3_files["svj"]
    job = tmp_path / "job.yaml"
    job.write_text("\n".join([
        "datasets:", f"  svj_mz2000_rinv0.3: {{kind: signal, files: ['{path}']}}",
        "analysis:", f"  lundnet_model: {toy_models[0]}", f"  twin_model: {toy_models[1]}", "  wp: [0.5, 0.5]",
        "executor: {name: iterative, chunksize: 10000}", "schema: {preset: scoutingnano_run3}"]) + "\n")
    out, _ = run_processor(load_job(job))
    raw = out["cutflow"]["svj_mz2000_rinv0.3"]["raw"]
    assert raw[0] == cfg.events and raw[-1] <= raw[0]
