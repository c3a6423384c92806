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

from svjscout import __version__
from svjscout.exceptions import ConfigError, InputFileError
from svjscout.jobs.config import JobConfig, config_digest
from svjscout.processors.files import domain_error, failed_file, open_root, root_message
from svjscout.processors.processor import DatasetInfo, SVJProcessor, finalize
from svjscout.processors.schema import SVJScoutingSchema, check_file

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

    def to_json(self) -> dict:
        return {"files": self.files, "inputs": self.inputs, "skipped": self.skipped, "events": self.events,
                "datasets": self.datasets, "seconds": self.seconds}


def _file_normalisation(path: str, tree: str, gen_weight: str, sum_gen_weight: bool,
                        require_complete: bool = True) -> tuple[float | None, float | None, dict]:
    """(sumw, xsec or None, generator metadata) of one file, read through :func:`open_root`.

    ``sumw`` is the ``Runs`` tree's ``genEventSumw`` (the events generated, before any skim). A
    file without it gives the sum of its ``genWeight`` only when ``sum_gen_weight`` (the dataset's
    ``sumw_from: genWeight``); otherwise None: a skimmed file's genWeight sum undercounts sumw.
    """
    with open_root(path, "the normalisation (Runs tree, svjscout_meta)", require_complete) as f:
        meta = {}
        if "svjscout_meta" in f:
            meta = json.loads(str(f["svjscout_meta"]))
        if "Runs" in f and "genEventSumw" in f["Runs"].keys():
            runs = f["Runs"].arrays(library="np")
            xsec = float(runs["xsec"][0]) if "xsec" in runs else None
            return float(np.sum(runs["genEventSumw"])), xsec, meta
        if not sum_gen_weight:
            return None, None, meta
        return float(np.sum(f[tree][gen_weight].array(library="np"))), None, meta


def _lost_sumw(path: str, tree: str, gen_weight: str) -> float | None:
    """The sumw recorded in a skipped file, if its Runs tree can still be read (else None)."""
    try:
        return _file_normalisation(path, tree, gen_weight, sum_gen_weight=False, require_complete=False)[0]
    except InputFileError:
        return None


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


@dataclass
class _FileNorm:
    """What preflight learnt of one usable file."""

    entries: int
    sumw: float | None
    xsec: float | None
    meta: dict


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
    lost = _lost_sumw(path, cfg.schema_map.tree, cfg.schema_map.gen_weight) if cfg.datasets[dataset].kind != "data" else None
    report.skipped.append({"dataset": dataset, "file": path, "stage": stage, "reason": str(err), "sumw": lost})


def check_inputs(cfg: JobConfig, report: RunReport) -> dict[str, dict[str, _FileNorm]]:
    """Open every file of every dataset (tree, branches, completeness, normalisation).

    A bad file stops the run with an :class:`InputFileError` naming it, or with
    ``executor.skip_bad_files`` is recorded in ``report.skipped``. Returns the usable files.
    """
    bmap = cfg.schema_map
    usable: dict[str, dict[str, _FileNorm]] = {}
    for name, spec in cfg.datasets.items():
        is_mc = spec.kind != "data"
        usable[name] = {}
        for path in cfg.files(name):
            try:
                n = check_file(path, bmap, is_mc)
                if n == 0:
                    raise InputFileError(f"{path}: tree {bmap.tree!r} has no events")
                s, x, meta = None, None, {}
                if is_mc:
                    s, x, meta = _file_normalisation(path, bmap.tree, bmap.gen_weight, spec.sumw_from == "genWeight")
            except InputFileError as err:
                _skip(cfg, report, name, path, err, "preflight")
                continue
            if is_mc and s is None and spec.sumw is None:
                raise ConfigError(
                    f"dataset {name!r}: {path} has no Runs tree with genEventSumw, so the generated sum of "
                    f"weights is unknown (summing genWeight over a skimmed file undercounts it). Set "
                    f"datasets.{name}.sumw, or datasets.{name}.sumw_from: genWeight if the files are not skimmed")
            usable[name][path] = _FileNorm(n, s, x, meta)
            report.inputs.append(_file_record(name, path, n))
    return usable


def dataset_infos(cfg: JobConfig, usable: dict[str, dict[str, _FileNorm]], report: RunReport) -> dict[str, DatasetInfo]:
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
        is_mc = spec.kind != "data"
        report.files[name] = list(files)
        report.events[name] = sum(f.entries for f in files.values())
        sumw = sum(f.sumw for f in files.values() if f.sumw is not None)
        xsecs = [(p, f.xsec, f.sumw or 0.0) for p, f in files.items() if f.xsec is not None]
        gen_cfg = next(iter(files.values())).meta.get("config", {})
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
        report.datasets[name] = {**info.model_dump(), "lost": _lost(name, spec, files, report)}
    return infos


def _lost(name: str, spec, files: dict[str, _FileNorm], report: RunReport) -> dict | None:
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
    """Check every file and work out each dataset's normalisation; fill ``report``."""
    return dataset_infos(cfg, check_inputs(cfg, report), report)


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
    """Run the processor over the job's datasets; return (finalised output, report).

    A file that passes the preflight but fails while its chunks are read (a corrupt basket)
    stops the run with an :class:`InputFileError` naming it, or with ``executor.skip_bad_files``
    is dropped, recorded, and the datasets are renormalised and processed again without it
    (finished chunks come back from the checkpoint directory, when one is set).
    """
    import time

    from coffea import processor

    report = RunReport()
    t0 = time.perf_counter()
    usable = check_inputs(cfg, report)
    digest = config_digest(cfg) + ("-skim" if skim_dir else "")
    while True:
        infos = dataset_infos(cfg, usable, report)
        pcfg = cfg.processor_config(infos, skim_dir=skim_dir)
        fileset = {name: {"files": {p: cfg.schema_map.tree for p in files}} for name, files in report.files.items()}
        checkpointer = _Checkpointer(cfg.executor.checkpoint_dir, digest) if cfg.executor.checkpoint_dir else None
        try:
            with _executor(cfg, progress) as executor:
                runner = processor.Runner(executor=executor, schema=SVJScoutingSchema, chunksize=cfg.executor.chunksize,
                                          skipbadfiles=False, checkpointer=checkpointer)
                output = runner(fileset, processor_instance=SVJProcessor(pcfg), treename=cfg.schema_map.tree)
            break
        except Exception as err:  # noqa: BLE001 - coffea and dask wrap what a chunk raised
            bad = _chunk_failure(err, usable)
            if bad is None:
                raise
            dataset, path, file_err = bad
            _skip(cfg, report, dataset, path, file_err, "processing")
            del usable[dataset][path]
            report.inputs = [r for r in report.inputs if r["path"] != path]
    output = finalize(output, pcfg)
    output["wp"] = {"x0": float(cfg.analysis.wp[0]), "y0": float(cfg.analysis.wp[1]), "source": "configured (analysis.wp)"}
    output["datasets"] = {k: v.model_dump() for k, v in infos.items()}
    report.seconds = time.perf_counter() - t0
    output["report"] = report.to_json()
    return output, report


def _chunk_failure(err: BaseException, usable: dict[str, dict[str, _FileNorm]]):
    """(dataset, file, InputFileError) for a chunk that failed reading one of our files, else None.

    An svjscout error raised inside a chunk that is not about a file (e.g. a configuration error)
    is re-raised as itself, unwrapped from coffea's and dask's exception.
    """
    dom = domain_error(err)
    path = failed_file(err)
    owner = next((ds for ds, files in usable.items() if path in files), None)
    if owner is None:
        if dom is not None:
            raise dom from err
        return None
    if dom is not None and not isinstance(dom, InputFileError):
        raise dom from err
    cause = str(dom) if dom is not None else root_message(err)
    return owner, path, InputFileError(f"{path}: cannot be processed ({cause})")


def save_outputs(output: dict, outdir: str | Path) -> list[Path]:
    """Write ``histograms.coffea``, ``cutflow.json``, ``histograms.root`` (TH1 ``DATASET/PLANE/REGION``)."""
    import uproot
    from coffea.util import save

    from svjscout.processors.processor import cutflow_table

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = [outdir / "histograms.coffea", outdir / "cutflow.json", outdir / "histograms.root"]
    save(output, paths[0])
    from svjscout.processors.prefilter import ROW_NOTE

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
