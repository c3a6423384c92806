"""Read throughput on files written as CMS writes them (issue 33, item 2): what the processor costs
beyond reading its own branches.

On the files of DIR (benchmarks/write_cms_like.py: LZMA 9, NanoAOD clusters, every ScoutingNano
collection), one process, one core (ONNX on one thread), the files read whole (one chunk per
file, as a coffea worker reads a chunk), it prints events/s for:

* (o) opening each file and its tree (the metadata of every branch: ~1 s for 1,260 branches, paid
  per file, and by a coffea worker per chunk), which every other row includes;
* (a) reading and decompressing only the branches the processor reads (uproot; the list is taken
  from the processor itself, NanoEvents' access log on a first pass);
* (a') the MET branch alone (what a MET-first skim reads);
* (b) reading and decompressing every branch;
* (c) the processor on the files (NanoEvents, lazy: reading included), before and after issue 33:
  *before* builds NanoEvents over every branch, asks for all six PF fields and clusters through
  fastjet's awkward interface (``jets.cluster_awkward``), as the code before did; *after* is the
  code as it is (NanoEvents over ``BranchMap.processor_branches`` only, as the runner builds them).

Every measurement is repeated ``--repeat`` times, interleaved (a, a', b, c-before, c-after, a, ...)
so that they share the machine's conditions; the table gives the median rate and the spread
(min-max) and the ratio of each processor rate to (a), with its spread over the repetitions.

    python benchmarks/write_cms_like.py /tmp/cms --only qcd,ttbar,wjets,zjets --repeat 2 --ht-triggered 0.01
    python benchmarks/bench_read.py /tmp/cms [--repeat 5] [--prefilter on|off]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_processor import _before  # noqa: E402  (the processor as before issue 33: one definition)

os.environ.setdefault("SVJSCOUT_NO_PROGRESS", "1")
os.environ.setdefault("SVJSCOUT_ORT_THREADS", "1")


def _job(directory: str, prefilter: bool):
    """jobs/local.yaml with each dataset's file replaced by DIR/<same name> (datasets without one dropped)."""
    from svjscout.jobs.config import load_job

    cfg = load_job(None, {"analysis.prefilter": prefilter})
    datasets = {}
    for name, spec in cfg.datasets.items():
        files = [Path(directory) / Path(f.split(":", 1)[-1]).name for f in spec.files]
        if all(f.exists() for f in files):
            datasets[name] = spec.model_copy(update={"files": [str(f.resolve()) for f in files]})
    if not datasets:
        raise SystemExit(f"no file of the embedded datasets in {directory}: run benchmarks/write_cms_like.py first")
    return cfg.model_copy(update={"datasets": datasets})


def _events(path, dataset: str, access_log=None, only: list[str] | None = None):
    """NanoEvents of a whole file as a coffea worker builds them for a chunk (``only``: the runner's
    ``iteritems_options={"filter_name": ...}``, BranchMap.processor_branches); ``path`` a file name,
    or an open file (as coffea's executor passes it)."""
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.processors.schema import SVJScoutingSchema

    if not isinstance(path, str):
        meta = {"dataset": dataset, "filename": path.file_path}
        return NanoEventsFactory.from_root(file=path, treepath="Events", schemaclass=SVJScoutingSchema, mode="virtual",
                                           access_log=access_log, metadata=meta,
                                           iteritems_options={"filter_name": only} if only else {}).events()
    return NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="virtual",
                                       access_log=access_log, metadata={"dataset": dataset, "filename": path},
                                       iteritems_options={"filter_name": only} if only else {}).events()


def main(argv=None) -> None:
    import uproot

    from svjscout.jobs.runner import RunReport, preflight
    from svjscout.processors.processor import SVJProcessor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--prefilter", choices=("on", "off"), default="on")
    args = ap.parse_args(argv)
    cfg = _job(args.directory, args.prefilter == "on")
    pcfg = cfg.processor_config(preflight(cfg, RunReport()))
    proc = SVJProcessor(pcfg)
    files = [(name, path) for name in cfg.datasets for path in cfg.files(name)]

    # the processor's branches: NanoEvents' access log of one pass (also the warm-up)
    read: set[str] = set()
    outs_after = []
    only = cfg.schema_map.processor_branches()
    for name, path in files:
        log: list = []
        outs_after.append(proc.process(_events(path, name, log, only)))
        read |= {a.branch for a in log}
    with _before():
        log = []
        proc.process(_events(*files[0][::-1], log))
        read_before = {a.branch for a in log} | read
    branches = sorted(read)
    met = [cfg.schema_map.met_pt]
    n_events, n_branches, size, unc, unc_ours = 0, 0, 0, 0, 0
    for _, path in files:
        with uproot.open(path) as f:
            t = f["Events"]
            n_events += t.num_entries
            n_branches = max(n_branches, len(t.branches))
            size += os.path.getsize(path)
            unc += t.uncompressed_bytes
            unc_ours += sum(t[b].uncompressed_bytes for b in branches)
            comp = f.file.compression

    def open_only():
        for _, path in files:
            with uproot.open(path) as f:
                _ = f["Events"].num_entries

    # steady state: every file opened once, its tree's metadata read (uproot keeps the tree in the
    # file's object cache), no array cache: what a run pays per event on files much larger than these
    held = {path: uproot.open(path, array_cache=None) for _, path in files}
    for f in held.values():
        _ = f["Events"].num_entries

    def read_only(which, steady=False):
        for _, path in files:
            if steady:
                held[path]["Events"].arrays(which, library="ak")
                continue
            with uproot.open(path) as f:
                f["Events"].arrays(which, library="ak")

    def processor_run(before: bool, steady=False):
        timing: dict[str, float] = {}
        ctx = _before() if before else _null()
        with ctx:
            for name, path in files:
                src = held[path] if steady else path
                out = proc.process(_events(src, name, only=None if before else only))
                for k, v in out["timing"].items():
                    timing[k] = timing.get(k, 0.0) + v
        return timing

    # a MET-first read (MET, then the PF arrays of the events past the MET bound only): uproot decompresses
    # whole baskets, so it saves only the PF baskets without any event past the bound
    from svjscout.processors.prefilter import met_bound

    bound = met_bound(pcfg.cuts)
    n_baskets, n_needed, n_pass = 0, 0, 0
    pf_pt = f"{cfg.schema_map.pf_collection}_{cfg.schema_map.pf_fields['pt']}"
    for _, path in files:
        with uproot.open(path) as f:
            t = f["Events"]
            met_pt = t[cfg.schema_map.met_pt].array(library="np")
            passing = met_pt > bound if bound is not None else np.ones(len(met_pt), bool)
            n_pass += int(passing.sum())
            br = t[pf_pt]
            starts = br.member("fBasketEntry")[: br.num_baskets + 1]
            for lo, hi in zip(starts[:-1], starts[1:]):
                n_baskets += 1
                n_needed += bool(passing[lo:hi].any())

    tests = {"o": open_only, "a": lambda: read_only(branches), "a'": lambda: read_only(met),
             "b": lambda: read_only(None), "before": lambda: processor_run(True), "after": lambda: processor_run(False),
             "a_s": lambda: read_only(branches, True), "b_s": lambda: read_only(None, True),
             "before_s": lambda: processor_run(True, True), "after_s": lambda: processor_run(False, True)}
    rows: dict[str, list[float]] = {k: [] for k in tests}
    stages: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for key, fn in tests.items():
            t = time.perf_counter()
            res = fn()
            rows[key].append(time.perf_counter() - t)
            if key == "after_s":
                for k, v in res.items():
                    stages.setdefault(k, []).append(v)

    selected = sum(int(o["cutflow"][ds]["raw"][-1]) for o in outs_after for ds in o["cutflow"])
    skipped = sum(c["not_clustered"] for o in outs_after for c in o["counts"].values())
    print(f"{n_events:,} events in {len(files)} files of {args.directory} ({comp}, {n_branches:,} branches, "
          f"{size / 1e6:.1f} MB on disk, {unc / 1e6:.1f} MB uncompressed); one core; {args.repeat} repetitions, "
          "interleaved")
    print(f"the processor reads {len(branches)} branches ({unc_ours / 1e6:.1f} MB uncompressed = "
          f"{unc_ours / unc:.0%}): {', '.join(branches)}")
    print(f"before issue 33 it read {len(read_before)}: + {', '.join(sorted(read_before - read)) or 'none'}")
    print(f"prefilter {args.prefilter}: {skipped:,} of {n_events:,} events not clustered ({skipped / n_events:.1%}); "
          f"{selected:,} pass every cut")
    print(f"MET-first read: {n_pass:,} events ({n_pass / n_events:.1%}) past the MET bound; their PF arrays lie in "
          f"{n_needed} of the {n_baskets} PF baskets ({pf_pt}), which a MET-first read would still "
          "decompress")
    print()
    labels = {"o": "(o) open the files (no branch read)", "a": "(a) read the processor's branches",
              "a'": "(a') read MET only", "b": "(b) read every branch", "before": "(c) processor, before",
              "after": "(c) processor, after"}
    steady = {"a_s": "(a) read the processor's branches", "b_s": "(b) read every branch",
              "before_s": "(c) processor, before", "after_s": "(c) processor, after"}

    def table(which: dict, ref: str) -> None:
        print(f"{'':<38}{'events/s (median)':>18}{'min-max':>16}{'/ (a) (median)':>16}{'min-max':>12}")
        for key, label in which.items():
            rates = [n_events / x for x in rows[key]]
            ratios = [x_a / x for x, x_a in zip(rows[key], rows[ref])]  # rate / rate of (a), per repetition
            print(f"{label:<38}{statistics.median(rates):>18,.0f}{f'{min(rates):,.0f}-{max(rates):,.0f}':>16}"
                  f"{statistics.median(ratios):>16.2f}{f'{min(ratios):.2f}-{max(ratios):.2f}':>12}")

    print("each file opened for each pass (as a coffea worker opens its chunk; these files are small, so opening")
    print("the 1,260-branch tree dominates):")
    table(labels, "a")
    print()
    print("steady state (files opened once beforehand, tree metadata cached, no array cache: files much larger")
    print("than a chunk's opening cost):")
    table(steady, "a_s")
    print()
    print("per stage, processor after, steady state (median seconds over the repetitions; 'read' includes the lazy "
          "reads of PF and MET; building NanoEvents comes before the first stage)")
    total = sum(statistics.median(v) for v in stages.values())
    for k, v in stages.items():
        m = statistics.median(v)
        print(f"  {k:<22}{m:>9.3f} s{m / total:>8.1%}")


@contextmanager
def _null():
    yield


if __name__ == "__main__":
    main()
