"""Processor throughput per core and time share per stage, beside AK4 + AK8 clustering alone.

Runs in one process (one core) on the embedded sample, already read into memory, after a
warm-up pass (numba compilation, ONNX sessions). Prints a table.

    python benchmarks/bench_processor.py [--lundnet PATH --twin PATH] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("SVJSCOUT_NO_PROGRESS", "1")
os.environ.setdefault("SVJSCOUT_ORT_THREADS", "1")


def main() -> None:
    import awkward as ak
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.jobs.config import load_job
    from svjscout.jobs.runner import RunReport, preflight
    from svjscout.processors.jets import cluster
    from svjscout.processors.processor import SVJProcessor
    from svjscout.processors.schema import SVJScoutingSchema

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lundnet", default=None)
    ap.add_argument("--twin", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    overrides = {}
    if args.lundnet:
        overrides["analysis.lundnet_model"] = args.lundnet
    if args.twin:
        overrides["analysis.twin_model"] = args.twin
    cfg = load_job(None, overrides)
    infos = preflight(cfg, RunReport())
    proc = SVJProcessor(cfg.processor_config(infos))
    samples = []
    t_read = 0.0
    for name in cfg.datasets:
        for path in cfg.files(name):
            t = time.perf_counter()
            ev = NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="eager",
                                             metadata={"dataset": name, "filename": path}).events()
            t_read += time.perf_counter() - t
            samples.append(ev)
    n_events = sum(len(e) for e in samples)
    pfs = [cfg.schema_map.pf_candidates(e) for e in samples]

    def clustering_alone():
        for pf in pfs:
            cluster(pf, 0.4, ptmin=30.0)
            cluster(pf, 0.8, ptmin=150.0, constituents=True)

    def processor_run():
        timing: dict[str, float] = {}
        for ev in samples:
            out = proc.process(ev)
            for k, v in out["timing"].items():
                timing[k] = timing.get(k, 0.0) + v
        return timing

    processor_run()  # warm-up
    best_cluster, best_proc, best_timing = float("inf"), float("inf"), {}
    for _ in range(args.repeat):
        t = time.perf_counter()
        clustering_alone()
        best_cluster = min(best_cluster, time.perf_counter() - t)
        t = time.perf_counter()
        timing = processor_run()
        elapsed = time.perf_counter() - t
        if elapsed < best_proc:
            best_proc, best_timing = elapsed, timing
    total = sum(best_timing.values())
    print(f"events: {n_events} (embedded sample, {len(samples)} files); one core; best of {args.repeat}")
    print(f"file read + decompression (LZMA) into memory, once: {t_read:.2f} s = {n_events / t_read:,.0f} ev/s")
    print()
    print(f"{'stage':<22}{'seconds':>10}{'share':>9}{'events/s':>12}")
    for stage, sec in best_timing.items():
        print(f"{stage:<22}{sec:>10.3f}{sec / total:>9.1%}{n_events / sec:>12,.0f}")
    print(f"{'processor (all)':<22}{best_proc:>10.3f}{'':>9}{n_events / best_proc:>12,.0f}")
    print(f"{'AK4+AK8 alone':<22}{best_cluster:>10.3f}{'':>9}{n_events / best_cluster:>12,.0f}")
    print()
    ratio = best_cluster / best_proc
    print(f"processor rate / clustering-alone rate = {ratio:.0%} (target >= 60%)")
    del ak


if __name__ == "__main__":
    main()
