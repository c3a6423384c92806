"""The coffea processor end to end on the embedded sample: determinism, executors, skim, bad input."""

import awkward as ak
import numpy as np
import pytest
from conftest import assert_same_output, embedded_file, rewrite_file, with_executor

from svjscout.core.exceptions import InputFileError, MissingBranchError, ModelMismatchError
from svjscout.jobs.config import load_job
from svjscout.jobs.runner import run_processor, save_outputs
from svjscout.processors.selection import CUT_ORDER


@pytest.mark.slow
def test_one_chunk_vs_many_chunks_and_dask(small_job):
    one, _ = run_processor(small_job)
    many, _ = run_processor(with_executor(small_job, chunksize=97))
    assert_same_output(one, many)
    assert sum(c["chunks"] for c in many["counts"].values()) > sum(c["chunks"] for c in one["counts"].values())
    dask2, _ = run_processor(with_executor(small_job, name="dask", workers=2, chunksize=150))
    assert_same_output(one, dask2)
    # something was actually selected and filled, in every region of the SP for the QCD sample
    h = one["hists"]["mt_abcd"]
    assert h[{"dataset": "qcd"}].sum().value > 0
    assert h[{"dataset": "svj_mz2000_rinv0.3"}].sum().value > 0


def test_histograms_match_cutflow_and_normalisation(small_job):
    out, _ = run_processor(small_job)
    h = out["hists"]["mt_abcd"]
    for ds, info in out["datasets"].items():
        raw_final = out["cutflow"][ds]["raw"][-1]
        weighted_final = out["cutflow"][ds]["weighted"][-1]
        norm = info["xsec"] * small_job.analysis.lumi / info["sumw"]
        filled = h[{"dataset": ds}].sum()
        assert filled.value == pytest.approx(weighted_final, rel=1e-12)
        assert len(out["cutflow"][ds]["raw"]) == len(CUT_ORDER) + 1
        if ds.startswith("svj"):  # signal: genWeight = 1, one detector pass per event
            assert filled.value == pytest.approx(raw_final * norm, rel=1e-12)
            assert filled.variance == pytest.approx(raw_final * norm**2, rel=1e-12)
    # QCD (pT-hat biased, 10 detector copies): the sum of the file's selected genWeight, read with uproot
    import uproot

    with uproot.open(embedded_file("qcd.root")) as f:
        gw = f["Events"]["genWeight"].array(library="np").astype(np.float64)
    info = out["datasets"]["qcd"]
    norm = info["xsec"] * small_job.analysis.lumi / info["sumw"]
    assert out["cutflow"]["qcd"]["weighted"][0] == pytest.approx(gw.sum() * norm, rel=1e-9)


def test_skim_columns(small_job, tmp_path):
    out, _ = run_processor(small_job, skim_dir=str(tmp_path / "skim"))
    table = ak.from_parquet(str(tmp_path / "skim" / "svj_mz2000_rinv0.3"))
    assert len(table) == out["cutflow"]["svj_mz2000_rinv0.3"]["raw"][-1] > 0
    for col in ("met", "rt", "mt", "deta", "weight", "label", "lund_j0", "lund_j0_mask", "lund_j1", "event"):
        assert col in table.fields
    lund = ak.to_numpy(table["lund_j0"])
    assert lund.shape[1:] == (small_job.analysis.lund_max_len, 5)
    assert ak.all(table["label"] == 1) and ak.all(table["rt"] > 0.24) and ak.all(table["mt"] > 650)


def test_model_with_other_features_is_refused(small_job, tmp_path):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from conftest import _linear_sigmoid_model

    from svjscout.processors.features import EVENT_FEATURES

    wrong = list(EVENT_FEATURES[::-1])
    bad = _linear_sigmoid_model(tmp_path / "twin_bad.onnx", None, None, wrong, "twin")
    cfg = small_job.model_copy(update={"analysis": small_job.analysis.model_copy(update={"twin_model": bad})})
    with pytest.raises(Exception) as info:
        run_processor(cfg)
    assert "features" in str(info.value) and "twin_bad.onnx" in str(info.value)
    assert isinstance(info.value, ModelMismatchError) or "ModelMismatchError" in str(info.value)


def _job_with_files(tmp_path, files, skip=False, models=None, executor="iterative"):
    lines = ["datasets:", "  ttbar:", "    kind: background", "    files:"] + [f"      - {f}" for f in files]
    lines += ["analysis:", f"  lundnet_model: {models[0]}", f"  twin_model: {models[1]}",
              f"executor: {{name: {executor}, workers: 2, chunksize: 200, skip_bad_files: {str(skip).lower()}}}"]
    job = tmp_path / "job.yaml"
    job.write_text("\n".join(lines) + "\n")
    return load_job(job)


@pytest.mark.slow
def test_bad_files_error_or_counted_skip(tmp_path, toy_models):
    good = embedded_file("ttbar.root")
    trunc = tmp_path / "truncated.root"
    trunc.write_bytes(open(good, "rb").read()[:4000])
    nobranch = rewrite_file(good, tmp_path / "nobranch.root", drop=("ScoutingMET_pt",), n=10)
    with pytest.raises(InputFileError, match="truncated.root"):
        run_processor(_job_with_files(tmp_path, [good, str(trunc)], models=toy_models))
    with pytest.raises(MissingBranchError, match="nobranch.root.*ScoutingMET_pt"):
        run_processor(_job_with_files(tmp_path, [good, nobranch], models=toy_models))
    out, report = run_processor(_job_with_files(tmp_path, [good, str(trunc), nobranch], skip=True, models=toy_models,
                                                executor="dask"))
    assert sorted(s["file"].rsplit("/", 1)[1] for s in report.skipped) == ["nobranch.root", "truncated.root"]
    ref, _ = run_processor(_job_with_files(tmp_path, [good], models=toy_models))
    assert_same_output(out, ref)


@pytest.mark.slow
def test_nonfinite_inputs_are_counted(tmp_path, toy_models):
    good = embedded_file("ttbar.root")

    def poison(cols, pf):
        met = cols["ScoutingMET_pt"].copy()
        met[:3] = np.nan
        cols["ScoutingMET_pt"] = met
        flat = ak.to_numpy(ak.flatten(pf["pt"])).copy()
        flat[::50] = np.inf
        pf["pt"] = ak.unflatten(flat, ak.num(pf["pt"]))

    bad = rewrite_file(good, tmp_path / "nan.root", modify=poison)
    out, _ = run_processor(_job_with_files(tmp_path, [bad], models=toy_models, executor="dask"))
    counts = out["counts"]["ttbar"]
    assert counts["nonfinite_events"] == 3
    assert counts["nonfinite_candidates"] > 0
    flow = out["cutflow"]["ttbar"]["raw"]
    # NaN MET fails the prefilter's MET bound (rows: all, prefilter, clean, ...); 'clean' then
    # removes nothing more, as no event has a NaN weight
    assert flow[1] <= flow[0] - 3 and flow[2] == flow[1]
    assert np.isfinite(out["hists"]["mt_abcd"].view().value).all()


def test_save_outputs(small_job, tmp_path):
    import uproot

    out, _ = run_processor(small_job)
    paths = save_outputs(out, tmp_path)
    assert all(p.exists() for p in paths)
    with uproot.open(tmp_path / "histograms.root") as f:
        th1 = f["qcd/SP/B"]
        ref = out["hists"]["mt_abcd"][{"dataset": "qcd", "plane": "SP", "region": "B"}]
        assert np.allclose(th1.values(), ref.values())


@pytest.mark.slow
def test_chunks_without_selected_events_are_counted(tmp_path, toy_models):
    """ttbar with the MET of all but its first 10 events set to 0: only the first 10-event chunk
    selects anything; every chunk is counted."""
    import uproot

    def no_met_after_10(cols, pf):
        met = cols["ScoutingMET_pt"].copy()
        met[10:] = 0.0
        cols["ScoutingMET_pt"] = met

    path = rewrite_file(embedded_file("ttbar.root"), tmp_path / "ttbar_met0.root", modify=no_met_after_10)
    lines = ["datasets:", "  ttbar:", "    kind: background", f"    files: [{path}]",
             "analysis:", f"  lundnet_model: {toy_models[0]}", f"  twin_model: {toy_models[1]}",
             "executor: {name: dask, workers: 2, chunksize: 10}"]
    job = tmp_path / "job.yaml"
    job.write_text("\n".join(lines) + "\n")
    out, _ = run_processor(load_job(job))
    counts = out["counts"]["ttbar"]
    with uproot.open(path) as f:
        n = f["Events"].num_entries
    assert counts["chunks"] == -(-n // 10)  # every chunk of 10 events
    assert counts["chunks_without_selected"] == counts["chunks"] - 1 > 0
    assert out["cutflow"]["ttbar"]["raw"][-1] > 0
    assert counts["events"] == out["cutflow"]["ttbar"]["raw"][0] == n
    h = out["hists"]["mt_abcd"][{"dataset": "ttbar"}]
    assert h.sum().value == pytest.approx(out["cutflow"]["ttbar"]["weighted"][-1])


def test_twin_trained_on_other_planes_is_refused(small_job, tmp_path):
    """One source of truth for the SP/VP boundary: the job's cuts; the twin's training record must agree."""
    import shutil

    from svjscout.models.export import write_metadata

    twin = tmp_path / "twin_planes.onnx"
    shutil.copy(small_job.analysis.twin_model, twin)
    write_metadata(twin, {"training": {"config": {"planes": {"SP": [0.0, 1.3], "VP": [1.3, 2.2]}}}})
    cfg = small_job.model_copy(update={"analysis": small_job.analysis.model_copy(update={"twin_model": str(twin)})})
    with pytest.raises(ModelMismatchError, match=r"twin_planes.onnx.*planes.*sp_deta_max"):
        run_processor(cfg)
    # the same model is accepted by a job whose cuts define those planes
    cuts = cfg.analysis.cuts.model_copy(update={"sp_deta_max": 1.3})
    ok = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"cuts": cuts})})
    out, _ = run_processor(ok)
    assert out["hists"]["xy_mt"].sum().value > 0


def test_model_pair_and_lund_length_are_checked(small_job, tmp_path):
    """A twin records the LundNet its inputs came from (SHA-256); the processor refuses another one,
    naming both files, and refuses a LundNet trained on another Lund sequence length."""
    import hashlib
    import shutil

    from svjscout.models.export import read_metadata, write_metadata

    twin = tmp_path / "twin_paired.onnx"
    shutil.copy(small_job.analysis.twin_model, twin)
    other = tmp_path / "lundnet_other.onnx"
    shutil.copy(small_job.analysis.lundnet_model, other)
    write_metadata(other, {"training": {"note": "another LundNet"}})  # other bytes, same graph
    sha = hashlib.sha256(open(small_job.analysis.lundnet_model, "rb").read()).hexdigest()
    write_metadata(twin, {"lundnet": {"sha256": sha, "path": small_job.analysis.lundnet_model}})
    assert read_metadata(twin)["lundnet"]["sha256"] == sha
    paired = small_job.model_copy(update={"analysis": small_job.analysis.model_copy(update={"twin_model": str(twin)})})
    out, _ = run_processor(paired)  # the pair it was trained with
    assert out["hists"]["xy_mt"].sum().value > 0
    wrong = paired.model_copy(update={"analysis": paired.analysis.model_copy(update={"lundnet_model": str(other)})})
    with pytest.raises(ModelMismatchError, match=r"twin_paired.onnx.*lundnet.sha256.*lundnet_other.onnx"):
        run_processor(wrong)
    write_metadata(other, {"max_len": "16"})
    lund_only = small_job.model_copy(
        update={"analysis": small_job.analysis.model_copy(update={"lundnet_model": str(other)})})
    with pytest.raises(ModelMismatchError, match=r"lundnet_other.onnx.*max_len.*16.*lund_max_len is 32"):
        run_processor(lund_only)
