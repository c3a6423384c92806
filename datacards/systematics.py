"""Signal systematics of the ABCD datacards: detector/theory sources, signal MC statistics, luminosity.

Input: next to the nominal ``xy_mt`` the processor fills ``xy_mt_syst`` with axes
``(dataset, syst, plane, x, y, mt)`` (signal datasets only; ``syst`` a StrCategory of
``"<source>_up"``/``"<source>_down"``; same x, y, M_T binning as ``xy_mt``; Weight storage;
already scaled like ``xy_mt``, i.e. xsec x lumi / sumw). :func:`.toys.build_xy_mt_syst` builds one from
arrays (tests, demos).

What goes into a card (:func:`signal_systematics`), per signal point:

* one ``lnN`` row per source (``jes``, ``jer``, ``unclustered``, ``pileup``, ``trigger``, ``isr``,
  ``fsr``, ...), named after the source, so the nuisance is correlated across all channels of the
  card and across points. Per channel (region R in A, B, C, D and merged M_T bin i; the signal
  contamination of the control regions varies too) the value is ``kdown/kup`` with
  ``kdown = yield(down) / nominal`` and ``kup = yield(up) / nominal`` of the signal there:

  - nominal <= 0: ``-`` (no signal to vary);
  - ``|kdown - 1| < 1e-4`` and ``|kup - 1| < 1e-4``: ``-`` (no effect);
  - one-sided (both variations on the same side of nominal): the asymmetric pair is written as
    it is; Combine accepts it (its asymmetric-lnN interpolation is defined for any
    ``kdown, kup > 0``) and so does the quick fit (:mod:`.likelihood`); such channels are listed;
  - kappas are clipped into ``[0.1, 10]`` (a variation yield <= 0, e.g. from negative weights,
    ends at 0.1); every clip is recorded with the raw value;
  - a source whose up or down variation is missing for the dataset, or whose variation
    histograms are all zero, is no nuisance of that card; the reason is recorded.

* signal MC statistics: one nuisance per channel, ``mcstat_<channel> lnN 1 + sqrt(sumw2)/sumw`` on
  ``sig`` in that channel only, from the nominal ``xy_mt`` variances; skipped where the
  relative error is below 1e-3 or the yield is <= 0. lnN, not gmN: the signal MC is weighted
  (xsec x lumi / sumw x pileup, trigger, generator weights), so there is no integer event count N
  with a common weight alpha that gmN needs, and Combine's ``autoMCStats`` (Barlow-Beeston lite)
  works only on shape templates, not on counting cards like ours. For the relative errors of
  well-populated bins the lnN is close to the Gaussian autoMCStats would use;

* luminosity: ``lumi`` lnN (``lumi_unc``, default 1.016) as before, or any set of rows
  ``{name: kappa}`` from the configuration (e.g. ``{"lumi_2018": 1.025, "lumi_corr": 1.02}``:
  an uncorrelated per-era part and a part correlated between eras), each on ``sig`` in every
  channel.

The background stays data-driven (rateParams) and gets no detector systematics.

Configuration (:func:`systematics_config`): ``None`` = everything on; ``False`` = off; a mapping
(or the job's ``systematics`` model) with ``enabled``, ``sources`` (a list of the sources to use,
or ``{source: bool}``), ``<source>: bool`` (or ``{enabled: bool, ...}``), ``mcstat: bool`` and
``lumi: {name: kappa}`` (a number means ``{"lumi": number}``). Other keys (payload names, eras,
...) belong to the processor and are ignored here.

Example:
    >>> cfg = systematics_config({"jer": False, "lumi": {"lumi_2018": 1.025}})
    >>> cfg.use("jes"), cfg.use("jer"), cfg.lumi
    (True, False, {'lumi_2018': 1.025})
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from svjscout.exceptions import DatacardError, HistogramError

from .regions import REGIONS, cumulative_2d, parse_wp, region_yields, regions_from_cumsum, snap_threshold

log = logging.getLogger(__name__)

SYST_AXES: tuple[str, ...] = ("dataset", "syst", "plane", "x", "y", "mt")
#: display order of the sources the processor fills (others follow alphabetically)
KNOWN_SOURCES: tuple[str, ...] = ("jes", "jer", "unclustered", "pileup", "trigger", "isr", "fsr", "pdf", "scale")
KAPPA_RANGE: tuple[float, float] = (0.1, 10.0)
TINY = 1e-4  # |k - 1| below this for both kappas: no effect in that channel
MCSTAT_MIN = 1e-3  # relative MC statistical error below this: no mcstat nuisance
_RESERVED = {"enabled", "sources", "mcstat", "lumi"}


# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class SystematicsConfig:
    """Which signal systematics go into the cards.

    Attributes:
        enabled: master switch (False: the cards are exactly those without systematics).
        sources: explicit ``{source: on}``; a source not listed is on when ``default_on``.
        default_on: whether unlisted sources are used (False when ``sources`` was given as a list).
        mcstat: one ``mcstat_<channel>`` lnN per channel.
        lumi: ``{name: kappa}`` rows on the signal (None: ``{"lumi": lumi_unc}``, today's row).
    """

    enabled: bool = True
    sources: dict[str, bool] = field(default_factory=dict)
    default_on: bool = True
    mcstat: bool = True
    lumi: dict[str, float | str | list] | None = None

    def use(self, source: str) -> bool:
        """Whether ``source`` is switched on."""
        return bool(self.sources.get(source, self.default_on))

    def lumi_rows(self, lumi_unc: float) -> dict:
        """The luminosity rows ``{name: kappa}`` (``{"lumi": lumi_unc}`` unless configured)."""
        return {"lumi": lumi_unc} if self.lumi is None else dict(self.lumi)

    def to_dict(self) -> dict:
        return {"enabled": self.enabled, "sources": dict(self.sources), "unlisted_sources_on": self.default_on,
                "mcstat": self.mcstat, "lumi": None if self.lumi is None else dict(self.lumi)}


def _switch(v, key: str) -> bool:
    if isinstance(v, Mapping):
        v = v.get("enabled", True)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    raise DatacardError(f"systematics.{key} must be true/false (or a mapping with 'enabled'), got {v!r}")


def _lumi_value(v, name: str):
    if isinstance(v, str) and "/" in v:
        parts = v.split("/")
        v = [float(p) for p in parts] if len(parts) == 2 else None
    if isinstance(v, (list, tuple)) and len(v) == 2:
        out = [float(v[0]), float(v[1])]
        if min(out) <= 0:
            raise DatacardError(f"systematics.lumi.{name}: kappas must be > 0, got {v!r}")
        return out
    try:
        k = float(v)
    except (TypeError, ValueError):
        raise DatacardError(f"systematics.lumi.{name} must be a kappa (e.g. 1.025) or 'kdown/kup', got {v!r}") from None
    if not k > 0:
        raise DatacardError(f"systematics.lumi.{name}: kappa must be > 0, got {v!r}")
    return k


def systematics_config(obj=None) -> SystematicsConfig:
    """Normalise a systematics configuration (see the module docstring); None means all on.

    Accepts None, a bool, a :class:`SystematicsConfig`, a mapping, or an object with
    ``model_dump()`` (pydantic) or attributes (dataclass).

    Raises:
        DatacardError: a switch that is not a bool, a lumi kappa that is not a positive number.
    """
    if obj is None:
        return SystematicsConfig()
    if isinstance(obj, SystematicsConfig):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return SystematicsConfig(enabled=bool(obj))
    if not isinstance(obj, Mapping):
        if hasattr(obj, "model_dump"):
            obj = obj.model_dump()
        elif hasattr(obj, "__dict__"):
            obj = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
        else:
            raise DatacardError(f"systematics configuration must be a mapping, a bool or None, got {type(obj).__name__}")
    cfg = SystematicsConfig(enabled=_switch(obj.get("enabled", True), "enabled"))
    src = obj.get("sources")
    if isinstance(src, Mapping):
        cfg.sources.update({k: _switch(v, f"sources.{k}") for k, v in src.items()})
    elif isinstance(src, (list, tuple)):
        cfg.sources.update({str(k): True for k in src})
        cfg.default_on = False
    elif src is not None:
        raise DatacardError(f"systematics.sources must be a list of sources or {{source: bool}}, got {src!r}")
    for k, v in obj.items():
        if k in _RESERVED:
            continue
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, Mapping) and "enabled" in v):
            cfg.sources[str(k)] = _switch(v, str(k))
    if "mcstat" in obj and obj["mcstat"] is not None:
        cfg.mcstat = _switch(obj["mcstat"], "mcstat")
    lumi = obj.get("lumi")
    if lumi is not None:
        if isinstance(lumi, Mapping):
            cfg.lumi = {str(k): _lumi_value(v, str(k)) for k, v in lumi.items()}
        else:
            cfg.lumi = {"lumi": _lumi_value(lumi, "lumi")}
    return cfg


# --------------------------------------------------------------------------------------------
# the xy_mt_syst histogram


def check_syst_histogram(xy_mt_syst, xy_mt) -> None:
    """Raise :class:`HistogramError` unless ``xy_mt_syst`` has the axes of :data:`SYST_AXES` and the
    x, y, M_T binning and planes of ``xy_mt``."""
    names = [ax.name for ax in xy_mt_syst.axes]
    missing = [a for a in SYST_AXES if a not in names]
    if missing:
        raise HistogramError(f"xy_mt_syst histogram lacks axis/axes {missing}; found {names}, expected {list(SYST_AXES)}")
    for a in ("x", "y", "mt"):
        e1, e2 = np.asarray(xy_mt_syst.axes[a].edges, float), np.asarray(xy_mt.axes[a].edges, float)
        if e1.shape != e2.shape or not np.allclose(e1, e2):
            raise HistogramError(f"xy_mt_syst axis '{a}' edges {e1.tolist()} differ from xy_mt's {e2.tolist()}")


def source_names(systs: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(sources, unrecognised)`` from the names of the ``syst`` axis (``<source>_up``/``_down``)."""
    found, other = [], []
    for s in systs:
        for suf in ("_up", "_down"):
            if s.endswith(suf) and len(s) > len(suf):
                found.append(s[: -len(suf)])
                break
        else:
            other.append(s)
    found = list(dict.fromkeys(found))
    order = {s: i for i, s in enumerate(KNOWN_SOURCES)}
    return sorted(found, key=lambda s: (order.get(s, len(order)), s)), other


class _SystArrays:
    """Values of ``xy_mt_syst`` for one dataset and plane, ``{syst: (nx, ny, n_mt)}``, read lazily."""

    def __init__(self, xy_mt_syst, dataset: str, plane: str):
        order = [ax.name for ax in xy_mt_syst.axes]
        self.systs = list(xy_mt_syst.axes["syst"])
        self.datasets = list(xy_mt_syst.axes["dataset"])
        planes = list(xy_mt_syst.axes["plane"])
        if plane not in planes:
            raise HistogramError(f"plane '{plane}' not in xy_mt_syst plane axis {planes}")
        self.present = dataset in self.datasets
        self._vals = None
        if self.present:
            vals = np.transpose(np.asarray(xy_mt_syst.values(flow=False)), [order.index(a) for a in SYST_AXES])
            self._vals = vals[self.datasets.index(dataset)]  # (syst, plane, x, y, mt), a view
            self._plane = planes.index(plane)

    def has(self, syst: str) -> bool:
        return self.present and syst in self.systs

    def empty(self, syst: str) -> bool:
        """True when the variation holds nothing for this dataset (all planes all zero)."""
        return not np.any(self._vals[self.systs.index(syst)])

    def plane(self, syst: str) -> np.ndarray:
        return np.asarray(self._vals[self.systs.index(syst), self._plane], dtype=float)


def _regions(arr: np.ndarray, ix: int, iy: int, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """A, B, C, D yields of a ``(nx, ny, n_mt)`` array, M_T bins merged into ``groups``: ``(4, n)``."""
    n = regions_from_cumsum(cumulative_2d(arr), ix, iy)[:, 0, 0, :]
    return np.stack([n[:, list(g)].sum(axis=1) for g in groups], axis=1)


# --------------------------------------------------------------------------------------------
# the nuisances of one signal point


def kappa_text(v) -> str:
    """Card text of a kappa: a number (symmetric) or ``kdown/kup`` (pair)."""
    from .writer import _fmt

    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple, np.ndarray)):
        return f"{_fmt(float(v[0]))}/{_fmt(float(v[1]))}"
    return _fmt(float(v))


@dataclass
class SignalSystematics:
    """The signal nuisances of one card.

    Attributes:
        dataset, plane: the signal dataset and the fit plane.
        channels: channel names, shape ``(4, n)`` as the yields (rows A, B, C, D).
        nominal: the signal yields the kappas are relative to, ``(4, n)`` (before any clipping).
        sources: ``{source: {"kappa": {(r, i): (kdown, kup)}, "B": {"up", "down"}, "one_sided": [...],
            "clips": [...], "negative": [...]}}`` for every source written to the card.
        skipped: ``{source: reason}`` for sources that are no nuisance of this card.
        mcstat: ``{(r, i): kappa}``; mcstat_skipped: ``{channel: reason}``; mcstat_clips: kappas
            above the range; mcstat_b_total: relative MC stat. error of the total signal in B.
        lumi: ``{name: kappa}`` rows on the signal in every channel.
        not_positive: channels whose nominal signal is <= 0 (``-`` in every source row).
    """

    dataset: str
    plane: str
    channels: list[list[str]]
    nominal: np.ndarray
    sources: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    mcstat: dict[tuple[int, int], float] = field(default_factory=dict)
    mcstat_skipped: dict[str, str] = field(default_factory=dict)
    mcstat_clips: list[dict] = field(default_factory=list)
    mcstat_b_total: float | None = None
    lumi: dict = field(default_factory=dict)
    not_positive: list[str] = field(default_factory=list)
    unrecognised: list[str] = field(default_factory=list)

    def card_rows(self) -> list[tuple[str, dict[tuple[int, int], str]]]:
        """Rows for :func:`.writer.format_card`: ``[(name, {(r, i): text})]``, sources then mcstat."""
        rows = [(src, {ri: kappa_text(k) for ri, k in info["kappa"].items()}) for src, info in self.sources.items()]
        rows += [(f"mcstat_{self.channels[r][i]}", {(r, i): kappa_text(k)}) for (r, i), k in self.mcstat.items()]
        return rows

    def nuisance_names(self) -> list[str]:
        return [name for name, _ in self.card_rows()]

    def to_index(self) -> dict:
        """JSON-safe record for ``index.json`` (per source: effect on the signal in B, channels, clips)."""
        src = {}
        for s, info in self.sources.items():
            src[s] = {"nuisance": s, "B": info["B"], "channels": [self.channels[r][i] for r, i in info["kappa"]],
                      "kappa": {self.channels[r][i]: [float(k[0]), float(k[1])] for (r, i), k in info["kappa"].items()},
                      "one_sided": info["one_sided"], "clips": info["clips"], "negative_variation": info["negative"]}
        nb = float(self.nominal[1].sum())
        return {
            "dataset": self.dataset, "plane": self.plane, "signal_B": nb, "sources": src, "skipped": dict(self.skipped),
            "mcstat": {f"mcstat_{self.channels[r][i]}": float(k) for (r, i), k in self.mcstat.items()},
            "mcstat_skipped": dict(self.mcstat_skipped), "mcstat_clips": self.mcstat_clips,
            "mcstat_B_total": self.mcstat_b_total,
            "lumi": {k: (list(v) if isinstance(v, (list, tuple)) else float(v)) for k, v in self.lumi.items()},
            "nominal_not_positive": self.not_positive, "unrecognised_syst_names": self.unrecognised,
        }


def signal_systematics(xy_mt, xy_mt_syst, datasets: Mapping[str, Mapping], wp, groups: Sequence[Sequence[int]],
                       signal: str, plane: str = "SP", config=None, lumi_unc: float = 1.016,
                       kappa_range: tuple[float, float] = KAPPA_RANGE, tiny: float = TINY,
                       mcstat_min: float = MCSTAT_MIN) -> SignalSystematics:
    """The signal nuisances of the card of ``signal`` (see the module docstring).

    Args:
        xy_mt: nominal histogram ``(dataset, plane, x, y, mt)``.
        xy_mt_syst: variations ``(dataset, syst, plane, x, y, mt)`` or None (no sources then).
        datasets: dataset metadata.
        wp: working point ``(x0, y0)``.
        groups: M_T bin groups of the card (from :func:`.writer.merge_groups`).
        signal: the signal dataset.
        plane: the fit plane ("SP").
        config: :func:`systematics_config` input (None: all on).
        lumi_unc: kappa of the ``lumi`` row when the configuration names no lumi rows.
        kappa_range: kappas are clipped into it (recorded).
        tiny: ``|k - 1|`` below this for both kappas of a channel: ``-``.
        mcstat_min: relative MC statistical error below this: no ``mcstat_<channel>``.

    Returns:
        :class:`SignalSystematics`.
    """
    cfg = systematics_config(config)
    x0, y0 = parse_wp(wp)
    nom = region_yields(xy_mt, datasets, (x0, y0), plane=plane, which=[signal], poisson=False).merged(groups)
    n = nom.n.shape[1]
    chans = [[f"{plane}_{R}_{i}" for i in range(n)] for R in REGIONS]
    out = SignalSystematics(signal, plane, chans, nom.n.copy(), lumi=cfg.lumi_rows(lumi_unc))
    out.not_positive = [chans[r][i] for r in range(4) for i in range(n) if not nom.n[r, i] > 0]
    lo, hi = kappa_range

    if cfg.mcstat:
        for r in range(4):
            for i in range(n):
                c = chans[r][i]
                if not nom.n[r, i] > 0:
                    out.mcstat_skipped[c] = "no signal (yield <= 0)"
                    continue
                rel = float(np.sqrt(max(nom.var[r, i], 0.0)) / nom.n[r, i])
                if rel < mcstat_min:
                    out.mcstat_skipped[c] = f"relative MC stat. error {rel:.2g} < {mcstat_min:g}"
                    continue
                k = 1.0 + rel
                if k > hi:
                    out.mcstat_clips.append({"channel": c, "kappa": k, "clipped_to": hi})
                    k = hi
                out.mcstat[(r, i)] = k
        # the B total's variance: with detector copies, a parent's copies in different bins add first
        nb, vb = nom.n[1].sum(), (nom.var[1].sum() if nom.parents is None else nom.group_var(range(n))[1])
        out.mcstat_b_total = float(np.sqrt(max(vb, 0.0)) / nb) if nb > 0 else None

    if xy_mt_syst is None:
        return out
    check_syst_histogram(xy_mt_syst, xy_mt)
    arrays = _SystArrays(xy_mt_syst, signal, plane)
    sources, out.unrecognised = source_names(list(xy_mt_syst.axes["syst"]))
    ix = snap_threshold(x0, xy_mt_syst.axes["x"].edges, "x")
    iy = snap_threshold(y0, xy_mt_syst.axes["y"].edges, "y")
    for s in sorted(set(cfg.sources) - set(sources)):
        if cfg.sources[s]:
            out.skipped[s] = "switched on in the configuration but not in xy_mt_syst"
    for src in sources:
        if not cfg.use(src):
            out.skipped[src] = "switched off in the configuration"
            continue
        names = {"up": f"{src}_up", "down": f"{src}_down"}
        if not arrays.present:
            out.skipped[src] = f"dataset '{signal}' not in xy_mt_syst"
            continue
        absent = [v for v in names.values() if not arrays.has(v)]
        if absent:
            out.skipped[src] = f"variation(s) {absent} missing from xy_mt_syst"
            continue
        empty = [v for v in names.values() if arrays.empty(v)]
        if empty:
            out.skipped[src] = f"variation(s) {empty} empty (all zero) for this dataset: not available"
            continue
        y = {k: _regions(arrays.plane(v), ix, iy, groups) for k, v in names.items()}
        kappa, one_sided, clips, negative = {}, [], [], []
        for r in range(4):
            for i in range(n):
                c = chans[r][i]
                n0 = nom.n[r, i]
                if not n0 > 0:
                    continue
                raw = {k: float(y[k][r, i] / n0) for k in ("down", "up")}
                if abs(raw["down"] - 1) < tiny and abs(raw["up"] - 1) < tiny:
                    continue
                ks = {}
                for k, v in raw.items():
                    if y[k][r, i] < 0:
                        negative.append({"channel": c, "variation": k, "yield": float(y[k][r, i])})
                    ks[k] = float(np.clip(v, lo, hi))
                    if ks[k] != v:
                        clips.append({"channel": c, "variation": k, "kappa": v, "clipped_to": ks[k]})
                if (raw["up"] - 1) * (raw["down"] - 1) > 0:
                    one_sided.append(c)
                kappa[(r, i)] = (ks["down"], ks["up"])
        if not kappa:
            with_signal = len(out.not_positive) < 4 * n
            out.skipped[src] = f"effect below {tiny:g} in every channel with signal" if with_signal else "no channel with signal"
            continue
        nb = float(nom.n[1].sum())
        b = {k: (float(y[k][1].sum() / nb - 1.0) if nb > 0 else None) for k in ("up", "down")}
        if clips or negative:
            log.warning("signal %s, %s: clipped kappas %s, negative variation yields %s", signal, src, clips, negative)
        out.sources[src] = {"kappa": kappa, "B": b, "one_sided": one_sided, "clips": clips, "negative": negative}
    return out


# --------------------------------------------------------------------------------------------
# summary.md and the plots


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:+.2f} %"


def _lumi_pct(v) -> str:
    if isinstance(v, (list, tuple)):
        return f"{_pct(float(v[1]) - 1)} / {_pct(float(v[0]) - 1)}"
    return f"±{100 * (float(v) - 1):.2f} %"


def summary_lines(index: Mapping) -> list[str]:
    """Markdown lines of the "Signal systematics" section of ``summary.md`` from ``index.json``.

    One table per signal point: the relative effect of each source on the total signal in region
    B of the fit plane (up / down), the number of channels it enters, one-sided channels and clips;
    skipped sources with their reason; the luminosity rows and the signal MC statistics in B.
    """
    lines = ["## Signal systematics", ""]
    meta = index.get("systematics") or {}
    points = {p: m["systematics"] for p, m in sorted((index.get("points") or {}).items()) if m.get("systematics")}
    if not meta.get("applied") or not points:
        reason = meta.get("reason") or "not computed for these cards"
        return lines + [f"No signal systematics in the cards ({reason}); the signal carries the `lumi` lnN "
                        f"{index.get('lumi_unc', '')} only.", ""]
    plane = index.get("plane", "SP")
    lines += [f"Effect of each source on the total signal in region B of {plane} (variation / nominal - 1). Each "
              "source is one lnN nuisance `kdown/kup` per channel (regions A-D x M_T bins), correlated across "
              "channels and signal points; the background stays data-driven (rateParams) and has none. "
              f"Details per channel: `datacards/index.json` (`points.<point>.systematics`).", ""]
    for point, s in points.items():
        lines += [f"### {point}", "", "| source | up | down | channels | notes |", "|---|---|---|---|---|"]
        for src, info in s["sources"].items():
            notes = []
            if info["one_sided"]:
                notes.append(f"one-sided in {len(info['one_sided'])}")
            if info["clips"]:
                notes.append(f"{len(info['clips'])} kappa(s) clipped to [0.1, 10]")
            if info.get("negative_variation"):
                notes.append(f"{len(info['negative_variation'])} negative variation yield(s)")
            lines.append(f"| {src} | {_pct(info['B']['up'])} | {_pct(info['B']['down'])} | {len(info['channels'])} | "
                         + ("; ".join(notes) or "-") + " |")
        for src, why in s["skipped"].items():
            lines.append(f"| {src} | - | - | 0 | not in the card: {why} |")
        for name, k in s["lumi"].items():
            lines.append(f"| {name} | {_lumi_pct(k)} | | all | luminosity |")
        if s["mcstat"] or s["mcstat_skipped"]:
            tot = s.get("mcstat_B_total")
            lines.append(f"| mcstat_* | {'n/a' if tot is None else f'±{100 * tot:.2f} %'} | | {len(s['mcstat'])} | "
                         "signal MC statistics, one nuisance per channel (B total shown) |")
        lines.append("")
    return lines


def _region_b(arr: np.ndarray, ix: int, iy: int) -> np.ndarray:
    return arr[ix:, iy:, :].sum(axis=(0, 1))


def plot_systematics(xy_mt, xy_mt_syst, datasets: Mapping[str, Mapping], wp, outdir: str | os.PathLike,
                     signal: str | None = None, plane: str = "SP", style=None) -> list[str]:
    """Nominal, up and down M_T of one signal point in region B of ``plane``, one figure per source
    (``syst_<source>``), with the ratio to nominal below.

    ``signal``: the dataset (default: the signal in ``xy_mt_syst`` with the largest nominal yield
    in region B). Sources without both variations (or all zero) for it are left out.
    """
    from . import style as st

    style = style or st.DEFAULT
    check_syst_histogram(xy_mt_syst, xy_mt)
    x0, y0 = parse_wp(wp)
    ix = snap_threshold(x0, xy_mt.axes["x"].edges, "x")
    iy = snap_threshold(y0, xy_mt.axes["y"].edges, "y")
    cands = [d for d in xy_mt_syst.axes["dataset"] if d in list(xy_mt.axes["dataset"])]
    if signal is None:
        if not cands:
            log.warning("no signal dataset of xy_mt_syst is in xy_mt: no systematics plots")
            return []
        totals = {d: float(_region_b(region_yields_plane(xy_mt, d, plane), ix, iy).sum()) for d in cands}
        signal = max(cands, key=lambda d: (totals[d], d))
    nominal = _region_b(region_yields_plane(xy_mt, signal, plane), ix, iy)
    arrays = _SystArrays(xy_mt_syst, signal, plane)
    sources, _ = source_names(list(xy_mt_syst.axes["syst"]))
    edges = np.asarray(xy_mt.axes["mt"].edges, float)
    width = np.diff(edges)
    plt = st.pyplot()
    paths: list[str] = []
    for src in sources:
        names = (f"{src}_up", f"{src}_down")
        if not all(arrays.has(v) and not arrays.empty(v) for v in names):
            continue
        up, dn = (_region_b(arrays.plane(v), ix, iy) for v in names)
        fig, (ax, rax) = plt.subplots(2, 1, figsize=(10, 10), sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05})
        for vals, lab, kw in ((nominal, "nominal", {"color": "black"}),
                              (up, f"{src} up", {"color": "#e42536", "linestyle": "--"}),
                              (dn, f"{src} down", {"color": "#5790fc", "linestyle": ":"})):
            ax.stairs(vals / width, edges, label=lab, linewidth=2, **kw)
        pos = np.concatenate([a[a > 0] / width[a > 0] for a in (nominal, up, dn)])
        if pos.size and st.log_range_needed(pos):
            ax.set_yscale("log")
            ax.set_ylim(pos.min() / 5, pos.max() * 3)
        elif pos.size:
            ax.set_ylim(0, pos.max() * 1.4)
        ax.set_ylabel(st.per_gev_label())
        title = (f"{st.signal_label(datasets.get(signal), signal)}\n{st.PLANE_NAMES.get(plane, plane)}, region B "
                 f"(x0, y0) = ({x0:.3f}, {y0:.3f})")
        st.legend_inside(ax, fontsize=14, title=title, title_fontsize=13)
        st.cms_label(ax, style)
        with np.errstate(divide="ignore", invalid="ignore"):
            for vals, kw in ((up, {"color": "#e42536", "linestyle": "--"}), (dn, {"color": "#5790fc", "linestyle": ":"})):
                rax.stairs(np.where(nominal > 0, vals / nominal, np.nan), edges, baseline=None, linewidth=2, **kw)
        rax.axhline(1.0, color="black", linewidth=1)
        rax.set_ylabel("var. / nom.", fontsize=18)
        rax.set_xlabel(f"{st.AXIS_LABELS['mt']} ({st.OVERFLOW_NOTE})", fontsize=20)
        rax.set_xlim(edges[0], edges[-1])
        paths += st.save(fig, outdir, f"syst_{src}", style)
    return paths


def region_yields_plane(xy_mt, dataset: str, plane: str) -> np.ndarray:
    """Values of ``xy_mt`` for one dataset and plane, ``(nx, ny, n_mt)``."""
    from .regions import plane_arrays

    return plane_arrays(xy_mt, [dataset], plane)[0]
