"""svjscout as a coffea plugin: SVJProcessor run by coffea itself gives what `svjscout run` gives.

The reference is :func:`svjscout.jobs.runner.run_processor` (the processing of `svjscout run`) on
three embedded datasets with the toy models and the signal systematics on. Each workflow builds
its processor with :func:`svjscout.processor_from_job` from the same job file and must give the
same histograms (every one, values and variances), cutflows and parent records, normalised:
coffea's ``processor.Runner`` with the iterative, futures (2 workers) and dask (a LocalCluster of
2 processes) executors, and coffea's dask-awkward mode (``preprocess`` + ``apply_to_fileset``).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pytest
import uproot
from coffea import processor
from coffea.dataset_tools import apply_to_fileset, preprocess
from conftest import _linear_sigmoid_model, assert_same_output, embedded_file
from dask.distributed import Client, LocalCluster

import svjscout
from svjscout.core.exceptions import ConfigError, InputFileError, ModelMismatchError
from svjscout.core.features import EVENT_FEATURES
from svjscout.jobs.config import load_job
from svjscout.jobs.runner import _chunk_failure, processor_from_job, run_processor
from svjscout.models.export import write_metadata
from svjscout.processors.normalize import is_normalized, normalize
from svjscout.processors.processor import SVJProcessor
from svjscout.processors.schema import SVJScoutingSchema

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("svj_mz2000_rinv0.3", "qcd", "svj_mz3000_rinv0.5")


def _write_job(path: Path, models, extra: str = "", files: dict | None = None) -> Path:
    files = files or {ds: embedded_file(f"{ds}.root") for ds in DATASETS}
    kinds = {ds: "background" if ds == "qcd" else "signal" for ds in files}
    lines = ["datasets:"] + [f"  {ds}: {{kind: {kinds[ds]}, files: ['{f}']}}" for ds, f in files.items()]
    lines += ["analysis:", f"  lundnet_model: {models[0]}", f"  twin_model: {models[1]}", "  wp: [0.5, 0.5]",
              "  systematics: {enabled: true}", "executor: {name: iterative, chunksize: 10000}"]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.fixture(scope="module")
def job_file(tmp_path_factory, toy_models) -> Path:
    return _write_job(tmp_path_factory.mktemp("plugin") / "job.yaml", toy_models)


@pytest.fixture(scope="module")
def reference(job_file):
    """What `svjscout run` computes for the job (run_processor, the CLI's processing)."""
    out, _ = run_processor(load_job(job_file))
    return out


@pytest.fixture(scope="module")
def plugin(job_file):
    return processor_from_job(job_file)


def _same(out: dict, ref: dict) -> None:
    """Histograms, cutflows, parent records and their summary as `svjscout run` gives them."""
    assert is_normalized(out)
    assert_same_output(out, ref)
    assert out["normalisation"] == ref["normalisation"]
    assert out["parent_errors"] == ref["parent_errors"]
    assert sorted(out["parent_fills"]) == sorted(ref["parent_fills"]) == sorted(DATASETS)
    for ds, rec in ref["parent_fills"].items():
        for k in ("key", "bin"):
            assert np.array_equal(out["parent_fills"][ds][k], rec[k]), (ds, k)
        np.testing.assert_allclose(out["parent_fills"][ds]["weight"], rec["weight"], rtol=1e-12, atol=0)
    for ds, c in ref["counts"].items():
        assert {k: v for k, v in out["counts"][ds].items() if k != "chunks"} == \
               {k: v for k, v in c.items() if k != "chunks"}


def _runner(executor, chunksize=10000):
    return processor.Runner(executor=executor, schema=SVJScoutingSchema, chunksize=chunksize)


def test_public_names_are_lazy():
    code = "import sys, svjscout; print(any(m.split('.')[0] in ('coffea', 'onnxruntime') for m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
    assert svjscout.SVJProcessor is SVJProcessor and svjscout.processor_from_job is processor_from_job
    assert set(svjscout.__all__) <= set(dir(svjscout))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        svjscout.nothing  # noqa: B018


def test_processor_from_job_knows_the_normalisation(plugin, reference):
    """The job-file constructor reads xsec and sumw from the files' Runs trees, as the runner does."""
    infos = plugin.config.datasets
    assert sorted(plugin.fileset) == sorted(DATASETS)
    for ds in DATASETS:
        assert infos[ds].model_dump() == reference["datasets"][ds]
        assert infos[ds].sumw > 0 and infos[ds].xsec > 0


def test_processor_from_a_plain_fileset(plugin, reference, toy_models):
    """Without a job file: the settings from a coffea fileset, the normalisation read from its files."""
    fileset = {ds: [embedded_file(f"{ds}.root")] for ds in DATASETS}
    kinds = {ds: "background" if ds == "qcd" else "signal" for ds in DATASETS}
    cfg = svjscout.processor_config_from_fileset(fileset, kinds, lundnet_model=toy_models[0],
                                                 twin_model=toy_models[1], wp=(0.5, 0.5),
                                                 systematics={"enabled": True})
    assert {ds: i.model_dump() for ds, i in cfg.datasets.items()} == reference["datasets"]
    out = _runner(processor.IterativeExecutor(status=False))(fileset, SVJProcessor(cfg), treename="Events")
    _same(out, reference)
    with pytest.raises(ConfigError, match="dataset 'svj_mz2000_rinv0.3': no kind given"):
        svjscout.processor_config_from_fileset(fileset, {}, lundnet_model=toy_models[0], twin_model=toy_models[1])


def test_iterative_runner_small_chunks(plugin, reference):
    """coffea's Runner with the IterativeExecutor, chunks of 150 events: the same normalised output."""
    out = _runner(processor.IterativeExecutor(), chunksize=150)(plugin.fileset, plugin.processor, treename="Events")
    assert out["counts"]["qcd"]["chunks"] > 1
    _same(out, reference)


@pytest.mark.slow  # worker processes start (15-20 s)
def test_futures_runner(plugin, reference):
    out = _runner(processor.FuturesExecutor(workers=2))(plugin.fileset, plugin.processor, treename="Events")
    _same(out, reference)


@pytest.mark.slow  # worker processes start (15-20 s)
def test_dask_runner(plugin, reference):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        out = _runner(processor.DaskExecutor(client=client))(plugin.fileset, plugin.processor, treename="Events")
    _same(out, reference)


def test_dask_awkward_mode(plugin, reference):
    """preprocess + apply_to_fileset: process() maps the eager pipeline over the partitions
    (several per file here) and returns each dataset's normalised output, delayed."""
    available, _ = preprocess(plugin.fileset, step_size=100, skip_bad_files=False)
    delayed = apply_to_fileset(plugin.processor, available, schemaclass=SVJScoutingSchema)
    (computed,) = dask.compute(delayed, scheduler="sync")
    assert sorted(computed) == sorted(DATASETS)
    out = processor.accumulate(computed.values())
    assert out["counts"]["qcd"]["chunks"] > 1
    _same(out, reference)
    assert normalize(out, plugin.config) is out


def test_normalize_is_pure_and_idempotent(plugin, reference):
    """normalize returns a new output and leaves its argument; a second call changes nothing; an
    output normalised with other factors is refused."""

    class Raw(SVJProcessor):
        def postprocess(self, accumulator):
            return accumulator

    raw = _runner(processor.IterativeExecutor())(plugin.fileset, Raw(plugin.config), treename="Events")
    assert not is_normalized(raw)
    before = copy.deepcopy(raw)
    once = normalize(raw, plugin.config)
    assert once is not raw
    assert_same_output(raw, before)  # the argument is unchanged
    assert "parent_errors" not in raw
    _same(once, reference)
    twice = normalize(once, plugin.config)
    assert twice is once
    _same(plugin.processor.postprocess(once), reference)
    other = plugin.config.model_copy(update={"lumi": plugin.config.lumi * 2})
    with pytest.raises(ConfigError, match="normalised already with factor"):
        normalize(once, other)


@pytest.mark.slow  # the shipped job, seven datasets, in a fresh interpreter
def test_example_script(tmp_path):
    """examples/coffea_runner.py runs the shipped job's processor with coffea's Runner."""
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "coffea_runner.py")], capture_output=True,
                         text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("dataset ")):]  # after coffea's bars
    assert lines[0].split() == ["dataset", "A", "B", "C", "D", "(SP,", "normalised", "to", "138", "fb^-1)"]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[1:] if line.strip()}
    assert "qcd" in rows and "svj_mz2000_rinv0.3" in rows
    assert all(len(v) == 4 and all(x >= 0 for x in v) for v in rows.values())
    assert sum(rows["qcd"]) > 0


# -- faults caught at load, in this layer -------------------------------------------------------

def test_corrupt_model_is_named_before_any_data_file(tmp_path, toy_models):
    """A corrupt .onnx stops the run naming the key and the model, before any data file is read
    (here the data file does not even exist), and skip_bad_files never drops a data file for it."""
    bad = tmp_path / "twin.onnx"
    bad.write_bytes(b"not an onnx model")
    job = _write_job(tmp_path / "job.yaml", (toy_models[0], str(bad)), files={"qcd": str(tmp_path / "missing.root")})
    job.write_text(job.read_text().replace("chunksize: 10000}", "chunksize: 10000, skip_bad_files: true}"))
    with pytest.raises(ModelMismatchError, match=rf"analysis\.twin_model: {bad}: cannot be opened as an ONNX model"):
        run_processor(load_job(job))
    with pytest.raises(ModelMismatchError, match=r"analysis\.twin_model"):
        processor_from_job(job)


def test_swapped_models_are_named_by_key(tmp_path, toy_models):
    """A twin given as the LundNet: the LundNet key is blamed, with the metadata key at fault."""
    job = _write_job(tmp_path / "job.yaml", (toy_models[1], toy_models[1]))
    with pytest.raises(ModelMismatchError, match=r"analysis\.lundnet_model: .*twin_toy\.onnx: metadata key 'model'"):
        run_processor(load_job(job))


def _narrow_twin(tmp_path) -> str:
    """A twin whose metadata lists the 12 features but whose graph takes 11: it opens, it cannot score."""
    path = _linear_sigmoid_model(tmp_path / "twin_narrow.onnx", None, None, EVENT_FEATURES[:11], "twin")
    write_metadata(path, {"features": list(EVENT_FEATURES)})
    return path


def test_model_that_cannot_score_is_named_at_load(tmp_path, toy_models):
    job = _write_job(tmp_path / "job.yaml", (toy_models[0], _narrow_twin(tmp_path)))
    with pytest.raises(ModelMismatchError, match=r"analysis\.twin_model: .*twin_narrow\.onnx: opens, but does not "
                                                 r"score one event"):
        run_processor(load_job(job))


def test_model_failing_in_a_chunk_never_blames_the_file(tmp_path, toy_models, plugin):
    """Past the preflight (coffea's Runner on its own), an onnxruntime failure in a chunk is the
    models' error: the runner's failure triage raises it instead of skipping the data file."""
    broken = SVJProcessor(plugin.config.model_copy(update={"twin_model": _narrow_twin(tmp_path)}))
    qcd = {"qcd": plugin.fileset["qcd"]}
    with pytest.raises(Exception) as info:
        _runner(processor.IterativeExecutor(status=False))(qcd, broken, treename="Events")
    path = next(iter(qcd["qcd"]["files"]))
    with pytest.raises(ModelMismatchError, match=r"analysis\.lundnet_model / analysis\.twin_model: onnxruntime "
                                                 r"failed while scoring a chunk of .*qcd\.root"):
        _chunk_failure(info.value, {"qcd": {path: None}})


def test_rntuple_file_is_named(tmp_path, toy_models):
    """uproot >= 5.4 writes ``f["Events"] = {...}`` as an RNTuple: named as such, not as missing branches."""
    path = tmp_path / "rntuple.root"
    with uproot.recreate(path) as f:
        f["Events"] = {"ScoutingMET_pt": np.arange(3.0)}
    job = _write_job(tmp_path / "job.yaml", toy_models, files={"qcd": str(path)})
    with pytest.raises(InputFileError, match=r"rntuple\.root: 'Events' is an RNTuple; svjscout reads TTrees"):
        run_processor(load_job(job))


def test_unknown_pf_field_is_refused_at_load(tmp_path, toy_models):
    job = _write_job(tmp_path / "job.yaml", toy_models, "schema:\n  pf_fields: {pt: pt, eta: eta, phi: phi, "
                     "mass: mass, pdgId: pdgId, charge: charge, ptt: pt}\n")
    with pytest.raises(ConfigError, match=r"schema\.pf_fields.*unknown key\(s\) \['ptt'\]; the known keys are "
                                          r"\['pt', 'eta', 'phi', 'mass', 'pdgId', 'charge'\]"):
        load_job(job)
