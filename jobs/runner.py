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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svjscout.exceptions import ConfigError, InputFileError
from svjscout.jobs.config import JobConfig, config_digest
from svjscout.processors.processor import DatasetInfo, SVJProcessor, finalize
from svjscout.processors.schema import SVJScoutingSchema, check_file

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What a run did: files used, files skipped (with the reason), events, timing."""

    files: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    datasets: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"files": self.files, "skipped": self.skipped, "events": self.events,
                "datasets": self.datasets, "seconds": self.seconds}


def _file_normalisation(path: str, tree: str, gen_weight: str) -> tuple[float, float | None, dict]:
    """(sumw, xsec or None, generator metadata) of one file."""
    import uproot

    with uproot.open(path) as f:
        meta = {}
        if "svjscout_meta" in f:
            meta = json.loads(str(f["svjscout_meta"]))
        if "Runs" in f and "genEventSumw" in f["Runs"].keys():
            runs = f["Runs"].arrays(library="np")
            xsec = float(runs["xsec"][0]) if "xsec" in runs else None
            return float(np.sum(runs["genEventSumw"])), xsec, meta
        return float(np.sum(f[tree][gen_weight].array(library="np"))), None, meta


#: Files of one dataset whose recorded cross sections differ by less than this (relative) are
#: independent runs of one generator setup; their estimates are combined.
XSEC_TOLERANCE = 0.05


def combine_xsecs(dataset: str, xsecs: list[tuple[str, float, float]]) -> float | None:
    """One cross section for a dataset from its files' (path, xsec, sumw).

    Equal values pass through. Values within :data:`XSEC_TOLERANCE` of each other (e.g. Pythia's
    estimate from several generation runs of the same process) are averaged with the files' sum
    of weights as weights, which is the estimate of the combined run. A larger spread means the
    files are not one process: :class:`ConfigError` naming the dataset and every file's value.
    """
    if not xsecs:
        return None
    values = np.array([x for _, x, _ in xsecs], dtype=float)
    if np.all(values == values[0]):
        return float(values[0])
    if values.min() <= 0 or values.max() / values.min() - 1 > XSEC_TOLERANCE:
        listing = ", ".join(f"{p}: {x:g} pb" for p, x, _ in xsecs)
        raise ConfigError(f"dataset {dataset!r}: files disagree on xsec by more than {XSEC_TOLERANCE:.0%} "
                          f"({listing}); set datasets.{dataset}.xsec")
    weights = np.array([max(s, 0.0) for _, _, s in xsecs], dtype=float)
    if weights.sum() <= 0:
        weights = np.ones_like(values)
    combined = float(np.sum(weights * values) / weights.sum())
    log.info("dataset %r: %d files with cross sections %s pb combined to %g pb (sum-of-weights weighted)",
             dataset, len(values), np.unique(values).tolist(), combined)
    return combined


def preflight(cfg: JobConfig, report: RunReport) -> dict[str, DatasetInfo]:
    """Check every file and work out each dataset's normalisation; fill ``report``."""
    bmap = cfg.schema_map
    infos = {}
    for name, spec in cfg.datasets.items():
        is_mc = spec.kind != "data"
        good, sumw, xsecs, meta = [], 0.0, [], {}
        for path in cfg.files(name):
            try:
                n = check_file(path, bmap, is_mc)
                if n == 0:
                    raise InputFileError(f"{path}: tree {bmap.tree!r} has no events")
                if is_mc:
                    s, x, meta = _file_normalisation(path, bmap.tree, bmap.gen_weight)
                    sumw += s
                    if x is not None:
                        xsecs.append((path, x, s))
            except InputFileError as err:
                if not cfg.executor.skip_bad_files:
                    raise
                log.warning("skipping bad file: %s", err)
                report.skipped.append({"dataset": name, "file": path, "reason": str(err)})
                continue
            good.append(path)
            report.events[name] = report.events.get(name, 0) + n
        if not good:
            raise InputFileError(f"dataset {name!r}: no usable file among {cfg.files(name)}")
        report.files[name] = good
        gen_cfg = meta.get("config", {})
        info = DatasetInfo(
            kind=spec.kind,
            xsec=spec.xsec if spec.xsec is not None else (combine_xsecs(name, xsecs) if is_mc else None),
            sumw=spec.sumw if spec.sumw is not None else (sumw if is_mc else None),
            mzprime=spec.mzprime if spec.mzprime is not None else (gen_cfg.get("mzprime") if spec.kind == "signal" else None),
            rinv=spec.rinv if spec.rinv is not None else (gen_cfg.get("rinv") if spec.kind == "signal" else None),
        )
        if is_mc and (not info.xsec or not info.sumw):
            raise ConfigError(f"dataset {name!r}: no cross section found in its files; set datasets.{name}.xsec")
        infos[name] = info
        report.datasets[name] = info.model_dump()
    return infos


class _Checkpointer:
    """coffea's SimpleCheckpointer, keyed by the job's configuration digest as well."""

    def __new__(cls, directory: str, digest: str):
        from coffea.processor import SimpleCheckpointer

        return SimpleCheckpointer(str(Path(directory) / digest), overwrite=True)


@contextlib.contextmanager
def _executor(cfg: JobConfig, progress: bool):
    from coffea import processor

    ex = cfg.executor
    if ex.name == "iterative":
        yield processor.IterativeExecutor(status=progress)
        return
    if ex.name == "futures":
        yield processor.FuturesExecutor(workers=ex.workers, status=progress)
        return
    from dask.distributed import Client, LocalCluster

    if ex.scheduler:
        client = Client(ex.scheduler)
        cluster = None
    elif ex.condor is not None:
        try:
            from dask_jobqueue import HTCondorCluster
        except ImportError as err:
            raise ConfigError("executor.condor needs the 'af' extra: pip install 'svjscout[af]'") from err
        cluster = HTCondorCluster(**ex.condor)
        cluster.scale(jobs=ex.workers)
        client = Client(cluster)
    else:
        cluster = LocalCluster(n_workers=ex.workers, threads_per_worker=ex.threads_per_worker, processes=True,
                               memory_limit=ex.memory_limit, dashboard_address=None,
                               env={"SVJSCOUT_ORT_THREADS": "1", "OMP_NUM_THREADS": "1"})
        client = Client(cluster)
    try:
        yield processor.DaskExecutor(client=client, status=progress, retries=ex.retries, treereduction=8)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_processor(cfg: JobConfig, skim_dir: str | None = None, progress: bool = False) -> tuple[dict, RunReport]:
    """Run the processor over the job's datasets; return (finalised output, report)."""
    import time

    from coffea import processor

    report = RunReport()
    t0 = time.perf_counter()
    infos = preflight(cfg, report)
    pcfg = cfg.processor_config(infos, skim_dir=skim_dir)
    proc = SVJProcessor(pcfg)
    fileset = {name: {"files": {p: cfg.schema_map.tree for p in files}} for name, files in report.files.items()}
    checkpointer = None
    if cfg.executor.checkpoint_dir:
        checkpointer = _Checkpointer(cfg.executor.checkpoint_dir, config_digest(cfg) + ("-skim" if skim_dir else ""))
    with _executor(cfg, progress) as executor:
        runner = processor.Runner(executor=executor, schema=SVJScoutingSchema, chunksize=cfg.executor.chunksize,
                                  skipbadfiles=False, checkpointer=checkpointer)
        output = runner(fileset, processor_instance=proc, treename=cfg.schema_map.tree)
    output = finalize(output, pcfg)
    output["datasets"] = {k: v.model_dump() for k, v in infos.items()}
    report.seconds = time.perf_counter() - t0
    output["report"] = report.to_json()
    return output, report


def save_outputs(output: dict, outdir: str | Path) -> list[Path]:
    """Write ``histograms.coffea``, ``cutflow.json``, ``histograms.root`` (TH1 ``DATASET/PLANE/REGION``)."""
    import uproot
    from coffea.util import save

    from svjscout.processors.processor import cutflow_table

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = [outdir / "histograms.coffea", outdir / "cutflow.json", outdir / "histograms.root"]
    save(output, paths[0])
    cut = {"cutflow": cutflow_table(output), "counts": output.get("counts", {}),
           "skipped": output.get("report", {}).get("skipped", [])}
    paths[1].write_text(json.dumps(cut, indent=1, default=float))
    h = output.get("hists", {}).get("mt_abcd")
    with uproot.recreate(paths[2]) as f:
        if h is not None:
            for ds in h.axes["dataset"]:
                for plane in h.axes["plane"]:
                    for region in h.axes["region"]:
                        f[f"{ds}/{plane}/{region}"] = h[{"dataset": ds, "plane": plane, "region": region}]
    return paths


os.environ.setdefault("SVJSCOUT_ORT_THREADS", "1")
