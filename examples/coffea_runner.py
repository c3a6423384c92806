"""svjscout as a coffea plugin: run SVJProcessor with coffea's own Runner and print the yields.

    python examples/coffea_runner.py [JOB.yaml]      # default: the embedded sample's job

:func:`svjscout.processor_from_job` does the preflight of ``svjscout run`` (the ONNX models
checked, every file opened, each dataset's cross section and sum of weights read from its files'
``Runs`` trees) and returns the processor with its fileset; coffea's Runner calls the processor's
``postprocess``, which normalises the histograms to ``xsec x lumi`` (idempotently: normalising
again changes nothing). The yields printed are those of the ABCD regions of the signal plane,
summed over M_T, at the job's working point.
"""

from __future__ import annotations

import sys

from coffea import processor

from svjscout import SVJScoutingSchema, processor_from_job
from svjscout.core.regions import REGIONS


def main(job: str | None = None) -> dict:
    proc, fileset, _ = processor_from_job(job)
    runner = processor.Runner(executor=processor.IterativeExecutor(), schema=SVJScoutingSchema, chunksize=50_000)
    out = runner(fileset, processor_instance=proc, treename=proc.config.branch_map.tree)
    h = out["hists"]["mt_abcd"]
    print("dataset", *REGIONS, f"(SP, normalised to {proc.config.lumi / 1000:g} fb^-1)")
    for ds in h.axes["dataset"]:
        yields = [h[{"dataset": ds, "plane": "SP", "region": r}].sum().value for r in REGIONS]
        print(ds, *(f"{y:.6g}" for y in yields))
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
