"""Where the preselected QCD sample's effective statistics go (issue 17): which parents carry sum W^2.

The effective number of preselected events counted over parents is N_eff = (sum_p W_p)^2 / sum_p W_p^2,
W_p the summed weight of the preselected detector copies of generated event p. This prints, per
class of parents, its share of sum W (the yield) and of sum W^2 (what limits N_eff), for three
classes that point at three different remedies:

* generator-level MET (the invisible particles of the parent, ``GenMET_pt``): real MET (neutrinos
  of heavy-flavour decays) is a property of the parent; more copies cannot help it, only more
  parents in that phase space can;
* the number of the parent's copies that pass: parents passing in one copy of K get their W from
  the detector's fluctuation, and more copies (or a heavier tail bias) reduce their share;
* the leading jet's pT (a proxy of pT-hat, which sets the Pythia bias weight).

It also prints N_eff had only K' of the K copies been generated: copy k of parent p is event
(p - 1) K + k + 1, so the copies k in [j K', (j + 1) K') with weights x K / K' are exactly a sample
with K' copies of the same parents (the copies are independent draws of the jet-level response);
averaged over the K / K' disjoint subsets. With the CPU time per parent at K' (from
``bench_generate.py``) this is the production-scale version of its statistics-per-CPU-hour table,
on the same parents instead of a few hundred.

Inputs: the processor's skim of the QCD files at the analysis preselection (``svjscout process
jobs/train.yaml --skim``) and the QCD ROOT files themselves (for GenMET per parent).

    python benchmarks/qcd_weight_anatomy.py data/skim/skim/qcd data/train/qcd*.root
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_generate import n_eff_over_parents  # this folder: the scripts run from here

PARENT_BITS = 40  # the skim's parent key: (run << 40) | parent


def per_parent(skim_dir: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    files = sorted(skim_dir.glob("*.parquet"))
    if not files:
        raise SystemExit(f"{skim_dir}: no parquet files (expected the skim of the qcd dataset)")
    cols = [pq.read_table(f, columns=["weight", "parent", "pt_j0", "event"]) for f in files]
    w = np.concatenate([c["weight"].to_numpy() for c in cols])
    key = np.concatenate([c["parent"].to_numpy() for c in cols]).astype(np.uint64)
    pt = np.concatenate([c["pt_j0"].to_numpy() for c in cols])
    keys, inv, m = np.unique(key, return_inverse=True, return_counts=True)
    return {"key": keys, "W": np.bincount(inv, weights=w), "m": m,
            "pt_j0": np.bincount(inv, weights=pt) / m,
            "copies": {"w": w, "key": key, "event": np.concatenate([c["event"].to_numpy() for c in cols])}}


def copies_of(files: list[Path]) -> int:
    import uproot

    ks = {int(uproot.open(f)["Runs"]["nDetectorCopies"].array(library="np")[0]) for f in files}
    if len(ks) != 1:
        raise SystemExit(f"the files were made with different numbers of detector copies {sorted(ks)}")
    return ks.pop()


def subsets_table(copies: dict, k: int) -> list[str]:
    """N_eff over parents had only K' of the K copies been generated (see the module docstring)."""
    index = (copies["event"].astype(np.int64) - 1) % k
    rows = ["| copies K' | N_eff over parents (mean over subsets) | spread over subsets | subsets |",
            "|---|---|---|---|"]
    for kk in [d for d in (1, 2, 5, 10, 20, 40, 100) if d <= k and k % d == 0]:
        v = [n_eff_over_parents(copies["w"][sel] * (k / kk), copies["key"][sel])
             for sel in ((index // kk) == j for j in range(k // kk))]
        rows.append(f"| {kk} | {np.mean(v):.1f} | {np.std(v):.1f} | {len(v)} |")
    return rows


def gen_met(files: list[Path]) -> dict[int, float]:
    import uproot

    out = {}
    for f in files:
        a = uproot.open(f)["Events"].arrays(["run", "parent", "GenMET_pt"], library="np")
        key = (a["run"].astype(np.uint64) << np.uint64(PARENT_BITS)) | a["parent"].astype(np.uint64)
        out.update(zip(key.tolist(), a["GenMET_pt"].tolist()))
    return out


def kish(W: np.ndarray) -> float:
    """Kish's effective number of the already per-parent weights ``W``."""
    return float(W.sum() ** 2 / (W ** 2).sum()) if len(W) else 0.0


def table(label: str, values: np.ndarray, edges: list[float], W: np.ndarray) -> list[str]:
    s, s2 = W.sum(), (W ** 2).sum()
    rows = [f"| {label} | parents | share of sum W | share of sum W^2 | N_eff without this class |",
            "|---|---|---|---|---|"]
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (values >= lo) & (values < hi)
        n_eff_rest = kish(W[~sel])
        rows.append(f"| [{lo:g}, {hi:g}) | {sel.sum()} | {W[sel].sum() / s:.3f} | {(W[sel] ** 2).sum() / s2:.3f} "
                    f"| {n_eff_rest:.0f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("skim_dir", type=Path)
    ap.add_argument("root_files", type=Path, nargs="+")
    args = ap.parse_args()
    p = per_parent(args.skim_dir)
    met_of = gen_met(args.root_files)
    missing = [int(k) for k in p["key"] if int(k) not in met_of]
    if missing:
        raise SystemExit(f"{len(missing)} preselected parents are in none of the ROOT files "
                         f"(first: run {missing[0] >> PARENT_BITS}, parent {missing[0] & ((1 << PARENT_BITS) - 1)})")
    met = np.array([met_of[int(k)] for k in p["key"]])
    W = p["W"]
    order = np.sort(W ** 2)[::-1]
    print(f"preselected parents {len(W)}, copies {int(p['m'].sum())}, "
          f"N_eff over parents {kish(W):.0f}; "
          f"the 10 heaviest parents hold {order[:10].sum() / order.sum():.3f} of sum W^2\n")
    for rows in (subsets_table(p["copies"], copies_of(args.root_files)),
                 table("GenMET [GeV]", met, [0, 25, 50, 100, 150, np.inf], W),
                 table("copies passing", p["m"], [1, 2, 3, 4, 6, 11, np.inf], W),
                 table("leading-jet pT [GeV]", p["pt_j0"], [0, 250, 300, 400, 600, np.inf], W)):
        print("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
