"""The prefilter (processors/prefilter.py): lossless, the cutflow and the histograms unchanged.

* on the embedded sample and on a small QCD sample generated here without any skim (no MET skim,
  no H_T pre-filter): the same cutflow and bit-identical histograms with ``analysis.prefilter``
  on and off (off clusters every event, selects with the cuts alone, and raises if an event
  passing them fails the prefilter);
* one hand-made event at the edge of each bound, through the processor, kept when it passes
  every cut and rejected just beyond the bound;
* the fraction rejected on the unskimmed sample, counted independently with numpy on the file.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction

import awkward as ak
import numpy as np
import pytest
from conftest import assert_same_output, embedded_file

from svjscout.jobs.config import load_job
from svjscout.jobs.runner import run_processor
from svjscout.processors.prefilter import met_bound, prefilter, visible_bound
from svjscout.processors.selection import CUT_ORDER, Cuts


def _with_prefilter(cfg, on: bool):
    return cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"prefilter": on})})


def _same_with_and_without(cfg):
    on, _ = run_processor(_with_prefilter(cfg, True))
    off, _ = run_processor(_with_prefilter(cfg, False))
    assert_same_output(on, off)  # every cutflow row (the prefilter row too) and every histogram bin
    for ds, c in on["counts"].items():
        assert off["counts"][ds]["not_clustered"] == 0
        flow = on["cutflow"][ds]["raw"]
        assert c["not_clustered"] == flow[0] - flow[1]  # the prefilter row: the events clustered
        # fewer_than_two_jets counts among the events clustered: those skipped, with fewer than two
        # jets or not, are missing from it
        skipped_f2j = off["counts"][ds]["fewer_than_two_jets"] - c["fewer_than_two_jets"]
        assert 0 <= skipped_f2j <= c["not_clustered"]
    return on, off


@pytest.mark.slow
def test_embedded_sample_same_output(small_job):
    on, off = _same_with_and_without(small_job)
    assert on["cutflow"]["qcd"]["raw"][-1] > 0 and on["hists"]["mt_abcd"].sum().value > 0
    assert sum(c["not_clustered"] for c in on["counts"].values()) > 0  # it does skip some (MET 150-156)


@pytest.fixture(scope="module")
def unskimmed(tmp_path_factory):
    """300 QCD events (pT-hat > 170 GeV, biased; pileup 35) without MET skim or H_T pre-filter (seconds)."""
    path = tmp_path_factory.mktemp("unskimmed") / "qcd_unskimmed.root"
    subprocess.run(["svjscout", "generate", "qcd", "-n", "300", "--seed", "5", "--met-min", "0", "--ht-min", "0",
                    "--no-progress", "-o", str(path)], check=True, capture_output=True)
    return str(path)


def _job(tmp_path, files, toy_models, chunksize=100):
    lines = ["datasets:"] + [f"  {name}: {{kind: background, files: ['{f}']}}" for name, f in files.items()]
    lines += ["analysis:", f"  lundnet_model: {toy_models[0]}", f"  twin_model: {toy_models[1]}", "  wp: [0.5, 0.5]",
              f"executor: {{name: iterative, chunksize: {chunksize}}}"]
    job = tmp_path / "job.yaml"
    job.write_text("\n".join(lines) + "\n")
    return load_job(job)


@pytest.mark.slow
def test_unskimmed_sample_same_output_and_large_rejection(unskimmed, tmp_path, toy_models):
    import uproot

    files = {"qcd": unskimmed, "wjets": embedded_file("wjets.root")}  # wjets: selected events in the same run
    on, _ = _same_with_and_without(_job(tmp_path, files, toy_models))
    assert on["cutflow"]["wjets"]["raw"][-1] > 0
    # independent count on the file: the events with MET below 0.24 x 650 GeV, and those with too
    # little visible pT (S <= 410 GeV), with the processor's candidate cleaning redone in numpy
    with uproot.open(unskimmed) as f:
        t = f["Events"]
        met = t["ScoutingMET_pt"].array(library="np").astype(np.float64)
        pf = t.arrays([f"ScoutingPFCandidate_{k}" for k in ("pt", "eta", "phi", "mass", "vertexIndex")])
    good = np.ones(len(ak.flatten(pf["ScoutingPFCandidate_pt"])), bool)
    for k in ("pt", "eta", "phi", "mass"):
        good &= np.isfinite(ak.to_numpy(ak.flatten(pf[f"ScoutingPFCandidate_{k}"])))
    pt = ak.to_numpy(ak.flatten(pf["ScoutingPFCandidate_pt"])).astype(np.float64)
    good &= pt > 0
    good &= ak.to_numpy(ak.flatten(pf["ScoutingPFCandidate_vertexIndex"])) <= 0  # CHS (the file has all candidates)
    event_of = np.repeat(np.arange(len(met)), ak.to_numpy(ak.num(pf["ScoutingPFCandidate_pt"])))
    s = np.bincount(event_of[good], weights=pt[good], minlength=len(met))
    low_met = met < 156.0
    low_vis = s <= 410.0
    n = len(met)
    counts = on["counts"]["qcd"]
    assert counts["events"] == n == 300
    assert counts["not_clustered"] == np.count_nonzero(low_met | low_vis)
    assert counts["not_clustered"] >= np.count_nonzero(low_met) > 0.8 * n  # most unskimmed QCD has little MET
    assert on["cutflow"]["qcd"]["raw"][1] == n - counts["not_clustered"]


# -- hand-made events at the edge of each bound ----------------------------------------------------

def _back_to_back(p: float, extra_pt: float = 0.0) -> dict:
    """Two massless candidates of pT ``p`` at eta 0, phi 0 and pi (two jets), plus an optional soft
    candidate far forward (|eta| = 4.5: in S, in no accepted jet)."""
    pt, eta, phi = [p, p], [0.0, 0.0], [0.0, np.pi]
    if extra_pt:
        pt, eta, phi = pt + [extra_pt], eta + [4.5], phi + [1.0]
    return {"pt": pt, "eta": eta, "phi": phi}


def _mt_two(p: float, met: float) -> float:
    """M_T of two back-to-back massless jets of pT p with MET along one of them."""
    return float(np.sqrt(4 * p * p + 4 * p * met))


def _write(path, events: list[tuple[dict, float]]) -> str:
    import uproot

    n = len(events)
    pf = {k: ak.Array([np.asarray(e[k], np.float32) for e, _ in events]) for k in ("pt", "eta", "phi")}
    pf["mass"] = ak.zeros_like(pf["pt"])
    pf["pdgId"] = ak.values_astype(ak.zeros_like(pf["pt"]), np.int32) + 22
    pf["charge"] = ak.values_astype(ak.zeros_like(pf["pt"]), np.int32)
    cols = {"ScoutingPFCandidate": ak.zip(pf), "ScoutingMET_pt": np.array([m for _, m in events], np.float32),
            "ScoutingMET_phi": np.zeros(n, np.float32), "genWeight": np.ones(n, np.float32),
            "run": np.ones(n, np.uint32), "luminosityBlock": np.ones(n, np.uint32),
            "event": np.arange(n, dtype=np.uint64)}
    with uproot.recreate(path) as f:
        types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in cols.items()}
        f.mktree("Events", types).extend(cols)
    return str(path)


def _process(path, toy_models, cuts: Cuts, on: bool) -> dict:
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.processors.processor import SVJProcessor
    from svjscout.processors.schema import SVJScoutingSchema
    from svjscout.processors.settings import DatasetInfo, ProcessorConfig

    events = NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="eager",
                                         metadata={"dataset": "hand", "filename": path}).events()
    cfg = ProcessorConfig(cuts=cuts, wp=(0.5, 0.5), prefilter=on, lundnet_model=toy_models[0],
                          twin_model=toy_models[1],
                          datasets={"hand": DatasetInfo(kind="background", xsec=1.0, sumw=float(len(events)))})
    return SVJProcessor(cfg).process(events)


def _rows(out) -> dict:
    flow = out["cutflow"]["hand"]["raw"]
    return dict(zip(["all", *CUT_ORDER], flow.tolist()))


def _edge_case(tmp_path, toy_models, cuts, passing: tuple[dict, float], failing: tuple[dict, float]):
    """``passing`` passes every cut (kept, selected); ``failing`` is just beyond a bound: rejected
    by the prefilter, and it fails the cuts themselves when clustered (prefilter off)."""
    for event, should_pass in ((passing, True), (failing, False)):
        path = _write(tmp_path / f"edge_{int(should_pass)}.root", [event])
        on, off = _process(path, toy_models, cuts, True), _process(path, toy_models, cuts, False)
        assert_same_output(on, off)
        rows = _rows(on)
        assert rows["prefilter"] == int(should_pass)
        assert rows["deta"] == int(should_pass)
        assert on["counts"]["hand"]["not_clustered"] == int(not should_pass)
        assert on["hists"]["mt_abcd"].sum().value == (1.0 if should_pass else 0.0)
    return rows


def test_met_bound_edge(tmp_path, toy_models):
    """MET just above rt_min * mt_min with M_T just above mt_min and R_T just above rt_min passes."""
    cuts = Cuts()
    met = 0.24 * 650.0 + 0.01
    mt = 650.0 + 0.01  # R_T = 156.01 / 650.01 > 0.24
    p = (-met + np.sqrt(met * met + mt * mt)) / 2  # back-to-back jets with M_T = mt
    assert 650 < _mt_two(p, met) < met / 0.24 and 2 * p > 410 and p > 150
    _edge_case(tmp_path, toy_models, cuts, (_back_to_back(p), met), (_back_to_back(p), 0.24 * 650.0 - 0.01))


def test_ht_bound_edge(tmp_path, toy_models):
    """S just above ht_min passes the trigger; S just below cannot (the jets' pT sum to S). The
    prefilter keeps S within 1e-5 of ht_min (its rounding margin: 4 MeV), so 'just below' is 20 MeV."""
    cuts = Cuts()
    _edge_case(tmp_path, toy_models, cuts, (_back_to_back(205.001), 400.0), (_back_to_back(204.99), 400.0))


def test_two_ak8_bound_edge(tmp_path, toy_models):
    """With ht_min = 250 GeV the two-AK8 bound (S >= 2 x 150 GeV) is the tighter one: two jets of
    exactly 150 GeV pass, 149.99 GeV each plus a forward candidate making S = 300.01 does not."""
    cuts = Cuts(ht_min=250.0)
    assert visible_bound(cuts) == (300.0, False)
    # failing: S = 2 x 149.99 + 0.01 < 300, so the prefilter rejects; the jets fail ak8_pt_min
    _edge_case(tmp_path, toy_models, cuts, (_back_to_back(150.0), 700.0), (_back_to_back(149.99, 0.01), 700.0))


@pytest.mark.parametrize("rt_min, mt_min", [(0.24, 650.0), (0.15, 650.0), (0.1, 0.3), (0.3, 1e-300), (0.0, 650.0),
                                            (0.24, -5.0)])
def test_met_bound_is_at_or_below_the_exact_product(rt_min, mt_min):
    b = met_bound(Cuts(rt_min=rt_min, mt_min=mt_min))
    assert Fraction(b) <= Fraction(rt_min) * Fraction(max(mt_min, 0.0))
    assert b >= rt_min * max(mt_min, 0.0) * (1 - 1e-15) - 1e-300  # and only one step below


def test_vacuous_bounds_are_dropped():
    met, s = np.array([0.0, 10.0, np.nan]), np.array([0.0, 0.0, 0.0])
    opened = Cuts(rt_min=-1.0, ht_min=-1.0, ak8_pt_min=0.0)
    assert met_bound(opened) is None
    assert prefilter(met, s, opened).tolist() == [True, True, True]
    # with the default cuts, NaN MET fails (it fails `clean` too) and so does an empty event
    assert prefilter(np.array([np.nan, 200.0]), np.array([1000.0, 0.0]), Cuts()).tolist() == [False, False]
