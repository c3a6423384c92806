"""The preselection skim of a generated file: keep the events that pass the analysis preselection.

Which events pass is decided by the processor itself (``svjscout process --skim`` on the file, the
analysis defaults or a job's cuts), so the selection has one implementation; the lossless copy is
:func:`svjscout.samples.skim.write_subset` (``Runs`` and ``svjscout_meta`` kept, so the
normalisation is unchanged). Used for the embedded QCD sample, whose detector copies almost all
fail R_T > 0.24 (samples/embedded/make.sh)::

    python -m svjscout.jobs.commands_skim IN.root OUT.root [--job JOB.yaml]

It runs the whole runner on one file, so it belongs to the jobs layer, not to the samples.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import awkward as ak
import numpy as np
import yaml

from svjscout.jobs.config import load_job
from svjscout.jobs.runner import run_processor
from svjscout.samples.skim import write_subset


def preselected_columns(path: str | Path, columns, job: str | Path | None = None,
                        kind: str = "background") -> dict[str, np.ndarray]:
    """Skim columns (:func:`svjscout.processors.skim.write_skim`) of the events of ``path`` that pass
    the preselection: the processor in skim mode (iterative executor) on this one file, with the
    cuts of ``job`` (default: the analysis defaults). Empty arrays if no event passes."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"name": "preselection-skim",
                "datasets": {"sample": {"kind": kind, "files": [str(Path(path).resolve())]}},
                "executor": {"name": "iterative", "chunksize": 100000}}
        if job is not None:
            spec["analysis"] = {"cuts": load_job(str(job), {}).analysis.cuts.model_dump()}
        job_file = Path(tmp) / "job.yaml"
        job_file.write_text(yaml.safe_dump(spec))
        run_processor(load_job(str(job_file), {}), skim_dir=str(Path(tmp) / "skim"))
        parts = [ak.from_parquet(str(p), columns=list(columns))
                 for p in sorted((Path(tmp) / "skim").rglob("*.parquet"))]
    if not parts:
        return {c: np.zeros(0) for c in columns}
    table = ak.concatenate(parts)
    return {c: ak.to_numpy(table[c]) for c in columns}


def preselected_ids(path: str | Path, job: str | Path | None = None) -> set[tuple[int, int, int]]:
    """(run, luminosityBlock, event) of the events of ``path`` that pass the preselection."""
    t = preselected_columns(path, ("run", "luminosityBlock", "event"), job)
    return set(zip(t["run"].tolist(), t["luminosityBlock"].tolist(), t["event"].tolist(), strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--job", default=None, help="take the cuts from this job file (default: the analysis defaults)")
    ap.add_argument("--compression", default="ZSTD:5")
    args = ap.parse_args()
    ids = preselected_ids(args.inp, args.job)

    def keep(arrays):
        return np.array([(int(r), int(lb), int(e)) in ids for r, lb, e in
                         zip(ak.to_numpy(arrays.run), ak.to_numpy(arrays.luminosityBlock), ak.to_numpy(arrays.event),
                             strict=True)],
                        dtype=bool)

    n = write_subset(args.inp, args.out, keep, {"skim": "analysis preselection (svjscout.jobs.commands_skim, "
                                                          f"cuts of {args.job or 'the analysis defaults'})"},
                     compression=args.compression)
    print(f"{args.out}: {n} of the events of {args.inp} pass the preselection")


if __name__ == "__main__":
    main()
