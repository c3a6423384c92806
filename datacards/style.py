"""One place for the look of every figure: CMS label, process names and colours, axis labels, saving.

Every figure of a run (``jobs/report.py``) and of the datacards step (``datacards/plots.py``)
goes through :func:`new_figure`/:func:`cms_label`/:func:`save`:

* mplhep's CMS style, the experiment label ``CMS <Simulation> <label>`` (label "Private Work" by
  default, job key ``plots.label``), the luminosity in fb^-1 (job ``analysis.lumi`` is in pb^-1)
  and sqrt(s) = 13 TeV;
* human process names (:func:`process_label`) and one colour per process; signals are lines in
  colours and line styles that no background fill uses (:func:`signal_style`);
* every figure is written as ``NAME.pdf`` and ``NAME.png`` (``dpi`` >= 150), one file per figure.

:func:`record_figures` collects the figures saved while it is active (tests read their labels,
legends and plotted values back).

Example:
    >>> process_label("qcd_pt300to500")
    'QCD multijet'
    >>> signal_label({"mzprime": 2000.0, "rinv": 0.3})
    "$m_{Z'}$ = 2 TeV, $r_{inv}$ = 0.3"
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import matplotlib
import matplotlib.pyplot as plt
import mplhep
import numpy as np

log = logging.getLogger(__name__)

FORMATS = ("pdf", "png")

# (pattern on the dataset name, legend label, fill colour); CMS colour palette (mplhep cms6)
PROCESSES = (
    (re.compile(r"^qcd", re.I), "QCD multijet", "#5790fc"),
    (re.compile(r"^(ttbar|ttjets|tt)(_|$)", re.I), r"$t\bar{t}$", "#f89c20"),
    (re.compile(r"^(wjets|wlnu|w\+jets)", re.I), r"W($\ell\nu$)+jets", "#e42536"),
    (re.compile(r"^(zjets|znunu|z\+jets)", re.I), r"Z($\nu\nu$)+jets", "#964a8b"),
)
OTHER_COLOURS = ("#9c9ca1", "#7a21dd", "#a96b59", "#92dadd", "#b9ac70", "#717581")
# signals: lines, in colours that no background fill uses
SIGNAL_STYLES = (("black", "-"), ("#00a88f", "--"), ("#d6278f", "-."), ("#7f5200", ":"), ("#2b2b8c", (0, (5, 1, 1, 1))))

# axis name -> LaTeX label (the histograms carry plain-text labels, for the TH1 titles)
AXIS_LABELS = {
    "mt": r"$M_{T}$ [GeV]",
    "met": r"$p_{T}^{miss}$ [GeV]",
    "rt": r"$R_{T} = p_{T}^{miss}/M_{T}$",
    "dphi_min": r"$\Delta\phi_{min}$ [rad]",
    "pt": r"$p_{T}$ [GeV]",
    "ln_inv_delta": r"$\ln(1/\Delta)$",
    "ln_kt": r"$\ln(k_{T}/\mathrm{GeV})$",
    "x": "X score",
    "y": "Y score",
}
PLANE_NAMES = {"SP": "signal plane (SP)", "VP": "validation plane (VP)"}
OVERFLOW_NOTE = "last bin includes overflow"
MAP_SIZE = (11.5, 10)  # 2D maps with a colour bar
SMALL_LABEL = 21.0  # base font size of the CMS label on maps (the default overlaps the luminosity)


@dataclass(frozen=True)
class PlotStyle:
    """What every figure shows besides its content.

    Attributes:
        label: text after "CMS" (and "Simulation"), e.g. "Private Work".
        lumi_pb: integrated luminosity in pb^-1 (None: not shown).
        com: centre-of-mass energy in TeV.
        dpi: resolution of the PNG files (>= 150).
        stamp: a word written across every figure (``UNBACKED`` when the MC does not back the
            run's working point: :mod:`.guard`); None: nothing.
    """

    label: str = "Private Work"
    lumi_pb: float | None = None
    com: float = 13.0
    dpi: int = 150
    stamp: str | None = None

    @property
    def lumi_fb(self) -> float | None:
        return None if self.lumi_pb is None else float(self.lumi_pb) / 1000.0

    @classmethod
    def from_config(cls, cfg, stamp: str | None = None) -> PlotStyle:
        """The style of a job: ``plots.label``, ``plots.dpi`` and ``analysis.lumi`` (and a ``stamp``)."""
        plots = getattr(cfg, "plots", None)
        return cls(label=getattr(plots, "label", cls.label), dpi=max(150, int(getattr(plots, "dpi", cls.dpi))),
                   lumi_pb=float(cfg.analysis.lumi), stamp=stamp)


DEFAULT = PlotStyle()


@dataclass
class _Recorder:
    figures: dict = field(default_factory=dict)  # name -> Figure


_RECORDERS: list[_Recorder] = []


@contextlib.contextmanager
def record_figures():
    """Collect ``{name: matplotlib Figure}`` of every figure saved inside the ``with`` block."""
    rec = _Recorder()
    _RECORDERS.append(rec)
    try:
        yield rec.figures
    finally:
        _RECORDERS.remove(rec)


def pyplot():
    """matplotlib.pyplot on the Agg backend with mplhep's CMS style."""
    matplotlib.use("Agg")
    plt.style.use(mplhep.style.CMS)
    return plt


def cms_label(ax, style: PlotStyle = DEFAULT, data: bool = False, lumi: bool = True, com: bool | None = True, **kw):
    """``CMS [Simulation] <style.label>`` above the axes, ``L fb^-1 (13 TeV)`` on the right
    (``lumi=False``: no luminosity; ``com=None``: nothing on the right)."""
    if com is None:
        kw["rlabel"] = ""
    return mplhep.cms.label(style.label, ax=ax, data=data, lumi=style.lumi_fb if lumi else None,
                            lumi_format="{0:.3g}", com=f"{style.com:g}", loc=0, **kw)


def save(fig, outdir: str | os.PathLike, name: str, style: PlotStyle = DEFAULT) -> list[str]:
    """Write ``outdir/name.pdf`` and ``outdir/name.png``; close the figure; return both paths."""
    plt = pyplot()
    os.makedirs(outdir, exist_ok=True)
    if style.stamp:  # across the figure, in front of everything: the numbers it shows are not backed
        fig.text(0.5, 0.5, style.stamp, transform=fig.transFigure, ha="center", va="center", rotation=25,
                 fontsize=64, color="#d62728", alpha=0.35, fontweight="bold", zorder=1000)
    paths = []
    for ext in FORMATS:
        p = os.path.join(os.fspath(outdir), f"{name}.{ext}")
        fig.savefig(p, dpi=style.dpi, bbox_inches="tight")
        paths.append(p)
    for rec in _RECORDERS:
        rec.figures[name] = fig
    plt.close(fig)
    return paths


def process_label(dataset: str) -> str:
    """Legend label of a background dataset: its physics process (QCD multijet, tt, W, Z)."""
    for pattern, label, _ in PROCESSES:
        if pattern.search(dataset):
            return label
    return dataset


def process_colour(label: str, i: int = 0) -> str:
    for _, lab, colour in PROCESSES:
        if lab == label:
            return colour
    return OTHER_COLOURS[i % len(OTHER_COLOURS)]


def group_backgrounds(names) -> dict[str, list[str]]:
    """``{process label: [datasets]}`` (e.g. both QCD pT bins under "QCD multijet"), in process order."""
    groups: dict[str, list[str]] = {}
    for d in names:
        groups.setdefault(process_label(d), []).append(d)
    order = [lab for _, lab, _ in PROCESSES]
    return dict(sorted(groups.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def _fmt_mass(m: float) -> str:
    return f"{m / 1000:g} TeV" if m >= 1000 else f"{m:g} GeV"


def signal_label(meta: Mapping | None, name: str = "") -> str:
    """``m_Z' = 2 TeV, r_inv = 0.3`` from the dataset metadata (``mzprime``, ``rinv``), else from the name."""
    mz = rinv = None
    if meta:
        mz, rinv = meta.get("mzprime"), meta.get("rinv")
    if (mz is None or rinv is None) and name:
        m = re.search(r"mz(?P<mz>[0-9.]+)_rinv(?P<rinv>[0-9.]+)", name)
        if m:
            mz, rinv = float(m["mz"].rstrip(".")), float(m["rinv"].rstrip("."))
    if mz is None or rinv is None:
        return name
    return rf"$m_{{Z'}}$ = {_fmt_mass(float(mz))}, $r_{{inv}}$ = {float(rinv):g}"


def signal_style(i: int) -> dict:
    colour, ls = SIGNAL_STYLES[i % len(SIGNAL_STYLES)]
    return {"color": colour, "linestyle": ls, "linewidth": 2.5}


def per_gev_label(unit_width: float | None = None, unit: str = "GeV") -> str:
    """y label: "Events / GeV" (variable-width bins, ``binwnorm=1``) or "Events / 25 GeV"."""
    if unit_width is None:
        return f"Events / {unit}"
    return f"Events / {unit_width:.3g} {unit}".rstrip() if unit else f"Events / {unit_width:.3g}"


def log_range_needed(values, ratio: float = 50.0) -> bool:
    """True when the positive values span more than ``ratio`` (a log y axis reads better)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and v.max() / v.min() > ratio


def legend_inside(ax, style_kw: dict | None = None, **kw):
    """Legend in the upper right with the y axis raised until it covers nothing (headroom)."""
    kw = {"loc": "upper right", "fontsize": 15, "frameon": False, **(style_kw or {}), **kw}
    leg = ax.legend(**kw)
    try:
        mplhep.yscale_legend(ax, soft_fail=True, N=30)
    except Exception as exc:  # pragma: no cover - headroom is cosmetic
        log.debug("yscale_legend failed: %s", exc)
    return leg
