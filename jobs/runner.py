"""Running the processor over a job's fileset: preflight, executors, checkpoints, finalisation.

:func:`run_processor` is the one entry point; the executors are coffea's (``iterative``,
``futures``, ``dask``) behind one call. The dask executor starts a ``LocalCluster`` (processes,
one thread each) unless ``executor.scheduler`` names an existing scheduler, or
``executor.condor`` asks for a dask-jobqueue HTCondor cluster.

Bad input is found before any chunk runs (:func:`preflight`): a file that cannot be opened, is
empty, lacks the tree or a branch raises an error naming the file (and branch), or, with
``executor.skip_bad_files``, is skipped, counted and listed in the run report. Chunks that fail
while running are retried (``executor.retries``, dask) and otherwise raise: nothing is dropped
silently. With ``executor.checkpoint_dir`` every finished chunk's output is kept, keyed by the
job's configuration digest, so a re-run processes only the missing chunks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import uproot
from coffea import processor
from coffea.processor import SimpleCheckpointer
from coffea.util import save
from dask.distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from svjscout import __version__
from svjscout.core.exceptions import ConfigError, InputFileError, ModelMismatchError
from svjscout.jobs.config import JobConfig, config_digest, load_job
from svjscout.processors.datasets import FileNorm, dataset_info, file_normalisation, read_file_norm
from svjscout.processors.files import domain_error, failed_file, root_message
from svjscout.processors.inference import check_models
from svjscout.processors.normalize import normalize
from svjscout.processors.prefilter import ROW_NOTE
from svjscout.processors.processor import SVJProcessor, cutflow_table
from svjscout.processors.settings import DatasetInfo, ProcessorConfig

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What a run did: files used, files skipped (with the reason), events, timing."""

    files: dict[str, list[str]] = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    datasets: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    executor: dict = field(default_factory=dict)  # engine, scheduler, workers joined / retired / lost

    def to_json(self) -> dict:
        return {"files": self.files, "inputs": self.inputs, "skipped": self.skipped, "events": self.events,
                "datasets": self.datasets, "seconds": self.seconds, "executor": self.executor}


def _lost_sumw(path: str, tree: str, gen_weight: str) -> float | None:
    """The sumw recorded in a skipped file, if its Runs tree can still be read (else None)."""
    try:
        return file_normalisation(path, tree, gen_weight, sum_gen_weight=False, require_complete=False)[0]
    except InputFileError:
        return None


def _file_record(dataset: str, path: str, entries: int) -> dict:
    """Identity of an input file for ``provenance.json``: size, modification time, entries."""
    rec = {"dataset": dataset, "path": path, "entries": entries, "bytes": None, "mtime": None}
    if "://" not in path:
        st = os.stat(path)
        rec["bytes"], rec["mtime"] = st.st_size, st.st_mtime
    return rec


def _skip(cfg: JobConfig, report: RunReport, dataset: str, path: str, err: InputFileError, stage: str) -> None:
    """Record a bad file as a counted skip, or stop with ``err`` (no ``executor.skip_bad_files``)."""
    if not cfg.executor.skip_bad_files:
        raise err
    log.warning("skipping bad file (%s): %s", stage, err)
    is_mc = cfg.datasets[dataset].kind != "data"
    lost = _lost_sumw(path, cfg.schema_map.tree, cfg.schema_map.gen_weight) if is_mc else None
    report.skipped.append({"dataset": dataset, "file": path, "stage": stage, "reason": str(err), "sumw": lost})


def check_inputs(cfg: JobConfig, report: RunReport) -> dict[str, dict[str, FileNorm]]:
    """Open every file of every dataset (tree, branches, completeness, normalisation).

    A bad file stops the run with an :class:`InputFileError` naming it, or with
    ``executor.skip_bad_files`` is recorded in ``report.skipped``. Returns the usable files.
    """
    bmap = cfg.schema_map
    usable: dict[str, dict[str, FileNorm]] = {}
    for name, spec in cfg.datasets.items():
        is_mc = spec.kind != "data"
        usable[name] = {}
        for path in cfg.files(name):
            try:
                norm = read_file_norm(path, bmap, is_mc, spec.sumw_from == "genWeight")
            except InputFileError as err:
                _skip(cfg, report, name, path, err, "preflight")
                continue
            if is_mc and norm.sumw is None and spec.sumw is None:
                raise ConfigError(
                    f"dataset {name!r}: {path} has no Runs tree with genEventSumw, so the generated sum of "
                    f"weights is unknown (summing genWeight over a skimmed file undercounts it). Set "
                    f"datasets.{name}.sumw, or datasets.{name}.sumw_from: genWeight if the files are not skimmed")
            usable[name][path] = norm
            report.inputs.append(_file_record(name, path, norm.entries))
    return usable


def dataset_infos(cfg: JobConfig, usable: dict[str, dict[str, FileNorm]], report: RunReport) -> dict[str, DatasetInfo]:
    """Each dataset's normalisation from the files that are processed; fills ``report``.

    The sum of weights is the sum over the usable files only, so a dataset that lost files is
    normalised to what was processed; the fraction of sum of weights it lost is reported (exact
    where a skipped file's Runs tree could still be read, otherwise listed as unknown).
    """
    infos = {}
    report.files, report.events, report.datasets = {}, {}, {}
    for name, spec in cfg.datasets.items():
        files = usable[name]
        if not files:
            raise InputFileError(f"dataset {name!r}: no usable file among {cfg.files(name)}")
        report.files[name] = list(files)
        report.events[name] = sum(f.entries for f in files.values())
        info = dataset_info(name, spec.kind, files, xsec=spec.xsec, sumw=spec.sumw, mzprime=spec.mzprime,
                            rinv=spec.rinv)
        infos[name] = info
        counts = [f.generated for f in files.values()]
        report.datasets[name] = {**info.model_dump(), "lost": _lost(name, spec, files, report),
                                 # events generated (Runs genEventCount) where every file records it
                                 "generated": sum(counts) if counts and None not in counts else None}
    return infos


def _lost(name: str, spec, files: dict[str, FileNorm], report: RunReport) -> dict | None:
    """What a dataset lost to skipped files: count, known sum of weights and its fraction."""
    skipped = [s for s in report.skipped if s["dataset"] == name]
    if not skipped:
        return None
    known = sum(s["sumw"] for s in skipped if s["sumw"] is not None)
    kept = sum(f.sumw for f in files.values() if f.sumw is not None)
    unknown = [s["file"] for s in skipped if s["sumw"] is None]
    out = {"files": len(skipped), "of_files": len(skipped) + len(files), "sumw": known,
           "sumw_fraction": known / (known + kept) if spec.kind != "data" and known + kept > 0 else None,
           "sumw_unknown_files": unknown}
    if spec.sumw is not None:
        out["warning"] = (f"datasets.{name}.sumw is given in the job for all its files; {len(skipped)} were "
                          "skipped, so that normalisation does not match what was processed")
        log.warning("dataset %r: %s", name, out["warning"])
    return out


def preflight(cfg: JobConfig, report: RunReport) -> dict[str, DatasetInfo]:
    """Check the models, then every file, and work out each dataset's normalisation; fill ``report``."""
    check_job_models(cfg)
    return dataset_infos(cfg, check_inputs(cfg, report), report)


def check_job_models(cfg: JobConfig) -> None:
    """Open and check the job's ONNX models (metadata, features, onnxruntime) before any data file
    is touched: a model error names the model file and its key (``analysis.lundnet_model`` /
    ``twin_model``) and is never taken for an input file's (:func:`check_models`)."""
    a = cfg.analysis
    check_models(a.model_copy(update={"lundnet_model": cfg.resolve(a.lundnet_model),
                                      "twin_model": cfg.resolve(a.twin_model)}))


class JobProcessor(NamedTuple):
    """What :func:`processor_from_job` gives: the processor, the fileset coffea reads, the preflight's report."""

    processor: SVJProcessor
    fileset: dict
    report: RunReport

    @property
    def config(self) -> ProcessorConfig:
        return self.processor.config


def processor_config_from_job(job: JobConfig | str | Path, overrides: dict | None = None,
                              skim_dir: str | None = None) -> tuple[ProcessorConfig, dict, RunReport]:
    """(:class:`ProcessorConfig`, fileset, report) of a job: the preflight of ``svjscout run``
    (models, then every file; each dataset's cross section and sum of weights from its files'
    ``Runs`` trees where the job does not give them), without running anything.

    ``job``: a job YAML path or a loaded :class:`JobConfig`; ``overrides``: dotted keys, as
    ``svjscout run --set`` (``{"analysis.wp": [0.5, 0.5]}``). The fileset is coffea's
    ``{dataset: {"files": {path: tree}}}`` of the usable files.
    """
    cfg = job if isinstance(job, JobConfig) else load_job(job, overrides)
    if isinstance(job, JobConfig) and overrides:
        raise ConfigError("overrides apply to a job file; give the path, or change the JobConfig")
    report = RunReport()
    if skim_dir is None:
        check_job_models(cfg)
    infos = dataset_infos(cfg, check_inputs(cfg, report), report)
    return cfg.processor_config(infos, skim_dir=skim_dir), _fileset(cfg, report), report


def processor_from_job(job: JobConfig | str | Path, overrides: dict | None = None,
                       skim_dir: str | None = None) -> JobProcessor:
    """An :class:`SVJProcessor` for a job file, with its fileset (see :func:`processor_config_from_job`).

    >>> # proc, fileset, _ = processor_from_job("jobs/local.yaml")
    >>> # out = processor.Runner(processor.IterativeExecutor(), schema=SVJScoutingSchema)(fileset, proc, "Events")
    """
    pcfg, fileset, report = processor_config_from_job(job, overrides, skim_dir)
    return JobProcessor(SVJProcessor(pcfg), fileset, report)


def _fileset(cfg: JobConfig, report: RunReport) -> dict:
    return {name: {"files": {p: cfg.schema_map.tree for p in files}} for name, files in report.files.items()}


class _Checkpointer:
    """coffea's SimpleCheckpointer, keyed by the job's configuration digest as well."""

    def __new__(cls, directory: str, digest: str):
        return SimpleCheckpointer(str(Path(directory) / digest), overwrite=True)


#: Environment of every worker: one thread for ONNX Runtime, OpenMP and BLAS (one chunk per worker
#: thread; more threads per worker oversubscribe the cores the other workers use).
WORKER_ENV = {"SVJSCOUT_ORT_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


def xrootd_env(timeout: int, retries: int) -> dict[str, str]:
    """XRootD client settings as environment variables (read by every process that reads ``root://``)."""
    env = {"XRD_CONNECTIONRETRY": str(max(int(retries), 1))}
    if timeout > 0:
        env["XRD_REQUESTTIMEOUT"] = str(int(timeout))
        env["XRD_STREAMTIMEOUT"] = str(int(timeout))
    return env


def configure_xrootd(timeout: int, retries: int, remote: bool = True) -> None:
    """Apply ``executor.xrootd`` in this process: XRootD client settings and fsspec-xrootd's timeout.

    Safe without the XRootD bindings (nothing to configure then). Run in the client process (the
    preflight reads there) and, through :class:`WorkerSetup`, in every dask worker. Without
    ``remote`` (a job of local files only) only the environment is set; nothing is imported.
    """
    env = xrootd_env(timeout, retries)
    os.environ.update(env)
    if not remote:
        return
    try:
        from XRootD import client as xrd  # optional: the XRootD bindings (af extra), only for root:// files

        xrd.EnvPutInt("ConnectionRetry", int(env["XRD_CONNECTIONRETRY"]))
        if timeout > 0:
            xrd.EnvPutInt("RequestTimeout", int(timeout))
            xrd.EnvPutInt("StreamTimeout", int(timeout))
    except ImportError:
        pass
    try:
        from fsspec_xrootd import XRootDFileSystem  # optional: af extra, only for root:// files
    except ImportError:
        return
    if XRootDFileSystem.default_timeout != timeout:
        XRootDFileSystem.default_timeout = timeout
        XRootDFileSystem.clear_instance_cache()  # instances made with the old timeout


class WorkerSetup(WorkerPlugin):
    """Worker plugin: the worker environment and XRootD settings in every worker, also late joiners."""

    name = "svjscout-worker-setup"

    def __init__(self, env: dict[str, str], xrootd: tuple[int, int, bool]):
        timeout, retries, remote = xrootd
        self.env, self.xrootd = dict(env), (timeout, retries, remote)

    def setup(self, worker) -> None:
        os.environ.update(self.env)
        configure_xrootd(*self.xrootd)


class WorkerWatch:
    """Counts the workers that joined, left (retired) and were lost while a run used a scheduler.

    Reads the scheduler's event log (``remove-worker`` with ``expected: False`` is a worker that
    died or lost its connection; its chunks run again elsewhere, up to ``executor.retries``).
    """

    def __init__(self, client):
        self.client = client
        try:
            self.t0 = client.run_on_scheduler(time.time)
        except Exception:  # noqa: BLE001 - a scheduler that refuses run_on_scheduler: our clock
            self.t0 = time.time()
        self.workers_at_start = len(client.scheduler_info().get("workers", {}))

    def record(self) -> dict:
        try:
            events = self.client.get_events("all")
        except Exception as err:  # noqa: BLE001 - the scheduler is gone; say so rather than fail the run
            return {"workers_at_start": self.workers_at_start, "events": f"unavailable ({type(err).__name__})"}
        joined, lost, retired, rerun = [], [], [], 0
        for t, msg in events:
            if t < self.t0 or not isinstance(msg, dict):
                continue
            if msg.get("action") == "add-worker":
                joined.append(msg.get("worker"))
            elif msg.get("action") == "remove-worker":
                if msg.get("expected"):
                    retired.append(msg.get("worker"))
                else:
                    lost.append(msg.get("worker"))
                    rerun += len(msg.get("processing-tasks") or ()) + len(msg.get("lost-computed-tasks") or ())
        return {"workers_at_start": self.workers_at_start, "workers_joined": len(joined),
                "workers_retired": len(retired), "workers_lost": len(lost), "lost_workers": lost,
                "tasks_rerun": rerun}


def _merge_executor_record(report: RunReport | None, record: dict) -> None:
    """Add one executor use to the report (a run that drops a bad file uses the executor again)."""
    if report is None:
        return
    old = report.executor
    if old and old.get("engine") == record.get("engine"):
        for k in ("workers_joined", "workers_retired", "workers_lost", "tasks_rerun"):
            record[k] = record.get(k, 0) + old.get(k, 0)
        record["lost_workers"] = old.get("lost_workers", []) + record.get("lost_workers", [])
        record["workers_at_start"] = old.get("workers_at_start", record.get("workers_at_start"))
    report.executor = record
    if record.get("workers_lost"):
        log.warning("%d dask worker(s) lost during the run (%s); the %d task(s) they held ran again on other "
                    "workers (executor.retries)", record["workers_lost"], ", ".join(map(str, record["lost_workers"])),
                    record.get("tasks_rerun", 0))


def _forget_remote_handles() -> None:
    """Drop fsspec-xrootd's cached file systems and their open file handles.

    The processing then opens each remote file again, as it does a local one: a file removed
    on the server since the preflight is missing there too (an XRootD server keeps serving a
    deleted file to every client while one handle on it is open), not read through a stale handle.
    """
    try:
        from fsspec_xrootd import XRootDFileSystem  # optional: af extra, only for root:// files
    except ImportError:
        return
    for fs in list(XRootDFileSystem._cache.values()):
        with contextlib.suppress(Exception):
            fs._readonly_filehandle_cache.close_all()
    XRootDFileSystem.clear_instance_cache()


def _remote(cfg: JobConfig) -> bool:
    """Whether the job reads any file through a URL (``root://``...)."""
    return any("://" in f for spec in cfg.datasets.values() for f in spec.files)


def _needs_af(key: str, err: ImportError) -> ConfigError:
    return ConfigError(f"executor.{key} needs the 'af' extra: pip install 'svjscout[af]' ({err})")


def jobqueue_cluster(cfg: JobConfig):
    """The dask-jobqueue cluster of ``executor.slurm`` / ``executor.condor`` (not yet scaled).

    The job-config keys are the cluster's arguments; unset ones default to one single-threaded
    worker per job (``cores: 1, processes: 1``) with ``executor.memory_limit``, and the worker
    environment (:data:`WORKER_ENV`, ``executor.xrootd``) is exported in the job script.
    """
    ex = cfg.executor
    key = "slurm" if ex.slurm is not None else "condor"
    try:
        from dask_jobqueue import HTCondorCluster, SLURMCluster  # optional: af extra
    except ImportError as err:
        raise _needs_af(key, err) from err
    Cluster = SLURMCluster if key == "slurm" else HTCondorCluster
    kwargs = {"cores": 1, "processes": 1, "memory": ex.memory_limit, **(getattr(ex, key) or {})}
    # the dashboard on a free port unless one is named (8787 is often taken on a shared login node)
    kwargs["scheduler_options"] = {"dashboard_address": ":0", **kwargs.get("scheduler_options", {})}
    env = {**WORKER_ENV, **xrootd_env(ex.xrootd.timeout, ex.xrootd.retries)}
    kwargs["job_script_prologue"] = [*kwargs.get("job_script_prologue", []),
                                     *(f"export {k}={v}" for k, v in env.items())]
    try:
        return Cluster(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"executor.{key}: {err}") from err


def _gateway_cluster(cfg: JobConfig):
    """(gateway, cluster) of ``executor.gateway``: a new cluster with the job's options, scaled."""
    ex = cfg.executor
    g = ex.gateway
    try:
        from dask_gateway import BasicAuth, Gateway  # optional: af extra
    except ImportError as err:
        raise _needs_af("gateway", err) from err
    assert g is not None, "executor.gateway is not set (_executor starts a gateway cluster only when it is)"
    auth = g.auth
    if g.auth == "basic":
        password = os.environ.get(g.password_env) if g.password_env else None
        if g.password_env and password is None:
            raise ConfigError(f"executor.gateway.password_env: the environment variable {g.password_env} is not set")
        auth = BasicAuth(g.username, password)
    gateway = Gateway(address=g.address, proxy_address=g.proxy_address, public_address=g.public_address, auth=auth)
    try:
        options = gateway.cluster_options()
        for k, v in g.cluster_options.items():
            if k not in options:
                raise ConfigError(f"executor.gateway.cluster_options.{k}: not an option of this gateway "
                                  f"(it has {', '.join(sorted(options)) or 'none'})")
            options[k] = v
        cluster = gateway.new_cluster(options, shutdown_on_close=g.shutdown)
    except BaseException:
        close_gateway(gateway)
        raise
    if g.adaptive is not None:
        cluster.adapt(minimum=g.adaptive.minimum, maximum=g.adaptive.maximum)
    else:
        cluster.scale(ex.workers)
    return gateway, cluster


def close_gateway(obj) -> None:
    """Close a dask-gateway ``Gateway`` or ``GatewayCluster`` once.

    Their ``__del__`` closes again, which with this distributed raises from a stopped event loop
    (an unraisable error at garbage collection); dropping the loop runner after closing avoids it.
    """
    try:
        obj.close()
    finally:
        for gw in {id(g): g for g in (obj, getattr(obj, "gateway", None)) if g is not None}.values():
            vars(gw).pop("_loop_runner", None)


def _wait_for_worker(client, cfg: JobConfig, engine: str) -> None:
    """Wait for the first worker of a started cluster; a clear error if none arrives in time."""
    ex = cfg.executor
    if engine == "gateway":
        assert ex.gateway is not None, "engine 'gateway' without executor.gateway"
        if ex.gateway.adaptive is not None and ex.gateway.adaptive.minimum == 0:
            return  # an adaptive cluster from zero starts workers once chunks are submitted
    try:
        client.wait_for_workers(1, timeout=ex.worker_timeout)
    except TimeoutError as err:
        hint = {"slurm": "squeue / the job's output file", "condor": "condor_q -better-analyze",
                "gateway": "the gateway's cluster logs"}.get(engine, "the scheduler's log")
        raise ConfigError(f"executor.{engine}: no dask worker connected within executor.worker_timeout = "
                          f"{ex.worker_timeout:g} s (check {hint})") from err


def dask_engine_client(stack: contextlib.ExitStack, cfg: JobConfig) -> Client:
    """A dask ``Client`` on the engine of ``cfg.executor`` (``scheduler``: an existing scheduler;
    ``slurm``/``condor``: dask-jobqueue; ``gateway``: dask-gateway; else a LocalCluster), its cluster and
    client closed by ``stack``. Used by the processing runs and by ``svjscout generate`` (jobs/generation.py)."""
    ex = cfg.executor
    engine = ex.engine
    if engine == "scheduler":
        client = Client(ex.scheduler, timeout=ex.worker_timeout)
    elif engine in ("slurm", "condor"):
        cluster = stack.enter_context(jobqueue_cluster(cfg))
        cluster.scale(jobs=ex.workers)
        client = Client(cluster)
    elif engine == "gateway":
        gateway, cluster = _gateway_cluster(cfg)
        stack.callback(close_gateway, gateway)
        stack.callback(close_gateway, cluster)  # shuts it down too unless executor.gateway.shutdown: false
        client = cluster.get_client()
    else:
        cluster = stack.enter_context(LocalCluster(
            n_workers=ex.workers, threads_per_worker=ex.threads_per_worker, processes=True,
            memory_limit=ex.memory_limit, dashboard_address=":0", env=dict(WORKER_ENV)))  # 8787 may be taken
        client = Client(cluster)
    stack.callback(client.close)
    return client


@contextlib.contextmanager
def _executor(cfg: JobConfig, progress: bool, report: RunReport | None = None):
    """The coffea executor of ``cfg.executor``; with dask, the client and cluster for the run.

    The dask engine is ``executor.scheduler`` (an existing scheduler), ``executor.slurm`` /
    ``executor.condor`` (dask-jobqueue), ``executor.gateway`` (dask-gateway) or a LocalCluster.
    The run's use of the workers (lost ones included) goes into ``report.executor``.
    """
    ex = cfg.executor
    if ex.name != "dask" and ex.engine != "local":
        log.warning("executor.%s is ignored: executor.name is %r (set it to dask to use it)", ex.engine, ex.name)
    if ex.name == "iterative":
        _merge_executor_record(report, {"engine": "iterative"})
        yield processor.IterativeExecutor(status=progress)
        return
    if ex.name == "futures":
        _merge_executor_record(report, {"engine": "futures", "workers": ex.workers})
        yield processor.FuturesExecutor(workers=ex.workers, status=progress)
        return
    engine = ex.engine
    with contextlib.ExitStack() as stack:
        client = dask_engine_client(stack, cfg)
        client.register_plugin(WorkerSetup(WORKER_ENV, (ex.xrootd.timeout, ex.xrootd.retries, _remote(cfg))))
        if engine != "local":
            _wait_for_worker(client, cfg, engine)
        watch = WorkerWatch(client)
        record = {"engine": engine, "scheduler": client.scheduler.address}
        try:
            yield processor.DaskExecutor(client=client, status=progress, retries=ex.retries, treereduction=8)
        finally:
            _merge_executor_record(report, {**record, **watch.record()})


def run_processor(cfg: JobConfig, skim_dir: str | None = None, progress: bool = False) -> tuple[dict, RunReport]:
    """Run the processor over the job's datasets; return (finalised output, report).

    A file that passes the preflight but fails while its chunks are read (a corrupt basket)
    stops the run with an :class:`InputFileError` naming it, or with ``executor.skip_bad_files``
    is dropped, recorded, and the datasets are renormalised and processed again without it
    (finished chunks come back from the checkpoint directory, when one is set).

    The job's ONNX models are opened and checked before any data file (:func:`check_job_models`);
    the output is normalised once, by the processor's ``postprocess`` (coffea's Runner calls it;
    :func:`normalize` of a normalised output returns it unchanged).
    """
    report = RunReport()
    t0 = time.perf_counter()
    remote = _remote(cfg)
    configure_xrootd(cfg.executor.xrootd.timeout, cfg.executor.xrootd.retries, remote)
    if skim_dir is None:
        check_job_models(cfg)
    usable = check_inputs(cfg, report)
    if remote:
        _forget_remote_handles()
    digest = config_digest(cfg) + ("-skim" if skim_dir else "")
    while True:
        infos = dataset_infos(cfg, usable, report)
        pcfg = cfg.processor_config(infos, skim_dir=skim_dir)
        fileset = _fileset(cfg, report)
        checkpointer = _Checkpointer(cfg.executor.checkpoint_dir, digest) if cfg.executor.checkpoint_dir else None
        try:
            with _executor(cfg, progress, report) as executor:
                runner = processor.Runner(executor=executor, schema=cfg.schema_map.schema_class(),
                                          chunksize=cfg.executor.chunksize,
                                          skipbadfiles=False, checkpointer=checkpointer,
                                          xrootdtimeout=cfg.executor.xrootd.timeout or None)
                output = runner(fileset, processor_instance=SVJProcessor(pcfg), treename=cfg.schema_map.tree,
                                # NanoEvents built from the processor's branches only (schema.processor_branches)
                                iteritems_options={"filter_name": cfg.schema_map.processor_branches()})
            break
        except Exception as err:  # noqa: BLE001 - coffea and dask wrap what a chunk raised
            bad = _chunk_failure(err, usable)
            if bad is None:
                raise
            dataset, path, file_err = bad
            _skip(cfg, report, dataset, path, file_err, "processing")
            del usable[dataset][path]
            report.inputs = [r for r in report.inputs if r["path"] != path]
    output = normalize(output, pcfg)  # done by postprocess already: returned unchanged
    output["wp"] = {"x0": float(cfg.analysis.wp[0]), "y0": float(cfg.analysis.wp[1]),
                    "source": "configured (analysis.wp)"}
    output["datasets"] = {k: v.model_dump() for k, v in infos.items()}
    report.seconds = time.perf_counter() - t0
    output["report"] = report.to_json()
    return output, report


def _chunk_failure(err: BaseException, usable: dict[str, dict[str, FileNorm]]):
    """(dataset, file, InputFileError) for a chunk that failed reading one of our files, else None.

    An svjscout error raised inside a chunk that is not about a file (e.g. a configuration error)
    is re-raised as itself, unwrapped from coffea's and dask's exception.
    """
    dom = domain_error(err)
    path = failed_file(err) or _named_file(err, usable)
    if dom is None and _model_failure(err):  # onnxruntime failed scoring: the models' fault, not the file's
        raise ModelMismatchError(f"analysis.lundnet_model / analysis.twin_model: onnxruntime failed while scoring "
                                 f"{'a chunk of ' + path if path else 'a chunk'} ({root_message(err)}); "
                                 "no input file is blamed or skipped for a model error") from err
    owner = next((ds for ds, files in usable.items() if path in files), None)
    if owner is None:
        if dom is not None:
            raise dom from err
        return None
    if dom is not None and not isinstance(dom, InputFileError):
        raise dom from err
    cause = str(dom) if dom is not None else root_message(err)
    return owner, path, InputFileError(f"{path}: cannot be processed ({cause})")


def _model_failure(err: BaseException) -> bool:
    """Whether a chunk failed in onnxruntime (its exception types, or its message through dask)."""
    seen = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__module__.startswith("onnxruntime") or "[ONNXRuntimeError]" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _named_file(err: BaseException, usable: dict[str, dict[str, FileNorm]]) -> str | None:
    """The one input file a failure outside a chunk names (coffea's preprocessing opens every file
    first: a file gone since the preflight fails there, locally or over XRootD), else None."""
    texts, seen = [], set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        texts.append(f"{e} {getattr(e, 'filename', '') or ''}")
        e = e.__cause__ or e.__context__
    text = " ".join(texts)
    named = {p for files in usable.values() for p in files if any(form in text for form in _path_forms(p))}
    return named.pop() if len(named) == 1 else None


def _path_forms(path: str) -> tuple[str, ...]:
    """How an error may spell a file: as given, or for a URL its path on the server (XRootD's messages)."""
    if "://" not in path:
        return (path,)
    return path, "/" + urlsplit(path).path.lstrip("/")


def save_outputs(output: dict, outdir: str | Path) -> list[Path]:
    """Write ``histograms.coffea``, ``cutflow.json``, ``histograms.root`` (TH1 ``DATASET/PLANE/REGION``)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = [outdir / "histograms.coffea", outdir / "cutflow.json", outdir / "histograms.root"]
    save(output, paths[0])
    cut = {"cutflow": cutflow_table(output), "rows": {"prefilter": ROW_NOTE}, "counts": output.get("counts", {}),
           "skipped": output.get("report", {}).get("skipped", []),
           "lost": {ds: d["lost"] for ds, d in output.get("report", {}).get("datasets", {}).items() if d.get("lost")}}
    paths[1].write_text(json.dumps(cut, indent=1, default=float))
    h = output.get("hists", {}).get("mt_abcd")
    wp = output.get("wp")
    with uproot.recreate(paths[2]) as f:
        # what the TH1s are: the working point their regions are split at, and who wrote them
        f["svjscout_meta"] = json.dumps({"svjscout": __version__, "wp": wp,
                                         "regions": "A: X>=x0,Y<y0  B: X>=x0,Y>=y0  C: X<x0,Y<y0  D: X<x0,Y>=y0",
                                         "histograms": "DATASET/PLANE/REGION: M_T [GeV], scaled to xsec x lumi"})
        if h is not None:
            for ds in h.axes["dataset"]:
                for plane in h.axes["plane"]:
                    for region in h.axes["region"]:
                        f[f"{ds}/{plane}/{region}"] = h[{"dataset": ds, "plane": plane, "region": region}]
    return paths


os.environ.setdefault("SVJSCOUT_ORT_THREADS", "1")
