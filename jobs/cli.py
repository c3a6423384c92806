"""The ``svjscout`` command line. It holds no logic: it parses, loads configs, calls the library."""

from __future__ import annotations

import json
import logging
import sys

import click

from svjscout import __version__
from svjscout.exceptions import SVJScoutError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="svjscout")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """svjscout: semi-visible-jet search on HLT-scouting data, from ROOT files to Combine datacards."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.argument("process", type=click.Choice(["svj", "qcd", "ttbar", "wjets", "zjets"]))
@click.option("--events", "-n", type=int, required=True, help="Number of events to generate (before filters).")
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed (Pythia and detector).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="Output ROOT file.")
@click.option("--mzprime", type=float, default=2000.0, show_default=True, help="svj: Z' mass in GeV.")
@click.option("--rinv", type=float, default=0.3, show_default=True, help="svj: invisible fraction of dark hadrons.")
@click.option("--pthat-min", type=float, default=None, help="Backgrounds: pT-hat lower edge in GeV (default per process).")
@click.option("--pthat-max", type=float, default=None, help="Backgrounds: pT-hat upper edge in GeV (default open).")
@click.option("--ht-min", type=float, default=0.0, show_default=True,
              help="Generator-level pre-filter: scalar sum of visible particle pT (|eta|<3) in GeV; <= 410.")
@click.option("--met-min", type=float, default=0.0, show_default=True,
              help="Skim on PF MET in GeV after the detector response; <= 156 (looser than the preselection).")
@click.option("--pileup", type=float, default=0.0, show_default=True, help="Mean number of pileup (min-bias) events.")
@click.option("--chunk-size", type=int, default=500, show_default=True, help="Events per chunk (one Pythia run each).")
@click.option("--workers", "-j", type=int, default=1, show_default=True, help="Parallel worker processes.")
@click.option("--xsec", type=float, default=None, help="Override the cross section in pb written to the file.")
@click.option("--dataset", type=str, default=None, help="Dataset name written to the file (default from process).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Rich progress bar on stderr.")
def generate(process, events, seed, out, mzprime, rinv, pthat_min, pthat_max, ht_min, met_min, pileup,
             chunk_size, workers, xsec, dataset, progress):
    """Generate PROCESS with Pythia 8 + the fast detector response into a scouting-format ROOT file."""
    from svjscout.samples.generate import GenerationConfig, generate_file

    cfg = GenerationConfig(
        process=process, events=events, seed=seed, mzprime=mzprime, rinv=rinv, pthat_min=pthat_min,
        pthat_max=pthat_max, ht_min=ht_min, met_min=met_min, pileup=pileup, chunk_size=chunk_size,
        workers=workers, xsec=xsec, dataset=dataset,
    )
    meta = generate_file(cfg, out, progress=progress)
    keys = ("dataset", "n_generated", "n_written", "xsec_pb", "pythia_sigma_gen_pb", "rinv_truth")
    click.echo(json.dumps({k: meta[k] for k in keys}, indent=1))


def main() -> None:
    """Entry point: domain errors become one clear line and exit code 2."""
    try:
        cli(standalone_mode=True)
    except SVJScoutError as err:
        click.echo(f"svjscout: error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
