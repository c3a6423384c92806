"""Peak memory of one training epoch vs sample size: the trainers stream their skims (issue 19).

Writes a synthetic skim (the processors' columns) with pyarrow in row groups into a temp dir,
then, in a fresh process per (model, size), trains one epoch and prints the process's peak RSS.
The streamed layer (models/training/) holds one buffer of row groups, the validation and test
reservoirs (``val_max_events`` / ``test_max_events``, equal for every size here) and the
model: peak RSS should be flat (within 20 %) from 10^5 to 10^6 events.

    python benchmarks/bench_training_memory.py                 # twin and LundNet, 1e5 and 1e6 events
    python benchmarks/bench_training_memory.py --models twin --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROW_GROUP = 20_000
L_NODES = 8


def write_skim(path: Path, n: int, lund: bool, seed: int = 0) -> Path:
    """A synthetic skim of ``n`` events in row groups of ``ROW_GROUP`` rows (signal 30 %)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from svjscout.processors.features import EVENT_FEATURES

    writer = None
    rng = np.random.default_rng(seed)
    for s in range(0, n, ROW_GROUP):
        m = min(ROW_GROUP, n - s)
        sig = rng.random(m) < 0.3
        cols = {f: rng.normal(size=m) + 0.5 * sig for f in EVENT_FEATURES}
        cols["rt"] = 0.25 + rng.exponential(0.1, m)
        cols["dphi_min"] = rng.uniform(0, 0.8, m)
        cols["lundnet_j0"] = np.clip(rng.beta(2, 5, m) + 0.3 * sig, 0, 1)
        cols["lundnet_j1"] = np.clip(rng.beta(2, 5, m) + 0.2 * sig, 0, 1)
        cols["mt"] = 700.0 + rng.exponential(300.0, m)
        cols["deta"] = rng.uniform(-2.2, 2.2, m)
        cols["weight"] = np.where(sig, 0.01, 1.0) * rng.uniform(0.5, 1.5, m)
        cols["label"] = sig.astype(np.int64)
        cols["mzprime"] = np.where(sig, 3000.0, np.nan)
        cols["rinv"] = np.where(sig, 0.3, np.nan)
        cols["event"] = np.arange(s, s + m, dtype=np.uint64)
        arrays = {k: pa.array(v) for k, v in cols.items()}
        arrays["dataset"] = pa.array(np.where(sig, "svj_mz3000_rinv0.3", "qcd").tolist())
        if lund:
            for j in ("j0", "j1"):
                nodes = (rng.normal(size=(m, L_NODES, 5)) + 0.3 * sig[:, None, None]).astype(np.float32)
                inner = pa.FixedSizeListArray.from_arrays(pa.array(nodes.reshape(-1)), 5)
                arrays[f"lund_{j}"] = pa.FixedSizeListArray.from_arrays(inner, L_NODES)
                mask = pa.array((rng.random(m * L_NODES) < 0.8).tolist(), type=pa.bool_())
                arrays[f"lund_{j}_mask"] = pa.FixedSizeListArray.from_arrays(mask, L_NODES)
        table = pa.table(arrays)
        if writer is None:
            writer = pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
    writer.close()
    return path


def child(model: str, skim: str, out: str) -> None:
    """Train one epoch; print peak RSS (MiB) and seconds as JSON."""
    import logging

    logging.disable(logging.WARNING)
    t0 = time.time()
    if model == "twin":
        from svjscout.models.train_twin import train_twin

        train_twin([skim], out, {"epochs": 1, "batches_per_epoch": 5, "batch_size": 55_000, "progress": False,
                                 "val_max_events": 20_000, "test_max_events": 20_000, "buffer_events": 200_000,
                                 "floor_draws": 2, "device": "cpu", "num_threads": 2})
    else:
        from svjscout.models.lundnet import LundNetConfig
        from svjscout.models.train_lundnet import TrainConfig, train_lundnet

        tiny = LundNetConfig(block_widths=(8, 16), fusion=16, head=8, max_len=L_NODES)
        train_lundnet([skim], out, TrainConfig(model=tiny, epochs=1, batch_size=2048, threads=2, progress=False,
                                                buffer_jets=200_000, device="cpu"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": rss, "seconds": time.time() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["twin", "lundnet"], choices=["twin", "lundnet"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "SKIM", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for n in args.sizes:
                skim = write_skim(Path(tmp) / f"{model}_{n}.parquet", n, lund=(model == "lundnet"))
                mib = skim.stat().st_size / 2**20
                res = subprocess.run([sys.executable, __file__, "--child", model, str(skim), f"{tmp}/out_{model}_{n}"],
                                     capture_output=True, text=True, check=True)
                rec = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append((model, n, mib, rec["peak_rss_mib"], rec["seconds"]))
                skim.unlink()
                print(f"{model:8s} {n:>9d} events  skim {mib:7.1f} MiB  peak RSS {rec['peak_rss_mib']:7.1f} MiB  "
                      f"{rec['seconds']:6.1f} s", flush=True)
    print("\n| model | events | skim (MiB) | peak RSS (MiB) | seconds |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:,} | {r[2]:.1f} | {r[3]:.0f} | {r[4]:.0f} |")
    for model in args.models:
        rss = [r[3] for r in rows if r[0] == model]
        if len(rss) > 1:
            print(f"{model}: peak RSS max/min = {max(rss) / min(rss):.3f}")


if __name__ == "__main__":
    main()
