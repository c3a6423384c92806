"""LundNet's report: ROC, score and loss figures and the markdown text."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from svjscout.models.training.metrics import roc
from svjscout.models.training.report import new_figure, save_figure


def _plots(out: Path, score, label, dataset, w_test, base_test, baselines, history) -> None:
    points = sorted(set(dataset[label == 1]))
    procs = sorted(set(dataset[label == 0]))
    bkg = label == 0

    fig, ax = new_figure(6, 5)
    for point in points + ["all"]:
        sel = bkg | ((label == 1) if point == "all" else (dataset == point))
        tpr, fpr = roc(score[sel], label[sel], w_test[sel])
        ax.plot(tpr, np.clip(fpr, 1e-6, None), lw=2 if point == "all" else 1,
                label=f"LundNet {point}" if point != "all" else "LundNet, all signal")
    for name, s in base_test.items():
        tpr, fpr = roc(baselines[name]["sign"] * s, label, w_test)
        ax.plot(tpr, np.clip(fpr, 1e-6, None), ls="--", label=f"baseline {name}, all signal")
    ax.set_yscale("log")
    ax.set_xlabel("signal efficiency")
    ax.set_ylabel("background efficiency (all backgrounds)")
    ax.set_title("LundNet ROC (test jets)")
    ax.legend(fontsize=7)
    save_figure(fig, out / "roc.png", dpi=110)

    fig, ax = new_figure(6, 4.5)
    bins = np.linspace(0, 1, 26)
    for name in points + procs:
        sel = dataset == name
        if sel.sum() == 0 or w_test[sel].sum() <= 0:
            continue
        ax.hist(score[sel], bins=bins, weights=w_test[sel], density=True, histtype="step",
                ls="-" if name in points else "--", label=name)
    ax.set_xlabel("LundNet score")
    ax.set_ylabel("normalised (weighted)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    save_figure(fig, out / "scores.png", dpi=110)

    fig, ax = new_figure(5, 3.5)
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], label="train")
    ax.plot(ep, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted BCE")
    ax.legend()
    save_figure(fig, out / "loss.png", dpi=110)


def _fmt(v: float) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    table = report["auc"]
    points = [k for k in table if k != "all"] + ["all"]
    procs = [k for k in table["all"] if k != "all"] + ["all"]
    lines = [
        "# LundNet training report",
        "",
        f"Command: `{report['command'] or 'train_lundnet(...)'}`",
        "",
        f"Model: blocks {cfg['model']['block_widths']}, fusion {cfg['model']['fusion']}, head "
        f"{cfg['model']['head']}, features {cfg['model']['features']}, max_len {cfg['model']['max_len']}, "
        f"{report['n_parameters']} parameters. Adam lr {cfg['lr']}, batch {cfg['batch_size']}, seed "
        f"{cfg['seed']}, lr x{cfg['lr_factor']} after {cfg['lr_patience']} flat epochs, "
        f"best epoch {report['best_epoch']} of {len(report['history'])} "
        f"(patience {cfg['patience']}), {report['train_seconds']:.0f} s on {cfg['device']} "
        f"({cfg['threads']} threads). ONNX vs torch on the test jets: max |diff| "
        f"{report['onnx_vs_torch_max_abs_diff']:.1e}.",
        "",
        "## Data (jets; J0 and J1 of every event)",
        "",
        "| dataset | label | train | val | test | mean nodes |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in report["data"]["datasets"].items():
        lines.append(f"| {name} | {d['label']} | {d['train']} | {d['val']} | {d['test']} | {d['mean_nodes']:.1f} |")
    lines += [
        "",
        "## Test (untouched) AUC, LundNet (rows: signal points; columns: background processes)",
        "",
        "Test (untouched: early stopping used the validation subset only). Weighted ROC AUC (sklearn); "
        "background by physics weight, every signal point normalised to the same total weight (also in "
        "\"all\"; the twin's report weights its signal the same way).",
        "",
        "| signal \\ background | " + " | ".join(procs) + " |",
        "|---|" + "---|" * len(procs),
    ]
    for point in points:
        lines.append(f"| {point} | " + " | ".join(_fmt(table[point][p]) for p in procs) + " |")
    lines += [
        "",
        "## Baselines (test (untouched) AUC vs all backgrounds; sign fixed on the training subset)",
        "",
        "| signal | LundNet | " + " | ".join(report["baselines"]) + " |",
        "|---|---|" + "---|" * len(report["baselines"]),
    ]
    for point in points:
        vals = [_fmt(b["auc"][point]["all"]) for b in report["baselines"].values()]
        lines.append(f"| {point} | {_fmt(table[point]['all'])} | " + " | ".join(vals) + " |")
    lines += ["", "![ROC](roc.png)", "", "![scores](scores.png)", "", "![loss](loss.png)", ""]
    return "\n".join(lines)
