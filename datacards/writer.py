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
  bin (:mod:`.nonclosure`, rule ``continuous`` by default). Fit bins and closure bins are one
  binning: the statistics guard (:mod:`.guard`) merges adjacent M_T bins until every region of
  every bin holds ``min_neff`` effective MC events and the prediction's MC error is at most
  ``max_rel_err``, so each bin's kappa is its own closure's. The nuisances stay uncorrelated
  between fit bins: one nuisance shared by all bins would let the signal-free bins of region B
  calibrate the others (a flat non-closure assumed, not measured; docs/datacards.md);
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
  line and ``"unblinded": true`` in ``index.json``. With ``pseudo_data: SEED`` the observation is
  Poisson pseudo-data drawn from the MC (:mod:`.pseudodata`; optionally signal-injected): A, C, D
  drawn, B of the signal plane blinded (``n_A n_D / n_C`` of the drawn A, C, D) unless ``unblind``;
  the cards carry ``PSEUDO-DATA:`` as first header line and ``index.json`` ``"pseudo_data"`` (seed,
  injection, the VP closure on the pseudo-data).

M_T bins with too little MC: with ``zero_bkg="merge"`` (default) the guard's groups (above). If the
point fails the guard even with every M_T bin merged, nothing is written (:class:`UnbackedError`,
one paragraph saying why) unless ``allow_unbacked``: the cards then carry ``UNBACKED:`` as their
first header line and ``index.json`` ``"backed": false`` with the reasons. With
``zero_bkg="floor"`` bins are not merged and offending yields are set to ``floor_value``. The
last M_T bin holds the overflow (``[lo, inf)``). Groups, merges and floors are reported in
``DIR/datacards/index.json``, with the SHA-256 of each card (``points.<point>.sha256``). Card
texts hold no time stamp: the same inputs give the same bytes. Negative signal yields (negative
MC weights) are set to 0 and listed per point in the index.

Example:
    >>> # index = write_datacards(StatInputs.from_output(output), datasets, (0.775, 0.875), "out/", settings)
    >>> # index["points"]["svj_mz2000_rinv0.3"]["card"]
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from svjscout import __version__
from svjscout.core.constants import LUMI_UNCERTAINTY
from svjscout.core.exceptions import DatacardError, UnbackedError
from svjscout.core.formats import card_number
from svjscout.core.regions import REGIONS

from .abcd import predict
from .guard import UNBACKED, Guard, Verdict, group_problems, guarded_groups
from .guard import merge_groups as _merge
from .integrity import card_sha256
from .nonclosure import closure_yields, mt_bin_label, nonclosure_report
from .parents import StatInputs
from .parser import parse_text, validate_datacard
from .plots import point_name
from .pseudodata import PSEUDO_TAG, blinded_b, draw_pseudo_data, vp_closure
from .pyhf_export import META_NAME, WORKSPACE_NAME, import_pyhf, write_workspace
from .regions import RegionYields, datasets_of_kind, parse_wp, region_yields
from .settings import DatacardSettings
from .systematics import check_syst_histogram, kappa_text, row_tokens, systematics_config
from .systematics import signal_systematics as _signal_nuisances

log = logging.getLogger(__name__)

CARD_NAME = "datacard.txt"
#: the regions as the card headers describe them (svjscout.core.regions; the headers' text of before)
REGION_TEXT = "A: X>x0,Y<y0  B: X>x0,Y>y0  C: X<x0,Y<y0  D: X<x0,Y>y0"


def merge_groups(bkg: np.ndarray, min_bkg: float = 0.0, var: np.ndarray | None = None,
                 min_neff: float = 0.0, var_of=None) -> tuple[list[list[int]], list[dict]]:
    """:func:`.guard.merge_groups` with only a yield and an N_eff threshold (no bound on the
    prediction's error): groups of M_T bins with background > ``min_bkg`` and Kish N_eff >=
    ``min_neff`` in every region (``var`` of shape ``(4, n_mt)``, or ``var_of(group)``)."""
    if min_neff > 0 and var is None and var_of is None:
        raise DatacardError("merge_groups: min_neff needs the variances (var)")
    v = np.zeros_like(np.asarray(bkg, float)) if var is None else var
    return _merge(bkg, v, Guard(min_neff, np.inf), min_bkg, var_of)


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
    lumi_unc: float = LUMI_UNCERTAINTY,
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
              f"kmax {len(systs) + len(sig_rows) + n}  number of nuisance parameters (lnN, gmN; "
              "rateParams not counted)"]
    sep = "-" * 80
    lines.append(sep)
    lines.append("shapes * * FAKE")
    lines.append(sep)
    lines += _align([["bin", *chans], ["observation", *[card_number(obs[r, i]) for r, i in ridx]]])
    rate_b = bkg[0] * bkg[3] / bkg[2]
    bkg_rate = {(r, i): (rate_b[i] if r == "B" else bkg[REGIONS.index(r), i]) for i in range(n) for r in REGIONS}
    lines.append(sep)
    cols = [(c, p) for c in chans for p in ("sig", "bkg")]
    rows = [
        ["bin", "", *[c for c, _ in cols]],
        ["process", "", *[p for _, p in cols]],
        ["process", "", *["0" if p == "sig" else "1" for _, p in cols]],
        ["rate", "", *[card_number(sig[r, i]) if p == "sig" else card_number(bkg_rate[(REGIONS[r], i)])
                       for (r, i) in ridx for p in ("sig", "bkg")]],
    ]
    srows = []
    for name, kappa in systs.items():
        srows.append([name, "lnN", *[kappa_text(kappa) if p == "sig" else "-" for _, p in cols]])
    for row in sig_rows:  # lnN, or gmN N with alpha in the sig column (signal MC statistics below N_eff 10)
        srows.append(row_tokens(row, ridx))
    for i in range(n):
        srows.append([f"nonclosure_bin{i}", "lnN",
                      *[card_number(nonclosure[i]) if (p == "bkg" and c == f"{plane}_B_{i}") else "-"
                        for c, p in cols]])
    body = _align(rows + [["-" * 3]] + srows)
    lines += body[:4] + [sep] + body[5:]
    rp = []
    for i in range(n):
        for r in ("A", "C", "D"):
            rp.append([f"bkg_{plane}_{r}_{i}", "rateParam", f"{plane}_{r}_{i}", "bkg", "1",
                       f"[{card_number(rateparam_range[0])},{card_number(rateparam_range[1])}]"])
        rp.append([f"bkg_{plane}_B_{i}", "rateParam", f"{plane}_B_{i}", "bkg", "(@0*@1/@2)",
                   f"bkg_{plane}_A_{i},bkg_{plane}_D_{i},bkg_{plane}_C_{i}"])
    lines.append(sep)
    lines += _align(rp)
    return "\n".join(lines) + "\n"


def _signal_yields(inputs: StatInputs, datasets, wp, plane, name, groups) -> RegionYields:
    return region_yields(inputs.xy_mt, datasets, wp, plane=plane, which=name, parents=inputs.parents).merged(groups)


def card_settings(settings: DatacardSettings | None = None, **overrides) -> DatacardSettings:
    """``settings`` (default: :class:`.settings.DatacardSettings`'s defaults) with ``overrides``
    of its keys (not re-validated: the card writer refuses what it cannot write, e.g.
    ``asimov=False`` without ``unblind``).

    Raises:
        DatacardError: a key that is not a datacards setting (names it).
    """
    settings = settings if settings is not None else DatacardSettings()
    unknown = sorted(set(overrides) - set(DatacardSettings.model_fields))
    if unknown:
        raise DatacardError(f"unknown datacards setting(s) {unknown}; the keys are "
                            f"{sorted(DatacardSettings.model_fields)}")
    if not overrides:
        return settings
    if "rateparam_range" in overrides:
        overrides["rateparam_range"] = tuple(overrides["rateparam_range"])
    if overrides.get("signal_systematics") is None and "signal_systematics" in overrides:
        overrides["signal_systematics"] = {}
    return settings.model_copy(update=overrides)


def write_datacards(
    inputs,
    datasets: Mapping[str, Mapping],
    wp,
    outdir: str | os.PathLike,
    settings: DatacardSettings | None = None,
    *,
    systematics=None,
    signals: Sequence[str] | None = None,
    source: str = "",
    validate: bool = True,
    xy_mt_syst=None,
    syst_nominal=None,
    unbacked_reasons: Sequence[str] = (),
    provenance: Mapping | None = None,
    **overrides,
) -> dict:
    """Write one ABCD datacard per signal point and ``index.json`` into ``outdir/datacards``.

    Args:
        inputs: the statistics inputs, :class:`.parents.StatInputs` (``xy_mt``, a histogram
            ``(dataset, plane, x, y, mt)``, and its parent records: parent-aware MC variances),
            or a bare ``xy_mt`` (no parent records).
        datasets: dataset metadata.
        wp: working point ``(x0, y0)`` on x/y bin edges.
        outdir: output folder DIR; cards go to ``DIR/datacards/POINT/datacard.txt``.
        settings: the datacards stage's settings, :class:`.settings.DatacardSettings` (the job's
            ``datacards:`` block; None: its defaults): ``asimov`` (observation = background-only
            Asimov, or data: needs kind "data" and ``unblind``), ``unblind``, ``lumi_unc``,
            ``nonclosure_method`` and ``nonclosure_z`` (:mod:`.nonclosure`), the statistics guard
            ``min_neff`` and ``max_rel_err`` (:mod:`.guard`; fit bins are the closure bins),
            ``allow_unbacked`` (write the cards where the guard fails, or ``unbacked_reasons``
            is not empty, stamped UNBACKED), ``rateparam_range``, ``zero_bkg`` ("merge": merge M_T
            bins, then floor if needed; "floor"), ``min_bkg``, ``floor_value``, ``plane`` (whose
            regions enter the fit) and ``signal_systematics`` (extra lnN on the signal).
        systematics: which signal systematics to write (:func:`.systematics.systematics_config`:
            None = all on, False = off, or ``analysis.systematics``). ``index.json`` records per
            point, per source, the effect on the signal in region B, the channels it enters and
            the clipped kappas.
        signals: signal datasets (default all of kind "signal").
        source: description of the input (e.g. the histograms file) for card headers and index.
        validate: parse and validate every written card (:func:`.parser.validate_datacard`).
        xy_mt_syst: the processor's signal variations ``(dataset, syst, plane, x, y, mt)``
            (:mod:`.systematics`); None: no signal systematics (the cards are exactly those of
            before, whatever ``systematics`` says).
        syst_nominal: the ``xy_mt`` that ``xy_mt_syst`` was filled with, when the cards are written
            from another one (a half of the MC, :mod:`.split`): the sources' relative effects come
            from it and ``xy_mt_syst``; default ``inputs.xy_mt``.
        unbacked_reasons: why the caller already knows the point is not backed (e.g. the scan
            rules it fails, or a working point chosen on the events its figures are quoted on).
        provenance: extra JSON-safe facts for ``index.json`` (e.g. which half of the MC).
        **overrides: settings keys replacing those of ``settings`` (:func:`card_settings`),
            e.g. ``min_neff=1e9``.

    Returns:
        the content of ``index.json``.

    Raises:
        UnbackedError: the point fails the statistics guard (or ``unbacked_reasons``) and
            ``allow_unbacked`` is False: nothing is written.
        DatacardError: ``asimov=False`` without ``unblind=True``; bad ``zero_bkg``; no signal; an
            unknown settings key.
    """
    inputs = StatInputs.of(inputs)
    cs = card_settings(settings, **overrides)
    pseudo = None
    if cs.pseudo_data is not None:  # the data path on Poisson pseudo-data drawn from the MC (.pseudodata)
        if not cs.asimov:
            raise DatacardError("pseudo_data and asimov=False (real data) exclude each other: the observation is "
                                "either pseudo-data or data")
        inputs, datasets, pseudo = draw_pseudo_data(inputs, datasets, cs.pseudo_data, cs.pseudo_inject,
                                                    cs.pseudo_signal)
    elif cs.pseudo_inject:
        raise DatacardError("pseudo_inject is set without pseudo_data (the seed of the pseudo-data)")
    xy_mt = inputs.xy_mt
    asimov, unblind, lumi_unc, plane = cs.asimov, cs.unblind, cs.lumi_unc, cs.plane
    nonclosure_method, nonclosure_z, min_neff, max_rel_err = (cs.nonclosure_method, cs.nonclosure_z, cs.min_neff,
                                                              cs.max_rel_err)
    zero_bkg, min_bkg, floor_value = cs.zero_bkg, cs.min_bkg, cs.floor_value
    rateparam_range, allow_unbacked = tuple(cs.rateparam_range), cs.allow_unbacked
    signal_systematics = dict(cs.signal_systematics)
    if not asimov and not unblind:
        raise DatacardError(
            f"asimov=False puts data in the observation of region B of the {plane} plane (the signal region), "
            "which unblinds the search; pass unblind=True (CLI: --data --unblind, job: datacards.unblind: true) "
            "to do it on purpose, or keep asimov=True for the blinded background-only Asimov observation")
    unblinded = not asimov
    if "pyhf" in cs.formats:
        import_pyhf()  # before any card: a missing pyhf names its extra
    x0, y0 = parse_wp(wp)
    scfg = systematics_config(systematics)
    with_syst = xy_mt_syst is not None and scfg.enabled
    nominal = xy_mt if syst_nominal is None else syst_nominal
    if with_syst:
        check_syst_histogram(xy_mt_syst, nominal)
    if zero_bkg not in ("merge", "floor"):
        raise DatacardError(f"zero_bkg must be 'merge' or 'floor', got '{zero_bkg}'")
    guard = Guard(min_neff, max_rel_err)
    bkg0 = region_yields(xy_mt, datasets, (x0, y0), plane=plane, which="background", parents=inputs.parents)
    n_orig = bkg0.n.shape[1]
    if zero_bkg == "merge":
        groups, merges, verdict = guarded_groups(bkg0.n, bkg0.var, guard, min_bkg, var_of=bkg0.group_var,
                                                 edges=bkg0.edges)
    else:
        groups, merges = [[i] for i in range(n_orig)], []
        floor_reasons = [f"M_T bin {i} (not merged): {', '.join(p)}" for i in range(n_orig)
                         if (p := group_problems(bkg0.n[:, i], bkg0.var[:, i], guard, min_bkg))]
        verdict = Verdict(not floor_reasons, floor_reasons)
    # the caller's reasons may already hold the guard's (the same words): each said once
    reasons = [*unbacked_reasons, *(r for r in verdict.reasons if not any(r in u for u in unbacked_reasons))]
    backed = not reasons
    if not backed and not allow_unbacked:
        raise UnbackedError(unbacked_paragraph((x0, y0), guard, reasons))
    cdir = os.path.join(os.fspath(outdir), "datacards")
    os.makedirs(cdir, exist_ok=True)
    bkg = bkg0.merged(groups)
    floors = []
    bkg_n = bkg.n.copy()
    for r in range(len(REGIONS)):
        for i in range(bkg_n.shape[1]):
            if not bkg_n[r, i] > min_bkg:
                floors.append({"region": REGIONS[r], "bin": i, "mt_bins": groups[i], "value": float(bkg_n[r, i]),
                               "floored_to": floor_value})
                log.warning("background %s in %s_%s_%d (M_T bins %s) floored to %g", bkg_n[r, i], plane,
                            REGIONS[r], i, groups[i], floor_value)
                bkg_n[r, i] = floor_value
    # closure bins = fit bins (the guard's groups): each fit bin's kappa is its own closure's
    cbins = [[i] for i in range(len(groups))]
    sp, vp = closure_yields(xy_mt, datasets, (x0, y0), nonclosure_method, groups, parents=inputs.parents)
    nc = nonclosure_report(sp, vp, nonclosure_method, z=nonclosure_z, min_neff=min_neff)
    for entry, cb in zip(nc["bins"], cbins):
        entry["fit_bins"] = cb
    kappa_c = np.asarray(nc["kappa"])
    unc = kappa_c.copy()
    low_neff = [{"closure_bin": k, "mt": mt_bin_label(sp.edges, k), "region": REGIONS[r], "n_eff": float(sp.neff[r, k])}
                for r in range(len(REGIONS)) for k in range(len(cbins)) if sp.neff[r, k] < min_neff]
    fit_neff = bkg.neff

    if pseudo is not None:
        data = region_yields(xy_mt, datasets, (x0, y0), plane=plane, which="data",
                             parents=inputs.parents).merged(groups)
        obs = np.round(data.n)
        b_seen = unblind or plane != "SP"  # region B of the signal plane is blinded unless unblind
        if not b_seen:
            obs[1] = blinded_b(obs)
        pseudo["b_observation"] = ("pseudo-data" + (" (unblind)" if plane == "SP" else "") if b_seen else
                                   "blinded: the ABCD prediction nA*nD/nC of the observed pseudo-data A, C, D")
        pseudo["vp_closure"] = vp_closure(xy_mt, datasets, (x0, y0), groups)
        for b, entry in zip(pseudo["vp_closure"]["bins"], nc["bins"]):  # the MC's own VP closure, for comparison
            b["mc_delta"], b["mc_delta_err"] = entry.get("VP", {}).get("delta"), entry.get("VP", {}).get("sigma_delta")
        obs_label = (f"{PSEUDO_TAG} (seed {pseudo['seed']}; A, C, D: pseudo-data; B: {pseudo['b_observation']}), "
                     "not data")
    elif asimov:
        obs = bkg_n.copy()
        obs[1] = predict(bkg_n[0], bkg_n[2], bkg_n[3], 0, 0, 0)[0]
        obs_label = "background-only Asimov (A,C,D: MC background; B: ABCD prediction nA*nD/nC)"
    else:
        data = region_yields(xy_mt, datasets, (x0, y0), plane=plane, which="data",
                             parents=inputs.parents).merged(groups)
        obs = np.round(data.n)
        obs_label = "data"

    sig_names = list(signals) if signals is not None else datasets_of_kind(xy_mt, datasets, "signal")
    if not sig_names:
        raise DatacardError("no signal dataset (kind 'signal') to write datacards for")
    edges = bkg.edges
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    index = {
        "version": __version__, "created": created, "inputs": source, "wp": {"x0": x0, "y0": y0},
        "plane": plane, "asimov": bool(asimov and pseudo is None), "unblinded": bool(unblinded),
        "observation": obs_label, **({"pseudo_data": pseudo} if pseudo is not None else {}),
        "lumi_unc": lumi_unc,
        "signal_systematics": dict(signal_systematics or {}), "nonclosure_method": nonclosure_method,
        "nonclosure": [float(k) - 1.0 for k in unc], "nonclosure_kappa": [float(k) for k in unc],
        "backed": backed, "verdict": verdict_record(backed, guard, reasons),
        "closure": nc, "closure_bins": cbins, "min_neff": min_neff, "max_rel_err": max_rel_err,
        "below_min_neff": low_neff, **({"provenance": dict(provenance)} if provenance else {}),
        "fit_n_eff": [dict(zip(REGIONS, (float(v) for v in fit_neff[:, i]))) for i in range(len(groups))],
        "rateparam_range": list(rateparam_range),
        "mt_edges_original": [float(e) for e in bkg0.edges],
        "mt_edges": [float(e) for e in edges], "mt_bins": [mt_bin_label(edges, i) for i in range(len(groups))],
        "last_bin_holds_overflow": True, "mt_groups": groups, "merges": merges, "floors": floors,
        "zero_bkg": zero_bkg, "cards_dir": os.path.abspath(cdir), "points": {}, "cards": [],
        "systematics": {"applied": with_syst, "reason": None if with_syst else (
            "no xy_mt_syst histogram" if xy_mt_syst is None else "switched off in the configuration"),
            "config": scfg.model_dump()},
    }
    bins_txt = ", ".join(f"{i}:{mt_bin_label(edges, i).replace(' ', '')}" for i in range(len(groups)))
    for name in sig_names:
        point = point_name(name, datasets.get(name, {}))
        if point in index["points"]:
            raise DatacardError(f"signal datasets '{index['points'][point]['dataset']}' and '{name}' map to the same "
                                f"point '{point}'")
        sig = _signal_yields(inputs, datasets, (x0, y0), plane, name, groups)
        neg = [{"region": REGIONS[r], "bin": int(i), "value": float(sig.n[r, i])} for r, i in np.argwhere(sig.n < 0)]
        if neg:  # negative MC weights: Combine rejects negative rates
            log.warning("signal %s: negative yields %s set to 0", name, neg)
            sig.n = np.clip(sig.n, 0.0, None)
        header = [
            *([f"{PSEUDO_TAG}: the observation is pseudo-data drawn from the MC (seed {pseudo['seed']}"
               + (f", {pseudo['inject']:g} x {pseudo['signal']} injected" if pseudo['inject'] else "")
               + "), NOT data"] if pseudo is not None else []),
            *([f"{UNBACKED}: not backed by the MC: " + "; ".join(reasons)] if not backed else []),
            f"Combine datacard, SVJ ABCD search, signal point {point} (dataset {name})",
            f"written by svjscout {__version__} (svjscout.datacards.writer)",
            f"inputs: {source or 'n/a'}",
            f"working point: x0={x0:g} y0={y0:g}, plane {plane}; regions {REGION_TEXT}",
            f"M_T bins [GeV] {bins_txt} (the last holds the overflow); merged groups of original bins {groups}",
            f"statistics guard: {guard.describe()} ({'passed' if verdict.backed else 'FAILED'}); fit bins = closure "
                  f"bins",
            "non-closure kappa per fit bin: " + "; ".join(
                f"{k}: {kappa_c[k]:.4g} ({nc['bins'][k]['source']})" for k in range(len(cbins))),
            f"observation: {obs_label}",
            *([f"UNBLINDED: the observation in region B of the {plane} plane (channels {plane}_B_*, the signal region) "
               "is data (written with unblind=True)"] if unblinded else []),
            "bkg: rate = expected yield (B: A*D/C) x rateParam of order 1; B_i rateParam = A_i*D_i/C_i; "
            f"non-closure ({nonclosure_method}) lnN kappa on bkg in B_i; lumi lnN {lumi_unc:g} on sig",
        ]
        card_kw, syst = {}, None
        if with_syst:
            syst = _signal_nuisances(nominal, xy_mt_syst, datasets, (x0, y0), groups, name, plane, config=scfg,
                                     gmn=True,
                                     card_xy_mt=None if syst_nominal is None else xy_mt,
                                     lumi_unc=lumi_unc, parents=inputs.parents)
            rows = syst.card_rows()
            clash = sorted(({*syst.lumi, *(signal_systematics or {})} & {r for r, _ in rows})
                           | ({*syst.lumi} & {*(signal_systematics or {})}))
            if clash:
                raise DatacardError(f"signal point {point}: nuisance name(s) {clash} defined twice (luminosity rows, "
                                    "signal_systematics and the sources of xy_mt_syst must have distinct names)")
            card_kw = {"lumi": syst.lumi, "sig_rows": rows}
            header[-1] = header[-1].rsplit("; lumi lnN", 1)[0] + "; sig: " + ", ".join(
                f"{k} lnN {kappa_text(v)}" for k, v in syst.lumi.items())
            header.append(f"signal systematics (one normalisation per source and region, lnN k or kdown/kup, from "
                          "xy_mt_syst): "
                          f"{', '.join(syst.sources) or 'none'}"
                          + (f"; not in this card: {', '.join(f'{k} ({v})' for k, v in syst.skipped.items())}"
                             if syst.skipped else "")
                          + f"; signal MC statistics: {len(syst.mcstat)} mcstat_<channel> lnN (N_eff >= 10), "
                          f"{len(syst.mcstat_gmn)} gmN (below)")
        text = format_card(point, bkg_n, sig.n, obs, unc, plane, lumi_unc, signal_systematics, rateparam_range, header,
                           **card_kw)
        pdir = os.path.join(cdir, point)
        os.makedirs(pdir, exist_ok=True)
        path = os.path.join(pdir, CARD_NAME)
        with open(path, "w") as f:
            f.write(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if validate:
            validate_datacard(parse_text(text, path))
        rel = os.path.join(point, CARD_NAME)
        meta = datasets.get(name, {})
        index["points"][point] = {
            "dataset": name, "mzprime": meta.get("mzprime"), "rinv": meta.get("rinv"), "card": rel, "sha256": digest,
            "signal_yield": {r: float(sig.n[k].sum()) for k, r in enumerate(REGIONS)},
            "bins_without_signal_in_B": [mt_bin_label(edges, i) for i in np.flatnonzero(~(sig.n[1] > 0))],
            "negative_signal_set_to_zero": neg,
        }
        if syst is not None:
            index["points"][point]["systematics"] = syst.to_index()
        if "pyhf" in cs.formats:
            ws_path, ws_meta = write_workspace(parse_text(text, path))
            index["points"][point]["workspace"] = {
                "path": os.path.join(point, WORKSPACE_NAME), "metadata": os.path.join(point, META_NAME),
                "sha256": card_sha256(ws_path), "signal_scale": ws_meta["signal_scale"]}
            log.info("wrote %s", ws_path)
        index["cards"].append(rel)
        log.info("wrote %s", path)
    if "pyhf" in cs.formats:
        index["formats"] = list(cs.formats)
        index["workspaces"] = [index["points"][p]["workspace"]["path"] for p in index["points"]]
    with open(os.path.join(cdir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    return index


def unbacked_paragraph(wp, guard: Guard, reasons: Sequence[str]) -> str:
    """One paragraph saying why no card is written at ``wp`` and what to do."""
    return (f"No datacards at the working point (x0, y0) = ({wp[0]:.3f}, {wp[1]:.3f}): the background MC does not "
            f"back it. The statistics guard asks for {guard.describe()}, fit bins equal to closure bins, after "
            "merging adjacent M_T bins; here: " + "; ".join(reasons) + ". Numbers made of a handful of MC events "
            "(limits, closure, <Z_A>) would be artefacts. Generate more background MC, loosen the working point, "
            "or pass --allow-unbacked (job: datacards.allow_unbacked: true) to write them anyway, stamped "
            f"{UNBACKED} in every card, limits.json, summary.md and figure.")


def verdict_record(backed: bool, guard: Guard, reasons: Sequence[str]) -> dict:
    """The verdict as ``index.json`` and ``limits.json`` carry it."""
    return {"backed": bool(backed), "label": "backed" if backed else UNBACKED,
            "guard": {"min_neff": guard.min_neff, "max_rel_err": guard.max_rel_err}, "reasons": list(reasons)}
