"""Plots: scan heat maps and pass/fail maps, Brazil bands vs m_Z' per r_inv, 2D map of expected limits
(CMS style, PDF and PNG; see :mod:`.style`).

Example:
    >>> # paths = plot_limits(json.load(open("limits.json")), datasets, "plots/")
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm
from matplotlib.lines import Line2D

from . import style as st
from .style import pyplot

log = logging.getLogger(__name__)

_POINT_RE = re.compile(r"mz(?P<mz>[0-9.]+)_rinv(?P<rinv>[0-9.]+)")

# metric column -> (colour-bar label, colour map, kind): "seq" sequential, "div" diverging around 0
SCAN_METRICS = {
    "z_mean": (r"$\langle Z_A \rangle$ (mean expected significance)", "viridis", "seq"),
    "pvalue": (r"closure $\chi^2$ p-value", "viridis", "unit"),
    "delta_total": (r"closure of the fit bins' sum $\delta = \sum \hat{n}_B / \sum n_B - 1$", "RdBu_r", "div"),
    "pull_total": (r"closure pull of the fit bins' sum", "RdBu_r", "div"),
    "r_max": (r"signal contamination $r_{max}$", "viridis", "seq"),
    "neff_min": (r"smallest background $N_{eff}$ of any region and fit bin", "viridis", "seq"),
}
# rule column -> short name, in the order the pass/fail map reports the first failing rule
SCAN_RULES = {"in_bounds": "within bounds", "pass_guard": "statistics guard", "pass_pvalue": "p-value (plateau)",
              "pass_delta": r"$|\delta|$",
              "pass_pull": "|pull|", "pass_rmax": r"$r_{max}$"}


def _pyplot():
    return pyplot()


def _extent(gx, gy):
    dx = (gx[1] - gx[0]) / 2 if len(gx) > 1 else 0.0125
    dy = (gy[1] - gy[0]) / 2 if len(gy) > 1 else 0.0125
    return (gx[0] - dx, gx[-1] + dx, gy[0] - dy, gy[-1] + dy)


def _colour_range(z: np.ndarray, kind: str):
    """(vmin, vmax, extend) from the finite values: the 2-98 % quantiles, symmetric around 0 for
    diverging metrics, [0, 1] for p-values; never a degenerate range."""
    fin = z[np.isfinite(z)]
    if kind == "unit":
        return 0.0, 1.0, "neither"
    if not fin.size:
        return (-1.0, 1.0, "neither") if kind == "div" else (0.0, 1.0, "neither")
    lo, hi = np.quantile(fin, [0.02, 0.98])
    if kind == "div":
        a = max(abs(lo), abs(hi), 1e-3)
        lo, hi = -a, a
    elif hi - lo < 1e-12:
        lo, hi = lo - 0.5 * max(abs(lo), 1.0), hi + 0.5 * max(abs(hi), 1.0)
    ext = ("min" if fin.min() < lo else "neither", "max" if fin.max() > hi else "neither")
    extend = {("min", "max"): "both", ("min", "neither"): "min", ("neither", "max"): "max"}.get(ext, "neither")
    return float(lo), float(hi), extend


def _rule_threshold(result, col: str):
    """Levels (on the metric itself) where its rule cuts, for contour lines."""
    r = result.rules
    return {"pvalue": [r.p_min], "r_max": [r.r_max], "neff_min": [r.min_neff]}.get(col)


def _mark_chosen(ax, result):
    ax.plot(*result.best, marker="*", ms=24, color="red", mec="black", linestyle="none",
            label=f"chosen WP ({result.best[0]:.3f}, {result.best[1]:.3f})" + (", fallback" if result.fallback else ""))


def plot_scan_heatmaps(result, outdir: str | os.PathLike, style=None) -> list[str]:
    """The working-point scan over (x0, y0), one figure per metric and the pass/fail maps.

    ``scan_<metric>`` (``z_mean``, ``pvalue``, ``delta``, ``pull``, ``r_max``): the metric with a
    colour range from its finite values (symmetric around 0 for delta and pull), the rule's
    threshold as a contour line, the points that pass every rule and the chosen point.
    ``scan_failed_rules``: number of failed rules per point; ``scan_first_failed_rule``: the first
    rule that fails at each point (bounds, p-value plateau, delta, pull, r_max) or "passes all".

    Args:
        result: :class:`.scan.ScanResult`.
        outdir: output folder.
        style: :class:`.style.PlotStyle` (default: "Private Work", no luminosity).

    Returns:
        written paths (PDF and PNG of each figure).
    """
    style = style or st.DEFAULT
    plt = _pyplot()
    os.makedirs(outdir, exist_ok=True)
    paths: list[str] = []
    gx, gy = np.asarray(result.grid_x, float), np.asarray(result.grid_y, float)
    extent = _extent(gx, gy)
    X, Y = np.meshgrid(gx, gy, indexing="ij")
    ok = result.metric_grid("passes").astype(bool)
    plane = getattr(result.rules, "plane", "SP") + (f", {result.sample}" if getattr(result, "sample", "") else "")

    def _axes_common(fig, ax, im, label, extend="neither"):
        fig.colorbar(im, ax=ax, pad=0.02, extend=extend).set_label(label)
        ax.set_xlabel("$x_0$ (X score threshold)")
        ax.set_ylabel("$y_0$ (Y score threshold)")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        st.cms_label(ax, style, fontsize=st.SMALL_LABEL)

    for col, (label, cmap, kind) in SCAN_METRICS.items():
        z = result.metric_grid(col).astype(float)
        vmin, vmax, extend = _colour_range(z, kind)
        chosen = z[np.argmin(np.abs(gx - result.best[0])), np.argmin(np.abs(gy - result.best[1]))]
        # the chosen point's colour is its value
        if np.isfinite(chosen) and kind != "unit" and not vmin <= chosen <= vmax:
            vmin, vmax = min(vmin, float(chosen)), max(vmax, float(chosen))
            if kind == "div":
                vmin, vmax = -max(abs(vmin), abs(vmax)), max(abs(vmin), abs(vmax))
        fig, ax = plt.subplots(figsize=st.MAP_SIZE)
        cm = plt.get_cmap(cmap).copy()
        cm.set_bad("0.85")
        im = ax.imshow(np.ma.masked_invalid(z).T, origin="lower", extent=extent, aspect="auto", cmap=cm, vmin=vmin,
                       vmax=vmax)
        _axes_common(fig, ax, im, label, extend)
        handles = []
        levels = _rule_threshold(result, col)
        if levels and len(gx) > 1 and len(gy) > 1 and np.isfinite(z).sum() > 3:
            zf = np.where(np.isfinite(z), z, np.nan)
            try:
                ax.contour(X, Y, np.ma.masked_invalid(zf), levels=sorted(levels), colors="black", linewidths=2,
                           linestyles="--")
                handles.append(Line2D([], [], color="black", ls="--", lw=2,
                                      label="rule threshold (" + ", ".join(f"{v:g}" for v in levels) + ")"))
            except (ValueError, TypeError) as exc:  # pragma: no cover - degenerate grids
                log.debug("no contour for %s: %s", col, exc)
        if ok.any():
            ax.scatter(X[ok], Y[ok], s=14, facecolor="white", edgecolor="black", linewidth=0.5, marker="o",
                       label="passes all rules")
        _mark_chosen(ax, result)
        if not np.isfinite(z).all():
            handles.append(plt.Rectangle((0, 0), 1, 1, color="0.85", label="undefined (no events on one side)"))
        h0, l0 = ax.get_legend_handles_labels()
        ax.legend(h0 + handles, l0 + [h.get_label() for h in handles], loc="upper center",
                  bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=14, frameon=False,
                  title=f"working-point scan, {plane}, background MC" if col != "z_mean" else
                  f"working-point scan, {plane}", title_fontsize=14)
        paths += st.save(fig, outdir, f"scan_{col}", style)

    # number of failed rules
    nf = result.metric_grid("n_failed").astype(int)
    nmax = len(SCAN_RULES)
    fig, ax = plt.subplots(figsize=st.MAP_SIZE)
    colours = ["#1a9850"] + list(plt.get_cmap("Oranges")(np.linspace(0.3, 0.95, nmax)))
    cm = ListedColormap(colours)
    im = ax.imshow(nf.T, origin="lower", extent=extent, aspect="auto", cmap=cm,
                   norm=BoundaryNorm(np.arange(-0.5, nmax + 1.5), cm.N))
    _axes_common(fig, ax, im, "number of failed rules")
    im.colorbar.set_ticks(np.arange(nmax + 1))
    _mark_chosen(ax, result)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=14, frameon=False,
              title=f"working-point scan, {plane}: rules " + ", ".join(SCAN_RULES.values()), title_fontsize=13)
    paths += st.save(fig, outdir, "scan_failed_rules", style)

    # where each rule fails: one panel per rule
    rules = list(SCAN_RULES)
    fig, axes = plt.subplots(2, 4, figsize=(27, 13), sharex=True, sharey=True,
                             gridspec_kw={"hspace": 0.18, "wspace": 0.08})
    cm = ListedColormap(["#1a9850", "#d73027"])
    for ax, rule in zip(axes.ravel(), rules):
        failed = ~result.metric_grid(rule).astype(bool)
        ax.imshow(failed.T.astype(int), origin="lower", extent=extent, aspect="auto", cmap=cm, vmin=0, vmax=1)
        ax.set_title(f"{SCAN_RULES[rule]}: fails at {int(failed.sum())} / {failed.size}", fontsize=20)
        ax.plot(*result.best, marker="*", ms=20, color="white", mec="black", linestyle="none")
    for ax in axes.ravel()[len(rules):]:  # panels without a rule: no empty axes
        ax.axis("off")
    last = axes.ravel()[-1]
    last.legend(handles=[plt.Rectangle((0, 0), 1, 1, color="#1a9850", label="rule passes"),
                         plt.Rectangle((0, 0), 1, 1, color="#d73027", label="rule fails"),
                         plt.Line2D([], [], marker="*", ms=20, color="white", mec="black", linestyle="none",
                                    label=f"chosen WP ({result.best[0]:.3f}, {result.best[1]:.3f})"
                                    + (", fallback" if result.fallback else ""))],
                loc="center", fontsize=18, frameon=False, title=f"working-point scan, {plane}\n"
                f"{int(ok.sum())} / {ok.size} points pass all rules", title_fontsize=18)
    for col in range(axes.shape[1]):  # x labels on the lowest panel of each column that shows a rule
        shown = [ax for ax in axes[:, col] if ax.axison]
        if shown:
            shown[-1].tick_params(labelbottom=True)
            shown[-1].set_xlabel("$x_0$ (X score threshold)", fontsize=20)
    for ax in axes[:, 0]:
        ax.set_ylabel("$y_0$ (Y score threshold)", fontsize=20)
    # the CMS label above the panel titles: on an invisible axes spanning the top row
    left, right = axes[0, 0].get_position(), axes[0, 3].get_position()
    head = fig.add_axes((left.x0, left.y1 + 0.035, right.x1 - left.x0, 0.001))
    head.axis("off")
    st.cms_label(head, style, fontsize=st.SMALL_LABEL)
    paths += st.save(fig, outdir, "scan_rule_failures", style)
    return paths


def point_coordinates(point: str, datasets: Mapping[str, Mapping] | None = None) -> tuple[float, float]:
    """(m_Z' in GeV, r_inv) of a signal point, from ``datasets`` metadata or its name ``..mzM_rinvR``."""
    if datasets:
        for name, meta in datasets.items():
            if meta.get("kind") == "signal" and meta.get("mzprime") is not None and (
                name == point or point_name(name, meta) == point
            ):
                return float(meta["mzprime"]), float(meta["rinv"])
    m = _POINT_RE.search(point)
    if not m:
        raise ValueError(f"cannot read m_Z' and r_inv of signal point '{point}'")
    return float(m["mz"]), float(m["rinv"])


def point_name(dataset: str, meta: Mapping) -> str:
    """Card/point name ``svj_mz<M>_rinv<R>`` from metadata, else the dataset name."""
    mz, rinv = meta.get("mzprime"), meta.get("rinv")
    if mz is None or rinv is None:
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", dataset)
    return f"svj_mz{float(mz):g}_rinv{float(rinv):g}"


def _brazil(ax, mz: np.ndarray, q: dict, observed: bool) -> None:
    """Expected median with its 68 % / 95 % bands at each m_Z' (boxes around a lone point, bands
    between several), markers on the points, the observed limit when there is one."""
    green, yellow = "#607641", "#F5BB54"
    if len(mz) == 1:
        half = 0.08 * mz[0]
        xs = np.array([mz[0] - half, mz[0] + half])
        ax.fill_between(xs, q["exp-2"][0], q["exp+2"][0], color=yellow, label="expected $\\pm$2 s.d.")
        ax.fill_between(xs, q["exp-1"][0], q["exp+1"][0], color=green, label="expected $\\pm$1 s.d.")
        ax.plot(xs, [q["exp0"][0]] * 2, "k--", lw=2)
        ax.plot(mz, q["exp0"], "ko", mfc="white", ms=9, label="median expected", linestyle="none")
        ax.set_xlim(mz[0] - 4 * half, mz[0] + 4 * half)
    else:
        ax.fill_between(mz, q["exp-2"], q["exp+2"], color=yellow, label="expected $\\pm$2 s.d.")
        ax.fill_between(mz, q["exp-1"], q["exp+1"], color=green, label="expected $\\pm$1 s.d.")
        ax.plot(mz, q["exp0"], "k--o", mfc="white", ms=9, lw=2, label="median expected")
        pad = 0.08 * (mz[-1] - mz[0])
        ax.set_xlim(mz[0] - pad, mz[-1] + pad)
    if observed:
        ax.plot(mz, q["obs"], "k-o", ms=8, lw=2, label="observed")
    ax.set_xticks(mz)
    ax.set_xticklabels([f"{m:g}" for m in mz])


def plot_limits(limits: Mapping[str, Mapping], datasets: Mapping[str, Mapping] | None, outdir,
                style=None) -> list[str]:
    """Brazil plot of the limit on r vs m_Z' per r_inv, and a 2D (m_Z', r_inv) map of the median.

    ``limit_brazil_rinv<R>``: the expected median with its ±1 and ±2 s.d. bands at each m_Z' point
    (boxes around a point when it is alone), the observed limit if any, the line r = 1, the legend
    beside the axes. ``limit_map_exp0``: the median expected limit per (m_Z', r_inv) cell, values
    written in the cells, and the contour r = 1 where the grid has 2 x 2 neighbouring points.

    Args:
        limits: ``{point: {"exp-2", "exp-1", "exp0", "exp+1", "exp+2", "obs"}}`` (limits.json).
        datasets: dataset metadata to map points to (m_Z', r_inv) (may be None: parsed from names).
        outdir: output folder.
        style: :class:`.style.PlotStyle` (label, luminosity).

    Returns:
        written paths (PDF and PNG of each figure).
    """
    style = style or st.DEFAULT
    plt = _pyplot()
    os.makedirs(outdir, exist_ok=True)
    rows = []
    for point, lim in limits.items():
        try:
            mz, rinv = point_coordinates(point, datasets)
        except ValueError as exc:
            log.warning("skipping %s in limit plots: %s", point, exc)
            continue
        rows.append((mz, rinv, lim))
    paths: list[str] = []
    if not rows:
        log.warning("no limits to plot")
        return paths
    get = lambda lim, k: np.nan if lim.get(k) is None else float(lim[k])  # noqa: E731
    keys = ("exp-2", "exp-1", "exp0", "exp+1", "exp+2", "obs")
    for rinv in sorted({r[1] for r in rows}):
        sel = sorted((r for r in rows if r[1] == rinv), key=lambda r: r[0])
        mz = np.array([r[0] for r in sel])
        q = {k: np.array([get(r[2], k) for r in sel]) for k in keys}
        observed = bool(np.isfinite(q["obs"]).any())
        fig, ax = plt.subplots(figsize=(13, 9))
        _brazil(ax, mz, q, observed)
        ax.axhline(1.0, color="red", lw=2, label="r = 1 (theory cross section)")
        ax.set_yscale("log")
        vals = np.concatenate([q[k][np.isfinite(q[k]) & (q[k] > 0)] for k in keys] + [np.array([1.0])])
        ax.set_ylim(vals.min() / 3, vals.max() * 3)
        ax.set_xlabel(r"$m_{Z'}$ [GeV]")
        ax.set_ylabel(r"95% CL upper limit on $r = \sigma/\sigma_{th}$")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=16, frameon=False,
                  title=f"$r_{{inv}}$ = {rinv:g}\n" + ("asymptotic CLs" if observed
                                                       else "asymptotic CLs,\nbackground-only Asimov"),
                  title_fontsize=16, alignment="left")
        st.cms_label(ax, style, data=observed)
        paths += st.save(fig, outdir, f"limit_brazil_rinv{rinv:g}", style)

    mzs = sorted({r[0] for r in rows})
    rinvs = sorted({r[1] for r in rows})
    grid = np.full((len(mzs), len(rinvs)), np.nan)
    for mz, rinv, lim in rows:
        grid[mzs.index(mz), rinvs.index(rinv)] = get(lim, "exp0")
    fig, ax = plt.subplots(figsize=st.MAP_SIZE)
    finite = grid[np.isfinite(grid) & (grid > 0)]
    if finite.size:
        lo, hi = min(finite.min(), 0.9), max(finite.max(), 1.1)  # 1 always inside the colour range
        norm = LogNorm(vmin=lo, vmax=hi)
    else:
        norm = None
    cm = plt.get_cmap("viridis").copy()
    cm.set_bad("0.9")
    im = ax.pcolormesh(np.arange(len(mzs) + 1), np.arange(len(rinvs) + 1), np.ma.masked_invalid(grid.T), norm=norm,
                       cmap=cm)
    for i, _ in enumerate(mzs):
        for j, _ in enumerate(rinvs):
            v = grid[i, j]
            text = f"{v:.2g}" if np.isfinite(v) else "no point"
            colour = "0.4" if not np.isfinite(v) else ("black" if norm is not None and norm(v) > 0.6 else "white")
            ax.text(i + 0.5, j + 0.5, text, ha="center", va="center", color=colour, fontsize=18)
    ax.set_xticks(np.arange(len(mzs)) + 0.5, [f"{m:g}" for m in mzs])
    ax.set_yticks(np.arange(len(rinvs)) + 0.5, [f"{r:g}" for r in rinvs])
    ax.minorticks_off()
    ax.set_xlabel(r"$m_{Z'}$ [GeV]")
    ax.set_ylabel(r"$r_{inv}$")
    fig.colorbar(im, ax=ax, pad=0.02).set_label("median expected 95% CL limit on r")
    # contour r = 1 through the cell centres, where 2 x 2 neighbouring points exist
    quads = (np.isfinite(grid[:-1, :-1]) & np.isfinite(grid[1:, :-1]) & np.isfinite(grid[:-1, 1:])
             & np.isfinite(grid[1:, 1:])) if len(mzs) > 1 and len(rinvs) > 1 else np.zeros((0, 0), bool)
    note = None
    if quads.any() and np.nanmin(grid) < 1 < np.nanmax(grid):
        cx, cy = np.meshgrid(np.arange(len(mzs)) + 0.5, np.arange(len(rinvs)) + 0.5, indexing="ij")
        ax.contour(cx, cy, np.ma.masked_invalid(np.log(grid)), levels=[0.0], colors="red", linewidths=3)
        ax.plot([], [], color="red", lw=3, label="r = 1 (expected exclusion)")
    elif quads.any():
        note = "r = 1 not crossed: no contour"
    else:
        note = r"no r = 1 contour: needs 2 $\times$ 2 neighbouring points"
    if note is None:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=15, frameon=False)
    else:
        ax.text(0.0, -0.16, note, transform=ax.transAxes, fontsize=15)
    st.cms_label(ax, style, data=False, fontsize=st.SMALL_LABEL)
    paths += st.save(fig, outdir, "limit_map_exp0", style)
    return paths
