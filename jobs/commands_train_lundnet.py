"""``svjscout train lundnet``: the click command (no logic; see :mod:`svjscout.models.train_lundnet`)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys

import click

from svjscout.models.lundnet import LUND3_FEATURES, REFERENCE, SMALL
from svjscout.models.train_lundnet import TrainConfig, train_lundnet


@click.command(name="lundnet", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("skim", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "-o", "out", type=click.Path(file_okay=False), required=True,
              help="Output folder: lundnet.onnx, lundnet_checkpoint.pt, report.md/.json, PNGs.")
@click.option("--epochs", type=int, default=30, show_default=True,
              help="Maximum number of epochs (early stopping on the validation loss).")
@click.option("--patience", type=int, default=5, show_default=True,
              help="Epochs without validation improvement before stopping.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Jets per optimisation step.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the event split (svjscout/core/splits.py, shared with the twin), the initialisation and "
              "the batch order.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="torch device: auto = CUDA if available, else CPU (CUDA is untested offline).")
@click.option("--resume", is_flag=True, default=False,
              help="Continue an interrupted training from OUT/train_state.pt (same skims and options).")
@click.option("--threads", type=int, default=2, show_default=True, help="torch CPU threads.")
@click.option("--small/--reference", "small", default=True, show_default=True,
              help="Network size: small (3 EdgeConv blocks 32,32,64; fusion 128; head 64) or the published "
                   "LundNet (6 blocks 32..128; fusion 384; head 256).")
@click.option("--lund3", is_flag=True, default=False, help="LundNet-3: node features ln kt, ln Delta, ln z only.")
@click.option("--max-len", type=int, default=32, show_default=True,
              help="Declusterings per jet kept (widest angles first).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Rich progress bar on stderr.")
@click.option("--crossfit-k", type=int, default=0, show_default=True,
              help="After training, cross-fit this many fold models by parent and write out-of-fold scores to "
                   "OUT/lundnet_oof.parquet (the twin's config key 'lundnet_oof'; docs/training_data.md). "
                   "0: off, else >= 2.")
@click.option("--crossfit-epochs", type=int, default=None,
              help="Epochs per fold model (default: the full model's best epoch).")
@click.option("--signal-jet-label", type=click.Choice(["truth", "event"]), default="truth", show_default=True,
              help="truth: a signal event's jet is signal if a generator dark quark is within --dark-match-dr "
                   "(unmatched signal jets weigh 0; skims without the match keep event labels); event: both jets "
                   "of a signal event (the shipped model's rule). docs/training_data.md.")
@click.option("--dark-match-dr", type=float, default=0.8, show_default=True, help="Dark-quark match radius.")
def lundnet_cmd(skim, out, epochs, patience, batch_size, lr, seed, device, resume, threads, small, lund3, max_len,
                progress, crossfit_k, crossfit_epochs, signal_jet_label, dark_match_dr):
    """Train LundNet on SKIM parquet files (or folders of them) written by the processors.

    Jets: J0 and J1 of every skim event, signal (label 1) vs background (label 0), class-balanced
    event weights, train/val/test split by event (20% validation, 20% test). Writes the ONNX model
    with its metadata, a checkpoint and a performance report (AUC per signal point and background,
    baselines, ROC and score plots) to --out.
    """
    model = SMALL if small else REFERENCE
    model = dataclasses.replace(model, max_len=max_len, **({"features": LUND3_FEATURES} if lund3 else {}))
    command = " ".join([os.path.basename(sys.argv[0])] + [shlex.quote(a) for a in sys.argv[1:]])
    cfg = TrainConfig(model=model, epochs=epochs, patience=patience, batch_size=batch_size, lr=lr, seed=seed,
                      device=device, threads=threads, progress=progress, command=command, resume=resume,
                      crossfit_k=crossfit_k, crossfit_epochs=crossfit_epochs, signal_jet_label=signal_jet_label,
                      dark_match_dr=dark_match_dr)
    res = train_lundnet(list(skim), out, cfg)
    click.echo(json.dumps({"onnx": str(res.onnx_path), "report": str(res.report_md), "best_epoch": res.best_epoch,
                           "auc_all": {k: row["all"] for k, row in res.auc.items()},
                           **({"lundnet_oof": str(res.oof_path)} if res.oof_path else {})}, indent=1))
