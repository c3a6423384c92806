"""Systematic variations in the processor (svjscout.processors.variations)."""

import awkward as ak
import numpy as np
import pytest
from conftest import assert_same_output, with_executor

from svjscout.jobs.runner import run_processor
from svjscout.processors.selection import Cuts
from svjscout.processors.variations import lund_cache, shifted_lund, vary_event


def _event(jets, ak4=None):
    """One event (a list of (pt, eta, phi, mass) jets) as the processor's jagged records."""
    rec = ak.Array([[{"pt": p, "eta": e, "phi": f, "mass": m} for p, e, f, m in jets]])
    return rec, (rec if ak4 is None else ak4)


def test_met_propagation_has_the_right_sign():
    """Jets scaled up by 10 %: the visible pT grows along the jets, MET (minus the visible) shrinks
    there. Jet 500 GeV at phi = 0 and 400 GeV at phi = pi, MET 200 GeV at phi = pi/2."""
    ak8, ak4 = _event([(500.0, 0.0, 0.0, 50.0), (400.0, 0.5, np.pi, 40.0)])
    f = ak.Array([[1.1, 1.1]])
    feats, _, _, _ = vary_event(f, ak8, ak.ones_like(ak4.pt), ak4, np.array([200.0]), np.array([np.pi / 2]), None,
                                Cuts(), np.array([True]))
    # MET_vec' = (0, 200) - 0.1 * [(500, 0) + (-400, 0)] = (-10, 200)
    assert feats["met"][0] == pytest.approx(np.hypot(10.0, 200.0))
    feats_dn, _, _, _ = vary_event(ak.Array([[0.9, 0.9]]), ak8, ak.ones_like(ak4.pt), ak4, np.array([200.0]),
                                   np.array([np.pi / 2]), None, Cuts(), np.array([True]))
    assert feats_dn["met"][0] == pytest.approx(np.hypot(10.0, 200.0))  # (+10, 200)
    shift, _, _, _ = vary_event(ak.Array([[1.0, 1.0]]), ak8, ak.ones_like(ak4.pt), ak4, np.array([200.0]),
                                np.array([np.pi / 2]), (np.array([-30.0]), np.array([0.0])), Cuts(), np.array([True]))
    assert shift["met"][0] == pytest.approx(np.hypot(30.0, 200.0))


def test_leading_jets_reorder_under_variation():
    ak8, ak4 = _event([(500.0, 0.0, 0.0, 50.0), (480.0, 0.5, 2.0, 40.0), (300.0, -1.0, 4.0, 30.0)])
    _, _, (i0, i1), (f0, f1) = vary_event(ak.Array([[1.0, 1.1, 1.0]]), ak8, ak.ones_like(ak4.pt), ak4,
                                          np.array([300.0]), np.array([1.0]), None, Cuts(), np.array([True]))
    assert (i0[0], i1[0]) == (1, 0) and (f0[0], f1[0]) == (1.1, 1.0)


def test_lund_shift_equals_reclustering_scaled_constituents():
    """Scaling every constituent by f keeps the C-A history: ln kt and ln m shift by ln f. Checked
    against the Lund declustering of the scaled constituents themselves."""
    from svjscout.processors.lund import pad_lund, primary_lund_declusterings

    rng = np.random.default_rng(4)
    n = 25
    cons = ak.Array([[{"pt": float(p), "eta": float(e), "phi": float(f), "mass": 0.0}
                      for p, e, f in zip(rng.exponential(20, n) + 1, rng.normal(0, 0.3, n), rng.normal(1, 0.3, n))]])
    jets = ak.zip({"pt": ak.Array([[500.0]]), "constituents": ak.Array([cons.tolist()])}, depth_limit=2)
    lookup, lund, mask = lund_cache(jets, np.array([0]), np.array([0]), 32)
    arr, m = shifted_lund(lookup, lund, mask, np.array([0]), np.array([0]), np.array([1.07]))
    scaled = ak.zip({"pt": cons.pt * 1.07, "eta": cons.eta, "phi": cons.phi, "mass": cons.mass})
    ref, mref = pad_lund(primary_lund_declusterings(scaled), 32)
    assert np.array_equal(m, mref)
    np.testing.assert_allclose(arr[m], np.asarray(ref)[mref], rtol=2e-5, atol=2e-5)


@pytest.fixture(scope="module")
def syst_job(tmp_path_factory, toy_models):
    from conftest import embedded_file

    from svjscout.jobs.config import load_job

    job = tmp_path_factory.mktemp("syst") / "job.yaml"
    job.write_text(
        "datasets:\n"
        f"  svj_mz2000_rinv0.3: {{kind: signal, files: ['{embedded_file('svj_mz2000_rinv0.3.root')}']}}\n"
        f"  ttbar: {{kind: background, files: ['{embedded_file('ttbar.root')}']}}\n"
        "analysis:\n"
        f"  lundnet_model: {toy_models[0]}\n"
        f"  twin_model: {toy_models[1]}\n"
        "  wp: [0.5, 0.5]\n"
        "  systematics: {enabled: true}\n"
        "executor: {name: iterative, chunksize: 10000}\n"
    )
    return load_job(job)


def test_nominal_is_unchanged_and_variations_differ(syst_job):
    on, _ = run_processor(syst_job)
    off_cfg = syst_job.model_copy(update={"analysis": syst_job.analysis.model_copy(
        update={"systematics": syst_job.analysis.systematics.model_copy(update={"enabled": False})})})
    off, _ = run_processor(off_cfg)
    syst = on["hists"].pop("xy_mt_syst")
    assert_same_output(on, off)  # the nominal is bit-identical with the variations on
    assert "xy_mt_syst" not in off["hists"]
    assert list(syst.axes["dataset"]) == ["svj_mz2000_rinv0.3"]
    nominal = off["hists"]["xy_mt"][{"dataset": "svj_mz2000_rinv0.3"}].sum().value
    for name in ("jes_up", "jes_down", "jer_up", "unclustered_up", "trigger_up", "trigger_down"):
        total = syst[{"dataset": "svj_mz2000_rinv0.3", "syst": name}].sum().value
        assert total > 0 and total == pytest.approx(nominal, rel=0.5), name
    up = syst[{"dataset": "svj_mz2000_rinv0.3", "syst": "jes_up"}].sum().value
    down = syst[{"dataset": "svj_mz2000_rinv0.3", "syst": "jes_down"}].sum().value
    assert up != down
    # the embedded signal carries PSWeight and Pileup_nTrueInt: nothing skipped, and the weight
    # variations move the yield (ISR/FSR up and down on opposite sides or at least different)
    counts = on["counts"]["svj_mz2000_rinv0.3"]
    assert not any(k.startswith("syst_skipped_") and v for k, v in counts.items()), counts
    for src in ("isr", "fsr", "pileup"):
        up_w = syst[{"dataset": "svj_mz2000_rinv0.3", "syst": f"{src}_up"}].sum().value
        down_w = syst[{"dataset": "svj_mz2000_rinv0.3", "syst": f"{src}_down"}].sum().value
        assert up_w > 0 and down_w > 0 and up_w != down_w, src


def test_variations_identical_for_any_chunking(syst_job):
    """JER's random numbers are keyed on (run, lumi, event, jet): the same for any chunking. The
    kinematic variations fill unit weights (bit-identical); the weight variations' non-integer
    weights are summed in another order per chunking (equal to 1e-12)."""
    a, _ = run_processor(syst_job)
    b, _ = run_processor(with_executor(syst_job, chunksize=97))
    sa, sb = a["hists"].pop("xy_mt_syst"), b["hists"].pop("xy_mt_syst")
    assert_same_output(a, b)
    for name in sa.axes["syst"]:
        va, vb = sa[{"syst": name}].view(flow=True), sb[{"syst": name}].view(flow=True)
        if name.split("_")[0] in ("jes", "jer", "unclustered"):
            assert np.array_equal(va.value, vb.value), name
        np.testing.assert_allclose(va.value, vb.value, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.slow
def test_weight_variations_from_generated_branches(tmp_path, toy_models):
    """A generated signal file with pileup carries PSWeight and Pileup_nTrueInt: the ISR/FSR and
    pileup variations are filled, and the ISR-up total is the nominal reweighted by PSWeight[0]."""
    import subprocess
    import sys

    import uproot

    from svjscout.jobs.config import load_job

    f = tmp_path / "svj.root"
    subprocess.run([sys.executable, "-m", "svjscout.jobs.cli", "generate", "svj", "-n", "300", "--seed", "3",
                    "--pileup", "2", "-o", str(f), "--no-progress"], check=True, capture_output=True, timeout=600)
    job = tmp_path / "job.yaml"
    job.write_text(f"datasets:\n  svj: {{kind: signal, files: ['{f}']}}\nanalysis:\n  lundnet_model: {toy_models[0]}\n"
                   f"  twin_model: {toy_models[1]}\n  wp: [0.5, 0.5]\n  systematics: {{enabled: true}}\n"
                   "  cuts: {mt_min: 0, rt_min: 0, dphi_min_max: 4, deta_max: 10}\n"
                   "executor: {name: iterative, chunksize: 10000}\n")
    out, _ = run_processor(load_job(job))
    counts = out["counts"]["svj"]
    assert not any(k.startswith("syst_skipped") for k in counts if counts[k])
    syst = out["hists"]["xy_mt_syst"]
    nominal = out["hists"]["xy_mt"][{"dataset": "svj"}].sum().value
    assert nominal > 0
    for name in ("isr_up", "isr_down", "fsr_up", "fsr_down", "pileup_up", "pileup_down"):
        assert syst[{"dataset": "svj", "syst": name}].sum().value > 0, name
    # the generated weights' mean is ~1: the ISR-up total is within 30 % of the nominal
    with uproot.open(f) as g:
        ps = g["Events"]["PSWeight"].array(library="np")
    assert len(ps) == 300 and all(len(p) == 4 for p in ps)
    assert syst[{"dataset": "svj", "syst": "isr_up"}].sum().value == pytest.approx(nominal, rel=0.3)
