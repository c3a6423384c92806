"""LundNet's training: the weighted BCE, the validation loss, the entry point
:func:`train_lundnet` and what follows training (export, test evaluation, checkpoint, report)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from svjscout.core import splits
from svjscout.core.exceptions import ConfigError
from svjscout.core.features import LUND_FEATURES
from svjscout.core.modelmeta import file_sha256
from svjscout.core.splits import SPLIT_NAMES, TEST, VAL
from svjscout.models.lundnet import LundNet, count_parameters, export_lundnet_onnx, load_lundnet_session
from svjscout.models.lundnet_training.config import TrainConfig
from svjscout.models.lundnet_training.crossfit import CrossFitConfig, crossfit_skim, write_oof_table
from svjscout.models.lundnet_training.evaluation import auc_table, baseline_scores
from svjscout.models.lundnet_training.report import _markdown, _plots
from svjscout.models.lundnet_training.stream import _JetStream
from svjscout.models.training.data import resolve_device
from svjscout.models.training.loop import LoopSettings, TrainLoop
from svjscout.models.training.metrics import orientation
from svjscout.models.training.report import write_json

log = logging.getLogger("svjscout.models.train_lundnet")  # the trainer's logger name, as before the split


@dataclass
class TrainResult:
    """What :func:`train_lundnet` produced."""

    onnx_path: Path
    checkpoint_path: Path
    report_md: Path
    report_json: Path
    auc: dict[str, Any]
    baselines: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int
    n_parameters: int
    oof_path: Path | None = None


def _weighted_bce(logits, target, w):
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per * w).sum() / w.sum().clamp(min=1e-12)


def _trimmed(x, m):
    """Drop trailing all-padding node slots of a batch (real nodes come first: exact)."""
    length = max(int(m.sum(dim=1).max()), 1) if len(m) else 1
    return x[:, :length], m[:, :length]


def _validation_loss(model, stream: _JetStream, device, batch_size: int = 4096) -> float:
    """Weighted BCE over the validation jets, streamed row group by row group."""
    model.eval()
    num, den = 0.0, 0.0
    with torch.no_grad():
        for jets in stream.subset(VAL):
            x, m, y, w = stream.tensors(jets)
            for i in range(0, len(x), batch_size):
                xb, mb = _trimmed(x[i : i + batch_size], m[i : i + batch_size])
                per = torch.nn.functional.binary_cross_entropy_with_logits(
                    model(xb.to(device), mb.to(device)), y[i : i + batch_size].to(device), reduction="none")
                wb = w[i : i + batch_size].to(device)
                num += float((per * wb).sum())
                den += float(wb.sum())
    return num / max(den, 1e-12)


def train_lundnet(skim_paths: Sequence[str | Path], out_dir: str | Path, config: TrainConfig | None = None,
                  stop_after: int | None = None) -> TrainResult | None:
    """Train LundNet on skim files and write the model, checkpoint and report to ``out_dir``.

    The skim is streamed in row groups (:class:`_JetStream`); the loop, checkpoints and resume are
    :class:`svjscout.models.training.loop.TrainLoop` (training state in ``out_dir/train_state.pt``).

    Args:
        skim_paths: parquet skim files or directories of them (columns :data:`SKIM_COLUMNS`).
        out_dir: output folder (created).
        config: training settings (defaults: :class:`TrainConfig`).
        stop_after: stop after this many steps, leaving the training state (returns None; tests).

    Returns:
        A :class:`TrainResult` (paths, test AUCs, baselines, history).

    Raises:
        InputFileError: unreadable skim; ConfigError: a subset lacks signal or background.
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mcfg = config.model
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    det_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        feat_idx = [LUND_FEATURES.index(f) for f in mcfg.features]
        stream = _JetStream(skim_paths, config, feat_idx, device)
        for name in SPLIT_NAMES:
            labels = {v["label"] for v in stream.summary.values() if v[name] > 0}
            if labels != {0, 1}:
                n = sum(v[name] for v in stream.summary.values())
                raise ConfigError(f"{name} subset: {n} jets, needs both signal and background jets")
        model = LundNet(mcfg)
        count, s1, s2 = stream.norm[:, feat_idx]
        if count[0] < 2:
            raise ValueError(f"set_normalisation: {int(count[0])} real nodes, expected >= 2")
        mean = s1 / count[0]
        var = np.maximum(s2 - count[0] * mean ** 2, 0.0) / (count[0] - 1)
        model.feat_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        model.feat_std.copy_(torch.as_tensor(np.sqrt(var), dtype=torch.float32).clamp(min=1e-6))
        n_params = count_parameters(model)
        log.info("LundNet %s: %d parameters, %d/%d/%d train/val/test jets", mcfg.block_widths, n_params,
                 *(sum(stream.kept[s]) for s in SPLIT_NAMES))
        model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=config.lr_factor, patience=config.lr_patience)
        t_epoch = [time.perf_counter()]

        def step(batch):
            xb, mb, yb, wb = batch
            xb, mb = _trimmed(xb, mb)
            wb = wb.to(device)
            loss = _weighted_bce(model(xb.to(device), mb.to(device)), yb.to(device), wb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"train_loss": float(loss.detach())}, float(wb.sum())

        def evaluate():
            loss = _validation_loss(model, stream, device)
            model.train()
            return loss, {"val_loss": loss}

        def make_record(epoch, train, figure, val):
            rec = {"epoch": epoch, "train_loss": train.get("train_loss", float("nan")), "val_loss": figure,
                   "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t_epoch[0]}
            t_epoch[0] = time.perf_counter()
            return rec

        settings = LoopSettings(epochs=config.epochs, patience=config.patience, min_delta=1e-6,
                                checkpoint_path=out / "train_state.pt", checkpoint_every=config.checkpoint_every,
                                progress=config.progress, label="LundNet")
        loop = TrainLoop(model, opt, settings, steps=stream.steps, n_steps=stream.n_steps, step=step,
                         evaluate=evaluate, make_record=make_record, scheduler=sched)
        run = loop.run(resume=config.resume, stop_after=stop_after)
    finally:
        torch.use_deterministic_algorithms(det_before)
    if run.interrupted:
        torch.set_num_threads(threads_before)
        return None
    model.to("cpu").eval()
    try:
        result = _finish(model, stream, feat_idx, run.history, run.best_epoch, n_params, run.seconds, out, config)
        if config.crossfit_k:
            result.oof_path = _crossfit(skim_paths, out, config, run.best_epoch, result.onnx_path)
        return result
    finally:
        torch.set_num_threads(threads_before)


def _crossfit(skim_paths, out: Path, config: TrainConfig, best_epoch: int, deployed: Path) -> Path:
    """The k-fold cross-fit after training (``config.crossfit_k``): out-of-fold scores of every event,
    the table stamped with the SHA-256 of the ``deployed`` model (the full one)."""
    cfg = CrossFitConfig(model=config.model, k=config.crossfit_k,
                         epochs=config.crossfit_epochs or max(int(best_epoch), 1), batch_size=config.batch_size,
                         lr=config.lr, seed=config.seed, threads=config.threads,
                         device=str(resolve_device(config.device)))
    fractions = (1 - config.val_fraction - config.test_fraction, config.val_fraction, config.test_fraction)
    table, _ = crossfit_skim(skim_paths, cfg, split_fractions=fractions)
    path = write_oof_table(table, out / "lundnet_oof.parquet", model_sha256=file_sha256(deployed))
    log.info("wrote %s (%d events, %d folds)", path, len(table["event"]), cfg.k)
    return path


def _finish(model, stream: _JetStream, feat_idx, history, best_epoch, n_params, train_seconds, out,
            config) -> TrainResult:
    """Export, test evaluation (streamed), baselines, checkpoint and report (see :func:`train_lundnet`)."""
    mcfg = config.model
    summary = _data_summary(stream)
    training_summary = {
        "files": [f"{Path(f).parent.name}/{Path(f).name}" for f in stream.files],
        "jets": {s: sum(stream.kept[s]) for s in SPLIT_NAMES},
        "datasets": sorted(stream.summary),
        "epochs_run": len(history), "best_epoch": best_epoch, "seed": config.seed,
        "split": {"seed": config.seed, "val_fraction": config.val_fraction, "test_fraction": config.test_fraction,
                  "key": list(splits.KEY_COLUMNS)},
        "batch_size": config.batch_size, "lr": config.lr, "max_len": mcfg.max_len,
        "block_widths": list(mcfg.block_widths), "fusion": mcfg.fusion, "head": mcfg.head,
        "command": config.command,
        # the signal jets' labels (data.truth_factors) and the dark-quark match over every subset
        "signal_jet_label": config.signal_jet_label, "dark_match_dr": config.dark_match_dr,
        "signal_jets_by_match": dict(stream.truth),
    }
    # test pass 1 (torch): scores, labels, weights, datasets and baselines of the test jets
    keep: dict[str, list[np.ndarray]] = {k: [] for k in ("score_torch", "label", "w", "dataset", "n_declusterings",
                                                          "jet_mass")}
    for jets in stream.subset(TEST):
        x = np.ascontiguousarray(jets["lund"][:, :, feat_idx])
        keep["score_torch"].append(model.predict(x, jets["mask"]))
        keep["label"].append(jets["label"])
        keep["w"].append(jets["w_train"])
        keep["dataset"].append(jets["dataset"])
        for k, v in baseline_scores(jets["lund"], jets["mask"]).items():
            keep[k].append(v)
    test = {k: np.concatenate(v) for k, v in keep.items()}
    label, w_test, dataset = test["label"], test["w"], test["dataset"]
    table = auc_table(test["score_torch"], label, w_test, dataset)  # provisional, for the metadata
    auc_meta = {k: row["all"] for k, row in table.items()}
    onnx_path = export_lundnet_onnx(model, out / "lundnet.onnx", mcfg.features, training_summary, auc_meta)
    # test pass 2 (the exported ONNX model): the reported scores
    sess = load_lundnet_session(onnx_path, threads=config.threads)
    onnx_scores = [sess.run(["score"], {"lund": np.ascontiguousarray(j["lund"][:, :, feat_idx]),
                                        "mask": j["mask"].astype(np.float32)})[0] for j in stream.subset(TEST)]
    score = np.concatenate(onnx_scores) if onnx_scores else np.zeros(0, np.float32)
    max_diff = float(np.max(np.abs(score - test["score_torch"]))) if len(score) else 0.0
    table = auc_table(score, label, w_test, dataset)

    # baselines: orientation fixed on the training subset
    bt = stream.base_train
    w_bt = stream.weights["train"].apply(bt["label"], bt["weight"], bt["dataset"])
    base_test = {k: test[k] for k in ("n_declusterings", "jet_mass")}
    baselines: dict[str, Any] = {}
    for name, s_test in base_test.items():
        sign = orientation(bt[name], bt["label"], w_bt)
        baselines[name] = {"sign": sign, "auc": auc_table(sign * s_test, label, w_test, dataset)}

    ckpt = out / "lundnet_checkpoint.pt"
    torch.save({"state_dict": model.state_dict(), "model_config": mcfg.to_dict(),
                "train_config": config.to_dict(), "history": history, "best_epoch": best_epoch}, ckpt)
    report = {
        "command": config.command, "config": config.to_dict(), "n_parameters": n_params,
        "data": summary, "history": history, "best_epoch": best_epoch,
        "train_seconds": train_seconds, "auc": table, "baselines": baselines,
        "onnx_vs_torch_max_abs_diff": max_diff, "onnx": onnx_path.name,
    }
    rj = write_json(out / "report.json", report, sort_keys=True)
    _plots(out, score, label, dataset, w_test, base_test, baselines, history)
    rm = out / "report.md"
    rm.write_text(_markdown(report))
    log.info("wrote %s, %s, %s", onnx_path, ckpt, rm)
    return TrainResult(onnx_path, ckpt, rm, rj, table, baselines, history, best_epoch, n_params)


def _data_summary(stream: _JetStream) -> dict[str, Any]:
    out: dict[str, Any] = {"files": stream.files, "datasets": {}, "signal_jet_label": stream.config.signal_jet_label,
                           "signal_jets_by_match": dict(stream.truth)}
    for name in sorted(stream.summary):
        rec = stream.summary[name]
        n = sum(rec[s] for s in SPLIT_NAMES)
        out["datasets"][name] = {"label": rec["label"], **{s: rec[s] for s in SPLIT_NAMES},
                                 "mean_nodes": rec["nodes"] / max(n, 1)}
    return out
