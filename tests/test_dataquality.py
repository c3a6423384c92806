"""Data-quality stages (processors/dataquality.py) on hand-made events written with uproot.

Every stage is checked through the processor (its cutflow row, on small ROOT files) against a
direct count of what the stage should do (a loop over the events, a golden JSON read by hand,
a file written without the candidates CHS drops), and the refusals name the file and the branch.
"""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot
from coffea.nanoevents import NanoEventsFactory

from svjscout.core.exceptions import ConfigError, MissingBranchError
from svjscout.processors import dataquality as DQ
from svjscout.processors.processor import SVJProcessor
from svjscout.processors.schema import BranchMap, SVJScoutingSchema
from svjscout.processors.selection import CUT_ORDER, QUALITY_ROWS
from svjscout.processors.settings import DatasetInfo, ProcessorConfig

ROWS = ["all", *CUT_ORDER]
P, MET = 600.0, 500.0  # two back-to-back jets of 600 GeV with MET along J0: passes every cut


def _event(eta0=0.0, phi0=0.0, pdg=(211, 211), extra=(), p=P):
    """Two jets (one candidate each, pT p and p - 10) at (eta0, phi0) and (eta0, phi0 + pi), MET along J0;
    ``extra``: more candidates (pt, eta, phi, pdgId, vertexIndex)."""
    cands = [(p, eta0, phi0, pdg[0], 0), (p - 10, eta0, phi0 + np.pi, pdg[1], 0), *extra]
    return {"cands": cands, "met_phi": phi0}


def _write(path, events, run=None, lumi=None, bits=None, vertices=None, vertex_index=True, tree="Events",
           names=None):
    """A small file: ScoutingPFCandidate (or ``names["pf"]``) with pt, eta, phi, mass, pdgId, charge
    (and vertexIndex), MET, ids, optional trigger bits {branch: values} and vertices (a list per
    event of dicts x, y, z, ndof, isValidVtx)."""
    names = names or {}
    n = len(events)
    fields = {k: [] for k in ("pt", "eta", "phi", "pdgId", "vtx")}
    for e in events:
        for k, i in (("pt", 0), ("eta", 1), ("phi", 2), ("pdgId", 3), ("vtx", 4)):
            fields[k].append([c[i] for c in e["cands"]])
    pf = {k: ak.values_astype(ak.Array(fields[k]), np.float32) for k in ("pt", "eta", "phi")}
    pf["phi"] = ak.values_astype((pf["phi"] + np.pi) % (2 * np.pi) - np.pi, np.float32)
    pf["mass"] = ak.zeros_like(pf["pt"])
    pf["pdgId"] = ak.values_astype(ak.Array(fields["pdgId"]), np.int32)
    pf["charge"] = ak.values_astype(ak.where(abs(pf["pdgId"]) == 211, 1, 0), np.int32)
    if vertex_index:
        pf[names.get("vertex", "vertexIndex")] = ak.values_astype(ak.Array(fields["vtx"]), np.int32)
    met_phi = np.array([(e["met_phi"] + np.pi) % (2 * np.pi) - np.pi for e in events], np.float32)
    cols = {names.get("pf", "ScoutingPFCandidate"): ak.zip(pf), "ScoutingMET_pt": np.full(n, MET, np.float32),
            "ScoutingMET_phi": met_phi, "genWeight": np.ones(n, np.float32),
            "run": np.asarray(run if run is not None else np.full(n, 1), np.uint32),
            names.get("lumi", "luminosityBlock"): np.asarray(lumi if lumi is not None else np.full(n, 1), np.uint32),
            "event": np.arange(n, dtype=np.uint64)}
    for name, values in (bits or {}).items():
        cols[name] = np.asarray(values)
    if vertices is not None:
        cols[names.get("pv", "ScoutingPrimaryVertex")] = ak.zip(
            {k: ak.values_astype(ak.Array([[v[k] for v in vs] for vs in vertices]), np.float32 if k != "isValidVtx"
                                 else np.bool_) for k in ("x", "y", "z", "ndof", "isValidVtx")})
    with uproot.recreate(path) as f:
        types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in cols.items()}
        f.mktree(tree, types).extend(cols)
    return str(path)


def _run(path, toy_models, kind="background", branch_map=None, tree="Events", batch_events=10000, **dq):
    cfg = ProcessorConfig(wp=(0.5, 0.5), lundnet_model=toy_models[0], twin_model=toy_models[1],
                          batch_events=batch_events,
                          branch_map=branch_map or BranchMap(),
                          datasets={"d": DatasetInfo(kind=kind, xsec=1.0 if kind != "data" else None,
                                                     sumw=1.0 if kind != "data" else None)},
                          data_quality=DQ.DataQualitySettings(**dq))
    events = NanoEventsFactory.from_root({path: tree}, schemaclass=cfg.branch_map.schema_class(), mode="eager",
                                         metadata={"dataset": "d", "filename": path}).events()
    return SVJProcessor(cfg).process(events)


def _rows(out, col="raw") -> dict:
    return dict(zip(ROWS, out["cutflow"]["d"][col].tolist()))


def _assert_rows(out, expected: dict) -> None:
    """``expected``: row -> events; every other row after it keeps the count of the row before."""
    rows = _rows(out)
    assert rows["all"] == rows["deta"] + sum(rows[ROWS[i - 1]] - rows[ROWS[i]] for i in range(1, len(ROWS)))
    for name, n in expected.items():
        assert rows[name] == n, (name, rows)


# -- defaults: no-op ---------------------------------------------------------------------------
def test_defaults_pass_every_event_of_files_without_the_branches(tmp_path, toy_models):
    path = _write(tmp_path / "plain.root", [_event(), _event(0.5, 1.0)], vertex_index=False)
    out = _run(path, toy_models)
    rows = _rows(out)
    assert rows["deta"] == rows["all"] == 2  # both pass every cut
    for name in QUALITY_ROWS:  # each data-quality row keeps the count of the row before it
        assert rows[name] == rows[ROWS[ROWS.index(name) - 1]]
    q = out["data_quality"]["d"]
    assert q["hlt_emulated"] == 2 and q["hlt_from_bits"] == 0 and q["no_vertices"] == 2 and q["chs_not_applied"] == 2


# -- trigger -----------------------------------------------------------------------------------
def test_trigger_bit_or_of_the_era_paths_data_and_mc(tmp_path, toy_models):
    bits = {"DST_HT410_PFScouting": np.array([1, 0, 1, 0], bool), "DST_Other": np.array([0, 0, 0, 1], bool)}
    good = [[{"x": 0.0, "y": 0.0, "z": 0.0, "ndof": 9.0, "isValidVtx": True}]] * 4
    path = _write(tmp_path / "bits.root", [_event()] * 4, bits=bits, vertices=good)
    for kind in ("data", "background"):
        out = _run(path, toy_models, kind=kind, era="2018")
        _assert_rows(out, {"hlt": 2, "deta": 2})
        assert out["data_quality"]["d"]["hlt_from_bits"] == 4
    # OR of the listed paths
    out = _run(path, toy_models, kind="data", era="2018",
               trigger={"paths": {"2018": ["DST_HT410_PFScouting", "DST_Other"]}})
    _assert_rows(out, {"hlt": 3})
    # simulation: emulation only on request
    out = _run(path, toy_models, era="2018", trigger={"mc": "emulation"})
    _assert_rows(out, {"hlt": 4})
    assert out["data_quality"]["d"]["hlt_emulated"] == 4


def test_trigger_missing_bit_data_refused_mc_emulated(tmp_path, toy_models):
    path = _write(tmp_path / "nobits.root", [_event()] * 3)
    with pytest.raises(MissingBranchError, match=r"nobits\.root.*DST_HT410_PFScouting"):
        _run(path, toy_models, kind="data", era="2018")
    with pytest.raises(MissingBranchError, match=r"nobits\.root.*DST_HT410_PFScouting"):
        _run(path, toy_models, era="2018", trigger={"mc": "bits"})
    out = _run(path, toy_models, era="2018")
    _assert_rows(out, {"hlt": 3, "deta": 3})
    assert out["data_quality"]["d"]["hlt_emulated"] == 3


def test_run2_ntuple_trigger_branch(tmp_path, toy_models):
    """run2_svj: DST_HT410_PFScouting is the uint32 ``scouting_trig`` of the SVJ scouting ntuples."""
    names = {"pf": "PFCands", "lumi": "lumSec", "vertex": "vertex", "pv": "PV"}
    vtx = [[{"x": 0.0, "y": 0.0, "z": 1.0, "ndof": 10.0, "isValidVtx": True}]] * 3
    path = _write(tmp_path / "run2.root", [_event()] * 3, bits={"scouting_trig": np.array([1, 0, 1], np.uint32)},
                  vertices=vtx, names=names, tree="mmtree/Events")
    bmap = BranchMap.from_preset("run2_svj", met_pt="ScoutingMET_pt", met_phi="ScoutingMET_phi")
    assert "scouting_trig" in bmap.processor_branches() and "PV_z" in bmap.processor_branches()
    out = _run(path, toy_models, kind="data", era="2017", branch_map=bmap, tree="mmtree/Events")
    _assert_rows(out, {"hlt": 2, "good_vertex": 2, "deta": 2})
    assert out["data_quality"]["d"]["chs_not_applied"] == 0


# -- lumi mask ---------------------------------------------------------------------------------
def test_lumi_mask_golden_json(tmp_path, toy_models):
    golden = {"319000": [[1, 5], [10, 12]], "319100": [[3, 3]]}
    gpath = tmp_path / "golden.json"
    gpath.write_text(json.dumps(golden))
    run = np.array([319000, 319000, 319000, 319000, 319100, 319100, 319200])
    lumi = np.array([1, 6, 12, 13, 3, 4, 1])
    expected = [any(a <= ls <= b for a, b in golden.get(str(r), [])) for r, ls in zip(run, lumi)]
    assert DQ.lumi_mask(str(gpath), run, lumi).tolist() == expected == [True, False, True, False, True, False, False]
    path = _write(tmp_path / "lumi.root", [_event()] * len(run), run=run, lumi=lumi,
                  bits={"DST_HT410_PFScouting": np.ones(len(run), bool)},
                  vertices=[[{"x": 0.0, "y": 0.0, "z": 0.0, "ndof": 9.0, "isValidVtx": True}]] * len(run))
    out = _run(path, toy_models, kind="data", era="2018", lumi_masks={"d": str(gpath)})
    _assert_rows(out, {"lumi_mask": sum(expected), "deta": sum(expected)})
    out = _run(path, toy_models, kind="data", era="2018")  # no mask (the job allowed it): every lumisection
    _assert_rows(out, {"lumi_mask": len(run)})
    with pytest.raises(ValueError, match=r"datasets\.d\.lumi_mask.*simulation"):
        _run(path, toy_models, kind="background", lumi_masks={"d": str(gpath)})


def test_job_lumi_mask_key(tmp_path):
    from svjscout.jobs.config import load_job

    (tmp_path / "golden.json").write_text("{}")
    job = tmp_path / "job.yaml"
    job.write_text("datasets:\n  d: {kind: data, files: [x.root], era: 2018, lumi_mask: golden.json}\n"
                   "  mc: {kind: background, files: [y.root], era: 2018}\n")
    cfg = load_job(job)
    assert cfg.datasets["d"].era == "2018"
    pc = cfg.processor_config({"d": DatasetInfo(kind="data"), "mc": DatasetInfo(kind="background", xsec=1, sumw=1)})
    assert pc.data_quality.lumi_masks == {"d": str(tmp_path / "golden.json")}
    assert pc.data_quality.eras == {"d": "2018", "mc": "2018"}
    job.write_text("datasets:\n  mc: {kind: background, files: [y.root], lumi_mask: golden.json}\n")
    with pytest.raises(ConfigError, match=r"datasets\.mc\.lumi_mask"):
        load_job(job)
    job.write_text("datasets:\n  d: {kind: data, files: [x.root], era: 1999, lumi_mask: golden.json}\n")
    with pytest.raises(ConfigError, match=r"era '1999' has no trigger paths"):
        load_job(job)


# -- good vertex -------------------------------------------------------------------------------
def _good(v) -> bool:
    return bool(v["isValidVtx"] and v["ndof"] > 4 and abs(v["z"]) <= 24 and np.hypot(v["x"], v["y"]) <= 2)


def test_good_vertex_against_a_loop(tmp_path, toy_models):
    rng = np.random.default_rng(3)
    vertices = []
    for _ in range(60):
        vertices.append([{"x": float(rng.choice([0.0, 0.0, 1.5, 2.5])), "y": float(rng.choice([0.0, 1.5])),
                          "z": float(rng.choice([0.0, 23.0, 25.0, -30.0])),
                          "ndof": float(rng.choice([3.0, 4.0, 5.0, 9.0])),
                          "isValidVtx": bool(rng.random() < 0.8)} for _ in range(rng.integers(0, 3))])
    expected = np.array([any(_good(v) for v in vs) for vs in vertices])
    assert 5 < expected.sum() < 55
    path = _write(tmp_path / "pv.root", [_event()] * len(vertices), vertices=vertices)
    out = _run(path, toy_models)
    _assert_rows(out, {"good_vertex": int(expected.sum()), "deta": int(expected.sum())})
    ev = NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="eager").events()
    assert DQ.good_vertex(ev, "ScoutingPrimaryVertex", {}, DQ.VertexSettings()).tolist() == expected.tolist()
    two = np.array([sum(_good(v) for v in vs) >= 2 for vs in vertices])
    assert DQ.good_vertex(ev, "ScoutingPrimaryVertex", {}, DQ.VertexSettings(min_good=2)).tolist() == two.tolist()
    out = _run(path, toy_models, vertex={"enabled": False})
    _assert_rows(out, {"good_vertex": len(vertices)})


def test_no_vertices_data_refused(tmp_path, toy_models):
    path = _write(tmp_path / "novtx.root", [_event()] * 2, bits={"DST_HT410_PFScouting": np.ones(2, bool)})
    with pytest.raises(MissingBranchError, match=r"novtx\.root.*ScoutingPrimaryVertex"):
        _run(path, toy_models, kind="data", era="2018")
    assert _run(path, toy_models, kind="data", era="2018", vertex={"enabled": False})["cutflow"]["d"]["raw"][-1] == 2


# -- HEM ---------------------------------------------------------------------------------------
def test_hem_veto_data_runs_and_mc_weight(tmp_path, toy_models):
    in_hem = [(40.0, -1.6, -1.0, 22, -1)]  # a 40 GeV AK4 jet in the window, far from J0 and J1
    events = [_event(-2.0, -1.2), _event(-2.0, -1.2), _event(0.0, 0.0), _event(0.0, 0.0, extra=in_hem)]
    run = np.array([319076, 319077, 319077, 319500])
    s = DQ.HEMSettings()
    jets = ak.Array({"pt": [[P, P], [P, 25.0]], "eta": [[-2.0, 0.0], [0.0, -2.0]], "phi": [[-1.2, 0.0], [0.0, -1.2]]})
    assert DQ.hem_jets(jets, s).tolist() == [True, False]  # the second's jet in the window is below 30 GeV
    vtx = [[{"x": 0.0, "y": 0.0, "z": 0.0, "ndof": 9.0, "isValidVtx": True}]] * 4
    path = _write(tmp_path / "hem.root", events, run=run, bits={"DST_HT410_PFScouting": np.ones(4, bool)},
                  vertices=vtx)
    # data 2018: events 1 (run 319077, J0 in HEM) and 3 (a 40 GeV AK4 jet in HEM) vetoed; event 0 is before the failure
    out = _run(path, toy_models, kind="data", era="2018")
    _assert_rows(out, {"hem_veto": 2, "deta": 2})
    assert _rows(_run(path, toy_models, kind="data", era="2017"))["hem_veto"] == 4  # another era: no veto
    # simulation: the affected events (0, 1, 3) weighted by 1 - f; or dropped
    out = _run(path, toy_models, era="2018")
    f = DQ.HEMSettings().mc_affected_fraction
    assert _rows(out)["hem_veto"] == 4 and out["data_quality"]["d"]["hem_weighted"] == 3
    assert np.isclose(_rows(out, "weighted")["deta"], 3 * (1 - f) + 1, rtol=1e-12)
    out = _run(path, toy_models, era="2018", hem={"mc": "drop"})
    _assert_rows(out, {"hem_veto": 1})
    # in batches of 3 events: the same rows, weights and counters
    whole, parts = _run(path, toy_models, era="2018"), _run(path, toy_models, era="2018", batch_events=3)
    assert np.array_equal(whole["cutflow"]["d"]["raw"], parts["cutflow"]["d"]["raw"])
    assert np.array_equal(whole["cutflow"]["d"]["weighted"], parts["cutflow"]["d"]["weighted"])
    assert whole["data_quality"] == parts["data_quality"]


# -- phi spike ---------------------------------------------------------------------------------
def test_phi_spike_map(tmp_path, toy_models):
    cells = np.array([[0.5, 1.0], [-1.0, 3.1]])
    assert DQ.phi_spike_veto(np.array([0.5, 0.52, 0.7, -1.0]), np.array([1.0, 1.03, 1.0, -3.12]), cells,
                             0.01).tolist() == [True, True, False, True]  # the last across phi = pi
    m = tmp_path / "spikes.json"
    m.write_text(json.dumps({"_comment": "hand-made", "2018": {"r2": 0.01, "cells": cells.tolist()},
                             "2017": {"r2": 0.01, "cells": []}}))
    # J0 of event 1 on the first cell; J1 of event 2 ((0.0, 1.0) + pi = -2.14) on no cell; J1 of event 3 on the second
    events = [_event(0.0, 0.0), _event(0.5, 1.0), _event(-1.0, 1.0), _event(-1.0, 3.1 - np.pi)]
    path = _write(tmp_path / "spike.root", events)
    _assert_rows(_run(path, toy_models, era="2018", phi_spike={"map": str(m)}), {"phi_spike": 2})
    _assert_rows(_run(path, toy_models, era="2018", phi_spike={"map": str(m), "n_jets": 1}), {"phi_spike": 3})
    _assert_rows(_run(path, toy_models, era="2017", phi_spike={"map": str(m)}), {"phi_spike": 4})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"2018": {"cells": [[0, 0]]}}))
    with pytest.raises(ConfigError, match=r"bad\.json: era '2018'"):
        DQ.load_phi_spike_map(str(bad))


# -- jet ID ------------------------------------------------------------------------------------
def test_jet_fractions_by_hand():
    cons = ak.Array([[{"pt": 10.0, "eta": 0.0, "mass": 0.0, "pdgId": 211},
                      {"pt": 5.0, "eta": 1.0, "mass": 0.0, "pdgId": 22},
                      {"pt": 2.0, "eta": 0.0, "mass": 0.5, "pdgId": 130},
                      {"pt": 3.0, "eta": 0.0, "mass": 0.0, "pdgId": -13}]])
    e = np.array([10.0, 5.0 * np.cosh(1.0), np.hypot(2.0, 0.5), 3.0])
    f = DQ.jet_fractions(cons)
    np.testing.assert_allclose([f[k][0] for k in ("chf", "nemf", "nhf", "muf", "cef")],
                               [e[0] / e.sum(), e[1] / e.sum(), e[2] / e.sum(), e[3] / e.sum(), 0.0], rtol=1e-12)
    assert f["chm"][0] == 2 and f["n"][0] == 4


def test_jet_id_row(tmp_path, toy_models):
    soft = [(20.0, 0.05, 0.05, 130, -1), (20.0, 0.05, 0.05 + np.pi, 130, -1)]  # two constituents per jet, NHF small
    good = _event(extra=soft)
    photons = _event(pdg=(22, 22), extra=soft)  # photon jets: NEMF > 0.9, no charged constituent
    one = _event()  # a single constituent per jet: fails n > 1
    path = _write(tmp_path / "jetid.root", [good, photons, one, good])
    _assert_rows(_run(path, toy_models), {"jet_id": 4})  # off by default
    out = _run(path, toy_models, jet_id={"enabled": True})
    _assert_rows(out, {"jet_id": 2, "deta": 2})


# -- CHS ---------------------------------------------------------------------------------------
def test_chs_drops_pileup_candidates_as_a_file_without_them(tmp_path, toy_models):
    pu = [(300.0, 0.3, np.pi - 0.3, 211, 1), (80.0, -0.5, 2.5, 211, 2),  # pileup: vertices 1 and 2
          (40.0, 0.3, -2.0, 211, 0), (30.0, 0.2, 2.0, 22, -1)]  # the hard-scatter vertex; a neutral
    with_pu = [_event(extra=pu), _event(0.4, 0.7, extra=pu[:2]), _event(extra=pu[2:])]
    without = [_event(extra=[c for c in e["cands"][2:] if c[4] <= 0]) for e in with_pu]
    for e, src in zip(without, with_pu):
        e["met_phi"] = src["met_phi"]
        e["cands"][:2] = src["cands"][:2]
    a = _run(_write(tmp_path / "pu.root", with_pu), toy_models)
    b = _run(_write(tmp_path / "nopu.root", without), toy_models)
    assert a["data_quality"]["d"]["chs_removed"] == 4 and b["data_quality"]["d"]["chs_removed"] == 0
    for name in a["hists"]:
        np.testing.assert_array_equal(a["hists"][name].values(flow=True), b["hists"][name].values(flow=True))
    assert np.array_equal(a["cutflow"]["d"]["raw"], b["cutflow"]["d"]["raw"])
    # without CHS the pileup jet (300 GeV) changes the event: its jets and M_T differ
    c = _run(str(tmp_path / "pu.root"), toy_models, chs={"enabled": False})
    assert c["data_quality"]["d"]["chs_removed"] == 0
    assert not all(np.array_equal(a["hists"][n].values(flow=True), c["hists"][n].values(flow=True)) for n in a["hists"])
    d = _run(str(tmp_path / "pu.root"), toy_models, branch_map=BranchMap(pf_vertex=None))
    assert d["data_quality"]["d"]["chs_removed"] == 0
    # the candidate selection itself
    pf = ak.Array({"pt": [[1.0, np.nan, 2.0, 3.0]], "eta": [[0.0] * 4], "phi": [[0.0] * 4], "mass": [[0.0] * 4]})
    kept, nonfinite, chs = DQ.select_candidates(pf, ak.Array([[0, 1, 2, -1]]))
    assert kept.pt.tolist() == [[1.0, 3.0]] and nonfinite == 1 and chs == 1


def test_settings_validation():
    with pytest.raises(ValueError, match="without the HLT_ prefix"):
        DQ.TriggerSettings(paths={"2018": ["HLT_PFHT1050_v1"]})
    assert DQ.DataQualitySettings(era=2018).era == "2018"
    with pytest.raises(ValueError, match="era '2030'"):
        DQ.DataQualitySettings(era="2030")
    assert DQ.TriggerSettings().paths_of(None)[0] == "DST_HT410_PFScouting"


def test_trigger_scale_factor_weight(tmp_path, toy_models):
    """Simulation with ``trigger.scale_factor``: each event weighted by the payload's trigger_ht_sf at
    its H_T (two jets of p and p - 10 GeV: H_T = 2 p - 10), evaluated by correctionlib itself."""
    from svjscout.processors import corrections as C

    p = 230.0  # H_T = 450 GeV, on the turn-on (M_T = 800 GeV, R_T = 0.6: every cut passed)
    path = _write(tmp_path / "sf.root", [_event(p=p)] * 3)
    cfg = ProcessorConfig()
    cset = C.load_corrections(cfg.systematics.payload, era=C.load_era(cfg.corrections))
    sf = float(cset["trigger_ht_sf"].evaluate(2 * p - 10, "nom"))
    assert 0.5 < sf < 1.0
    out = _run(path, toy_models, trigger={"scale_factor": True})
    np.testing.assert_allclose(_rows(out, "weighted")["deta"], 3 * sf, rtol=1e-6)
    assert _rows(_run(path, toy_models), "weighted")["deta"] == 3.0  # off by default
    path_d = _write(tmp_path / "sf_data.root", [_event(p=p)] * 3, bits={"DST_HT410_PFScouting": np.ones(3, bool)})
    out = _run(path_d, toy_models, kind="data", era="2018", trigger={"scale_factor": True}, vertex={"enabled": False})
    assert _rows(out, "weighted")["deta"] == 3.0  # never on data
