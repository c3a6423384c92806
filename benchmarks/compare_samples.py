"""Side-by-side physics table of two sets of generated files (e.g. before/after a regeneration).

For every file in DIR_A and DIR_B with the same dataset: generated events, r_inv on generator
truth (signal), the preselection efficiency (sum of weights after the analysis preselection /
(cross section x luminosity), i.e. of every generated event, the generator's H_T filter and MET
skim included; weights include pT-hat biasing and detector copies), and, for the
preselected events, the weighted medians of M_T, MET, R_T and the leading jet's mass (the mass
of J0's first Lund declustering, i.e. the AK8 jet mass). Runs the real processor in skim mode
(iterative executor) on each directory.

Usage: python benchmarks/compare_samples.py DIR_A DIR_B [--labels before after]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np


def _median(x: np.ndarray, w: np.ndarray) -> float:
    if len(x) == 0:
        return float("nan")
    o = np.argsort(x)
    c = np.cumsum(w[o])
    return float(x[o][np.searchsorted(c, 0.5 * c[-1])])


def summarise(directory: Path, work: Path) -> dict[str, dict]:
    import awkward as ak
    import uproot
    import yaml

    from svjscout.jobs.config import load_job
    from svjscout.jobs.runner import run_processor

    files = sorted(directory.glob("*.root"))
    datasets, meta = {}, {}
    for f in files:
        with uproot.open(f) as r:
            m = json.loads(str(r["svjscout_meta"]))
            runs = r["Runs"].arrays(library="np")
        name = m["dataset"]
        kind = "signal" if name.startswith("svj") else "background"
        datasets.setdefault(name, {"kind": kind, "files": []})["files"].append(str(f))
        acc = meta.setdefault(name, {"generated": 0, "sumw": 0.0, "n_dark": 0, "n_inv": 0})
        acc["generated"] += int(runs["genEventCount"][0])
        acc["sumw"] += float(runs["genEventSumw"][0])
        acc["n_dark"] += int(m.get("n_dark") or 0)
        acc["n_inv"] += int(m.get("n_dark_inv") or 0)
    job = work / f"{directory.name}.yaml"
    job.write_text(yaml.safe_dump({"name": "compare", "datasets": datasets,
                                   "executor": {"name": "iterative", "chunksize": 100000}}))
    skim = work / f"skim_{directory.name}"
    cfg = load_job(str(job), {})
    lumi = cfg.analysis.lumi
    out, _ = run_processor(cfg, skim_dir=str(skim))
    result = {}
    for name, acc in meta.items():
        parts = sorted((skim / name).glob("*.parquet"))
        t = ak.concatenate([ak.from_parquet(p) for p in parts]) if parts else None
        flow = out["cutflow"][name]["weighted"]
        info = out["datasets"][name]
        total = info["xsec"] * lumi  # every generated event, before the generator's filters
        row = {"generated": acc["generated"], "eff": float(flow[-1] / total) if total else float("nan"),
               "rinv": acc["n_inv"] / acc["n_dark"] if acc["n_dark"] else None, "n_sel": 0 if t is None else len(t)}
        if t is not None and len(t):
            w = ak.to_numpy(t.gen_weight)
            lund = ak.to_numpy(t.lund_j0)
            mask = ak.to_numpy(t.lund_j0_mask)
            mass = np.where(mask[:, 0], np.exp(lund[:, 0, 3]), np.nan)
            ok = np.isfinite(mass)
            row.update({"mt": _median(ak.to_numpy(t.mt), w), "met": _median(ak.to_numpy(t.met), w),
                        "rt": _median(ak.to_numpy(t.rt), w), "mass_j0": _median(mass[ok], w[ok])})
        result[name] = row
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--labels", nargs=2, default=("A", "B"))
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        res = [summarise(d, Path(tmp)) for d in (args.a, args.b)]
    cols = ("generated", "n_sel", "eff", "rinv", "mt", "met", "rt", "mass_j0")
    print("| dataset | " + " | ".join(f"{c} {lab}" for c in cols for lab in args.labels) + " |")
    print("|---" * (1 + 2 * len(cols)) + "|")
    for name in sorted(set(res[0]) | set(res[1])):
        cells = []
        for c in cols:
            for r in res:
                v = r.get(name, {}).get(c)
                cells.append("-" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v)))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
