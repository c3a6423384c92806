"""Click commands of the statistics steps: ``scan``, ``datacards``, ``limits``, ``validate``.

They only parse options, load ``histograms.coffea`` and call :mod:`svjscout.datacards`. Their
settings are the job's (``scan:``, ``datacards:``, ``validation:`` blocks, the models of
:mod:`svjscout.datacards.settings`): those of the run that wrote ``histograms.coffea`` (its
``provenance.json``), of ``--job JOB``, or the models' defaults, plus ``--set KEY=VALUE`` (YAML
values, e.g. ``--set datacards.min_neff=5``). Options such as ``--min-neff`` are aliases that write
the same key, so every route (``svjscout run``, these verbs) has the same defaults. Register them
in the main group with ``cli.add_command(scan_cmd)`` etc.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pickle
from collections.abc import Mapping

import click
from coffea.util import load
from pydantic import ValidationError

from svjscout.core.constants import LUMI_UNCERTAINTY
from svjscout.core.exceptions import HistogramError
from svjscout.datacards import (
    StatInputs,
    collect_combine_limits,
    plot_limits,
    quick_limits,
    scan_working_points,
    validate_datacard,
    write_datacards,
    write_scan,
)
from svjscout.datacards.choice import choose_working_point
from svjscout.datacards.integrity import check_cards
from svjscout.datacards.limits import read_index
from svjscout.datacards.pseudodata import summary_lines as pseudo_summary
from svjscout.datacards.settings import DatacardSettings, ScanSettings, ValidationSettings, parse_inject
from svjscout.datacards.split import quote_half
from svjscout.datacards.validation import read_combine_validation, summary_lines, write_validation
from svjscout.datacards.validation_plots import plot_validation
from svjscout.jobs.config import JobConfig, check_split_on, load_job, parse_set, scan_subsets
from svjscout.jobs.main_job import card_inputs, card_kw

log = logging.getLogger(__name__)

#: the job blocks a statistics verb reads, and their models
STAGES = {"scan": ScanSettings, "datacards": DatacardSettings, "validation": ValidationSettings}


def _load_output(path: str) -> dict:
    """The whole processor output of a ``histograms.coffea`` written by ``svjscout process/run``
    (with ``parent_fills``, the parent records: :meth:`StatInputs.from_output`).

    Raises:
        HistogramError: the file is not an LZ4-compressed pickle (a text or ROOT file, a truncated
            coffea file), does not hold a dict, or lacks ``xy_mt`` / ``datasets``; names the file.
    """
    expected = "expected a coffea output (histograms.coffea) written by `svjscout process` or `svjscout run`"
    try:
        out = load(path)
    # lz4.frame raises RuntimeError on a non-LZ4 file (LZ4F_decompress failed ...) and EOFError on a
    # truncated or empty one; a valid frame that holds no pickle gives UnpicklingError / ValueError
    except (EOFError, RuntimeError, pickle.UnpicklingError, ValueError) as exc:
        raise HistogramError(f"{path}: not a coffea output file ({type(exc).__name__}: {exc}); {expected}") from exc
    if not isinstance(out, Mapping):
        raise HistogramError(f"{path}: not a coffea output file (it holds a {type(out).__name__}, not a dict); "
                             f"{expected}")
    hists = out.get("hists", out)  # saved runner output nests the histograms under "hists"
    if not isinstance(hists, Mapping):
        raise HistogramError(f"{path}: 'hists' is a {type(hists).__name__}, not a dict of histograms; {expected}")
    if "xy_mt" not in hists:
        raise HistogramError(f"{path}: key 'xy_mt' missing from the processor output (has {sorted(out)})")
    if "datasets" not in out:
        raise HistogramError(f"{path}: key 'datasets' missing from the processor output (has {sorted(out)})")
    flat = hists is out  # an output saved without the runner's "hists" level
    out = dict(out)
    if flat:
        out["hists"] = {k: v for k, v in out.items() if k != "datasets"}
    return out


def _load(path: str) -> tuple[StatInputs, dict]:
    """``(StatInputs, datasets)`` of :func:`_load_output`."""
    out = _load_output(path)
    return StatInputs.from_output(out), dict(out["datasets"])


def _cards_inputs(output: dict) -> StatInputs:
    """The statistics inputs a run's cards were written from: the half of the MC its working point
    was not chosen on (``output["wp"]["split"]``), else the whole sample."""
    return StatInputs.from_output(quote_half(output))


def _run_job_of(histograms: str):
    """The resolved job of the run that wrote ``histograms`` (its ``provenance.json``), or None."""
    prov = os.path.join(os.path.dirname(os.path.abspath(histograms)), "provenance.json")
    if not os.path.isfile(prov):
        return None
    with open(prov) as f:
        cfg = json.load(f).get("config")
    return None if cfg is None else JobConfig.model_validate(cfg)


def stage_settings(job: JobConfig | None, overrides: Mapping[str, object]) -> dict:
    """``{"scan": ScanSettings, "datacards": DatacardSettings, "validation": ValidationSettings}``:
    the job's blocks (the models' defaults without a job) with ``overrides`` (dotted keys such as
    ``datacards.min_neff``) applied and validated.

    Raises:
        click.BadParameter: a key outside these blocks, or a value the model refuses (names the key).
    """
    raw = {name: (getattr(job, name).model_dump() if job is not None else {}) for name in STAGES}
    for dotted, value in overrides.items():
        block, _, rest = dotted.partition(".")
        if block not in STAGES or not rest:
            raise click.BadParameter(f"{dotted!r} is not a key of the {', '.join(STAGES)} settings "
                                     "(e.g. datacards.min_neff)", param_hint="--set")
        node = raw[block]
        *parents, leaf = rest.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    if raw["datacards"].get("asimov") is False and not raw["datacards"].get("unblind"):
        raise click.UsageError(
            "--data (datacards.asimov: false) puts the observed data of region B of the signal plane (the signal "
            "region) into the cards, i.e. it unblinds the search; add --unblind (datacards.unblind: true) to do that "
            "on purpose, or drop --data for the blinded background-only Asimov observation")
    out = {}
    for name, model in STAGES.items():
        try:
            out[name] = model.model_validate(raw[name])
        except ValidationError as err:
            lines = "; ".join(f"{name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            raise click.BadParameter(lines, param_hint="--set") from None
    return out


def _job_settings(histograms: str | None, job_file: str | None, settings, aliases: Mapping[str, object]):
    """``(job, stage settings)``: the job of ``--job`` or of the run that wrote ``histograms``, its
    stage settings with the aliases given (not None) and then ``--set`` applied."""
    job = load_job(job_file) if job_file else (_run_job_of(histograms) if histograms else None)
    overrides = {k: v for k, v in aliases.items() if v is not None} | parse_set(settings, "datacards.min_neff=5")
    return job, stage_settings(job, overrides)


def _parse_grid(grid: str | None) -> dict:
    """``--grid`` as the scan keys it writes: N (``scan.points``) or LO,HI,N (also the ranges)."""
    if grid is None:
        return {}
    parts = [float(p) for p in grid.split(",")]
    if len(parts) == 1:
        return {"scan.points": int(parts[0])}
    if len(parts) != 3:
        raise click.BadParameter("use N (N x N in [0.1, 0.9]) or LO,HI,N", param_hint="--grid")
    return {"scan.x_range": (parts[0], parts[1]), "scan.y_range": (parts[0], parts[1]), "scan.points": int(parts[2])}


def _scan_aliases(grid, reference, p_min, plateau, fom_nonclosure, delta_max, pull_max, r_max) -> dict:
    return {**_parse_grid(grid), "scan.reference": reference, "scan.p_min": p_min, "scan.plateau": plateau,
            "scan.fom_nonclosure": fom_nonclosure, "scan.delta_max": delta_max, "scan.pull_max": pull_max,
            "scan.r_max": r_max}


_job_opts = [
    click.option("--job", "job_file", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="Job YAML whose scan/datacards/validation settings to use (default: the run's, from its "
                      "provenance.json, else the defaults of docs/config.md)."),
    click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                 help="Override a scan/datacards/validation key of the job, e.g. --set datacards.min_neff=5 "
                      "(repeatable; YAML values)."),
]

_scan_opts = [
    click.option("--grid", default=None,
                 help="N (N x N points in [0.1, 0.9]^2) or LO,HI,N: scan.points (and scan.x_range, y_range) [33]."),
    click.option("--reference", default=None,
                 help="scan.reference: reference signal dataset of the stilde rescaling [first signal]."),
    click.option("--p-min", type=float, default=None,
                 help="scan.p_min: minimum chi2 p-value of the closure [0.05] (the design's 0.9: docs/datacards.md)."),
    click.option("--plateau/--no-plateau", default=None,
                 help="scan.plateau: require the p-value rule at the 8 grid neighbours too [no]."),
    click.option("--fom-nonclosure/--no-fom-nonclosure", default=None,
                 help="scan.fom_nonclosure: <Z_A> with the non-closure the cards would carry in sigma_b [yes]."),
    click.option("--delta-max", type=float, default=None, help="scan.delta_max: maximum |non-closure| per bin [0.05]."),
    click.option("--pull-max", type=float, default=None, help="scan.pull_max: maximum |pull| per bin [2]."),
    click.option("--r-max", type=float, default=None, help="scan.r_max: maximum signal contamination ratio [0.35]."),
]


def _add(opts):
    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


@click.command(name="scan")
@click.argument("histograms", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
              help="Output folder (scan.csv, heat maps).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Heat maps of every metric (PNG).")
@_add(_scan_opts)
@_add(_job_opts)
def scan_cmd(histograms, out, plots, grid, reference, p_min, plateau, fom_nonclosure, delta_max, pull_max, r_max,
             job_file, settings):
    """Scan the ABCD working point (x0, y0) on HISTOGRAMS (histograms.coffea).

    Writes OUT/scan.csv (one row per point, all metrics), OUT/scan_best.json and one heat map per
    metric (scan_<metric>.png) with the chosen point marked, and prints the chosen point. The scan
    covers the whole sample (no split: `svjscout datacards --scan` chooses on one half).
    """
    _, st = _job_settings(histograms, job_file, settings,
                          _scan_aliases(grid, reference, p_min, plateau, fom_nonclosure, delta_max, pull_max, r_max))
    inputs, datasets = _load(histograms)
    sc = st["scan"]
    res = scan_working_points(inputs, datasets, grid=sc.grid(), reference=sc.reference, rules=sc.rules(st["datacards"]))
    paths = write_scan(res, out, plots=plots)
    click.echo(res.report)
    click.echo(json.dumps({"best": {"x0": res.best[0], "y0": res.best[1]}, "fallback": res.fallback, "files": paths},
                          indent=1))


@click.command(name="datacards")
@click.argument("histograms", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True,
              help="Output DIR: cards in DIR/datacards/POINT/.")
@click.option("--wp", default=None, help="Working point X0,Y0 (on multiples of 0.025), e.g. 0.775,0.875.")
@click.option("--scan", "do_scan", is_flag=True,
              help="Choose the working point with the grid scan on one half of the MC, cards from the other "
              "(DIR/scan/).")
@click.option("--asimov/--data", default=None,
              help="datacards.asimov: observation background-only Asimov (default), or data (datasets of kind 'data'; "
                   "needs --unblind).")
@click.option("--unblind", is_flag=True, default=None,
              help="datacards.unblind: allow --data: put data in region B of the signal plane (the signal region), "
                   "i.e. unblind.")
@click.option("--lumi-unc", type=float, default=None, help="datacards.lumi_unc: lnN of the luminosity uncertainty on "
                                                            f"the signal [{LUMI_UNCERTAINTY}].")
@click.option("--nonclosure-method", type=click.Choice(["continuous", "significance", "max", "sp", "vp", "quadrature",
                                                        "vp_data"]),
              default=None, help="datacards.nonclosure_method: per-bin non-closure uncertainty rule [continuous] "
                                 "(docs/datacards.md).")
@click.option("--min-neff", type=float, default=None,
              help="datacards.min_neff: statistics guard, effective MC events per region of every fit bin [10].")
@click.option("--max-rel-err", type=float, default=None,
              help="datacards.max_rel_err: statistics guard, relative MC error of the prediction nhat_B per fit bin "
                   "[0.5].")
@click.option("--allow-unbacked/--no-allow-unbacked", default=None,
              help="datacards.allow_unbacked: write the cards where the guard fails, stamped UNBACKED (else: none, "
                   "exit 3) [no].")
@click.option("--zero-bkg", type=click.Choice(["merge", "floor"]), default=None,
              help="datacards.zero_bkg: non-positive background in a region/bin: merge M_T bins (then floor), or "
                   "floor only [merge].")
@click.option("--signal-syst", multiple=True, metavar="NAME=KAPPA",
              help="datacards.signal_systematics: extra lnN on the signal, repeatable.")
@click.option("--format", "formats", default=None, metavar="combine[,pyhf]",
              help="datacards.formats: card formats per point, comma-separated [combine]; pyhf adds workspace.json "
                   "(HistFactory JSON, needs the pyhf extra; docs/datacards.md).")
@click.option("--pseudo-data", "pseudo_data", type=int, default=None, metavar="SEED",
              help="datacards.pseudo_data: observation = Poisson pseudo-data drawn from the MC with this seed "
                   "(A, C, D; B of the signal plane blinded unless --unblind), cards stamped PSEUDO-DATA "
                   "(docs/datacards.md).")
@click.option("--inject", "pseudo_inject", type=float, default=None, metavar="R",
              help="datacards.pseudo_inject: draw the pseudo-data from background + R x signal [0].")
@click.option("--inject-signal", "pseudo_signal", default=None, metavar="DATASET",
              help="datacards.pseudo_signal: the signal dataset injected [the first signal].")
@_add(_scan_opts)
@_add(_job_opts)
def datacards_cmd(histograms, out, wp, do_scan, asimov, unblind, lumi_unc, nonclosure_method, min_neff, max_rel_err,
                  allow_unbacked, zero_bkg, signal_syst, formats, pseudo_data, pseudo_inject, pseudo_signal,
                  grid, reference, p_min, plateau, fom_nonclosure, delta_max, pull_max, r_max, job_file, settings):
    """Write Combine datacards (one per signal point) from HISTOGRAMS (histograms.coffea).

    With --wp X0,Y0 or --scan; or, on a run's histograms.coffea, neither: the cards of that run,
    byte for byte (its working point, its half of the MC, its job's settings from provenance.json,
    its signal systematics). Options given override the job's settings (the defaults of
    docs/config.md without a run). Writes DIR/datacards/POINT/datacard.txt and
    DIR/datacards/index.json, validates every card. --data unblinds the signal region and is
    refused unless --unblind is given too.
    """
    output = _load_output(histograms)
    datasets = dict(output["datasets"])
    run_wp = output.get("wp") if isinstance(output.get("wp"), dict) else None
    if wp is not None and do_scan:
        raise click.UsageError("give at most one of --wp X0,Y0 or --scan")
    if wp is None and not do_scan and run_wp is None:
        raise click.UsageError("give --wp X0,Y0 or --scan (HISTOGRAMS holds no run's working point to reuse)")
    systs = {}
    for s in signal_syst:
        name, _, val = s.partition("=")
        if not val:
            raise click.BadParameter(f"'{s}' is not NAME=KAPPA", param_hint="--signal-syst")
        systs[name] = float(val)
    aliases = {"datacards.asimov": asimov, "datacards.unblind": unblind, "datacards.lumi_unc": lumi_unc,
               "datacards.nonclosure_method": nonclosure_method, "datacards.min_neff": min_neff,
               "datacards.max_rel_err": max_rel_err, "datacards.allow_unbacked": allow_unbacked,
               "datacards.zero_bkg": zero_bkg, "datacards.signal_systematics": systs or None,
               "datacards.formats": [f.strip() for f in formats.split(",") if f.strip()] if formats else None,
               "datacards.pseudo_data": pseudo_data, "datacards.pseudo_inject": pseudo_inject,
               "datacards.pseudo_signal": pseudo_signal,
               **_scan_aliases(grid, reference, p_min, plateau, fom_nonclosure, delta_max, pull_max, r_max)}
    job, st = _job_settings(histograms, job_file, settings, aliases)
    spec, sc = st["datacards"], st["scan"]
    full = StatInputs.from_output(output)
    card_in, reasons, provenance = full, [], {}
    if do_scan:
        seed = sc.split_seed
        subsets = None
        if sc.split_on == "subsets":  # the job's event subsets, with the stage settings as given here
            if job is None:
                raise click.UsageError("scan.split_on: subsets needs the run's job (its analysis.event_subset): "
                                       "give --job or a HISTOGRAMS file beside its provenance.json")
            with_scan = job.model_copy(update={"scan": sc})
            check_split_on(with_scan, "scan")
            subsets = scan_subsets(with_scan)
        choice = choose_working_point(output, sc.rules(spec), grid=sc.grid(),
                                      reference=sc.reference, seed=seed, subsets=subsets)
        write_scan(choice.scan, os.path.join(out, "scan"))
        click.echo(choice.scan.report)
        wp, card_in, reasons = choice.wp, choice.inputs, choice.reasons
        provenance = {"wp_source": choice.source, "split": choice.split, "split_seed": seed}
    elif wp is None:  # the run's own cards
        wp = (run_wp["x0"], run_wp["y0"])
        card_in = _cards_inputs(output)
        reasons = list(run_wp.get("reasons", []))
        provenance = {"wp_source": run_wp.get("source"), "split": bool(run_wp.get("split")),
                      "split_seed": int(run_wp.get("split_seed", 0))}
    index = write_datacards(card_in, datasets, wp, out,
                            **card_kw(spec, job.analysis.systematics if job is not None else None, output),
                            unbacked_reasons=reasons, provenance=provenance or None,
                            source=card_inputs(job.name if job is not None else os.path.basename(histograms)))
    for card in index["cards"]:
        validate_datacard(os.path.join(index["cards_dir"], card))
    click.echo(json.dumps({k: index[k] for k in ("wp", "backed", "mt_bins", "merges", "floors", "nonclosure_kappa",
                                                 "cards")}, indent=1))
    if "pseudo_data" in index:
        click.echo("\n".join(pseudo_summary(index["pseudo_data"])))


@click.command(name="limits")
@click.argument("cards", type=click.Path(exists=True))
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None,
              help="Output folder for limits.json and plots (default: the run folder, i.e. the DIR holding datacards/; "
                   "for one card, its folder).")
@click.option("--from-combine", is_flag=True,
              help="Collect real Combine outputs (jobs/combine_limits.sh) instead of quick limits.")
@click.option("--observed/--expected-only", default=None,
              help="Observed limit too (default: when the cards hold data).")
@click.option("--histograms", type=click.Path(exists=True, dir_okay=False), default=None,
              help="histograms.coffea, for the (m_Z', r_inv) of each point (default: parsed from the point names).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Brazil bands and 2D map (PNG).")
@click.option("--accept-edited-cards", is_flag=True,
              help="Use cards whose SHA-256 differs from index.json (edited after they were written) instead of "
              "refusing.")
def limits_cmd(cards, out, from_combine, observed, histograms, plots, accept_edited_cards):
    """Expected (and observed) 95% CL limits on r for every card under CARDS.

    CARDS is the DIR given to `svjscout datacards`/`svjscout run`, DIR/datacards, its index.json or one
    card. Quick asymptotic CLs in package (default) or collected from Combine outputs (--from-combine).
    Writes OUT/limits.json ({POINT: {exp-2, exp-1, exp0, exp+1, exp+2, obs, capped_by_combine}}) and
    plots, where `svjscout run` writes them, and records the recomputation in OUT/summary.md if there
    is one. Cards edited after index.json was written are refused unless --accept-edited-cards.
    """
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
                   + ([f"--out {out}"] if out != base else []) + (["--accept-edited-cards"] if accept_edited_cards
                                                                  else []))
    summary = _record_limits_in_summary(out, lim, cmd, "Combine outputs" if from_combine else "quick asymptotic CLs")
    click.echo(json.dumps({"limits": path, "plots": files, "summary": summary, "points": lim}, indent=1))
    for point, v in lim.items():
        if v.get("capped_by_combine"):
            click.echo(f"{point}: Combine's AsymptoticLimits would cap {', '.join(v['capped_by_combine'])} (its "
                       "bisection stops at 2.02x / 3.04x the median): that band is not Gaussian; take it from toys "
                       "(combine -M HybridNew)", err=True)


@click.command(name="validate")
@click.argument("outdir", type=click.Path(exists=True, file_okay=False))
@click.option("--toys", type=int, default=None,
              help="validation.toys: toys per injected r and per goodness of fit [20].")
@click.option("--inject", default=None,
              help="validation.inject: injected signal strengths, comma-separated: numbers, or 'Nx' = N times each "
                   "point's median expected limit ('exp0' = '1x') [0,1x,2x].")
@click.option("--seed", type=int, default=None, help="validation.seed: seed of the toys [1].")
@click.option("--stability/--no-stability", default=None,
              help="validation.stability: closure and expected limit at the 8 grid neighbours of the working point "
                   "[yes].")
@click.option("--from-combine", is_flag=True,
              help="Read the outputs of jobs/combine_validate.sh OUTDIR instead (OUTDIR/validation/combine/).")
@click.option("--accept-edited-cards", is_flag=True,
              help="Use cards whose SHA-256 differs from index.json (edited after they were written) instead of "
              "refusing.")
@_add(_job_opts)
def validate_cmd(outdir, toys, inject, seed, stability, from_combine, accept_edited_cards, job_file, settings):
    """Fit validation of the cards of OUTDIR (a `svjscout run` output folder).

    Signal injection and bias (pulls), saturated goodness of fit (VP; SP with B masked), pulls and
    impacts, WP stability and signal contamination. Writes OUTDIR/validation/validation.json, the
    figures, and a "Fit validation" section in OUTDIR/summary.md (docs/validation.md). Settings:
    the run's validation block (provenance.json) with the options and --set given.
    """
    check_cards(outdir, accept_edited=accept_edited_cards)
    if from_combine:
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
                           f"{pu['mean']:+.3f} +- {pu['mean_err']:.3f}, width {pu['width']:.3f} +- "
                           f"{pu['width_err']:.3f}"
                           if pu["mean"] is not None else f"{point} r_inj {inj['r_inj']:g}: no converged fit")
        for name, g in res["gof"].items():
            click.echo(f"goodness of fit {name}: q_obs {g['q_obs']:.4g}, p {g['pvalue']:.3f} ({g['toys']} toys)")
        click.echo(f"validation (Combine): {os.path.join(cdir, 'validation.json')}")
        return
    if inject is not None:
        try:
            parse_inject(inject)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--inject") from err
    path = os.path.join(outdir, "histograms.coffea")
    aliases = {"validation.toys": toys, "validation.seed": seed, "validation.stability": stability,
               "validation.inject": None if inject is None else [s.strip() for s in inject.split(",") if s.strip()]}
    job, st = _job_settings(path, job_file, settings, aliases)
    index, _ = read_index(outdir)
    output = _load_output(path)
    datasets = dict(output["datasets"])
    lim_path = os.path.join(outdir, "limits.json")
    limits = json.load(open(lim_path)) if os.path.isfile(lim_path) else None
    kw = None if job is None else card_kw(job.datacards, job.analysis.systematics, output)
    res = write_validation(outdir, _cards_inputs(output), datasets, index, limits, st["validation"], card_kw=kw)
    _replace_summary_section(os.path.join(outdir, "summary.md"), "## Fit validation", "\n".join(summary_lines(res)),
                             gap="\n")
    click.echo("\n".join(summary_lines(res)))
    click.echo(f"validation: {os.path.join(outdir, 'validation', 'validation.json')}")


LIMITS_SECTION = "## Limits recomputed"


def _record_limits_in_summary(outdir: str, lim: dict, cmd: str, source: str) -> str | None:
    """Add (or replace) the "Limits recomputed" section of ``OUTDIR/summary.md``, if there is one: which
    command recomputed ``limits.json``, when, from what, and the new limits. Returns its path or None."""
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
        cells = " | ".join(fmt(v.get(k)) for k in ("exp-2", "exp-1", "exp0", "exp+1", "exp+2", "obs"))
        lines.append(f"| {point} | {cells} | {', '.join(v.get('capped_by_combine') or []) or '-'} |")
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
