"""``svjscout train twin``: the command only; the logic is :func:`svjscout.models.train_twin.train_twin`."""

from __future__ import annotations

import json

import click


@click.command(name="twin", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("skim", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: twin.onnx, twin_checkpoint.pt, report.md/json and plots.")
@click.option("--epochs", type=int, default=None, help="Maximum epochs (default 100, or the config's).")
@click.option("--seed", type=int, default=None, help="Seed of split, sampling and initialisation (default 1).")
@click.option("--lundnet", type=click.Path(exists=True, dir_okay=False), default=None,
              help="LundNet ONNX model, used where the skim's lundnet_j0/j1 are missing or NaN.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML with TwinTrainConfig keys (top level or under 'twin:'): batch_size, "
                   "batches_per_epoch, lr, mdmm_lr, hidden, eps, alpha, rho, x0, y0, kappa, planes, "
                   "mt_edges, patience, ... (see docs/twin.md).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Rich progress bar on stderr.")
def twin_cmd(skim, out_dir, epochs, seed, lundnet, config_path, progress):
    """Train the twin MLPs X, Y on SKIM parquet file(s) (BCE + DisCo/closure constraints under MDMM).

    Writes OUT/twin.onnx (input "features" (N,12) raw, outputs "x", "y"; metadata with the
    feature list, version, training summary and test AUCs), the checkpoint and a report.
    Command-line options override the config file.
    """
    from svjscout.models.train_twin import TwinTrainConfig, train_twin

    cfg = TwinTrainConfig.from_yaml(config_path, epochs=epochs, seed=seed, lundnet_model=lundnet,
                                    progress=progress)
    res = train_twin(list(skim), out_dir, cfg)
    click.echo(json.dumps({"onnx": str(res.onnx_path), "report": str(res.report_md), "best_epoch": res.best_epoch,
                           "auc_all": res.test_metrics["auc_all"]}, indent=1))
