"""Side by side: twin pairs evaluated through the real chain on held-out events.

Each pair is a `svjscout run` output folder (typically of jobs/heldout.yaml: the test subset of
the training sample, with --set analysis.twin_model=...), optionally with the pair's training
report (report.json, for dCorr(X, Y) on the same test events). Prints a markdown table of the
working point the scan chose, <Z_A> there (with the non-closure), the closure at that point
(chi2 p-value, max |pull| per M_T bin, the cards' non-closure kappas), the expected limits per
signal point (ratio to the first pair), the AUCs of X and Y per signal point on the quoted events
(binned in the run's score bins: every pair, the shipped one included, on the same events), and
the fit validation (VP goodness of fit, the mean pull of background-only and r=1 injections per
point).

    python benchmarks/compare_twin_pairs.py mdmm=data/heldout_mdmm:data/twin/report.json \\
        analysis=data/heldout_analysis:data/twin_analysis/report.json

With ``--bootstrap N`` it also prints, per pair and signal point, the expected limit with its 95 %
interval over N Poisson replicas of the quoted events' parents, and every pair's limit over the
reference's with the *paired* interval (the same replicas: datacards/bootstrap.py), the
cards' largest non-closure kappa likewise, and the AUCs with their paired difference to the
reference (not part of the target). Labels ``NAME@SEED`` compare each seed with the
reference of the same seed (``--reference mdmm``: ``analysis@3`` against ``mdmm@3``); the last
lines say whether the issue-29 target holds: every ratio's median <= 0.80 at every point on every
seed, with the kappa no larger (upper end of its paired interval <= 1.05). The runs must quote
the same events (the same job and sample, e.g. ``jobs/heldout.yaml``'s final subset).

    python benchmarks/compare_twin_pairs.py --bootstrap 100 --reference mdmm \\
        mdmm@1=data/heldout_mdmm_s1 analysis@1=data/heldout_analysis_s1 mdmm@2=... analysis@2=...
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
           "limits": {k: v["exp0"] for k, v in limits.items()}, "validation": val, "auc": _quoted_aucs(run)}
    if report is not None and report.is_file():
        rep = json.loads(report.read_text())
        out["dcorr_xy"] = rep["test"].get("dcorr", {}).get("dcorr_xy")
        out["floors"] = (rep["summary"].get("permutation_floors") or {}).get("terms", {})
        out["epochs"] = (rep["summary"].get("best_epoch"), rep["summary"].get("epochs_run"))
        out["z_hard_test"] = (rep["summary"].get("analysis_objective") or {}).get("test", {}).get("z_mean")
    return out


def _quoted_aucs(run: Path) -> dict[str, float]:
    """The binned AUCs of X and Y per signal point on the events the run quotes
    (:func:`svjscout.datacards.bootstrap.auc_figure`), with what backs them: the Kish N_eff over
    parents of every signal point (``neff:POINT``) and of the summed backgrounds
    (``neff:background``), NaN without parent records; empty without histograms.coffea."""
    import numpy as np

    from svjscout.datacards.bootstrap import auc_figure
    from svjscout.datacards.guard import kish_neff
    from svjscout.datacards.parents import StatInputs
    from svjscout.datacards.split import quote_half
    from svjscout.jobs.commands_datacards import _load_output

    hist = run / "histograms.coffea"
    if not hist.is_file():
        return {}
    output = _load_output(str(hist))
    inputs = StatInputs.from_output(quote_half(output))
    vals = auc_figure(output["datasets"])(inputs)

    def neff(names: list[str]) -> float:
        if inputs.parents is None:
            return float("nan")
        recs = [inputs.parents.datasets[n] for n in names if n in inputs.parents.datasets]
        per_parent = [np.bincount(np.unique(r.key, return_inverse=True)[1], r.weight) for r in recs]
        w = np.concatenate(per_parent) if per_parent else np.zeros(0)
        return float(kish_neff(w.sum(), np.sum(w**2)))

    kinds = {n: d.get("kind") for n, d in output["datasets"].items()}
    vals["neff:background"] = neff([n for n, k in kinds.items() if k == "background"])
    for n in (n for n, k in kinds.items() if k == "signal"):
        vals[f"neff:{n}"] = neff([n])
    return vals


def _f(v, fmt="{:.3g}") -> str:
    try:
        return fmt.format(float(v))
    except (TypeError, ValueError):
        return "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="+", help="label=RUN_DIR[:REPORT_JSON]")
    ap.add_argument("--plot", default=None, help="also write OUT.png/.pdf: expected limits relative to the first pair")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="N",
                    help="paired Poisson bootstrap over the quoted events' parents, N replicas (0: off)")
    ap.add_argument("--reference", default=None,
                    help="the reference NAME (labels NAME@SEED); default: the first label")
    ap.add_argument("--seed", type=int, default=0, help="the replicas' seed")
    args = ap.parse_args()
    rows = {}
    runs = {}
    for item in args.pairs:
        label, rest = item.split("=", 1)
        run, _, report = rest.partition(":")
        runs[label] = Path(run)
        rows[label] = _load(runs[label], Path(report) if report else None)
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
    for term in ("dcorr_xy", "dcorr_x_mt", "dcorr_y_mt", "dcorr_x_deta", "dcorr_y_deta"):
        def floor(r, t=term):
            f = r.get("floors", {}).get(t)
            if not f:
                return "-"
            return (f"{_f(f.get('observed'), '{:.4f}')} (floor {_f(f.get('mean'), '{:.4f}')} +- "
                    f"{_f(f.get('sd'), '{:.4f}')}, z {_f(f.get('z'), '{:.1f}')})")
        add(f"{term}: bias-corrected dCorr^2 on the report's subset (permutation floor among parents)", floor)
    add("best epoch / epochs run (0: the starting pair kept)",
        lambda r: "/".join(str(v) for v in r["epochs"]) if r.get("epochs") else "-")
    for point in first["limits"]:
        add(f"expected limit on r, {point}",
            lambda r, p=point: _f(r["limits"].get(p)) + (
                f" ({r['limits'][p] / first['limits'][p]:.2f}x)" if r is not first and p in r["limits"] else ""))
    def auc_cell(r, p):
        aucs = " / ".join(_f(r["auc"].get(f"auc_{a}:{p}"), "{:.3f}") for a in ("x", "y"))
        n_sig, n_bkg = r["auc"].get(f"neff:{p}", float("nan")), r["auc"].get("neff:background", float("nan"))
        backed = "" if min(n_sig, n_bkg) >= 10 else ", not backed: N_eff < 10"
        return f"{aucs} (N_eff {_f(n_sig, '{:.0f}')} / {_f(n_bkg, '{:.0f}')}{backed})"

    for point in first["limits"]:
        add(f"AUC of X / Y on the quoted events (binned; N_eff over parents, signal / background), {point}",
            lambda r, p=point: auc_cell(r, p))
    gof = lambda r: r["validation"].get("gof", {}).get("VP", {})  # noqa: E731
    add("GoF VP: q_obs / p (toys); what backs it (MC pseudo-data)",
        lambda r: f"{_f(gof(r).get('q_obs'))} / {_f(gof(r).get('pvalue'))}"
        + (f"; {gof(r)['pseudo_data']['verdict']} (N_eff >= {gof(r)['pseudo_data']['neff_min']:.0f}, MC variance "
           f"{gof(r)['pseudo_data']['var_over_n_max']:.3g}x Poisson)" if gof(r).get("pseudo_data") else ""))
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
    if args.bootstrap:
        print()
        print(bootstrap_table(runs, args.bootstrap, args.reference, args.seed))


def _replicas(run: Path, n_boot: int, seed: int) -> tuple[dict, dict]:
    """``(replicas, central)``: the run's figures (limits per point, kappa_max, backed, the AUCs
    ``auc_x:POINT``/``auc_y:POINT``) on the events it quotes, on n_boot replicas and on the run
    itself."""
    from svjscout.datacards.bootstrap import auc_figure, bootstrap, limits_figure
    from svjscout.datacards.parents import StatInputs
    from svjscout.datacards.split import quote_half
    from svjscout.jobs.commands_datacards import _load_output, _run_job_of
    from svjscout.jobs.main_job import card_kw

    hist = str(run / "histograms.coffea")
    output = _load_output(hist)
    job = _run_job_of(hist)
    if job is None:
        raise SystemExit(f"{run}: no provenance.json beside histograms.coffea (the run's card settings)")
    wp = (output["wp"]["x0"], output["wp"]["y0"])
    limits = limits_figure(output["datasets"], wp, card_kw(job.datacards, job.analysis.systematics, output))
    aucs = auc_figure(output["datasets"])

    def figure(inputs: StatInputs) -> dict[str, float]:
        return {**limits(inputs), **aucs(inputs)}

    half = quote_half(output)
    central = figure(StatInputs.from_output(half))
    # the run's own verdict (every scan rule and the guard, on the events it quotes); replicas: the guard
    central["backed"] = float(bool(output["wp"].get("backed", central["backed"])))
    return bootstrap(half, figure, n_boot, seed), central


def bootstrap_table(runs: dict[str, Path], n_boot: int, reference: str | None, seed: int) -> str:
    """The markdown table of ``--bootstrap`` (see the module docstring)."""
    import numpy as np

    from svjscout.datacards.bootstrap import paired_difference, paired_ratio, percentile_interval

    reps, central = {}, {}
    for label, run in runs.items():
        reps[label], central[label] = _replicas(run, n_boot, seed)
    name = lambda label: label.split("@", 1)[0]  # noqa: E731
    seed_of = lambda label: label.split("@", 1)[1] if "@" in label else ""  # noqa: E731
    ref_name = reference or name(next(iter(runs)))
    refs = {seed_of(lb): lb for lb in runs if name(lb) == ref_name}
    if not refs:
        raise SystemExit(f"--reference {ref_name}: no label NAME@SEED with that name among {list(runs)}")
    keys = central[next(iter(refs.values()))]
    points = sorted(k for k in keys if k not in ("kappa_max", "backed") and not k.startswith("auc_"))
    aucs = sorted(k for k in keys if k.startswith("auc_"))
    lines = [f"Paired Poisson bootstrap over the quoted events' parents ({n_boot} replicas, seed {seed}; 95 % "
             "percentile intervals; ratios replica by replica to the reference of the same seed)", "",
             "| pair | figure | value [95 %] | / reference [paired 95 %] | run backed (replicas passing the guard) |",
             "|---|---|---|---|---|"]
    verdict_ok, verdict_n, unbacked = True, 0, []
    for label in runs:
        ref = refs.get(seed_of(label))
        backed = float(np.nanmean(reps[label].get("backed", np.array([np.nan]))))
        is_backed = bool(central[label].get("backed"))
        if not is_backed:
            unbacked.append(label)
        for fig in points + ["kappa_max"]:
            v, r = central[label].get(fig, np.nan), reps[label].get(fig, np.full(n_boot, np.nan))
            lo, hi = percentile_interval(r)
            cell = f"{v:.4g} [{lo:.4g}, {hi:.4g}]"
            ratio = "-"
            if ref is not None and ref != label:
                med, rlo, rhi, n = paired_ratio(reps[ref].get(fig, np.full(n_boot, np.nan)), r)
                ratio = f"{med:.3f} [{rlo:.3f}, {rhi:.3f}] ({n} replicas)"
                verdict_n += 1
                if fig == "kappa_max":
                    verdict_ok &= bool(np.isfinite(rhi) and rhi <= 1.05)
                else:
                    verdict_ok &= bool(np.isfinite(med) and med <= 0.80)
            lines.append(f"| {label} | {fig} | {cell} | {ratio} | {'yes' if is_backed else 'NO'} ({backed:.0%}) |")
        # the AUCs: a paired difference to the reference, not part of the target
        for fig in aucs:
            v, r = central[label].get(fig, np.nan), reps[label].get(fig, np.full(n_boot, np.nan))
            lo, hi = percentile_interval(r)
            diff = "-"
            if ref is not None and ref != label:
                med, dlo, dhi, n = paired_difference(reps[ref].get(fig, np.full(n_boot, np.nan)), r)
                diff = f"{med:+.3f} [{dlo:+.3f}, {dhi:+.3f}] (difference, {n} replicas)"
            lines.append(f"| {label} | {fig} | {v:.3f} [{lo:.3f}, {hi:.3f}] | {diff} | "
                         f"{'yes' if is_backed else 'NO'} ({backed:.0%}) |")
    if verdict_n:
        verdict = "met" if verdict_ok and not unbacked else "NOT met"
        lines += ["", "Issue 29's target (median limit ratio <= 0.80 at every point on every seed, kappa no "
                  f"larger, every working point backed): {verdict} ({verdict_n} comparisons"
                  + (f"; not backed: {', '.join(unbacked)}" if unbacked else "") + ")"]
    return "\n".join(lines)


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
