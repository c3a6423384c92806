"""Throughput on 1 and 2 dask workers over the same input, side by side, with peak memory per worker.

The input is the embedded sample, ``--copies`` times over (as separate datasets). Each
configuration gets its own LocalCluster (processes, one thread per worker); a warm-up run
per cluster compiles numba and opens the ONNX sessions in every worker first. Prints a table.

    python benchmarks/bench_scaling.py [--chunksize 250] [--lundnet PATH --twin PATH]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("SVJSCOUT_NO_PROGRESS", "1")


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    from dask.distributed import Client, LocalCluster

    from svjscout.jobs.config import load_job
    from svjscout.jobs.runner import run_processor

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--chunksize", type=int, default=500)
    ap.add_argument("--copies", type=int, default=3, help="process the embedded sample this many times over")
    ap.add_argument("--lundnet", default=None)
    ap.add_argument("--twin", default=None)
    args = ap.parse_args()
    rows = []
    for n_workers in (1, 2):
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          env={"SVJSCOUT_ORT_THREADS": "1", "OMP_NUM_THREADS": "1"}) as cluster, \
                Client(cluster) as client:
            overrides = {"executor.name": "dask", "executor.scheduler": cluster.scheduler_address,
                         "executor.chunksize": args.chunksize}
            if args.lundnet:
                overrides["analysis.lundnet_model"] = args.lundnet
            if args.twin:
                overrides["analysis.twin_model"] = args.twin
            cfg = load_job(None, overrides)
            copies = {f"{name}__copy{k}": spec for name, spec in cfg.datasets.items() for k in range(args.copies)}
            cfg = cfg.model_copy(update={"datasets": copies})
            run_processor(cfg)  # warm-up
            t = time.perf_counter()
            _, report = run_processor(cfg)
            elapsed = time.perf_counter() - t
            mem = client.run(_peak_rss_mb)
            n_events = sum(report.events.values())
            rows.append((n_workers, n_events, elapsed, n_events / elapsed, max(mem.values())))
    print(f"{'workers':>8}{'events':>9}{'seconds':>10}{'events/s':>11}{'speed-up':>10}{'peak RSS/worker MB':>20}")
    for n, ev, sec, rate, mem in rows:
        print(f"{n:>8}{ev:>9}{sec:>10.2f}{rate:>11.0f}{rate / rows[0][3]:>10.2f}{mem:>20.0f}")
    print(f"target: >= 1.8x from 1 to 2 workers; measured {rows[1][3] / rows[0][3]:.2f}x")


if __name__ == "__main__":
    main()
