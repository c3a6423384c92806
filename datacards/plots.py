"""Plots: scan heat maps, Brazil bands vs m_Z' per r_inv, 2D map of expected limits (PNG, Agg).

Example:
    >>> # paths = plot_limits(json.load(open("limits.json")), datasets, "plots/")
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

import numpy as np

log = logging.getLogger(__name__)

_POINT_RE = re.compile(r"mz(?P<mz>[0-9.]+)_rinv(?P<rinv>[0-9.]+)")

SCAN_METRICS = {
    "z_mean": r"$\langle Z_A \rangle$",
    "pvalue": r"$\chi^2$ p-value",
    "plateau": r"p-value plateau (point + 8 neighbours)",
    "delta": r"non-closure $\delta$",
    "pull": "pull",
    "r_max": r"$r_{max}$",
    "passes": "passes all rules",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(plt):
    try:
        import mplhep

        plt.style.use(mplhep.style.CMS)
    except Exception as exc:  # pragma: no cover - style is cosmetic
        log.debug("mplhep style not applied: %s", exc)


def plot_scan_heatmaps(result, outdir: str | os.PathLike) -> list[str]:
    """One heat map per scan metric over (x0, y0), the chosen point marked with a star.

    Args:
        result: :class:`.scan.ScanResult`.
        outdir: output folder.

    Returns:
        written PNG paths (``scan_<metric>.png``).
    """
    plt = _pyplot()
    os.makedirs(outdir, exist_ok=True)
    paths = []
    gx, gy = result.grid_x, result.grid_y
    dx = (gx[1] - gx[0]) / 2 if len(gx) > 1 else 0.0125
    dy = (gy[1] - gy[0]) / 2 if len(gy) > 1 else 0.0125
    extent = (gx[0] - dx, gx[-1] + dx, gy[0] - dy, gy[-1] + dy)
    with plt.style.context("default"):
        _style(plt)
        for col, label in SCAN_METRICS.items():
            z = result.metric_grid(col).astype(float)
            fig, ax = plt.subplots(figsize=(9, 7.5))
            im = ax.imshow(z.T, origin="lower", extent=extent, aspect="auto", cmap="viridis")
            fig.colorbar(im, ax=ax, label=label)
            ok = result.metric_grid("passes").astype(bool)
            if ok.any() and col != "passes":
                X, Y = np.meshgrid(gx, gy, indexing="ij")
                ax.scatter(X[ok], Y[ok], s=6, c="white", marker=".", label="passes")
            ax.plot(*result.best, marker="*", ms=20, color="red", mec="black",
                    label=f"chosen ({result.best[0]:.3f}, {result.best[1]:.3f})" + (" fallback" if result.fallback else ""))
            ax.set_xlabel("$x_0$ (X score threshold)")
            ax.set_ylabel("$y_0$ (Y score threshold)")
            ax.legend(loc="lower left", fontsize=12)
            p = os.path.join(outdir, f"scan_{col}.png")
            fig.savefig(p, dpi=80, bbox_inches="tight")
            plt.close(fig)
            paths.append(p)
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


def plot_limits(limits: Mapping[str, Mapping], datasets: Mapping[str, Mapping] | None, outdir) -> list[str]:
    """Brazil band of the limit on r vs m_Z' per r_inv, and a 2D (m_Z', r_inv) map of exp0.

    Args:
        limits: ``{point: {"exp-2", "exp-1", "exp0", "exp+1", "exp+2", "obs"}}`` (limits.json).
        datasets: dataset metadata to map points to (m_Z', r_inv) (may be None: parsed from names).
        outdir: output folder.

    Returns:
        written PNG paths (``limit_brazil_rinv<R>.png`` per r_inv, ``limit_map_exp0.png``).
    """
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
    with plt.style.context("default"):
        _style(plt)
        for rinv in sorted({r[1] for r in rows}):
            sel = sorted((r for r in rows if r[1] == rinv), key=lambda r: r[0])
            mz = np.array([r[0] for r in sel])
            q = {k: np.array([get(r[2], k) for r in sel]) for k in ("exp-2", "exp-1", "exp0", "exp+1", "exp+2", "obs")}
            fig, ax = plt.subplots(figsize=(9, 7.5))
            ax.fill_between(mz, q["exp-2"], q["exp+2"], color="#F5BB54", label=r"95% expected")
            ax.fill_between(mz, q["exp-1"], q["exp+1"], color="#607641", label=r"68% expected")
            ax.plot(mz, q["exp0"], "k--", label="median expected")
            if np.isfinite(q["obs"]).any():
                ax.plot(mz, q["obs"], "k-o", label="observed")
            ax.axhline(1.0, color="red", lw=1)
            ax.set_yscale("log")
            ax.set_xlabel(r"$m_{Z'}$ [GeV]")
            ax.set_ylabel(r"95% CL upper limit on $\sigma/\sigma_{th}$")
            ax.set_title(rf"$r_{{inv}} = {rinv:g}$", fontsize=16)
            ax.legend(fontsize=13)
            p = os.path.join(outdir, f"limit_brazil_rinv{rinv:g}.png")
            fig.savefig(p, dpi=80, bbox_inches="tight")
            plt.close(fig)
            paths.append(p)

        mzs = sorted({r[0] for r in rows})
        rinvs = sorted({r[1] for r in rows})
        grid = np.full((len(mzs), len(rinvs)), np.nan)
        for mz, rinv, lim in rows:
            grid[mzs.index(mz), rinvs.index(rinv)] = get(lim, "exp0")
        fig, ax = plt.subplots(figsize=(9, 7.5))
        from matplotlib.colors import LogNorm

        finite = grid[np.isfinite(grid) & (grid > 0)]
        norm = LogNorm(vmin=finite.min(), vmax=max(finite.max(), finite.min() * 1.01)) if finite.size else None
        im = ax.pcolormesh(np.arange(len(mzs) + 1), np.arange(len(rinvs) + 1), grid.T, norm=norm, cmap="viridis")
        for i, _ in enumerate(mzs):
            for j, _ in enumerate(rinvs):
                if np.isfinite(grid[i, j]):
                    ax.text(i + 0.5, j + 0.5, f"{grid[i, j]:.2g}", ha="center", va="center", color="w", fontsize=11)
        ax.set_xticks(np.arange(len(mzs)) + 0.5, [f"{m:g}" for m in mzs])
        ax.set_yticks(np.arange(len(rinvs)) + 0.5, [f"{r:g}" for r in rinvs])
        ax.set_xlabel(r"$m_{Z'}$ [GeV]")
        ax.set_ylabel(r"$r_{inv}$")
        fig.colorbar(im, ax=ax, label="median expected limit on r")
        p = os.path.join(outdir, "limit_map_exp0.png")
        fig.savefig(p, dpi=80, bbox_inches="tight")
        plt.close(fig)
        paths.append(p)
    return paths
