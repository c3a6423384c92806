"""Combine text datacards for the simultaneous ABCD fit, one card per signal point.

Layout of ``DIR/datacards/POINT/datacard.txt`` (``POINT`` = ``svj_mz<M>_rinv<R>``):

* channels ``<plane>_<R>_<i>`` for each M_T bin i (after merging) and region R in A, B, C, D,
  e.g. ``SP_A_0 SP_B_0 SP_C_0 SP_D_0 SP_A_1 ...``;
* processes ``sig`` (index 0) and ``bkg`` (index 1) in every channel; ``sig`` rate = signal MC
  yield in that region and bin;
* ``bkg`` rates are the expected yields (MC in A, C, D; the ABCD prediction ``n_A n_D / n_C`` in
  B) and free rateParams of order 1 scale them: ``bkg_SP_A_i``, ``bkg_SP_C_i``, ``bkg_SP_D_i``
  (initial 1, range ``rateparam_range``, default ``[0.1, 10]``: away from the singular point C = 0
  of A*D/C, and Minuit's first steps are fractions of the yield whatever its size) and
  ``bkg_SP_B_i`` = ``(@0*@1/@2)`` of ``bkg_SP_A_i,bkg_SP_D_i,bkg_SP_C_i`` (the ABCD relation);
* ``nonclosure_bin<i>`` lnN ``kappa_i`` on bkg in ``B_i`` only, one independent nuisance per fit
  bin (:mod:`.nonclosure`). The closure test needs more MC than the fit, so it is made in closure
  bins: the fit bins merged further until every region holds ``min_neff`` effective MC events;
  each fit bin takes the kappa of its closure bin. The nuisances stay uncorrelated between fit
  bins: one nuisance shared by the fit bins of a closure bin would let the signal-free bins of
  region B calibrate the others (a flat non-closure assumed, not measured). With
  ``fit_min_neff = min_neff`` the two binnings are one;
* ``shapes * * FAKE``: Combine builds the channels as shape channels. Counting channels are
  multiplied into one product pdf, which underflows for 20 channels of large yields ("top-level
  p.d.f not greater than zero" in every toy fit); shape channels sum log-likelihoods. Results
  are unchanged (Combine issue #184);
* ``lumi`` lnN on sig in all channels (default 1.016) plus optional extra signal lnN systematics;
* with ``xy_mt_syst`` (the processor's variations) and systematics on: one asymmetric lnN
  ``kdown/kup`` row per source on sig (``jes``, ``jer``, ..., correlated across channels and
  points), ``mcstat_<channel>`` lnN per channel (signal MC statistics) and the configured
  luminosity rows (:mod:`.systematics`); without ``xy_mt_syst`` or with systematics off the cards
  are exactly those written without them;
* observation: background-only Asimov (A, C, D = MC background, B = ABCD prediction
  ``n_A n_D / n_C``, i.e. exactly the model at its initial values) or data. Data puts the
  observed counts of region B of the signal plane (the signal region) into the cards, i.e. it
  unblinds: it needs ``unblind=True`` explicitly, and such cards carry an ``UNBLINDED:`` header
  line and ``"unblinded": true`` in ``index.json``.

M_T bins with too little MC: with ``zero_bkg="merge"`` (default), M_T bins are grouped, starting
from one group per bin; while some group has, in any of the four regions of the fit plane, MC
background ``<= min_bkg`` or an effective number of MC events (Kish, ``(sum w)^2 / sum w^2``)
below ``min_neff``, the lowest such group is merged with its upper neighbour (the lower one for
the last group). The closure test of every kept bin then rests on enough MC events to mean
something. If a single group remains and is still bad, or with ``zero_bkg="floor"``, the
offending yields are set to ``floor_value``. The last M_T bin holds the overflow (``[lo, inf)``). Groups, merges and floors are reported in
``DIR/datacards/index.json``. Negative signal yields (negative MC weights) are set to 0 and
listed per point in the index.

Example:
    >>> # index = write_datacards(xy_mt, datasets, (0.775, 0.875), "out/")
    >>> # index["points"]["svj_mz2000_rinv0.3"]["card"]
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from svjscout import __version__
from svjscout.exceptions import DatacardError

from .abcd import predict
from .nonclosure import closure_yields, mt_bin_label, nonclosure_report
from .parser import parse_text, validate_datacard
from .plots import point_name
from .regions import REGIONS, RegionYields, datasets_of_kind, parse_wp, region_yields
from .systematics import check_syst_histogram, kappa_text, systematics_config
from .systematics import signal_systematics as _signal_nuisances

log = logging.getLogger(__name__)

CARD_NAME = "datacard.txt"


def merge_groups(bkg: np.ndarray, min_bkg: float = 0.0, var: np.ndarray | None = None,
                 min_neff: float = 0.0, var_of=None) -> tuple[list[list[int]], list[dict]]:
    """M_T bin groups so that every region has background > ``min_bkg`` and N_eff >= ``min_neff``.

    Args:
        bkg: background yields, shape ``(4, n_mt)`` (A, B, C, D).
        min_bkg: threshold (events).
        var: their variances (sum of squared weights), shape ``(4, n_mt)``; needed for ``min_neff``.
        min_neff: minimum Kish effective number of MC events ``(sum w)^2 / sum w^2`` per region.
        var_of: variances of a group of bins, ``var_of(group) -> (4,)`` (e.g.
            :meth:`.regions.RegionYields.group_var`, parent-aware with detector copies); default
            the sum of ``var`` over the group.

    Returns:
        ``(groups, merges)``: lists of consecutive original bins, and one record per merge
        ``{"bins": [...], "into": [...], "reason": str}``.
    """
    groups = [[i] for i in range(bkg.shape[1])]
    merges = []
    if min_neff > 0 and var is None and var_of is None:
        raise DatacardError("merge_groups: min_neff needs the variances (var)")

    def bad(g):
        tot = bkg[:, g].sum(axis=1)
        out = [REGIONS[r] for r in range(4) if not tot[r] > min_bkg]
        if min_neff > 0:
            v = var_of(g) if var_of is not None else var[:, g].sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                neff = np.where((v > 0) & (tot > 0), tot**2 / np.where(v > 0, v, 1.0), 0.0)
            out += [f"{REGIONS[r]} (N_eff {neff[r]:.1f})" for r in range(4) if neff[r] < min_neff and REGIONS[r] not in out]
        return out

    while len(groups) > 1:
        offenders = [k for k, g in enumerate(groups) if bad(g)]
        if not offenders:
            break
        k = offenders[0]
        j = k + 1 if k + 1 < len(groups) else k - 1
        lo, hi = sorted((k, j))
        reason = (f"background <= {min_bkg:g}" + (f" or N_eff < {min_neff:g}" if min_neff > 0 else "")
                  + f" in region(s) {bad(groups[k])} of M_T bins {groups[k]}")
        merged = groups[lo] + groups[hi]
        merges.append({"bins": groups[k], "with": groups[j], "into": merged, "reason": reason})
        log.info("merging M_T bins %s and %s: %s", groups[lo], groups[hi], reason)
        groups[lo:hi + 1] = [merged]
    return groups, merges


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.8g}" if abs(v) >= 1e-4 else f"{v:.8e}"


def _align(rows: list[list[str]]) -> list[str]:
    n = max(len(r) for r in rows)
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(n)]
    return ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]


def format_card(
    point: str,
    bkg: np.ndarray,
    sig: np.ndarray,
    obs: np.ndarray,
    nonclosure: np.ndarray,
    plane: str = "SP",
    lumi_unc: float = 1.016,
    signal_systematics: Mapping[str, float] | None = None,
    rateparam_range: tuple[float, float] = (0.1, 10.0),
    header: Sequence[str] = (),
    lumi: Mapping[str, float | str | Sequence[float]] | None = None,
    sig_rows: Sequence[tuple[str, Mapping[tuple[int, int], str]]] | None = None,
) -> str:
    """Text of one ABCD datacard.

    Args:
        point: signal point name (header only).
        bkg: background yields, shape ``(4, n)`` (A, B, C, D): the rates of A, C, D; the rate of
            B is the ABCD prediction ``A D / C`` from them (the B row is not used).
        sig: signal yields, shape ``(4, n)``.
        obs: observation, shape ``(4, n)``.
        nonclosure: lnN kappa of the non-closure per bin, shape ``(n,)`` (>= 1).
        plane: channel name prefix.
        lumi_unc: lnN value of the luminosity uncertainty on sig.
        signal_systematics: extra lnN on sig in all channels, ``{name: kappa}``.
        rateparam_range: ``[lo, hi]`` of the free rateParams (initial value 1).
        header: comment lines (without ``#``).
        lumi: luminosity rows on sig in all channels ``{name: kappa or (kdown, kup)}``, replacing
            ``{"lumi": lumi_unc}`` (None: the single ``lumi`` row).
        sig_rows: per-channel lnN rows on sig, ``[(name, {(region index, bin): text})]`` (text
            ``k`` or ``kdown/kup``; channels not in the mapping get ``-``), written after the
            rows on all channels (:meth:`.systematics.SignalSystematics.card_rows`).

    Returns:
        the card text.
    """
    n = bkg.shape[1]
    chans = [f"{plane}_{r}_{i}" for i in range(n) for r in REGIONS]
    ridx = [(REGIONS.index(r), i) for i in range(n) for r in REGIONS]
    systs = {**({"lumi": lumi_unc} if lumi is None else dict(lumi)), **(signal_systematics or {})}
    sig_rows = list(sig_rows or [])
    lines = [f"# {h}" for h in (header or [f"Combine datacard, SVJ ABCD search, signal point {point}"])]
    lines += [f"imax {len(chans)}  number of channels (M_T bins x regions A,B,C,D)",
              "jmax 1  number of processes minus 1",
              f"kmax {len(systs) + len(sig_rows) + n}  number of nuisance parameters (lnN; rateParams not counted)"]
    sep = "-" * 80
    lines.append(sep)
    lines.append("shapes * * FAKE")
    lines.append(sep)
    lines += _align([["bin", *chans], ["observation", *[_fmt(obs[r, i]) for r, i in ridx]]])
    rate_b = bkg[0] * bkg[3] / bkg[2]
    bkg_rate = {(r, i): (rate_b[i] if r == "B" else bkg[REGIONS.index(r), i]) for i in range(n) for r in REGIONS}
    lines.append(sep)
    cols = [(c, p) for c in chans for p in ("sig", "bkg")]
    rows = [
        ["bin", "", *[c for c, _ in cols]],
        ["process", "", *[p for _, p in cols]],
        ["process", "", *["0" if p == "sig" else "1" for _, p in cols]],
        ["rate", "", *[_fmt(sig[r, i]) if p == "sig" else _fmt(bkg_rate[(REGIONS[r], i)])
                       for (r, i) in ridx for p in ("sig", "bkg")]],
    ]
    srows = []
    for name, kappa in systs.items():
        srows.append([name, "lnN", *[kappa_text(kappa) if p == "sig" else "-" for _, p in cols]])
    for name, per_channel in sig_rows:
        srows.append([name, "lnN", *[per_channel.get(ri, "-") if p == "sig" else "-" for ri in ridx for p in ("sig", "bkg")]])
    for i in range(n):
        srows.append([f"nonclosure_bin{i}", "lnN",
                      *[_fmt(nonclosure[i]) if (p == "bkg" and c == f"{plane}_B_{i}") else "-" for c, p in cols]])
    body = _align(rows + [["-" * 3]] + srows)
    lines += body[:4] + [sep] + body[5:]
    rp = []
    for i in range(n):
        for r in ("A", "C", "D"):
            rp.append([f"bkg_{plane}_{r}_{i}", "rateParam", f"{plane}_{r}_{i}", "bkg", "1",
                       f"[{_fmt(rateparam_range[0])},{_fmt(rateparam_range[1])}]"])
        rp.append([f"bkg_{plane}_B_{i}", "rateParam", f"{plane}_B_{i}", "bkg", "(@0*@1/@2)",
                   f"bkg_{plane}_A_{i},bkg_{plane}_D_{i},bkg_{plane}_C_{i}"])
    lines.append(sep)
    lines += _align(rp)
    return "\n".join(lines) + "\n"


def _signal_yields(xy_mt, datasets, wp, plane, name, groups) -> RegionYields:
    return region_yields(xy_mt, datasets, wp, plane=plane, which=name).merged(groups)


def write_datacards(
    xy_mt,
    datasets: Mapping[str, Mapping],
    wp,
    outdir: str | os.PathLike,
    asimov: bool = True,
    lumi_unc: float = 1.016,
    nonclosure_method: str = "significance",
    plane: str = "SP",
    zero_bkg: str = "merge",
    min_bkg: float = 0.0,
    floor_value: float = 1e-3,
    signal_systematics: Mapping[str, float] | None = None,
    signals: Sequence[str] | None = None,
    rateparam_range: tuple[float, float] = (0.1, 10.0),
    min_neff: float = 10.0,
    fit_min_neff: float = 0.0,
    nonclosure_z: float = 2.0,
    inputs: str = "",
    validate: bool = True,
    unblind: bool = False,
    xy_mt_syst=None,
    systematics=None,
) -> dict:
    """Write one ABCD datacard per signal point and ``index.json`` into ``outdir/datacards``.

    Args:
        xy_mt: histogram ``(dataset, plane, x, y, mt)``.
        datasets: dataset metadata.
        wp: working point ``(x0, y0)`` on x/y bin edges.
        outdir: output folder DIR; cards go to ``DIR/datacards/POINT/datacard.txt``.
        asimov: observation = background-only Asimov (True) or data (False; needs kind "data"
            and ``unblind=True``).
        lumi_unc: lnN of the luminosity uncertainty on the signal.
        nonclosure_method: see :mod:`.nonclosure` (default ``significance``).
        plane: plane whose regions enter the fit ("SP").
        zero_bkg: "merge" (merge M_T bins, then floor if needed) or "floor".
        min_bkg: a region/bin needs background > ``min_bkg``.
        floor_value: yield used for non-positive background after merging (events).
        signal_systematics: extra lnN on the signal, ``{name: kappa}``.
        signals: signal datasets (default all of kind "signal").
        rateparam_range: ``[lo, hi]`` of the free background rateParams (initial value 1).
        min_neff: minimum Kish effective number of MC background events per region of each
            closure bin (the bins of the closure test and of the non-closure nuisances).
        fit_min_neff: the same for the fit bins (``zero_bkg="merge"``; default 0: a fit bin needs
            only background in every region). ``fit_min_neff = min_neff`` makes the two binnings one.
        nonclosure_z: standard deviations of a significant non-closure (method ``significance``).
        inputs: description of the input (e.g. the histograms file) for card headers and index.
        validate: parse and validate every written card (:func:`.parser.validate_datacard`).
        unblind: allow ``asimov=False``: the observation in region B of ``plane`` (the signal
            region) is then data. Without it, ``asimov=False`` raises :class:`DatacardError`.
        xy_mt_syst: the processor's signal variations ``(dataset, syst, plane, x, y, mt)``
            (:mod:`.systematics`); None: no signal systematics (the cards are exactly those of
            before, whatever ``systematics`` says).
        systematics: which signal systematics to write (:func:`.systematics.systematics_config`:
            None = all on, False = off, or ``{"enabled", "sources", "<source>": bool, "mcstat",
            "lumi": {name: kappa}}``). ``index.json`` records per point, per source, the effect
            on the signal in region B, the channels it enters and the clipped kappas.

    Returns:
        the content of ``index.json``.

    Raises:
        DatacardError: ``asimov=False`` without ``unblind=True``; bad ``zero_bkg``; no signal.
    """
    if not asimov and not unblind:
        raise DatacardError(
            f"asimov=False puts data in the observation of region B of the {plane} plane (the signal region), "
            "which unblinds the search; pass unblind=True (CLI: --data --unblind, job: datacards.unblind: true) "
            "to do it on purpose, or keep asimov=True for the blinded background-only Asimov observation")
    unblinded = not asimov
    x0, y0 = parse_wp(wp)
    scfg = systematics_config(systematics)
    with_syst = xy_mt_syst is not None and scfg.enabled
    if with_syst:
        check_syst_histogram(xy_mt_syst, xy_mt)
    if zero_bkg not in ("merge", "floor"):
        raise DatacardError(f"zero_bkg must be 'merge' or 'floor', got '{zero_bkg}'")
    cdir = os.path.join(os.fspath(outdir), "datacards")
    os.makedirs(cdir, exist_ok=True)
    bkg0 = region_yields(xy_mt, datasets, (x0, y0), plane=plane, which="background")
    n_orig = bkg0.n.shape[1]
    if zero_bkg == "merge":
        groups, merges = merge_groups(bkg0.n, min_bkg, bkg0.var, fit_min_neff, var_of=bkg0.group_var)
    else:
        groups, merges = [[i] for i in range(n_orig)], []
    bkg = bkg0.merged(groups)
    floors = []
    bkg_n = bkg.n.copy()
    for r in range(4):
        for i in range(bkg_n.shape[1]):
            if not bkg_n[r, i] > min_bkg:
                floors.append({"region": REGIONS[r], "bin": i, "mt_bins": groups[i], "value": float(bkg_n[r, i]),
                               "floored_to": floor_value})
                log.warning("background %s in %s_%s_%d (M_T bins %s) floored to %g", bkg_n[r, i], plane,
                            REGIONS[r], i, groups[i], floor_value)
                bkg_n[r, i] = floor_value
    # closure bins: fit bins merged until the closure test has min_neff MC events in every region
    cbins, cmerges = merge_groups(bkg.n, min_bkg, bkg.var, min_neff, var_of=bkg.group_var)
    closure_groups = [[o for i in cb for o in groups[i]] for cb in cbins]
    sp, vp = closure_yields(xy_mt, datasets, (x0, y0), nonclosure_method, closure_groups)
    nc = nonclosure_report(sp, vp, nonclosure_method, z=nonclosure_z, min_neff=min_neff)
    for entry, cb in zip(nc["bins"], cbins):
        entry["fit_bins"] = cb
    kappa_c = np.asarray(nc["kappa"])
    unc = np.empty(len(groups))
    for k, cb in enumerate(cbins):
        unc[cb] = kappa_c[k]
    low_neff = [{"closure_bin": k, "mt": mt_bin_label(sp.edges, k), "region": REGIONS[r], "n_eff": float(sp.neff[r, k])}
                for r in range(4) for k in range(len(cbins)) if sp.neff[r, k] < min_neff]
    if low_neff:
        log.warning("%d region(s) of closure bins below N_eff %g after merging every M_T bin: %s", len(low_neff),
                    min_neff, low_neff)
    fit_neff = bkg.neff

    if asimov:
        obs = bkg_n.copy()
        obs[1] = predict(bkg_n[0], bkg_n[2], bkg_n[3], 0, 0, 0)[0]
        obs_label = "background-only Asimov (A,C,D: MC background; B: ABCD prediction nA*nD/nC)"
    else:
        data = region_yields(xy_mt, datasets, (x0, y0), plane=plane, which="data").merged(groups)
        obs = np.round(data.n)
        obs_label = "data"

    sig_names = list(signals) if signals is not None else datasets_of_kind(xy_mt, datasets, "signal")
    if not sig_names:
        raise DatacardError("no signal dataset (kind 'signal') to write datacards for")
    edges = bkg.edges
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    index = {
        "version": __version__, "created": created, "inputs": inputs, "wp": {"x0": x0, "y0": y0},
        "plane": plane, "asimov": bool(asimov), "unblinded": bool(unblinded), "observation": obs_label,
        "lumi_unc": lumi_unc,
        "signal_systematics": dict(signal_systematics or {}), "nonclosure_method": nonclosure_method,
        "nonclosure": [float(k) - 1.0 for k in unc], "nonclosure_kappa": [float(k) for k in unc],
        "closure": nc, "closure_bins": cbins, "closure_merges": cmerges, "min_neff": min_neff,
        "fit_min_neff": fit_min_neff, "below_min_neff": low_neff,
        "fit_n_eff": [dict(zip(REGIONS, (float(v) for v in fit_neff[:, i]))) for i in range(len(groups))],
        "rateparam_range": list(rateparam_range),
        "mt_edges_original": [float(e) for e in bkg0.edges],
        "mt_edges": [float(e) for e in edges], "mt_bins": [mt_bin_label(edges, i) for i in range(len(groups))],
        "last_bin_holds_overflow": True, "mt_groups": groups, "merges": merges, "floors": floors,
        "zero_bkg": zero_bkg, "cards_dir": os.path.abspath(cdir), "points": {}, "cards": [],
        "systematics": {"applied": with_syst, "reason": None if with_syst else (
            "no xy_mt_syst histogram" if xy_mt_syst is None else "switched off in the configuration"),
            "config": scfg.to_dict()},
    }
    bins_txt = ", ".join(f"{i}:{mt_bin_label(edges, i).replace(' ', '')}" for i in range(len(groups)))
    for name in sig_names:
        point = point_name(name, datasets.get(name, {}))
        if point in index["points"]:
            raise DatacardError(f"signal datasets '{index['points'][point]['dataset']}' and '{name}' map to the same point '{point}'")
        sig = _signal_yields(xy_mt, datasets, (x0, y0), plane, name, groups)
        neg = [{"region": REGIONS[r], "bin": int(i), "value": float(sig.n[r, i])} for r, i in np.argwhere(sig.n < 0)]
        if neg:  # negative MC weights: Combine rejects negative rates
            log.warning("signal %s: negative yields %s set to 0", name, neg)
            sig.n = np.clip(sig.n, 0.0, None)
        header = [
            f"Combine datacard, SVJ ABCD search, signal point {point} (dataset {name})",
            f"written by svjscout {__version__} (svjscout.datacards.writer) at {created}",
            f"inputs: {inputs or 'n/a'}",
            f"working point: x0={x0:g} y0={y0:g}, plane {plane}; regions A: X>x0,Y<y0  B: X>x0,Y>y0  C: X<x0,Y<y0  D: X<x0,Y>y0",
            f"M_T bins [GeV] {bins_txt} (the last holds the overflow); merged groups of original bins {groups}",
            "closure bins (kappa of the nonclosure_bin<i> of their fit bins): " + "; ".join(
                f"fit bins {cb}: kappa {kappa_c[k]:.4g} ({nc['bins'][k]['source']})" for k, cb in enumerate(cbins)),
            f"observation: {obs_label}",
            *([f"UNBLINDED: the observation in region B of the {plane} plane (channels {plane}_B_*, the signal region) "
               "is data (written with unblind=True)"] if unblinded else []),
            "bkg: rate = expected yield (B: A*D/C) x rateParam of order 1; B_i rateParam = A_i*D_i/C_i; "
            f"non-closure ({nonclosure_method}) lnN kappa on bkg in B_i; lumi lnN {lumi_unc:g} on sig",
        ]
        card_kw, syst = {}, None
        if with_syst:
            syst = _signal_nuisances(xy_mt, xy_mt_syst, datasets, (x0, y0), groups, name, plane, config=scfg,
                                     lumi_unc=lumi_unc)
            rows = syst.card_rows()
            clash = sorted(({*syst.lumi, *(signal_systematics or {})} & {r for r, _ in rows})
                           | ({*syst.lumi} & {*(signal_systematics or {})}))
            if clash:
                raise DatacardError(f"signal point {point}: nuisance name(s) {clash} defined twice (luminosity rows, "
                                    "signal_systematics and the sources of xy_mt_syst must have distinct names)")
            card_kw = {"lumi": syst.lumi, "sig_rows": rows}
            header[-1] = header[-1].rsplit("; lumi lnN", 1)[0] + "; sig: " + ", ".join(
                f"{k} lnN {kappa_text(v)}" for k, v in syst.lumi.items())
            header.append(f"signal systematics (lnN kdown/kup per channel, from xy_mt_syst): "
                          f"{', '.join(syst.sources) or 'none'}"
                          + (f"; not in this card: {', '.join(f'{k} ({v})' for k, v in syst.skipped.items())}"
                             if syst.skipped else "")
                          + f"; signal MC statistics: {len(syst.mcstat)} mcstat_<channel> lnN")
        text = format_card(point, bkg_n, sig.n, obs, unc, plane, lumi_unc, signal_systematics, rateparam_range, header,
                           **card_kw)
        pdir = os.path.join(cdir, point)
        os.makedirs(pdir, exist_ok=True)
        path = os.path.join(pdir, CARD_NAME)
        with open(path, "w") as f:
            f.write(text)
        if validate:
            validate_datacard(parse_text(text, path))
        rel = os.path.join(point, CARD_NAME)
        meta = datasets.get(name, {})
        index["points"][point] = {
            "dataset": name, "mzprime": meta.get("mzprime"), "rinv": meta.get("rinv"), "card": rel,
            "signal_yield": {r: float(sig.n[k].sum()) for k, r in enumerate(REGIONS)},
            "bins_without_signal_in_B": [mt_bin_label(edges, i) for i in np.flatnonzero(~(sig.n[1] > 0))],
            "negative_signal_set_to_zero": neg,
        }
        if syst is not None:
            index["points"][point]["systematics"] = syst.to_index()
        index["cards"].append(rel)
        log.info("wrote %s", path)
    with open(os.path.join(cdir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    return index
