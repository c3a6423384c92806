"""Benchmark of the systematic variations in the processor (issue: all variations <= 1.5x nominal).

The signal datasets of the laptop job (jobs/local.yaml), iterative executor, one chunk per file,
processed with analysis.systematics off and on (JES, JER, unclustered MET up/down re-selected and
re-scored; trigger weights; pileup and ISR/FSR need branches the embedded sample lacks). Best of
--repeat runs each. Prints a table.

Usage: python benchmarks/bench_systematics.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
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


if __name__ == "__main__":
    main()
