"""The twin's training entry point :func:`train_twin` (streamed skim, MDMM, early stopping on
validation, one test evaluation, export, checkpoint, report); :func:`load_checkpoint` (in
:mod:`.checkpoint`, which :mod:`.analysis` uses too) is re-exported here."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svjscout import __version__
from svjscout.core import splits
from svjscout.core.exceptions import InputFileError
from svjscout.core.features import EVENT_FEATURES
from svjscout.models.export import read_metadata
from svjscout.models.mdmm import MDMM, Constraint
from svjscout.models.training.data import resolve_device
from svjscout.models.training.loop import LoopSettings, TrainLoop
from svjscout.models.twin import TwinMLP, export_twin_onnx
from svjscout.models.twin_training.analysis import AnalysisObjective, load_twin_init
from svjscout.models.twin_training.checkpoint import load_checkpoint  # noqa: F401 - public here (train_twin re-exports it)
from svjscout.models.twin_training.config import CONSTRAINTS, TwinTrainConfig
from svjscout.models.twin_training.data import SkimData, _points, _Tensors, training_weights
from svjscout.models.twin_training.evaluation import _test_metrics, baseline_signs, target_check
from svjscout.models.twin_training.floors import parent_codes, twin_closure_floors, twin_dcorr_floors
from svjscout.models.twin_training.losses import (
    _f,
    _loss_terms,
    _per_name,
    _validation_figure,
    constraint_floors,
    effective_eps,
)
from svjscout.models.twin_training.report import _plot_history, _plot_plane, _write_report
from svjscout.models.twin_training.stream import _TwinStream

log = logging.getLogger("svjscout.models.train_twin")  # the trainer's logger name, as before the split


@dataclass
class TwinTrainResult:
    """What :func:`train_twin` produced.

    Attributes:
        onnx_path, checkpoint_path, report_md, report_json: files written.
        plots: name -> PNG path.
        history: per-epoch records (epoch 0 = before training).
        test_metrics: AUCs, dCorr values and closures on the quoted subset (untouched, analysis
            selection): ``final`` of the 4-way split, ``test`` of the 3-way one.
        val_metrics: the same on the validation split (where every choice is made).
        best_epoch: epoch of the kept weights.
        model: the trained :class:`TwinMLP` (best epoch).
    """

    onnx_path: Path
    checkpoint_path: Path
    report_md: Path
    report_json: Path
    plots: dict[str, Path]
    history: list[dict[str, Any]]
    test_metrics: dict[str, Any]
    best_epoch: int
    model: TwinMLP
    val_metrics: dict[str, Any] = field(default_factory=dict)


def _check_lundnet_split(cfg: TwinTrainConfig) -> None:
    """Refuse a twin split whose held-out subsets could hold LundNet training events (when the
    model records its split: LundNet models trained with svjscout/core/splits.py): with 3
    fractions the twin's test subset must lie inside LundNet's (:func:`splits.check_nested`),
    with 4 the select and final subsets inside LundNet's val + test and final inside its test
    (:func:`splits.check_nested4`)."""
    if not cfg.lundnet_model or not Path(cfg.lundnet_model).is_file():
        return
    try:
        training = read_metadata(cfg.lundnet_model).get("training") or {}
    except Exception:  # noqa: BLE001 - an unreadable model is reported when it is used
        return
    rec = training.get("split") if isinstance(training, Mapping) else None
    if isinstance(rec, Mapping) and "test_fraction" in rec:
        seed = rec.get("seed", cfg.event_split_seed)
        if cfg.four_way:  # no val_fraction recorded: select + final must then fit in LundNet's test alone
            splits.check_nested4(cfg.split, rec.get("val_fraction", 0.0), rec["test_fraction"], cfg.event_split_seed,
                                 seed, what=f"the twin's select/final subsets inside val/test of {cfg.lundnet_model}")
        else:
            splits.check_nested(cfg.split[2], rec["test_fraction"], cfg.event_split_seed, seed,
                                what=f"the twin's test subset inside that of {cfg.lundnet_model}")


def init_model_overlap(cfg: TwinTrainConfig) -> dict[str, Any] | None:
    """Where this twin's held-out subsets (val, select, final / test) hold training events of the
    pair it starts from (``init_model``, when its split is recorded: ONNX metadata or checkpoint
    config). Both splits cut the same ``u`` with train on top, so the overlap is the range
    ``[1 - init_train, 1 - train)`` of ``u`` (validation events; select/final stay clean while
    ``select + final <= 1 - init_train``); another split seed overlaps everywhere. None when
    nothing is recorded or nothing overlaps; else a record (logged as a warning, kept in the report)."""
    if not cfg.init_model or not Path(cfg.init_model).is_file():
        return None
    try:
        if Path(cfg.init_model).suffix == ".pt":
            c = torch.load(cfg.init_model, map_location="cpu", weights_only=False).get("config") or {}
            fr, seed = c.get("split"), c.get("split_seed") if c.get("split_seed") is not None else c.get("seed")
        else:
            rec = (read_metadata(cfg.init_model).get("training") or {}).get("split") or {}
            fr, seed = rec.get("fractions"), rec.get("seed")
    except Exception:  # noqa: BLE001 - an unreadable model is reported when it is loaded
        return None
    if not fr or seed is None:
        return None
    init_from, held_to = 1.0 - float(fr[0]), 1.0 - float(cfg.split[0])
    if int(seed) != int(cfg.event_split_seed):
        out = {"init_model": str(cfg.init_model), "u_range": None,
               "why": f"split seed {seed} != {cfg.event_split_seed}"}
    elif held_to > init_from + 1e-12:
        out = {"init_model": str(cfg.init_model), "u_range": [init_from, held_to],
               "subsets": [n for n, lo, hi in _held_out_ranges(cfg) if hi > init_from + 1e-12]}
    else:
        return None
    log.warning("twin: held-out events of this training were training events of %s (%s)", cfg.init_model,
                out.get("why") or f"u in [{init_from:g}, {held_to:g}): {', '.join(out['subsets'])}")
    return out


def _held_out_ranges(cfg: TwinTrainConfig) -> list[tuple[str, float, float]]:
    """(name, lo, hi) of the held-out subsets on ``u`` (splits.py: from 0 up, train on top)."""
    names = ("final", "select", "val") if cfg.four_way else ("test", "val")
    fr = list(reversed(cfg.split[1:]))
    edges = np.concatenate([[0.0], np.cumsum(fr)])
    return [(n, float(edges[i]), float(edges[i + 1])) for i, n in enumerate(names)]


def _background_scores(model: TwinMLP, d: SkimData):
    """(background events of ``d``, their trained X and Y as float64, parent codes), or None for
    fewer than 4 background events: what the permutation floors are computed on."""
    bkg = np.flatnonzero(d.label == 0)
    if len(bkg) < 4:
        return None
    db = d.take(bkg)
    with torch.no_grad():
        xs, ys = model(torch.from_numpy(db.features).to(next(model.parameters()).device))
    x, y = xs.cpu().numpy().astype(np.float64), ys.cpu().numpy().astype(np.float64)
    return db, x, y, parent_codes(db.dataset, db.run, db.lumi, db.parent)


def permutation_dcorr_floors(model: TwinMLP, d: SkimData, cfg: TwinTrainConfig) -> dict[str, dict[str, float]]:
    """Noise floors of the five dCorr constraints on the trained scores of the background of ``d``
    (the quoted subset, analysis-selected): :func:`~.floors.twin_dcorr_floors`, block permutation
    among parents (:func:`~.floors.parent_codes`) within datasets, ``permutation_floor_draws``
    draws, ``permutation_floor_estimator``; name -> {observed, mean, sd, z, n_draws} ({} if off
    or fewer than 4 background events)."""
    scored = _background_scores(model, d) if cfg.permutation_floor_draws else None
    if scored is None:
        return {}
    db, x, y, parent = scored
    out = twin_dcorr_floors(x, y, db.mt, db.deta, db.weight, parent, cfg.permutation_floor_draws,
                            cfg.seed + 29, cfg.permutation_floor_estimator, strata=db.dataset)
    return {k: f.to_dict() for k, f in out.items()}


def permutation_closure_floors(model: TwinMLP, d: SkimData, cfg: TwinTrainConfig) -> dict[str, dict[str, float]]:
    """Noise floors of the ABCD non-closure at the report's working point (``cfg.reference_wp``) in every
    plane, on the trained scores of the background of ``d``: :func:`~.floors.twin_closure_floors`
    (X permuted among parent blocks within datasets); name -> {observed, mean, sd, z, n_draws}
    ({} if off or fewer than 4 background events)."""
    scored = _background_scores(model, d) if cfg.permutation_floor_draws else None
    if scored is None:
        return {}
    db, x, y, parent = scored
    wp = tuple(float(v) for v in cfg.reference_wp)
    out = twin_closure_floors(x, y, db.deta, db.weight, parent, {"wp": wp}, cfg.planes,
                              cfg.permutation_floor_draws, cfg.seed + 31, strata=db.dataset)
    return {k: f.to_dict() for k, f in out.items()}


def train_twin(skim_paths: Sequence[str | Path], out_dir: str | Path,
               config: TwinTrainConfig | Mapping[str, Any] | None = None,
               stop_after: int | None = None) -> TwinTrainResult | None:
    """Train the twin MLPs on skim parquet files and write ONNX, checkpoint and report.

    The skim is streamed in row groups (:class:`_TwinStream`); the loop, checkpoints and resume
    are :class:`svjscout.models.training.loop.TrainLoop` (training state in
    ``out_dir/train_state.pt``; ``resume`` continues from it).

    Args:
        skim_paths: skim parquet files (columns: the 12 features, mt, deta, weight, label, ...).
        out_dir: output folder (created).
        config: :class:`TwinTrainConfig`, a mapping of its keys, or None (defaults).
        stop_after: stop after this many optimisation steps, leaving the training state behind
            (what an interrupted job leaves; returns None). For tests.

    Returns:
        :class:`TwinTrainResult` (None with ``stop_after``).
    """
    cfg = config if isinstance(config, TwinTrainConfig) else TwinTrainConfig.from_mapping(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    _check_lundnet_split(cfg)
    init_overlap = init_model_overlap(cfg)
    stream = _TwinStream(skim_paths, cfg, device)
    d_tr_ana = stream.train_sample.take(np.flatnonzero(stream.ana_sample))
    d_va, d_te = stream.val, stream.test
    selection = {"cuts": stream.cuts.model_dump(include={"mt_min", "rt_min", "dphi_min_max", "deta_max"}),
                 "bce_selection": cfg.bce_selection, "n_skim": stream.n_skim, "n_pass": stream.n_pass,
                 "n_train_bce": stream.n_train, "n_train_constraints": stream.n_train_constraints}
    log.info("twin: %d of %d skim events pass the analysis preselection %s", stream.n_pass, stream.n_skim,
             selection["cuts"])
    for name, d in (("train", d_tr_ana), ("validation", d_va)):
        if (d.label == 0).sum() < 2 or (d.label == 1).sum() < 1:
            raise InputFileError(f"{[str(p) for p in skim_paths]}: the {name} split has "
                                 f"{int((d.label == 0).sum())} background and {int((d.label == 1).sum())} signal "
                                 "events; need >= 2 background and >= 1 signal")
    t_sample = _Tensors(stream.train_sample, stream.weights.apply(
        stream.train_sample.label, stream.train_sample.weight, _points(stream.train_sample)), stream.ana_sample)
    t_va = _Tensors(d_va, training_weights(d_va, cfg.signal_to_background, cfg.balance_signal_points),
                    device=device)

    floors: dict[str, dict[str, tuple[float, float]]] = {}
    if cfg.floor_policy != "off":
        floors["train"] = constraint_floors(t_sample, cfg, resample=True, seed=cfg.seed + 1)
        t_va_cpu = _Tensors(d_va, d_va.weight)
        floors["val"] = constraint_floors(t_va_cpu, cfg, resample=False, seed=cfg.seed + 2)
    eps_used, below = effective_eps(cfg, floors.get("train"))
    eps_val, _ = effective_eps(cfg, floors.get("val"), eps_used)
    for n in below:
        mean, sd = floors["train"][n]
        log.warning("twin: eps(%s) = %g is below its noise floor on this training sample (%.4f +- %.4f)%s", n,
                    cfg.eps[n], mean, sd, f"; training with {eps_used[n]:.4f}" if cfg.floor_policy == "adjust" else "")

    if cfg.init_model:  # a trained pair to start from: its architecture and standardisation
        model = load_twin_init(cfg.init_model)
        if model.n_features != len(EVENT_FEATURES):
            raise InputFileError(f"{cfg.init_model}: the twin to start from reads {model.n_features} features, "
                                 f"this version {len(EVENT_FEATURES)}")
        log.info("twin: starting from %s (%s)", cfg.init_model, model.hparams)
    else:
        model = TwinMLP(len(EVENT_FEATURES), cfg.hidden, cfg.activation, cfg.dropout)
        model.mean.copy_(torch.as_tensor(stream.feature_mean, dtype=torch.float32))
        model.std.copy_(torch.as_tensor(stream.feature_std, dtype=torch.float32))
    objective = None
    if cfg.objective == "analysis":
        objective = AnalysisObjective(cfg, stream.train_sample, stream.points,
                                      len(stream.train_sample) / max(stream.n_train, 1), device,
                                      anchor=model if cfg.init_model else None)  # the trust region's centre
    mdmm = MDMM([Constraint(n, eps_used[n], _per_name(cfg.alpha, n, 1.0), _per_name(cfg.rho, n, 1.0))
                 for n in CONSTRAINTS], projection=cfg.mdmm_projection)
    if objective is not None:
        objective.load_multipliers(mdmm)  # init_multipliers: the starting pair's, not 0
    model.to(device)
    mdmm.to(device)
    groups = [{"params": list(model.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
              {"params": list(mdmm.parameters()), "lr": cfg.mdmm_lr, "weight_decay": 0.0}]
    if objective is not None and list(objective.parameters()):  # the learned thresholds
        groups.append({"params": list(objective.parameters()), "lr": cfg.lr, "weight_decay": 0.0})
    opt = torch.optim.Adam(groups)
    mdmm.attach(opt)  # multipliers projected to >= 0 after every step (mdmm_projection: clamp)
    norm = cfg.batch_size * stream.mean_weight

    def step(batch) -> tuple[dict[str, float], float]:
        t, idx, wps = batch
        if objective is not None:  # closure_at_wp: the constraints at the moving thresholds too
            bce, parts, vals = _loss_terms(model, t, idx, objective.constraint_config(), norm, objective.step_wps(wps))
        else:
            bce, parts, vals = _loss_terms(model, t, idx, cfg, norm, wps)
        primary, extra = bce, {}
        if objective is not None:  # maximise the soft <Z_A> of the training split
            temperature = objective.temperature()
            z = objective.training_value(model, stream.gen)
            primary = z["loss"]  # -(robust <Z_A>) + the N_eff and trust-region penalties
            x0, y0 = objective.thresholds()
            extra = {"z_soft": _f(z["z_mean"]), "temperature": temperature, "x0": _f(x0), "y0": _f(y0),
                     **objective.last_terms}
        loss = mdmm(primary, vals).loss if cfg.constraints else primary
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rec = {"loss": _f(loss), "bce": _f(bce)} | {k: _f(v) for k, v in parts.items()} | \
            {k: _f(v) for k, v in vals.items()} | extra
        return rec, 1.0

    def evaluate() -> tuple[float, dict[str, Any]]:
        model.eval()
        with torch.no_grad():
            bce, parts, vals = _loss_terms(model, t_va, None,
                                           cfg if objective is None else objective.constraint_config())
        model.train()
        rec = {k: float(v) for k, v in parts.items()} | {k: float(v) for k, v in vals.items()}
        rec["bce"] = float(bce)
        violations = _validation_figure(0.0, rec, eps_val) if cfg.constraints else 0.0
        if objective is None:
            return rec["bce"] + violations, rec
        hard = objective.hard_value(model, d_va, cfg.split[1])  # hard cuts: the analysis itself
        rec |= {"z_hard": hard["z_mean"], "z_stop": hard["z_stop"], "x0": hard["x0"], "y0": hard["y0"]}
        return -hard["z_stop"] + violations, rec  # stop_wp: the wp chosen on other validation parents

    def make_record(epoch: int, train: Mapping[str, float], figure: float, val: Mapping[str, Any]) -> dict[str, Any]:
        if epoch == 0:
            return {"epoch": 0, "val": dict(val), "val_figure": figure}
        summ = mdmm.summary()
        return {"epoch": epoch, "train": dict(train), "val": dict(val), "val_figure": figure,
                "multipliers": {k: s["lambda"] for k, s in summ.items()},
                "slacks": {k: s["slack"] for k, s in summ.items()}}

    settings = LoopSettings(epochs=cfg.epochs, patience=cfg.patience, min_delta=cfg.min_delta, evaluate_initial=True,
                            checkpoint_path=out / "train_state.pt", checkpoint_every=cfg.checkpoint_every,
                            progress=cfg.progress, label="twin MLPs")
    loop = TrainLoop(model, opt, settings, steps=stream.steps, n_steps=lambda e: cfg.batches_per_epoch, step=step,
                     evaluate=evaluate, make_record=make_record,
                     extra_modules={"mdmm": mdmm} | ({"objective": objective} if objective is not None else {}),
                     stateful={"stream": stream})
    run = loop.run(resume=cfg.resume, stop_after=stop_after)
    if run.interrupted:
        return None
    history = run.history

    model.to("cpu")
    mdmm.to("cpu")
    if objective is not None:
        objective.to("cpu")
        objective.device = "cpu"
    model.eval()
    signs = baseline_signs(d_tr_ana)  # baselines oriented on training events, never on those evaluated
    val_metrics, _, _ = _test_metrics(model, d_va, cfg, signs, floors=False)
    # the test split, evaluated once with the model chosen on validation
    metrics, x_te, y_te = _test_metrics(model, d_te, cfg, signs)
    test_targets = target_check(metrics, eps_used, cfg.eps)
    # noise floors of the trained scores on the quoted subset: block permutation among parents
    perm_floors = permutation_dcorr_floors(model, d_te, cfg)
    perm_floors.update(permutation_closure_floors(model, d_te, cfg))

    summary = {
        "svjscout_version": __version__,
        "skims": [str(p) for p in skim_paths],
        "n_train": stream.n_train, "n_val": len(d_va), "n_test": len(d_te), "n_select": len(stream.select),
        "quoted_subset": cfg.quoted_subset,
        "n_train_signal": stream.n_signal, "n_train_background": stream.n_background,
        "datasets": sorted(stream.datasets),
        "signal_points": [list(p) for p in stream.points],
        "best_epoch": int(run.best_epoch), "epochs_run": int(run.epochs_run), "best_val_figure": float(run.best_figure),
        "train_seconds": round(run.seconds, 1),
        "eps_used": eps_used, "eps_validation": eps_val, "eps_below_floor": below,
        "selection": selection,
        "split": {"seed": cfg.event_split_seed, "fractions": list(cfg.split), "key": list(splits.KEY_COLUMNS),
                  "names": list(splits.SPLIT4_NAMES if cfg.four_way else splits.SPLIT_NAMES)},
        "lundnet_oof": ({"table": str(cfg.lundnet_oof), "events": stream.n_oof, "subsets": ["train", "val"],
                         "unseen_events": stream.n_oof_unseen}
                        if cfg.lundnet_oof else None),
        "multipliers_shipped": {k: v["lambda"] for k, v in mdmm.summary().items()},
        "test_targets": test_targets,
        "floors": {k: {n: list(v) for n, v in f.items()} for k, f in floors.items()},
        "init_model_overlap": init_overlap,
        "permutation_floors": {"subset": cfg.quoted_subset, "estimator": cfg.permutation_floor_estimator,
                               "draws": cfg.permutation_floor_draws, "terms": perm_floors},
        "config": cfg.as_dict(),
    }
    if objective is not None:  # <Z_A> with hard cuts at the learned thresholds
        summary["analysis_objective"] = {
            # validation; 4-way: the wp chosen on select, quoted on final; 3-way: on test
            **objective.final_report(model, d_va, d_te, cfg.split, d_select=stream.select if cfg.four_way else None),
            "temperature_end": objective.temperature(), "b_floor": objective.settings.b_floor,
            "mt_edges": list(objective.edges), "plane": cfg.objective_plane}
    auc = {"all": metrics["auc_all"], **{k: {"x": v["x"], "y": v["y"]} for k, v in metrics["auc_per_point"].items()}}
    skip = ("progress", "num_threads", "device", "resume", "checkpoint_every")
    training_meta = {k: v for k, v in summary.items() if k != "config"} | {
        "config": {k: v for k, v in summary["config"].items() if k not in skip},
        "auc": auc, "auc_weighting": metrics["auc_weighting"], "test_dcorr": metrics.get("dcorr", {}),
        "test_closure": metrics.get("closure_hard", {}),
    }
    onnx_path = export_twin_onnx(copy.deepcopy(model).cpu(), out / "twin.onnx", training_meta, auc=auc)
    ckpt = out / "twin_checkpoint.pt"
    torch.save({"model": model.state_dict(), "hparams": model.hparams, "mdmm": mdmm.state_dict(),
                "mdmm_summary": mdmm.summary(), "optimizer": opt.state_dict(), "config": cfg.as_dict(),
                "eps_used": eps_used, "best_epoch": int(run.best_epoch), "epochs_run": int(run.epochs_run),
                "features": list(EVENT_FEATURES), "version": __version__}, ckpt)
    plots = _plot_history(history, out)
    plots["xy_plane"] = _plot_plane(d_te, x_te, y_te, cfg, out)
    md, js = _write_report(out, summary, history, metrics, plots, val_metrics)
    log.info("twin training done: best epoch %d, test AUC X %.3f Y %.3f; wrote %s", run.best_epoch,
             metrics["auc_all"]["x"], metrics["auc_all"]["y"], out)
    return TwinTrainResult(onnx_path=onnx_path, checkpoint_path=ckpt, report_md=md, report_json=js, plots=plots,
                           history=history, test_metrics=metrics, best_epoch=int(run.best_epoch), model=model,
                           val_metrics=val_metrics)
