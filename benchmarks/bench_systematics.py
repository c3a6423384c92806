"""Benchmark of the systematic variations in the processor (issue: all variations <= 1.5x nominal).

The signal datasets of the laptop job (jobs/local.yaml), iterative executor, one chunk per file,
processed with analysis.systematics off and on (JES, JER, unclustered MET up/down re-selected and
re-scored; trigger weights; pileup and ISR/FSR need branches the embedded sample lacks). Best of
--repeat runs each. Prints a table.

With --cards: the card side instead (no processor run): datacards.systematics.signal_systematics
on a realistic toy (40 x 40 score cells x 6 M_T bins, 7 sources with up/down, per-region
normalisations with the per-cell event-correlated errors, pruning, mcstat), per signal point.

Usage: python benchmarks/bench_systematics.py [--repeat 3] [--cards]
"""

from __future__ import annotations

import argparse
import logging
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cards", action="store_true", help="time the card-side signal systematics only")
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    if a.cards:
        return cards(a.repeat)
    from svjscout.jobs.config import load_job
    from svjscout.jobs.runner import run_processor

    cfg = load_job(None, {"executor.name": "iterative", "executor.chunksize": 100000})
    cfg = cfg.model_copy(update={"datasets": {k: v for k, v in cfg.datasets.items() if v.kind == "signal"}})
    best, stages = {}, {}
    for _ in range(a.repeat):
        for on in (False, True):
            sy = cfg.analysis.systematics.model_copy(update={"enabled": on})
            c = cfg.model_copy(update={"analysis": cfg.analysis.model_copy(update={"systematics": sy})})
            t0 = time.perf_counter()
            out, rep = run_processor(c)
            dt = time.perf_counter() - t0
            if dt < best.get(on, float("inf")):
                best[on], stages[on] = dt, out.get("timing", {})
            events = sum(rep.events.values())
    print(f"{'signal, ' + str(events) + ' events':<28} {'seconds':>8} {'ratio':>6}  slowest stages")
    for on in (False, True):
        top = sorted(stages[on].items(), key=lambda kv: -kv[1])[:4]
        print(f"{'systematics ' + ('on' if on else 'off'):<28} {best[on]:>8.2f} {best[on] / best[False]:>6.2f}  "
              + ", ".join(f"{k} {v:.2f}" for k, v in top))


def cards(repeat: int) -> None:
    """Best-of-``repeat`` time of signal_systematics per signal point on a realistic toy."""
    import numpy as np

    from svjscout.datacards.systematics import signal_systematics
    from svjscout.datacards.toys import CENTERS, build_xy_mt_syst, realistic_toy

    h, ds = realistic_toy(n_mt=6, n_signal=5, n_background=2, with_data=False)
    sigs = sorted(n for n, m in ds.items() if m["kind"] == "signal")
    rng = np.random.default_rng(1)
    contents = {}
    for s in sigs:
        i = list(h.axes["dataset"]).index(s)
        nom = {p: np.array(h.view(flow=False)["value"][i, j]) for j, p in enumerate(("SP", "VP"))}
        contents[s] = {}
        for src in ("jes", "jer", "unclustered", "pileup", "trigger", "isr", "fsr"):
            f = 1 + 0.05 * (CENTERS[:, None, None] - 0.5) + 0.01 * rng.standard_normal(nom["SP"].shape)
            contents[s][f"{src}_up"] = {p: v * f for p, v in nom.items()}
            contents[s][f"{src}_down"] = {p: v / f for p, v in nom.items()}
    hs = build_xy_mt_syst(contents, h.axes["mt"].edges, 0.01)
    groups = [[0, 1], [2], [3], [4, 5]]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for s in sigs:
            signal_systematics(h, hs, ds, (0.775, 0.875), groups, s)
        best = min(best, time.perf_counter() - t0)
    print(f"signal_systematics: {len(sigs)} points, 7 sources, 40 x 40 x 6 cells: "
          f"{1e3 * best / len(sigs):.1f} ms per point (best of {repeat})")


if __name__ == "__main__":
    main()
