"""Benchmark of background statistics per CPU-hour: detector copies and tail biasing (issue 17).

The same QCD parents (pT-hat-biased Pythia with the default power 2, pileup 35, generator H_T > 350 GeV, MET skim
150 GeV; `--parents`, seed fixed) are generated with K detector copies and with or without the
jet-tail importance sampling, in one process (CPU time = this process's), then skimmed through
the real processor (analysis preselection). Figure of merit: the effective number of preselected
events *counted over parents*, N_eff = (sum w)^2 / sum_parents (sum of the parent's copies' w)^2,
per CPU-hour of generation. Where the time goes: Pythia (hard scatter), pileup library and
overlay, generator jets, particle-level detector, the K jet-level copies, assembling, writing.

With ``--compare`` the preselected distributions of the resampled sample (particle-level response
once per parent) are compared with a brute-force sample of the same parents (the whole detector
again for every copy): chi2 / ndf per variable with parent-aware errors on both sides.

Usage: python benchmarks/bench_generate.py [--parents 500] [--compare]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = [  # (label, K, tail bias)
    ("K=1", 1, 1.0),
    ("K=10", 10, 1.0),
    ("K=30", 30, 1.0),
    ("K=100", 100, 1.0),
    ("K=10, tail x20", 10, 20.0),
    ("K=30, tail x20", 30, 20.0),
    ("K=100, tail x20", 100, 20.0),
]
STEPS = ("pythia", "pileup", "generator_jets", "detector_particles", "detector_copies", "assemble", "write")


def generate(out: Path, parents: int, k: int, bias: float, brute: bool = False) -> tuple[float, dict]:
    from svjscout.samples.generate import GenerationConfig, generate_file

    cfg = GenerationConfig("qcd", parents, seed=77, detector_copies=k, tail_bias=bias, pileup=35.0, ht_min=350.0,
                           met_min=150.0, chunk_size=250, resample_particles=brute,
                           extra_settings=["UncertaintyBands:doVariations = off"])
    t0 = time.process_time()
    meta = generate_file(cfg, out)
    return time.process_time() - t0, meta


def preselect(path: Path) -> dict[str, np.ndarray]:
    """Columns of the events of one file that pass the analysis preselection (the processor's skim)."""
    from svjscout.jobs.commands_skim import preselected_columns

    return preselected_columns(path, ("weight", "parent", "mt", "rt", "dphi_min", "pt_j0"))


def n_eff_over_parents(w: np.ndarray, parent: np.ndarray) -> float:
    if len(w) == 0:
        return 0.0
    _, inv = np.unique(parent, return_inverse=True)
    per_parent = np.bincount(inv, w)
    return float(w.sum() ** 2 / np.sum(per_parent**2))


def hist_with_parent_errors(x, w, parent, edges):
    idx = np.clip(np.digitize(x, edges) - 1, 0, len(edges) - 2)
    val = np.bincount(idx, w, len(edges) - 1)
    key = parent.astype(np.uint64) * np.uint64(len(edges)) + idx.astype(np.uint64)
    _, inv = np.unique(key, return_inverse=True)
    sums = np.bincount(inv, w)
    first = np.zeros(len(sums), dtype=np.int64)
    first[inv] = idx
    var = np.bincount(first, sums**2, len(edges) - 1)
    return val, var


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parents", type=int, default=500)
    ap.add_argument("--compare", action="store_true", help="resampled vs brute-force detector (K=30, tail x20)")
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"QCD, {a.parents} parents (pT-hat > 170 GeV biased, pileup 35, MET > 150 GeV skim)")
        print(f"{'method':<18} {'CPU s':>7} {'written':>8} {'presel':>7} {'parents':>8} {'N_eff':>7} "
              f"{'N_eff/CPU-h':>11}  time split (%): " + " ".join(s.split("_")[-1][:6] for s in STEPS))
        for label, k, bias in CONFIGS:
            path = work / f"qcd_k{k}_b{bias:g}.root"
            cpu, meta = generate(path, a.parents, k, bias)
            sel = preselect(path)
            w = sel.get("weight", np.zeros(0))
            parent = sel.get("parent", np.zeros(0, dtype=np.uint64))
            neff = n_eff_over_parents(w, parent)
            split = meta["timing"]
            total = sum(split.get(s, 0.0) for s in STEPS) or 1.0
            print(f"{label:<18} {cpu:>7.1f} {meta['n_written']:>8} {len(w):>7} {len(np.unique(parent)):>8} "
                  f"{neff:>7.1f} {neff / cpu * 3600:>11.0f}  "
                  + " ".join(f"{100 * split.get(s, 0.0) / total:>6.0f}" for s in STEPS))
        if a.compare:
            generate(work / "res.root", a.parents, 30, 20.0)
            generate(work / "brute.root", a.parents, 30, 20.0, brute=True)
            res, bru = preselect(work / "res.root"), preselect(work / "brute.root")
            edges = {"mt": np.array([650, 800, 1000, 1300, 1700, 2500, 6000.0]),
                     "rt": np.array([0.24, 0.3, 0.4, 0.6, 1.0, 5.0]),
                     "dphi_min": np.array([0.0, 0.2, 0.4, 0.6, 0.8]),
                     "pt_j0": np.array([150, 300, 500, 800, 1200, 5000.0])}
            print("\nresampled (particle level once) vs brute force (whole detector per copy), K=30, tail x20:")
            print(f"{'variable':<10} {'chi2/ndf':>9}  (parent-aware errors on both samples; yields normalised)")
            for var, e in edges.items():
                v1, s1 = hist_with_parent_errors(res[var], res["weight"], res["parent"], e)
                v2, s2 = hist_with_parent_errors(bru[var], bru["weight"], bru["parent"], e)
                n1, n2 = v1.sum(), v2.sum()
                ok = (s1 + s2) > 0
                chi2 = np.sum((v1 / n1 - v2 / n2)[ok] ** 2 / (s1 / n1**2 + s2 / n2**2)[ok])
                print(f"{var:<10} {chi2:>5.1f}/{int(ok.sum()) - 1}")


if __name__ == "__main__":
    main()
