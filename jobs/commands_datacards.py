"""Click commands of the datacards step: ``scan``, ``datacards``, ``limits``.

They only parse options, load ``histograms.coffea`` and call :mod:`svjscout.datacards`. Register
them in the main group with ``cli.add_command(scan_cmd)`` etc.
"""

from __future__ import annotations

import json
import logging
import os

import click

log = logging.getLogger(__name__)


def _load_output(path: str) -> dict:
    """The whole processor output of a ``histograms.coffea`` written by ``svjscout process/run``;
    its ``xy_mt`` carries the output's parent records (:func:`svjscout.datacards.parents.attach`).

    Raises:
        HistogramError: the file is not an LZ4-compressed pickle (a text or ROOT file, a truncated
            coffea file), does not hold a dict, or lacks ``xy_mt`` / ``datasets``; names the file.
    """
    import pickle
    from collections.abc import Mapping

    from coffea.util import load

    from svjscout.core.exceptions import HistogramError

    expected = "expected a coffea output (histograms.coffea) written by `svjscout process` or `svjscout run`"
    try:
        out = load(path)
    # lz4.frame raises RuntimeError on a non-LZ4 file (LZ4F_decompress failed ...) and EOFError on a
    # truncated or empty one; a valid frame that holds no pickle gives UnpicklingError / ValueError
    except (EOFError, RuntimeError, pickle.UnpicklingError, ValueError) as exc:
        raise HistogramError(f"{path}: not a coffea output file ({type(exc).__name__}: {exc}); {expected}") from exc
    if not isinstance(out, Mapping):
        raise HistogramError(f"{path}: not a coffea output file (it holds a {type(out).__name__}, not a dict); {expected}")
    hists = out.get("hists", out)  # saved runner output nests the histograms under "hists"
    if not isinstance(hists, Mapping):
        raise HistogramError(f"{path}: 'hists' is a {type(hists).__name__}, not a dict of histograms; {expected}")
    if "xy_mt" not in hists:
        raise HistogramError(f"{path}: key 'xy_mt' missing from the processor output (has {sorted(out)})")
    if "datasets" not in out:
        raise HistogramError(f"{path}: key 'datasets' missing from the processor output (has {sorted(out)})")
    from svjscout.datacards.parents import attach

    flat = hists is out  # an output saved without the runner's "hists" level
    out = dict(out)
    if flat:
        out["hists"] = {k: v for k, v in out.items() if k != "datasets"}
    attach(out)  # detector copies: parent-aware region variances (outputs without parent records: no-op)
    return out


def _load(path: str) -> tuple[object, dict]:
    """``(xy_mt, datasets)`` of :func:`_load_output`."""
    out = _load_output(path)
    return out["hists"]["xy_mt"], dict(out["datasets"])


def _cards_xy_mt(output: dict):
    """The ``xy_mt`` a run's cards were written from: the half of the MC its working point was not
    chosen on (``output["wp"]["split"]``), else the whole sample."""
    from svjscout.datacards.split import split_halves

    wp = output.get("wp") if isinstance(output.get("wp"), dict) else {}
    if wp.get("split"):
        return split_halves(output, seed=int(wp.get("split_seed", 0)))["quote"]["hists"]["xy_mt"]
    return output["hists"]["xy_mt"]


def _run_job_of(histograms: str):
    """The resolved job of the run that wrote ``histograms`` (its ``provenance.json``), or None."""
    from svjscout.jobs.config import JobConfig

    prov = os.path.join(os.path.dirname(os.path.abspath(histograms)), "provenance.json")
    if not os.path.isfile(prov):
        return None
    with open(prov) as f:
        cfg = json.load(f).get("config")
    return None if cfg is None else JobConfig.model_validate(cfg)


def _parse_grid(grid: str | None):
    if grid is None:
        return None
    parts = [float(p) for p in grid.split(",")]
    if len(parts) == 1:
        return int(parts[0])
    if len(parts) != 3:
        raise click.BadParameter("use N (N x N in [0.1, 0.9]) or LO,HI,N", param_hint="--grid")
    import numpy as np

    g = np.round(np.linspace(parts[0], parts[1], int(parts[2])), 10)
    return g, g


def _rules(p_min, plateau, delta_max, pull_max, r_max, fom_nonclosure=True, spec=None):
    from svjscout.datacards import ScanRules
    from svjscout.jobs.config import DatacardSpec

    spec = spec or DatacardSpec()
    return ScanRules(p_min=p_min, plateau=plateau, delta_max=delta_max, pull_max=pull_max, r_max=r_max,
                     fom_nonclosure=fom_nonclosure, min_neff=spec.min_neff, max_rel_err=spec.max_rel_err,
                     nonclosure_z=spec.nonclosure_z)


_scan_opts = [
    click.option("--grid", default=None, help="N (N x N points in [0.1, 0.9]^2) or LO,HI,N. Default 33 (step 0.025)."),
    click.option("--reference", default=None, help="Reference signal dataset of the stilde rescaling (default: first signal)."),
    click.option("--p-min", type=float, default=0.05, show_default=True,
                 help="Minimum chi2 p-value of the closure (the design's 0.9: see docs/datacards.md)."),
    click.option("--plateau/--no-plateau", default=False, show_default=True,
                 help="Require the p-value rule at the 8 grid neighbours too (the design's rule)."),
    click.option("--fom-nonclosure/--no-fom-nonclosure", default=True, show_default=True,
                 help="<Z_A> with the non-closure the cards would carry in sigma_b."),
    click.option("--delta-max", type=float, default=0.05, show_default=True, help="Maximum |non-closure| of the SR total."),
    click.option("--pull-max", type=float, default=2.0, show_default=True, help="Maximum |pull| of the SR total."),
    click.option("--r-max", type=float, default=0.35, show_default=True, help="Maximum signal contamination ratio r_max."),
]


def _add(opts):
    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


@click.command(name="scan")
@click.argument("histograms", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Output folder (scan.csv, heat maps).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Heat maps of every metric (PNG).")
@_add(_scan_opts)
def scan_cmd(histograms, out, plots, grid, reference, p_min, plateau, fom_nonclosure, delta_max, pull_max, r_max):
    """Scan the ABCD working point (x0, y0) on HISTOGRAMS (histograms.coffea).

    Writes OUT/scan.csv (one row per point, all metrics), OUT/scan_best.json and one heat map per
    metric (scan_<metric>.png) with the chosen point marked, and prints the chosen point.
    """
    from svjscout.datacards import scan_working_points, write_scan

    xy_mt, datasets = _load(histograms)
    res = scan_working_points(xy_mt, datasets, grid=_parse_grid(grid), reference=reference,
                              rules=_rules(p_min, plateau, delta_max, pull_max, r_max, fom_nonclosure))
    paths = write_scan(res, out, plots=plots)
    click.echo(res.report)
    click.echo(json.dumps({"best": {"x0": res.best[0], "y0": res.best[1]}, "fallback": res.fallback, "files": paths}, indent=1))


@click.command(name="datacards")
@click.argument("histograms", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Output DIR: cards in DIR/datacards/POINT/.")
@click.option("--wp", default=None, help="Working point X0,Y0 (on multiples of 0.025), e.g. 0.775,0.875.")
@click.option("--scan", "do_scan", is_flag=True,
              help="Choose the working point with the grid scan on one half of the MC, cards from the other (DIR/scan/).")
@click.option("--asimov/--data", default=None,
              help="Observation: background-only Asimov (default), or data (datasets of kind 'data'; needs --unblind).")
@click.option("--unblind", is_flag=True,
              help="Allow --data: put data in region B of the signal plane (the signal region), i.e. unblind.")
@click.option("--lumi-unc", type=float, default=None, help="lnN of the luminosity uncertainty on the signal [1.016].")
@click.option("--nonclosure-method", type=click.Choice(["continuous", "significance", "max", "sp", "vp", "quadrature",
                                                        "vp_data"]),
              default=None, help="Per-bin non-closure uncertainty rule [continuous] (docs/datacards.md).")
@click.option("--min-neff", type=float, default=None,
              help="Statistics guard: effective MC events per region of every fit bin [10].")
@click.option("--max-rel-err", type=float, default=None,
              help="Statistics guard: relative MC error of the prediction nhat_B per fit bin [0.5].")
@click.option("--allow-unbacked/--no-allow-unbacked", default=None,
              help="Write the cards where the guard fails, stamped UNBACKED (else: none, exit 3) [the job's, or no].")
@click.option("--zero-bkg", type=click.Choice(["merge", "floor"]), default="merge", show_default=True,
              help="Non-positive background in a region/bin: merge M_T bins (then floor), or floor only.")
@click.option("--signal-syst", multiple=True, metavar="NAME=KAPPA", help="Extra lnN on the signal, repeatable.")
@_add(_scan_opts)
def datacards_cmd(histograms, out, wp, do_scan, asimov, unblind, lumi_unc, nonclosure_method, min_neff, max_rel_err,
                  allow_unbacked, zero_bkg, signal_syst,
                  grid, reference, p_min, plateau, fom_nonclosure, delta_max, pull_max, r_max):
    """Write Combine datacards (one per signal point) from HISTOGRAMS (histograms.coffea).

    With --wp X0,Y0 or --scan; or, on a run's histograms.coffea, neither: the cards of that run,
    byte for byte (its working point, its half of the MC, its job's settings from provenance.json,
    its signal systematics). Options given override the job's settings ([default] without a run).
    Writes DIR/datacards/POINT/datacard.txt and DIR/datacards/index.json, validates every card.
    --data unblinds the signal region and is refused unless --unblind is given too.
    """
    from svjscout.datacards import validate_datacard, write_datacards, write_scan
    from svjscout.datacards.choice import choose_working_point
    from svjscout.jobs.config import DatacardSpec
    from svjscout.jobs.main_job import card_inputs, card_settings

    output = _load_output(histograms)
    xy_mt, datasets = output["hists"]["xy_mt"], dict(output["datasets"])
    run_wp = output.get("wp") if isinstance(output.get("wp"), dict) else None
    if wp is not None and do_scan:
        raise click.UsageError("give at most one of --wp X0,Y0 or --scan")
    if wp is None and not do_scan and run_wp is None:
        raise click.UsageError("give --wp X0,Y0 or --scan (HISTOGRAMS holds no run's working point to reuse)")
    job = _run_job_of(histograms)
    spec = job.datacards if job is not None else DatacardSpec()
    given = {"asimov": asimov, "lumi_unc": lumi_unc, "nonclosure_method": nonclosure_method, "min_neff": min_neff,
             "max_rel_err": max_rel_err, "allow_unbacked": allow_unbacked}
    spec = spec.model_copy(update={k: v for k, v in given.items() if v is not None} | ({"unblind": True} if unblind else {}))
    if not spec.asimov and not spec.unblind:
        raise click.UsageError(
            "--data puts the observed data of region B of the signal plane (the signal region) into the cards, "
            "i.e. it unblinds the search; add --unblind to do that on purpose, or drop --data for the blinded "
            "background-only Asimov observation")
    card_xy, reasons, provenance = xy_mt, [], {}
    if do_scan:
        rules = _rules(p_min, plateau, delta_max, pull_max, r_max, fom_nonclosure, spec)
        seed = job.scan.split_seed if job is not None else 0
        choice = choose_working_point(output, rules, grid=_parse_grid(grid), reference=reference, seed=seed)
        write_scan(choice.scan, os.path.join(out, "scan"))
        click.echo(choice.scan.report)
        wp, card_xy, reasons = choice.wp, choice.xy_mt, choice.reasons
        provenance = {"wp_source": choice.source, "split": choice.split, "split_seed": seed}
    elif wp is None:  # the run's own cards
        wp = (run_wp["x0"], run_wp["y0"])
        card_xy = _cards_xy_mt(output)
        reasons = list(run_wp.get("reasons", []))
        provenance = {"wp_source": run_wp.get("source"), "split": bool(run_wp.get("split")),
                      "split_seed": int(run_wp.get("split_seed", 0))}
    systs = {}
    for s in signal_syst:
        name, _, val = s.partition("=")
        if not val:
            raise click.BadParameter(f"'{s}' is not NAME=KAPPA", param_hint="--signal-syst")
        systs[name] = float(val)
    index = write_datacards(card_xy, datasets, wp, out,
                            **card_settings(spec, job.analysis.systematics if job is not None else None),
                            zero_bkg=zero_bkg, signal_systematics=systs,
                            xy_mt_syst=output["hists"].get("xy_mt_syst"), syst_nominal=xy_mt, unbacked_reasons=reasons, provenance=provenance or None,
                            inputs=card_inputs(job.name if job is not None else os.path.basename(histograms)))
    for card in index["cards"]:
        validate_datacard(os.path.join(index["cards_dir"], card))
    click.echo(json.dumps({k: index[k] for k in ("wp", "backed", "mt_bins", "merges", "floors", "nonclosure_kappa",
                                                 "cards")}, indent=1))


@click.command(name="limits")
@click.argument("cards", type=click.Path(exists=True))
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Output folder for limits.json and plots (default: the run folder, i.e. the DIR holding datacards/; "
                   "for one card, its folder).")
@click.option("--from-combine", is_flag=True, help="Collect real Combine outputs (jobs/combine_limits.sh) instead of quick limits.")
@click.option("--observed/--expected-only", default=None, help="Observed limit too (default: when the cards hold data).")
@click.option("--histograms", type=click.Path(exists=True, dir_okay=False), default=None,
              help="histograms.coffea, for the (m_Z', r_inv) of each point (default: parsed from the point names).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Brazil bands and 2D map (PNG).")
@click.option("--accept-edited-cards", is_flag=True,
              help="Use cards whose SHA-256 differs from index.json (edited after they were written) instead of refusing.")
def limits_cmd(cards, out, from_combine, observed, histograms, plots, accept_edited_cards):
    """Expected (and observed) 95% CL limits on r for every card under CARDS.

    CARDS is the DIR given to `svjscout datacards`/`svjscout run`, DIR/datacards, its index.json or one
    card. Quick asymptotic CLs in package (default) or collected from Combine outputs (--from-combine).
    Writes OUT/limits.json ({POINT: {exp-2, exp-1, exp0, exp+1, exp+2, obs, capped_by_combine}}) and
    plots, where `svjscout run` writes them, and records the recomputation in OUT/summary.md if there
    is one. Cards edited after index.json was written are refused unless --accept-edited-cards.
    """
    from svjscout.datacards import collect_combine_limits, plot_limits, quick_limits
    from svjscout.datacards.integrity import check_cards

    check_cards(cards, accept_edited=accept_edited_cards)
    base = cards if os.path.isdir(cards) else os.path.dirname(os.path.abspath(cards))
    if os.path.basename(os.path.normpath(base)) == "datacards":
        base = os.path.dirname(os.path.normpath(base))
    out = out or base
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "limits.json")
    if from_combine:  # raises, naming the cards, before writing anything if a point has no result
        lim = collect_combine_limits(cards if os.path.isdir(cards) else base, out=path)
    else:
        lim = quick_limits(cards, observed=observed, out=path)
    datasets = _load(histograms)[1] if histograms else None
    files = plot_limits(lim, datasets, os.path.join(out, "plots")) if plots else []
    cmd = " ".join(["svjscout limits", cards] + (["--from-combine"] if from_combine else [])
                   + ([f"--out {out}"] if out != base else []) + (["--accept-edited-cards"] if accept_edited_cards else []))
    summary = _record_limits_in_summary(out, lim, cmd, "Combine outputs" if from_combine else "quick asymptotic CLs")
    click.echo(json.dumps({"limits": path, "plots": files, "summary": summary, "points": lim}, indent=1))
    for point, v in lim.items():
        if v.get("capped_by_combine"):
            click.echo(f"{point}: Combine's AsymptoticLimits would cap {', '.join(v['capped_by_combine'])} (its "
                       "bisection stops at 2.02x / 3.04x the median): that band is not Gaussian; take it from toys "
                       "(combine -M HybridNew)", err=True)


@click.command(name="validate")
@click.argument("outdir", type=click.Path(exists=True, file_okay=False))
@click.option("--toys", type=int, default=100, show_default=True, help="Toys per injected r and per goodness of fit.")
@click.option("--inject", default="0,1x,2x", show_default=True,
              help="Injected signal strengths, comma-separated: numbers, or 'Nx' = N times each point's median "
                   "expected limit ('exp0' = '1x').")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the toys.")
@click.option("--stability/--no-stability", default=True, show_default=True,
              help="Closure and expected limit at the 8 grid neighbours of the working point.")
@click.option("--from-combine", is_flag=True,
              help="Read the outputs of jobs/combine_validate.sh OUTDIR instead (OUTDIR/validation/combine/).")
@click.option("--accept-edited-cards", is_flag=True,
              help="Use cards whose SHA-256 differs from index.json (edited after they were written) instead of refusing.")
def validate_cmd(outdir, toys, inject, seed, stability, from_combine, accept_edited_cards):
    """Fit validation of the cards of OUTDIR (a `svjscout run` output folder).

    Signal injection and bias (pulls), saturated goodness of fit (VP; SP with B masked), pulls and
    impacts, WP stability and signal contamination. Writes OUTDIR/validation/validation.json, the
    figures, and a "Fit validation" section in OUTDIR/summary.md (docs/validation.md).
    """
    from svjscout.datacards.integrity import check_cards
    from svjscout.datacards.limits import read_index
    from svjscout.datacards.validation import read_combine_validation, summary_lines, write_validation

    check_cards(outdir, accept_edited=accept_edited_cards)
    if from_combine:
        from svjscout.datacards.validation_plots import plot_validation

        res = read_combine_validation(outdir)
        cdir = os.path.join(outdir, "validation", "combine")
        os.makedirs(cdir, exist_ok=True)
        with open(os.path.join(cdir, "validation.json"), "w") as f:
            json.dump(res, f, indent=1, default=float)
        plot_validation(res, cdir)
        for point, p in res["points"].items():
            for inj in p["injection"]:
                pu = inj["pull"]
                click.echo(f"{point} r_inj {inj['r_inj']:g}: {inj['converged']}/{inj['toys']} converged, mean pull "
                           f"{pu['mean']:+.3f} +- {pu['mean_err']:.3f}, width {pu['width']:.3f} +- {pu['width_err']:.3f}"
                           if pu["mean"] is not None else f"{point} r_inj {inj['r_inj']:g}: no converged fit")
        for name, g in res["gof"].items():
            click.echo(f"goodness of fit {name}: q_obs {g['q_obs']:.4g}, p {g['pvalue']:.3f} ({g['toys']} toys)")
        click.echo(f"validation (Combine): {os.path.join(cdir, 'validation.json')}")
        return
    from svjscout.datacards.validation import parse_inject
    from svjscout.jobs.main_job import card_settings

    try:
        parse_inject(inject)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--inject") from err
    index, _ = read_index(outdir)
    path = os.path.join(outdir, "histograms.coffea")
    output = _load_output(path)
    xy_mt, datasets = output["hists"]["xy_mt"], dict(output["datasets"])
    job = _run_job_of(path)
    lim_path = os.path.join(outdir, "limits.json")
    limits = json.load(open(lim_path)) if os.path.isfile(lim_path) else None
    card_kw = None if job is None else {**card_settings(job.datacards, job.analysis.systematics),
                                        "xy_mt_syst": output["hists"].get("xy_mt_syst"), "syst_nominal": xy_mt}
    res = write_validation(outdir, _cards_xy_mt(output), datasets, index, limits, toys=toys, inject=inject, seed=seed,
                           stability=stability, card_kw=card_kw)
    _replace_summary_section(os.path.join(outdir, "summary.md"), "## Fit validation", "\n".join(summary_lines(res)),
                             gap="\n")
    click.echo("\n".join(summary_lines(res)))
    click.echo(f"validation: {os.path.join(outdir, 'validation', 'validation.json')}")


LIMITS_SECTION = "## Limits recomputed"


def _record_limits_in_summary(outdir: str, lim: dict, cmd: str, source: str) -> str | None:
    """Add (or replace) the "Limits recomputed" section of ``OUTDIR/summary.md``, if there is one: which
    command recomputed ``limits.json``, when, from what, and the new limits. Returns its path or None."""
    import datetime

    summary = os.path.join(outdir, "summary.md")
    if not os.path.isfile(summary):
        return None
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [LIMITS_SECTION, "",
             (f"`limits.json` was recomputed on {when} by `{cmd}` ({source}); it replaces the limits that "
              "`svjscout run` wrote, so any limit quoted above this section is superseded by this table."), "",
             "| point | exp-2 | exp-1 | exp0 | exp+1 | exp+2 | obs | capped by Combine |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    for point, v in lim.items():
        lines.append(f"| {point} | " + " | ".join(fmt(v.get(k)) for k in ("exp-2", "exp-1", "exp0", "exp+1", "exp+2", "obs"))
                     + f" | {', '.join(v.get('capped_by_combine') or []) or '-'} |")
    _replace_summary_section(summary, LIMITS_SECTION, "\n".join(lines), gap="\n\n")
    return summary


def _replace_summary_section(summary: str, heading: str, section: str, gap: str) -> None:
    """Replace the section of ``summary.md`` that starts with ``heading`` (up to the next ``## ``) by
    ``section``, or append it; nothing without a ``summary.md``."""
    if not os.path.isfile(summary):
        return
    with open(summary) as f:
        text = f.read()
    start = text.find(heading)
    if start >= 0:
        end = text.find("\n## ", start + 3)
        text = text[:start] + section + (gap + text[end + 1:] if end >= 0 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(summary, "w") as f:
        f.write(text)
