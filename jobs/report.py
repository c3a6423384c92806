"""The run's own plots (mplhep) and ``summary.md``: what ran, on what, and what came out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hist
import numpy as np
from matplotlib.colors import LogNorm

from svjscout import __version__
from svjscout.core.regions import REGION_INDEX, REGIONS
from svjscout.datacards import style as st
from svjscout.datacards.abcd import abcd_from_yields
from svjscout.datacards.nonclosure import summary_lines as nonclosure_lines
from svjscout.datacards.parents import ParentRecords, StatInputs
from svjscout.datacards.pseudodata import PSEUDO_TAG
from svjscout.datacards.pseudodata import summary_lines as pseudo_lines
from svjscout.datacards.regions import region_yields
from svjscout.datacards.systematics import summary_lines as systematics_lines
from svjscout.datacards.validation import summary_lines as validation_lines
from svjscout.processors.prefilter import ROW_NOTE
from svjscout.processors.processor import cutflow_table

log = logging.getLogger(__name__)


def region_mt(xy_mt, dataset: str, plane: str, region: str, wp: tuple[float, float],
              parents: ParentRecords | None = None):
    """M_T histogram of one dataset in one ABCD region at ``wp``, summed from ``xy_mt`` (variances
    parent-aware for a dataset with detector copies in ``parents``, the records of ``xy_mt``,
    :mod:`svjscout.datacards.parents`)."""
    x_hi, y_hi = (bool(v) for v in np.argwhere(REGION_INDEX == REGIONS.index(region))[0])
    xs = slice(hist.loc(wp[0]), None, sum) if x_hi else slice(None, hist.loc(wp[0]), sum)
    ys = slice(hist.loc(wp[1]), None, sum) if y_hi else slice(None, hist.loc(wp[1]), sum)
    out = xy_mt[{"dataset": dataset, "plane": plane, "x": xs, "y": ys}]
    rec = None if parents is None else parents.valid_for(xy_mt)
    if rec is not None and dataset in rec.datasets:  # detector copies: parent-aware region variances
        y = region_yields(xy_mt, {dataset: {"kind": "background"}}, wp, plane=plane, which=[dataset], poisson=False,
                          parents=rec)
        out.view(flow=False).variance[...] = y.var[REGIONS.index(region)]
    return out


def _names(h, kinds: dict, kind: str) -> list[str]:
    """Datasets of ``h`` whose kind (signal/background/data) is ``kind``."""
    return [d for d in h.axes["dataset"] if kinds[d]["kind"] == kind]


REGION_TEXT = {"A": "region A (X > x0, Y < y0)", "B": "region B (X > x0, Y > y0)",
               "C": "region C (X < x0, Y < y0)", "D": "region D (X < x0, Y > y0)"}


def _spectrum(ax, edges, bkg: dict, sig: list, per_width: bool, ylabel: str) -> dict:
    """Backgrounds stacked (fills, in process colours) with the MC-statistics band of their sum,
    each signal a line; values per GeV (``per_width``) or per bin. ``bkg``: ``{label: (values,
    variances)}``; ``sig``: ``[(label, values)]``. Returns the plotted arrays (per bin, unscaled)."""
    edges = np.asarray(edges, float)
    scale = 1.0 / np.diff(edges) if per_width else np.ones(len(edges) - 1)
    base = np.zeros(len(edges) - 1)
    var = np.zeros(len(edges) - 1)
    for i, (label, (vals, v2)) in enumerate(bkg.items()):
        top = base + vals * scale
        ax.stairs(top, edges, baseline=base, fill=True, color=st.process_colour(label, i), label=label)
        base, var = top, var + v2 * scale**2
    if bkg:
        ax.stairs(base, edges, color="black", linewidth=1)
        err = np.sqrt(var)
        ax.stairs(base + err, edges, baseline=np.clip(base - err, 0, None), fill=True, facecolor="none",
                  edgecolor="0.3", hatch="////", linewidth=0, label="Bkg. stat. unc.")
    for i, (label, vals) in enumerate(sig):
        ax.stairs(vals * scale, edges, label=label, **st.signal_style(i))
    everything = [base] + [v * scale for _, v in sig]
    pos = np.concatenate([a[np.isfinite(a) & (a > 0)] for a in everything]) if everything else np.array([])
    if pos.size and (st.log_range_needed(pos) or len(bkg) > 1):
        ax.set_yscale("log")
        ax.set_ylim(pos.min() / 5, pos.max() * 3)
    elif pos.size:
        ax.set_ylim(0, pos.max() * 1.3)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylabel(ylabel)
    return {"edges": edges, "background": base, "signals": {lab: v for lab, v in sig}}


def _background_parts(parts: dict, bkg: list[str]) -> dict:
    """``{process label: (values, variances)}``, datasets of one process (e.g. QCD pT bins) summed."""
    out = {}
    for label, names in st.group_backgrounds(bkg).items():
        out[label] = (sum(np.asarray(parts[d].values(), float) for d in names),
                      sum(np.asarray(parts[d].variances(), float) for d in names))
    return out


def _signal_parts(parts: dict, sig: list[str], kinds: dict) -> list:
    return [(st.signal_label(kinds.get(d), d), np.asarray(parts[d].values(), float)) for d in sig]


def plot_mt_regions(output: dict, outdir: Path, wp: tuple[float, float], plane: str = "SP", style=None) -> list[str]:
    """M_T in each ABCD region of ``plane`` at ``wp`` (one figure per region, ``mt_<plane>_region<R>``):
    backgrounds stacked by process with their MC-statistics band, each signal point a line, events/GeV."""
    style = style or st.DEFAULT
    plt = st.pyplot()
    full = StatInputs.from_output(output)
    h = full.xy_mt
    kinds = output["datasets"]
    bkg, sig = _names(h, kinds, "background"), _names(h, kinds, "signal")
    paths: list[str] = []
    for region in REGIONS:
        parts = {d: region_mt(h, d, plane, region, wp, full.parents) for d in bkg + sig}
        fig, ax = plt.subplots(figsize=(10, 9))
        edges = h.axes["mt"].edges
        _spectrum(ax, edges, _background_parts(parts, bkg), _signal_parts(parts, sig, kinds), True,
                  st.per_gev_label())
        ax.set_xlabel(st.AXIS_LABELS["mt"])
        title = (f"{st.PLANE_NAMES.get(plane, plane)}, {REGION_TEXT[region]}\n"
                 f"(x0, y0) = ({wp[0]:.3f}, {wp[1]:.3f}); {st.OVERFLOW_NOTE}")
        st.legend_inside(ax, ncol=2, fontsize=13, title=title, title_fontsize=13)
        st.cms_label(ax, style)
        paths += st.save(fig, outdir, f"mt_{plane}_region{region}", style)
    return paths


def closure_numbers(inputs, datasets: dict, wp, plane: str, index: dict | None = None) -> dict:
    """What the closure plot of ``plane`` shows, per fit bin (the cards' M_T groups from ``index``;
    without it, per M_T bin): ``n_B``, ``nhat_B`` (background MC), their uncertainties and the
    relative non-closure ``u`` (SP: the datacards' kappa - 1 of that bin; VP: the measured |delta|)."""
    inputs = StatInputs.of(inputs)
    y = region_yields(inputs.xy_mt, datasets, wp, plane=plane, which="background", parents=inputs.parents)
    groups = (index or {}).get("mt_groups")
    t = abcd_from_yields(y.merged(groups) if groups else y)
    n = len(t.n_B)
    u = np.full(n, np.nan)
    source = None
    if plane == "SP" and index and index.get("nonclosure") is not None and len(index["nonclosure"]) == n:
        u = np.asarray(index["nonclosure"], float)
        source = f"non-closure unc. (datacards, {index.get('nonclosure_method', 'max')})"
    elif plane != "SP":
        u = np.abs(np.asarray(t.delta, float))
        source = r"non-closure $|\delta|$ (measured)"
    return {"table": t, "edges": np.asarray(t.edges, float), "n_B": np.asarray(t.n_B, float),
            "sigma_B": np.sqrt(np.asarray(t.var_B, float)), "nhat_B": np.asarray(t.nhat_B, float),
            "sigma_nhat_B": np.asarray(t.sigma_nhat_B, float), "u": u, "u_source": source}


def plot_closure(inputs, datasets: dict, wp, outdir: Path, plane: str = "SP", index: dict | None = None,
                 style=None) -> list[str]:
    """The ABCD closure in ``plane`` (``closure_<plane>``): per M_T bin the background MC in region B
    (points) against the prediction n_A n_D / n_C (line, its statistical band, and the band with the
    non-closure added in quadrature), events/GeV, with the ratio observed / predicted below."""
    style = style or st.DEFAULT
    plt = st.pyplot()
    c = closure_numbers(inputs, datasets, wp, plane, index)
    t, edges = c["table"], c["edges"]
    w = np.diff(edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    nhat = np.where(np.isfinite(c["nhat_B"]), c["nhat_B"], np.nan)
    stat = c["sigma_nhat_B"]
    u = np.where(np.isfinite(c["u"]), c["u"], 0.0)
    tot = np.sqrt(stat**2 + (u * nhat) ** 2)
    fig, (ax, rax) = plt.subplots(2, 1, figsize=(10, 10), gridspec_kw={"height_ratios": (3, 1), "hspace": 0.06},
                                  sharex=True)
    if c["u_source"] is not None:
        ax.stairs((nhat + tot) / w, edges, baseline=np.clip(nhat - tot, 0, None) / w, fill=True, color="#f89c20",
                  alpha=0.45, label=f"stat. $\\oplus$ {c['u_source']}")
    ax.stairs((nhat + stat) / w, edges, baseline=np.clip(nhat - stat, 0, None) / w, fill=True, facecolor="none",
              edgecolor="#5790fc", hatch="////", linewidth=0, label="prediction stat. unc.")
    ax.stairs(nhat / w, edges, color="#5790fc", linewidth=2.5, label=r"prediction $n_A n_D / n_C$", gid="nhat_B")
    ax.errorbar(centres, c["n_B"] / w, yerr=c["sigma_B"] / w, xerr=w / 2, fmt="o", color="black", ms=7,
                label=r"observed $n_B$ (background MC)", gid="n_B")
    nopred = ~np.isfinite(c["nhat_B"])
    for a in (ax, rax):
        for i in np.flatnonzero(nopred):
            a.axvspan(edges[i], edges[i + 1], color="0.85", zorder=0,
                      label="no prediction ($n_C$ = 0)" if (a is ax and i == np.flatnonzero(nopred)[0]) else None)
    vals = np.concatenate([(c["n_B"] / w), nhat / w])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size:
        if st.log_range_needed(vals, 20):
            ax.set_yscale("log")
            ax.set_ylim(vals.min() / 5, vals.max() * 3)
        else:
            ax.set_ylim(0, vals.max() * 1.4)
    ax.set_ylabel(st.per_gev_label())
    chi2 = "n/a" if not np.isfinite(t.chi2) else f"{t.chi2:.2f}/{t.ndf}, p = {t.pvalue:.3f}"
    title = (f"ABCD closure, {st.PLANE_NAMES.get(plane, plane)}\n(x0, y0) = ({wp[0]:.3f}, {wp[1]:.3f}); "
             f"$\\chi^2$/ndf = {chi2}")
    st.legend_inside(ax, fontsize=13, title=title, title_fontsize=13)
    st.cms_label(ax, style, data=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = c["n_B"] / nhat
        rerr = c["sigma_B"] / nhat
        rstat, rtot = stat / nhat, tot / nhat
    if c["u_source"] is not None:
        rax.stairs(1 + rtot, edges, baseline=1 - rtot, fill=True, color="#f89c20", alpha=0.45)
    rax.stairs(1 + rstat, edges, baseline=1 - rstat, fill=True, facecolor="none", edgecolor="#5790fc",
               hatch="////", linewidth=0)
    rax.axhline(1.0, color="#5790fc", linewidth=1.5)
    rax.errorbar(centres, ratio, yerr=rerr, xerr=w / 2, fmt="o", color="black", ms=6, gid="ratio")
    ok = np.isfinite(ratio) & np.isfinite(rerr)
    spread = float(np.max(np.abs(ratio[ok] - 1) + rerr[ok])) if ok.any() else 1.0
    half = float(np.clip(1.25 * spread, 0.1, 4.0))  # zoom on a good closure, up to 0..5 for a bad one
    lo, hi = max(0.0, 1 - half), 1 + half
    rax.set_ylim(lo, hi)
    for x, r in zip(centres, ratio):
        if np.isfinite(r) and r > hi:
            rax.annotate("", xy=(x, hi * 0.97), xytext=(x, hi * 0.75), arrowprops={"arrowstyle": "->",
                                                                                   "color": "black"})
    rax.set_ylabel("obs. / pred.", fontsize=18)
    rax.set_xlabel(f"{st.AXIS_LABELS['mt']} ({st.OVERFLOW_NOTE})", fontsize=20)
    rax.set_xlim(edges[0], edges[-1])
    return st.save(fig, outdir, f"closure_{plane}", style)


def plot_xy_plane(output: dict, outdir: Path, wp: tuple[float, float], style=None) -> list[str]:
    """The X-Y score plane of SP at ``wp`` (``xy_plane_SP_background``, ``xy_plane_SP_signal``):
    weighted events per (X, Y) bin, log colour scale, the WP lines and the four regions named."""
    style = style or st.DEFAULT
    plt = st.pyplot()
    h = output["hists"]["xy_mt"]
    kinds = output["datasets"]
    paths: list[str] = []
    for kind in ("background", "signal"):
        names = _names(h, kinds, kind)
        if not names:
            continue
        vals = sum(h[{"dataset": d, "plane": "SP"}].project("x", "y").values() for d in names)
        fig, ax = plt.subplots(figsize=st.MAP_SIZE)
        pos = vals[vals > 0]
        norm = LogNorm(vmin=pos.min(), vmax=max(pos.max(), pos.min() * 10)) if pos.size else None
        im = ax.pcolormesh(h.axes["x"].edges, h.axes["y"].edges, np.where(vals > 0, vals, np.nan).T, norm=norm,
                           cmap="viridis")
        fig.colorbar(im, ax=ax,
                     pad=0.02).set_label("Events / bin" + ("" if kind == "background" else " (all signal points)"))
        ax.axvline(wp[0], color="red", linewidth=2)
        ax.axhline(wp[1], color="red", linewidth=2)
        box = {"boxstyle": "round", "facecolor": "white", "alpha": 0.85}
        for region, (x, y) in {"A": ((1 + wp[0]) / 2, wp[1] / 2), "B": ((1 + wp[0]) / 2, (1 + wp[1]) / 2),
                               "C": (wp[0] / 2, wp[1] / 2), "D": (wp[0] / 2, (1 + wp[1]) / 2)}.items():
            ax.text(x, y, region, ha="center", va="center", fontsize=20, fontweight="bold", bbox=box)
        ax.set_xlabel(st.AXIS_LABELS["x"])
        ax.set_ylabel(st.AXIS_LABELS["y"])
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        what = "background (all MC)" if kind == "background" else "signal (all points)"
        ax.text(0.0, -0.16, f"{st.PLANE_NAMES['SP']}, {what}; WP (x0, y0) = ({wp[0]:.3f}, {wp[1]:.3f})",
                transform=ax.transAxes, fontsize=15)
        st.cms_label(ax, style, fontsize=st.SMALL_LABEL)
        paths += st.save(fig, outdir, f"xy_plane_SP_{kind}", style)
    return paths


def _sum_kind(h, kinds: dict, kind: str):
    names = _names(h, kinds, kind)
    if not names:
        return None
    return sum((h[{"dataset": d}] for d in names[1:]), h[{"dataset": names[0]}])


CONTROLS = (("met", {}, "control_met", "met"), ("rt", {}, "control_rt", "rt"),
            ("dphi_min", {}, "control_dphi_min", "dphi_min"), ("jet_pt", {"jet": "J0"}, "control_j0_pt", "pt"),
            ("jet_pt", {"jet": "J1"}, "control_j1_pt", "pt"))


def plot_controls(output: dict, outdir: Path, style=None) -> list[str]:
    """Control distributions after the preselection, one figure each (``control_met``, ``control_rt``,
    ``control_dphi_min``, ``control_j0_pt``, ``control_j1_pt``: backgrounds stacked by process, each
    signal a line, events per bin width), and the primary Lund-plane density of J0 and J1
    (``lund_plane_background``, ``lund_plane_signal``, each normalised to unit area, and
    ``lund_plane_ratio``, signal / background)."""
    style = style or st.DEFAULT
    plt = st.pyplot()
    hists, kinds = output["hists"], output["datasets"]
    bkg, sig = _names(hists["met"], kinds, "background"), _names(hists["met"], kinds, "signal")
    paths: list[str] = []
    for name, sel, fname, axis in CONTROLS:
        h = hists[name]
        parts = {d: h[{"dataset": d, **sel}] for d in bkg + sig}
        edges = h.axes[axis].edges
        width = float(np.diff(edges)[0])
        unit = st.AXIS_LABELS[axis].rpartition("[")[2].rstrip("]") if "[" in st.AXIS_LABELS[axis] else ""
        fig, ax = plt.subplots(figsize=(10, 9))
        _spectrum(ax, edges, _background_parts(parts, bkg), _signal_parts(parts, sig, kinds), False,
                  st.per_gev_label(width, unit))
        xlabel = st.AXIS_LABELS[axis]
        if sel.get("jet"):
            xlabel = xlabel.replace("p_{T}", f"p_{{T}}^{{{sel['jet']}}}")
        ax.set_xlabel(xlabel)
        st.legend_inside(ax, ncol=2, fontsize=13, title="after the preselection", title_fontsize=13)
        st.cms_label(ax, style)
        paths += st.save(fig, outdir, fname, style)

    dens = {}
    for kind in ("background", "signal"):
        h = _sum_kind(hists["lund_plane"], kinds, kind)
        if h is None or h.values().sum() <= 0:
            continue
        dens[kind] = (h.values() / h.values().sum(), h.axes[0].edges, h.axes[1].edges)
    for kind, (d, xe, ye) in dens.items():
        fig, ax = plt.subplots(figsize=st.MAP_SIZE)
        pos = d[d > 0]
        im = ax.pcolormesh(xe, ye, np.where(d > 0, d, np.nan).T, cmap="viridis",
                           norm=LogNorm(vmin=pos.min(), vmax=pos.max()))
        fig.colorbar(im, ax=ax, pad=0.02).set_label("fraction of splittings / bin")
        ax.set_xlabel(st.AXIS_LABELS["ln_inv_delta"])
        ax.set_ylabel(st.AXIS_LABELS["ln_kt"])
        ax.text(0.03, 0.95, f"primary Lund plane, J0 + J1\n{kind}" + (" (all MC)" if kind == "background" else
                " (all points)"), transform=ax.transAxes, va="top", fontsize=15,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85})
        st.cms_label(ax, style, lumi=False, fontsize=st.SMALL_LABEL)
        paths += st.save(fig, outdir, f"lund_plane_{kind}", style)
    if len(dens) == 2:
        (b, xe, ye), (s, _, _) = dens["background"], dens["signal"]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where((b > 0) & (s > 0), s / b, np.nan)
        fig, ax = plt.subplots(figsize=st.MAP_SIZE)

        fin = r[np.isfinite(r)]
        span = float(np.max(np.abs(np.log10(fin)))) if fin.size else 1.0
        span = max(span, 0.1)
        im = ax.pcolormesh(xe, ye, r.T, cmap="RdBu_r", norm=LogNorm(vmin=10**-span, vmax=10**span))
        fig.colorbar(im, ax=ax, pad=0.02).set_label("signal / background (unit-area densities)")
        ax.set_xlabel(st.AXIS_LABELS["ln_inv_delta"])
        ax.set_ylabel(st.AXIS_LABELS["ln_kt"])
        ax.text(0.03, 0.95, "primary Lund plane, J0 + J1\nsignal / background", transform=ax.transAxes, va="top",
                fontsize=15, bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85})
        st.cms_label(ax, style, lumi=False, fontsize=st.SMALL_LABEL)
        paths += st.save(fig, outdir, "lund_plane_ratio", style)
    return paths


NO_EVENTS = "n/a (no events)"


def verdict_lines(verdict: dict | None, refused: str | None = None) -> list[str]:
    """The first lines of ``summary.md``: is the run backed by its MC, in words."""
    if not verdict:
        return []
    if verdict.get("backed"):
        lines = [f"**Verdict: backed.** {verdict['text'][len('backed: '):].capitalize()}."]
    else:
        head = ("No datacards and no limits were written" if refused else
                "Cards, limits and figures were written anyway (allow_unbacked) and carry UNBACKED")
        lines = [f"**Verdict: UNBACKED.** {head}: the background MC does not back the working point."]
        lines += [f"- {r}" for r in verdict.get("reasons", [])]
    lines += [f"- caveat: {c}" for c in verdict.get("caveats", [])]
    return lines + [""]


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
        neffs = tab.get("n_eff")
        lines += [f"### {plane}", "",
                  "| M_T bin | n_B | nhat_B | delta | pull |" + (" N_eff A/B/C/D |" if neffs else ""),
                  "|---|---|---|---|---|" + ("---|" if neffs else "")]
        n = len(tab["n_b"])
        defined = tab.get("defined")
        n_undef = 0
        for i in range(n):
            n_b, nhat, delta, pull = (_num(tab[k][i]) for k in ("n_b", "nhat_b", "delta", "pull"))
            ok = (defined is None or bool(defined[i])) and nhat is not None and pull is not None
            last = i == n - 1
            mt = f"{tab['edges'][i]:.0f}-" + ("inf" if last else f"{tab['edges'][i + 1]:.0f}")
            if not ok:
                n_undef += 1
                cells = [NO_EVENTS if n_b is None else f"{n_b:.4g}",
                         "n/a (no events in C)" if nhat is None else f"{nhat:.4g}", NO_EVENTS, NO_EVENTS]
            else:
                cells = [NO_EVENTS if n_b is None else f"{n_b:.4g}", f"{nhat:.4g}",
                         "n/a (n_B = 0)" if delta is None else f"{delta:+.3f}", f"{pull:+.2f}"]
            if neffs:
                cells.append("/".join(f"{neffs[i][r]:.1f}" for r in REGIONS))
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


def observation_lines(index: dict | None, head: bool = False) -> list[str]:
    """What the cards' observation is, in words, from ``datacards/index.json`` (``index``).

    Pseudo-data (``--pseudo-data SEED``, :mod:`svjscout.datacards.pseudodata`) is labelled
    PSEUDO-DATA with its seed, the injected signal (strength and dataset, or none) and what region B
    of the signal plane holds, then its VP closure; Asimov and data say so. ``head``: the one line
    under the verdict at the top of ``summary.md``; otherwise the section before the fit
    validation (whose goodness of fit, pulls and impacts fit this observation)."""
    if not index:
        return []
    pseudo = index.get("pseudo_data")
    if pseudo:
        inj = (f"signal injected: {pseudo['inject']:g} x {pseudo['signal']}" if pseudo.get("inject")
               else "no signal injected (background only)")
        text = (f"**Observation: {PSEUDO_TAG}, NOT data.** Seed {pseudo['seed']}, {inj}; Poisson counts drawn from the "
                f"MC; region B of the signal plane: {pseudo.get('b_observation', 'n/a')}.")
        if head:
            return [text, ""]
        detail = []
        for ln in pseudo_lines(pseudo):  # its per-bin lines (indented) as a markdown list
            if ln.startswith("  "):
                detail += ([""] if detail and not detail[-1].startswith("- ") else []) + ["- " + ln.strip()]
            else:
                detail += ["", ln] if detail else [ln]
        return ["## Observation: " + PSEUDO_TAG, "", text, "", *detail, ""]
    if head:
        return []
    label = index.get("observation")
    if index.get("asimov"):
        what = "Asimov (the background MC's expectation; no data, no pseudo-data)"
    else:
        what = "DATA" + (" (region B of the signal plane unblinded)" if index.get("unblinded") else "")
    return ["## Observation", "", f"The cards' observation: {what}" + (f"; `{label}`" if label else "") + ".", ""]


def _config_lines(cfg, overrides: dict | None) -> list[str]:
    """The overrides of this run and the analysis cuts, as summary.md shows them."""
    lines = ["## Configuration", ""]
    if overrides:
        lines += ["Overrides of the job file (command line):", ""] + [f"- `{k}` = `{v!r}`" for k,
                                                                      v in overrides.items()]
    else:
        lines += ["No overrides of the job file."]
    if cfg is not None:
        cuts = cfg.analysis.cuts.model_dump()
        lines += ["", "Cuts: " + ", ".join(f"`{k}` {v:g}" for k, v in cuts.items()) + f"; M_T edges "
                  f"{[float(e) for e in cfg.analysis.mt_edges]} GeV; lumi {cfg.analysis.lumi:g} pb^-1.",
                  "", "Full resolved configuration, models (SHA-256), inputs and versions: `provenance.json`."]
        corr = cfg.analysis.corrections
        lines += ["", f"Corrections (docs/corrections.md): era `{corr.era}` ({corr.root} payloads); JEC "
                  f"{'on' if corr.jec else 'off'} (an identity JEC, as in the era `svjscout_sim` of our simulation, "
                  f"changes nothing and is skipped), type-1 MET {'on' if corr.type1_met else 'off'}."]
        sub = cfg.analysis.event_subset
        if sub is not None:
            lines += ["",
                      (f"Events: {sub.describe()} only (analysis.event_subset); MC yields scaled by "
                       f"1/{sub.fraction:g} to estimate the full sample's.")]
    return lines + [""]


def _skipped_lines(rep: dict) -> list[str]:
    skipped = rep.get("skipped", [])
    lines = ["", f"Skipped files: {len(skipped)}."] + [f"- {s['file']} ({s.get('stage', '?')}): {s['reason']}"
                                                      for s in skipped]
    ex = rep.get("executor") or {}
    if ex.get("workers_lost"):
        lines.append(f"- dask workers lost during the run: {ex['workers_lost']} "
                     f"({', '.join(map(str, ex['lost_workers']))});"
                     f" the {ex.get('tasks_rerun', 0)} task(s) they held ran again on other workers (executor.retries),"
                     " the histograms are complete")
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
        lines.append(text + "; normalised to the files processed" + (f". {lost['warning']}" if lost.get("warning")
                                                                     else ""))
    return lines


def _generated_cell(output: dict, dataset: str, lumi: float | None) -> str:
    """``N / xsec x lumi`` of a dataset's generated events (``-`` where the files do not record them
    or no luminosity is known)."""
    info = output.get("report", {}).get("datasets", {}).get(dataset, {})
    n, xsec = info.get("generated"), info.get("xsec")
    if n is None:
        return "-"
    return f"{n:.0f} / {xsec * lumi:.3g}" if xsec and lumi else f"{n:.0f} / -"


def write_summary(outdir: Path, job_name: str, output: dict, wp, wp_source: str, scan_row: dict | None,
                  closure: dict, limits: dict | None, index: dict | None, timings: dict, cfg=None,
                  overrides: dict | None = None, validation: dict | None = None, verdict: dict | None = None,
                  refused: str | None = None) -> Path:
    """``summary.md`` of a run; ``verdict`` (backed or not, reasons, caveats) heads it, and with
    ``refused`` (no cards: the MC does not back the working point) it says why instead of limits."""
    rep = output.get("report", {})
    lines = [f"# svjscout run: {job_name}", ""]
    lines += verdict_lines(verdict, refused)
    lines += observation_lines(index, head=True)
    lines += [f"svjscout {__version__}. Every region-split output (histograms.root, "
              f"mt_abcd, plots, cards) is at the working point (x0, y0) = ({wp[0]:.3f}, {wp[1]:.3f}) ({wp_source}).",
              ""]
    lines += _config_lines(cfg, overrides)
    lines += ["## Inputs", "", "| dataset | kind | files | events | xsec [pb] | sumw |", "|---|---|---|---|---|---|"]
    for ds, info in sorted(output["datasets"].items()):
        lines.append(f"| {ds} | {info['kind']} | {len(rep.get('files', {}).get(ds, []))} | "
                     f"{rep.get('events', {}).get(ds, 0)} | {info.get('xsec') or '-'} | {info.get('sumw') or '-'} |")
    lines += _skipped_lines(rep)
    counts = output.get("counts", {})
    lines += ["", "Counted, never filled: " + ", ".join(
        f"{k} = {sum(c.get(k, 0) for c in counts.values())}"
        for k in ("not_in_subset", "nonfinite_candidates", "nonfinite_events", "fewer_than_two_jets", "not_clustered",
                  "chunks_without_selected"))
        + " (not_in_subset: outside analysis.event_subset, not in the cutflow; fewer_than_two_jets: among the events"
        " clustered; not_clustered: rejected by the prefilter)."]
    quality = output.get("data_quality", {})  # processors/dataquality.py, docs/dataquality.md
    if quality:
        lines += ["", "Data quality (docs/dataquality.md): " + ", ".join(
            f"{k} = {sum(q.get(k, 0) for q in quality.values())}" for k in next(iter(quality.values())))
            + " (hlt_emulated: no trigger bit in the file, the trigger row's H_T emulation decides; no_vertices: "
            "good_vertex not applied; chs_not_applied: no vertex index, no CHS)."]
    table = cutflow_table(output)
    if table:
        cuts = list(next(iter(table.values())))
        head = ["generated (Runs)"] + [f"{c} (implied)" if c == "prefilter" else c for c in cuts]
        lines += ["", "## Cutflow (raw events / weighted)", "", "| dataset | " + " | ".join(head) + " |",
                  "|---|" + "---|" * len(head)]
        for ds, row in table.items():
            lines.append(f"| {ds} | {_generated_cell(output, ds, cfg.analysis.lumi if cfg is not None else None)} | "
                         + " | ".join(f"{row[c]['raw']:.0f} / {row[c]['weighted']:.3g}" for c in cuts) + " |")
        lines += ["", "generated (Runs): the events generated (the files' genEventCount) and xsec x lumi; `all` "
                  "counts the events in the files, which for a skimmed file (the embedded backgrounds: the "
                  "preselected copies only) is already the preselection, so every row of it reads the same."]
        if "prefilter" in cuts:
            lines += ["", ROW_NOTE]
    lines += ["", "## Working point", "", f"(x0, y0) = ({wp[0]:.3f}, {wp[1]:.3f}) ({wp_source})."]
    if scan_row:
        lines += ["", "| metric | value |",
                  "|---|---|"] + [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
                                                          for k, v in scan_row.items()]
    lines += ["", "## Closure per fit bin (background MC" + (", half 'quote'" if (verdict or {}).get("split") else "")
              + ")", "", "Fit bins = closure bins: the statistics guard's M_T groups (datacards/guard.py); pulls are "
              "ln(nhat_B / n_B) over their error (log space, right for a handful of weighted events).", ""]
    lines += closure_table_lines(closure)
    if refused:
        lines += ["## No datacards, no limits", "", refused, "", "## Timing", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in timings.items()]
        path = outdir / "summary.md"
        path.write_text("\n".join(lines) + "\n")
        (outdir / "timings.json").write_text(json.dumps(timings, indent=1))
        return path
    lines += nonclosure_lines(index)
    lines += systematics_lines(index)
    lines += observation_lines(index)
    if validation and index.get("pseudo_data"):
        lines += [f"The fit validation below fits the {PSEUDO_TAG} observation (seed {index['pseudo_data']['seed']}).",
                  ""]
    if validation:
        lines += validation_lines(validation)
    lines += ["## Expected limits on the signal strength r (quick asymptotic CLs)", "",
              "| point | -2s | -1s | median | +1s | +2s | obs |", "|---|---|---|---|---|---|---|"]
    for point, lim in sorted(limits.items()):
        obs = lim.get("obs")
        lines.append(f"| {point} | " + " | ".join(f"{lim[k]:.3g}" for k in ("exp-2", "exp-1", "exp0", "exp+1", "exp+2"))
                     + f" | {'-' if obs is None else f'{obs:.3g}'} |")
    ws_note = (f"; beside each, its pyhf workspace `workspace.json` ({len(index['workspaces'])}, HistFactory JSON: "
               "signal yields x `signal_scale`, see `workspace_meta.json` and docs/datacards.md)"
               if index.get("workspaces") else "")
    lines += ["", f"Datacards: {len(index.get('cards', index.get('points', [])))} written under `datacards/` "
              f"(see `datacards/index.json`){ws_note}.", "", "## Timing", ""]
    lines += [f"- {k}: {v:.1f} s" for k, v in timings.items()]
    path = outdir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    (outdir / "timings.json").write_text(json.dumps(timings, indent=1))
    return path
