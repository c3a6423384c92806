"""Files written as CMS writes ScoutingNano (benchmarks/write_cms_like.py: LZMA 9, NanoAOD clusters,
1,260 branches): the processor gives the same histograms and cutflows on such a copy as on the
original events, and reads only its own branches (NanoEvents' access log), none of the added
collections, and not the PF candidates' pdgId and charge (issue 33, item 2).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from coffea.nanoevents import NanoEventsFactory
from conftest import assert_same_output, benchmark_module, embedded_file

from svjscout.jobs.config import load_job
from svjscout.jobs.runner import RunReport, preflight, run_processor
from svjscout.processors.processor import SVJProcessor
from svjscout.processors.schema import SVJScoutingSchema
from svjscout.samples.skim import write_subset

ROOT = Path(__file__).resolve().parent.parent
N = 40


def _writer():
    return benchmark_module("write_cms_like")


def _job(tmp_path, toy_models, files: dict[str, str], tag: str):
    job = tmp_path / f"job_{tag}.yaml"
    kinds = {"qcd": "background", "svj_mz2000_rinv0.3": "signal"}
    lines = "".join(f"  {ds}: {{kind: {kinds[ds]}, files: ['{p}']}}\n" for ds, p in files.items())
    job.write_text("datasets:\n" + lines
                   + f"analysis:\n  lundnet_model: {toy_models[0]}\n  twin_model: {toy_models[1]}\n  wp: [0.5, 0.5]\n"
                   "  systematics: {enabled: true, payload: 'shipped:illustrative_run2'}\n"
                   "executor: {name: iterative, chunksize: 10000}\ndatacards: {allow_unbacked: true}\n")
    return load_job(job)


@pytest.fixture(scope="module")
def cms_like(tmp_path_factory):
    """The first 40 events of two embedded files, as they are (ZSTD, our branches) and as CMS writes them."""
    d = tmp_path_factory.mktemp("cms_like")
    w = _writer()
    plain, cms = {}, {}
    for ds in ("qcd", "svj_mz2000_rinv0.3"):
        src = embedded_file(f"{ds}.root")
        plain[ds] = str(d / f"{ds}_plain.root")
        write_subset(src, plain[ds], lambda arrays: np.arange(len(arrays)) < N, {"test": "first events"})
        cms[ds] = str(d / f"{ds}.root")
        info = w.rewrite(src, cms[ds], compression="LZMA:9", cluster_events=15, entry_stop=N)
        assert info["events"] == N and info["clusters"] == 3 and info["branches"] > 1200
    return plain, cms


def test_file_is_cms_like(cms_like):
    plain, cms = cms_like
    with uproot.open(cms["qcd"]) as f:
        assert f.file.compression == uproot.LZMA(9)
        t = f["Events"]
        # one basket per branch per cluster
        for b in ("ScoutingPFCandidate_pt", "ScoutingParticle_pt", "ScoutingMET_pt", "HLT_Path000_v1"):
            assert t[b].num_baskets == 3
        assert sum(k.startswith("HLT_") for k in t.keys()) >= 650 and sum(k.startswith("L1_") for k in t.keys()) >= 450
        for coll in ("ScoutingPFJet", "ScoutingPrimaryVertex", "ScoutingTrack", "ScoutingMuon", "ScoutingElectron",
                     "ScoutingPhoton"):
            assert f"n{coll}" in t.keys()
        a = t.arrays(["ScoutingPFCandidate_charge", "ScoutingParticle_trk_pt", "ScoutingPFCandidate_pt",
                      "ScoutingParticle_pt", "ScoutingPFJet_pt", "ScoutingPrimaryVertex_z"])
        assert not any(k.startswith("ScoutingParticle_") and k.endswith(("_mass", "_charge")) for k in t.keys())
    charged = ak.to_numpy(ak.flatten(a.ScoutingPFCandidate_charge)) != 0
    trk = ak.to_numpy(ak.flatten(a.ScoutingParticle_trk_pt))
    pt = ak.to_numpy(ak.flatten(a.ScoutingPFCandidate_pt))
    assert np.array_equal(pt, ak.to_numpy(ak.flatten(a.ScoutingParticle_pt)))  # one entry per candidate
    assert np.all(trk[~charged] == 0) and np.all(np.abs(trk[charged] / pt[charged] - 1) < 0.1)
    with uproot.open(plain["qcd"]) as g:  # the input's own vertices, unchanged
        assert ak.to_list(g["Events"]["ScoutingPrimaryVertex_z"].array()) == ak.to_list(a.ScoutingPrimaryVertex_z)
    assert all(len(j) > 0 for j in a.ScoutingPFJet_pt)  # every (triggered) event has jets above 20 GeV


@pytest.mark.slow
def test_same_output_and_only_own_branches(cms_like, tmp_path, toy_models):
    plain, cms = cms_like
    a, _ = run_processor(_job(tmp_path, toy_models, plain, "plain"))
    b, _ = run_processor(_job(tmp_path, toy_models, cms, "cms"))
    assert_same_output(a, b)
    assert b["cutflow"]["qcd"]["raw"][-1] > 0  # some events pass every cut (qcd is preselected)

    cfg = _job(tmp_path, toy_models, cms, "log")
    proc = SVJProcessor(cfg.processor_config(preflight(cfg, RunReport())))
    listed = set(cfg.schema_map.processor_branches())
    for ds, path in cms.items():
        outs = []
        for only in (None, cfg.schema_map.processor_branches()):  # NanoEvents over every branch / the list
            log: list = []
            ev = NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="virtual",
                                             access_log=log, metadata={"dataset": ds, "filename": path},
                                             iteritems_options={"filter_name": only} if only else {}).events()
            outs.append(proc.process(ev))
            read = {x.branch for x in log}
            pf = {f"ScoutingPFCandidate_{k}" for k in ("pt", "eta", "phi", "mass", "vertexIndex")}
            pf.add("nScoutingPFCandidate")
            assert pf <= read and "ScoutingPFCandidate_pdgId" not in read and "ScoutingPFCandidate_charge" not in read
            assert not any(b.startswith("ScoutingParticle_") for b in read)  # the track view is not read
            # nothing read that the runner's list (names and globs such as DST_*) would hide
            hidden = sorted(b for b in read if not any(fnmatch.fnmatchcase(b, g) for g in listed))
            assert not hidden, hidden
            assert "DST_HT410_PFScouting" in read  # the trigger decision is read from the file (issue 31)
        if ds.startswith("svj"):
            assert "PSWeight" in read and "Pileup_nTrueInt" in read and "xy_mt_syst" in outs[0]["hists"]
        assert_same_output(outs[0], outs[1])
