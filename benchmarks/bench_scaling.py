"""Scaling on a real engine: 1 and then 2 dask workers as separate processes (or Slurm jobs).

The input is the embedded sample ``--copies`` times over (as separate datasets; 12 copies are
20,124 events in 84 datasets; ``--copies-as files``: 12 files of each of the 7 datasets).
``--engine processes`` starts a ``dask scheduler`` and N ``dask worker``
processes (one thread each) on 127.0.0.1 and runs the job with ``executor.scheduler``;
``--engine slurm`` runs it with ``executor.slurm`` (Slurm must be up: jobs/facility/slurm-up.sh
and SLURM_CONF). A warm-up run per configuration compiles numba and opens the ONNX sessions in
every worker first. Prints, per worker count: events/s, speed-up, peak RSS per worker, and the
per-chunk overhead from the scheduler's task stream: ``overhead/chunk`` = (workers x wall time -
summed chunk compute time) / chunks (scheduling, serialisation, idle tails), ``transfer/chunk``
= time spent moving results between workers (tree reduction). The scheduler process's and the
client's (this process's) CPU seconds during the timed run are printed too, and the 1 -> N speed-up
with them separated: on N cores the N workers had N - (scheduler + client CPU) / wall-time cores
(one worker alone had a core of its own either way), so that speed-up is the measured one times
N / (N - that share), what the workers give with the scheduler and client elsewhere.

``--in-process`` also processes the same events in the benchmark's own process, as
bench_processor.py does (each file read eagerly first, then processed), and prints the worker's
events/s as a fraction of that (issue 33: a worker within 20 % of the processor itself).

    python benchmarks/bench_scaling.py [--copies 12] [--chunksize 2000] [--engine processes|slurm]
        [--workers 1,2] [--in-process] [--copies-as datasets|files]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("SVJSCOUT_NO_PROGRESS", "1")


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes(n_workers: int, logdir: Path):
    """A ``dask scheduler`` and ``n_workers`` ``dask worker`` processes; (address, processes)."""
    from dask.distributed import Client

    dask = str(Path(sys.executable).parent / "dask")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "SVJSCOUT_ORT_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = open(logdir / f"dask-{n_workers}.log", "ab")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=out, stderr=subprocess.STDOUT)]
    time.sleep(2)
    procs += [subprocess.Popen([dask, "worker", addr, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                                "--memory-limit", "4GB"], stdout=out, stderr=subprocess.STDOUT, env=env)
              for _ in range(n_workers)]
    with Client(addr, timeout=60) as client:
        client.wait_for_workers(n_workers, timeout=120)
    return addr, procs


def _measure(cfg, n_workers: int, scheduler_pid: int | None = None) -> dict:
    """Run twice (warm-up, then timed) on the job's engine; the figures of the timed run, with the CPU
    seconds of the scheduler process (``scheduler_pid``) and of this process (the client) during it."""
    import psutil
    from dask.distributed import get_task_stream

    from svjscout.jobs import runner
    from svjscout.jobs.runner import run_processor

    seen = {}

    class Watch(runner.WorkerWatch):  # the run's client, to read the task stream and worker memory
        def __init__(self, client):
            super().__init__(client)
            seen["client"] = client
            seen["ts"] = get_task_stream(client)
            seen["ts"].__enter__()

        def record(self):
            seen["ts"].__exit__(None, None, None)
            seen["rss"] = self.client.run(_peak_rss_mb)
            seen["tasks"] = seen["ts"].data
            return super().record()

    runner.WorkerWatch = Watch
    run_processor(cfg)  # warm-up
    sched = psutil.Process(scheduler_pid) if scheduler_pid else None
    sched0 = sum(sched.cpu_times()[:2]) if sched else 0.0
    t, client0 = time.perf_counter(), time.process_time()
    _, report = run_processor(cfg)
    elapsed = time.perf_counter() - t
    client_cpu = time.process_time() - client0
    sched_cpu = sum(sched.cpu_times()[:2]) - sched0 if sched else float("nan")
    compute = sum(s["stop"] - s["start"] for d in seen["tasks"] for s in d["startstops"] if s["action"] == "compute")
    transfer = sum(s["stop"] - s["start"] for d in seen["tasks"] for s in d["startstops"] if s["action"] == "transfer")
    # coffea splits each file into ceil(entries / chunksize) chunks
    n_chunks = sum(-(-r["entries"] // cfg.executor.chunksize) for r in report.inputs)
    events = sum(report.events.values())
    return {"workers": n_workers, "events": events, "seconds": elapsed, "rate": events / elapsed,
            "rss": max(seen["rss"].values()), "chunks": n_chunks,
            "overhead": (n_workers * elapsed - compute) / n_chunks, "transfer": transfer / n_chunks,
            "sched_cpu": sched_cpu, "client_cpu": client_cpu}


def _copies(cfg, copies: int, how: str, tmp: Path):
    """The job over the embedded sample ``copies`` times: as datasets of their own, or as more files
    of each dataset (copies of the file under ``tmp``)."""
    import shutil

    if how == "datasets":
        return cfg.model_copy(update={"datasets": {f"{name}__copy{k}": spec for name, spec in cfg.datasets.items()
                                                   for k in range(copies)}})
    datasets = {}
    for name, spec in cfg.datasets.items():
        files = []
        for path in cfg.files(name):
            for k in range(copies):
                dst = tmp / "copies" / f"{Path(path).stem}__copy{k}.root"
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    shutil.copyfile(path, dst)
                files.append(str(dst))
        datasets[name] = spec.model_copy(update={"files": files})
    return cfg.model_copy(update={"datasets": datasets})


def _in_process(cfg) -> dict:
    """The same events in this process, as bench_processor.py times them: each file read eagerly
    (NanoEvents, timed apart), then processed (after a warm-up on the first file); events/s."""
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.jobs.runner import processor_config_from_job
    from svjscout.processors.processor import SVJProcessor
    from svjscout.processors.schema import SVJScoutingSchema

    pcfg, fileset, _ = processor_config_from_job(cfg)
    proc = SVJProcessor(pcfg)
    read = seconds = 0.0
    events = 0
    for i, (name, spec) in enumerate(fileset.items()):
        for path in spec["files"]:
            t = time.perf_counter()
            ev = NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="eager",
                                             metadata={"dataset": name, "filename": path}).events()
            read += time.perf_counter() - t
            if i == 0:
                proc.process(ev)  # warm-up: numba, ONNX sessions
            t = time.perf_counter()
            proc.process(ev)
            seconds += time.perf_counter() - t
            events += len(ev)
    return {"events": events, "read": read, "seconds": seconds, "rate": events / seconds,
            "rate_with_read": events / (seconds + read)}


def main() -> None:
    from svjscout.jobs.config import load_job

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunksize", type=int, default=2000)
    ap.add_argument("--copies", type=int, default=12, help="process the embedded sample this many times over")
    ap.add_argument("--copies-as", choices=["datasets", "files"], default="datasets",
                    help="each copy a dataset of its own (84 datasets: the output's histograms 12x larger) or "
                         "another file of the same dataset (7 datasets, as a real job)")
    ap.add_argument("--engine", choices=["processes", "slurm"], default="processes")
    ap.add_argument("--lundnet", default=None)
    ap.add_argument("--twin", default=None)
    ap.add_argument("--logdir", default="/tmp/svjscout-bench-scaling")
    ap.add_argument("--workers", default="1,2", help="worker counts, comma-separated (the first is the reference)")
    ap.add_argument("--in-process", action="store_true",
                    help="also the same events processed in this process (bench_processor.py's measure)")
    args = ap.parse_args()
    logdir = Path(args.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    rows = []
    ref = None
    for n_workers in [int(x) for x in args.workers.split(",")]:
        overrides = {"executor.name": "dask", "executor.chunksize": args.chunksize, "executor.workers": n_workers}
        if args.lundnet:
            overrides["analysis.lundnet_model"] = args.lundnet
        if args.twin:
            overrides["analysis.twin_model"] = args.twin
        procs = []
        if args.engine == "processes":
            addr, procs = _processes(n_workers, logdir)
            overrides["executor.scheduler"] = addr
        else:
            overrides["executor.slurm"] = {"cores": 1, "processes": 1, "memory": "4GB", "walltime": "01:00:00",
                                           "scheduler_options": {"host": "127.0.0.1"},
                                           "worker_extra_args": ["--host", "127.0.0.1"], "log_directory": str(logdir)}
        try:
            cfg = load_job(None, overrides)
            cfg = _copies(cfg, args.copies, args.copies_as, logdir)
            if args.in_process and ref is None:
                ref = _in_process(cfg)
            rows.append(_measure(cfg, n_workers, procs[0].pid if procs else None))
        finally:
            for p in reversed(procs):
                p.terminate()
                p.wait(30)
    print(f"engine: {args.engine}, chunksize {args.chunksize}, {os.cpu_count()} CPUs")
    print(f"{'workers':>8}{'events':>9}{'chunks':>8}{'seconds':>10}{'events/s':>11}{'speed-up':>10}"
          f"{'peak RSS/worker MB':>20}{'overhead/chunk s':>18}{'transfer/chunk ms':>19}")
    for r in rows:
        print(f"{r['workers']:>8}{r['events']:>9}{r['chunks']:>8}{r['seconds']:>10.2f}{r['rate']:>11.0f}"
              f"{r['rate'] / rows[0]['rate']:>10.2f}{r['rss']:>20.0f}{r['overhead']:>18.3f}"
              f"{r['transfer'] * 1e3:>19.1f}")
    if len(rows) > 1:
        print(f"target: >= 1.8x from 1 to 2 workers; measured {rows[1]['rate'] / rows[0]['rate']:.2f}x")
        cores = os.cpu_count() or 1
        print(f"the scheduler and the client (this process) on the same {cores} cores, CPU seconds during the "
              "timed run:")
        for r in rows:
            share = (r["sched_cpu"] + r["client_cpu"]) / r["seconds"]
            print(f"  {r['workers']} worker(s): scheduler {r['sched_cpu']:.1f} s, client {r['client_cpu']:.1f} s = "
                  f"{share:.2f} of a core over the run")
        # with their costs separated: the workers had (cores - that share) cores when there were as many
        # workers as cores; one worker alone had a core of its own either way
        r1, r2 = rows[0], rows[1]
        if r1["workers"] == 1 and r2["workers"] == cores:
            share2 = (r2["sched_cpu"] + r2["client_cpu"]) / r2["seconds"]
            sep = r2["rate"] / r1["rate"] * cores / (cores - share2)
            print(f"speed-up with the scheduler's and client's CPU separated (the {cores} workers on "
                  f"{cores - share2:.2f} cores): {sep:.2f}x")
    if ref is not None:
        print(f"in this process (bench_processor.py's measure, files read first): {ref['events']} events processed "
              f"at {ref['rate']:.0f} events/s ({ref['rate_with_read']:.0f} events/s with the eager read); one "
              f"worker reaches {rows[0]['rate'] / ref['rate']:.2f}x of it "
              f"({rows[0]['rate'] / ref['rate_with_read']:.2f}x with the read); target >= 0.80x")


if __name__ == "__main__":
    main()
