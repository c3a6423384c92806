"""Side by side: twin pairs evaluated through the real chain on held-out events.

Each pair is a `svjscout run` output folder (typically of jobs/heldout.yaml: the test subset of
the training sample, with --set analysis.twin_model=...), optionally with the pair's training
report (report.json, for dCorr(X, Y) on the same test events). Prints a markdown table of the
working point the scan chose, <Z_A> there (with the non-closure), the closure at that point
(chi2 p-value, max |pull| per M_T bin, the cards' non-closure kappas), the expected limits per
signal point (ratio to the first pair), and the fit validation (VP goodness of fit, the mean
pull of background-only and r=1 injections per point).

    python benchmarks/compare_twin_pairs.py mdmm=data/heldout_mdmm:data/twin/report.json \\
        analysis=data/heldout_analysis:data/twin_analysis/report.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def _load(run: Path, report: Path | None) -> dict:
    best = json.loads((run / "scan_best.json").read_text())["best"]
    row = {}
    with open(run / "scan.csv") as fh:
        for r in csv.DictReader(fh):
            if abs(float(r["x0"]) - best["x0"]) < 1e-9 and abs(float(r["y0"]) - best["y0"]) < 1e-9:
                row = r
    index = json.loads((run / "datacards" / "index.json").read_text())
    limits = json.loads((run / "limits.json").read_text())
    val_path = run / "validation" / "validation.json"
    val = json.loads(val_path.read_text()) if val_path.is_file() else {}
    out = {"wp": (best["x0"], best["y0"]), "scan": row, "kappa": index.get("nonclosure_kappa", []),
           "limits": {k: v["exp0"] for k, v in limits.items()}, "validation": val}
    if report is not None and report.is_file():
        rep = json.loads(report.read_text())
        out["dcorr_xy"] = rep["test"].get("dcorr", {}).get("dcorr_xy")
        out["z_hard_test"] = (rep["summary"].get("analysis_objective") or {}).get("test", {}).get("z_mean")
    return out


def _f(v, fmt="{:.3g}") -> str:
    try:
        return fmt.format(float(v))
    except (TypeError, ValueError):
        return "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="+", help="label=RUN_DIR[:REPORT_JSON]")
    ap.add_argument("--plot", default=None, help="also write OUT.png/.pdf: expected limits relative to the first pair")
    args = ap.parse_args()
    rows = {}
    for item in args.pairs:
        label, rest = item.split("=", 1)
        run, _, report = rest.partition(":")
        rows[label] = _load(Path(run), Path(report) if report else None)
    labels = list(rows)
    first = rows[labels[0]]
    lines = ["| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]

    def add(name, fn):
        lines.append(f"| {name} | " + " | ".join(fn(rows[k]) for k in labels) + " |")

    add("working point (x0, y0)", lambda r: f"({r['wp'][0]:.3f}, {r['wp'][1]:.3f})")
    add("scan <Z_A> (with non-closure)", lambda r: _f(r["scan"].get("z_mean")))
    add("closure chi2 p-value (SP)", lambda r: _f(r["scan"].get("pvalue")))
    add("max |pull| per M_T bin (SP)", lambda r: _f(r["scan"].get("pull_bins")))
    add("rules failed by the chosen point", lambda r: str(r["scan"].get("n_failed", "-")))
    add("non-closure kappa (cards)", lambda r: ", ".join(f"{k:.3f}" for k in sorted(set(r["kappa"]))) or "-")
    add("dCorr(X, Y), test background", lambda r: _f(r.get("dcorr_xy")))
    for point in first["limits"]:
        add(f"expected limit on r, {point}",
            lambda r, p=point: _f(r["limits"].get(p)) + (
                f" ({r['limits'][p] / first['limits'][p]:.2f}x)" if r is not first and p in r["limits"] else ""))
    gof = lambda r: r["validation"].get("gof", {}).get("VP", {})  # noqa: E731
    add("GoF VP: q_obs / p (toys)", lambda r: f"{_f(gof(r).get('q_obs'))} / {_f(gof(r).get('pvalue'))}")
    for point in first["limits"]:
        def inj(r, p=point):
            out = []
            for rec in r["validation"].get("points", {}).get(p, {}).get("injection", []):
                pull = rec.get("pull", {})
                out.append(f"r={rec['r_inj']:.3g}: {_f(pull.get('mean'), '{:+.2f}')}"
                           f"+-{_f(pull.get('mean_err'), '{:.2f}')}")
            return "; ".join(out) or "-"
        add(f"mean pull, injection, {point}", inj)
    print("\n".join(lines))
    if args.plot:
        _plot(rows, args.plot)


def _plot(rows: dict, out: str) -> None:
    """Expected limits of every pair over the first pair's, per signal point (CMS style)."""
    import os

    import numpy as np

    from svjscout.datacards.style import cms_label, pyplot, save

    plt = pyplot()
    labels = list(rows)
    points = list(rows[labels[0]]["limits"])
    fig, ax = plt.subplots(figsize=(11, 7))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        ratio = [rows[label]["limits"][p] / rows[labels[0]]["limits"][p] for p in points]
        ax.bar(np.arange(len(points)) + (i - (len(labels) - 1) / 2) * width, ratio, width, label=label)
    ax.axhline(1.0, color="k", lw=1)
    ax.axhline(0.8, color="grey", ls="--", lw=1, label="20 % stronger")
    ax.set_xticks(np.arange(len(points)))
    import re

    def tick(p: str) -> str:
        m = re.match(r"svj_mz(\d+)_rinv([\d.]+)", p)
        return f"$m_{{Z'}}$ = {m[1]} GeV\n$r_{{inv}}$ = {m[2]}" if m else p

    ax.set_xticklabels([tick(p) for p in points], fontsize=14)
    ax.set_ylabel(f"expected limit / {labels[0]}'s")
    ax.legend(fontsize=14)
    cms_label(ax, lumi=False, com=None)
    save(fig, os.path.dirname(out) or ".", os.path.basename(out))


if __name__ == "__main__":
    main()
