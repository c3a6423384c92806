"""Benchmark: DisCo forward + backward, fast O(n log n) vs direct O(n^2), time and peak memory.

Each (method, n) runs in a fresh subprocess so that the peak resident memory is its own:
the peak (VmHWM, reset through /proc/self/clear_refs) minus the resident size just before
the call. Inputs are float32 (as in training), weighted, with gradients to both x and y.

Usage: python benchmarks/bench_disco.py [--sizes 5000,55000,500000] [--max-ref 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
import torch
from svjscout.models.disco import dcorr, dcorr_reference

def rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return -1

method, n, repeat, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
fn = dcorr if method == "fast" else dcorr_reference
torch.manual_seed(0)
# warm-up (numba JIT / cache load, torch kernels) on a small sample
xw = torch.rand(200, requires_grad=True); fn(xw, torch.rand(200), torch.rand(200)).backward()
x0 = torch.rand(n); y = torch.rand(n) * 1000.0 + x0 * 200.0; w = torch.rand(n) + 0.1
best = float("inf"); peak = 0
for _ in range(repeat):
    x = x0.clone().requires_grad_()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    base = rss_kb("VmRSS:")
    t = time.perf_counter()
    d = fn(x, y, w)
    d.backward()
    best = min(best, time.perf_counter() - t)
    peak = max(peak, rss_kb("VmHWM:") - base)
    del d, x
print(json.dumps({"method": method, "n": n, "seconds": best, "peak_mb": peak / 1024.0}))
"""


def run_one(method: str, n: int, repeat: int, threads: int) -> dict:
    """Run one measurement in a subprocess; returns {method, n, seconds, peak_mb}."""
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(n), str(repeat), str(threads)],
                         capture_output=True, text=True, check=True, env={**os.environ})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Print the benchmark table (markdown) on stdout."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000,10000,55000,500000")
    ap.add_argument("--max-ref", type=int, default=10000, help="largest n for the O(n^2) reference")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        for method in ("fast", "reference"):
            if method == "reference" and n > args.max_ref:
                rows.append({"method": method, "n": n, "seconds": None, "peak_mb": None})
                continue
            rows.append(run_one(method, n, args.repeat if n <= 100_000 else 1, args.threads))
    print(f"DisCo forward+backward, float32 inputs, weighted, {args.threads} torch threads")
    print("| n | method | time [s] | peak extra memory [MB] |")
    print("|---:|---|---:|---:|")
    for r in rows:
        if r["seconds"] is None:
            print(f"| {r['n']:,} | {r['method']} | (skipped: O(n^2) memory) | |")
        else:
            print(f"| {r['n']:,} | {r['method']} | {r['seconds']:.3f} | {r['peak_mb']:.1f} |")


if __name__ == "__main__":
    main()
