"""Compare two `svjscout run` output folders number for number (a refactor must change nothing).

    python benchmarks/compare_runs.py BEFORE AFTER

Compares, and prints one table row per item: every histogram of histograms.coffea (values and
variances, flow bins included, bit for bit), the cutflow and counts, the parent records, each
datacard's text (the lines naming the svjscout version and the run's digest excepted), limits.json,
scan.csv, scan_best.json, cutflow.json and validation/validation.json (numbers compared exactly).
Exit code 1 if anything differs.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
from coffea.util import load

_VOLATILE = re.compile(r"written by svjscout|svjscout \d|sha256|digest|provenance|created|\d{4}-\d\d-\d\dT")


def _hists(a: dict, b: dict, rows: list) -> None:
    ha, hb = a.get("hists", {}), b.get("hists", {})
    for name in sorted(set(ha) | set(hb)):
        if name not in ha or name not in hb:
            rows.append((f"hist {name}", "missing in " + ("before" if name not in ha else "after")))
            continue
        va, vb = ha[name].view(flow=True), hb[name].view(flow=True)
        same_axes = [list(x) if hasattr(x, "__iter__") else x for x in ha[name].axes] == \
                    [list(x) if hasattr(x, "__iter__") else x for x in hb[name].axes]
        if not same_axes or va.shape != vb.shape:
            rows.append((f"hist {name}", "axes differ"))
            continue
        dv = np.max(np.abs(va.value - vb.value)) if va.size else 0.0
        dw = np.max(np.abs(va.variance - vb.variance)) if va.size else 0.0
        rows.append((f"hist {name}", "identical" if dv == 0 and dw == 0 else f"max |dvalue| {dv:.3g}, |dvar| {dw:.3g}"))


def _plain(x):
    if hasattr(x, "value") and not isinstance(x, (np.ndarray, dict)):
        x = x.value
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def _same(x, y) -> bool:
    return json.dumps(_plain(x), sort_keys=True, default=str) == json.dumps(_plain(y), sort_keys=True, default=str)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    rows: list[tuple[str, str]] = []
    a, b = load(args.before / "histograms.coffea"), load(args.after / "histograms.coffea")
    _hists(a, b, rows)
    for key in ("cutflow", "counts", "parent_fills", "parent_errors"):
        rows.append((f"output[{key!r}]", "identical" if _same(a.get(key), b.get(key)) else "DIFFERENT"))
    for card in sorted(args.before.glob("datacards/*/datacard.txt")):
        other = args.after / card.relative_to(args.before)
        if not other.exists():
            rows.append((str(card.relative_to(args.before)), "missing after"))
            continue
        la = [ln for ln in card.read_text().splitlines() if not _VOLATILE.search(ln)]
        lb = [ln for ln in other.read_text().splitlines() if not _VOLATILE.search(ln)]
        diff = [i for i, (x, y) in enumerate(zip(la, lb)) if x != y] + ([-1] if len(la) != len(lb) else [])
        rows.append((str(card.relative_to(args.before)), "identical" if not diff else f"{len(diff)} lines differ"))
    for name in ("limits.json", "scan_best.json", "cutflow.json", "validation/validation.json"):
        pa, pb = args.before / name, args.after / name
        if pa.exists() or pb.exists():
            # paths inside a run's JSON name its own folder: compared relative to it
            same = pa.exists() and pb.exists() and _same(
                json.loads(pa.read_text().replace(str(args.before.resolve()), "OUT").replace(str(args.before), "OUT")),
                json.loads(pb.read_text().replace(str(args.after.resolve()), "OUT").replace(str(args.after), "OUT")))
            rows.append((name, "identical" if same else "DIFFERENT"))
    if (args.before / "scan.csv").exists():
        ra = list(csv.reader((args.before / "scan.csv").open()))
        rb = list(csv.reader((args.after / "scan.csv").open())) if (args.after / "scan.csv").exists() else []
        rows.append(("scan.csv", "identical" if ra == rb else f"DIFFERENT ({len(ra)} vs {len(rb)} rows)"))
    width = max(len(r[0]) for r in rows)
    print(f"{'item':<{width}}  result")
    for item, res in rows:
        print(f"{item:<{width}}  {res}")
    bad = [r for r in rows if r[1] != "identical"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
