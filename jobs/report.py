"""The run's own plots (mplhep) and ``summary.md``: what ran, on what, and what came out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from svjscout import __version__

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    return plt, mplhep


def region_mt(xy_mt, dataset: str, plane: str, region: str, wp: tuple[float, float]):
    """M_T histogram of one dataset in one ABCD region at ``wp``, summed from ``xy_mt``."""
    import hist

    x_hi, y_hi = region in ("A", "B"), region in ("B", "D")
    xs = slice(hist.loc(wp[0]), None, sum) if x_hi else slice(None, hist.loc(wp[0]), sum)
    ys = slice(hist.loc(wp[1]), None, sum) if y_hi else slice(None, hist.loc(wp[1]), sum)
    return xy_mt[{"dataset": dataset, "plane": plane, "x": xs, "y": ys}]


def _names(h, kinds: dict, kind: str) -> list[str]:
    """Datasets of ``h`` whose kind (signal/background/data) is ``kind``."""
    return [d for d in h.axes["dataset"] if kinds[d]["kind"] == kind]


def _stack_panel(ax, mplhep, parts: dict, bkg: list[str], sig: list[str], legend_size: int) -> None:
    """Backgrounds stacked, each signal overlaid as a line; log scale when anything is filled."""
    if bkg:
        mplhep.histplot([parts[d] for d in bkg], ax=ax, stack=True, histtype="fill", label=bkg)
    for d in sig:
        mplhep.histplot(parts[d], ax=ax, label=d, linewidth=2, yerr=False)
    if any(p.values().sum() > 0 for p in parts.values()):
        ax.set_yscale("log")
    ax.set_ylabel("events")
    ax.legend(fontsize=legend_size, ncol=2)


def plot_mt_regions(output: dict, outdir: Path, wp: tuple[float, float], plane: str = "SP") -> Path:
    """Stacked background M_T per ABCD region at ``wp`` with each signal point overlaid (one PNG)."""
    plt, mplhep = _plt()
    h = output["hists"]["xy_mt"]
    kinds = output["datasets"]
    bkg, sig = _names(h, kinds, "background"), _names(h, kinds, "signal")
    fig, axes = plt.subplots(2, 2, figsize=(16, 12))
    for ax, region in zip(axes.ravel(), ("A", "B", "C", "D")):
        parts = {d: region_mt(h, d, plane, region, wp) for d in bkg + sig}
        _stack_panel(ax, mplhep, parts, bkg, sig, legend_size=9)
        ax.set_title(f"{plane} region {region} at (x0, y0) = ({wp[0]:.3f}, {wp[1]:.3f})", fontsize=16)
    fig.tight_layout()
    path = outdir / f"mt_regions_{plane}.png"
    fig.savefig(path, dpi=70, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_xy_plane(output: dict, outdir: Path, wp: tuple[float, float]) -> Path:
    """X-Y score planes (SP) for all background and all signal, with the WP lines."""
    plt, mplhep = _plt()
    h = output["hists"]["xy_mt"]
    kinds = output["datasets"]
    fig, axes = plt.subplots(1, 2, figsize=(16, 7))
    for ax, kind in zip(axes, ("background", "signal")):
        names = _names(h, kinds, kind)
        vals = sum(h[{"dataset": d, "plane": "SP"}].project("x", "y").values() for d in names) if names else None
        if vals is None:
            continue
        edges = h.axes["x"].edges
        mplhep.hist2dplot(np.where(vals > 0, vals, np.nan), edges, edges, ax=ax)
        ax.axvline(wp[0], color="red")
        ax.axhline(wp[1], color="red")
        ax.set_xlabel("X score")
        ax.set_ylabel("Y score")
        ax.set_title(f"{kind} (SP)", fontsize=18)
    fig.tight_layout()
    path = outdir / "xy_plane.png"
    fig.savefig(path, dpi=70, bbox_inches="tight")
    plt.close(fig)
    return path


def _sum_kind(h, kinds: dict, kind: str):
    names = _names(h, kinds, kind)
    if not names:
        return None
    return sum((h[{"dataset": d}] for d in names[1:]), h[{"dataset": names[0]}])


def plot_controls(output: dict, outdir: Path) -> list[Path]:
    """Control distributions after the preselection (MET, R_T, dphi_min, J0/J1 pT: background
    stacked by dataset, each signal overlaid) and the primary Lund-plane density of J0 and J1,
    summed background vs summed signal, each normalised to unit area."""
    plt, mplhep = _plt()
    hists, kinds = output["hists"], output["datasets"]
    bkg, sig = _names(hists["met"], kinds, "background"), _names(hists["met"], kinds, "signal")
    panels = [("met", {}), ("rt", {}), ("dphi_min", {}), ("jet_pt", {"jet": "J0"}), ("jet_pt", {"jet": "J1"})]
    fig, axes = plt.subplots(2, 3, figsize=(21, 12))
    for ax, (name, sel) in zip(axes.ravel(), panels):
        h = hists[name]
        parts = {d: h[{"dataset": d, **sel}] for d in bkg + sig}
        _stack_panel(ax, mplhep, parts, bkg, sig, legend_size=8)
        ax.set_title(f"{name} {' '.join(sel.values())}".strip(), fontsize=16)
    axes.ravel()[-1].axis("off")
    fig.tight_layout()
    paths = [outdir / "control.png"]
    fig.savefig(paths[0], dpi=60, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(16, 7))
    for ax, kind in zip(axes, ("background", "signal")):
        h = _sum_kind(hists["lund_plane"], kinds, kind)
        if h is None or h.values().sum() <= 0:
            ax.axis("off")
            continue
        density = h.values() / h.values().sum()
        mplhep.hist2dplot(np.where(density > 0, density, np.nan), h.axes[0].edges, h.axes[1].edges, ax=ax)
        ax.set_xlabel(r"$\ln(1/\Delta)$")
        ax.set_ylabel(r"$\ln(k_t/\mathrm{GeV})$")
        ax.set_title(f"primary Lund plane, J0 + J1, {kind}", fontsize=16)
    fig.tight_layout()
    paths.append(outdir / "lund_plane.png")
    fig.savefig(paths[1], dpi=60, bbox_inches="tight")
    plt.close(fig)
    return paths


NO_EVENTS = "n/a (no events)"


def _num(v) -> float | None:
    """``v`` as a float, or None when it is missing or not finite."""
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def closure_table_lines(closure: dict) -> list[str]:
    """Markdown lines of the per-plane closure tables of ``summary.md``.

    ``closure`` is ``{plane: {"edges", "n_b", "nhat_b", "delta", "pull", "chi2", "ndf", "pvalue"
    [, "defined"]}}`` (as from ``main_job._closure_tables``; None or NaN mark undefined numbers). A
    bin without events (``defined`` False, or no finite prediction/pull) is shown as
    "n/a (no events)" (its prediction as "n/a (no events in C)" when ``n_C <= 0``); no cell ever
    reads "nan". The chi2 line counts the defined bins only.
    """
    lines: list[str] = []
    for plane, tab in closure.items():
        lines += [f"### {plane}", "", "| M_T bin | n_B | nhat_B | delta | pull |", "|---|---|---|---|---|"]
        n = len(tab["n_b"])
        defined = tab.get("defined")
        n_undef = 0
        for i in range(n):
            n_b, nhat, delta, pull = (_num(tab[k][i]) for k in ("n_b", "nhat_b", "delta", "pull"))
            ok = (defined is None or bool(defined[i])) and nhat is not None and pull is not None
            mt = f"{tab['edges'][i]:.0f}-{tab['edges'][i + 1]:.0f}"
            if not ok:
                n_undef += 1
                cells = [NO_EVENTS if n_b is None else f"{n_b:.4g}",
                         "n/a (no events in C)" if nhat is None else f"{nhat:.4g}", NO_EVENTS, NO_EVENTS]
            else:
                cells = [NO_EVENTS if n_b is None else f"{n_b:.4g}", f"{nhat:.4g}",
                         "n/a (n_B = 0)" if delta is None else f"{delta:+.3f}", f"{pull:+.2f}"]
            lines.append(f"| {mt} | " + " | ".join(cells) + " |")
        chi2, ndf, pvalue = _num(tab.get("chi2")), int(tab.get("ndf") or 0), _num(tab.get("pvalue"))
        if ndf == 0 or chi2 is None:
            chi2_line = "chi2/ndf = n/a (no M_T bin with events to compare)"
        else:
            chi2_line = f"chi2/ndf = {chi2:.2f}/{ndf}, p = " + ("n/a" if pvalue is None else f"{pvalue:.3f}")
            if n_undef:
                chi2_line += f" ({n_undef} M_T bin(s) without events left out)"
        lines += ["", chi2_line, ""]
    return lines


def _config_lines(cfg, overrides: dict | None) -> list[str]:
    """The overrides of this run and the analysis cuts, as summary.md shows them."""
    lines = ["## Configuration", ""]
    if overrides:
        lines += ["Overrides of the job file (command line):", ""] + [f"- `{k}` = `{v!r}`" for k, v in overrides.items()]
    else:
        lines += ["No overrides of the job file."]
    if cfg is not None:
        cuts = cfg.analysis.cuts.model_dump()
        lines += ["", "Cuts: " + ", ".join(f"`{k}` {v:g}" for k, v in cuts.items()) + f"; M_T edges "
                  f"{[float(e) for e in cfg.analysis.mt_edges]} GeV; lumi {cfg.analysis.lumi:g} pb^-1.",
                  "", "Full resolved configuration, models (SHA-256), inputs and versions: `provenance.json`."]
    return lines + [""]


def _skipped_lines(rep: dict) -> list[str]:
    skipped = rep.get("skipped", [])
    lines = ["", f"Skipped files: {len(skipped)}."] + [f"- {s['file']} ({s.get('stage', '?')}): {s['reason']}"
                                                      for s in skipped]
    for ds, info in sorted(rep.get("datasets", {}).items()):
        lost = info.get("lost")
        if not lost:
            continue
        frac = lost.get("sumw_fraction")
        text = f"- dataset {ds}: lost {lost['files']} of {lost['of_files']} files"
        if frac is not None:
            text += f", {frac:.1%} of its sum of weights" + (
                f" (plus {len(lost['sumw_unknown_files'])} files whose sum of weights could not be read)"
                if lost.get("sumw_unknown_files") else "")
        lines.append(text + "; normalised to the files processed" + (f". {lost['warning']}" if lost.get("warning") else ""))
    return lines


def write_summary(outdir: Path, job_name: str, output: dict, wp, wp_source: str, scan_row: dict | None,
                  closure: dict, limits: dict, index: dict, timings: dict, cfg=None, overrides: dict | None = None) -> Path:
    """``summary.md`` of a run."""
    from svjscout.processors.processor import cutflow_table

    rep = output.get("report", {})
    lines = [f"# svjscout run: {job_name}", "", f"svjscout {__version__}. Every region-split output (histograms.root, "
             f"mt_abcd, plots, cards) is at the working point (x0, y0) = ({wp[0]:.3f}, {wp[1]:.3f}) ({wp_source}).", ""]
    lines += _config_lines(cfg, overrides)
    lines += ["## Inputs", "", "| dataset | kind | files | events | xsec [pb] | sumw |", "|---|---|---|---|---|---|"]
    for ds, info in sorted(output["datasets"].items()):
        lines.append(f"| {ds} | {info['kind']} | {len(rep.get('files', {}).get(ds, []))} | "
                     f"{rep.get('events', {}).get(ds, 0)} | {info.get('xsec') or '-'} | {info.get('sumw') or '-'} |")
    lines += _skipped_lines(rep)
    counts = output.get("counts", {})
    lines += ["", "Counted, never filled: " + ", ".join(
        f"{k} = {sum(c.get(k, 0) for c in counts.values())}"
        for k in ("nonfinite_candidates", "nonfinite_events", "fewer_than_two_jets", "chunks_without_selected"))]
    table = cutflow_table(output)
    if table:
        cuts = list(next(iter(table.values())))
        lines += ["", "## Cutflow (raw events / weighted)", "", "| dataset | " + " | ".join(cuts) + " |",
                  "|---|" + "---|" * len(cuts)]
        for ds, row in table.items():
            lines.append(f"| {ds} | " + " | ".join(f"{row[c]['raw']:.0f} / {row[c]['weighted']:.3g}" for c in cuts) + " |")
    lines += ["", "## Working point", "", f"(x0, y0) = ({wp[0]:.3f}, {wp[1]:.3f}) ({wp_source})."]
    if scan_row:
        lines += ["", "| metric | value |", "|---|---|"] + [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                                                          for k, v in scan_row.items()]
    lines += ["", "## Closure per M_T bin (background MC)", ""]
    lines += closure_table_lines(closure)
    lines += ["## Expected limits on the signal strength r (quick asymptotic CLs)", "",
              "| point | -2s | -1s | median | +1s | +2s | obs |", "|---|---|---|---|---|---|---|"]
    for point, lim in sorted(limits.items()):
        obs = lim.get("obs")
        lines.append(f"| {point} | " + " | ".join(f"{lim[k]:.3g}" for k in ("exp-2", "exp-1", "exp0", "exp+1", "exp+2"))
                     + f" | {'-' if obs is None else f'{obs:.3g}'} |")
    lines += ["", f"Datacards: {len(index.get('cards', index.get('points', [])))} written under `datacards/` "
              "(see `datacards/index.json`).", "", "## Timing", ""]
    lines += [f"- {k}: {v:.1f} s" for k, v in timings.items()]
    path = outdir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    (outdir / "timings.json").write_text(json.dumps(timings, indent=1))
    return path
