"""Bad input files in every stage: truncated and corrupt ROOT files, files without a Runs tree,
unreadable skims. Each is a one-line error naming the file, or with skip_bad_files a counted,
listed skip whose lost sum of weights is reported, and the normalisation uses what was processed.
"""

from __future__ import annotations

import numpy as np
import pytest
import uproot
from conftest import assert_same_output, embedded_file, rewrite_file

from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.jobs.config import load_job
from svjscout.jobs.runner import run_processor


def _job(tmp_path, files, models, skip=False, extra=None):
    lines = ["datasets:", "  ttbar:", "    kind: background", "    files:"] + [f"      - {f}" for f in files]
    lines += [f"    {k}: {v}" for k, v in (extra or {}).items()]
    lines += ["analysis:", f"  lundnet_model: {models[0]}", f"  twin_model: {models[1]}",
              f"executor: {{name: iterative, chunksize: 200, skip_bad_files: {str(skip).lower()}}}"]
    job = tmp_path / "job.yaml"
    job.write_text("\n".join(lines) + "\n")
    return load_job(job)


def _truncate(src: str, dst, fraction: float) -> str:
    data = open(src, "rb").read()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return str(dst)


def _corrupt_basket(src: str, dst) -> str:
    """A complete file whose PF-pt basket (the second where there are several) is garbled: it opens,
    but a chunk cannot be read."""
    data = bytearray(open(src, "rb").read())
    with uproot.open(src) as f:
        b = f["Events"]["ScoutingPFCandidate_pt"]
        i = min(1, b.num_baskets - 1)
        seek, nbytes = int(b.member("fBasketSeek")[i]), int(b.member("fBasketBytes")[i])
        assert nbytes > 300, (src, i, nbytes)
    for i in range(seek + 200, seek + nbytes - 10, 7):
        data[i] ^= 0x5A
    dst.write_bytes(bytes(data))
    return str(dst)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, toy_models):
    """The good ttbar file processed alone."""
    out, _ = run_processor(_job(tmp_path_factory.mktemp("ref"), [embedded_file("ttbar.root")], toy_models))
    return out


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_truncated_file_is_named_or_skipped(tmp_path, toy_models, reference, fraction):
    good = embedded_file("ttbar.root")
    cut = _truncate(good, tmp_path / f"cut{int(fraction * 100)}.root", fraction)
    with pytest.raises(InputFileError, match=rf"cut{int(fraction * 100)}\.root: truncated file"):
        run_processor(_job(tmp_path, [good, cut], toy_models))
    out, report = run_processor(_job(tmp_path, [good, cut], toy_models, skip=True))
    assert [s["file"] for s in report.skipped] == [cut]
    assert report.skipped[0]["stage"] == "preflight"
    lost = report.datasets["ttbar"]["lost"]
    assert lost["files"] == 1 and lost["of_files"] == 2
    # the normalisation is that of the good file alone: identical histograms
    assert_same_output(out, reference)
    assert out["datasets"]["ttbar"]["sumw"] == reference["datasets"]["ttbar"]["sumw"]


def test_corrupt_basket_fails_in_processing_and_is_renormalised(tmp_path, toy_models, reference):
    good = embedded_file("ttbar.root")
    bad = _corrupt_basket(good, tmp_path / "garbled.root")
    with pytest.raises(InputFileError, match=r"garbled\.root: cannot be processed \(.*Error"):
        run_processor(_job(tmp_path, [good, bad], toy_models))
    out, report = run_processor(_job(tmp_path, [good, bad], toy_models, skip=True))
    assert [(s["file"], s["stage"]) for s in report.skipped] == [(bad, "processing")]
    lost = report.datasets["ttbar"]["lost"]
    # both files record the same generated sumw (one is a copy), so half of it was lost
    with uproot.open(good) as f:
        sumw_file = float(np.sum(f["Runs"]["genEventSumw"].array(library="np")))
    assert lost["sumw"] == pytest.approx(sumw_file) and lost["sumw_fraction"] == pytest.approx(0.5)
    assert report.files["ttbar"] == [good]
    assert_same_output(out, reference)


def test_file_without_runs_tree_needs_explicit_sumw(tmp_path, toy_models):
    good = embedded_file("ttbar.root")
    skimmed = rewrite_file(good, tmp_path / "skimmed.root", keep_runs=False)
    with pytest.raises(ConfigError, match=r"skimmed\.root has no Runs tree.*sumw_from: genWeight"):
        run_processor(_job(tmp_path, [skimmed], toy_models, extra={"xsec": 1.0}))
    with uproot.open(skimmed) as f:
        gw = float(np.sum(f["Events"]["genWeight"].array(library="np")))
    out, _ = run_processor(_job(tmp_path, [skimmed], toy_models, extra={"xsec": 1.0, "sumw_from": "genWeight"}))
    assert out["datasets"]["ttbar"]["sumw"] == pytest.approx(gw)
    out, _ = run_processor(_job(tmp_path, [skimmed], toy_models, extra={"xsec": 1.0, "sumw": 12345.0}))
    assert out["datasets"]["ttbar"]["sumw"] == 12345.0


def test_generated_file_metadata_read_is_named(tmp_path):
    from svjscout.samples.generate import read_metadata

    cut = _truncate(embedded_file("ttbar.root"), tmp_path / "meta_cut.root", 0.5)
    with pytest.raises(InputFileError, match=r"meta_cut\.root: truncated file"):
        read_metadata(cut)


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["twin", "lundnet"])
def test_truncated_skim_is_named_by_training_loaders(tmp_path, loader):
    import awkward as ak

    path = tmp_path / "skim.parquet"
    ak.to_parquet(ak.Array({"met": np.arange(100.0)}), str(path))
    path.write_bytes(path.read_bytes()[:-40])
    if loader == "twin":
        from svjscout.models.train_twin import load_skim

        call = lambda: load_skim([path])  # noqa: E731
    else:
        from svjscout.models.train_lundnet import load_skim

        call = lambda: load_skim([path], max_len=8)  # noqa: E731
    with pytest.raises(InputFileError, match=r"skim\.parquet"):
        call()


def test_missing_model_is_refused_at_load_time():
    """A mistyped model path is a named error when the job is loaded, not after the first chunks
    (relative paths are relative to the job file, a common surprise with --set)."""
    job = load_job(None)  # the embedded job loads: its models exist
    assert job.analysis.twin_model
    for key in ("twin_model", "lundnet_model"):
        with pytest.raises(ConfigError, match=rf"analysis\.{key}: 'data/nothing\.onnx' resolves to "
                                              r".*jobs/data/nothing\.onnx, which does not exist"):
            load_job(None, {f"analysis.{key}": "data/nothing.onnx"})
