"""Lossless skims of generated files: keep a subset of events, keep the normalisation.

A skim drops events that the analysis can never use. The ``Runs`` tree (generated events and sums
of weights) and ``svjscout_meta`` (cross section) are copied unchanged, so a skimmed file is
normalised exactly like its input; the metadata records the skim and the events kept.

* :func:`write_subset`: the copy itself (any event mask).
* :func:`preselection_mask`: the events passing the analysis preselection, decided by running the
  processor itself (``svjscout process --skim`` on the file, default cuts or a job's), so the
  selection has one implementation. Used for the embedded QCD sample, whose detector copies
  almost all fail R_T > 0.24 (samples/embedded/make.sh):

      python -m svjscout.samples.skim IN.root OUT.root [--job JOB.yaml]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import awkward as ak
import numpy as np
import uproot


def _columns(arrays) -> dict:
    """Flat branches -> uproot columns: jagged ones (e.g. PSWeight) as awkward, their counters
    (nPSWeight) left for uproot to write, the rest as numpy."""
    jagged = {k for k in arrays.fields if arrays[k].ndim > 1}
    return {k: arrays[k] if k in jagged else ak.to_numpy(arrays[k]) for k in arrays.fields
            if not (k[:1] == "n" and k[1:] in jagged)}


def compression_of(spec: str):
    """``LZMA:6``, ``ZSTD:5``, ``LZ4:4``, ``ZLIB:1`` -> an uproot compression object."""
    name, _, level = spec.partition(":")
    return getattr(uproot, name.upper())(int(level or 1))


def write_subset(inp: str | Path, out: str | Path, keep, note: dict, compression: str = "ZSTD:5",
                 step: int = 20000) -> int:
    """Copy ``inp`` to ``out`` with only the events where ``keep(arrays)`` is True.

    ``keep`` gets each block of events (awkward, flat branch names) and returns a boolean mask.
    ``Runs`` and ``svjscout_meta`` are copied; ``note`` is added to the metadata with the counts.
    Returns the number of events written.
    """
    with uproot.open(inp) as f:
        tree = f["Events"]
        runs = f["Runs"].arrays(library="ak")
        meta = json.loads(str(f["svjscout_meta"]))
        n_in, kept, tree_out = tree.num_entries, 0, None
        with uproot.recreate(out, compression=compression_of(compression)) as g:
            for arrays in tree.iterate(step_size=step, library="ak"):
                sel = arrays[np.asarray(keep(arrays), dtype=bool)]
                cols = _columns(sel[[k for k in sel.fields if not k.startswith(("ScoutingParticle_", "nScout"))]])
                cols["ScoutingParticle"] = ak.zip({k.split("_", 1)[1]: sel[k] for k in sel.fields
                                                   if k.startswith("ScoutingParticle_")})
                if tree_out is None:
                    types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in cols.items()}
                    tree_out = g.mktree("Events", types)
                tree_out.extend(cols)
                kept += len(sel)
            runs_cols = _columns(runs)
            g.mktree("Runs", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype)
                              for k, v in runs_cols.items()}).extend(runs_cols)
            meta.update({**note, "n_before_skim": int(n_in), "n_written": int(kept)})
            g["svjscout_meta"] = json.dumps(meta, sort_keys=True)
    return kept


def preselected_columns(path: str | Path, columns, job: str | Path | None = None,
                        kind: str = "background") -> dict[str, np.ndarray]:
    """Skim columns (processors/processor.py ``_write_skim``) of the events of ``path`` that pass
    the preselection: the processor in skim mode (iterative executor) on this one file, with the
    cuts of ``job`` (default: the analysis defaults). Empty arrays if no event passes."""
    import yaml
    from svjscout.jobs.config import load_job
    from svjscout.jobs.runner import run_processor

    with tempfile.TemporaryDirectory() as tmp:
        spec = {"name": "preselection-skim",
                "datasets": {"sample": {"kind": kind, "files": [str(Path(path).resolve())]}},
                "executor": {"name": "iterative", "chunksize": 100000}}
        if job is not None:
            spec["analysis"] = {"cuts": load_job(str(job), {}).analysis.cuts.model_dump()}
        job_file = Path(tmp) / "job.yaml"
        job_file.write_text(yaml.safe_dump(spec))
        run_processor(load_job(str(job_file), {}), skim_dir=str(Path(tmp) / "skim"))
        parts = [ak.from_parquet(str(p), columns=list(columns)) for p in sorted((Path(tmp) / "skim").rglob("*.parquet"))]
    if not parts:
        return {c: np.zeros(0) for c in columns}
    table = ak.concatenate(parts)
    return {c: ak.to_numpy(table[c]) for c in columns}


def preselected_ids(path: str | Path, job: str | Path | None = None) -> set[tuple[int, int, int]]:
    """(run, luminosityBlock, event) of the events of ``path`` that pass the preselection."""
    t = preselected_columns(path, ("run", "luminosityBlock", "event"), job)
    return set(zip(t["run"].tolist(), t["luminosityBlock"].tolist(), t["event"].tolist()))


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
                         zip(ak.to_numpy(arrays.run), ak.to_numpy(arrays.luminosityBlock), ak.to_numpy(arrays.event))],
                        dtype=bool)

    n = write_subset(args.inp, args.out, keep, {"skim": "analysis preselection (svjscout.samples.skim, "
                                                          f"cuts of {args.job or 'the analysis defaults'})"},
                     compression=args.compression)
    print(f"{args.out}: {n} of the events of {args.inp} pass the preselection")


if __name__ == "__main__":
    main()
