"""Figures of the fit validation (:mod:`.validation`), CMS style (:mod:`.style`), PDF and PNG.

* ``bias_POINT``: pulls of every fitted toy per injected r (toys at a boundary of r marked),
  median and 16/84 % quantiles, the counts of failed and boundary toys;
* ``gof_PLANE``: the saturated statistic of the toys, the observed value and the p-value; written
  only where a test is possible (not for the SP with B masked: a saturated model, ndf = 0);
* ``impacts_POINT``: the standard impacts plot (post-fit pull and constraint of each nuisance on
  the left, its impact on r when moved by +-1 post-fit sigma on the right), ranked;
* ``wp_stability``: the expected limit and the closure at the WP and its 8 neighbours (3 x 3);
* ``contamination``: the bias of the prediction per M_T bin and signal point against the non-closure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from .style import DEFAULT, PlotStyle, cms_label, pyplot, save


def plot_bias(point: str, res: Mapping, outdir, style: PlotStyle = DEFAULT) -> list[str]:
    """Pulls of every fitted toy per injection: toys at a boundary of r stacked in another colour
    (their pull is a bound), median and 16/84 % quantiles as lines, the counts in the legend; an
    injection without fitted toys says so in its panel."""
    plt = pyplot()
    inj = res["injection"]
    n = max(len(inj), 1)
    fig, axes = plt.subplots(1, n, figsize=(8 * n, 7), squeeze=False)
    if not inj:
        ax = axes[0][0]
        ax.axis("off")
        why = "; ".join(res.get("skipped_injections", [])) or "no injection requested"
        ax.text(0.5, 0.5, f"{point}: no injection test\n{why}", ha="center", va="center", fontsize=15, wrap=True,
                transform=ax.transAxes)
        return save(fig, outdir, f"bias_{point}", style)
    bins = np.linspace(-4, 4, 33)
    for ax, r in zip(axes[0], inj):
        p = np.asarray(r["pulls"], float)
        at_b = np.asarray(r.get("pull_at_boundary", [False] * len(p)), bool)
        lab = r.get("label") or f"r = {r['r_inj']:.3g}"
        title = f"{point}\n$r_{{inj}}$ = {r['r_inj']:.3g} ({lab})"
        if len(p) == 0:
            ax.text(0.5, 0.5, f"no fitted toy\n({r.get('failed', r['toys'])} of {r['toys']} fits failed)",
                    ha="center", va="center", fontsize=16, transform=ax.transAxes)
            ax.set_title(title, fontsize=15)
            ax.set_xlim(-4, 4)
            ax.set_xlabel(r"pull $(\hat{r} - r_{inj}) / \sigma_r$")
            cms_label(ax, style, fontsize=16)
            continue
        pc = np.clip(p, -3.99, 3.99)
        ax.hist([pc[~at_b], pc[at_b]], bins=bins, histtype="stepfilled", stacked=True,
                color=["#92dadd", "#e76300"], edgecolor="black", linewidth=1,
                label=[f"fitted toys ({int((~at_b).sum())})",
                       f"fit at a boundary of r ({int(at_b.sum())}; pull is a bound)"])
        pu = r["pull"]
        if pu.get("median") is not None:
            ax.axvline(pu["median"], color="#e42536", linewidth=2.5,
                       label=f"median {pu['median']:+.2f} $\\pm$ {pu['median_err']:.2f}")
        if pu.get("q16") is not None:
            for q in ("q16", "q84"):
                ax.axvline(pu[q], color="#e42536", linewidth=1.5, linestyle="--",
                           label="16 / 84 % quantiles" + (" (* a bound)" if any(pu.get("censored", {}).get(k)
                                                                              for k in ("q16", "q84")) else "")
                           if q == "q16" else None)
        if pu.get("mean") is not None:
            ax.plot([], [], " ", label=f"mean {pu['mean']:+.2f}, sd {pu['width']:.2f}")
        ax.plot([], [], " ",
                label=f"{r['toys']} toys: {r.get('failed', 0)} failed, {r.get('at_boundary', 0)} at boundary")
        ax.plot([], [], " ", label=f"bias test: {r.get('bias', 'n/a')}")
        if (np.abs(p) >= 4).any():
            ax.plot([], [], " ", label=f"{int((np.abs(p) >= 4).sum())} pull(s) beyond $\\pm$4 in the edge bins")
        ax.set_xlabel(r"pull $(\hat{r} - r_{inj}) / \sigma_r$")
        ax.set_ylabel("toys / 0.25")
        ax.set_ylim(0, max(ax.get_ylim()[1] * 2.1, 1))
        ax.legend(fontsize=12, loc="upper left", title=title, title_fontsize=13)
        cms_label(ax, style, fontsize=16)
    return save(fig, outdir, f"bias_{point}", style)


def plot_gof(name: str, g: Mapping, outdir, style: PlotStyle = DEFAULT) -> list[str]:
    """The saturated statistic of the toys and the observed value; only for a test that exists
    (toys and ndf > 0): :func:`plot_validation` writes no figure otherwise."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 8))
    q = np.asarray(g.get("q_toys", []), float)
    top = 1.1 * max(float(g["q_obs"]), float(q.max()) if len(q) else 0.0, 1e-6)
    over = int(np.sum(q > top))
    ax.hist(q, bins=np.linspace(0.0, top, 41), histtype="stepfilled", color="#92dadd",
            label=f"toys from the fit ({len(q)})" + (f", {over} beyond the axis" if over else ""))
    ax.set_xlim(0.0, top)
    ax.axvline(g["q_obs"], color="#e42536", linewidth=2.5,
               label=f"observed q = {g['q_obs']:.3g}" + (
                   (f", p < {1 / len(q):.2g} (0 of {len(q)} toys)" if g["pvalue"] == 0 else f", p = {g['pvalue']:.3f}")
                   if g.get("pvalue") is not None else ""))
    ax.set_xlabel("saturated test statistic q")
    ax.set_ylabel("toys / bin")
    ndf = g.get("ndf")
    lo_hi = g.get("theta_range")
    title = (f"goodness of fit, {name}" + (f", ndf = {ndf}" if ndf is not None else "")
             + (f"\nnuisances in [{lo_hi[0]:g}, {lo_hi[1]:g}]" if lo_hi else ""))
    ax.set_ylim(0, max(ax.get_ylim()[1] * 1.4, 1))
    ax.legend(fontsize=15, loc="upper center", title=title, title_fontsize=15)
    cms_label(ax, style)
    tag = name.split()[0]
    return save(fig, outdir, f"gof_{tag}", style)


def plot_impacts(point: str, im: Mapping, outdir, style: PlotStyle = DEFAULT, top: int = 20) -> list[str]:
    plt = pyplot()
    rows = im["nuisances"][:top]
    n = len(rows)
    fig, (axp, axi) = plt.subplots(1, 2, figsize=(16, 2 + 0.55 * max(n, 1)), sharey=True,
                                   gridspec_kw={"width_ratios": [1, 1], "wspace": 0.05})
    y = np.arange(n)[::-1]
    for k, row in enumerate(rows):
        if row["kind"] == "lnN":
            axp.errorbar(row["value"], y[k], xerr=row["error"], fmt="o", color="black")
        else:  # rateParam: value / initial - 1, in units of its own error
            axp.errorbar(0.0, y[k], xerr=1.0, fmt="s", color="#9c9ca1")
    axp.axvspan(-1, 1, color="#b9ac70", alpha=0.25, label=r"prior $\pm 1\sigma$ (lnN)")
    axp.set_xlim(-2.5, 2.5)
    axp.set_xlabel(r"pull $\hat{\theta}$ (lnN); rateParams: $\pm 1\sigma$ post-fit")
    axp.set_yticks(y)
    axp.set_yticklabels([r["name"] for r in rows], fontsize=13)
    axp.set_ylabel("nuisance parameter (ranked by impact)", fontsize=16)
    axp.legend(fontsize=13, loc="lower left")
    up = [r["impact_up"] for r in rows]
    dn = [r["impact_down"] for r in rows]
    axi.barh(y, up, color="#e42536", alpha=0.8, label=r"$+1\sigma$")
    axi.barh(y, dn, color="#5790fc", alpha=0.8, label=r"$-1\sigma$")
    axi.axvline(0, color="black", linewidth=1)
    axi.set_xlabel(r"impact $\Delta\hat{r}$")
    axi.legend(fontsize=13, loc="lower right")
    axi.set_title(rf"{point}: $\hat{{r}}$ = {im['r']:.3g} $\pm$ {im['r_err']:.3g}", fontsize=16)
    cms_label(axp, style, fontsize=16)
    return save(fig, outdir, f"impacts_{point}", style)


def plot_wp_stability(rows, outdir, style: PlotStyle = DEFAULT) -> list[str]:
    plt = pyplot()
    grid = np.full((3, 3), np.nan)
    text = [["" for _ in range(3)] for _ in range(3)]
    xs, ys = sorted({r["x0"] for r in rows}), sorted({r["y0"] for r in rows})
    for r in rows:
        i, j = r["dy"] + 1, r["dx"] + 1
        if r.get("limit") is not None:
            grid[i, j] = r["limit"]
        d = r.get("delta")
        text[i][j] = (f"{r['limit']:.3g}" if r.get("limit") is not None else "n/a") + \
            (f"\n$\\delta$ {d:+.2f}" if d is not None else "") + \
            (f"\np {r['pvalue']:.2f}" if r.get("pvalue") is not None else "")
    fig, ax = plt.subplots(figsize=(10, 9))
    im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
    for i in range(3):
        for j in range(3):
            ax.text(j, i, text[i][j], ha="center", va="center", color="white" if i != 1 or j != 1 else "#ffd700",
                    fontsize=15, fontweight="bold" if (i, j) == (1, 1) else None)
    ax.set_xticks(range(3))
    ax.set_xticklabels([f"{v:.3f}" for v in xs])
    ax.set_yticks(range(3))
    ax.set_yticklabels([f"{v:.3f}" for v in ys])
    ax.set_xlabel("$x_0$")
    ax.set_ylabel("$y_0$")
    fig.colorbar(im, ax=ax, label="expected limit on r (median)")
    cms_label(ax, style, fontsize=16)
    return save(fig, outdir, "wp_stability", style)


def plot_contamination(cont: Mapping, mt_bins, outdir, style: PlotStyle = DEFAULT) -> list[str]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 8))
    first = next(iter(cont.values()))
    n = len(first["bias"])
    x = np.arange(n)
    ax.fill_between(np.arange(n + 1) - 0.5, 0, list(first["nonclosure"]) + [first["nonclosure"][-1]], step="post",
                    color="#b9ac70", alpha=0.4, label="non-closure (cards)")
    for name, c in cont.items():
        ax.plot(x, np.abs(c["bias"]), "o-", label=name)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(mt_bins[:n] if mt_bins else [str(i) for i in x], rotation=20, fontsize=13)
    ax.set_xlabel(r"$M_T$ bin [GeV]")
    ax.set_ylabel(r"|relative bias of $\hat{n}_B$| (signal at r = 1 in A, C, D)")
    ax.legend(fontsize=13)
    cms_label(ax, style)
    return save(fig, outdir, "contamination", style)


def plot_validation(res: Mapping, outdir, mt_bins=None, style: PlotStyle = DEFAULT) -> list[str]:
    """Every validation figure into ``outdir``; returns the written paths."""
    os.makedirs(outdir, exist_ok=True)
    paths = []
    for point, p in res["points"].items():
        paths += plot_bias(point, p, outdir, style)
        if p.get("impacts"):
            paths += plot_impacts(point, p["impacts"], outdir, style)
    for name, g in res["gof"].items():
        # no figure where no test is possible (an empty plane, a saturated model, no toys): the
        # reason is in validation.json ("no_figure_reason") and in the summary table
        if "error" not in g and g.get("pvalue") is not None and len(g.get("q_toys", [])):
            paths += plot_gof(name, g, outdir, style)
        else:
            g["figure"] = None
            g.setdefault("no_figure_reason", "no test possible: " + (g.get("error") or g.get("note") or "no toys"))
            tag = name.split()[0]
            for ext in ("pdf", "png"):  # a stale figure of an earlier run would contradict the summary
                stale = os.path.join(os.fspath(outdir), f"gof_{tag}.{ext}")
                if os.path.isfile(stale):
                    os.remove(stale)
    if res.get("wp_stability"):
        paths += plot_wp_stability(res["wp_stability"], outdir, style)
    if res.get("contamination"):
        paths += plot_contamination(res["contamination"], mt_bins, outdir, style)
    return paths
