"""Analysis-facility engines, run for real on this machine (loopback only): a separate dask
scheduler with worker processes, Slurm through dask-jobqueue, dask-gateway, XRootD reads.

Every test starts the software it needs (``dask scheduler``/``dask worker``, munge + slurmctld +
slurmd via ``jobs/facility/slurm-up.sh``, ``dask-gateway-server``, ``xrootd``), checks that the
histograms are identical to the iterative executor's and stops what it started. Marked
``facility``: out of the quick run, run by ``.ci/run`` (``pytest -m facility -n 0``), which installs
what they need. A missing program skips with the install command, unless
``SVJSCOUT_FACILITY_REQUIRED=1`` (CI after installing), where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import assert_same_output, embedded_file

from svjscout.core.exceptions import ConfigError, InputFileError
from svjscout.jobs import runner
from svjscout.jobs.config import load_job
from svjscout.jobs.runner import run_processor

pytestmark = pytest.mark.facility

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REQUIRED = os.environ.get("SVJSCOUT_FACILITY_REQUIRED") == "1"
DATASETS = {"svj_mz2000_rinv0.3": "signal", "qcd": "background", "svj_mz3000_rinv0.5": "signal"}


def need(what: str, ok: bool, install: str) -> None:
    """Skip (or fail, in CI after installing) when a program or package is missing."""
    if ok:
        return
    msg = f"{what} is not available ({install})"
    if REQUIRED:
        pytest.fail(msg + "; SVJSCOUT_FACILITY_REQUIRED=1")
    pytest.skip(msg)


def need_module(name: str) -> None:
    import importlib.util

    need(f"python module {name}", importlib.util.find_spec(name) is not None, "pip install 'svjscout[af]'")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s:\n{log.read_text()[-3000:]}")


def wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} does not answer 200 after {seconds} s:\n{log.read_text()[-3000:]}")


def start(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    fh = open(log, "ab")
    try:
        return subprocess.Popen([str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                **kw)
    finally:
        fh.close()


def stop(proc: subprocess.Popen) -> None:
    """Stop a process this test started (SIGTERM, then SIGKILL), by its own pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


def job_yaml(path: Path, files: dict[str, list[str]], models, executor: str) -> Path:
    lines = ["datasets:"]
    for name, fs in files.items():
        lines.append(f"  {name}: {{kind: {DATASETS.get(name, 'background')}, files: [{', '.join(fs)}]}}")
    lines += ["analysis:", f"  lundnet_model: {models[0]}", f"  twin_model: {models[1]}", "  wp: [0.5, 0.5]",
              f"executor: {executor}",
              "datacards: {allow_unbacked: true}"]  # the embedded sample backs no working point
    path.write_text("\n".join(lines) + "\n")
    return path


def small_files() -> dict[str, list[str]]:
    return {name: [embedded_file(f"{name}.root")] for name in DATASETS}


@pytest.fixture(scope="module")
def reference(toy_models, tmp_path_factory):
    """The small job through the iterative executor (the identity reference)."""
    d = tmp_path_factory.mktemp("reference")
    out, _ = run_processor(load_job(job_yaml(d / "job.yaml", small_files(), toy_models,
                                             "{name: iterative, chunksize: 10000}")))
    return out


class ClientSpy:
    """Catches the dask client a run uses (through WorkerWatch), for a test thread to act mid-run."""

    def __init__(self, monkeypatch):
        self.client = None
        self.ready = threading.Event()
        spy = self

        class Watch(runner.WorkerWatch):
            def __init__(self, client):
                super().__init__(client)
                spy.client = client
                spy.ready.set()

        monkeypatch.setattr(runner, "WorkerWatch", Watch)

    def busy_worker(self, among=None, seconds: float = 300) -> str | None:
        """Wait until a worker (of ``among``) holds a chunk; its address."""
        if not self.ready.wait(seconds):
            return None
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                busy = [w for w, tasks in self.client.processing().items() if tasks and (among is None or w in among)]
            except Exception:  # noqa: BLE001 - the run closed its client: it is over
                return None
            if busy:
                return busy[0]
            time.sleep(0.05)
        return None


# --- 1. a long-lived dask scheduler and worker processes -------------------------------------------------


@pytest.fixture()
def dask_processes(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes (no nanny: a killed one stays dead)."""
    need("dask command", (BIN / "dask").exists(), "pip install 'dask[distributed]'")
    port = free_port()
    log = tmp_path / "scheduler.log"
    procs = [start([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"], log)]
    try:
        wait_port(port, procs[0], log)
        addr = f"tcp://127.0.0.1:{port}"
        env = {**os.environ, "SVJSCOUT_ORT_THREADS": "1", "OMP_NUM_THREADS": "1"}
        workers = [start([BIN / "dask", "worker", addr, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1",
                          "--no-dashboard", "--name", f"w{i}"], tmp_path / f"worker{i}.log", env=env) for i in range(2)]
        procs += workers
        from dask.distributed import Client

        with Client(addr, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield addr, workers
    finally:
        for p in reversed(procs):
            stop(p)


def test_separate_scheduler_cli_run_is_identical(dask_processes, toy_models, tmp_path):
    from coffea.util import load

    addr, _ = dask_processes
    job = job_yaml(tmp_path / "job.yaml", small_files(), toy_models, "{name: dask, chunksize: 200}")
    outs = {}
    for tag, extra in (("iterative", ["--executor", "iterative"]), ("scheduler", ["--scheduler", addr])):
        res = subprocess.run([BIN / "svjscout", "run", job, "--out", tmp_path / tag, "--no-scan", *extra],
                             capture_output=True, text=True, env={**os.environ, "SVJSCOUT_NO_PROGRESS": "1"})
        assert res.returncode == 0, res.stderr[-3000:]
        outs[tag] = load(tmp_path / tag / "histograms.coffea")
    assert_same_output(outs["iterative"], outs["scheduler"])
    rec = outs["scheduler"]["report"]["executor"]
    assert rec["engine"] == "scheduler" and rec["scheduler"] == addr
    assert rec["workers_at_start"] == 2 and rec["workers_lost"] == 0
    assert outs["iterative"]["report"]["executor"] == {"engine": "iterative"}


def test_separate_scheduler_worker_killed_mid_run(dask_processes, toy_models, reference, tmp_path, monkeypatch):
    from dask.distributed import Client

    addr, workers = dask_processes
    with Client(addr) as client:
        pids = {w: pid for w, pid in client.run(os.getpid).items()}
    victims = {w: pid for w, pid in pids.items() if pid in {p.pid for p in workers}}
    assert len(victims) == 2
    spy = ClientSpy(monkeypatch)
    killed = []

    def killer():
        w = spy.busy_worker(among=victims)
        if w:  # it holds a chunk: killed mid-chunk
            os.kill(victims[w], signal.SIGKILL)
            killed.append(w)

    cfg = load_job(job_yaml(tmp_path / "job.yaml", small_files(), toy_models,
                            f"{{name: dask, scheduler: '{addr}', chunksize: 60, retries: 3}}"))
    t = threading.Thread(target=killer)
    t.start()
    out, report = run_processor(cfg)
    t.join()
    assert killed, "no worker was killed: the run finished before a chunk was running"
    assert_same_output(reference, out)
    rec = report.executor
    assert rec["workers_lost"] == 1 and rec["lost_workers"] == killed, rec
    assert out["report"]["executor"]["workers_lost"] == 1


# --- 2. Slurm through dask-jobqueue (and the HTCondor variant) --------------------------------------------


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm started by jobs/facility/slurm-up.sh; SLURM_CONF set for sbatch/scancel."""
    need("Slurm (slurmctld, slurmd, sbatch) and munge",
         all(shutil.which(x) for x in ("slurmctld", "slurmd", "sbatch", "munged")), "apt-get install slurm-wlm munge")
    need("root (slurm-up.sh runs the daemons as root)", os.geteuid() == 0, "run as root")
    need_module("dask_jobqueue")
    scratch = Path(tempfile.mkdtemp(prefix="svjscout-slurm-"))
    up = subprocess.run([ROOT / "jobs/facility/slurm-up.sh", scratch], capture_output=True, text=True)
    old = os.environ.get("SLURM_CONF")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        os.environ["SLURM_CONF"] = str(scratch / "slurm.conf")
        yield scratch
    finally:
        subprocess.run([ROOT / "jobs/facility/slurm-down.sh", scratch], capture_output=True)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        shutil.rmtree(scratch, ignore_errors=True)


def slurm_executor(logs: Path, **extra) -> str:
    base = {"name": "dask", "workers": 2, "chunksize": 60, "retries": 3, "worker_timeout": 180}
    slurm = ("{cores: 1, processes: 1, memory: 2GB, walltime: '00:30:00', "
             "scheduler_options: {host: 127.0.0.1}, worker_extra_args: [--host, 127.0.0.1], "
             f"log_directory: '{logs}'}}")
    items = [f"{k}: {v}" for k, v in {**base, **extra}.items()] + [f"slurm: {slurm}"]
    return "{" + ", ".join(items) + "}"


def test_slurm_workers_identical_and_scancel_survives(slurm, toy_models, reference, tmp_path, monkeypatch):
    cfg = load_job(job_yaml(tmp_path / "job.yaml", small_files(), toy_models, slurm_executor(tmp_path / "logs")))
    spy = ClientSpy(monkeypatch)
    cancelled = []

    def canceller():
        w = spy.busy_worker()
        if not w:
            return
        try:
            job_id = spy.client.run(lambda: os.environ.get("SLURM_JOB_ID"), workers=[w])[w]
        except Exception:  # noqa: BLE001
            return
        subprocess.run(["scancel", str(job_id)], check=True)  # its worker holds a chunk: cancelled mid-chunk
        cancelled.append(job_id)

    t = threading.Thread(target=canceller)
    t.start()
    out, report = run_processor(cfg)
    t.join()
    assert cancelled, "no Slurm job was cancelled: the run finished before a chunk was running"
    assert_same_output(reference, out)
    rec = report.executor
    assert rec["engine"] == "slurm"
    assert rec["workers_lost"] + rec["workers_retired"] >= 1, rec
    # the jobs are gone once the run is over (Slurm takes a moment to record the cancellation: wait for it)
    def queued():
        left = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True).stdout.split("\n")
        return [x for x in left if "RUNNING" in x or "PENDING" in x]

    deadline = time.time() + 30
    while queued() and time.time() < deadline:
        time.sleep(0.2)
    assert queued() == []


def test_slurm_job_script_is_the_config(slurm, toy_models, tmp_path):
    cfg = load_job(job_yaml(tmp_path / "job.yaml", small_files(), toy_models,
                            slurm_executor(tmp_path / "logs", xrootd="{timeout: 17, retries: 2}")))
    with runner.jobqueue_cluster(cfg) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --cpus-per-task=1" in script and "#SBATCH -t 00:30:00" in script
    assert "export SVJSCOUT_ORT_THREADS=1" in script and "export XRD_REQUESTTIMEOUT=17" in script
    assert f"{sys.executable} -m distributed.cli.dask_worker tcp://127.0.0.1:" in script
    assert "--nthreads 1" in script and "--host 127.0.0.1" in script


def generate_with(tmp_path: Path, engines: dict[str, list[str]], during=None) -> dict:
    """`svjscout generate` (qcd, 4 chunks of 25 events, 2 detector copies, no pileup) once per
    engine (name -> extra options): {name: (summary, {Events, Runs: arrays, meta})}. ``during``
    runs in a thread beside each non-iterative generation (e.g. to kill a worker)."""
    import json

    import uproot
    from click.testing import CliRunner

    from svjscout.jobs.cli import cli

    pytest.importorskip("pythia8mc")
    common = ["generate", "qcd", "-n", "100", "--seed", "21", "--pileup", "0", "--chunk-size", "25", "-k", "2",
              "--no-progress"]
    out = {}
    for name, extra in engines.items():
        path = tmp_path / f"{name}.root"
        t = threading.Thread(target=during, args=(path,)) if during and extra else None
        if t:
            t.start()
        res = CliRunner().invoke(cli, [*common, "-o", str(path), *extra])
        if t:
            t.join()
        assert res.exit_code == 0, res.output
        with uproot.open(path) as f:
            files = {tree: f[tree].arrays(library="np") for tree in ("Events", "Runs")}
            files["meta"] = json.loads(str(f["svjscout_meta"]))
        out[name] = (json.loads(res.output[res.output.index("{"):]), files)
    return out


def assert_same_generated(a: dict, b: dict) -> None:
    """Every branch of Events and Runs bit for bit, and the metadata."""
    import numpy as np

    for t in ("Events", "Runs"):
        assert a[t].keys() == b[t].keys()
        for key in a[t]:
            if a[t][key].dtype == object:
                assert all(np.array_equal(x, y) for x, y in zip(a[t][key], b[t][key], strict=True)), key
            else:
                assert a[t][key].tobytes() == b[t][key].tobytes(), key
    assert a["meta"] == b["meta"] and a["Runs"]["genEventCount"][0] == 100


def test_slurm_generation_equals_iterative(slurm, tmp_path):
    """`svjscout generate --scheduler slurm`: chunks run as Slurm jobs (dask-jobqueue), the file
    is the iterative run's, every branch bit for bit, the metadata too (issue 30)."""
    ex = tmp_path / "executor.yaml"
    ex.write_text(f"executor: {slurm_executor(tmp_path / 'logs')}\n")
    runs = generate_with(tmp_path, {"iterative": [],
                                    "slurm": ["--scheduler", "slurm", "--executor-config", str(ex), "-j", "2"]})
    assert runs["slurm"][0]["executor"]["engine"] == "slurm"
    assert_same_generated(runs["iterative"][1], runs["slurm"][1])
    assert list((tmp_path / "logs").glob("*")), "no Slurm job log: the chunks did not run under Slurm"


def test_generation_on_a_scheduler_survives_a_killed_worker(dask_processes, tmp_path):
    """`--scheduler ADDRESS`: a worker killed once the first chunk is stored; its chunk runs again
    on the other worker and the file is the iterative run's (issue 30)."""
    addr, workers = dask_processes
    killed = []

    def kill(path):
        first = path.with_name(path.name + ".parts") / "chunk_000000.json"
        deadline = time.time() + 120
        while not first.exists() and time.time() < deadline:
            time.sleep(0.05)
        workers[0].send_signal(signal.SIGKILL)
        killed.append(first.exists())

    runs = generate_with(tmp_path, {"iterative": [], "scheduler": ["--scheduler", addr]}, during=kill)
    assert killed == [True] and workers[0].wait(timeout=30) is not None
    rec = runs["scheduler"][0]["executor"]
    assert rec["engine"] == "scheduler" and rec["scheduler"] == addr and rec["workers_at_start"] == 2
    assert rec["workers_lost"] == 1, rec
    assert_same_generated(runs["iterative"][1], runs["scheduler"][1])


def test_gateway_generation_equals_iterative(gateway_server, tmp_path):
    """`--scheduler gateway` with the gateway block of an executor config (issue 30)."""
    address, _ = gateway_server
    ex = tmp_path / "executor.yaml"
    ex.write_text(f"executor: {gateway_executor(address, adaptive='{minimum: 1, maximum: 2}')}\n")
    gateway = ["--scheduler", "gateway", "--executor-config", str(ex)]
    runs = generate_with(tmp_path, {"iterative": [], "gateway": gateway})
    assert runs["gateway"][0]["executor"]["engine"] == "gateway"
    assert_same_generated(runs["iterative"][1], runs["gateway"][1])


CONDOR_EXECUTOR = ("{{name: dask, workers: {workers}, chunksize: 100, worker_timeout: {timeout}, "
                   "xrootd: {{timeout: 30, retries: 4}}, "
                   "condor: {{cores: 1, memory: 3GB, disk: 2GB, scheduler_options: {{host: 127.0.0.1}}, "
                   "worker_extra_args: [--host, 127.0.0.1], job_extra_directives: {{+JobFlavour: '\"workday\"'}}}}}}")

# A stand-in for an HTCondor pool: condor_submit runs the submit description's
# `Executable = /bin/sh` with its `Arguments` on this machine; condor_rm stops it.
FAKE_SUBMIT = """#!{python}
import os, re, subprocess, sys
text = open(sys.argv[-1]).read()
assert "Queue" in text and "Executable = /bin/sh" in text, text
args = re.search(r'^Arguments = "(.*)"$', text, re.M).group(1).replace('""', '"')
assert args.startswith("-c '") and args.endswith("'"), args
state = {state!r}
n = 1  # dask-jobqueue submits jobs concurrently: claim the job number atomically
while True:
    try:
        fd = os.open(os.path.join(state, str(n) + ".pid"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        break
    except FileExistsError:
        n += 1
job = str(n)
log = open(os.path.join(state, job + ".log"), "wb")
p = subprocess.Popen(["/bin/sh", "-c", args[4:-1].replace("''", "'")], stdout=log, stderr=log, start_new_session=True)
os.write(fd, str(p.pid).encode())
os.close(fd)
print("Submitting job(s).\\n1 job(s) submitted to cluster " + job + ".")
"""
FAKE_RM = """#!{python}
import os, signal, sys
state = {state!r}
for job in sys.argv[1:]:
    pid = int(open(os.path.join(state, job.split(".")[0] + ".pid")).read())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    print("Job " + job + " marked for removal")
"""


def test_condor_submit_description_without_a_pool(toy_models, tmp_path):
    """HTCondor runs the same code path; without a pool, its job script and submit description."""
    need_module("dask_jobqueue")
    cfg = load_job(job_yaml(tmp_path / "job.yaml", small_files(), toy_models,
                            CONDOR_EXECUTOR.format(workers=3, timeout=600)))
    assert cfg.executor.engine == "condor"
    with runner.jobqueue_cluster(cfg) as cluster:
        script = cluster.job_script()
    assert script.startswith("#!/usr/bin/env condor_submit")
    for line in ("RequestCpus = MY.DaskWorkerCores", "RequestMemory = floor(MY.DaskWorkerMemory / 1048576)",
                 "RequestDisk = floor(MY.DaskWorkerDisk / 1024)", "MY.DaskWorkerCores = 1",
                 "MY.DaskWorkerMemory = 3000000000", "MY.DaskWorkerDisk = 2000000000", '+JobFlavour = "workday"',
                 "Executable = /bin/sh", "Queue"):
        assert line in script.splitlines(), (line, script)
    args = next(x for x in script.splitlines() if x.startswith("Arguments = "))
    for part in ("export SVJSCOUT_ORT_THREADS=1;", "export OMP_NUM_THREADS=1;", "export XRD_REQUESTTIMEOUT=30;",
                 "export XRD_CONNECTIONRETRY=4;", f"{sys.executable} -m distributed.cli.dask_worker tcp://127.0.0.1:",
                 "--nthreads 1", "--host 127.0.0.1"):
        assert part in args, (part, args)


def test_condor_code_path_on_a_stand_in_pool(toy_models, reference, tmp_path, monkeypatch):
    """The whole HTCondor path (config, HTCondorCluster, condor_submit of its description, workers,
    condor_rm) with condor_submit/condor_rm replaced by scripts that run the job here."""
    need_module("dask_jobqueue")
    bindir, state = tmp_path / "bin", tmp_path / "condor-state"
    bindir.mkdir()
    state.mkdir()
    for name, text in (("condor_submit", FAKE_SUBMIT), ("condor_rm", FAKE_RM)):
        (bindir / name).write_text(text.format(python=sys.executable, state=str(state)))
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cfg = load_job(job_yaml(tmp_path / "job.yaml", small_files(), toy_models,
                            CONDOR_EXECUTOR.format(workers=2, timeout=120)))
    out, report = run_processor(cfg)
    assert_same_output(reference, out)
    rec = report.executor
    assert rec["engine"] == "condor" and rec["workers_at_start"] + rec["workers_joined"] >= 1, rec
    assert len(list(state.glob("*.pid"))) == 2  # two jobs submitted
    deadline = time.time() + 30  # and removed: no worker process is left
    pids = [int(p.read_text()) for p in state.glob("*.pid")]
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.5)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cluster_without_workers_is_a_named_error(toy_models, tmp_path, monkeypatch):
    """No condor_submit (no pool): the run stops after executor.worker_timeout, saying what to check."""
    need_module("dask_jobqueue")
    monkeypatch.setenv("PATH", str(tmp_path))  # no condor_submit here
    cfg = load_job(job_yaml(tmp_path / "job.yaml", small_files(), toy_models,
                            CONDOR_EXECUTOR.format(workers=1, timeout=5)))
    with pytest.raises(ConfigError, match=r"executor.condor: no dask worker connected within "
                                          r"executor.worker_timeout = 5 s \(check condor_q -better-analyze\)"):
        run_processor(cfg)


def test_engines_exclude_each_other(toy_models, tmp_path):
    with pytest.raises(ConfigError, match=r"at most one of executor.scheduler.*got scheduler, slurm"):
        load_job(job_yaml(tmp_path / "job.yaml", small_files(), toy_models,
                          "{scheduler: 'tcp://127.0.0.1:1', slurm: {cores: 1}}"))


# --- 3. dask-gateway (coffea-casa's interface) ------------------------------------------------------------

GATEWAY_CONFIG = """
from dask_gateway_server.options import Options, Integer, Float, String

c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.address = "127.0.0.1:{api}"
c.Proxy.address = "127.0.0.1:{proxy}"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.SimpleAuthenticator.password = "svj-secret"
c.LocalBackend.cluster_config_class = "dask_gateway_server.backends.local.LocalClusterConfig"
c.ClusterConfig.scheduler_cmd = ["{bin}/dask", "scheduler"]
c.ClusterConfig.worker_cmd = ["{bin}/dask", "worker"]
c.ClusterConfig.idle_timeout = 600
c.LocalClusterConfig.worker_threads = 1


def handler(options):
    return {{"worker_cores": options.worker_cores, "worker_memory": int(options.worker_memory * 2**30),
            "environment": {{"SVJSCOUT_ORT_THREADS": "1", "OMP_NUM_THREADS": "1", "SVJ_GATEWAY_TAG": options.tag}}}}


c.Backend.cluster_options = Options(
    Integer("worker_cores", 1, min=1, max=2),
    Float("worker_memory", 1.0, min=0.5, max=4.0),
    String("tag", "none"),
    handler=handler,
)
"""


@pytest.fixture(scope="module")
def gateway_server(tmp_path_factory):
    """``dask-gateway-server`` with its local backend on 127.0.0.1 (basic auth, three cluster options)."""
    need_module("dask_gateway")
    need_module("dask_gateway_server")
    d = tmp_path_factory.mktemp("gateway")
    api, proxy = free_port(), free_port()
    cfg = d / "dask_gateway_config.py"
    cfg.write_text(GATEWAY_CONFIG.format(api=api, proxy=proxy, bin=BIN))
    log = d / "gateway.log"
    proc = start([BIN / "dask-gateway-server", "-f", cfg], log, cwd=d)
    try:
        wait_port(proxy, proc, log)
        wait_port(api, proc, log)
        wait_http(f"http://127.0.0.1:{proxy}/api/health", proc, log)  # the proxy has its routes
        os.environ["SVJ_GATEWAY_PASSWORD"] = "svj-secret"
        yield f"http://127.0.0.1:{proxy}", log
    finally:
        stop(proc)
        os.environ.pop("SVJ_GATEWAY_PASSWORD", None)


def gateway_executor(address: str, **extra) -> str:
    g = {"address": f"'{address}'", "auth": "basic", "username": "svj", "password_env": "SVJ_GATEWAY_PASSWORD",
         **extra}
    return ("{name: dask, workers: 2, chunksize: 100, retries: 3, worker_timeout: 180, gateway: {"
            + ", ".join(f"{k}: {v}" for k, v in g.items()) + "}}")


def test_gateway_cluster_identical(gateway_server, toy_models, reference, tmp_path, monkeypatch):
    address, _ = gateway_server
    spy_env = {}

    class Watch(runner.WorkerWatch):
        def record(self):
            spy_env.update(self.client.run(lambda: os.environ.get("SVJ_GATEWAY_TAG")))
            return super().record()

    monkeypatch.setattr(runner, "WorkerWatch", Watch)
    cfg = load_job(job_yaml(tmp_path / "job.yaml", small_files(), toy_models, gateway_executor(
        address, cluster_options="{worker_memory: 1.5, tag: svj}", adaptive="{minimum: 1, maximum: 2}")))
    out, report = run_processor(cfg)
    assert_same_output(reference, out)
    assert report.executor["engine"] == "gateway"
    assert spy_env and set(spy_env.values()) == {"svj"}  # the cluster option reached the workers
    from dask_gateway import BasicAuth, Gateway

    gw = Gateway(address, auth=BasicAuth("svj", "svj-secret"))
    try:
        assert gw.list_clusters() == []  # the cluster was shut down
    finally:
        runner.close_gateway(gw)


def test_gateway_errors_are_named(gateway_server, toy_models, tmp_path):
    address, _ = gateway_server
    cfg = load_job(job_yaml(tmp_path / "job.yaml", small_files(), toy_models, gateway_executor(
        address, cluster_options="{worker_gpus: 1}")))
    with pytest.raises(ConfigError, match=r"cluster_options.worker_gpus: not an option of this gateway "
                                          r"\(it has tag, worker_cores, worker_memory\)"):
        run_processor(cfg)
    cfg = load_job(job_yaml(tmp_path / "job.yaml", small_files(), toy_models, gateway_executor(
        address, password_env="SVJ_NO_SUCH_VARIABLE")))
    with pytest.raises(ConfigError, match="SVJ_NO_SUCH_VARIABLE is not set"):
        run_processor(cfg)


# --- 4. XRootD ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xrootd_server():
    """``xrootd`` (as nobody: it refuses root) exporting a scratch folder on localhost."""
    need("xrootd server", shutil.which("xrootd") is not None, "apt-get install xrootd-server")
    need_module("fsspec_xrootd")
    need_module("XRootD")
    base = Path(tempfile.mkdtemp(prefix="svjscout-xrd-"))
    data, admin = base / "data", base / "admin"
    data.mkdir()
    admin.mkdir()
    os.chmod(base, 0o755)
    os.chmod(data, 0o755)
    user = []
    if os.geteuid() == 0:
        shutil.chown(admin, "nobody")
        user = ["-R", "nobody"]
    port = free_port()
    (base / "xrootd.cfg").write_text(f"all.export {data}\nxrd.allow host localhost\nall.adminpath {admin}\n"
                                     f"all.pidpath {admin}\n")
    log = base / "xrootd.log"
    proc = start(["xrootd", *user, "-p", port, "-c", base / "xrootd.cfg", "-n", f"svj{port}"], log, cwd=admin)
    try:
        wait_port(port, proc, log)
        yield data, f"root://localhost:{port}/", proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        stop(proc)
        shutil.rmtree(base, ignore_errors=True)


def serve(data: Path, url: str, src: str, name: str | None = None) -> str:
    dst = data / (name or Path(src).name)
    shutil.copy(src, dst)
    os.chmod(dst, 0o644)
    return f"{url}/{dst}"


@pytest.mark.parametrize("executor", ["iterative", "dask"])
def test_xrootd_reads_are_identical(xrootd_server, toy_models, reference, tmp_path, executor):
    data, url, _ = xrootd_server
    files = {name: [serve(data, url, fs[0])] for name, fs in small_files().items()}
    assert all(f.startswith("root://localhost:") and "//" in f[7:] for fs in files.values() for f in fs)
    ex = "{name: iterative, chunksize: 10000}" if executor == "iterative" else \
        "{name: dask, workers: 2, chunksize: 200, xrootd: {timeout: 30, retries: 2}}"
    out, report = run_processor(load_job(job_yaml(tmp_path / "job.yaml", files, toy_models, ex)))
    assert_same_output(reference, out)
    assert report.files["qcd"] == files["qcd"]


CHECK_INPUTS = runner.check_inputs


def _midrun(monkeypatch, action):
    """Do ``action`` after the preflight checked every file, before any chunk is read."""
    orig = CHECK_INPUTS

    def patched(cfg, report):
        usable = orig(cfg, report)
        action()
        return usable

    monkeypatch.setattr(runner, "check_inputs", patched)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _outcome(cfg):
    """('error', message) or ('skipped', [(stage, reason)]) of a run."""
    try:
        _, report = run_processor(cfg)
    except InputFileError as err:
        return "error", str(err)
    return "skipped", [(s["stage"], s["reason"]) for s in report.skipped]


@pytest.mark.parametrize("what", ["disappears", "truncated"])
def test_xrootd_file_lost_mid_run_like_local(xrootd_server, toy_models, tmp_path, monkeypatch, what):
    """A file removed or cut on the server after the preflight: the same named error, or counted skip."""
    import re

    data, url, _ = xrootd_server
    good = embedded_file("ttbar.root")
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    results = {}
    for where in ("local", "xrootd"):
        for skip in (False, True):
            name = f"{what}_{skip}.root"
            if where == "local":
                target = local_dir / name
                shutil.copy(good, target)
                path = str(target)
            else:
                path = serve(data, url, good, name)
                target = data / name
            act = (lambda t=target: t.unlink()) if what == "disappears" else (lambda t=target: _truncate(t))
            _midrun(monkeypatch, act)
            ex = f"{{name: iterative, chunksize: 100, skip_bad_files: {str(skip).lower()}}}"
            files = {"ttbar": [serve(data, url, good, "ttbar_ok.root") if where == "xrootd" else good, path]}
            kind, detail = _outcome(load_job(job_yaml(tmp_path / f"{where}{skip}.yaml", files, toy_models, ex)))
            text = detail if kind == "error" else " ".join(r for _, r in detail)
            assert path in text, (where, skip, detail)
            results[(where, skip)] = (kind, [s for s, _ in detail] if kind == "skipped" else None,
                                      re.sub(r"\S*" + re.escape(name), "FILE", text))
    for skip in (False, True):
        loc, xrd = results[("local", skip)], results[("xrootd", skip)]
        assert loc[:2] == xrd[:2], (loc, xrd)
        assert loc[0] == ("skipped" if skip else "error")
        assert "FILE: cannot be processed" in loc[2] and "FILE: cannot be processed" in xrd[2]
    if what == "truncated":
        # found by the preflight (fEND vs the size the server reports) when cut before the run
        path = serve(data, url, good, "cut_before.root")
        _truncate(data / "cut_before.root")
        monkeypatch.undo()
        cfg = load_job(job_yaml(tmp_path / "before.yaml", {"ttbar": [path]}, toy_models, "{name: iterative}"))
        with pytest.raises(InputFileError, match=re.escape(path) + r": truncated file \(\d+ of the \d+ bytes"):
            run_processor(cfg)


def test_xrootd_stalled_server_times_out_naming_the_file(xrootd_server, toy_models, tmp_path):
    """A server that stops answering: the read gives up after executor.xrootd.timeout, naming the file."""
    data, url, proc = xrootd_server
    path = serve(data, url, embedded_file("ttbar.root"), "stalled.root")
    cfg = load_job(job_yaml(tmp_path / "job.yaml", {"ttbar": [path]}, toy_models,
                            "{name: iterative, xrootd: {timeout: 3, retries: 1}}"))
    os.kill(proc.pid, signal.SIGSTOP)
    errors = []

    def run():
        try:
            run_processor(cfg)
        except Exception as err:  # noqa: BLE001 - checked below
            errors.append(err)

    reader = threading.Thread(target=run, daemon=True)
    try:
        reader.start()
        reader.join(60)  # the 3 s timeout (1 retry) gives up long before: waited on, not timed
        assert not reader.is_alive(), "the read of a stalled server did not give up"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert len(errors) == 1 and isinstance(errors[0], InputFileError), errors
    assert path in str(errors[0]), errors[0]  # the error names the file


def re_escape(s: str) -> str:
    import re

    return re.escape(s)
