"""The twin's report: history, multiplier and X-Y plane figures, and the markdown/JSON report."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from svjscout import __version__
from svjscout.core.regions import REGIONS
from svjscout.models.training.report import write_report
from svjscout.models.twin_training.analysis import report_lines as analysis_report_lines
from svjscout.models.twin_training.config import CONSTRAINTS, TwinTrainConfig
from svjscout.models.twin_training.data import SkimData
from svjscout.models.twin_training.evaluation import target_check


def _save(fig, out_dir: Path, name: str) -> Path:
    fig.tight_layout()
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=100)
    return path


def _plot_history(history: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    ep = [h["epoch"] for h in history if h["epoch"] > 0]
    hist = [h for h in history if h["epoch"] > 0]
    paths = {}
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for key in ("bce_x", "bce_y"):
        ax1.plot(ep, [h["train"][key] for h in hist], label=f"train {key}")
        ax1.plot(ep, [h["val"][key] for h in hist], "--", label=f"val {key}")
    ax1.plot(ep, [h["val_figure"] for h in hist], "k-", lw=2, label="val figure")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend(fontsize=7)
    for key in CONSTRAINTS:
        ax2.plot(ep, [h["train"][key] for h in hist], label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("constraint value (train)")
    ax2.set_yscale("log")
    ax2.legend(fontsize=6)
    paths["history"] = _save(fig, out_dir, "history")

    if hist and "z_soft" in hist[0]["train"]:  # objective: analysis
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot(ep, [h["train"]["z_soft"] for h in hist], label="train: soft <Z_A> (annealed T)")
        ax.plot(ep, [h["val"]["z_hard"] for h in hist], "--", label="validation: hard-cut <Z_A>")
        if history and history[0]["epoch"] == 0 and "z_hard" in history[0]["val"]:
            ax.axhline(history[0]["val"]["z_hard"], color="grey", lw=1, label="validation, starting pair")
        ax.set_xlabel("epoch")
        ax.set_ylabel("expected <Z_A> (SP)")
        ax.legend(fontsize=7)
        paths["objective"] = _save(fig, out_dir, "objective")

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key in CONSTRAINTS:
        ax.plot(ep, [h["multipliers"][key] for h in hist], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MDMM multiplier lambda")
    ax.legend(fontsize=6)
    paths["multipliers"] = _save(fig, out_dir, "multipliers")
    return paths


def _plot_plane(d: SkimData, x: np.ndarray, y: np.ndarray, cfg: TwinTrainConfig, out_dir: Path) -> Path:
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    bins = np.linspace(0, 1, 41)
    for ax, lab, title in ((axes[0], 0, "background"), (axes[1], 1, "signal (all points)")):
        sel = d.label == lab
        w = np.abs(d.weight[sel])
        if sel.sum() and w.sum() > 0:
            h, _, _ = np.histogram2d(x[sel], y[sel], bins=[bins, bins], weights=w)
            pos = h[h > 0]
            norm = LogNorm(vmin=pos.min(), vmax=pos.max()) if len(pos) and pos.max() > pos.min() else None
            mesh = ax.pcolormesh(bins, bins, np.where(h > 0, h, np.nan).T, norm=norm)
            fig.colorbar(mesh, ax=ax, label="weighted events")
        ax.axvline(cfg.reference_wp[0], color="r")  # the working point used (report_wp, else x0, y0)
        ax.axhline(cfg.reference_wp[1], color="r")
        ax.set_xlabel("X score")
        ax.set_ylabel("Y score")
        ax.set_title(f"test (untouched) {title}")
    return _save(fig, out_dir, "xy_plane")


def _auc_lines(metrics: Mapping[str, Any]) -> list[str]:
    lines = ["| signal point | AUC X | AUC Y | AUC LundNet J0 + J1 |", "|---|---|---|---|",
             f"| all | {metrics['auc_all']['x']:.4f} | {metrics['auc_all']['y']:.4f} | "
             f"{metrics.get('baselines_auc_all', {}).get('lundnet_sum', float('nan')):.4f} |"]
    for name, a in metrics["auc_per_point"].items():
        lines.append(f"| {name} | {a['x']:.4f} | {a['y']:.4f} | {a.get('lundnet_sum', float('nan')):.4f} |")
    return lines


def _fmt(v: Any) -> str:
    return "undefined" if v is None or not np.isfinite(v) else f"{v:.4f}"


def _wp_row(r: Mapping[str, Any], terms: list[str]) -> str:
    return f"| ({r['x0']:.3f}, {r['y0']:.3f}) | " + " | ".join(_fmt(r.get(k)) for k in terms) + " |"


def _closure_lines(metrics: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    wp = metrics.get("closure_wp") or [cfg["x0"], cfg["y0"]]
    lines = [f"Closure at the working point used (report_wp) (x0, y0) = ({wp[0]:g}, {wp[1]:g}) with hard cuts "
             "(closure_bins: the worst M_T bin), on "
             f"the {metrics.get('n_test_background', 0)} analysis-preselected background events:", "",
             "| term | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.get("closure_hard", {}).items()]
    for plane, bins in metrics.get("closure_hard_bins", {}).items():
        lines.append(f"| C_i per M_T bin, {plane} | " + ", ".join(_fmt(b) for b in bins) + " |")
    for plane, neff in metrics.get("closure_hard_neff_min", {}).items():
        lines.append(f"| smallest region N_eff, {plane} | {neff:.1f} |")
    at = metrics.get("closure_at_wps") or {}
    terms = [k for k in metrics.get("closure_hard", {}) if k.startswith("closure_")]
    head = ["| working point | " + " | ".join(terms) + " |", "|---|" + "---|" * len(terms)]
    if at.get("listed"):
        lines += ["", "Hard-cut closure at every listed working point (closure_wps):", "", *head]
        lines += [_wp_row(r, terms) for r in at["listed"]]
    grid = at.get("grid")
    if grid:
        lines += ["", f"Hard-cut closure over the {grid['n']} grid working points of closure_wp_range "
                  f"(x {grid['x'][0]:g}..{grid['x'][-1]:g}, y {grid['y'][0]:g}..{grid['y'][-1]:g}): median and "
                  f"worst point of each term over the usable points (closure defined, every region with "
                  f"N_eff >= {grid['min_neff']:g}):", "",
                  "| term | median | worst | at (x0, y0) | usable points |", "|---|---|---|---|---|"]
        for k in terms:
            w = grid["worst"].get(k)
            where = f"({w['x0']:.3f}, {w['y0']:.3f})" if w else "-"
            lines.append(f"| {k} | {_fmt(grid['median'][k])} | {_fmt(w[k] if w else None)} | {where} | "
                         f"{grid['usable'][k]} |")
    counts = metrics.get("abcd_counts_background", {})
    if counts:
        lines += ["", f"Background fractions in the regions at ({wp[0]:g}, {wp[1]:g}) (weighted, hard cuts):", "",
                  "| plane | A | B | C | D |", "|---|---|---|---|---|"]
        for plane, c in counts.items():
            tot = sum(c.values()) or 1.0
            lines.append(f"| {plane} | " + " | ".join(f"{c[r] / tot:.3f}" for r in REGIONS) + " |")
    return lines


def _split_lines(summary: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    seed = cfg.get("split_seed") if cfg.get("split_seed") is not None else cfg["seed"]
    if len(cfg["split"]) == 4:
        lines = [f"Split: svjscout/core/splits.py, seed {seed}, train/val/select/final fractions {list(cfg['split'])}, "
                 "keyed by (dataset, run, luminosityBlock, parent), nested in LundNet's 3-way split (final inside "
                 "its test, select + final inside its val + test: no LundNet training event is selected on or "
                 "quoted). Every quoted figure (\"test\" below, the ONNX metadata) is on the final subset."]
    else:
        lines = [f"Split: svjscout/core/splits.py, seed {seed}, train/val/test fractions {list(cfg['split'])}, "
                 "keyed by (dataset, run, luminosityBlock, parent): the split LundNet uses, so these test events are "
                 "inside LundNet's test events (same seed and fractions)."]
    ov = summary.get("init_model_overlap")
    if ov:
        lines += ["", f"Warning: held-out events of this training were training events of {ov['init_model']} "
                  + (f"({ov['why']})" if ov.get("why") else
                     f"(u in [{ov['u_range'][0]:g}, {ov['u_range'][1]:g}): {', '.join(ov['subsets'])})") + "."]
    oof = summary.get("lundnet_oof")
    if oof:
        unseen = oof.get("unseen_events") or 0
        lines += ["", f"LundNet inputs: out-of-fold scores from {oof['table']} on the train and val events "
                  f"({oof['events']} events); the held-out subsets keep the deployed model's scores"
                  + (f", and so do {unseen} train/val events from files outside LundNet's skim (the deployed "
                     "model never saw them)." if unseen else ".")]
    return lines


def _permutation_floor_lines(pf: Mapping[str, Any]) -> list[str]:
    terms = pf.get("terms") or {}
    if not terms:
        return []
    est = ("bias-corrected dCorr^2 (U-statistic, ~0 under independence at any size)" if pf.get("estimator") == "u"
           else "dCorr (V-statistic, as constrained)")
    lines = ["", f"## Noise floors of the trained scores ({pf.get('subset', 'test')} subset, block permutation "
             "among parents)", "",
             f"Each dCorr term as {est} of the trained scores on the {pf.get('subset', 'test')} subset's background, "
             f"against its distribution when X (or Y) is permuted among parent blocks within datasets "
             f"({pf.get('draws')} draws, docs/training_data.md): value, floor mean +- sd, z = (value - mean) / sd. "
             "These replace the synthetic null floors for any claim of the report (the synthetic floors above "
             "are what floor_policy uses before training).", "",
             "| term | value | floor mean +- sd | z |", "|---|---|---|---|"]
    for k, f in terms.items():
        lines.append(f"| {k} | {f['observed']:.4g} | {f['mean']:.4g} +- {f['sd']:.4g} | {f['z']:.2f} |")
    if any(k.startswith("closure_") for k in terms):
        lines += ["", "`closure_<plane>_wp`: |n_B - n_A n_D / n_C| / (n_A n_D / n_C) of the background with hard "
                  "cuts at the report's working point, against X permuted among parent blocks (the ABCD "
                  "prediction then closes in the population): a value within the floor is consistent with "
                  "statistics alone; z well above it is a real non-closure."]
    return lines


def _write_report(out_dir: Path, summary: dict[str, Any], history: list[dict[str, Any]],
                  metrics: dict[str, Any], plots: Mapping[str, Path],
                  val_metrics: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    val_metrics = dict(val_metrics or {})
    cfg = summary["config"]
    sel = summary.get("selection", {})
    lines = [
        "# Twin MLP training report",
        "",
        f"svjscout {__version__}; best epoch {summary['best_epoch']} of {summary['epochs_run']}; "
        + (f"train/val/select/final events {summary['n_train']}/{summary['n_val']}/{summary.get('n_select', 0)}/"
           f"{summary['n_test']}." if len(cfg["split"]) == 4 else
           f"train/val/test events {summary['n_train']}/{summary['n_val']}/{summary['n_test']}."),
        "",
        *_split_lines(summary, cfg),
        "",
        f"Selection: every validation and test figure, the constraints and the validation figure use only events "
        f"passing the analysis preselection {sel.get('cuts', {})} (R_T > rt_min, M_T > mt_min, dphi_min < "
        f"dphi_min_max, |deta| < deta_max); BCE uses the `{cfg.get('bce_selection', 'analysis')}` selection. "
        f"Events of the skim passing it: {sel.get('n_pass', '-')} of {sel.get('n_skim', '-')}.",
        "",
    ]
    lines += ([
        "Validation vs select vs final: early stopping uses the validation subset, the working point of the "
        "quoted figures is chosen on the select subset, and every figure labelled \"test (untouched)\" below is "
        "on the final subset, evaluated once, after training."] if len(cfg["split"]) == 4 else [
        "Validation vs test: early stopping and every other choice use the validation split only; the test split "
        "is evaluated once, after training (\"test (untouched)\")."])
    lines += [
        "",
        "AUC weights (here and in the LundNet report): background by physics weight, every signal point "
        "normalised to the same total weight, also in \"all\". Baselines (LundNet J0 + J1, single features) "
        "have their sign chosen on the training split.",
        "",
        "## Test (untouched) AUCs (weighted, signal point vs all background)",
        "",
        *_auc_lines(metrics),
    ]
    obj = summary.get("analysis_objective")
    lines[4:4] = [f"Objective: `{cfg.get('objective', 'bce')}`"
                  + (" (expected <Z_A> of the binned ABCD analysis, models/abcd_objective.py)"
                     if cfg.get("objective") == "analysis" else " (BCE_X + BCE_Y)")
                  + f"; MDMM constraints {'on' if cfg.get('constraints', True) else 'off'}"
                  + (f"; started from {cfg['init_model']}" if cfg.get("init_model") else "") + ".", ""]
    if obj:
        quoted = "final" if "final" in obj else "test"
        zq = obj[quoted]
        lines += ["", f"## Expected ABCD significance, hard cuts ({obj['plane']}, M_T edges {obj['mt_edges']}, "
                  f"b_floor {obj['b_floor']:.4g} events)", "",
                  f"Thresholds x0 = {zq['x0']:.4f}, y0 = {zq['y0']:.4f}; yields scaled by 1 / split "
                  "fraction; background error: Asimov data statistics, non-closure, MC statistics.", "",
                  "| split | <Z_A> | " + " | ".join(zq["z_points"]) + " |",
                  "|---|---|" + "---|" * len(zq["z_points"])]
        for split in ("validation", quoted):
            zp = obj[split]["z_points"]
            lines.append(f"| {split} | {obj[split]['z_mean']:.3f} | "
                         + " | ".join(f"{v:.3f}" for v in zp.values()) + " |")
        lines += analysis_report_lines(obj)  # the stopping figure and its intervals (analysis.py)
    if metrics.get("baselines_auc_all"):
        lines += ["", "Baselines, test (untouched), all signal (sign from the training split):", "",
                  "| baseline | sign | AUC |", "|---|---|---|"]
        lines += [f"| {k} | {metrics['baseline_signs'][k]:+g} | {v:.4f} |"
                  for k, v in metrics["baselines_auc_all"].items()]
    eps = cfg["eps"]
    eps_used = summary.get("eps_used", eps)
    floors = summary.get("floors", {})
    test_floor = metrics.get("floors", {})

    def fl(where: Mapping[str, Any], k: str) -> str:
        return f"{where[k][0]:.4f} +- {where[k][1]:.4f}" if k in where else "-"

    check = summary.get("test_targets") or target_check(metrics, eps_used, eps)
    lines += ["", "## Test (untouched) background decorrelation and closure", "",
              "Floor: the value of a perfect pair (X, Y independent of each other, M_T and deta) on a sample of "
              "this size (mean +- sd, docs/twin.md; synthetic nulls, used before training); targets below the training "
              f"floor are raised to it only with floor_policy adjust (here {cfg.get('floor_policy', 'off')}). "
              "'within' compares the test value with the "
              "trained eps (and the configured eps).", "",
              "| term | test value | test floor | eps configured | eps trained | train floor "
              "| within trained / configured |",
              "|---|---|---|---|---|---|---|"]
    kappa = cfg["kappa"]
    n_wps = (len(cfg.get("closure_wps") or ()) + (1 if cfg.get("closure_wp_range") else 0))
    wp_note = (f", {cfg.get('closure_reduce', 'max')} over the evaluation working points" if n_wps else "")
    for k, t in check["terms"].items():
        note = wp_note if k.startswith("closure") else ""
        label = k if k.startswith("dcorr") else f"{k} (soft, kappa={kappa:g}{note})"
        ok = f"{'yes' if t['within_trained'] else 'NO'} / {'yes' if t['within_configured'] else 'NO'}"
        lines.append(f"| {label} | {t['value']:.4f} | {fl(test_floor, k)} | {eps[k]:g} | {eps_used[k]:.4g} | "
                     f"{fl(floors.get('train', {}), k)} | {ok} |")
    fails_t, fails_c = check["fail_trained"], check["fail_configured"]
    lines += ["", ("Every constrained term is within its trained eps on the test split." if not fails_t else
                   f"Terms above their trained eps on the test split: {', '.join(fails_t)}."),
              ("Every constrained term is within its configured eps." if not fails_c else
               f"Terms above their configured eps: {', '.join(fails_c)}."), ""]
    lines += _closure_lines(metrics, cfg)
    lines += _permutation_floor_lines(summary.get("permutation_floors") or {})
    if val_metrics:
        lines += ["", "## Validation (used for early stopping; best epoch)", "", *_auc_lines(val_metrics), ""]
        vcheck = target_check(val_metrics, summary.get("eps_validation", eps_used), eps)
        lines += ["| term | validation value | eps (validation figure) | within |", "|---|---|---|---|"]
        lines += [f"| {k} | {t['value']:.4f} | {t['eps_trained']:.4g} | {'yes' if t['within_trained'] else 'NO'} |"
                  for k, t in vcheck["terms"].items()]
        lines += [""] + _closure_lines(val_metrics, cfg)
    mult = summary.get("multipliers_shipped") or history[summary["best_epoch"]].get("multipliers", {})
    proj = cfg.get("mdmm_projection", "none")
    lines += ["", f"## MDMM multipliers of the shipped model (best epoch {summary['best_epoch']})", "",
              "Update: " + ("projected dual ascent, every multiplier clamped to >= 0 after every step "
                            "(mdmm_projection: clamp, models/mdmm.py)." if proj == "clamp" else
                            "unprojected ascent (mdmm_projection: none): a negative multiplier rewards violation."),
              "",
              "| constraint | lambda |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in mult.items()]
    return write_report(out_dir, lines, {"summary": summary, "history": history, "test": metrics,
                                         "validation": val_metrics}, plots)
