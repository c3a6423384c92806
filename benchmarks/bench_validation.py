"""Benchmark of the toy fits of the fit validation (signal injection), in one and in two processes.

Card: a realistic synthetic card (svjscout.datacards.toys.realistic_toy, 4 M_T bins, 16 channels),
or any card given with --card (e.g. svjscout-out/datacards/svj_mz2000_rinv0.3/datacard.txt).
Each toy: MIGRAD (analytic gradient) + HESSE + MINOS on r; a toy whose fit ends at the r floor
gets its error on the side of the truth from a profile-likelihood scan instead (a few more fits).
Target: 1,000 toy fits in < 60 s on 2 cores. Prints a table with the toys at the boundary.

Usage: python benchmarks/bench_validation.py [--toys 1000] [--card PATH]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor


def _card(path: str | None):
    from svjscout.datacards import write_datacards
    from svjscout.datacards.parser import parse_datacard
    from svjscout.datacards.toys import realistic_toy

    if path:
        return parse_datacard(path)
    h, ds = realistic_toy(n_mt=4, n_signal=1, n_background=2)
    d = tempfile.mkdtemp()
    index = write_datacards(h, ds, (0.775, 0.875), d)
    return parse_datacard(f"{d}/datacards/{index['cards'][0]}")


def _run(args):
    card_path, toys, seed = args
    from svjscout.datacards.validation import injection_test

    logging.disable(logging.WARNING)
    res = injection_test(_card(card_path), 0.0, n_toys=toys, seed=seed)
    return res["fitted"], res["at_boundary"], res["failed"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toys", type=int, default=1000)
    ap.add_argument("--card", default=None)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    rows = []
    t0 = time.perf_counter()
    conv = _run((a.card, a.toys, 1))
    rows.append(("1 process", a.toys, *conv, time.perf_counter() - t0))
    t0 = time.perf_counter()
    half = a.toys // 2
    with ProcessPoolExecutor(2) as pool:
        conv = [sum(v) for v in zip(*pool.map(_run, [(a.card, half, 1), (a.card, a.toys - half, 2)]))]
    rows.append(("2 processes", a.toys, *conv, time.perf_counter() - t0))
    print(f"{'toy fits (r injected 0)':<24} {'toys':>6} {'fitted':>7} {'at bound':>9} {'failed':>7} {'seconds':>9} "
          f"{'fits/s':>8}")
    for name, n, c, b, f, s in rows:
        print(f"{name:<24} {n:>6} {c:>7} {b:>9} {f:>7} {s:>9.1f} {n / s:>8.1f}")


if __name__ == "__main__":
    main()
