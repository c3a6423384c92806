"""What decorrelation costs: one twin training per setting, compared on validation
(:func:`tradeoff_table`), its markdown table and the table of docs/twin.md."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from svjscout.core.exceptions import ConfigError
from svjscout.models.twin_training.config import TwinTrainConfig
from svjscout.models.twin_training.train import train_twin

#: Settings of :func:`tradeoff_table` by default: no decorrelation (alpha 0: BCE only) and a few
#: MDMM scales and dCorr(X, Y) targets, each merged over the base config.
DEFAULT_TRADEOFF_SETTINGS: tuple[dict[str, Any], ...] = (
    {"alpha": 0.0},
    {"alpha": 1.0},
    {"alpha": 3.0},
    {"alpha": 10.0},
    {"alpha": 3.0, "eps": {"dcorr_xy": 0.10}},
    {"alpha": 3.0, "eps": {"dcorr_xy": 0.02}},
)

#: Markers of the placeholder table in docs/twin.md that :func:`fill_tradeoff_doc` replaces.
TRADEOFF_BEGIN = "<!-- tradeoff-table:begin (written by svjscout.models.train_twin.fill_tradeoff_doc) -->"
TRADEOFF_END = "<!-- tradeoff-table:end -->"


def _setting_label(setting: Mapping[str, Any]) -> str:
    parts = []
    for k, v in setting.items():
        if isinstance(v, Mapping):
            parts += [f"{k}.{kk}={vv:g}" if isinstance(vv, (int, float)) else f"{k}.{kk}={vv}" for kk, vv in v.items()]
        else:
            parts.append(f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}")
    return ", ".join(parts) or "base"


def tradeoff_table(skim_paths: Sequence[str | Path], out_dir: str | Path,
                   base_config: TwinTrainConfig | Mapping[str, Any] | str | Path | None = None,
                   settings: Sequence[Mapping[str, Any]] = DEFAULT_TRADEOFF_SETTINGS) -> list[dict[str, Any]]:
    """What decorrelation costs, measured ON VALIDATION: one twin training per setting.

    Each setting (a mapping of :class:`TwinTrainConfig` keys; ``eps`` merged key by key) is laid
    over ``base_config`` (a config, a mapping, or a YAML path such as ``jobs/twin_train.yaml``)
    and trained into ``out_dir/<i>/``. Every figure of a row comes from the validation split at
    the best epoch (analysis preselection); the test split is not looked at, so the table can be
    used to choose alpha / eps. Writes ``out_dir/tradeoff.md`` (:func:`format_tradeoff`) and
    ``tradeoff.json``; :func:`fill_tradeoff_doc` puts the table into docs/twin.md.

    Returns:
        one row per setting: ``setting``, ``label``, ``best_epoch``, ``auc_x``, ``auc_y``,
        ``auc_lundnet_sum`` (validation, all signal), ``dcorr_xy``, ``dcorr_x_mt``, ``dcorr_y_mt``,
        ``closure_SP``, ``closure_VP`` (hard cuts at the working point), ``closure_bins_SP``,
        ``closure_bins_VP``, ``n_val_background``.
    """
    if isinstance(base_config, (str, Path)):
        base = TwinTrainConfig.from_yaml(base_config).as_dict()
    elif isinstance(base_config, TwinTrainConfig):
        base = base_config.as_dict()
    else:
        base = dict(TwinTrainConfig.from_mapping(base_config).as_dict())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, setting in enumerate(settings):
        mapping = {**base, **{k: v for k, v in setting.items() if k != "eps"}}
        mapping["eps"] = {**base.get("eps", {}), **dict(setting.get("eps", {}))}
        res = train_twin(skim_paths, out / f"{i:02d}", TwinTrainConfig.from_mapping(mapping))
        v = res.val_metrics
        dc, hard = v.get("dcorr", {}), v.get("closure_hard", {})
        rows.append({
            "setting": dict(setting), "label": _setting_label(setting), "best_epoch": res.best_epoch,
            "auc_x": v["auc_all"]["x"], "auc_y": v["auc_all"]["y"],
            "auc_lundnet_sum": v.get("baselines_auc_all", {}).get("lundnet_sum", float("nan")),
            **{k: float(dc.get(k, float("nan"))) for k in ("dcorr_xy", "dcorr_x_mt", "dcorr_y_mt")},
            **{k: float(hard.get(k, float("nan"))) for k in ("closure_SP", "closure_VP", "closure_bins_SP",
                                                              "closure_bins_VP")},
            "n_val_background": int(v.get("n_test_background", 0)),
        })
    (out / "tradeoff.json").write_text(json.dumps(rows, indent=1, default=float))
    (out / "tradeoff.md").write_text(format_tradeoff(rows) + "\n")
    return rows


def format_tradeoff(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of :func:`tradeoff_table` rows (validation split)."""
    lines = ["| setting | best epoch | AUC X | AUC Y | AUC LundNet J0+J1 | dCorr(X,Y) | dCorr(X,M_T) | dCorr(Y,M_T) "
             "| closure SP | closure VP | closure bins SP | closure bins VP |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vals = [r["auc_x"], r["auc_y"], r["auc_lundnet_sum"], r["dcorr_xy"], r["dcorr_x_mt"], r["dcorr_y_mt"],
                r["closure_SP"], r["closure_VP"], r["closure_bins_SP"], r["closure_bins_VP"]]
        lines.append(f"| {r['label']} | {r['best_epoch']} | " + " | ".join(f"{float(x):.3f}" for x in vals) + " |")
    return "\n".join(lines)


def fill_tradeoff_doc(table_md: str, doc_path: str | Path | None = None) -> Path:
    """Replace the placeholder between :data:`TRADEOFF_BEGIN` and :data:`TRADEOFF_END` in
    ``doc_path`` (default: the repository's docs/twin.md) by ``table_md``; returns the path."""
    path = Path(doc_path) if doc_path is not None else Path(__file__).resolve().parents[2] / "docs" / "twin.md"
    text = path.read_text()
    a, b = text.find(TRADEOFF_BEGIN), text.find(TRADEOFF_END)
    if a < 0 or b < a:
        raise ConfigError(f"{path}: the trade-off markers {TRADEOFF_BEGIN!r} ... {TRADEOFF_END!r} are missing")
    path.write_text(text[: a + len(TRADEOFF_BEGIN)] + "\n" + table_md.strip() + "\n" + text[b:])
    return path
