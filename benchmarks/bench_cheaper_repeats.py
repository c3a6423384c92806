"""Cheaper kept repeats (issue 30; docs/generation_efficiency.md, section 9): what the soft
real-MET roulette (``--roulette-p-soft``) and fewer copies for the hard real-MET rows
(``--real-met-copies``) cost in N_eff, emulated on one file generated without them.

Both steps only *remove* rows or copies of a file made with ``--decay-repeats N`` and K copies,
and reweight what stays; so on such a file (the processor's preselection, then per passing copy
its parent, repeat and copy from ``event``, and its real MET ``GenMET_pt``) each setting is
emulated exactly in law: a soft row (30 GeV <= real MET < ``--nu-pt-hard``) stays with
probability p_soft (its own uniform, a hash of the row) and weighs 1/p_soft as much; a hard row
(real MET >= ``--nu-pt-hard``) keeps its copies 0..k-1, each weighing K/k as much (the generator
keeps exactly those copies, draw for draw: tests/test_repeats.py). Printed per setting: N_eff
over parents (all, SP, VP; marked below 10, where a figure is not backed), the yield, and the
paired bootstrap over the parents of the N_eff ratio to the file itself. The CPU of each setting
is measured by running the generator (section 9).

    python benchmarks/bench_cheaper_repeats.py qcd_n20.root --p-soft 1 0.5 0.25 0.1 --copies 40 16 8 4 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_generation_efficiency import preselect
from bench_real_met import bootstrap_neff_ratio, gen_met_of, neff_text  # the same folder (run as a script)

SOFT_MIN = 30.0  # GeV: the roulette's real-MET threshold of the recipes (--roulette-nu-pt 30)


def row_uniform(parent: np.ndarray, repeat: np.ndarray, seed: int) -> np.ndarray:
    """A uniform in [0, 1) per (parent, repeat): SplitMix64 of the keys (the same for every copy of a row)."""
    z = (parent.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + repeat.astype(np.uint64)
         + np.uint64(seed) * np.uint64(0xD1B54A32D1ED2B19))
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def emulate(sel: dict, real_met: np.ndarray, n_rep: int, k: int, p_soft: float, copies: int, nu_pt_hard: float,
            seed: int = 1) -> np.ndarray:
    """Per passing copy of ``sel``: its weight under (p_soft, copies), 0 where the setting drops it."""
    index = sel["event"].astype(np.int64) - 1
    copy = index % k
    repeat = (index // k) % n_rep
    soft = (real_met >= SOFT_MIN) & (real_met < nu_pt_hard)
    hard = real_met >= nu_pt_hard
    w = sel["weight"].astype(np.float64).copy()
    if p_soft < 1.0:
        kept = row_uniform(sel["parent"], repeat, seed) < p_soft
        w = np.where(soft, np.where(kept, w / p_soft, 0.0), w)
    if copies < k:
        w = np.where(hard, np.where(copy < copies, w * k / copies, 0.0), w)
    return w


def bootstrap_ratio(w_ref: np.ndarray, w: np.ndarray, parent: np.ndarray, n_parents: int, replicas: int = 500,
                    seed: int = 2) -> tuple[float, float, float]:
    """N_eff(w) / N_eff(w_ref) on the same rows: point, 95 % interval (bootstrap over the parents)."""
    _, inv = np.unique(parent, return_inverse=True)
    point, ratios = bootstrap_neff_ratio(np.bincount(inv, w_ref), np.bincount(inv, w), n_parents, replicas, seed)
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    return point, lo, hi


def main() -> None:
    import uproot

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", type=Path)
    ap.add_argument("--p-soft", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    ap.add_argument("--copies", type=int, nargs="+", default=[40, 16, 8, 4, 2])
    ap.add_argument("--nu-pt-hard", type=float, default=80.0)
    args = ap.parse_args()
    with uproot.open(args.file) as f:
        runs = f["Runs"].arrays(["nDecayRepeats", "nDetectorCopies"], library="np")
    n_rep, k = int(runs["nDecayRepeats"][0]), int(runs["nDetectorCopies"][0])
    sel = preselect(args.file, 0.24)
    met_of, _, n_gen = gen_met_of(args.file)
    real_met = np.array([met_of[int(e)] for e in sel["event"]])
    parent, sp = sel["parent"], sel["deta"] < 1.5
    w0 = sel["weight"].astype(np.float64)
    print(f"{args.file.name}: {n_gen:,} parents, N = {n_rep} decay repeats, K = {k} copies; {len(w0)} passing copies; "
          f"soft real MET {SOFT_MIN:g}-{args.nu_pt_hard:g} GeV, hard above")
    print("| p_soft | copies of hard rows | copies kept | N_eff (all) | SP | VP | yield / file's | "
          "N_eff / file's (95 %) |")
    print("|---|---|---|---|---|---|---|---|")
    for p in args.p_soft:
        for c in args.copies:
            w = emulate(sel, real_met, n_rep, k, p, min(c, k), args.nu_pt_hard)
            point, lo, hi = bootstrap_ratio(w0, w, parent, n_gen)
            m = w > 0
            print(f"| {p:g} | {min(c, k)} | {int(m.sum())} | {neff_text(w[m], parent[m])} | "
                  f"{neff_text(w[m & sp], parent[m & sp])} | "
                  f"{neff_text(w[m & ~sp], parent[m & ~sp])} | {w.sum() / w0.sum():.3f} | "
                  f"{point:.2f} [{lo:.2f}, {hi:.2f}] |")


if __name__ == "__main__":
    main()
