"""The inputs of the scaling model to 100-1,000 workers, measured, and the model's table (issue 33).

Measures, on this machine:

1. **The scheduler's cost per task**: a ``dask scheduler`` process and ``--workers`` ``dask worker``
   processes (one thread each, as ``bench_scaling.py`` starts them); ``--tasks`` no-op tasks
   submitted as coffea's ``DaskExecutor`` submits chunks (``client.map``) and reduced as it reduces
   them (groups of ``treereduction`` = 8, the runner's setting, until one is left). Printed: tasks/s
   through the whole graph (wall clock; the workers and the client share the cores) and the
   scheduler process's CPU seconds per task, whose inverse is what one scheduler sustains when it
   has a core to itself (the scheduler is one Python thread).
2. **What one chunk sends back**: the processor's output of one chunk of a background and of a
   signal dataset of the embedded sample (systematics on), pickled and LZ4-compressed exactly as
   coffea's executor ships it (``_compress`` at level 1), and the time of one reduction task
   (decompress 8 outputs, add them, compress).

then prints the model (docs/performance.md, "Scaling to 100-1,000 workers"): for N workers, chunks
of C events processed at r events/s per core with a fixed cost o per chunk (file open, NanoEvents,
scheduling), each worker finishes a chunk every t = C / r + o seconds, so the scheduler must
handle N / t x (1 + 1/7) tasks/s (chunks and their reductions); its load is that times its CPU
seconds per task. The time for E events is E / (N C / t) plus the reduction's tail (log8 of the
chunks, one reduction task per level) and the final output's transfer; where the scheduler's load
exceeds 1, it sets the pace: the chunks and reductions times its CPU seconds per task.

    python benchmarks/bench_scheduler.py [--tasks 2000,10000] [--workers 2] [--rate 7203]
        [--overhead 0.4] [--events 1e10]

``--rate``: events/s per core of the processor on the real format (``bench_read.py``: 7,203 on files
written as CMS writes ScoutingNano, H_T-triggered imitation); ``--overhead``: seconds per chunk
besides processing (coffea reopens the file per chunk: 0.2-0.6 s on such files, docs/read_throughput.md).
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SVJSCOUT_NO_PROGRESS", "1")
os.environ.setdefault("SVJSCOUT_ORT_THREADS", "1")

#: coffea's DaskExecutor: results reduced in groups of this many (jobs/runner.py passes 8)
TREEREDUCTION = 8


def _noop(i):
    return i


def _add(items):
    return sum(items)


def scheduler_cost(n_tasks: int, n_workers: int, logdir: Path) -> dict:
    """Wall time and the scheduler's CPU seconds for ``n_tasks`` no-op chunks and their tree reduction."""
    import psutil
    from bench_memory import _hwm_mb
    from bench_scaling import _processes  # the same separate scheduler and worker processes
    from dask.distributed import Client

    addr, procs = _processes(n_workers, logdir)
    try:
        sched = psutil.Process(procs[0].pid)
        with Client(addr, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=120)
            client.gather(client.map(_noop, range(200), pure=False))  # warm-up
            hwm0 = _hwm_mb(procs[0].pid)
            cpu0, t0 = sum(sched.cpu_times()[:2]), time.perf_counter()
            work = client.map(_noop, range(n_tasks), pure=False)
            n_total = len(work)
            while len(work) > 1:  # coffea's reduction: consecutive groups of TREEREDUCTION
                work = client.map(_add, [work[i:i + TREEREDUCTION] for i in range(0, len(work), TREEREDUCTION)],
                                  pure=False)
                n_total += len(work)
            total = work[0].result()
            wall = time.perf_counter() - t0
            cpu = sum(sched.cpu_times()[:2]) - cpu0
            hwm = _hwm_mb(procs[0].pid)
        if total != n_tasks * (n_tasks - 1) // 2:
            raise SystemExit(f"the reduction gave {total}, not {n_tasks * (n_tasks - 1) // 2}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    return {"chunks": n_tasks, "tasks": n_total, "wall": wall, "tasks_per_s": n_total / wall,
            "sched_cpu_per_task": cpu / n_total, "sched_kb_per_task": 1e3 * max(hwm - hwm0, 0.0) / n_total,
            "sched_peak_mb": hwm}


def chunk_outputs(chunk_events: int) -> dict[str, dict]:
    """One chunk's output (embedded background and signal): pickled and compressed sizes, reduction time."""
    import uproot
    from coffea.nanoevents import NanoEventsFactory
    from coffea.processor import accumulate
    from coffea.processor.executor import _compress, _decompress

    from svjscout.jobs.runner import processor_from_job

    jp = processor_from_job(None)
    proc, cfg = jp.processor, jp.processor.config
    out = {}
    for label, dataset in (("background (qcd)", "qcd"), ("signal, systematics on", "svj_mz2000_rinv0.3")):
        path = next(iter(jp.fileset[dataset]["files"]))
        with uproot.open(path) as f:  # the chunk's entry range, as coffea's Runner describes it
            stop = min(chunk_events, f["Events"].num_entries)
        meta = {"dataset": dataset, "filename": path, "treename": "Events", "entrystart": 0, "entrystop": stop}
        ev = NanoEventsFactory.from_root({path: "Events"}, schemaclass=cfg.branch_map.schema_class(), mode="virtual",
                                         entry_stop=stop, metadata=meta).events()
        result = proc.process(ev)
        raw = len(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        packed = _compress(result, 1)
        t = time.perf_counter()
        for _ in range(3):  # one reduction task: 8 outputs in, one out (coffea's _reduce)
            items = [packed] * TREEREDUCTION
            merged = accumulate(map(_decompress, items[1:]), _decompress(items[0]))
            _compress(merged, 1)
        out[label] = {"events": len(ev), "pickled_mb": raw / 1e6, "compressed_mb": len(packed) / 1e6,
                      "reduce_s": (time.perf_counter() - t) / 3}
    return out


def model_rows(workers: list[int], chunks: list[int], rate: float, overhead: float, events: float,
               sched_cpu_per_task: float, result_mb: float, reduce_s: float, sched_kb_per_task: float = 0.0,
               link_mb_s: float = 100.0) -> list[dict]:
    """The scaling model (module docstring) for each (workers, chunk size)."""
    rows = []
    for n in workers:
        for c in chunks:
            t_chunk = c / rate + overhead
            n_chunks = math.ceil(events / c)
            tasks_per_s = n / t_chunk * (1 + 1 / (TREEREDUCTION - 1))
            load = tasks_per_s * sched_cpu_per_task
            waves = math.ceil(n_chunks / n)
            depth = math.ceil(math.log(n_chunks, TREEREDUCTION)) if n_chunks > 1 else 0
            # the last wave plus the reduction's levels (each: one reduction task and the transfer of
            # 8 results), then the final result to the client
            tail = depth * (reduce_s + TREEREDUCTION * result_mb / link_mb_s) + result_mb / link_mb_s
            # the workers' pace or the scheduler's, whichever is slower
            wall = max(waves * t_chunk, n_chunks * (1 + 1 / (TREEREDUCTION - 1)) * sched_cpu_per_task)
            rows.append({"workers": n, "chunk": c, "t_chunk": t_chunk, "chunks": n_chunks, "tasks_per_s": tasks_per_s,
                         "sched_load": load, "hours": (wall + tail) / 3600, "efficiency": c / rate / t_chunk,
                         "tail_s": tail,
                         # coffea submits every chunk and reduction at once: the scheduler holds them all
                         "sched_gb": n_chunks * (1 + 1 / (TREEREDUCTION - 1)) * sched_kb_per_task / 1e6})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="2000,10000", help="no-op chunks per measurement, comma-separated")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-events", type=int, default=10000, help="events of the chunk whose output is measured")
    ap.add_argument("--rate", type=float, default=7203.0, help="events/s per core (bench_read.py, CMS-written files)")
    ap.add_argument("--overhead", type=float, default=0.4, help="seconds per chunk besides processing")
    ap.add_argument("--events", type=float, default=1e10)
    ap.add_argument("--logdir", default=None)
    args = ap.parse_args(argv)
    logdir = Path(args.logdir or tempfile.mkdtemp(prefix="bench_scheduler_"))
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")

    print(f"\n1. the scheduler: no-op chunks + coffea's tree reduction (groups of {TREEREDUCTION}), "
          f"{args.workers} worker processes")
    print(f"{'chunks':>8}{'tasks':>8}{'wall s':>9}{'tasks/s':>10}{'sched CPU ms/task':>19}{'sustains tasks/s':>18}"
          f"{'sched peak MB':>15}{'kB/task':>9}")
    costs = []
    for n in (int(x) for x in args.tasks.split(",")):
        r = scheduler_cost(n, args.workers, logdir)
        costs.append(r)
        print(f"{r['chunks']:>8}{r['tasks']:>8}{r['wall']:>9.2f}{r['tasks_per_s']:>10,.0f}"
              f"{1e3 * r['sched_cpu_per_task']:>19.3f}{1 / r['sched_cpu_per_task']:>18,.0f}{r['sched_peak_mb']:>15.0f}"
              f"{r['sched_kb_per_task']:>9.1f}")
    per_task = max(c["sched_cpu_per_task"] for c in costs)

    print(f"\n2. one chunk's output (embedded sample, first {args.chunk_events} events of the file, jobs/local.yaml)")
    print(f"{'dataset':<26}{'events':>8}{'pickled MB':>12}{'lz4 MB':>9}{'reduce 8 s':>12}")
    outs = chunk_outputs(args.chunk_events)
    for label, o in outs.items():
        print(f"{label:<26}{o['events']:>8}{o['pickled_mb']:>12.2f}{o['compressed_mb']:>9.3f}{o['reduce_s']:>12.3f}")
    sig = outs["signal, systematics on"]

    print(f"\n3. the model: {args.events:.0e} events at {args.rate:,.0f} events/s per core, {args.overhead} s per "
          f"chunk besides processing, scheduler {1e3 * per_task:.3f} ms CPU per task (the largest above), results of "
          f"{sig['compressed_mb']:.3f} MB (a signal chunk's; a background chunk's are smaller), "
          f"{sig['reduce_s']:.3f} s per reduction, 100 MB/s between workers")
    print(f"{'workers':>8}{'chunk':>9}{'s/chunk':>9}{'chunks':>10}{'tasks/s':>9}{'sched load':>12}{'busy':>7}"
          f"{'tail s':>8}{'hours':>8}{'sched GB':>10}")
    rows = model_rows([100, 500, 1000], [10_000, 50_000, 100_000, 200_000], args.rate, args.overhead, args.events,
                      per_task, sig["compressed_mb"], sig["reduce_s"], max(c["sched_kb_per_task"] for c in costs))
    for r in rows:
        print(f"{r['workers']:>8}{r['chunk']:>9,}{r['t_chunk']:>9.2f}{r['chunks']:>10,}{r['tasks_per_s']:>9.1f}"
              f"{r['sched_load']:>12.2f}{r['efficiency']:>7.2f}{r['tail_s']:>8.1f}{r['hours']:>8.2f}{r['sched_gb']:>10.1f}")
    print("sched load: the scheduler's CPU share (1 = saturated: beyond it the scheduler sets the pace); busy: the "
          "share of a chunk's time spent processing; sched GB: the scheduler's memory for the graph (all tasks "
          "submitted at once)")


if __name__ == "__main__":
    main()
