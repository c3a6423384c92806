"""Schema presets: CMS's scouting layouts (docs/formats.md) read into the same events and outputs.

Each preset is tested on small files written in exactly its layout (tests/scouting_layouts.py:
branch names and types as CMS writes them) holding the embedded sample's events; the processor's
output on them must be identical to its output on the same events in our default layout (CMS's
Run-3 ScoutingNano, which the generator writes).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from coffea.nanoevents import NanoAODSchema, NanoEventsFactory
from conftest import assert_same_output, embedded_file
from scouting_layouts import LAYOUTS, write_layout

from svjscout.core.exceptions import ConfigError, MissingBranchError
from svjscout.jobs.config import load_job
from svjscout.jobs.runner import run_processor
from svjscout.processors.schema import PF_FIELDS, PRESETS, BranchMap, SVJScoutingSchema, check_file

# ttbar: its detector copies (several per parent) are what the layouts without ``parent`` lose
DATASETS = ("svj_mz2000_rinv0.3", "qcd", "ttbar")
REAL = ("scoutingnano_run3", "scoutingnano_old", "run2_svj")
#: the default layout, the reference the others are compared with
REF = "scoutingnano_run3"


@pytest.fixture(scope="module")
def layout_files(tmp_path_factory) -> dict[str, dict[str, str]]:
    """layout -> dataset -> file: the embedded events written in every layout."""
    d = tmp_path_factory.mktemp("layouts")
    return {lay: {ds: write_layout(embedded_file(f"{ds}.root"), d / f"{ds}_{lay}.root", lay) for ds in DATASETS}
            for lay in LAYOUTS}


def _events(path: str, bmap: BranchMap):
    return NanoEventsFactory.from_root({path: bmap.tree}, schemaclass=bmap.schema_class(), mode="eager").events()


def test_presets_and_overrides():
    assert set(PRESETS) >= {"svjscout", *REAL}
    # the default is CMS's current Run-3 ScoutingNano (what the generator writes); svjscout the older layout
    assert BranchMap(preset="scoutingnano_run3").model_dump() == BranchMap().model_dump()
    assert BranchMap(preset="svjscout").pf_collection == "ScoutingParticle"
    run3 = BranchMap(preset="scoutingnano_run3")
    assert run3.pf_collection == "ScoutingPFCandidate" and run3.met_pt == "ScoutingMET_pt"
    run2 = BranchMap(preset="run2_svj", gen_weight="Weight")
    assert (run2.tree, run2.pf_collection, run2.met_pt, run2.met_phi, run2.luminosity_block, run2.gen_weight) == \
           ("mmtree/Events", "PFCands", "ScoutMET_pt", "ScoutMET_phi", "lumSec", "Weight")
    assert run2.preset == "run2_svj" and BranchMap().preset is None
    # the preset is not part of the config digest: the same fields spelt out are the same config
    assert "preset" not in run2.model_dump()


def test_unknown_preset_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r"'cms_nano'.*run2_svj.*scoutingnano_old.*scoutingnano_run3.*svjscout"):
        BranchMap(preset="cms_nano")
    job = tmp_path / "job.yaml"
    job.write_text(f"datasets:\n  qcd: {{kind: background, files: ['{embedded_file('qcd.root')}']}}\n"
                   "schema: {preset: cms_nano}\n")
    with pytest.raises(ConfigError, match="cms_nano"):
        load_job(job)


@pytest.mark.parametrize("layout", [lay for lay in LAYOUTS if lay != REF])
def test_layout_per_event(layout_files, layout):
    """Candidates (all six fields), MET, event ids and weights per event equal the default layout's
    (the ``svjscout`` layout's candidates: the default's after CHS, which that layout has done)."""
    ref_map, bmap = BranchMap(), BranchMap(preset=layout)
    for ds in DATASETS:
        ref, ev = _events(layout_files[REF][ds], ref_map), _events(layout_files[layout][ds], bmap)
        assert len(ev) == len(ref) > 100
        assert check_file(layout_files[layout][ds], bmap, is_mc=True) == len(ref)
        a, b = ref_map.pf_candidates(ref), bmap.pf_candidates(ev)
        if layout == "svjscout":
            chs = ref[ref_map.pf_collection][ref_map.pf_vertex] <= 0
            assert ak.sum(~chs) > 100 * len(ref)  # the source has its charged pileup: a real CHS
            a = a[chs]
        for f in PF_FIELDS:
            assert ak.all(a[f] == b[f]), (layout, ds, f)
        for x, y in zip(ref_map.met(ref), bmap.met(ev)):
            assert np.array_equal(x, y)
        assert np.array_equal(ref_map.event_ids(ref), bmap.event_ids(ev))
        assert np.array_equal(ref_map.gen_weight_of(ref, True), bmap.gen_weight_of(ev, True))


def test_svjscout_preset_refuses_the_current_scoutingparticle(layout_files):
    """Today's ScoutingParticle has no mass or charge: read with the older layout's names (the
    ``svjscout`` preset), the check names the branch."""
    with pytest.raises(MissingBranchError, match="ScoutingParticle_mass"):
        check_file(layout_files["scoutingnano_run3"]["qcd"], BranchMap(preset="svjscout"), is_mc=True)


def test_lumsec_reaches_nanoevents(layout_files, tmp_path):
    """coffea's NanoAOD schema refuses a file whose lumi branch is lumSec; ours aliases it, for the
    preset's name and for any name a job maps (schema_class)."""
    path = layout_files["run2_svj"]["qcd"]
    with pytest.raises(RuntimeError, match="missing event ID fields"):
        NanoEventsFactory.from_root({path: "mmtree/Events"}, schemaclass=NanoAODSchema, mode="eager").events()
    ev = _events(path, BranchMap(preset="run2_svj"))
    assert np.array_equal(ak.to_numpy(ev.luminosityBlock), ak.to_numpy(ev.lumSec))
    # a job's own lumi name: not known to the class, added by the map's schema_class
    spec = dict(LAYOUTS["run2_svj"], ids={**LAYOUTS["run2_svj"]["ids"], "luminosityBlock": ("LS", np.uint32)})
    own = write_layout(embedded_file("qcd.root"), tmp_path / "own.root", "run2_svj", spec=spec)
    bmap = BranchMap(preset="run2_svj", luminosity_block="LS")
    assert bmap.schema_class() is not SVJScoutingSchema
    with pytest.raises(RuntimeError, match="missing event ID fields"):
        NanoEventsFactory.from_root({own: bmap.tree}, schemaclass=SVJScoutingSchema, mode="eager").events()
    ev_own = _events(own, bmap)
    assert np.array_equal(bmap.event_ids(ev_own), BranchMap().event_ids(_events(layout_files[REF]["qcd"],
                                                                                  BranchMap())))


def _job(tmp_path, models, files: dict[str, str], layout: str):
    lines = ["datasets:"] + [f"  {ds}: {{kind: {'signal' if ds.startswith('svj') else 'background'}, files: ['{f}']}}"
                             for ds, f in files.items()]
    lines += ["analysis:", f"  lundnet_model: {models[0]}", f"  twin_model: {models[1]}", "  wp: [0.5, 0.5]",
              "executor: {name: iterative, chunksize: 10000}", f"schema: {{preset: {layout}}}"]
    path = tmp_path / f"job_{layout}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_job(path)


@pytest.fixture(scope="module")
def reference_output(layout_files, toy_models, tmp_path_factory):
    out, _ = run_processor(_job(tmp_path_factory.mktemp("ref"), toy_models, layout_files[REF], REF))
    return out


@pytest.mark.parametrize("layout", [lay for lay in REAL if lay != REF])
def test_processor_output_identical(layout_files, toy_models, reference_output, tmp_path, layout):
    """`svjscout run`'s processing on each layout: the same histograms, cutflows and counts."""
    out, _ = run_processor(_job(tmp_path, toy_models, layout_files[layout], layout))
    assert_same_output(out, reference_output)
    assert out["normalisation"] == reference_output["normalisation"]
    for ds, c in reference_output["counts"].items():
        assert {k: v for k, v in out["counts"][ds].items() if k != "chunks"} == \
               {k: v for k, v in c.items() if k != "chunks"}
    assert sum(reference_output["cutflow"][ds]["raw"][-1] for ds in DATASETS) > 0  # events pass: a real comparison



@pytest.fixture(scope="module")
def embedded_output(toy_models, tmp_path_factory):
    """The processing of the embedded files themselves (our default format, with ``parent``)."""
    files = {ds: embedded_file(f"{ds}.root") for ds in DATASETS}
    out, _ = run_processor(_job(tmp_path_factory.mktemp("emb"), toy_models, files, REF))
    return out


def test_exact_layouts_lose_only_the_parent_correlation(reference_output, embedded_output):
    """The exact CMS layouts have no ``parent``: the histograms' values and the cutflows are the
    embedded files', the variances are not (detector copies of one generated event are counted as
    independent events there; with ``parent`` they are summed per generated event first)."""
    for name, h in embedded_output["hists"].items():
        np.testing.assert_allclose(reference_output["hists"][name].view(flow=True).value,
                                   h.view(flow=True).value, rtol=1e-12, atol=0, err_msg=name)
    for ds in DATASETS:
        assert np.array_equal(reference_output["cutflow"][ds]["raw"], embedded_output["cutflow"][ds]["raw"])
    va = reference_output["hists"]["mt_abcd"].view(flow=True).variance
    vb = embedded_output["hists"]["mt_abcd"].view(flow=True).variance
    assert not np.allclose(va, vb, rtol=1e-6)


@pytest.mark.parametrize("layout", REAL)
def test_layouts_with_parent_identical_to_embedded(toy_models, embedded_output, tmp_path, layout):
    """Our simulation written in a CMS layout with ``parent`` kept: everything the embedded files give,
    variances and parent records included."""
    files = {ds: write_layout(embedded_file(f"{ds}.root"), tmp_path / f"{ds}.root", layout, keep_parent=True)
             for ds in DATASETS}
    out, _ = run_processor(_job(tmp_path, toy_models, files, layout))
    assert_same_output(out, embedded_output)
    assert out["normalisation"] == embedded_output["normalisation"]
    assert out["parent_errors"] == embedded_output["parent_errors"]
    for ds, rec in embedded_output["parent_fills"].items():
        for k in ("key", "bin"):
            assert np.array_equal(out["parent_fills"][ds][k], rec[k]), (layout, ds, k)
