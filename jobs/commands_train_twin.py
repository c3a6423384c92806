"""``svjscout train twin``: the command only; the logic is :func:`svjscout.models.train_twin.train_twin`."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from svjscout.jobs.config import load_job, shipped_model
from svjscout.models.train_twin import (
    DEFAULT_TRADEOFF_SETTINGS,
    TwinTrainConfig,
    fill_tradeoff_doc,
    format_tradeoff,
    tradeoff_table,
    train_twin,
)


@click.command(name="twin", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("skim", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: twin.onnx, twin_checkpoint.pt, report.md/json and plots.")
@click.option("--epochs", type=int, default=None, help="Maximum epochs (default 100, or the config's).")
@click.option("--seed", type=int, default=None,
              help="Seed of split, sampling and initialisation (default 1, shared with LundNet's split).")
@click.option("--split-seed", "split_seed", type=int, default=None,
              help="Seed of the event split alone (config key split_seed; default: --seed). Keep it at LundNet's "
                   "split seed (1) and vary --seed for a training-variance study on the same events.")
@click.option("--lundnet", type=click.Path(exists=True, dir_okay=False), default=None,
              help="LundNet ONNX model, used where the skim's lundnet_j0/j1 are missing or NaN.")
@click.option("--lundnet-oof", "lundnet_oof", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Out-of-fold LundNet scores (lundnet_oof.parquet of `svjscout train lundnet --crossfit-k K`) for "
                   "the twin's train and val events (config key lundnet_oof; docs/twin.md).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML with TwinTrainConfig keys (top level or under 'twin:'): batch_size, "
                   "batches_per_epoch, lr, mdmm_lr, hidden, eps, alpha, rho, x0, y0, kappa, planes, "
                   "mt_edges, patience, analysis_cuts, bce_selection, ... (see docs/twin.md).")
@click.option("--job", "job_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Job YAML whose analysis.cuts define the analysis preselection of the constraints and of "
                   "every validation/test figure (default: the config's analysis_cuts, else the analysis defaults).")
@click.option("--bce-selection", type=click.Choice(["analysis", "loose"]), default=None,
              help="Events of the BCE term: the analysis preselection (default) or every skim event.")
@click.option("--tradeoff", is_flag=True, default=False,
              help="Instead of one training: the decorrelation trade-off table ON VALIDATION (one training per "
                   "setting, tradeoff_table), written to OUT/tradeoff.md and OUT/tradeoff.json.")
@click.option("--tradeoff-settings", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML list of settings (TwinTrainConfig keys) for --tradeoff (default: "
                   "DEFAULT_TRADEOFF_SETTINGS: alpha 0, 1, 3, 10 and eps(dcorr_xy) 0.1, 0.02).")
@click.option("--fill-doc", is_flag=True, default=False,
              help="With --tradeoff: also write the table into the placeholder of docs/twin.md.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="torch device (default: the config's, auto = CUDA if available; CUDA is untested offline).")
@click.option("--resume", is_flag=True, default=False,
              help="Continue an interrupted training from OUT/train_state.pt (same skims and config).")
@click.option("--objective", type=click.Choice(["bce", "analysis"]), default=None,
              help="bce (default: the design's recipe) or analysis: maximise the expected <Z_A> of the binned ABCD "
                   "analysis (non-closure and statistics included; docs/twin.md).")
@click.option("--init", "init_model", default=None,
              help="Twin model to start from: a twin_checkpoint.pt, a twin ONNX, or shipped:twin.")
@click.option("--constraints/--no-constraints", default=None,
              help="Keep the MDMM decorrelation/closure constraints (default) or train on the objective alone.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Rich progress bar on stderr.")
def twin_cmd(skim, out_dir, epochs, seed, split_seed, lundnet, lundnet_oof, config_path, job_path, bce_selection,
             tradeoff, tradeoff_settings, fill_doc, device, resume, objective, init_model, constraints, progress):
    """Train the twin MLPs X, Y on SKIM parquet file(s) (BCE + DisCo/closure constraints under MDMM;
    or, with --objective analysis, the expected ABCD significance itself).

    Writes OUT/twin.onnx (input "features" (N,12) raw, outputs "x", "y"; metadata with the
    feature list, version, training summary and test AUCs), the checkpoint and a report.
    Command-line options override the config file.
    """
    cuts = None
    if job_path is not None:
        cuts = load_job(job_path).analysis.cuts.model_dump()
    if init_model is not None and init_model.startswith("shipped:"):
        init_model = str(shipped_model(init_model.split(":", 1)[1]))
    cfg = TwinTrainConfig.from_yaml(config_path, epochs=epochs, seed=seed, split_seed=split_seed,
                                    lundnet_model=lundnet, lundnet_oof=lundnet_oof, progress=progress,
                                    analysis_cuts=cuts, bce_selection=bce_selection,
                                    device=device, resume=resume or None, objective=objective,
                                    init_model=init_model, constraints=constraints)
    if tradeoff:
        settings = DEFAULT_TRADEOFF_SETTINGS
        if tradeoff_settings is not None:
            settings = yaml.safe_load(Path(tradeoff_settings).read_text())
            if not isinstance(settings, list) or not all(isinstance(s, dict) for s in settings):
                raise click.BadParameter("expected a YAML list of mappings", param_hint="--tradeoff-settings")
        rows = tradeoff_table(list(skim), out_dir, cfg, settings)
        table = format_tradeoff(rows)
        if fill_doc:
            fill_tradeoff_doc(table)
        click.echo(table)
        return
    res = train_twin(list(skim), out_dir, cfg)
    summary = json.loads(res.report_json.read_text())["summary"].get("analysis_objective")
    click.echo(json.dumps({"onnx": str(res.onnx_path), "report": str(res.report_md), "best_epoch": res.best_epoch,
                           "auc_all": res.test_metrics["auc_all"], "auc_subset": f"{cfg.quoted_subset} (untouched)"}
                          | ({"z_hard_test": summary[cfg.quoted_subset]["z_mean"]} if summary else {}), indent=1))
