"""What carries the preselected QCD yield, file by file: fake MET against real MET (issue 30).

For each QCD file: the real processor's preselection (the analysis cuts), every passing copy's
parent's real MET from the event record (``GenMET_pt``: the invisible particles' |sum pT|, written
per event; with decay repeats per repeat), and per class of real MET: the parents, the share of
the yield and of sum W^2 (W_p: a parent's summed weight of its passing copies in that class, what
limits N_eff), the class's own N_eff over parents, and its yield per unit of generated weight
(sum of the passing copies' genWeight / genEventSumw: comparable between independent files,
the check that a sampling step is unbiased). Then N_eff over parents in all, in the SP and the VP,
and N_eff per CPU-hour when the CPU per parent is given.

    python benchmarks/bench_real_met.py samples/embedded/qcd.root samples/embedded/qcd_s204.root
    python benchmarks/bench_real_met.py --paired qcd_n1.root qcd_n20.root --cpu-ms 15.1 25.8

docs/generation_efficiency.md (sections 6 and 7) has the tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_generate import n_eff_over_parents  # the same folder (run as a script)
from bench_generation_efficiency import EDGES, preselect, shape_chi2, yield_and_error

PARENT_BITS = 40  # the skim's parent key: (run << 40) | parent (as qcd_weight_anatomy.py)

CLASSES = ((0.0, 30.0, "< 30 GeV (fake MET)"), (30.0, 80.0, "30-80 GeV"), (80.0, np.inf, "> 80 GeV (real MET)"))


def gen_met_of(path: Path) -> tuple[dict[int, float], float, int]:
    """({event: GenMET_pt}, genEventSumw, genEventCount) of one file."""
    import uproot

    with uproot.open(path) as f:
        ev = f["Events"].arrays(["event", "GenMET_pt"], library="np")
        runs = f["Runs"].arrays(["genEventSumw", "genEventCount"], library="np")
    return (dict(zip(ev["event"].tolist(), ev["GenMET_pt"].tolist())), float(runs["genEventSumw"].sum()),
            int(runs["genEventCount"].sum()))


def neff_text(w: np.ndarray, parent: np.ndarray) -> str:
    """N_eff over parents, marked where it is below 10 (the statistics guard's floor: a yield or a
    shape from fewer effective events is not backed)."""
    n = n_eff_over_parents(w, parent)
    return f"{n:.1f}" + ("; below 10" if n < 10 else "")


def anatomy(path: Path, cpu_ms: float | None, first: int | None = None) -> dict:
    sel = preselect(path, 0.24)
    met_of, sumw, n_gen = gen_met_of(path)
    if first is not None:  # the file's first parents only (the same events as a shorter run of that seed)
        mine = (sel["parent"].astype(np.uint64) & np.uint64((1 << PARENT_BITS) - 1)) <= np.uint64(first)
        sel = {k: v[mine] for k, v in sel.items()}
        n_gen, sumw = first, float("nan")  # the Runs tree has the whole file's generated weight only
    gen_met = np.array([met_of[int(e)] for e in sel["event"]])
    w, parent = sel["weight"], sel["parent"]
    total = n_eff_over_parents(w, parent)
    _, inv = np.unique(parent, return_inverse=True)
    sum_w2 = float(np.sum(np.bincount(inv, w) ** 2)) if len(w) else 0.0
    print(f"\n### {path.name}: {n_gen:,} parents generated; {len(w)} copies of {len(np.unique(parent))} parents pass")
    print("| parent's real MET | parents | share of the yield | share of sum W^2 | N_eff of the part | "
          "yield / sum of generated weights | SP (138 fb^-1, N_eff) | VP (N_eff) | VP / SP |")
    print("|---|---|---|---|---|---|---|---|---|")
    sp = sel["deta"] < 1.5
    for lo, hi, label in CLASSES:
        m = (gen_met >= lo) & (gen_met < hi)
        if not m.any():
            print(f"| {label} | 0 | 0 | 0 | 0 | 0 | 0 | 0 | |")
            continue
        _, pinv = np.unique(parent[m], return_inverse=True)
        w2 = float(np.sum(np.bincount(pinv, w[m]) ** 2))
        ms, mv = m & sp, m & ~sp
        planes = (f"{w[ms].sum():.3g} ({neff_text(w[ms], parent[ms])}) | "
                  f"{w[mv].sum():.3g} ({neff_text(w[mv], parent[mv])}) | "
                  f"{w[mv].sum() / max(w[ms].sum(), 1e-300):.3f}")
        print(f"| {label} | {pinv.max() + 1} | {w[m].sum() / w.sum():.1%} | {w2 / sum_w2:.1%} | "
              f"{neff_text(w[m], parent[m])} | {sel['gen_weight'][m].sum() / sumw:.3e} | {planes} |")
    line = (f"N_eff over parents: all {total:.1f}, SP {neff_text(w[sp], parent[sp])}, "
            f"VP {neff_text(w[~sp], parent[~sp])}; VP / SP {w[~sp].sum() / max(w[sp].sum(), 1e-300):.3f}; "
            f"yield / sum of generated weights "
            f"{sel['gen_weight'].sum() / sumw:.4e}")
    if cpu_ms:
        hours = n_gen * cpu_ms / 1000 / 3600
        line += f"; {cpu_ms:.1f} ms per parent = {hours:.2f} CPU-h: N_eff per CPU-hour {total / hours:.1f}"
    print(line)
    return {**sel, "sumw": sumw}


def compare(name: str, ref: dict, other: dict) -> None:
    """The second file against the first: yield per unit of generated weight (pull with
    parent-grouped errors; independent samples or shared parents, the errors are those of each)
    and the normalised shapes of M_T, R_T, dphi_min and pT_J0 (chi2 / ndf)."""
    def per_sumw(sel):
        y, e = yield_and_error(sel["gen_weight"], sel["parent"])
        return y / sel["sumw"], e / sel["sumw"]
    (y1, e1), (y2, e2) = per_sumw(ref), per_sumw(other)
    shapes = ", ".join("{:.1f}/{}".format(*shape_chi2(ref, other, v)) for v in EDGES)
    print(f"{name} against the first file: yield / sum of generated weights {y2:.3e} +- {e2:.1e} against "
          f"{y1:.3e} +- {e1:.1e} (pull {(y2 - y1) / np.hypot(e1, e2):+.2f}); shapes chi2/ndf "
          f"({', '.join(EDGES)}): {shapes}")


def bootstrap_neff_ratio(w1: np.ndarray, w2: np.ndarray, n_parents: int, replicas: int = 1000,
                         seed: int = 1) -> tuple[float, np.ndarray]:
    """N_eff(w2) / N_eff(w1) from per-parent summed weights of the same parents (the parents that
    pass in neither count as zeros), and its bootstrap over the ``n_parents`` generated parents
    (the passing parents are a Poisson-thinned draw among them): (point, the replicas' ratios)."""
    rng = np.random.default_rng(seed)
    ratios = np.empty(replicas)
    for r in range(replicas):
        counts = rng.binomial(n_parents, 1.0 / n_parents, size=len(w1))
        n1 = (counts @ w1) ** 2 / max(counts @ w1**2, 1e-300)
        n2 = (counts @ w2) ** 2 / max(counts @ w2**2, 1e-300)
        ratios[r] = n2 / n1
    point = (w2.sum() ** 2 / np.sum(w2**2)) / (w1.sum() ** 2 / np.sum(w1**2))
    return point, ratios


def paired_bootstrap(ref: dict, other: dict, n_parents: int, replicas: int = 1000, seed: int = 1) -> str:
    """The ratio N_eff(other) / N_eff(ref) with a 68 % and a 95 % interval, from a bootstrap over the
    generated parents when both files hold the same parents (same seed and events: e.g. decay
    repeats n = 20 against n = 1)."""
    keys = np.union1d(ref["parent"], other["parent"])
    def per_parent(sel):
        w = np.zeros(len(keys))
        np.add.at(w, np.searchsorted(keys, sel["parent"]), sel["weight"])
        return w
    point, ratios = bootstrap_neff_ratio(per_parent(ref), per_parent(other), n_parents, replicas, seed)
    q = np.quantile(ratios, [0.025, 0.16, 0.5, 0.84, 0.975])
    return (f"N_eff ratio {point:.2f}; paired bootstrap over the {n_parents:,} parents ({replicas} replicas): "
            f"median {q[2]:.2f}, 68 % [{q[1]:.2f}, {q[3]:.2f}], 95 % [{q[0]:.2f}, {q[4]:.2f}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--first-parents", type=int, default=None, metavar="N",
                    help="only the first N parents of each file (the same events as an N-parent run of the same "
                         "seed and chunk size); the yields per generated weight are then not printed (nan)")
    ap.add_argument("--paired", action="store_true",
                    help="the files hold the same parents (same seed and events): bootstrap the N_eff ratios")
    ap.add_argument("--cpu-ms", type=float, nargs="*", default=None,
                    help="CPU milliseconds per generated parent, one per file (N_eff per CPU-hour)")
    args = ap.parse_args()
    cpu = args.cpu_ms or [None] * len(args.files)
    if len(cpu) != len(args.files):
        raise SystemExit("--cpu-ms: one value per file")
    sels = [anatomy(path, ms, args.first_parents) for path, ms in zip(args.files, cpu)]
    print()
    for path, sel in zip(args.files[1:], sels[1:]):
        compare(path.name, sels[0], sel)
        if args.paired:
            print(f"{path.name} against the first file, the same parents: "
                  f"{paired_bootstrap(sels[0], sel, args.first_parents or gen_met_of(path)[2])}")


if __name__ == "__main__":
    main()
