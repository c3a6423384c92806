"""The schema reads the embedded sample; missing branches are named; the mapping renames."""

import pytest
from coffea.nanoevents import NanoEventsFactory
from conftest import embedded_file, rewrite_file

from svjscout.core.exceptions import InputFileError, MissingBranchError
from svjscout.processors.schema import BranchMap, SVJScoutingSchema, check_file


def _events(path):
    return NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="eager").events()


def test_reads_embedded_sample():
    path = embedded_file("svj_mz2000_rinv0.3.root")
    events = _events(path)
    bmap = BranchMap()
    pf = bmap.pf_candidates(events)
    met, phi = bmap.met(events)
    assert len(events) == check_file(path, bmap, is_mc=True) > 100
    assert set(pf.fields) == {"pt", "eta", "phi", "mass", "pdgId", "charge"}
    assert (met >= 150).all()  # the embedded sample is skimmed at PF MET > 150 GeV
    assert bmap.event_ids(events).shape == (len(events), 3)


def test_missing_branch_is_named(tmp_path):
    path = rewrite_file(embedded_file("ttbar.root"), tmp_path / "no_met_phi.root", drop=("ScoutingMET_phi",), n=20)
    with pytest.raises(MissingBranchError, match=r"no_met_phi.root.*'ScoutingMET_phi'"):
        check_file(path, BranchMap(), is_mc=True)
    events = _events(path)
    with pytest.raises(MissingBranchError, match="ScoutingMET_phi"):
        BranchMap().met(events)


def test_mapping_reads_renamed_branches(tmp_path):
    src = embedded_file("ttbar.root")
    path = rewrite_file(src, tmp_path / "run2.root", n=30,
                        rename={"ScoutingPFCandidate": "PFcand", "ScoutingMET_pt": "MET_pt",
                                "ScoutingMET_phi": "MET_phi"})
    bmap = BranchMap(pf_collection="PFcand", met_pt="MET_pt", met_phi="MET_phi")
    assert check_file(path, bmap, is_mc=True) == 30
    with pytest.raises(MissingBranchError, match=r"nScoutingPFCandidate.*ScoutingMET_pt"):
        check_file(path, BranchMap(), is_mc=True)
    a, b = _events(path), _events(src)[:30]
    assert (bmap.met(a)[0] == BranchMap().met(b)[0]).all()
    assert bmap.pf_candidates(a).pt.tolist() == BranchMap().pf_candidates(b).pt.tolist()


def test_corrupt_and_treeless_files(tmp_path):
    src = embedded_file("ttbar.root")
    trunc = tmp_path / "truncated.root"
    trunc.write_bytes(open(src, "rb").read()[:5000])
    with pytest.raises(InputFileError, match="truncated.root"):
        check_file(str(trunc), BranchMap(), is_mc=True)
    empty = tmp_path / "empty.root"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match="empty.root"):
        check_file(str(empty), BranchMap(), is_mc=True)
    with pytest.raises(InputFileError, match="no tree 'Nope'"):
        check_file(src, BranchMap(tree="Nope"), is_mc=True)
