"""Generation on the processing engines: ``svjscout generate --executor dask --scheduler ...``.

The chunks of :func:`svjscout.samples.generate.generate_file` run through a *chunk mapper*; this
module gives the mappers of the engines ``svjscout run`` uses (:mod:`svjscout.jobs.runner`):

* ``iterative``: in this process; ``futures``: ``--workers`` local processes (spawned);
* ``dask`` with ``--scheduler``: ``local`` (a ``LocalCluster`` of ``--workers`` processes, one
  thread each), a scheduler ADDRESS (``tcp://host:8786``: an analysis facility's scheduler),
  ``slurm`` / ``condor`` (dask-jobqueue, ``--workers`` jobs, the cluster builder of
  :func:`svjscout.jobs.runner.jobqueue_cluster`) or ``gateway`` (dask-gateway). The cluster's
  settings come from ``--executor-config YAML``: a job file (its ``executor:`` block, e.g.
  ``jobs/af.yaml``) or a file holding only that block, validated as
  :class:`svjscout.jobs.config.ExecutorSpec` (errors name the key).

Each chunk is one dask task (``retries`` from the executor settings): the worker generates it
and returns its columns; this process stores the part (``OUT.parts``) as it arrives and
assembles the file in chunk order once all are stored, so the file is the one the iterative
executor writes whatever the workers, their number or their losses (per-chunk seeds).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml
from dask.distributed import as_completed
from pydantic import ValidationError

from svjscout.core.exceptions import ConfigError
from svjscout.jobs.config import ExecutorSpec, JobConfig
from svjscout.jobs.runner import (
    WorkerWatch,
    _wait_for_worker,
    dask_engine_client,
)
from svjscout.samples.generate import ChunkMapper, local_mapper

log = logging.getLogger(__name__)

ENGINES = ("local", "slurm", "condor", "gateway")


def executor_spec(executor: str | None = None, scheduler: str | None = None, workers: int | None = None,
                  config: str | Path | None = None) -> ExecutorSpec:
    """The executor settings of a generation: ``config`` (a YAML job file or executor block), then
    the command line (``--executor``, ``--scheduler``, ``--workers``).

    ``scheduler`` is ``local``, ``slurm``, ``condor``, ``gateway`` or a scheduler address; it
    implies ``executor = dask``. Without ``config``, ``slurm``/``condor`` use dask-jobqueue's
    defaults (one single-threaded worker per job) and ``gateway`` the environment's gateway.
    """
    raw: dict = {}
    if config is not None:
        path = Path(config)
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"--executor-config {path}: cannot read ({err})") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"--executor-config {path}: expected a mapping (a job file or its executor block)")
        raw = dict(loaded.get("executor", loaded) if "executor" in loaded or "datasets" in loaded else loaded)
        if not isinstance(raw, dict):
            raise ConfigError(f"--executor-config {path}: executor: expected a mapping")
    source = f"--executor-config {config}" if config is not None else "the command line"
    if scheduler is not None:
        if executor not in (None, "dask"):
            raise ConfigError(f"--scheduler {scheduler} needs --executor dask (got --executor {executor})")
        executor = "dask"
        keep = scheduler if scheduler in ENGINES else "scheduler"
        for key in ("scheduler", "slurm", "condor", "gateway"):  # the command line names the engine
            if key != keep:
                raw.pop(key, None)
        if scheduler in ("slurm", "condor", "gateway"):
            raw[scheduler] = raw.get(scheduler) or {}
        elif scheduler != "local":
            raw["scheduler"] = scheduler
    if executor is not None:
        raw["name"] = executor
    if workers is not None:
        raw["workers"] = workers
    try:
        return ExecutorSpec.model_validate(raw)
    except ValidationError as err:
        lines = [f"  executor.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"{source}: invalid executor settings\n" + "\n".join(lines)) from err


def _job(spec: ExecutorSpec) -> JobConfig:
    """A job holding only the executor settings (the runner's cluster builders read ``cfg.executor``)."""
    return JobConfig.model_construct(executor=spec, datasets={})


@contextlib.contextmanager
def dask_client(spec: ExecutorSpec) -> Iterator:
    """A dask ``Client`` on the engine of ``spec`` (closed, and its cluster shut down, on exit)."""
    job = _job(spec)
    engine = spec.engine
    with contextlib.ExitStack() as stack:
        client = dask_engine_client(stack, job)
        if engine != "local":
            _wait_for_worker(client, job, engine)
        yield client


def dask_mapper(client, retries: int = 3, label: str = "generate") -> ChunkMapper:
    """A chunk mapper submitting one task per chunk to ``client``; results as they finish."""
    def run(fn, tasks):
        if not tasks:
            return
        run_id = uuid.uuid4().hex[:8]
        futures = [client.submit(fn, task, key=f"{label}-chunk{task[1]}-{run_id}", pure=False,
                                 retries=retries) for task in tasks]
        try:
            for future in as_completed(futures):
                result = future.result()
                future.release()
                yield result
        finally:
            client.cancel([f for f in futures if not f.done()])

    return run


@contextlib.contextmanager
def chunk_mapper(spec: ExecutorSpec, label: str = "generate") -> Iterator[tuple[ChunkMapper, dict]]:
    """(mapper, record) for ``spec``: the record says which engine ran the chunks (and where);
    with dask, once the block is left, also the workers joined, retired and lost
    (:class:`svjscout.jobs.runner.WorkerWatch`)."""
    if spec.name != "dask":
        if spec.engine != "local":
            log.warning("executor.%s is ignored: executor.name is %r (use --executor dask)", spec.engine, spec.name)
        workers = 1 if spec.name == "iterative" else spec.workers
        yield local_mapper(workers), {"engine": spec.name, "workers": workers}
        return
    with dask_client(spec) as client:
        watch = WorkerWatch(client)
        record = {"engine": spec.engine, "scheduler": client.scheduler.address}
        if spec.engine != "scheduler":  # the workers (jobs) started for this run; an existing scheduler has its own
            record["workers"] = spec.workers
        try:
            yield dask_mapper(client, spec.retries, label), record
        finally:  # workers joined, retired and lost while the chunks ran (the record is updated in place)
            record.update(watch.record())
            if record.get("workers_lost"):
                log.warning("%d dask worker(s) lost while generating (%s); their chunks ran again on other workers",
                            record["workers_lost"], ", ".join(map(str, record["lost_workers"])))
