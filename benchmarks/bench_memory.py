"""Peak memory of one worker per chunk size, per stage: which chunk size fits a memory slot.

Scouting-like events: the embedded sample's background files with the scouting trigger emulated
(AK4 H_T > 410 GeV, benchmarks/scouting_like_trigger.py), repeated up to the chunk size and
written to one ZSTD file per chunk size in baskets of 2,000 events (``--basket``), as CMS files
hold them (``--all-events``: every embedded event, signals too, without the trigger). For each
chunk size a fresh process (as a dask worker) imports the libraries, opens the shipped ONNX
models, processes a 100-event warm-up chunk (baseline), then reads one chunk of N events as
coffea's Runner gives it (NanoEvents, virtual) and processes it, and pickles the output as dask
does with a task's result.

Per stage the peak RSS is exact: the kernel's high-water mark (VmHWM) is reset before each stage
(``/proc/self/clear_refs``) and read after it. Stages: ``nanoevents`` (factory), the processor's
``read``, ``prefilter``, ``cluster``, ``select``, ``lund``, ``onnx``, ``fill`` (histograms,
systematic variations, parent records) and ``pickle`` (the result as dask sends it).

    python benchmarks/bench_memory.py [--sizes 10000,50000,100000] [--batch-events 0,10000]
        [--all-events] [--systematics] [--lundnet PATH --twin PATH]

``--batch-events`` compares ``analysis.batch_events`` settings (0: the chunk in one batch).
Prints one table row per (chunk size, batch setting): peak RSS over the chunk, baseline, the
stage with the highest peak, result size; then the per-stage peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SVJSCOUT_NO_PROGRESS", "1")
os.environ.setdefault("SVJSCOUT_ORT_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from svjscout.samples.layouts import pf_collection_of  # noqa: E402

STAGES = ("nanoevents", "read", "prefilter", "cluster", "select", "lund", "onnx", "fill", "pickle")
#: the processor's methods, per stage (``_fill`` includes the systematic variations)
METHODS = {"_read": "read", "_prefilter": "prefilter", "_cluster": "cluster", "_select": "select",
           "_lund": "lund", "_infer": "onnx", "_fill": "fill"}


def _hwm_mb(pid: int | str = "self") -> float:
    """Peak RSS of a process (VmHWM; unlike ru_maxrss it does not inherit the parent's peak across
    exec), MB; this process by default. bench_processor.py and bench_scheduler.py use it too."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class StagePeaks:
    """Peak RSS per stage: the high-water mark reset at a stage's start, read at its end (a stage
    entered several times, e.g. per batch, keeps its largest peak)."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = {}
        self.rise: dict[str, float] = {}  # the largest rise of RSS over its value at the stage's start

    def run(self, stage: str, fn, *args, **kwargs):
        _reset_hwm()
        start = _rss_mb()
        try:
            return fn(*args, **kwargs)
        finally:
            hwm = _hwm_mb()
            self.peak[stage] = max(self.peak.get(stage, 0.0), hwm)
            self.rise[stage] = max(self.rise.get(stage, 0.0), hwm - start)

    def wrap(self, obj, method: str, stage: str) -> None:
        fn = getattr(obj, method)
        setattr(obj, method, lambda *a, **k: self.run(stage, fn, *a, **k))


def _events(all_events: bool):
    """The processor's branches of the embedded events (background, H_T-triggered unless ``all_events``)."""
    import awkward as ak
    import uproot

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scouting_like_trigger import trigger_mask

    from svjscout.jobs.config import load_job

    cfg = load_job(None, {})
    branches = cfg.schema_map.required_branches(is_mc=True)
    parts = []
    for name, spec in cfg.datasets.items():
        if not all_events and spec.kind != "background":
            continue
        for p in cfg.files(name):
            with uproot.open(p) as f:
                arrays = f["Events"].arrays(branches, library="ak")
            if not all_events:
                arrays = arrays[trigger_mask(arrays, 410.0)]
            parts.append(arrays)
    return cfg, ak.concatenate(parts)


def _write_baskets(path: str, cols: dict, basket: int) -> None:
    """The columns as an ``Events`` tree (ZSTD:1) in baskets of ``basket`` events, as CMS files have
    them: a reader of a few thousand events then decompresses only their baskets."""
    import awkward as ak
    import uproot

    n = len(next(iter(cols.values())))
    with uproot.recreate(path, compression=uproot.ZSTD(1)) as f:
        types = {k: (v.type.content if isinstance(v, ak.Array) else v.dtype) for k, v in cols.items()}
        tree = f.mktree("Events", types)
        for a in range(0, n, basket):
            tree.extend({k: v[a:a + basket] for k, v in cols.items()})


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_worker":
        _worker(sys.argv[2])
        return
    import awkward as ak
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_processor import _tree_cols

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,50000,100000", help="chunk sizes (events), comma-separated")
    ap.add_argument("--batch-events", default="0,10000", help="analysis.batch_events settings, comma-separated")
    ap.add_argument("--all-events", action="store_true", help="every embedded event, no trigger (signals too)")
    ap.add_argument("--systematics", action="store_true", help="the chunk's dataset is a signal, variations on")
    ap.add_argument("--no-prefilter", action="store_true")
    ap.add_argument("--basket", type=int, default=2000, help="events per basket of the files written (CMS: ~1-5k)")
    ap.add_argument("--lundnet", default=None)
    ap.add_argument("--twin", default=None)
    args = ap.parse_args()
    cfg, allev = _events(args.all_events)
    models = {"lundnet": args.lundnet or str(cfg.resolve(cfg.analysis.lundnet_model)),
              "twin": args.twin or str(cfg.resolve(cfg.analysis.twin_model))}
    npf = float(ak.mean(ak.num(allev[f"{pf_collection_of(allev.fields)}_pt"])))
    label = "every embedded event" if args.all_events else "embedded background, AK4 H_T > 410 GeV"
    print(f"events: {label}: {len(allev):,} distinct, {npf:.0f} PF candidates per event, repeated to the chunk size;"
          f" prefilter {'off' if args.no_prefilter else 'on'}, systematics {'on' if args.systematics else 'off'}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        for n in [int(x) for x in args.sizes.split(",")]:
            path = str(Path(tmp) / f"chunk_{n}.root")
            chunk = ak.concatenate([allev] * int(np.ceil(n / len(allev))))[:n]
            _write_baskets(path, _tree_cols(chunk), args.basket)
            del chunk
            for batch in [int(x) for x in args.batch_events.split(",")]:
                job = {"path": path, "n": n, "batch_events": batch, "systematics": args.systematics,
                       "prefilter": not args.no_prefilter, "payload": str(cfg.resolve(
                           cfg.analysis.systematics.payload)), **models}
                res = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(job)],
                                     capture_output=True, text=True)
                if res.returncode:
                    raise SystemExit(f"worker failed for {n} events:\n{res.stderr[-3000:]}")
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print()
    print(f"{'chunk':>8}{'batch':>8}{'peak RSS MB':>13}{'baseline MB':>13}{'chunk MB':>10}{'worst stage':>13}"
          f"{'result MB':>11}{'seconds':>9}")
    for r in rows:
        worst = max(r["stages"], key=r["stages"].get)
        print(f"{r['n']:>8,}{r['batch_events'] or 'none':>8}{r['peak_mb']:>13,.0f}{r['baseline_mb']:>13,.0f}"
              f"{r['peak_mb'] - r['baseline_mb']:>10,.0f}{worst:>13}{r['result_mb']:>11.2f}{r['seconds']:>9.1f}")
    print()
    print("peak RSS per stage (MB):")
    print(f"{'chunk':>8}{'batch':>8}" + "".join(f"{s:>11}" for s in STAGES))
    for r in rows:
        print(f"{r['n']:>8,}{r['batch_events'] or 'none':>8}"
              + "".join(f"{r['stages'].get(s, float('nan')):>11,.0f}" for s in STAGES))
    print()
    print("largest rise of RSS within a stage over its value at the stage's start (MB; memory freed by a")
    print("batch stays with the process, so after the first batch the peaks above are flat):")
    print(f"{'chunk':>8}{'batch':>8}" + "".join(f"{s:>11}" for s in STAGES))
    for r in rows:
        print(f"{r['n']:>8,}{r['batch_events'] or 'none':>8}"
              + "".join(f"{r['rise'].get(s, float('nan')):>11,.0f}" for s in STAGES))


def _worker(arg: str) -> None:
    """Child process: one chunk as a coffea worker gets it, processed and pickled; peaks as JSON."""
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.processors.processor import DatasetInfo, ProcessorConfig, SVJProcessor
    from svjscout.processors.schema import SVJScoutingSchema

    job = json.loads(arg)
    path, n = job["path"], job["n"]
    kind = "signal" if job["systematics"] else "background"
    cfg = ProcessorConfig(prefilter=job["prefilter"], lundnet_model=job["lundnet"], twin_model=job["twin"],
                          wp=(0.5, 0.5), batch_events=job["batch_events"],
                          systematics={"enabled": job["systematics"], "payload": job["payload"]},
                          datasets={"mix": DatasetInfo(kind=kind, xsec=1.0, sumw=float(n))})
    proc = SVJProcessor(cfg)
    meta = {"dataset": "mix", "filename": path, "treename": "Events", "entrystart": 0, "entrystop": n}  # as coffea's

    def events(stop):
        return NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="virtual",
                                           entry_stop=stop, metadata={**meta, "entrystop": stop}).events()

    pickle.dumps(proc.process(events(100)))  # baseline: libraries, ONNX sessions, numba, a warm-up
    baseline = max(_hwm_mb(), _rss_mb())
    peaks = StagePeaks()
    for method, stage in METHODS.items():
        peaks.wrap(proc, method, stage)
    _reset_hwm()
    t = time.perf_counter()
    ev = peaks.run("nanoevents", events, n)
    out = proc.process(ev)
    blob = peaks.run("pickle", pickle.dumps, out)
    seconds = time.perf_counter() - t
    print(json.dumps({"n": n, "batch_events": job["batch_events"], "baseline_mb": baseline,
                      "peak_mb": max(peaks.peak.values()), "stages": peaks.peak, "rise": peaks.rise,
                      "result_mb": len(blob) / 1e6,
                      "seconds": seconds}))


if __name__ == "__main__":
    main()
