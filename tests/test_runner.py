"""Runs at scale: checkpoints (resume), a worker killed mid-run, config errors."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import assert_same_output, embedded_file, with_executor

from svjscout.core.exceptions import ConfigError
from svjscout.jobs.config import load_job
from svjscout.jobs.runner import run_processor


@pytest.mark.slow
def test_resume_from_checkpoints_processes_only_missing_chunks(small_job, tmp_path):
    ref, _ = run_processor(small_job)
    ckpt = tmp_path / "ckpt"
    cfg = with_executor(small_job, chunksize=150, checkpoint_dir=str(ckpt))
    first, _ = run_processor(cfg)
    files = sorted(ckpt.rglob("*.coffea"))
    assert len(files) > 4
    assert_same_output(ref, first)
    # a "crash": half of the chunks never finished
    removed = files[::2]
    for f in removed:
        f.unlink()
    kept = {f: 10**18 + i for i, f in enumerate(files[1::2])}  # marked (2001-09-09): a rewrite would change it
    for f, t in kept.items():
        os.utime(f, ns=(t, t))
    resumed, _ = run_processor(cfg)
    assert_same_output(ref, resumed)
    assert all(f.exists() for f in removed)  # recomputed
    assert all(f.stat().st_mtime_ns == t for f, t in kept.items())  # loaded, not recomputed
    # a changed configuration never reuses the old chunks
    other = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"wp": (0.45, 0.45)})})
    run_processor(other)
    assert len({p.parts[len(ckpt.parts)] for p in ckpt.rglob("*.coffea")}) == 2


@pytest.mark.slow
def test_worker_killed_mid_run(small_job):
    from dask.distributed import Client, LocalCluster

    ref, _ = run_processor(small_job)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        cfg = with_executor(small_job, name="dask", scheduler=cluster.scheduler_address, chunksize=60, retries=3)
        killed = []

        pids = client.run(os.getpid)

        def killer():
            deadline = time.time() + 120
            while time.time() < deadline:
                busy = [w for w, tasks in client.processing().items() if tasks and w in pids]
                if busy:  # the scheduler has given it a chunk: SIGKILL it while it holds the chunk
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed.append(busy[0])
                    return
                time.sleep(0.05)

        t = threading.Thread(target=killer)
        t.start()
        out, _ = run_processor(cfg)
        t.join()
    assert killed, "no worker was killed: the run finished before any result was held"
    assert_same_output(ref, out)


def test_config_errors_name_the_key(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("datasets:\n  a: {kind: signal, files: [x.root], colour: red}\nexecutor: {workers: two}\n")
    with pytest.raises(ConfigError) as info:
        load_job(job)
    msg = str(info.value)
    assert "datasets.a.colour" in msg and "executor.workers" in msg
    job.write_text("datasets:\n  a: {kind: sgnal, files: [x.root]}\n")
    with pytest.raises(ConfigError, match="datasets.a.kind"):
        load_job(job)


def test_embedded_job_config_loads():
    cfg = load_job()
    assert len(cfg.datasets) == 7  # 3 signal points, qcd, ttbar, wjets, zjets
    for name in cfg.datasets:
        assert all(Path(p).exists() for p in cfg.files(name)), name
    assert embedded_file("ttbar.root") in cfg.files("ttbar")


def test_cross_sections_of_several_generation_runs_are_combined():
    from svjscout.core.exceptions import ConfigError
    from svjscout.processors.datasets import combine_xsecs

    assert combine_xsecs("qcd", []) is None
    assert combine_xsecs("qcd", [("a.root", 12.5, 100.0), ("b.root", 12.5, 300.0)]) == 12.5
    # two Pythia runs of one process: sum-of-weights weighted mean
    got = combine_xsecs("qcd", [("a.root", 100.0, 1000.0), ("b.root", 103.0, 3000.0)])
    assert got == pytest.approx((100.0 * 1000 + 103.0 * 3000) / 4000)
    with pytest.raises(ConfigError, match=r"'qcd'.*a\.root: 100 pb.*b\.root: 120 pb.*datasets\.qcd\.xsec"):
        combine_xsecs("qcd", [("a.root", 100.0, 1.0), ("b.root", 120.0, 1.0)])
