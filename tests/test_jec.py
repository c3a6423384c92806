"""Jet energy corrections in the CMS JSON POG layout (processors/jec.py, processors/corrections/pog.py).

* the factorised JEC against correctionlib's own evaluation of the compound ``L1L2L3Res`` and
  against the closed forms of the test payload's levels (tests/data/jsonpog, CMS's 2018 UL names);
* the data run periods, type-1 MET and the corrected jets against hand computations;
* the shipped era is the identity (nothing changes on our simulation);
* in the processor: H_T and MET of corrected jets against an independent computation (FastJet's
  jets, correctionlib's compound, plain loops), the missing-rho refusal, and the prefilter with a
  JEC bound loses no event the corrected cuts select.
"""

from __future__ import annotations

import math
from pathlib import Path

import awkward as ak
import correctionlib
import numpy as np
import pytest
from conftest import assert_same_output, embedded_file, rewrite_file
from pydantic import ValidationError

from svjscout.core.exceptions import MissingBranchError
from svjscout.processors import jec as J
from svjscout.processors.corrections import make_payloads as mp
from svjscout.processors.corrections.pog import ERAS, CorrectionsSettings, EraCorrections, PayloadError, load_era

TEST_ROOT = Path(__file__).resolve().parent / "data" / "jsonpog"
JME = TEST_ROOT / "POG" / "JME" / "2018_UL"


@pytest.fixture(scope="module")
def era() -> EraCorrections:
    return load_era(CorrectionsSettings(era="2018_UL", root=str(TEST_ROOT)))


def _jets(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    return {"eta": rng.uniform(-5.5, 5.5, n), "pt": np.exp(rng.uniform(np.log(8.0), np.log(4000.0), n)),
            "area": rng.uniform(0.3, 2.2, n), "rho": rng.uniform(0.0, 70.0, n)}


def _abs_bin(edges, x):
    return min(max(int(np.searchsorted(edges, abs(x), side="right")) - 1, 0), len(edges) - 2)


# ---------------------------------------------------------------- the compound
@pytest.mark.parametrize("tag", ["Summer19UL18_V5_MC"] + [f"Summer19UL18_Run{p}_V5_DATA" for p in "ABCD"])
@pytest.mark.parametrize("algo,jets", [("AK4PFchs", "ak4"), ("AK8PFchs", "ak8")])
def test_compound_equals_correctionlibs_compound(era, tag, algo, jets):
    cset = correctionlib.CorrectionSet.from_file(str(JME / ("jet_jerc.json.gz" if jets == "ak4" else
                                                            "fatJet_jerc.json.gz")))
    comp = cset.compound[f"{tag}_L1L2L3Res_{algo}"]
    assert [v.name for v in comp.inputs] == ["JetA", "JetEta", "JetPt", "Rho"]
    j = _jets(3000)
    total, l1 = J.compound_factors(era.jec_levels(jets, tag), j["eta"], j["pt"], j["area"], j["rho"])
    expect = comp.evaluate(j["area"], j["eta"], j["pt"], j["rho"])
    np.testing.assert_allclose(total, expect, rtol=1e-12, atol=0)
    assert np.ptp(total) > 0.3  # non-trivial: factors from far below to above one
    l1_alone = cset[f"{tag}_L1FastJet_{algo}"].evaluate(j["area"], j["eta"], j["pt"], j["rho"])
    np.testing.assert_array_equal(l1, l1_alone)


def test_levels_closed_form(era):
    """Each level at the pT corrected by the levels before it (CMS's factorised corrector)."""
    j = _jets(400, seed=11)
    for k, tag in enumerate(["Summer19UL18_V5_MC", "Summer19UL18_RunC_V5_DATA"]):
        total, l1 = J.compound_factors(era.jec_levels("ak4", tag), j["eta"], j["pt"], j["area"], j["rho"])
        for i in range(len(j["pt"])):
            b = _abs_bin(mp.TEST_JEC_ABS_ETA, j["eta"][i])
            p0, p1 = mp.TEST_L1[b]
            p1 *= 1.0 if k == 0 else 1.02
            f1 = max(1e-4, 1 - j["area"][i] * (p0 + p1 * j["rho"][i]) / j["pt"][i])
            pt1 = j["pt"][i] * f1
            a0, a1 = mp.TEST_L2[b]
            f2 = a0 + a1 / math.sqrt(max(pt1, 10.0))
            f4 = 1.0
            if k == 1:  # RunC: period index 2
                r0, r1 = mp.TEST_RES[b]
                f4 = r0 + 0.003 * 2 + r1 * math.log10(max(pt1 * f2, 15.0))
            assert l1[i] == pytest.approx(f1, rel=1e-12)
            assert total[i] == pytest.approx(f1 * f2 * f4, rel=1e-12)


def test_data_periods_and_unknown_run(era):
    pt = ak.Array([[100.0, 40.0], [250.0], [80.0]])
    eta = ak.Array([[0.5, -2.0], [1.0], [3.5]])
    run = np.array([315300, 319500, 325000])  # RunA, RunC, RunD
    area = np.full(4, 0.5)
    rho = np.array([20.0, 30.0, 10.0])
    f, f1 = J.jec_factors(era, "ak4", True, pt, eta, area, rho, run)
    assert ak.to_list(ak.num(f)) == [2, 1, 1]
    flat_pt, flat_eta = ak.to_numpy(ak.flatten(pt)), ak.to_numpy(ak.flatten(eta))
    cset = correctionlib.CorrectionSet.from_file(str(JME / "jet_jerc.json.gz"))
    for i, (p, r) in enumerate(zip("AACD", np.repeat(rho, [2, 1, 1]))):
        comp = cset.compound[f"Summer19UL18_Run{p}_V5_DATA_L1L2L3Res_AK4PFchs"]
        assert ak.flatten(f)[i] == pytest.approx(comp.evaluate(0.5, flat_eta[i], flat_pt[i], r), rel=1e-12)
    mc, _ = J.jec_factors(era, "ak4", False, pt, eta, area, rho)
    assert not np.allclose(ak.to_numpy(ak.flatten(mc)), ak.to_numpy(ak.flatten(f)))  # the residual
    with pytest.raises(PayloadError, match=r"run\(s\) \[1\]"):
        J.jec_factors(era, "ak4", True, pt, eta, area, rho, np.array([315300, 1, 325000]))


def test_identity_of_the_shipped_era_and_active_flag(era):
    sim = load_era()
    assert sim.spec.name == "svjscout_sim"
    for jets in ("ak4", "ak8"):
        for data in (False, True):
            assert sim.jec_identity(jets, data)
            assert not era.jec_identity(jets, data)
    j = _jets(200)
    tag = sim.spec.jec_mc
    total, l1 = J.compound_factors(sim.jec_levels("ak4", tag), j["eta"], j["pt"], j["area"], j["rho"])
    assert np.all(total == 1.0) and np.all(l1 == 1.0)
    assert not J.jec_active(sim, CorrectionsSettings(), False)
    assert J.jec_active(era, CorrectionsSettings(era="2018_UL"), True)
    assert not J.jec_active(era, CorrectionsSettings(era="2018_UL", jec=False), True)
    assert era.needs_rho("ak4", False)


# ---------------------------------------------------------------- type-1 MET and corrected jets
def test_type1_met_by_hand():
    """MET (100, 0); jet a: raw 50 GeV at phi 0, f 1.2, f_L1 0.9 -> shift 15 GeV along x; jet b:
    raw 20 GeV at phi pi/2, f 0.7 (corrected 14 GeV < 15): not used; jet c: raw 30 at phi pi,
    f 1.1, f_L1 1.0 -> 3 GeV along -x."""
    pt = ak.Array([[50.0, 20.0, 30.0]])
    phi = ak.Array([[0.0, np.pi / 2, np.pi]])
    f = ak.Array([[1.2, 0.7, 1.1]])
    f1 = ak.Array([[0.9, 0.6, 1.0]])
    met, mphi = J.type1_met(np.array([100.0]), np.array([0.0]), pt, phi, f, f1)
    # MET_x = 100 - 15 - (-3) = 88; MET_y = 0 - 0 (jet b excluded) - 3 sin(pi) ~ 0
    assert met[0] == pytest.approx(88.0, abs=1e-9) and mphi[0] == pytest.approx(0.0, abs=1e-9)
    met_b, _ = J.type1_met(np.array([100.0]), np.array([0.0]), pt, phi, f, f1, pt_min=10.0)
    assert met_b[0] == pytest.approx(math.hypot(88.0, 20 * 0.1), abs=1e-9)  # jet b in: 2 GeV along -y


def test_corrected_jets_reorder_and_scale_constituents():
    cons = [[{"pt": 60.0, "eta": 0.1, "phi": 0.0, "mass": 0.0, "pdgId": 211},
             {"pt": 40.0, "eta": 0.0, "phi": 0.1, "mass": 0.1, "pdgId": 22}],
            [{"pt": 90.0, "eta": 1.0, "phi": 2.0, "mass": 0.0, "pdgId": 130}]]
    jets = ak.Array([[{"pt": 100.0, "eta": 0.05, "phi": 0.04, "mass": 10.0, "constituents": cons[0]},
                      {"pt": 90.0, "eta": 1.0, "phi": 2.0, "mass": 5.0, "constituents": cons[1]}]])
    out = J.corrected_jets(jets, ak.Array([[1.0, 1.5]]))
    assert ak.to_list(out.pt) == [[135.0, 100.0]] and ak.to_list(out.mass) == [[7.5, 10.0]]
    assert ak.to_list(out.constituents.pt) == [[[135.0], [60.0, 40.0]]]
    assert ak.to_list(out.constituents.pdgId) == [[[130], [211, 22]]]


# ---------------------------------------------------------------- settings
def test_settings_validation():
    with pytest.raises(ValidationError, match="analysis.corrections.era"):
        CorrectionsSettings(era="2031")
    with pytest.raises(ValidationError, match="analysis.corrections.names"):
        CorrectionsSettings(names={"jec_tag": "x"})
    with pytest.raises(ValidationError, match="max_jec_factor"):
        CorrectionsSettings(max_jec_factor=0.9)
    s = CorrectionsSettings(era="2018_UL", names={"ak8": "AK8PFPuppi", "jec_data": [[1, 10, "X_DATA"]]})
    assert s.spec().ak8 == "AK8PFPuppi" and s.spec().jec_data == ((1, 10, "X_DATA"),)
    assert ERAS["2018_UL"].pileup == "Collisions18_UltraLegacy_goldenJSON"
    with pytest.raises(PayloadError, match="does not exist"):
        load_era(CorrectionsSettings(era="2018_UL", root="/nonexistent")).jec_identity("ak4", False)
    bad = load_era(CorrectionsSettings(era="2018_UL", root=str(TEST_ROOT), names={"jec_mc": "Nope_V1_MC"}))
    with pytest.raises(PayloadError, match="no correction 'compound:Nope_V1_MC_L1L2L3Res_AK4PFchs'"):
        bad.jec_identity("ak4", False)


def test_era_weights_by_cms_names(era):
    """Pileup keys nominal/up/down, the JER tables of AK8 jets from the AK4 ones (CMS's rule)."""
    lum = correctionlib.CorrectionSet.from_file(str(TEST_ROOT / "POG/LUM/2018_UL/puWeights.json.gz"))
    pu = lum["Collisions18_UltraLegacy_goldenJSON"]
    assert [v.name for v in pu.inputs] == ["NumTrueInteractions", "weights"]
    n = np.array([10.5, 30.5, 60.5])
    for ours, theirs in (("nom", "nominal"), ("up", "up"), ("down", "down")):
        np.testing.assert_array_equal(era.value("pileup_weight", NumTrueInteractions=n, systematic=ours),
                                      pu.evaluate(n, theirs))
    jerc = correctionlib.CorrectionSet.from_file(str(JME / "jet_jerc.json.gz"))
    eta, pt, rho = np.array([0.2, 2.9]), np.array([60.0, 300.0]), np.array([5.0, 35.0])
    np.testing.assert_array_equal(era.value("jer_resolution", "ak8", JetEta=eta, JetPt=pt, Rho=rho),
                                  jerc["Summer19UL18_JRV2_MC_PtResolution_AK4PFchs"].evaluate(eta, pt, rho))
    assert era.names("jes_uncertainty", "ak8") == ("ak8", "Summer19UL18_V5_MC_Total_AK8PFchs")


# ---------------------------------------------------------------- in the processor
def _with_rho(tmp_path, name="svj_mz2000_rinv0.3.root", n=None, rho=True):
    def modify(cols, pf):
        k = len(cols["event"])
        if rho:
            cols["ScoutingRho_fixedGridRhoFastjetAll"] = np.linspace(5.0, 45.0, k).astype(np.float32)

    # without rho: the file's own rho branch (the generator writes one) is dropped too
    return rewrite_file(embedded_file(name), tmp_path / f"rho_{name}", modify=modify, n=n,
                        drop=("PSWeight", "nPSWeight") + (() if rho else ("ScoutingRho_fixedGridRhoFastjetAll",)),
                        keep_runs=False)


def _config(toy_models, corrections: dict, prefilter: bool = True, kind: str = "signal", cuts=None):
    from svjscout.processors.selection import Cuts
    from svjscout.processors.settings import DatasetInfo, ProcessorConfig

    return ProcessorConfig(wp=(0.5, 0.5), prefilter=prefilter, cuts=cuts or Cuts(), lundnet_model=toy_models[0],
                           twin_model=toy_models[1],
                           corrections=CorrectionsSettings(**corrections),
                           datasets={"sig": DatasetInfo(kind=kind, xsec=1.0, sumw=1000.0)})


def _events(path):
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.processors.schema import SVJScoutingSchema

    return NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="eager",
                                       metadata={"dataset": "sig", "filename": path}).events()


def test_processor_ht_and_type1_met_independently(tmp_path, toy_models):
    from svjscout.processors.jets import cluster
    from svjscout.processors.processor import SVJProcessor

    path = _with_rho(tmp_path, n=60)
    corr = {"era": "2018_UL", "root": str(TEST_ROOT)}
    proc = SVJProcessor(_config(toy_models, corr, prefilter=False))
    events = _events(path)
    c = proc._read(events, events.metadata)
    met_raw, phi_raw = c.met_pt.copy(), c.met_phi.copy()
    proc._prefilter(c)
    assert c.jec and len(c.sub) == c.n
    proc._cluster(c)
    # independent: FastJet's AK4 jets of the same candidates, correctionlib's compound per jet
    cset = correctionlib.CorrectionSet.from_file(str(JME / "jet_jerc.json.gz"))
    comp = cset.compound["Summer19UL18_V5_MC_L1L2L3Res_AK4PFchs"]
    l1 = cset["Summer19UL18_V5_MC_L1FastJet_AK4PFchs"]
    raw4 = cluster(c.pf, 0.4, ptmin=5.0)
    rho = np.linspace(5.0, 45.0, 60).astype(np.float32).astype(np.float64)
    area = math.pi * 0.16
    cuts = proc.config.cuts
    changed = 0
    for i in range(c.n):
        ht, mx, my = 0.0, met_raw[i] * math.cos(phi_raw[i]), met_raw[i] * math.sin(phi_raw[i])
        for p, e, ph in zip(ak.to_list(raw4.pt[i]), ak.to_list(raw4.eta[i]), ak.to_list(raw4.phi[i])):
            f = comp.evaluate(area, e, p, rho[i])
            if p * f > cuts.ak4_pt_min and abs(e) < cuts.ak4_abs_eta_max:
                ht += p * f
            if p * f > 15.0:
                d = p * f - p * l1.evaluate(area, e, p, rho[i])
                mx, my = mx - d * math.cos(ph), my - d * math.sin(ph)
        assert c.ht_all[i] == pytest.approx(ht, rel=1e-9, abs=1e-9)
        assert c.met_pt[i] == pytest.approx(math.hypot(mx, my), rel=1e-9, abs=1e-6)
        changed += abs(c.met_pt[i] - met_raw[i]) > 1.0
    assert changed > 30  # type-1 moves the MET of most events
    # the AK8 jets: corrected pT, sorted, above the threshold
    assert ak.all(c.ak8.pt >= cuts.ak8_pt_min)
    assert ak.all(c.ak8.pt[:, :-1] >= c.ak8.pt[:, 1:])


def test_processor_refuses_l1_without_rho(tmp_path, toy_models):
    from svjscout.processors.processor import SVJProcessor

    path = _with_rho(tmp_path, n=20, rho=False)
    proc = SVJProcessor(_config(toy_models, {"era": "2018_UL", "root": str(TEST_ROOT)}))
    with pytest.raises(MissingBranchError, match="ScoutingRho_fixedGridRhoFastjetAll"):
        proc.process(_events(path))


@pytest.mark.parametrize("type1", [True, False])
def test_prefilter_with_jec_bound_loses_nothing(tmp_path, toy_models, type1):
    """The prefilter loosened by max_jec_factor (and without its MET bound under type-1) gives the
    output of clustering every event; the bound is checked on every jet."""
    from svjscout.core.exceptions import ConfigError
    from svjscout.processors.processor import SVJProcessor
    from svjscout.processors.selection import Cuts

    path = _with_rho(tmp_path, name="qcd_s204.root", n=400)
    corr = {"era": "2018_UL", "root": str(TEST_ROOT), "type1_met": type1, "max_jec_factor": 2.0}
    events = _events(path)
    cuts = Cuts(rt_min=0.27)  # MET bound 175.5 GeV: above the embedded sample's MET skim (150 GeV)
    on = SVJProcessor(_config(toy_models, corr, prefilter=True, kind="background", cuts=cuts)).process(events)
    off = SVJProcessor(_config(toy_models, corr, prefilter=False, kind="background", cuts=cuts)).process(events)
    assert_same_output(on, off)
    if not type1:  # the raw-MET bound still rejects (most QCD events have little MET)
        assert on["counts"]["sig"]["not_clustered"] > 0
    flow_off = off["cutflow"]["sig"]["raw"]
    assert flow_off[-1] > 0  # some events selected
    # without a bound the prefilter passes everything; a too small bound stops the run
    none = SVJProcessor(_config(toy_models, {**corr, "max_jec_factor": None}, prefilter=True,
                                kind="background", cuts=cuts)).process(events)
    assert none["counts"]["sig"]["not_clustered"] == 0
    assert none["cutflow"]["sig"]["raw"][1] == 400  # its prefilter row passes every event
    for name in off["hists"]:  # the same selection: rows are cumulative, so from rt on they agree
        assert np.array_equal(none["hists"][name].view(flow=True), off["hists"][name].view(flow=True))
    assert np.array_equal(none["cutflow"]["sig"]["raw"][-3:], flow_off[-3:])
    with pytest.raises(ConfigError, match="max_jec_factor"):
        SVJProcessor(_config(toy_models, {**corr, "max_jec_factor": 1.0}, kind="background")).process(events)


def test_systematics_on_corrected_jets(tmp_path, toy_models):
    """Signal systematics of an era with a JEC: the variations run on the corrected jets (the era's
    JES uncertainty of AK4 and AK8 jets, the AK4 JER tables and the event's rho for AK8 jets)."""
    from svjscout.processors.processor import SVJProcessor
    from svjscout.processors.variations import SystematicsSettings

    path = _with_rho(tmp_path, n=120)
    cfg = _config(toy_models, {"era": "2018_UL", "root": str(TEST_ROOT)})
    cfg = cfg.model_copy(update={"systematics": SystematicsSettings(enabled=True, sources=["jes", "jer", "pileup"])})
    out = SVJProcessor(cfg).process(_events(path))
    h = out["hists"]["xy_mt_syst"]
    nominal = out["hists"]["xy_mt"].sum().value
    assert nominal > 0
    for name in ("jes_up", "jes_down", "jer_up", "jer_down", "pileup_up", "pileup_down"):
        assert h[{"syst": name}].sum().value > 0, name
    # the shifts move the events (M_T, scores): the up and down histograms differ bin by bin
    assert not np.array_equal(h[{"syst": "jes_up"}].values(flow=True), h[{"syst": "jes_down"}].values(flow=True))


def test_corrections_era_per_dataset_era(tmp_path, toy_models):
    """analysis.corrections.by_era: a job with datasets of two eras corrects each with its own payloads
    (here: the 2018 dataset with the 2018_UL test payload, the other with the shipped identity), the
    same jets as a job holding that era alone."""
    from svjscout.processors.processor import SVJProcessor
    from svjscout.processors.settings import DatasetInfo, ProcessorConfig

    path = _with_rho(tmp_path, n=30)
    base = dict(wp=(0.5, 0.5), prefilter=False, lundnet_model=toy_models[0], twin_model=toy_models[1],
                datasets={"sig": DatasetInfo(kind="signal", xsec=1.0, sumw=1000.0)})

    def read_and_cluster(cfg, era):
        from svjscout.processors import dataquality as DQ
        cfg = cfg.model_copy(update={"data_quality": DQ.DataQualitySettings(eras={"sig": era} if era else {})})
        proc = SVJProcessor(cfg)
        events = _events(path)
        c = proc._read(events, events.metadata)
        proc._prefilter(c)
        proc._cluster(c)
        return c

    mapped = ProcessorConfig(**base, corrections=CorrectionsSettings(root=str(TEST_ROOT), by_era={"2018": "2018_UL"}))
    alone = ProcessorConfig(**base, corrections=CorrectionsSettings(era="2018_UL", root=str(TEST_ROOT)))
    plain = ProcessorConfig(**base)
    c18, ref18 = read_and_cluster(mapped, "2018"), read_and_cluster(alone, None)
    assert c18.jec and ak.to_list(c18.ak8.pt) == ak.to_list(ref18.ak8.pt)
    np.testing.assert_array_equal(c18.met_pt, ref18.met_pt)
    other, ref = read_and_cluster(mapped, "2017"), read_and_cluster(plain, None)  # not listed: the job's era
    assert not other.jec and ak.to_list(other.ak8.pt) == ak.to_list(ref.ak8.pt)
    assert ak.to_list(c18.ak8.pt) != ak.to_list(other.ak8.pt)
    with pytest.raises(ValueError, match="by_era"):
        CorrectionsSettings(by_era={"2018": "2018_ULX"})
