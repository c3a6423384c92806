"""Resumable and distributed generation (issue 30): parts, resume, dask engines, executor settings.

References are independent of the writer under test: a file written here from
:func:`generate_chunk`'s results held in memory (the writer as it was before parts existed), and
files of other engines and interruptions compared branch by branch, bit for bit.
"""

import json

import numpy as np
import pytest
import uproot
from click.testing import CliRunner

from svjscout.core.exceptions import ConfigError, GenerationError
from svjscout.jobs.cli import cli
from svjscout.jobs.generation import executor_spec
from svjscout.samples.generate import (
    GenerationConfig,
    _branch_types,
    _chunks,
    generate_chunk,
    generate_file,
    local_mapper,
    select_chunks,
)
from svjscout.samples.parts import parts_folder

pytest.importorskip("pythia8mc")

SMALL = {"process": "qcd", "pileup": 0.0, "seed": 11, "detector_copies": 2}


def trees(path) -> dict:
    """Every branch of Events and Runs (numpy; jagged as object arrays) and the metadata."""
    with uproot.open(path) as f:
        out = {t: f[t].arrays(library="np") for t in ("Events", "Runs")}
        out["meta"] = json.loads(str(f["svjscout_meta"]))
    return out


def assert_same_file(a: dict, b: dict, meta: bool = True) -> None:
    for t in ("Events", "Runs"):
        assert a[t].keys() == b[t].keys(), t
        for key in a[t]:
            va, vb = a[t][key], b[t][key]
            assert len(va) == len(vb), key
            if va.dtype == object:
                assert all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(va, vb)), key
            else:
                assert va.dtype == vb.dtype and va.tobytes() == vb.tobytes(), key
    if meta:
        assert a["meta"] == b["meta"]


def in_memory_reference(cfg: GenerationConfig, path) -> dict:
    """The file the writer wrote before parts existed: chunks in memory, extended in order."""
    results = [generate_chunk(cfg, chunk, n) for chunk, n in _chunks(cfg)]
    with uproot.recreate(path) as f:
        tree = f.mktree("Events", _branch_types(results[0]["columns"]))
        for res in results:
            tree.extend(res["columns"])
    sums = {k: sum(r[k] for r in results) for k in ("n_generated", "sumw", "sumw2", "n_written")}
    ps = sum(r["ps_sumw"] for r in results)
    return {"Events": trees_events(path), "sums": sums, "ps_sumw": ps / sums["sumw"]}


def trees_events(path) -> dict:
    with uproot.open(path) as f:
        return f["Events"].arrays(library="np")


class Recorder:
    """A chunk mapper that records which chunks it was asked for; ``stop_after`` results it raises
    KeyboardInterrupt, as Ctrl-C (or a killed job) stops a run between chunks."""

    def __init__(self, stop_after: int | None = None):
        self.asked: list[int] = []
        self.stop_after = stop_after

    def __call__(self, fn, tasks):
        self.asked += [chunk for _, chunk, _ in tasks]
        for i, result in enumerate(local_mapper(1)(fn, tasks)):
            yield result
            if self.stop_after is not None and i + 1 >= self.stop_after:
                raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_file(tmp_path):
    cfg = GenerationConfig(events=100, chunk_size=40, **SMALL)  # chunks of 40, 40, 20 events
    out = tmp_path / "qcd.root"
    folder = parts_folder(out)
    # 1. --chunks 2: only the last chunk is stored; no file yet
    first = generate_file(cfg, out, chunks="2:")
    assert first["complete"] is False and first["missing"] == [0, 1] and not out.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["chunk_000002.json", "chunk_000002.parquet"]
    # 2. interrupted after one more chunk (KeyboardInterrupt between chunks)
    rec = Recorder(stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        generate_file(cfg, out, map_chunks=rec)
    assert rec.asked == [0, 1] and not out.exists()
    assert (folder / "chunk_000000.json").exists() and not (folder / "chunk_000001.json").exists()
    (folder / "chunk_000001.parquet").write_bytes(b"half a file")  # a part whose sidecar never came: redone
    # 3. resumed: only chunk 1 is generated
    rec = Recorder()
    meta = generate_file(cfg, out, map_chunks=rec)
    assert rec.asked == [1]
    assert not folder.exists()  # parts removed once the file is written
    resumed = trees(out)
    # the uninterrupted run and the in-memory writer give the same file
    generate_file(cfg, tmp_path / "straight.root")
    assert_same_file(trees(tmp_path / "straight.root"), resumed)
    ref = in_memory_reference(cfg, tmp_path / "ref.root")
    assert_same_file({"Events": ref["Events"], "Runs": resumed["Runs"]}, resumed, meta=False)
    runs = resumed["Runs"]
    assert runs["genEventCount"][0] == ref["sums"]["n_generated"] == 100
    assert runs["genEventSumw"][0] == ref["sums"]["sumw"] and runs["genEventSumw2"][0] == ref["sums"]["sumw2"]
    assert np.array_equal(runs["PSSumw"][0], ref["ps_sumw"])
    assert meta["n_written"] == ref["sums"]["n_written"] == len(resumed["Events"]["event"])
    assert resumed["meta"]["config"]["seed"] == 11 and "timing" not in resumed["meta"]


def test_part_of_another_configuration_is_refused(tmp_path):
    out = tmp_path / "qcd.root"
    generate_file(GenerationConfig(events=40, chunk_size=20, **SMALL), out, chunks="0")
    other = GenerationConfig(events=40, chunk_size=20, **{**SMALL, "seed": 12, "detector_copies": 3})
    with pytest.raises(GenerationError, match=r"chunk_000000\.json: chunk 0 was generated with another "
                                              r"configuration.*config\.detector_copies: 2 in the part, 3 in this run; "
                                              r"config\.seed: 11 in the part, 12 in this run"):
        generate_file(other, out)
    bigger = GenerationConfig(events=40, chunk_size=40, **SMALL)  # the part is no chunk of this plan
    with pytest.raises(GenerationError, match="chunk_000000.json.*chunk_size: 20 in the part, 40 in this run"):
        generate_file(bigger, out)
    res = generate_file(other, out, chunks="1", fresh=True, keep_parts=True)  # --fresh starts again
    assert res["missing"] == [0] and sorted(p.name for p in parts_folder(out).glob("*.json")) == ["chunk_000001.json"]


def test_chunk_ranges():
    assert select_chunks(":2", 5) == [0, 1] and select_chunks("-1:", 5) == [4]
    for bad, msg in (("7", "outside 0..4"), ("a:b", "expected A:B"), ("3:1", "no chunk")):
        with pytest.raises(GenerationError, match=msg):
            select_chunks(bad, 5)


@pytest.mark.slow
def test_dask_one_or_two_workers_same_file_as_iterative(tmp_path):
    """`svjscout generate --executor dask --scheduler local -j N`: the file of the iterative run."""
    common = ["generate", "qcd", "-n", "60", "--seed", "13", "--pileup", "0", "--chunk-size", "30", "-k", "2",
              "--no-progress"]
    files = {}
    for name, extra in (("iterative", []), ("dask1", ["--scheduler", "local", "-j", "1"]),
                        ("dask2", ["--executor", "dask", "--scheduler", "local", "-j", "2"])):
        out = tmp_path / f"{name}.root"
        res = CliRunner().invoke(cli, [*common, "-o", str(out), *extra])
        assert res.exit_code == 0, res.output
        summary = json.loads(res.output[res.output.index("{"):])
        assert summary["executor"]["engine"] == ("iterative" if name == "iterative" else "local")
        files[name] = trees(out)
    assert_same_file(files["iterative"], files["dask1"])
    assert_same_file(files["iterative"], files["dask2"])
    assert files["iterative"]["Runs"]["genEventCount"][0] == 60


def test_executor_settings(tmp_path):
    assert executor_spec("dask", "tcp://10.0.0.1:8786").scheduler == "tcp://10.0.0.1:8786"
    assert executor_spec(scheduler="local", workers=3).engine == "local"
    job = tmp_path / "af.yaml"
    job.write_text("datasets: {}\nexecutor: {name: dask, retries: 5, slurm: {queue: short, memory: 3GB}}\n")
    spec = executor_spec(scheduler="slurm", workers=4, config=job)
    assert spec.slurm == {"queue": "short", "memory": "3GB"} and spec.retries == 5 and spec.workers == 4
    assert executor_spec(scheduler="tcp://h:1", config=job).slurm is None  # the command line names the engine
    assert executor_spec(scheduler="gateway").gateway is not None
    bad = tmp_path / "bad.yaml"
    bad.write_text("executor: {workers: many, retries: 2}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid executor settings\n  executor\.workers"):
        executor_spec(config=bad)
    with pytest.raises(ConfigError, match="--scheduler local needs --executor dask"):
        executor_spec("futures", "local")


@pytest.mark.parametrize("kind", ["run3_layout", "empty_chunks"])
def test_resume_keeps_every_layout_and_empty_chunks(tmp_path, kind):
    """Parts carry any column the generator writes (the Run-3 layout's vertices, bool trigger bit,
    dark quarks) and chunks whose every event the MET skim removed."""
    if kind == "run3_layout":
        cfg = GenerationConfig("svj", 40, chunk_size=20, pileup=0.0, seed=3, layout="scoutingnano_run3")
    else:
        cfg = GenerationConfig(events=20, chunk_size=10, **{**SMALL, "detector_copies": 1}, met_min=150.0)
    out = tmp_path / "f.root"
    generate_file(cfg, out, chunks="1")
    meta = generate_file(cfg, out)
    resumed = trees(out)
    ref = in_memory_reference(cfg, tmp_path / "ref.root")
    assert_same_file({"Events": ref["Events"], "Runs": resumed["Runs"]}, resumed, meta=False)
    if kind == "run3_layout":
        assert resumed["Events"]["DST_HT410_PFScouting"].dtype == bool
        assert "ScoutingPFCandidate_vertexIndex" in resumed["Events"] and meta["n_written"] > 0
    else:
        assert meta["n_written"] == 0 and resumed["Runs"]["genEventCount"][0] == 20


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_file(tmp_path):
    """`svjscout generate` killed (SIGKILL) after its first part: the rerun finishes the file,
    identical to an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["generate", "qcd", "-n", "90", "--seed", "17", "--pileup", "0", "--chunk-size", "30", "--no-progress"]
    out = tmp_path / "killed.root"
    proc = subprocess.Popen([sys.executable, "-m", "svjscout.jobs.cli", *args, "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    first = parts_folder(out) / "chunk_000000.json"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and not out.exists(), "killed too late or too early"
    stored = sorted(p.name for p in parts_folder(out).glob("*.json"))
    assert len(stored) < 3
    res = CliRunner().invoke(cli, [*args, "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "straight.root")])
    assert res.exit_code == 0, res.output
    assert_same_file(trees(tmp_path / "straight.root"), trees(out))
