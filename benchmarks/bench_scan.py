"""Benchmark of the vectorised working-point scan (and, for scale, datacards + quick limits).

Realistic synthetic set (svjscout.datacards.toys.realistic_toy): 4 backgrounds, 5 signal points,
data (10 datasets), 6 M_T bins, 40 x 40 score bins, SP and VP. Prints a table of wall times.

Usage: python benchmarks/bench_scan.py [--repeat N] [--no-limits]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def _time(fn, repeat):
    ts = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return out, float(np.median(ts)), float(np.min(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-limits", action="store_true", help="skip the datacards + quick-limits rows")
    args = ap.parse_args()

    from svjscout.datacards import abcd_prediction, quick_limits, scan_working_points, write_datacards
    from svjscout.datacards.toys import realistic_toy

    (h, ds), t_build, _ = _time(lambda: realistic_toy(n_mt=6, n_signal=5, n_background=4), 1)
    rows = [("build synthetic xy_mt (10 datasets, 6 M_T bins)", t_build, t_build, "")]
    res, med, mn = _time(lambda: scan_working_points(h, ds), args.repeat)
    rows.append((f"scan {len(res.grid_x)}x{len(res.grid_y)} grid (vectorised)", med, mn,
                 f"best {res.best}, {int(res.table.passes.sum())} pass"))
    res65, med65, mn65 = _time(lambda: scan_working_points(h, ds, grid=([i / 40 for i in range(1, 40)],) * 2),
                               args.repeat)
    rows.append(("scan 39x39 grid (every interior edge)", med65, mn65, ""))
    pts = [(x, y) for x in res.grid_x[::8] for y in res.grid_y[::8]]
    _, med_loop, mn_loop = _time(lambda: [abcd_prediction(h, ds, p) for p in pts], 1)
    per = med_loop / len(pts)
    rows.append((f"per-point loop abcd_prediction x{len(pts)} (reference)", med_loop, mn_loop,
                 f"~{per * 1089:.2f} s extrapolated to 33x33 (ABCD only)"))
    if not args.no_limits:
        with tempfile.TemporaryDirectory() as d:
            idx, t_cards, _ = _time(lambda: write_datacards(h, ds, res.best, d), 1)
            rows.append((f"write_datacards ({len(idx['cards'])} cards, 24 channels)", t_cards, t_cards, ""))
            lim, t_lim, _ = _time(lambda: quick_limits(idx), 1)
            rows.append((f"quick_limits ({len(lim)} cards)", t_lim, t_lim,
                         f"{t_lim / len(lim):.2f} s/card; exp0 " + ", ".join(f"{v['exp0']:.3g}" for v in lim.values())))
    w = max(len(r[0]) for r in rows)
    print(f"{'step':<{w}}  {'median [s]':>10}  {'min [s]':>9}  note")
    print("-" * (w + 40))
    for name, med_, mn_, note in rows:
        print(f"{name:<{w}}  {med_:>10.4f}  {mn_:>9.4f}  {note}")


if __name__ == "__main__":
    main()
