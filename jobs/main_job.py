"""The main job, ``svjscout run``: histograms -> ABCD -> working point -> datacards -> limits -> plots.

Stages (each with a progress line on stderr, each timed in ``timings.json``):

1. ``process``: the coffea processor over the job's datasets (dask by default);
   writes ``histograms.coffea``, ``histograms.root``, ``cutflow.json``;
2. ``scan``: the working-point grid scan (always run, it is cheap; its choice is used only with
   ``--scan`` or ``scan.enabled``); writes ``scan.csv`` and heat maps;
3. ``datacards``: ABCD closure at the WP and one Combine card per signal point;
4. ``limits``: quick asymptotic CLs limits -> ``limits.json`` and limit plots;
5. ``validate``: fit validation of the cards (``validation/``; ``validation.enabled``);
6. ``report``: the closure plots, M_T per region, X-Y planes, controls (PDF + PNG), ``summary.md``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from svjscout import datacards as dc
from svjscout.core.exceptions import UnbackedError
from svjscout.core.progress import make_progress
from svjscout.core.regions import PLANES, REGIONS
from svjscout.datacards.abcd import abcd_from_yields
from svjscout.datacards.choice import choose_working_point
from svjscout.datacards.guard import UNBACKED, guarded_groups
from svjscout.datacards.parents import StatInputs
from svjscout.datacards.regions import region_yields
from svjscout.datacards.style import PlotStyle
from svjscout.jobs import provenance, report
from svjscout.jobs.config import JobConfig, scan_subsets
from svjscout.jobs.outputs import RunOutputs
from svjscout.jobs.runner import run_processor, save_outputs

log = logging.getLogger(__name__)

STAGES = ("process", "scan", "datacards", "limits", "validate", "report")


def _closure_tables(inputs: StatInputs, datasets, wp, groups=None) -> dict:
    """Background-MC closure per fit bin (the guard's M_T ``groups``; None: the M_T bins) in SP and VP, JSON-safe:
    undefined numbers are None (never NaN).

    ``defined[i]`` is False for a bin without events (no prediction, or B and its prediction both
    empty); such bins are not in ``chi2``/``ndf``.
    """
    def _finite_or_none(v) -> float | None:
        v = float(v)
        return v if np.isfinite(v) else None

    inputs = StatInputs.of(inputs)
    out = {}
    for plane in PLANES:
        y = region_yields(inputs.xy_mt, datasets, wp, plane=plane, which="background", parents=inputs.parents)
        y = y if groups is None else y.merged(groups)
        t = abcd_from_yields(y)
        out[plane] = {"edges": t.edges.tolist(), "defined": [bool(d) for d in t.defined],
                      "n_eff": [dict(zip(REGIONS, (float(v) for v in y.neff[:, i]))) for i in range(y.n.shape[1])],
                      **{k: [_finite_or_none(v) for v in arr] for k, arr in
                         (("n_b", t.n_B), ("nhat_b", t.nhat_B), ("delta", t.delta), ("pull", t.pull))},
                      "chi2": _finite_or_none(t.chi2), "ndf": int(t.ndf), "pvalue": _finite_or_none(t.pvalue)}
    return out


def guarded_groups_at(inputs: StatInputs, datasets, wp, guard) -> list[list[int]]:
    """The fit bins (M_T groups) the statistics guard gives at ``wp`` (what the card writer uses)."""
    inputs = StatInputs.of(inputs)
    y = region_yields(inputs.xy_mt, datasets, wp, plane="SP", which="background", parents=inputs.parents)
    return guarded_groups(y.n, y.var, guard, var_of=y.group_var)[0]


def card_kw(settings: dc.DatacardSettings, systematics=None, output=None) -> dict:
    """The card writer's keywords besides the statistics inputs (one place for ``run``, ``svjscout
    datacards`` and ``validate``): the datacards stage's settings whole, ``analysis.systematics``,
    and the run output's signal variations with the full-sample ``xy_mt`` they were filled with."""
    kw = {"settings": settings, "systematics": systematics}
    if output is not None:
        kw |= {"xy_mt_syst": output["hists"].get("xy_mt_syst"), "syst_nominal": output["hists"]["xy_mt"]}
    return kw


def card_inputs(job_name: str) -> str:
    """The cards' ``inputs:`` header line (the same from ``run`` and from ``svjscout datacards``)."""
    return f"histograms.coffea of job {job_name}"


def run_job(cfg: JobConfig, outdir: str | Path, use_scan: bool | None = None, progress: bool = True,
            overwrite: bool = False, resume: bool = False, overrides: dict | None = None) -> dict:
    """Run the whole chain; return a dict of what was written (paths, WP, limits).

    The output folder is checked first (:class:`~svjscout.jobs.outputs.RunOutputs`): a folder with
    an earlier run's outputs is refused unless ``overwrite`` (its files are removed) or ``resume``
    (same configuration digest). ``manifest.json`` and ``provenance.json`` are always written.
    """
    outdir = Path(outdir)
    started = provenance.utc_now()
    state: dict = {}
    with RunOutputs(outdir, provenance.run_digest(cfg), cfg.name, overwrite=overwrite, resume=resume,
                    command=sys.argv):
        try:
            return _run_stages(cfg, outdir, use_scan, progress, overrides or {}, state)
        finally:
            provenance.write(outdir, provenance.collect(cfg, overrides or {}, started, state.get("report"),
                                                        state.get("wp")))


def _run_stages(cfg: JobConfig, outdir: Path, use_scan: bool | None, progress: bool, overrides: dict,
                state: dict) -> dict:
    use_scan = cfg.scan.enabled if use_scan is None else use_scan
    timings: dict[str, float] = {}
    with make_progress() as bar:
        task = bar.add_task("svjscout run", total=len(STAGES))

        def stage(name):
            bar.update(task, description=f"svjscout run: {name}")
            return time.perf_counter()

        t = stage("process")
        output, _ = run_processor(cfg, progress=progress)
        state["report"] = output["report"]
        timings["process"] = time.perf_counter() - t
        bar.advance(task)

        t = stage("scan")
        # detector copies: the parent records go with xy_mt (StatInputs), so every region/M_T-group
        # variance downstream (scan, mt_abcd, closure, cards, validation, plots) is parent-aware
        full = StatInputs.from_output(output)
        datasets = output["datasets"]
        rules = cfg.scan.rules(cfg.datacards)
        subsets = scan_subsets(cfg)
        choice = choose_working_point(output, rules, grid=cfg.scan.grid(), reference=cfg.scan.reference,
                                      use_scan=use_scan, configured=cfg.analysis.wp, split=cfg.scan.split,
                                      seed=cfg.scan.split_seed, subsets=subsets)
        state["verdict"] = verdict = {"backed": choice.backed, "text": choice.verdict(), "reasons": choice.reasons,
                                      "caveats": choice.caveats, "split": choice.split}
        style = PlotStyle.from_config(cfg, stamp=None if choice.backed else UNBACKED)
        dc.write_scan(choice.scan, outdir, style=style)
        wp, wp_source, row = choice.wp, choice.source, choice.row
        # every region-split output at the run's one working point, from the xy_mt the cards use
        output["hists"]["mt_abcd"] = dc.mt_abcd_at(full.xy_mt, wp, parents=full.parents)
        output["wp"] = state["wp"] = {"x0": wp[0], "y0": wp[1], "source": wp_source, "backed": choice.backed,
                                      "reasons": choice.reasons, "split": choice.split,
                                      "split_seed": cfg.scan.split_seed,
                                      "split_subsets": (None if subsets is None or not choice.split
                                                        else {k: list(v) for k, v in subsets.items()})}
        save_outputs(output, outdir)
        timings["scan"] = time.perf_counter() - t
        bar.advance(task)

        t = stage("datacards")
        quote = choice.inputs
        groups = guarded_groups_at(quote, datasets, wp, rules.guard)
        closure = _closure_tables(quote, datasets, wp, groups)
        try:
            index = dc.write_datacards(quote, datasets, wp, outdir,
                                       **card_kw(cfg.datacards, cfg.analysis.systematics, output),
                                       source=card_inputs(cfg.name), unbacked_reasons=choice.reasons,
                                       provenance={"wp_source": wp_source, "split": choice.split,
                                                   "split_seed": cfg.scan.split_seed})
        except UnbackedError as err:
            timings["datacards"] = time.perf_counter() - t
            report.write_summary(outdir, cfg.name, output, wp, wp_source, row, closure, None, None, timings, cfg=cfg,
                                 overrides=overrides, validation=None, verdict=verdict, refused=str(err))
            raise
        timings["datacards"] = time.perf_counter() - t
        bar.advance(task)

        t = stage("limits")
        limits = dc.quick_limits(outdir / "datacards")
        for entry in limits.values():
            if isinstance(entry, dict):
                entry["backed"] = choice.backed
                entry["verdict"] = choice.verdict()
        (outdir / "limits.json").write_text(json.dumps(limits, indent=1))
        dc.plot_limits(limits, datasets, outdir, style=style)
        timings["limits"] = time.perf_counter() - t
        bar.advance(task)

        t = stage("validate")
        validation = None
        if cfg.validation.enabled:
            validation = dc.write_validation(outdir, quote, datasets, index, limits, cfg.validation, style=style,
                                             card_kw=card_kw(cfg.datacards, cfg.analysis.systematics, output))
        timings["validate"] = time.perf_counter() - t
        bar.advance(task)

        t = stage("report")
        for plane in PLANES:
            report.plot_closure(quote, datasets, wp, outdir, plane, index=index, style=style)
            report.plot_mt_regions(output, outdir, wp, plane, style=style)
        report.plot_xy_plane(output, outdir, wp, style=style)
        report.plot_controls(output, outdir, style=style)
        if output["hists"].get("xy_mt_syst") is not None:  # nominal/up/down M_T in B, one figure per source
            dc.plot_systematics(full.xy_mt, output["hists"]["xy_mt_syst"], datasets, wp, outdir, style=style,
                                config=cfg.analysis.systematics, groups=index["mt_groups"])
        timings["report"] = time.perf_counter() - t
        report.write_summary(outdir, cfg.name, output, wp, wp_source, row, closure, limits, index, timings,
                             cfg=cfg, overrides=overrides, validation=validation, verdict=verdict)
        bar.advance(task)
    return {"outdir": str(outdir), "wp": wp, "limits": limits, "timings": timings, "verdict": verdict}
