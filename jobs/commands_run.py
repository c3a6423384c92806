"""``svjscout generate``, ``process`` and ``run``: the click commands (no logic: they parse, load
the job and call :mod:`svjscout.samples.generate`, :mod:`svjscout.jobs.runner` and
:mod:`svjscout.jobs.main_job`). The ``svjscout`` group (:mod:`svjscout.jobs.cli`) loads this
module when one of them is named.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from svjscout.core.constants import DEFAULT_PILEUP
from svjscout.jobs import provenance
from svjscout.jobs.config import load_job, parse_set
from svjscout.jobs.generation import chunk_mapper, executor_spec
from svjscout.jobs.main_job import run_job
from svjscout.jobs.outputs import RunOutputs
from svjscout.jobs.runner import run_processor, save_outputs
from svjscout.samples.generate import GenerationConfig, bias_power_default_text, generate_file


@click.command()
@click.argument("process", type=click.Choice(["svj", "qcd", "ttbar", "wjets", "zjets"]))
@click.option("--events", "-n", type=int, required=True, help="Number of events to generate (before filters).")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (Pythia and detector).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Output ROOT file.")
@click.option("--mzprime", type=float, default=2000.0, show_default=True, help="svj: Z' mass in GeV.")
@click.option("--rinv", type=float, default=0.3, show_default=True, help="svj: invisible fraction of dark hadrons.")
@click.option("--m-dark", type=float, default=20.0, show_default=True,
              help="svj: dark hadron mass in GeV (Lambda_dark = 3.2 m_dark^0.8, pTminFSR = 1.1 Lambda_dark).")
@click.option("--pthat-min", type=float, default=None,
              help="Backgrounds: pT-hat lower edge in GeV (default per process).")
@click.option("--pthat-max", type=float, default=None, help="Backgrounds: pT-hat upper edge in GeV (default open).")
@click.option("--ht-min", type=float, default=0.0, show_default=True,
              help="Generator-level pre-filter: scalar sum of visible particle pT (|eta|<3) in GeV; <= 410.")
@click.option("--met-min", type=float, default=0.0, show_default=True,
              help="Skim on PF MET in GeV after the detector response; <= 156 (looser than the preselection).")
@click.option("--bias-power", type=float, default=None,
              help="pT-hat bias power (Pythia's bias2Selection; events carry the inverse as genWeight). "
                   + bias_power_default_text())
@click.option("--pileup", type=float, default=DEFAULT_PILEUP, show_default=True,
              help="Mean number of pileup (min-bias) events, Poisson per event (Run-2 like); written as "
                   "Pileup_nTrueInt (the mean) and Pileup_nPU (the number drawn); 0 switches pileup off.")
@click.option("--pileup-library", type=int, default=1000, show_default=True,
              help="Minimum-bias events generated per chunk and drawn with replacement for the overlay.")
@click.option("--detector-copies", "-k", type=int, default=1, show_default=True,
              help="Pass each generated event through the jet-level detector response K times (each copy "
                   "written with its parent's id in `parent` and weight genWeight/K; the MET skim per copy).")
@click.option("--tail-bias", type=float, default=1.0, show_default=True,
              help="Sample the jet-response tail B times more often in jets above --tail-bias-pt-min, each copy "
                   "weighted by the likelihood ratio (importance sampling of the fake-MET tail).")
@click.option("--tail-bias-pt-min", type=float, default=50.0, show_default=True,
              help="Generator-jet pT (GeV) from which --tail-bias applies.")
@click.option("--roulette/--no-roulette", default=False, show_default=True,
              help="Parent roulette (docs/generation_efficiency.md): before pileup and detector, keep a parent "
                   "predicted not to pass with probability --roulette-p-min and weight the kept ones by 1/p "
                   "(unbiased; the dropped parents still count in genEventSumw).")
@click.option("--roulette-p-min", type=float, default=0.3, show_default=True,
              help="Keep probability of the parents the roulette predicts not to pass, in (0, 1].")
@click.option("--roulette-mt", type=float, default=400.0, show_default=True,
              help="GeV: parents with generator-level M_T above this are always kept.")
@click.option("--roulette-nu-pt", type=float, default=30.0, show_default=True,
              help="GeV: parents with invisible |sum pT| above this are always kept.")
@click.option("--roulette-rt", type=float, default=0.15, show_default=True,
              help="Parents with generator-level R_T above this are always kept.")
@click.option("--roulette-p-soft", type=float, default=1.0, show_default=True,
              help="Keep probability of the soft real-MET rows (kept for their real MET, invisible |sum pT| below "
                   "--roulette-nu-pt-hard), weight 1/p; 1 keeps them all.")
@click.option("--roulette-nu-pt-hard", type=float, default=80.0, show_default=True,
              help="GeV: rows with invisible |sum pT| above this have hard real MET (always kept).")
@click.option("--real-met-copies", type=int, default=0, show_default=True,
              help="Detector copies of the hard real-MET rows (their weights x K/k; needs --roulette); 0: all K.")
@click.option("--decay-repeats", type=int, default=0, show_default=True,
              help="Decay the b and c hadrons of every event N times (a second Pythia), each repeat with 1/N of its "
                   "weight (the real-MET tail of QCD; N > 1 needs --roulette; 0: decays inline; "
                   "docs/generation_efficiency.md).")
@click.option("--tail-strata/--no-tail-strata", default=False, show_default=True,
              help="Stratified jet-response tail copies (which hard jet is in the tail, weights P_s / copies; "
                   "docs/generation_efficiency.md): needs --tail-bias 1 and >= 3 copies.")
@click.option("--shared-pileup/--no-shared-pileup", default=False, show_default=True,
              help="One pruned minimum-bias library per file instead of one per chunk (~1.25x faster).")
@click.option("--layout", type=click.Choice(["scoutingnano_run3", "svjscout"]), default="scoutingnano_run3",
              show_default=True,
              help="Output layout (samples/layouts.py, docs/samples.md): svjscout (ScoutingParticle_*, charged "
                   "pileup removed) or scoutingnano_run3 (CMS's ScoutingPFCandidate_* with vertexIndex, all "
                   "candidates, vertices, rho, DST_HT410_PFScouting, GenDarkQuark_*).")
@click.option("--write-hf/--no-write-hf", default=False, show_default=True,
              help="Also write the HF cells (3 < |eta| < 5) as PF candidates (they always enter the MET).")
@click.option("--detector", "detector_params", multiple=True, metavar="KEY=VALUE",
              help="Override a detector parameter (samples/detector.py DetectorParams), e.g. jet_tail_prob=2e-3.")
@click.option("--pythia", "pythia_lines", multiple=True, metavar="SETTING",
              help="Extra Pythia readString line(s), applied last (e.g. 'UncertaintyBands:doVariations = off').")
@click.option("--chunk-size", type=int, default=500, show_default=True, help="Events per chunk (one Pythia run each).")
@click.option("--workers", "-j", type=int, default=1, show_default=True,
              help="Parallel worker processes (futures), dask workers (--scheduler local) or jobs (slurm, condor).")
@click.option("--executor", type=click.Choice(["iterative", "futures", "dask"]), default=None,
              help="Engine of the chunks (default: iterative with -j 1, futures otherwise; dask with --scheduler).")
@click.option("--scheduler", type=str, default=None, metavar="ADDRESS|local|slurm|condor|gateway",
              help="dask engine: a LocalCluster, an existing scheduler's address, dask-jobqueue or dask-gateway "
                   "(settings from --executor-config). Implies --executor dask.")
@click.option("--executor-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML with the executor settings (a job file's executor: block, e.g. jobs/af.yaml): Slurm "
                   "partition and memory, gateway address, retries, worker_timeout.")
@click.option("--chunks", "chunk_range", type=str, default=None, metavar="A:B",
              help="Generate only chunks A..B-1 (Python slice; chunk k holds events k*chunk_size ...) into OUT.parts; "
                   "the file is written once every chunk is stored (one Slurm array task per range, then a last run).")
@click.option("--keep-parts/--no-keep-parts", default=False, show_default=True,
              help="Keep OUT.parts (the stored chunks) after the file is written.")
@click.option("--fresh", is_flag=True, default=False,
              help="Delete the stored chunks of OUT.parts first (otherwise an interrupted run resumes from them).")
@click.option("--xsec", type=float, default=None, help="Override the cross section in pb written to the file.")
@click.option("--dataset", type=str, default=None, help="Dataset name written to the file (default from process).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Rich progress bar on stderr.")
def generate(process, events, seed, out, mzprime, rinv, m_dark, pthat_min, pthat_max, ht_min, met_min, bias_power,
             pileup, pileup_library, detector_copies, tail_bias, tail_bias_pt_min, roulette, roulette_p_min,
             roulette_mt, roulette_nu_pt, roulette_rt, roulette_p_soft, roulette_nu_pt_hard, real_met_copies,
             decay_repeats, tail_strata, shared_pileup, write_hf, layout,
             detector_params, pythia_lines, chunk_size, workers, executor, scheduler, executor_config, chunk_range,
             keep_parts, fresh, xsec, dataset, progress):
    """Generate PROCESS with Pythia 8 + the fast detector response into a scouting-format ROOT file.

    \b
    Besides the scouting branches, in NanoAOD's conventions (docs/samples.md):
      PSWeight[4]      Pythia's parton-shower weights w_var/w_nominal: [0] ISR=2 FSR=1
                       (isr:muRfac=0.5, ISR up), [1] ISR=1 FSR=2 (FSR up), [2] ISR=0.5 FSR=1
                       (isr:muRfac=2, ISR down), [3] ISR=1 FSR=0.5 (FSR down); the dark shower
                       does not vary
      Pileup_nTrueInt  --pileup (the Poisson mean), Pileup_nPU the number overlaid
      parent           the generated event a detector copy comes from (--detector-copies)
      GenDark_*        dark hadrons on the event record: nHadrons, nInvisible, nStable
      Runs             genEventCount, genEventSumw, genEventSumw2, PSSumw[4] (sum of
                       genWeight*PSWeight[i] / genEventSumw), xsec, nDetectorCopies; all
                       generated (parent) events

    \b
    Resumable: every finished chunk is stored in OUT.parts (parquet + JSON sidecar); running the
    same command again generates only the missing chunks (a part of another configuration is
    refused, naming what differs). The file is identical whatever the executor, the number of
    workers or the interruptions (per-chunk seeds; docs/generation.md).
    """
    overrides = {}
    for item in detector_params:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--detector")
        flag = key.strip() in ("chs", "jet_pileup")  # the boolean detector parameters
        overrides[key.strip()] = (value.strip().lower() in ("1", "true", "on", "yes")) if flag else float(value)
    # no engine named: -j local processes (the futures engine), as before the engines existed
    local = executor in (None, "futures") and scheduler is None and executor_config is None
    cfg = GenerationConfig(
        process=process, events=events, seed=seed, mzprime=mzprime, rinv=rinv, m_dark=m_dark,
        pthat_min=pthat_min, pthat_max=pthat_max, bias_power=bias_power, ht_min=ht_min, met_min=met_min,
        pileup=pileup, pileup_library=pileup_library, detector_copies=detector_copies, tail_bias=tail_bias,
        tail_bias_pt_min=tail_bias_pt_min, write_hf=write_hf, layout=layout, roulette=roulette,
        roulette_p_min=roulette_p_min, roulette_mt=roulette_mt, roulette_nu_pt=roulette_nu_pt, roulette_rt=roulette_rt,
        roulette_p_soft=roulette_p_soft, roulette_nu_pt_hard=roulette_nu_pt_hard, real_met_copies=real_met_copies,
        shared_pileup=shared_pileup, tail_strata=tail_strata, decay_repeats=decay_repeats,
        detector=overrides,
        chunk_size=chunk_size, workers=workers if local else 1,  # under dask --workers sizes the cluster
        xsec=xsec, dataset=dataset, extra_settings=list(pythia_lines),
    )
    if local:
        meta = generate_file(cfg, out, progress=progress, chunks=chunk_range, keep_parts=keep_parts, fresh=fresh)
        engine = {"engine": "futures" if workers > 1 else "iterative", "workers": workers}
    else:
        spec = executor_spec(executor, scheduler, workers, executor_config)
        with chunk_mapper(spec, label=f"generate-{cfg.dataset_name}") as (mapper, engine):
            meta = generate_file(cfg, out, progress=progress, chunks=chunk_range, keep_parts=keep_parts,
                                 fresh=fresh, map_chunks=mapper)
    if meta.get("complete") is False:
        click.echo(json.dumps({**{k: meta[k] for k in ("dataset", "parts", "n_chunks", "n_stored", "missing")},
                               "executor": engine}, indent=1))
        return
    keys = ("dataset", "n_generated", "n_written", "xsec_pb", "xsec_source", "pythia_sigma_gen_pb", "rinv_truth",
            "n_dark_stable")
    click.echo(json.dumps({**{k: meta[k] for k in keys}, "executor": engine}, indent=1))


def _overrides(executor, workers, scheduler, chunksize, checkpoint_dir, skip_bad_files, settings=()) -> dict:
    """Job-config overrides from the command line (``--set KEY=VALUE`` values are YAML)."""
    extra = parse_set(settings, "analysis.cuts.rt_min=0.15")
    pairs = {"executor.name": executor, "executor.workers": workers, "executor.scheduler": scheduler,
             "executor.chunksize": chunksize, "executor.checkpoint_dir": checkpoint_dir,
             "executor.skip_bad_files": skip_bad_files}
    return {**extra, **{k: v for k, v in pairs.items() if v is not None}}


_executor_options = [
    click.option("--executor", type=click.Choice(["iterative", "futures", "dask"]), default=None,
                 help="Override executor.name of the job."),
    click.option("--workers", type=int, default=None, help="Override executor.workers."),
    click.option("--scheduler", type=str, default=None, help="Address of an existing dask scheduler (tcp://host:8786)."),
    click.option("--chunksize", type=int, default=None, help="Override executor.chunksize (events per chunk)."),
    click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
                 help="Keep each finished chunk here; a re-run processes only missing chunks."),
    click.option("--skip-bad-files/--no-skip-bad-files", default=None,
                 help="Skip (count and list) unreadable files instead of stopping with an error."),
    click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                 help="Override any job key, e.g. --set analysis.cuts.rt_min=0.15 (repeatable; YAML values)."),
]


def _output_options(f):
    f = click.option("--resume", is_flag=True,
                     help="OUT holds an earlier run of the same configuration (interrupted or not): recompute its "
                          "outputs, reusing executor.checkpoint_dir. A different configuration is refused.")(f)
    return click.option("--overwrite", is_flag=True,
                        help="OUT holds an earlier run's outputs: remove exactly the files its manifest.json lists, "
                             "then run.")(f)


def executor_options(f):
    for opt in reversed(_executor_options):
        f = opt(f)
    return f


@click.command()
@click.argument("job", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", type=click.Path(file_okay=False), required=True, help="Output folder.")
@click.option("--skim", is_flag=True, help="Write per-event parquet columns for training instead of histograms.")
@_output_options
@executor_options
def process(job, out, skim, overwrite, resume, executor, workers, scheduler, chunksize, checkpoint_dir, skip_bad_files,
            settings):
    """Run the processor of JOB (YAML) -> histograms.coffea, histograms.root, cutflow.json (or a skim).

    mt_abcd and histograms.root are split at analysis.wp (recorded in both); `svjscout run` uses
    the scan's choice when asked. Also writes provenance.json and manifest.json (see `run`).
    """
    overrides = _overrides(executor, workers, scheduler, chunksize, checkpoint_dir, skip_bad_files, settings)
    cfg = load_job(job, overrides)
    skim_dir = str(Path(out) / "skim") if skim else None
    started = provenance.utc_now()
    with RunOutputs(out, provenance.run_digest(cfg) + ("-skim" if skim else ""), cfg.name, overwrite=overwrite,
                    resume=resume, command=sys.argv):
        output, report = run_processor(cfg, skim_dir=skim_dir, progress=True)
        paths = save_outputs(output, out)
        provenance.write(out, provenance.collect(cfg, overrides, started, output["report"], output["wp"]))
    click.echo(json.dumps({"written": [str(p) for p in paths] + ([skim_dir] if skim_dir else []),
                           "skipped_files": len(report.skipped), "seconds": round(report.seconds, 1)}, indent=1))


@click.command()
@click.argument("job", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--out", "-o", type=click.Path(file_okay=False), default="svjscout-out", show_default=True,
              help="Output folder.")
@click.option("--scan/--no-scan", "use_scan", default=None,
              help="Use the grid scan's working point instead of the configured one.")
@_output_options
@executor_options
def run(job, out, use_scan, overwrite, resume, executor, workers, scheduler, chunksize, checkpoint_dir, skip_bad_files,
        settings):
    """The main job end to end (default JOB: the embedded sample, jobs/local.yaml).

    OUT must not hold an earlier run's outputs unless --overwrite (removes exactly the files listed
    in its manifest.json) or --resume (same configuration only). Writes provenance.json. Ctrl-C
    stops it and prints the command that resumes it (exit 130).
    """
    overrides = _overrides(executor, workers, scheduler, chunksize, checkpoint_dir, skip_bad_files, settings)
    cfg = load_job(job, overrides)
    try:
        result = run_job(cfg, out, use_scan=use_scan, overwrite=overwrite, resume=resume, overrides=overrides)
    except KeyboardInterrupt:  # instead of click's bare "Aborted!": say how to go on
        click.echo(f"\nsvjscout: interrupted. Resume with:\n  {resume_command(job, out, overrides, use_scan)}\n"
                   "(the same configuration; chunks already in executor.checkpoint_dir are not processed again)",
                   err=True)
        sys.exit(130)
    click.echo(json.dumps({"out": result["outdir"], "wp": result["wp"],
                           "timings_s": {k: round(v, 1) for k, v in result["timings"].items()}}, indent=1))
    click.echo(verdict_line(result["verdict"], cfg.name))
    click.echo(f"summary: {result['outdir']}/summary.md")


def resume_command(job: str | None, out: str, overrides: dict, use_scan: bool | None = None) -> str:
    """The ``svjscout run`` command line that resumes an interrupted run into ``out`` (the same
    job and overrides, so the same configuration digest, plus ``--resume``)."""
    parts = ["svjscout", "run"] + ([job] if job else [])
    if use_scan is not None:
        parts.append("--scan" if use_scan else "--no-scan")
    for key, value in overrides.items():
        parts += ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML: the value reads back the same
    parts += ["--resume", "-o", str(out)]
    return shlex.join(parts)


def verdict_line(verdict: dict, job_name: str) -> str:
    """One line: what the run's MC backs."""
    if verdict["backed"]:
        return "verdict: backed: the working point passes every rule with the statistics guard (summary.md)."
    if job_name == "local-embedded":
        return ("verdict: UNBACKED. The embedded sample (~1,700 MC events) shows that every stage runs; it backs no "
                "working point, so its cards, limits and figures are stamped UNBACKED and mean nothing (summary.md "
                "says why; jobs/heldout.yaml on the training sample gives numbers that do).")
    return ("verdict: UNBACKED: the MC does not back the working point; outputs written because "
            "datacards.allow_unbacked is set, each stamped UNBACKED (summary.md says why).")
