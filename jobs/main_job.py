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

from svjscout.jobs.config import JobConfig
from svjscout.jobs.progress import make_progress
from svjscout.jobs.runner import run_processor, save_outputs

log = logging.getLogger(__name__)

STAGES = ("process", "scan", "datacards", "limits", "validate", "report")


def _closure_tables(xy_mt, datasets, wp) -> dict:
    """Background-MC closure per M_T bin in SP and VP, JSON-safe: undefined numbers are None (never NaN).

    ``defined[i]`` is False for a bin without events (no prediction, or B and its prediction both
    empty); such bins are not in ``chi2``/``ndf``.
    """
    from svjscout.datacards import abcd_prediction

    def _finite_or_none(v) -> float | None:
        v = float(v)
        return v if np.isfinite(v) else None

    out = {}
    for plane in ("SP", "VP"):
        t = abcd_prediction(xy_mt, datasets, wp, plane=plane, which="background")
        out[plane] = {"edges": t.edges.tolist(), "defined": [bool(d) for d in t.defined],
                      **{k: [_finite_or_none(v) for v in arr] for k, arr in
                         (("n_b", t.n_B), ("nhat_b", t.nhat_B), ("delta", t.delta), ("pull", t.pull))},
                      "chi2": _finite_or_none(t.chi2), "ndf": int(t.ndf), "pvalue": _finite_or_none(t.pvalue)}
    return out


def run_job(cfg: JobConfig, outdir: str | Path, use_scan: bool | None = None, progress: bool = True,
            overwrite: bool = False, resume: bool = False, overrides: dict | None = None) -> dict:
    """Run the whole chain; return a dict of what was written (paths, WP, limits).

    The output folder is checked first (:class:`~svjscout.jobs.outputs.RunOutputs`): a folder with
    an earlier run's outputs is refused unless ``overwrite`` (its files are removed) or ``resume``
    (same configuration digest). ``manifest.json`` and ``provenance.json`` are always written.
    """
    from svjscout.jobs import provenance
    from svjscout.jobs.outputs import RunOutputs

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
    from svjscout import datacards as dc
    from svjscout.datacards.style import PlotStyle
    from svjscout.jobs import report

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
        # detector copies: the parent records travel on xy_mt, so every region/M_T-group variance
        # downstream (scan, mt_abcd, closure, cards, validation, plots) is parent-aware
        dc.attach_parents(output)
        xy_mt, datasets = output["hists"]["xy_mt"], output["datasets"]
        grid = np.linspace(*cfg.scan.x_range, cfg.scan.points), np.linspace(*cfg.scan.y_range, cfg.scan.points)
        rules = dc.ScanRules(p_min=cfg.scan.p_min, plateau=cfg.scan.plateau, fom_nonclosure=cfg.scan.fom_nonclosure,
                             min_neff=cfg.datacards.min_neff, nonclosure_z=cfg.datacards.nonclosure_z)
        scan = dc.scan_working_points(xy_mt, datasets, grid=grid, reference=cfg.scan.reference, rules=rules)
        style = PlotStyle.from_config(cfg)
        dc.write_scan(scan, outdir, style=style)
        wp = tuple(float(v) for v in (scan.best if use_scan else cfg.analysis.wp))
        wp_source = "grid scan choice" if use_scan else "configured (analysis.wp)"
        row = _scan_row(scan, wp)
        # every region-split output at the run's one working point, from the xy_mt the cards use
        output["hists"]["mt_abcd"] = dc.mt_abcd_at(xy_mt, wp)
        output["wp"] = state["wp"] = {"x0": wp[0], "y0": wp[1], "source": wp_source}
        save_outputs(output, outdir)
        timings["scan"] = time.perf_counter() - t
        bar.advance(task)

        t = stage("datacards")
        closure = _closure_tables(xy_mt, datasets, wp)
        dcfg = cfg.datacards
        index = dc.write_datacards(xy_mt, datasets, wp, outdir, asimov=dcfg.asimov, unblind=dcfg.unblind,
                                   lumi_unc=dcfg.lumi_unc, nonclosure_method=dcfg.nonclosure_method,
                                   nonclosure_z=dcfg.nonclosure_z, min_neff=dcfg.min_neff,
                                   fit_min_neff=dcfg.fit_min_neff, rateparam_range=dcfg.rateparam_range,
                                   inputs=f"{outdir / 'histograms.coffea'} (job {cfg.name})",
                                   xy_mt_syst=output["hists"].get("xy_mt_syst"),
                                   systematics=cfg.analysis.systematics)
        timings["datacards"] = time.perf_counter() - t
        bar.advance(task)

        t = stage("limits")
        limits = dc.quick_limits(outdir / "datacards")
        (outdir / "limits.json").write_text(json.dumps(limits, indent=1))
        dc.plot_limits(limits, datasets, outdir, style=style)
        timings["limits"] = time.perf_counter() - t
        bar.advance(task)

        t = stage("validate")
        validation = None
        if cfg.validation.enabled:
            v = cfg.validation
            validation = dc.write_validation(outdir, xy_mt, datasets, index, limits, toys=v.toys, inject=v.inject,
                                             seed=v.seed, stability=v.stability, style=style)
        timings["validate"] = time.perf_counter() - t
        bar.advance(task)

        t = stage("report")
        for plane in ("SP", "VP"):
            report.plot_closure(xy_mt, datasets, wp, outdir, plane, index=index, style=style)
            report.plot_mt_regions(output, outdir, wp, plane, style=style)
        report.plot_xy_plane(output, outdir, wp, style=style)
        report.plot_controls(output, outdir, style=style)
        if output["hists"].get("xy_mt_syst") is not None:  # nominal/up/down M_T in B, one figure per source
            dc.plot_systematics(xy_mt, output["hists"]["xy_mt_syst"], datasets, wp, outdir, style=style)
        timings["report"] = time.perf_counter() - t
        report.write_summary(outdir, cfg.name, output, wp, wp_source, row, closure, limits, index, timings,
                             cfg=cfg, overrides=overrides, validation=validation)
        bar.advance(task)
    return {"outdir": str(outdir), "wp": wp, "limits": limits, "timings": timings}


def _scan_row(scan, wp) -> dict | None:
    table = scan.table
    sel = table[(np.isclose(table["x0"], wp[0])) & (np.isclose(table["y0"], wp[1]))]
    if sel.empty:
        return None
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in sel.iloc[0].to_dict().items()}
