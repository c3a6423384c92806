"""The preselection skim of a generated file: keep the events that pass the analysis preselection.

Which events pass is decided by the processor itself (``svjscout process --skim`` on the file, the
analysis defaults or a job's cuts), so the selection has one implementation; the lossless copy is
:func:`svjscout.samples.skim.write_subset` (``Runs`` and ``svjscout_meta`` kept, so the
normalisation is unchanged). Used for the embedded QCD sample, whose detector copies almost all
fail R_T > 0.24 (samples/embedded/make.sh)::

    python -m svjscout.jobs.commands_skim IN.root OUT.root [--job JOB.yaml] [--max-copies-per-parent K]

``--max-copies-per-parent K`` then keeps at most K of each parent's preselected detector copies
(:func:`svjscout.samples.skim.thin_copies`: chosen at random, weights x m / K, unbiased): a
sample whose real-MET parents pass in many correlated copies fits a size budget (the embedded
sample's 25 MB) for little of its effective statistics.

``--light-roulette LOSS`` then plays Russian roulette with the light copies
(:func:`svjscout.samples.skim.roulette_light`): in each cell (SP or VP, M_T bin of the job) a copy
lighter than the cell's floor is kept with probability w / floor and weight floor, the floor the
largest that costs at most LOSS of the cell's expected N_eff over parents
(:func:`~svjscout.samples.skim.light_floors`). A pT-hat-biased QCD skim's high-pT-hat copies weigh
little: LOSS = 0.01 keeps ~40 % of the embedded QCD's copies for ~1 % of the N_eff in every cell.

It runs the whole runner on one file, so it belongs to the jobs layer, not to the samples.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import awkward as ak
import numpy as np
import yaml

from svjscout.core.cuts import plane_of
from svjscout.jobs.config import load_job
from svjscout.jobs.runner import run_processor
from svjscout.processors.settings import AnalysisSettings
from svjscout.samples.skim import light_floors, roulette_light, thin_copies, write_subset


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
    ap.add_argument("--max-copies-per-parent", type=int, default=None, metavar="K",
                    help="keep at most K preselected copies per parent, chosen at random, weights x m / K")
    ap.add_argument("--thin-seed", type=int, default=0, help="seed of the thinning's and the roulette's draws")
    ap.add_argument("--light-roulette", type=float, default=None, metavar="LOSS",
                    help="Russian roulette on light copies, costing at most LOSS (e.g. 0.01) of the expected "
                         "N_eff over parents in each (plane, M_T bin) cell")
    args = ap.parse_args()
    if args.max_copies_per_parent is not None and args.max_copies_per_parent < 1:
        ap.error(f"--max-copies-per-parent must be >= 1, got {args.max_copies_per_parent}")
    if args.light_roulette is not None and not (0.0 < args.light_roulette < 1.0):
        ap.error(f"--light-roulette must be in (0, 1), got {args.light_roulette}")
    t = preselected_columns(args.inp, ("run", "luminosityBlock", "event", "parent", "gen_weight", "mt", "deta"),
                            args.job)
    keys = list(zip(t["run"].tolist(), t["luminosityBlock"].tolist(), t["event"].tolist(), strict=True))
    factor = np.ones(len(keys))
    kept = np.ones(len(keys), dtype=bool)
    note = f"analysis preselection (svjscout.jobs.commands_skim, cuts of {args.job or 'the analysis defaults'})"
    if args.max_copies_per_parent is not None:
        kept, factor = thin_copies(t["run"], t["parent"], t["event"], args.max_copies_per_parent, args.thin_seed)
        note += (f"; at most {args.max_copies_per_parent} copies per parent (samples.skim.thin_copies, "
                 f"seed {args.thin_seed}, genWeight x m / k)")
    if args.light_roulette is not None:
        settings = load_job(str(args.job), {}).analysis if args.job else AnalysisSettings()
        edges = np.asarray(settings.mt_edges, dtype=np.float64)
        mt_bin = np.clip(np.searchsorted(edges, t["mt"], side="right") - 1, 0, len(edges) - 2)
        cell = (plane_of(t["deta"], settings.cuts) == "VP") * len(edges) + mt_bin
        w = np.where(kept, t["gen_weight"] * factor, 0.0)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            ap.error(f"--light-roulette: {args.inp} has preselected events with negative or non-finite weights "
                     f"({int(np.sum(~np.isfinite(w) | (w < 0)))}); the roulette needs weights >= 0")
        floors = light_floors(w[kept], t["parent"][kept], cell[kept], args.light_roulette)
        floor = np.array([floors.get(c, 0.0) for c in cell.tolist()])
        alive, f2 = roulette_light(w, floor, t["run"], t["parent"], t["event"], seed=args.thin_seed)
        kept, factor = kept & alive, factor * f2
        note += (f"; Russian roulette on light copies (samples.skim.roulette_light, seed {args.thin_seed}): "
                 f"per (plane, M_T bin) cell a floor costing at most {args.light_roulette:g} of its expected "
                 f"N_eff over parents, genWeight x floor / w for the kept light copies")
        print(f"light roulette: {int(kept.sum())} of {int((w > 0).sum())} copies kept; floors (genWeight) per "
              f"cell (plane x M_T bin): " + ", ".join(f"{'SP' if c < len(edges) else 'VP'} bin "
                                                      f"{c % len(edges)}: {v:.3g}" for c, v in sorted(floors.items())))
    factors = {key: f for key, f, k in zip(keys, factor.tolist(), kept.tolist(), strict=True) if k}
    rescaled = args.max_copies_per_parent is not None or args.light_roulette is not None

    def ids_of(arrays):
        return zip(ak.to_numpy(arrays.run).tolist(), ak.to_numpy(arrays.luminosityBlock).tolist(),
                   ak.to_numpy(arrays.event).tolist(), strict=True)

    def keep(arrays):
        return np.array([key in factors for key in ids_of(arrays)], dtype=bool)

    def scale(arrays):
        return np.array([factors[key] for key in ids_of(arrays)])

    n = write_subset(args.inp, args.out, keep, {"skim": note}, compression=args.compression,
                     scale=scale if rescaled else None)
    print(f"{args.out}: {n} of the events of {args.inp} pass the preselection"
          + ("" if args.max_copies_per_parent is None else f" (at most {args.max_copies_per_parent} per parent)")
          + ("" if args.light_roulette is None else " (light copies rouletted)"))


if __name__ == "__main__":
    main()
