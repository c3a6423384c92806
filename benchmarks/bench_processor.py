"""Processor throughput per core, with and without the prefilter, beside clustering every event.

Runs in one process (one core) on a sample already read into memory, after a warm-up pass
(numba compilation, ONNX sessions), and prints, on the same events:

* clustering every event (AK4 + AK8 of the candidates the processor clusters: finite, pt > 0, CHS where
  the file has the vertex index and the job asks for it; until 2026-12-07 this row clustered every
  candidate, the charged pileup that the Run-3 layout holds included);
* the processor with ``analysis.prefilter`` false (it clusters every event) and true;
* before/after issue 33 (item 3): clustering every event and the prefiltered processor with the
  clustering through fastjet's awkward interface and every PF field read (``jets.cluster_awkward``,
  the code before) and as it is; each row's "x clustering every event" is taken per repetition
  against clustering every event with the same code (median and min-max over the repetitions,
  which run interleaved);
* the fraction of events the prefilter rejects before clustering, and a check that both
  processor runs give bit-identical histograms and cutflows;
* the time per stage of the processor with the prefilter;
* the file read + decompression rate (NanoEvents, the processor's branches), and with
  ``--compression`` the files as shipped and rewritten with LZMA 9 (CMS NanoAOD's), ZSTD, LZ4,
  ZLIB and no compression;
* beside each wall-clock rate, the process CPU time and its rate: on a shared machine the
  wall-clock rates fall with the load (the load average is printed), the CPU-time rates much less;
* with ``--memory``: the peak memory (max RSS) of one worker process running the processor on
  one chunk of 10k, 50k and 100k events (the sample's events repeated up to the chunk size).

    python benchmarks/bench_processor.py [--sample embedded|DIR] [--lundnet PATH --twin PATH]
        [--repeat 2] [--compression] [--memory]

``--sample DIR`` takes every ``*.root`` file in DIR as a background dataset (for the
H_T-triggered sample of samples/scouting_like/make.sh: ``--sample data/scouting_like``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("SVJSCOUT_NO_PROGRESS", "1")
os.environ.setdefault("SVJSCOUT_ORT_THREADS", "1")


def _job(sample: str, lundnet: str | None, twin: str | None):
    """The job config: jobs/local.yaml (embedded) or its settings over the files of DIR."""
    import yaml

    from svjscout.jobs.config import load_job

    overrides = {}
    if lundnet:
        overrides["analysis.lundnet_model"] = lundnet
    if twin:
        overrides["analysis.twin_model"] = twin
    if sample == "embedded":
        return load_job(None, overrides)
    files = sorted(Path(sample).glob("*.root"))
    if not files:
        raise SystemExit(f"no .root files in {sample}: run samples/scouting_like/make.sh first")
    local = Path(__file__).resolve().parent.parent / "jobs" / "local.yaml"
    job = yaml.safe_load(local.read_text())
    job["name"] = f"bench-{Path(sample).name}"
    job["datasets"] = {f.stem: {"kind": "background", "files": [str(f.resolve())]} for f in files}
    tmp = Path(tempfile.mkdtemp(prefix="bench_processor_")) / "job.yaml"
    tmp.write_text(yaml.safe_dump(job))
    return load_job(tmp, overrides)


def _read(cfg):
    """[(dataset, path, NanoEvents)] read eagerly (every branch; the processor's are most of them), seconds."""
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.processors.schema import SVJScoutingSchema

    out, seconds = [], 0.0
    for name in cfg.datasets:
        for path in cfg.files(name):
            t = time.perf_counter()
            ev = NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="eager",
                                             metadata={"dataset": name, "filename": path}).events()
            _touch(cfg, ev)
            seconds += time.perf_counter() - t
            out.append((name, path, ev))
    return out, seconds


def _touch(cfg, ev) -> None:
    import awkward as ak

    pf = cfg.schema_map.pf_candidates(ev)
    for f in ("pt", "eta", "phi", "mass"):
        ak.sum(pf[f])
    cfg.schema_map.met(ev)


def _compression_table(cfg, samples) -> list[str]:
    """Read + decompression of the processor's branches for the files rewritten per algorithm."""
    import uproot

    branches = cfg.schema_map.required_branches(is_mc=True)
    with uproot.open(samples[0][1]) as f:  # the files as they are (the generator's writer: ZSTD:5 today)
        shipped = f"{type(f.file.compression).__name__}:{f.file.compression.level} (as shipped)" \
            if f.file.compression is not None else "none (as shipped)"
    algos = [(shipped, None), ("LZMA:9 (CMS NanoAOD)", uproot.LZMA(9)), ("ZSTD:5", uproot.ZSTD(5)),
             ("LZ4:4", uproot.LZ4(4)), ("ZLIB:1", uproot.ZLIB(1)), ("none", None)]
    n_events = sum(len(e) for _, _, e in samples)
    lines = [f"{'compression':<26}{'MB':>8}{'read s':>9}{'events/s':>12}{'MB/s (file)':>13}{'CPU s':>8}"
             f"{'ev/CPU-s':>11}"]
    with tempfile.TemporaryDirectory(prefix="bench_compression_") as tmp:
        for label, algo in algos:
            paths = []
            for i, (_, path, _) in enumerate(samples):
                if label == shipped:
                    paths.append(path)
                    continue
                dst = Path(tmp) / f"{i}.root"
                with uproot.open(path) as f:
                    cols = _tree_cols(f["Events"].arrays(branches, library="ak"))
                _write_tree(dst, cols, algo)
                paths.append(str(dst))
            size = sum(os.path.getsize(p) for p in paths) / 1e6
            best = best_cpu = float("inf")
            for _ in range(2):
                t, c = time.perf_counter(), time.process_time()
                for p in paths:
                    with uproot.open(p) as f:
                        f["Events"].arrays(branches, library="ak")
                best = min(best, time.perf_counter() - t)
                best_cpu = min(best_cpu, time.process_time() - c)
            lines.append(f"{label:<26}{size:>8.1f}{best:>9.2f}{n_events / best:>12,.0f}{size / best:>13.1f}"
                         f"{best_cpu:>8.2f}{n_events / best_cpu:>11,.0f}")
    return lines


def _tree_cols(arrays) -> dict:
    """Events arrays (flat branches) -> columns for uproot's mktree/extend (collections zipped)."""
    from svjscout.samples.skim import collections_of

    return collections_of(arrays)


def _write_tree(path, cols: dict, compression) -> None:
    import awkward as ak
    import uproot

    with uproot.recreate(path, compression=compression) as g:
        g.mktree("Events", {k: (v.type.content if isinstance(v, ak.Array) else v.dtype)
                            for k, v in cols.items()}).extend(cols)


def _memory(cfg, sizes, prefilter_modes) -> list[str]:
    """Peak RSS of a fresh worker process reading and processing one chunk of N events."""
    import awkward as ak
    import numpy as np
    import uproot
    from bench_memory import _write_baskets

    branches = cfg.schema_map.required_branches(is_mc=True)
    parts = []
    for name in cfg.datasets:
        for p in cfg.files(name):
            with uproot.open(p) as f:
                parts.append(f["Events"].arrays(branches, library="ak"))
    allev = ak.concatenate(parts)
    models = {"lundnet": cfg.resolve(cfg.analysis.lundnet_model), "twin": cfg.resolve(cfg.analysis.twin_model)}
    lines = [f"{'chunk (events)':<16}"
             + "".join(f"{'prefilter ' + ('on' if m else 'off'):>18}" for m in prefilter_modes)
             + f"{'baseline':>12}"]
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        for n in sizes:
            path = str(Path(tmp) / f"chunk_{n}.root")
            chunk = ak.concatenate([allev] * int(np.ceil(n / len(allev))))[:n]
            # in baskets of 2,000 events, as CMS files hold them (before 2026-12-07: one basket per branch,
            # so the 100-event warm-up decompressed the whole chunk and the baseline grew with it)
            _write_baskets(path, _tree_cols(chunk), 2000)
            del chunk
            row, base = [], None
            for mode in prefilter_modes:
                arg = json.dumps({"path": path, "n": n, "prefilter": mode, **models})
                res = subprocess.run([sys.executable, __file__, "--_memory-worker", arg],
                                     capture_output=True, text=True, check=True)
                r = json.loads(res.stdout.strip().splitlines()[-1])
                row.append(f"{r['peak_mb']:>15,.0f} MB")
                base = r["baseline_mb"]
            lines.append(f"{n:<16,}" + "".join(f"{c:>18}" for c in row) + f"{base:>9,.0f} MB")
    return lines


def _memory_worker(arg: str) -> None:
    """Child process: read one chunk (NanoEvents, as a coffea worker does) and process it; print peak RSS."""
    from bench_memory import _hwm_mb
    from coffea.nanoevents import NanoEventsFactory

    from svjscout.processors.processor import DatasetInfo, ProcessorConfig, SVJProcessor
    from svjscout.processors.schema import SVJScoutingSchema

    job = json.loads(arg)
    path, n = job["path"], job["n"]
    cfg = ProcessorConfig(prefilter=job["prefilter"], lundnet_model=job["lundnet"], twin_model=job["twin"],
                          wp=(0.5, 0.5), datasets={"mix": DatasetInfo(kind="background", xsec=1.0, sumw=float(n))})
    proc = SVJProcessor(cfg)
    # the metadata coffea's Runner gives a worker (tree name and entry range): without them the processor
    # cannot read a large chunk batch by batch from the file and slices it in memory instead
    meta = {"dataset": "mix", "filename": path, "treename": "Events", "entrystart": 0, "entrystop": n}
    # baseline: libraries loaded, ONNX sessions and a warm-up on 100 events
    proc.process(NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="virtual",
                                             entry_stop=100,
                                             metadata={**meta, "entrystop": 100}).events())
    baseline = _hwm_mb()
    events = NanoEventsFactory.from_root({path: "Events"}, schemaclass=SVJScoutingSchema, mode="virtual",
                                         metadata=meta).events()
    proc.process(events)
    peak = _hwm_mb()
    print(json.dumps({"peak_mb": peak, "baseline_mb": baseline}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_memory-worker":
        _memory_worker(sys.argv[2])
        return

    from svjscout.jobs.runner import RunReport, preflight
    from svjscout.processors.dataquality import select_candidates
    from svjscout.processors.jets import cluster, cluster_awkward
    from svjscout.processors.processor import SVJProcessor

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", default="embedded", help="'embedded' or a directory of .root files")
    ap.add_argument("--lundnet", default=None)
    ap.add_argument("--twin", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--compression", action="store_true", help="also read the files rewritten per algorithm")
    ap.add_argument("--memory", action="store_true", help="also peak memory per worker, chunks of --memory-sizes")
    ap.add_argument("--only-memory", action="store_true", help="skip the throughput comparison")
    ap.add_argument("--memory-sizes", default="10000,50000,100000", help="chunk sizes (events), comma-separated")
    args = ap.parse_args()
    cfg = _job(args.sample, args.lundnet, args.twin)
    if args.only_memory:
        for line in _memory(cfg, [int(x) for x in args.memory_sizes.split(",")], (True, False)):
            print(line)
        return
    infos = preflight(cfg, RunReport())
    pcfg = cfg.processor_config(infos)
    procs = {on: SVJProcessor(pcfg.model_copy(update={"prefilter": on})) for on in (False, True)}
    samples, t_read = _read(cfg)
    n_events = sum(len(e) for _, _, e in samples)
    cuts = pcfg.cuts
    pfs = []  # the candidates the processor clusters: finite, pt > 0 and, where the file has the vertex
    for _, _, ev in samples:  # index and CHS is on, not from a pileup vertex (its own selection)
        vertex = cfg.schema_map.pf_vertex_index(ev) if pcfg.data_quality.chs.enabled else None
        pfs.append(select_candidates(cfg.schema_map.pf_kinematics(ev), vertex)[0])

    def clustering_alone(fn):
        for pf in pfs:
            fn(pf, 0.4, ptmin=cuts.ak4_pt_min)
            fn(pf, 0.8, ptmin=cuts.ak8_pt_min, constituents=True)

    def processor_run(on: bool):
        timing: dict[str, float] = {}
        outs = []
        for _, _, ev in samples:
            out = procs[on].process(ev)
            outs.append(out)
            for k, v in out["timing"].items():
                timing[k] = timing.get(k, 0.0) + v
        return timing, outs

    for on in (False, True):
        processor_run(on)  # warm-up
    # every measurement once per repetition, interleaved; "before" = the code before issue 33 (clustering
    # through fastjet's awkward interface, every PF field read), "after" = as it is
    times: dict = {k: [] for k in ("cluster", "cluster_before", False, "before", True)}
    # process CPU time beside the wall clock: on a shared (loaded) machine the wall-clock rate falls with the
    # load, the CPU-time rate (what one idle core would give) much less
    cpu: dict = {k: [] for k in times}
    best = {"cluster": float("inf"), False: float("inf"), True: float("inf")}
    timings, outputs = {}, {}
    for _ in range(args.repeat):
        for key, fn in (("cluster", lambda: clustering_alone(cluster)),
                        ("cluster_before", lambda: clustering_alone(cluster_awkward))):
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[key].append(time.perf_counter() - t)
            cpu[key].append(time.process_time() - c)
        with _before():
            t, c = time.perf_counter(), time.process_time()
            processor_run(True)
            times["before"].append(time.perf_counter() - t)
            cpu["before"].append(time.process_time() - c)
        for on in (False, True):
            t, c = time.perf_counter(), time.process_time()
            timing, outs = processor_run(on)
            elapsed = time.perf_counter() - t
            times[on].append(elapsed)
            cpu[on].append(time.process_time() - c)
            if elapsed < best[on]:
                best[on], timings[on], outputs[on] = elapsed, timing, outs
    best["cluster"] = min(times["cluster"])
    identical = _identical(outputs[False], outputs[True])
    rejected = sum(o["counts"][ds]["not_clustered"] for o in outputs[True] for ds in o["counts"])
    selected = sum(int(o["cutflow"][ds]["raw"][-1]) for o in outputs[True] for ds in o["cutflow"])

    label = "embedded sample (backgrounds skimmed to the preselection)" if args.sample == "embedded" else args.sample
    print(f"events: {n_events:,} ({label}, {len(samples)} files); one core; best of {args.repeat}")
    print(f"selected (all cuts): {selected:,}; rejected by the prefilter before clustering: {rejected:,} "
          f"= {rejected / n_events:.1%}")
    print(f"histograms and cutflows with and without the prefilter: {'bit-identical' if identical else 'DIFFERENT'}")
    print()
    print(f"{'':<44}{'s (best)':>9}{'events/s':>11}{'CPU s':>9}{'ev/CPU-s':>10}"
          f"{'x clustering every event (median, min-max)':>46}")
    rows = [("AK4+AK8 clustering every event, after", "cluster", "cluster"),
            ("AK4+AK8 clustering every event, before", "cluster_before", "cluster_before"),
            ("processor, prefilter off", False, "cluster"),
            ("processor, prefilter on, before", "before", "cluster_before"),
            ("processor, prefilter on, after", True, "cluster")]
    for name, key, ref in rows:
        sec = min(times[key])
        ratios = sorted(r / t for r, t in zip(times[ref], times[key]))  # per repetition: same conditions
        spread = f"{statistics.median(ratios):.1f}x ({ratios[0]:.1f}-{ratios[-1]:.1f})"
        csec = min(cpu[key])
        print(f"{name:<44}{sec:>9.3f}{n_events / sec:>11,.0f}{csec:>9.3f}{n_events / csec:>10,.0f}{spread:>46}")
    print("(x clustering: against clustering every event with the same code, before against before and after "
          "against after, per repetition; CPU s: process CPU time, best repetition)")
    print(f"load average during the run (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print()
    for on in (True, False):
        total = sum(timings[on].values())
        print(f"per stage, prefilter {'on' if on else 'off'} (events/s over all {n_events:,} events)")
        print(f"{'stage':<22}{'seconds':>10}{'share':>9}{'events/s':>12}")
        for stage, sec in timings[on].items():
            print(f"{stage:<22}{sec:>10.3f}{sec / total:>9.1%}{n_events / sec:>12,.0f}")
        print()
    print(f"file read + decompression into memory (NanoEvents, eager): {t_read:.2f} s = {n_events / t_read:,.0f} ev/s")
    if args.compression:
        print()
        print("read + decompression of the processor's branches (uproot, best of 2), files rewritten per algorithm:")
        for line in _compression_table(cfg, samples):
            print(line)
    if args.memory:
        print()
        print("peak memory (max RSS) of one worker process, one chunk (the sample repeated to the chunk size);")
        print("baseline = peak RSS before the chunk (imports, ONNX sessions, a 100-event warm-up):")
        for line in _memory(cfg, [int(x) for x in args.memory_sizes.split(",")], (True, False)):
            print(line)


@contextmanager
def _before():
    """The processor as before issue 33: every PF field read, the candidates cleaned with a jagged mask,
    clustering through fastjet's awkward interface."""
    import svjscout.processors.processor as P
    from svjscout.processors.jets import cluster_awkward
    from svjscout.processors.schema import BranchMap

    def clean_jagged(pf):  # the cleaning as it was: a jagged mask, every field of the candidates materialised
        import awkward as ak
        import numpy as np

        good = np.isfinite(pf.pt) & np.isfinite(pf.eta) & np.isfinite(pf.phi) & np.isfinite(pf.mass) & (pf.pt > 0)
        return ak.materialize(pf[good]), int(ak.sum(~good))

    saved = P.cluster, BranchMap.pf_kinematics, P.clean_candidates
    P.cluster, BranchMap.pf_kinematics, P.clean_candidates = cluster_awkward, BranchMap.pf_candidates, clean_jagged
    try:
        yield
    finally:
        P.cluster, BranchMap.pf_kinematics, P.clean_candidates = saved


def _identical(a: list[dict], b: list[dict]) -> bool:
    import numpy as np

    for x, y in zip(a, b):
        for ds in x["cutflow"]:
            if not (np.array_equal(x["cutflow"][ds]["raw"], y["cutflow"][ds]["raw"])
                    and np.array_equal(x["cutflow"][ds]["weighted"], y["cutflow"][ds]["weighted"])):
                return False
        for name in x["hists"]:
            va, vb = x["hists"][name].view(flow=True), y["hists"][name].view(flow=True)
            if not (np.array_equal(va.value, vb.value) and np.array_equal(va.variance, vb.variance)):
                return False
    return True


if __name__ == "__main__":
    main()
